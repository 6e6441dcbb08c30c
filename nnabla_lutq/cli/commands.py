# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""What each ``nnabla-lutq`` command does (:mod:`.main` parses the arguments and reports
errors)."""
import json
import math
import os
import tempfile

__all__ = ['load_model_report', 'tables_of', 'kept_float', 'cmd_info', 'cmd_plot', 'cmd_pack',
           'cmd_unpack', 'cmd_convert', 'cmd_onnx', 'cmd_nnb', 'cmd_verify_int']


def _load_nnp_or_lutq(path):
    from ..io.nnp import read_nnp
    from ..io.packed import read_lutq
    if path.endswith('.lutq'):
        return read_lutq(path)
    if path.endswith('.nnp'):
        return read_nnp(path)
    raise ValueError(f"{path}: expected a .nnp or .lutq file")


def load_model_report(path):
    """The :func:`nnabla_lutq.report` of the network in an .nnp or .lutq file.

    The file is loaded with nnabla's ``NnpLoader`` (batch size 1) in a private parameter scope;
    the network is the first executor's.

    Args:
        path (str): ``.nnp`` or ``.lutq``.

    Returns:
        tuple: ``(report, network name)``.
    """
    return _model_report(path, _load_nnp_or_lutq(path))


def _model_report(path, model):
    from ..io.nnp import default_network, describe_legacy, loaded_network, write_nnp
    from ..analysis.report import report
    name = default_network(model)
    with tempfile.TemporaryDirectory() as tmp:
        nnp = path
        if not path.endswith('.nnp'):  # a .lutq is unpacked for nnabla's loader
            nnp = os.path.join(tmp, 'model.nnp')
            write_nnp(nnp, model)
        with loaded_network(nnp, name) as net:
            rep = report(list(net.outputs.values())[0],
                         meta=model.meta or describe_legacy(model))
    return rep, name


def tables_of(path):
    """Look-up tables of a model file for plotting.

    Args:
        path (str): ``.nnp``, ``.lutq`` or an ``.h5`` parameter file (e.g. a run's params.h5,
            which also holds the float ``W``).

    Returns:
        list: ``(layer, d, A, W or None)`` per look-up table.
    """
    from ..io.nnp import lut_embeds
    if path.endswith('.h5'):
        from ..training.initialization import read_h5
        params = read_h5(path)
        out = []
        for k in params:
            if k.endswith('/A') and k[:-2] + '/d' in params:
                p = k[:-2]
                out.append((p, params[p + '/d'], params[k], params.get(p + '/W')))
        return out
    model = _load_nnp_or_lutq(path)
    out, seen = [], set()
    for net in model.proto.network:
        for _, a, d in lut_embeds(net, model.params):
            if a not in seen:
                seen.add(a)
                p = a[:-2] if a.endswith('/A') else a
                out.append((p, model.params[d], model.params[a], model.params.get(p + '/W')))
    return out


def kept_float(meta):
    """The layers of a described model that are not LUT-Q, with the reason.

    Args:
        meta (dict): an exported file's description (:mod:`nnabla_lutq.io.metadata`).

    Returns:
        list: ``(layer, function, n_weights or None, reason)`` -- weight layers with a float
        weight, then BN layers that are not multiplier-less.
    """
    rows = [(k, v['function'], v['n_weights'], v['reason'])
            for k, v in meta.get('float_layers', {}).items()]
    rows += [(k, 'BatchNormalization', None, v.get('reason', 'float BN (not mlbn)'))
             for k, v in meta.get('bn', {}).items() if not v['multiplier_less']]
    return rows


def cmd_info(args):
    from ..io.nnp import describe_float_layers, describe_legacy, function_inputs
    model = _load_nnp_or_lutq(args.model)
    rep, name = _model_report(args.model, model)
    meta = model.meta or describe_legacy(model)
    if 'float_layers' not in meta:  # a file of an earlier 0.1: the reasons were not recorded
        describe_float_layers(function_inputs(model), model.params, meta)
    floats = kept_float(meta)
    if args.json:
        print(json.dumps({'network': name, 'layers': rep.records(), 'totals': rep.totals,
                          'kept_float': [dict(zip(('layer', 'function', 'n_weights', 'reason'),
                                                  r)) for r in floats]}, indent=1))
        return
    size = os.path.getsize(args.model)
    print(f"{args.model}: network {name!r}, {size:,} bytes on disk")
    print(rep.table())
    tables = len(meta.get('tables', {}))
    n_tables = sum(r.n_tables for r in rep)
    grouped = f" ({n_tables} tables)" if n_tables > tables else ''
    print(f"\n{tables} look-up table layer(s){grouped}; {len(floats)} layer(s) kept float" +
          (':' if floats else ''))
    for layer, function, n, reason in floats:
        print(f"  {layer:<28} {function:<20} " + (f"{n:>9,} weights  " if n else ' ' * 18) +
              reason)


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or an ImportError naming the extra to install."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(
            f"`nnabla-lutq plot` needs matplotlib ({e}); install the [examples] extra in the "
            "nnabla-lutq clone with `pip install \".[examples]\"` (or `pip install matplotlib`)")
    return plt


def _image_output(output, fig):
    """The file ``plot`` writes and its format: the name's extension, ``.png`` if it has none."""
    ext = os.path.splitext(output)[1].lower()
    if not ext:
        output, ext = output + '.png', '.png'
    formats = fig.canvas.get_supported_filetypes()
    if ext[1:] not in formats:
        raise ValueError(f"{output}: matplotlib cannot write {ext} images; use one of "
                         f"{', '.join('.' + f for f in sorted(formats))}")
    return output, ext[1:]


def cmd_plot(args):
    plt = _pyplot()
    import numpy as np
    from ..core.config import bits_per_index
    from ..io.nnp import atomic_output
    tables = tables_of(args.model)
    if not tables:
        raise ValueError(f"{args.model}: no look-up tables (Embed(A, d) / <layer>/A + <layer>/d) "
                         "found; is it a LUT-Q model?")
    n = len(tables)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), dpi=args.dpi,
                             squeeze=False)
    try:
        output, fmt = _image_output(args.output, fig)
    except ValueError:
        plt.close(fig)
        raise
    for ax, (name, d, a, w) in zip(axes.ravel(), tables):
        d = np.asarray(d, np.float64)
        values, counts = _usage(name, d, a)
        if w is not None:
            ax.hist(np.asarray(w).ravel(), bins=80, color='0.6')
            for v in values:  # every table's values (grouped tables: thinner lines)
                ax.axvline(v, color='tab:red', lw=0.9 if d.ndim == 1 else 0.4)
            ax.set_ylabel('weights')
        else:
            width = (np.ptp(values) / max(1, len(values)) * 0.6) or 0.1
            ax.bar(values, counts, width=width, color='tab:blue')
            ax.set_ylabel('count')
        k = d.shape[-1]
        groups = f", {d.shape[0]} tables" if d.ndim > 1 else ''
        short = name.split('/')
        ax.set_title(f"{'/'.join(short[-3:-1]) or name}  K={k} ({bits_per_index(k)} bit"
                     f"{groups})", fontsize=8)
        ax.set_xlabel('weight value', fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis('off')
    kind = 'weights (grey) and dictionary values (red)' if any(
        t[3] is not None for t in tables) else 'dictionary usage (count per value)'
    fig.suptitle(f"{os.path.basename(args.model)}: {kind}", fontsize=10)
    fig.tight_layout()
    try:
        with atomic_output(output, '.' + fmt) as tmp:
            fig.savefig(tmp, format=fmt)
    finally:
        plt.close(fig)
    print(f"wrote {output} ({n} layers)")


def _usage(name, d, a):
    """``(values, counts)`` of a layer's tables for the plot: each table value and how many
    weights use it (one table: every value of ``d``, unused ones with 0; grouped tables ``(G,
    K)``: each distinct value of the tied weights, the output axis told by the layer's scope)."""
    import numpy as np
    from ..analysis.report import tied_weights
    from ..core.kinds import WEIGHT_LAYERS
    a = np.asarray(a).astype(np.int64)
    if d.ndim == 1:
        return d, np.bincount(a.ravel(), minlength=len(d))
    scope = name.rsplit('/', 1)[-1]
    axis = next((w.out_axis for w in WEIGHT_LAYERS if scope in (w.kind, w.lutq_scope)), 0)
    return np.unique(tied_weights(d, a, axis, name), return_counts=True)


def cmd_pack(args):
    from ..io.packed import pack
    st = pack(args.input, args.output)
    print(f"{args.output}: {st['total']:,} bytes = look-up tables {st['tables']:,} + other "
          f"parameters {st['raw']:,} + definition/header/checksum {st['overhead']:,} "
          f"(.nnp: {os.path.getsize(args.input):,} bytes)")


def cmd_unpack(args):
    from ..io.packed import unpack
    model = unpack(args.input, args.output)
    print(f"{args.output}: {len(model.params)} parameters, "
          f"{os.path.getsize(args.output):,} bytes")


def cmd_convert(args):
    from ..io.quantize import quantize_nnp
    import numpy as np
    data = calibration = budget = None
    if args.eval_data:
        try:
            with np.load(args.eval_data) as f:
                data = (f['x'].astype(np.float32), f['y'])
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"--eval-data {args.eval_data}: expected an .npz with arrays x "
                             f"(inputs) and y (labels) ({e})")
    if args.calibration:
        try:
            with np.load(args.calibration) as f:
                calibration = (f['x'].astype(np.float32), f['y'] if 'y' in f.files else None)
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"--calibration {args.calibration}: expected an .npz with an array "
                             f"x (inputs) and optionally y (labels) ({e})")
    if args.budget_bits is not None or args.bits_per_weight is not None:
        from ..training.budget import Budget
        budget = Budget(args.budget_bits, args.bits_per_weight)
    r = quantize_nnp(args.input, args.output, n_values=args.n_values,
                     dictionary=args.dictionary, prune_ratio=args.prune_ratio, iters=args.iters,
                     data=data, min_weights=args.min_weights, mlbn=args.mlbn,
                     calibration=calibration, budget=budget,
                     candidates=args.candidates, weighted=not args.unweighted,
                     calibration_batch_size=args.calibration_batch_size,
                     group_size=args.group_size)
    print(r['plan'].table())
    for layer in r['layers']:
        print(f"  {layer['name']:<40} K={layer['K']:<4} N={layer['n_weights']:<9} "
              f"mse {layer['mse']:.3g}")
    if 'bits' in r:
        print(r['bits'].table())
    if r.get('weighted'):
        print(f"sensitivity-weighted tables ({r['fisher'].n_batches} calibration minibatches)")
    print(f"wrote {args.output} ({len(r['layers'])} layers quantized)")
    if data is not None:
        print(f"accuracy on {len(data[0])} samples: float {r['accuracy_before']:.2%} -> "
              f"LUT-Q {r['accuracy_after']:.2%} "
              f"({100 * (r['accuracy_after'] - r['accuracy_before']):+.2f} points)")


def cmd_onnx(args):
    from ..io.onnx import export_onnx
    info = export_onnx(args.input, args.output, batch_size=args.batch_size)
    kinds = sorted(set(info['index_types'].values()))
    print(f"wrote {args.output}: {info['gather_layers']} layers as Gather(d, A) (A "
          f"{', '.join(kinds) or '-'}), {info['dense_layers']} dense "
          f"({', '.join(info['dense_names']) or 'none'})")
    if info['max_abs_diff'] is None:
        print("not run: onnxruntime is not installed (or the inputs are not float)")
    else:
        print(f"onnxruntime vs nnabla on a random batch of {args.batch_size}: max |diff| "
              f"{info['max_abs_diff']:.3g}")


def cmd_nnb(args):
    from ..io.nnb import export_nnb
    info = export_nnb(args.input, args.output, batch_size=args.batch_size,
                      api_level=args.api_level, settings_path=args.settings,
                      nnp_out=args.nnp)
    print(f"wrote {args.output} ({info['bytes']} bytes, API level {info['api_level']}, batch "
          f"size {args.batch_size}): tables stored as their weights d[A]")
    for name, t in info['types'].items():
        print(f"  {name:<40} {t}")
    if info['float_weights']:
        print(f"  {len(info['float_weights'])} weight(s) FLOAT32 (values not exact in 16-bit "
              f"fixed point): {', '.join(info['float_weights'])}")
    for path in (args.settings, args.nnp):
        if path:
            print(f"wrote {path}")


def cmd_verify_int(args):
    from ..integer import load_eval_data, verify_int
    x, y = load_eval_data(args.eval_data)
    if args.limit is not None:
        x, y = x[:args.limit], (y[:args.limit] if y is not None else None)
    res = verify_int(args.model, x, y, input_scale=args.input_scale, acc_bits=args.acc_bits)
    if args.json:
        keep = ('n', 'agree', 'agreement', 'max_abs_diff', 'max_abs_logit', 'exact',
                'multiplier_less', 'logit_scale', 'op_counts', 'accuracy_int', 'accuracy_float')
        print(json.dumps({k: res[k] for k in keep if k in res}, indent=1))
    else:
        print(res['report'])
    if args.c:
        from ..integer import IntegerNetwork
        IntegerNetwork.from_nnp(args.model, args.input_scale, args.acc_bits).write_c(args.c)
        print(f"wrote {args.c} (cc -O2 -std=c99 {args.c} -o net; ./net < images.u8)")
