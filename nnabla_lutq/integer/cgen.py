# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""A stand-alone C program computing a lowered network's integer logits.

:func:`write_c` writes one C99 file: the tables (indices, dictionary shifts, biases, thresholds,
multipliers) as constant arrays, one function per integer operation in the LUT-Q form (K partial
sums by weight index, then the dictionary combination; grouped tables read the row of their
output channel) and a ``main`` that reads images as raw uint8 bytes (``C*H*W`` per image,
channel-major) from stdin and prints one line of integer logits per image. Accumulators are
``int32_t`` when every operation was proven to fit 32 bits (``int64_t`` otherwise). Left shifts
go through unsigned types and right shifts are written as floor shifts, so no signed-shift
behaviour of the compiler is relied upon. Build it with any C compiler, e.g. ``cc -O2 -std=c99
net.c -o net``; ``./net < images.u8`` prints what :meth:`~nnabla_lutq.integer.IntegerNetwork.run`
returns.
"""
import numpy as np

from . import ops as O

__all__ = ['write_c', 'c_source']


def _arr(ctype, name, values, per_line=16):
    vals = [str(int(v)) for v in np.asarray(values).ravel()]
    if not vals:
        vals = ['0']
    lines = [', '.join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)]
    return f"static const {ctype} {name}[{len(vals)}] = {{\n  " + ',\n  '.join(lines) + '\n};\n'


def _shift_of(m):
    """Shift amount of a power-of-two multiplier |m|, or -1 (multiply)."""
    return abs(int(m)).bit_length() - 1 if O.is_pow2_int(m) else -1


class _Writer:
    def __init__(self, net):
        self.net = net
        self.prog = net.program
        self.wide = any(op.bits > 32 for op in self.prog.ops)
        self.tables = []
        self.funcs = []

    def buf(self, i):
        return f"b{i}"

    def _elementwise(self, i, channels, per, result, body):
        """A loop over every value ``(c, p)`` running ``body``, storing ``result``."""
        return ([f"  for (int c = 0; c < {channels}; ++c)",
                 f"  for (long p = 0; p < {per}; ++p) {{"] + body +
                [f"    {self.buf(i)}[c * {per}L + p] = {result};", "  }"])

    def op_input(self, i, op):
        body = [f"  for (long i = 0; i < {op.size}; ++i) {{", "    acc_t v = (acc_t)px[i];"]
        if op.m != 1:
            s = _shift_of(op.m)
            body.append(f"    v = SHL(v, {s});" if s >= 0 else f"    v = v * {op.m};")
        if op.n:
            body.append(f"    v = v + ({op.n});")
        body += [f"    {self.buf(i)}[i] = v;", "  }"]
        return body

    def _terms(self, i, op):
        self.tables.append(_arr('int64_t', f"D{i}", op.D))
        self.tables.append(_arr('int8_t', f"SH{i}", [_shift_of(d) if d else -2 for d in op.D]))
        self.tables.append(_arr('uint8_t', f"U{i}", op.terms.astype(np.uint8)))
        if op.grouped:  # the table row of each output channel
            self.tables.append(_arr('int32_t', f"G{i}", op.rows))

    def _combine(self, i, op, o_expr):
        """The combination of the K partial sums of output channel ``o_expr`` with its
        dictionary (for grouped tables the row ``G[o]`` of ``D`` and ``SH``)."""
        k_values = op.K
        at = f"G{i}[{o_expr}] * {k_values} + k" if op.grouped else 'k'
        return ["    acc_t acc = 0;",
                f"    for (int k = 0; k < {k_values}; ++k) {{",
                f"      if (!U{i}[{o_expr} * {k_values} + k]) continue;",
                "      acc_t v = S[k];",
                f"      if (SH{i}[{at}] >= 0) {{ v = SHL(v, SH{i}[{at}]); acc = D{i}[{at}] < 0 ? "
                "acc - v : acc + v; }",
                f"      else acc = acc + v * (acc_t)D{i}[{at}];",
                "    }"]

    def op_conv(self, i, op):
        self._terms(i, op)
        o_ch, t = op.A2.shape
        cg = op.in_shape[0] // op.group
        kh, kw = op.kernel
        taps_c, taps_i, taps_j, taps_k, start = [], [], [], [], [0]
        for o in range(o_ch):
            g = o // (o_ch // op.group)
            for tt in np.flatnonzero(op.nonzero[o]):
                c, r = divmod(int(tt), kh * kw)
                taps_c.append(g * cg + c)
                taps_i.append(r // kw)
                taps_j.append(r % kw)
                taps_k.append(op.A2[o, tt])
            start.append(len(taps_c))
        for name, vals, ctype in (('TC', taps_c, 'int32_t'), ('TI', taps_i, 'int16_t'),
                                  ('TJ', taps_j, 'int16_t'), ('TK', taps_k, 'uint8_t'
                                                             if op.K <= 256 else 'int32_t'),
                                  ('TS', start, 'int32_t')):
            self.tables.append(_arr(ctype, f"{name}{i}", vals))
        _, h, w = op.in_shape
        ho, wo = op.out_hw
        (ph, pw), (sh, sw), (dh, dw) = op.pad, op.stride, op.dilation
        x = self.buf(op.inputs[0])
        return [f"  for (int o = 0; o < {o_ch}; ++o)",
                f"  for (int oy = 0; oy < {ho}; ++oy)",
                f"  for (int ox = 0; ox < {wo}; ++ox) {{",
                f"    acc_t S[{op.K}] = {{0}};",
                f"    for (int t = TS{i}[o]; t < TS{i}[o + 1]; ++t) {{",
                f"      int iy = oy * {sh} - {ph} + TI{i}[t] * {dh};",
                f"      int ix = ox * {sw} - {pw} + TJ{i}[t] * {dw};",
                f"      if (iy < 0 || iy >= {h} || ix < 0 || ix >= {w}) continue;",
                f"      S[TK{i}[t]] += {x}[((long)TC{i}[t] * {h} + iy) * {w} + ix];",
                "    }"] + self._combine(i, op, 'o') + \
               [f"    {self.buf(i)}[((long)o * {ho} + oy) * {wo} + ox] = acc;", "  }"]

    def op_affine(self, i, op):
        self._terms(i, op)
        o_ch = op.A2.shape[0]
        idx, kk, start = [], [], [0]
        for o in range(o_ch):
            for tt in np.flatnonzero(op.nonzero[o]):
                idx.append(int(tt))
                kk.append(op.A2[o, tt])
            start.append(len(idx))
        self.tables.append(_arr('int32_t', f"TC{i}", idx))
        self.tables.append(_arr('uint8_t' if op.K <= 256 else 'int32_t', f"TK{i}", kk))
        self.tables.append(_arr('int32_t', f"TS{i}", start))
        x = self.buf(op.inputs[0])
        return [f"  for (int o = 0; o < {o_ch}; ++o) {{",
                f"    acc_t S[{op.K}] = {{0}};",
                f"    for (int t = TS{i}[o]; t < TS{i}[o + 1]; ++t) S[TK{i}[t]] += {x}[TC{i}[t]];"
                ] + self._combine(i, op, 'o') + [f"    {self.buf(i)}[o] = acc;", "  }"]

    def op_shift(self, i, op):
        c = len(op.sign)
        per = op.size // c
        for name, vals in (('SG', op.sign), ('L', op.left), ('F', op.right), ('B', op.bias)):
            self.tables.append(_arr('int64_t', f"{name}{i}", vals))
        x = self.buf(op.inputs[0])
        return self._elementwise(i, c, per, 'v', [
            f"    acc_t v = SHL({x}[c * {per}L + p], L{i}[c]);",
            f"    v = SG{i}[c] > 0 ? (acc_t)B{i}[c] + v : SG{i}[c] < 0 ? (acc_t)B{i}[c] - v : "
            f"(acc_t)B{i}[c];",
            f"    v = SHR(v, F{i}[c]);",
            "    if (v < 0) v = 0;",
            f"    if (v > {op.q_max}) v = {op.q_max};",
        ])

    def op_threshold(self, i, op):
        c = len(op.direction)
        per = op.size // c
        width = (1 << op.steps) - 1
        big = (1 << 62) if self.wide else (1 << 31) - 1
        tab = np.full((c, width), big, object)
        tab[:, :op.q_max] = op.tables
        lo = self.prog.ops[op.inputs[0]].lo
        const = [int(np.searchsorted(op.tables[k], lo[k], side='right')) if op.direction[k] == 0
                 else 0 for k in range(c)]
        self.tables.append(_arr('int64_t' if self.wide else 'int32_t', f"T{i}", tab))
        self.tables.append(_arr('int8_t', f"DIR{i}", op.direction))
        self.tables.append(_arr('int32_t', f"K{i}", const))
        x = self.buf(op.inputs[0])
        return self._elementwise(i, c, per, 'code', [
            f"    acc_t v = {x}[c * {per}L + p];",
            f"    acc_t code = K{i}[c];",
            f"    if (DIR{i}[c]) {{",
            f"      const {'int64_t' if self.wide else 'int32_t'} *t = T{i} + c * {width}L;",
            f"      if (DIR{i}[c] < 0) v = -v;",
            "      code = 0;",
            f"      for (int s = {1 << (op.steps - 1)}; s; s >>= 1)",
            "        if (v >= t[code + s - 1]) code += s;",
            "    }",
        ])

    def op_align(self, i, op):
        nb, c = op.mult.shape
        per = op.size // c
        self.tables.append(_arr('int64_t', f"M{i}", op.mult))
        self.tables.append(_arr('int8_t', f"MS{i}", [_shift_of(m) if m else -2
                                                      for m in op.mult.ravel()]))
        self.tables.append(_arr('int64_t', f"B{i}", op.bias))
        body = [f"    acc_t y = (acc_t)B{i}[c];"]
        for b, j in enumerate(op.inputs):
            body += [f"    {{ int m = {b} * {c} + c; acc_t v = {self.buf(j)}[c * {per}L + p];",
                     f"      if (MS{i}[m] >= 0) {{ v = SHL(v, MS{i}[m]); "
                     f"y = M{i}[m] < 0 ? y - v : y + v; }}",
                     f"      else if (MS{i}[m] == -1) y = y + v * (acc_t)M{i}[m]; }}"]
        return self._elementwise(i, c, per, 'y', body)

    def op_pool(self, i, op):
        c, h, w = self.prog.ops[op.inputs[0]].shape
        ho, wo = op.out_hw
        kh, kw = op.kernel
        sh, sw = op.stride
        x = self.buf(op.inputs[0])
        is_max = isinstance(op, O.MaxPoolOp)
        first = f"{x}[((long)c * {h} + oy * {sh}) * {w} + ox * {sw}]"
        upd = "if (v > y) y = v;" if is_max else "y = y + v;"
        return [f"  for (int c = 0; c < {c}; ++c)",
                f"  for (int oy = 0; oy < {ho}; ++oy)",
                f"  for (int ox = 0; ox < {wo}; ++ox) {{",
                f"    acc_t y = {first};",
                f"    for (int i = 0; i < {kh}; ++i)",
                f"    for (int j = 0; j < {kw}; ++j) {{",
                "      if (i == 0 && j == 0) continue;",
                f"      acc_t v = {x}[((long)c * {h} + oy * {sh} + i) * {w} + ox * {sw} + j];",
                f"      {upd}",
                "    }",
                f"    {self.buf(i)}[((long)c * {ho} + oy) * {wo} + ox] = y;", "  }"]

    def source(self):
        handlers = {O.InputOp: self.op_input, O.LutConvOp: self.op_conv,
                    O.LutAffineOp: self.op_affine, O.RequantShiftOp: self.op_shift,
                    O.RequantThresholdOp: self.op_threshold, O.AlignAddOp: self.op_align,
                    O.SumPoolOp: self.op_pool, O.MaxPoolOp: self.op_pool}
        bufs = []
        for i, op in enumerate(self.prog.ops):
            body = handlers[type(op)](i, op)
            self.funcs.append(f"/* {op.name}: {op.kind} */\nstatic void op{i}(void) {{\n" +
                              '\n'.join(body) + "\n}\n")
            bufs.append(f"static acc_t {self.buf(i)}[{op.size}];")
        in_size = int(np.prod(self.prog.input_shape))
        out = self.prog.output
        acc = 'int64_t' if self.wide else 'int32_t'
        uacc = 'uint64_t' if self.wide else 'uint32_t'
        head = [
            "/* Integer LUT-Q network written by nnabla_lutq.integer.cgen: reads images as raw",
            f"   uint8 bytes ({in_size} per image) from stdin, prints the integer logits (scale "
            f"{float(self.prog.logit_scale):.17g}) */",
            "#include <stdint.h>", "#include <stdio.h>", "",
            f"typedef {acc} acc_t;", f"typedef {uacc} uacc_t;",
            "#define SHL(v, s) ((acc_t)((uacc_t)(v) << (s)))",
            "/* floor(v / 2^s) without relying on the sign behaviour of >> */",
            "#define SHR(v, s) ((v) >= 0 ? (acc_t)((v) >> (s)) : (acc_t)~((~(v)) >> (s)))",
            f"static uint8_t px[{in_size}];", ""]
        calls = '\n'.join(f"    op{i}();" for i in range(len(self.prog.ops)))
        n_out = self.prog.ops[out].size
        main = (f"int main(void) {{\n  while (fread(px, 1, {in_size}, stdin) == {in_size}) {{\n"
                f"{calls}\n    for (int i = 0; i < {n_out}; ++i)\n"
                f"      printf(i ? \" %lld\" : \"%lld\", (long long){self.buf(out)}[i]);\n"
                f"    printf(\"\\n\");\n  }}\n  return 0;\n}}\n")
        return '\n'.join(head) + '\n'.join(self.tables) + '\n' + '\n'.join(bufs) + '\n\n' + \
            '\n'.join(self.funcs) + '\n' + main


def c_source(net):
    """The C program of an :class:`~nnabla_lutq.integer.IntegerNetwork` as a string."""
    return _Writer(net).source()


def write_c(net, path):
    """Write the C program of ``net`` to ``path`` (see the module docs).

    Args:
        net (~nnabla_lutq.integer.IntegerNetwork): the lowered network.
        path (str): destination ``.c`` file.
    """
    with open(path, 'w') as f:
        f.write(c_source(net))
