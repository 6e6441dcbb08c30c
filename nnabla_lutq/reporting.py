"""Per-layer memory and multiplication report of a network's graph (``nnabla_lutq.report``)."""
from dataclasses import dataclass, asdict
from typing import Optional

import numpy as np
import nnabla as nn

from .dictionary import bits_per_index, is_pow2_array
from .parametric_functions import find_lutq_layer, find_mlbn_layer

__all__ = ['report', 'LayerRecord', 'Report']

_WEIGHT_FUNCS = {'Convolution': 'conv', 'DepthwiseConvolution': 'depthwise_conv',
                 'Affine': 'affine'}


@dataclass
class LayerRecord:
    """One row of the report (per inference of one sample).

    Attributes:
        name (str): parameter prefix of the layer.
        type (str): ``conv``, ``depthwise_conv``, ``affine`` or ``bn``.
        lutq (bool): whether the layer is LUT-Q (or multiplier-less BN).
        n_values (int or None): K.
        n_weights (int): N (for BN: channels).
        bits (int): bits per weight index, ceil(log2 K) (32 for float weights).
        sparsity (float): fraction of weights tied to a zero value.
        pow2 (bool): whether every dictionary value (or BN scale) is 0 or ±2^k.
        memory_bits (int): K·32 + N·ceil(log2 K) for LUT-Q, N·32 for float (BN: 2·C·32).
        float_memory_bits (int): N·32 (BN: 2·C·32).
        mults (int): multiplications of this layer.
        shifts (int): multiplications by ±2^k, i.e. shifts.
        float_mults (int): multiplications of the float layer.
    """
    name: str
    type: str
    lutq: bool
    n_values: Optional[int]
    n_weights: int
    bits: int
    sparsity: float
    pow2: bool
    memory_bits: int
    float_memory_bits: int
    mults: int
    shifts: int
    float_mults: int


class Report(list):
    """A list of :class:`LayerRecord` with totals and a printable table."""

    @property
    def totals(self):
        """dict: summed memory, multiplications and shifts, and the compression ratio."""
        t = {k: sum(getattr(r, k) for r in self) for k in
             ('memory_bits', 'float_memory_bits', 'mults', 'shifts', 'float_mults')}
        t['compression'] = t['float_memory_bits'] / max(1, t['memory_bits'])
        return t

    def records(self):
        """list: the rows as plain dicts (for JSON)."""
        return [asdict(r) for r in self]

    def table(self):
        """str: the report as a fixed-width table with a totals line."""
        head = (f"{'layer':<28} {'type':<8} {'K':>4} {'N':>9} {'bits':>4} {'sparse':>6} "
                f"{'pow2':>4} {'mem kbit':>9} {'float kbit':>10} {'mults':>11} {'shifts':>11} "
                f"{'float mults':>12}")
        lines = [head, '-' * len(head)]
        for r in self:
            lines.append(
                f"{r.name[-28:]:<28} {r.type[:8]:<8} {r.n_values or '-':>4} {r.n_weights:>9} "
                f"{r.bits:>4} {r.sparsity:>6.1%} {'yes' if r.pow2 else 'no':>4} "
                f"{r.memory_bits / 1e3:>9.1f} {r.float_memory_bits / 1e3:>10.1f} {r.mults:>11,} "
                f"{r.shifts:>11,} {r.float_mults:>12,}")
        t = self.totals
        lines.append('-' * len(head))
        lines.append(
            f"{'total':<28} {'':<8} {'':>4} {'':>9} {'':>4} {'':>6} {'':>4} "
            f"{t['memory_bits'] / 1e3:>9.1f} {t['float_memory_bits'] / 1e3:>10.1f} "
            f"{t['mults']:>11,} {t['shifts']:>11,} {t['float_mults']:>12,}")
        lines.append(f"memory {t['float_memory_bits'] / 8e3:.1f} kB float -> "
                     f"{t['memory_bits'] / 8e3:.1f} kB ({t['compression']:.1f}x smaller); "
                     f"multiplications {t['float_mults']:,} -> {t['mults']:,} "
                     f"(+ {t['shifts']:,} shifts)")
        return '\n'.join(lines)

    def __str__(self):
        return self.table()


def _leaves(v):
    found = [v] if v.parent is None else []

    def cb(f):
        found.extend(i for i in f.inputs if i.parent is None)
    if v.parent is not None:
        v.visit(cb)
    return found


def _is_table(w):
    p = w.parent
    return (p is not None and p.info.type_name == 'Embed' and all(i.parent is None for i in p.inputs)
            and p.inputs[1].ndim == 1)


def _is_folded_bn(f):
    m, b = f.inputs[0].parent, f.inputs[1]
    if m is None or m.info.type_name != 'Mul2' or b.parent is not None:
        return False
    a = m.inputs[1]
    return (a.parent is None and a.ndim >= 2 and a.shape == b.shape
            and int(np.prod(a.shape)) == max(a.shape))


def _param_name(v, names):
    return names.get(v.data, '?')


def report(output):
    """Report memory and multiplications per layer of the graph that computes ``output``.

    For a LUT-Q layer with K values the memory is K·32 + N·ceil(log2 K) bits (float: N·32).
    Per output value it sums its inputs per dictionary value and then needs one multiplication
    per distinct non-zero dictionary value (at most the fan-in); with a power-of-two dictionary
    those are counted as shifts. A float layer needs one multiplication per input per output
    value. Batch normalization needs one multiplication per element at inference (a shift for
    ``mlbn``). Counts are per sample.

    Args:
        output (~nnabla.Variable): the network output; the graph must be built (shapes known).

    Returns:
        Report: a list of :class:`LayerRecord`; ``print(report(y))`` prints the table.
    """
    names = {}
    for k, p in nn.get_parameters(grad_only=False).items():
        names[p.data] = k.rsplit('/', 1)[0]
    rows = Report()
    seen = set()

    def per_sample(f, out):
        base = f.info.args.get('base_axis', 1)
        return int(np.prod(out.shape[base:]))

    def visit(f):
        t = f.info.type_name
        if t in _WEIGHT_FUNCS:
            w = f.inputs[1]
            out = f.outputs[0]
            n = int(np.prod(w.shape))
            fan_in = w.shape[0] if t == 'Affine' else n // w.shape[0]
            outputs = per_sample(f, out)
            float_mults = outputs * fan_in
            layer = None
            for leaf in _leaves(w):
                layer = find_lutq_layer(leaf)
                if layer is not None:
                    break
            if layer is not None:
                name, d_var, a_var, k = layer.name, layer.d, layer.A, layer.config.n_values
            elif _is_table(w):  # a loaded graph: Embed(A, d) of stored parameters
                a_var, d_var = w.parent.inputs
                name, k = _param_name(d_var, names), int(d_var.shape[0])
            else:
                rows.append(LayerRecord(_param_name(w, names), _WEIGHT_FUNCS[t], False, None, n,
                                        32, float(np.mean(w.d == 0)), False, 32 * n, 32 * n,
                                        float_mults, 0, float_mults))
                return
            if name in seen:
                return
            seen.add(name)
            d = d_var.d.astype(np.float32)
            a = a_var.data.cast(np.int32)
            nonzero = np.unique(d[d != 0]).size
            pow2 = is_pow2_array(d)
            per_out = min(nonzero, fan_in)
            mults = 0 if pow2 else outputs * per_out
            shifts = outputs * per_out if pow2 else 0
            bits = bits_per_index(k)
            rows.append(LayerRecord(name, _WEIGHT_FUNCS[t], True, k, n, bits,
                                    float(np.mean(d[a] == 0)), pow2, 32 * k + n * bits, 32 * n,
                                    mults, shifts, float_mults))
        elif t == 'BatchNormalization':
            g = f.inputs[2]
            layer = find_mlbn_layer(g.parent.inputs[0]) if g.parent is not None and \
                g.parent.info.type_name == 'Add2' else None
            _bn_row(rows, layer, g, f.outputs[0], names, per_sample(f, f.outputs[0]))
        elif t == 'Add2' and f.inputs[1].parent is not None and \
                f.inputs[1].parent.info.type_name == 'Sub2':
            beta = f.inputs[1].parent.inputs[0]
            layer = find_mlbn_layer(beta) if beta.parent is None else None
            if layer is not None:
                out = f.outputs[0]
                _bn_row(rows, layer, beta, out, names, int(np.prod(out.shape[1:])))
        elif t == 'Add2' and _is_folded_bn(f):  # exported mlbn / BN: x * a + b, a and b stored
            a = f.inputs[0].parent.inputs[1]
            out = f.outputs[0]
            c, elements = int(np.prod(a.shape)), int(np.prod(out.shape[1:]))
            pow2 = is_pow2_array(a.d)
            rows.append(LayerRecord(_param_name(a, names), 'bn', pow2, None, c, 32, 0.0, pow2,
                                    64 * c, 64 * c, 0 if pow2 else elements,
                                    elements if pow2 else 0, elements))

    output.visit(visit)
    return rows


def _bn_row(rows, layer, gamma, out, names, elements):
    c = int(np.prod(gamma.shape))
    if layer is None:
        rows.append(LayerRecord(_param_name(gamma, names), 'bn', False, None, c, 32, 0.0, False,
                                64 * c, 64 * c, elements, 0, elements))
    else:
        rows.append(LayerRecord(layer.name, 'bn', True, None, c, 32, 0.0, True, 64 * c, 64 * c,
                                0, elements, elements))
