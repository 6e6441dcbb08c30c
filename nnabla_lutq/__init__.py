"""nnabla-lutq: LUT-Q (look-up table quantization) for Neural Network Libraries (nnabla).

Layout (one package per concern):

* :mod:`nnabla_lutq.core` -- numpy-only rules: layer settings, the power-of-two rule, the exact
  host k-means step;
* :mod:`nnabla_lutq.nn` -- the layers (``PF.lutq_*``, ``PF.mlbn``), the LUT-Q state and weight
  modes, graph forms of the rules;
* :mod:`nnabla_lutq.kmeans` -- the k-means step behind one interface (host, device graph);
* :mod:`nnabla_lutq.training` -- ``LUTQSolver``, ``initialize``, ``load_float_parameters``;
* :mod:`nnabla_lutq.io` -- .nnp, export, packed .lutq, post-training quantization, ONNX;
* :mod:`nnabla_lutq.analysis` -- ``report``;
* :mod:`nnabla_lutq.cli` -- the ``nnabla-lutq`` command.
"""
import nnabla.parametric_functions as _PF

from .core import LUTQConfig, make_config, kmeans_step, init_dictionary, pow2_round
from .nn import (lutq_affine, lutq_convolution, lutq_depthwise_convolution, mlbn, fold_mlbn,
                 inference_mode, weight_mode, WeightMode, lutq_layers, mlbn_layers, LUTQLayer,
                 MLBNLayer, STATE)
from .training import LUTQSolver, initialize, load_float_parameters
from .training import LCSolver, lc_schedule
from .analysis import report, Report, LayerRecord, footprint
from .io.export import export_nnp
from .io.packed import pack, unpack
from .io.quantize import quantize_nnp
from .io.onnx import export_onnx
from .nn.convert import LayerConfig, LUTQModifier, convert
from .integer import IntegerNetwork, verify_int

__version__ = '0.1.0'

for _name in ('lutq_affine', 'lutq_convolution', 'lutq_depthwise_convolution', 'mlbn'):
    if not hasattr(_PF, _name):  # never replace a name nnabla itself defines
        setattr(_PF, _name, globals()[_name])
del _name
