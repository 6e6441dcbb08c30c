"""nnabla-lutq: LUT-Q (look-up table quantization) for Neural Network Libraries (nnabla)."""
import nnabla.parametric_functions as _PF

from .dictionary import LUTQConfig, make_config, kmeans_step, init_dictionary, pow2_round
from .parametric_functions import (lutq_affine, lutq_convolution, lutq_depthwise_convolution,
                                   mlbn, inference_mode, fold_mlbn, lutq_layers, mlbn_layers,
                                   LUTQLayer, MLBNLayer)
from .solver import LUTQSolver
from .conversion import initialize, load_float_parameters
from .reporting import report, Report, LayerRecord
from .export import export_nnp
from .packed import pack, unpack
from .quantize import quantize_nnp
from .onnx_export import export_onnx

__version__ = '0.1.0'

for _name in ('lutq_affine', 'lutq_convolution', 'lutq_depthwise_convolution', 'mlbn'):
    if not hasattr(_PF, _name):  # never replace a name nnabla itself defines
        setattr(_PF, _name, globals()[_name])
del _name
