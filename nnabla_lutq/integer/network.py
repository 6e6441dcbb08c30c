# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The integer executor: :class:`IntegerNetwork` and :func:`verify_int`."""
from fractions import Fraction

import numpy as np

from . import ops as O
from .lowering import lower

__all__ = ['IntegerNetwork', 'verify_int', 'format_op_table', 'load_eval_data']

_COLUMNS = ('float_macs',) + O.COUNT_KEYS


def _strip_common(names):
    parts = [n.split('/') for n in names]
    k = 0
    while all(len(p) > k + 1 for p in parts) and len({p[k] for p in parts}) == 1:
        k += 1
    return ['/'.join(p[k:]) for p in parts]


def format_op_table(rows):
    """A text table of :meth:`IntegerNetwork.op_counts` rows (the last one the total).

    Args:
        rows (list): dicts with ``layer``, ``op``, ``float_macs``, ``adds``, ``shifts``,
            ``compares``, ``lookups``, ``mults``, ``bits``.

    Returns:
        str: the table, one line per row.
    """
    head = ('layer', 'integer op', 'float MACs', 'adds', 'shifts', 'compares', 'lookups',
            'mults', 'bits')
    body = [(r['layer'], r['op'], *(f"{r[k]:,}" for k in _COLUMNS),
             str(r['bits']) if r.get('bits') else '') for r in rows]
    widths = [max(len(str(x[i])) for x in [head] + body) for i in range(len(head))]
    fmt = '  '.join(('{:<%d}' if i < 2 else '{:>%d}') % w for i, w in enumerate(widths))
    lines = [fmt.format(*head), fmt.format(*('-' * w for w in widths))]
    lines += [fmt.format(*b) for b in body[:-1]]
    lines += [fmt.format(*('-' * w for w in widths)), fmt.format(*body[-1])]
    return '\n'.join(lines)


class IntegerNetwork:
    """An exported LUT-Q network lowered to integer, multiplication-free arithmetic.

    Built with :meth:`from_nnp`. ``net(x_uint8)`` runs it: uint8 pixels in, integer logits and
    their scale out (the real logits are ``logits * scale``). Per layer the convolution/affine
    adds each input into one of K partial sums by its weight's index and combines the K sums with
    the dictionary (a shift per sum for power-of-two values); batch normalization and the next
    layer's 8-bit codes are a shift and an add (multiplier-less BN, power-of-two steps) or
    comparisons with exact integer thresholds (any other scale). :meth:`op_counts` lists the
    operations per layer beside the float network's multiply-accumulates.

    Attributes:
        program (~nnabla_lutq.integer.lowering.Program): the lowered operations.
    """

    def __init__(self, program):
        self.program = program
        self._last_use = {}
        for i, op in enumerate(program.ops):
            for j in op.inputs:
                self._last_use[j] = i

    @classmethod
    def from_nnp(cls, path, input_scale=1.0, acc_bits=32, network=None):
        """Lower an exported LUT-Q network (:func:`nnabla_lutq.export_nnp`).

        The file must compute every convolution/affine weight as ``Embed(A, d)`` or from
        grouped tables (``group_size``: the ``Gather`` that :func:`nnabla_lutq.export_nnp`
        stores; one integer row per group), or store it dense as its description says (any
        dictionary: power-of-two values give shifts, others multiplications), with activation
        quantizers (``MinMaxQuantize`` as ``--act-bits`` trains it, or ``FixedPointQuantize``
        with a power-of-two step) after every ReLU; BN may be multiplier-less (folded
        ``x * a + b``) or float; residual ``Add2``, average/max pooling and input preprocessing
        with ``MulScalar``/``AddScalar`` are lowered too.

        Args:
            path (str): the ``.nnp`` file.
            input_scale (float): the network's input is ``input_scale * p`` for uint8 pixels
                ``p`` (1 for the examples' ``model.nnp``, which take raw pixels; 1/16 for the
                digits demo, whose images are ``p / 16``).
            acc_bits (int): accumulator width (16, 32 or 64); every intermediate value is proven
                to fit.
            network (str): network name (default: the first executor's).

        Returns:
            IntegerNetwork: the lowered network.

        Raises:
            ValueError: naming the function or layer, for a float (non-LUT-Q) weight, a
                ReLU output without a quantizer, an unsupported function, or values that could
                exceed ``acc_bits``; :class:`~nnabla_lutq.io.nnp.NnpError` for a file that
                cannot be read.
        """
        from ..io.nnp import read_nnp
        return cls(lower(read_nnp(str(path)), input_scale, acc_bits, network))

    # --- running ---------------------------------------------------------------------------

    @property
    def input_shape(self):
        """Shape of one input sample."""
        return self.program.input_shape

    @property
    def logit_scale(self):
        """The real value of one unit of the integer logits (float)."""
        return float(self.program.logit_scale)

    @property
    def logit_scale_fraction(self):
        """:attr:`logit_scale` exactly (:class:`fractions.Fraction`)."""
        return Fraction(self.program.logit_scale)

    @property
    def exact(self):
        """Whether the integer network computes the exported network's arithmetic exactly (real
        numbers: no float rounding), up to the rounding of the logits to their integer grid."""
        return all(op.exact for op in self.program.ops if op.name != 'logits')

    @property
    def multiplier_less(self):
        """Whether no operation multiplies."""
        return all(op.counts()['mults'] == 0 for op in self.program.ops)

    def _check_input(self, x):
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(
                f"IntegerNetwork: the input must be uint8 pixel codes (an integer array), not "
                f"{x.dtype}; pass the raw pixels (the network's input is input_scale * pixels)")
        if x.shape[1:] != self.input_shape:
            if x.shape == self.input_shape:
                x = x[None]
            else:
                raise ValueError(f"IntegerNetwork: input shape {x.shape} is not (N,) + "
                                 f"{self.input_shape}")
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(f"IntegerNetwork: pixel codes must lie in [0, 255] (got "
                             f"[{x.min()}, {x.max()}])")
        return x

    def run(self, x_uint8, form='direct', keep=False):
        """Run one batch.

        Args:
            x_uint8 (numpy.ndarray): pixels ``(N,) + input_shape`` (integers in [0, 255]).
            form (str): ``'lutq'``: every LUT-Q layer computes its K partial sums and combines
                them with shifts (the integer machine's form, as the C file does); ``'direct'``:
                the same integers as one integer dot product per output (faster in numpy; equal
                by associativity of integer addition).
            keep (bool): return every operation's output.

        Returns:
            numpy.ndarray or list: the integer logits (int64), or with ``keep`` the list of all
            operations' outputs (int64, index as :attr:`program`.ops).
        """
        if form not in ('direct', 'lutq'):
            raise ValueError(f"form must be 'direct' or 'lutq' (got {form!r})")
        x = self._check_input(x_uint8).astype(np.int64)
        outs = {}
        for i, op in enumerate(self.program.ops):
            xs = [outs[j] for j in op.inputs] if op.inputs else [x]
            outs[i] = op.run(xs, form)
            if not keep:
                for j in op.inputs:
                    if self._last_use.get(j) == i and j != self.program.output:
                        del outs[j]
        if keep:
            return [outs[i] for i in range(len(self.program.ops))]
        return outs[self.program.output]

    def __call__(self, x_uint8, batch_size=64, form='direct'):
        """Integer logits of a batch of uint8 images.

        Args:
            x_uint8 (numpy.ndarray): pixels ``(N,) + input_shape``.
            batch_size (int): images per step.
            form (str): see :meth:`run`.

        Returns:
            tuple: ``(logits, scale)``: int64 ``(N, classes)`` and the float scale of one unit.
        """
        x = self._check_input(x_uint8)
        parts = [self.run(x[i:i + batch_size], form) for i in range(0, len(x), batch_size)]
        out = np.concatenate(parts) if parts else np.zeros((0,), np.int64)
        return out.reshape(len(x), -1), self.logit_scale

    # --- counting --------------------------------------------------------------------------

    def op_counts(self):
        """Operations per image, per integer operation, and the total.

        Returns:
            list: one dict per operation (``layer``, ``op``, ``float_macs``, ``adds``,
            ``shifts``, ``compares``, ``lookups``, ``mults``, ``bits`` (proven width of its
            values), ``exact``, ``note``), then a ``total`` row.
        """
        names = _strip_common([op.name for op in self.program.ops])
        rows = []
        for name, op in zip(names, self.program.ops):
            c = op.counts()
            rows.append(dict(layer=name, op=op.kind, float_macs=op.float_macs(), **c,
                             bits=op.bits, exact=op.exact, note=op.note))
        total = {k: sum(r[k] for r in rows) for k in _COLUMNS}
        rows.append(dict(layer='total', op='', bits=max(r['bits'] for r in rows),
                         exact=self.exact, note='', **total))
        return rows

    def op_table(self):
        """:meth:`op_counts` as a text table."""
        return format_op_table(self.op_counts())

    def write_c(self, path):
        """Write a C program computing the same integer logits (:mod:`.cgen`)."""
        from .cgen import write_c
        write_c(self, path)


def verify_int(nnp_path, x_uint8, labels=None, input_scale=1.0, acc_bits=32, batch_size=100,
               network=None):
    """Run an exported network both ways and compare: integer executor vs nnabla's float graph.

    The ``verify-int`` command of ``nnabla-lutq`` prints ``result['report']``.

    Args:
        nnp_path (str): the exported ``.nnp``.
        x_uint8 (numpy.ndarray): pixels ``(N,) + input_shape`` in [0, 255].
        labels (numpy.ndarray): optional class labels (N,) or (N, 1).
        input_scale (float): the network's input is ``input_scale * pixels``.
        acc_bits (int): accumulator width.
        batch_size (int): images per step.
        network (str): network name.

    Returns:
        dict: ``n``; ``agreement`` (fraction of images whose argmax agrees); ``agree``;
        ``max_abs_diff`` (largest ``|logit_int * scale - logit_float|``) and ``max_abs_logit``;
        ``accuracy_int``/``accuracy_float`` (with labels); ``exact``; ``multiplier_less``;
        ``logit_scale``; ``op_counts`` rows; ``table`` (the op table) and ``report`` (all of it
        as text).

    Raises:
        ValueError: as :meth:`IntegerNetwork.from_nnp`, or for inputs that are not uint8 pixels.
    """
    from ..io.nnp import default_network, loaded_network, read_nnp
    net = IntegerNetwork.from_nnp(nnp_path, input_scale, acc_bits, network)
    x = net._check_input(x_uint8)
    logits, scale = net(x, batch_size)
    name = network or default_network(read_nnp(str(nnp_path)))
    y = []
    bs = min(batch_size, len(x)) or 1
    with loaded_network(str(nnp_path), name, batch_size=bs) as g:
        xi, yo = list(g.inputs.values())[0], list(g.outputs.values())[0]
        for i in range(0, len(x), bs):
            chunk = x[i:i + bs].astype(np.float32) * np.float32(input_scale)
            xi.d[:len(chunk)] = chunk
            yo.forward(clear_buffer=True)
            y.append(yo.d[:len(chunk)].reshape(len(chunk), -1).copy())
    y = np.concatenate(y) if y else np.zeros_like(logits, np.float32)
    real = logits * scale
    agree = int(np.sum(logits.argmax(1) == y.argmax(1)))
    res = {'n': len(x), 'agree': agree, 'agreement': agree / max(len(x), 1),
           'max_abs_diff': float(np.abs(real - y).max(initial=0)),
           'max_abs_logit': float(np.abs(y).max(initial=0)), 'exact': net.exact,
           'multiplier_less': net.multiplier_less, 'logit_scale': scale,
           'op_counts': net.op_counts(), 'table': net.op_table()}
    lines = [f"{nnp_path}: integer executor vs nnabla's float graph on {len(x)} images",
             f"  argmax agreement: {agree}/{len(x)} ({100 * res['agreement']:.2f} %)",
             f"  largest logit difference: {res['max_abs_diff']:.3g} (logits up to "
             f"{res['max_abs_logit']:.3g}; integer logit unit {scale:.3g})"]
    if labels is not None:
        t = np.asarray(labels).reshape(-1)
        res['accuracy_int'] = float(np.mean(logits.argmax(1) == t))
        res['accuracy_float'] = float(np.mean(y.argmax(1) == t))
        lines.append(f"  accuracy: integer {100 * res['accuracy_int']:.2f} %, float "
                     f"{100 * res['accuracy_float']:.2f} %")
    total = res['op_counts'][-1]
    lines.append(f"  per image: {total['float_macs']:,} float MACs -> {total['adds']:,} adds, "
                 f"{total['shifts']:,} shifts, {total['compares']:,} comparisons, "
                 f"{total['lookups']:,} look-ups, {total['mults']:,} multiplications"
                 + (' (multiplier-less)' if net.multiplier_less else ''))
    notes = [f"  note: {r['layer']}: {r['note']}" for r in res['op_counts'] if r.get('note')]
    res['report'] = '\n'.join(lines + notes + ['', res['table']])
    return res


def load_eval_data(path):
    """Images (and labels) for :func:`verify_int` from a file.

    Args:
        path (str): an ``.npz`` with the images as ``x`` (or ``images``) and optionally the
            labels as ``y`` (or ``labels``), or an ``.npy`` of images; images are integers in
            [0, 255], batch first (e.g. ``(N, 3, 32, 32)``).

    Returns:
        tuple: ``(images, labels or None)``.

    Raises:
        ValueError: for a missing file, another format, or no image array in it.
    """
    import os
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    if path.endswith('.npy'):
        return np.load(path), None
    if not path.endswith('.npz'):
        raise ValueError(f"{path}: evaluation data must be an .npz (x, y) or .npy (images) file")
    with np.load(path) as z:
        x = next((z[k] for k in ('x', 'images') if k in z), None)
        y = next((z[k] for k in ('y', 'labels') if k in z), None)
    if x is None:
        raise ValueError(f"{path}: holds no array 'x' (or 'images'); it has {sorted(z.files)}")
    return x, y
