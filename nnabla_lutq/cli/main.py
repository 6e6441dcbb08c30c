"""The ``nnabla-lutq`` command: info, plot, pack, unpack, convert (post-training), verify-int,
onnx and nnb. Run it as ``nnabla-lutq`` or ``python -m nnabla_lutq.cli``.

Examples::

    nnabla-lutq info model.nnp                 # per-layer report (K, bits, sparsity, memory, ...)
    nnabla-lutq plot run/params.h5 -o w.png    # weight histograms with the dictionary values
    nnabla-lutq pack model.nnp model.lutq      # indices at ceil(log2 K) bits
    nnabla-lutq unpack model.lutq model.nnp
    nnabla-lutq convert float.nnp lutq.nnp --n-values 16 --dictionary pow2
    nnabla-lutq verify-int model.nnp --eval-data images.npz   # integer-only executor vs nnabla
    nnabla-lutq onnx model.nnp model.onnx      # needs the [onnx] extra
    nnabla-lutq nnb model.nnp model.nnb        # for nnabla's C runtime

Every command exits with 0 on success and with 1 and one line ``nnabla-lutq: error: ...`` on a
failure (2 for wrong arguments). Warnings are lines ``nnabla-lutq: warning: ...`` on stderr. When
the reader of the output goes away (``nnabla-lutq info --json m.nnp | head``) the command stops
quietly with status 141, as a Unix tool ended by SIGPIPE does.
"""
import argparse
import json
import math
import os
import sys
import tempfile
import warnings

__all__ = ['main', 'load_model_report', 'tables_of']

#: Exit status after a broken pipe: 128 + SIGPIPE, what a shell reports for a tool it ended.
BROKEN_PIPE_STATUS = 141

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def _cmd_info(args):
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
    print(f"\n{tables} look-up table layer(s); {len(floats)} layer(s) kept float" +
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


def _cmd_plot(args):
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
        counts = np.bincount(np.asarray(a).ravel().astype(np.int64), minlength=len(d))
        if w is not None:
            ax.hist(np.asarray(w).ravel(), bins=80, color='0.6')
            for v in d:
                ax.axvline(v, color='tab:red', lw=0.9)
            ax.set_ylabel('weights')
        else:
            width = (np.ptp(d) / max(1, len(d)) * 0.6) or 0.1
            ax.bar(d, counts, width=width, color='tab:blue')
            ax.set_ylabel('count')
        bits = bits_per_index(len(d))
        short = name.split('/')
        ax.set_title(f"{'/'.join(short[-3:-1]) or name}  K={len(d)} ({bits} bit)", fontsize=8)
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


def _cmd_pack(args):
    from ..io.packed import pack
    st = pack(args.input, args.output)
    print(f"{args.output}: {st['total']:,} bytes = look-up tables {st['tables']:,} + other "
          f"parameters {st['raw']:,} + definition/header/checksum {st['overhead']:,} "
          f"(.nnp: {os.path.getsize(args.input):,} bytes)")


def _cmd_unpack(args):
    from ..io.packed import unpack
    model = unpack(args.input, args.output)
    print(f"{args.output}: {len(model.params)} parameters, "
          f"{os.path.getsize(args.output):,} bytes")


def _cmd_convert(args):
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
        from ..training.sensitivity import Budget
        budget = Budget(args.budget_bits, args.bits_per_weight)
    r = quantize_nnp(args.input, args.output, n_values=args.n_values,
                     dictionary=args.dictionary, prune_ratio=args.prune_ratio, iters=args.iters,
                     data=data, min_weights=args.min_weights, mlbn=args.mlbn,
                     calibration=calibration, budget=budget,
                     candidates=args.candidates, weighted=not args.unweighted,
                     calibration_batch_size=args.calibration_batch_size)
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


def _cmd_onnx(args):
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


def _cmd_nnb(args):
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


def _cmd_verify_int(args):
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


def _version():
    """``nnabla-lutq X (nnabla Y, Python Z)``."""
    import platform
    import nnabla
    from .. import __version__
    return (f"nnabla-lutq {__version__} (nnabla {nnabla.__version__}, Python "
            f"{platform.python_version()})")


def _at_least(low, high=None):
    """An argparse type: an integer >= ``low`` (and <= ``high``; else a usage error)."""
    wanted = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value
    parse.__name__ = wanted
    return parse


def _deploy_parser(sub, name, suffix, what, **texts):
    """The parser of a deployment command: an input .nnp, an output file, ``--batch-size``."""
    s = sub.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **texts)
    s.add_argument('input', help='.nnp')
    s.add_argument('output', help=suffix)
    s.add_argument('--batch-size', metavar='N', type=_at_least(1), default=1,
                   help=f'batch size of the {what} (default: %(default)s)')
    return s


#: The largest ``plot --dpi``: print quality; more only fills the memory (4 layers a row at
#: 14 x 2.6 inches per row is already 16800 pixels wide at this resolution).
MAX_DPI = 1200


def _parser():
    p = argparse.ArgumentParser(
        prog='nnabla-lutq', formatter_class=argparse.RawDescriptionHelpFormatter,
        description='LUT-Q models: inspect, plot, pack, unpack, convert (post-training), ONNX.',
        epilog='\n'.join(__doc__.split('\n\n')[1:]).replace('::', ':'))
    p.add_argument('--version', action='version', version=_version())
    sub = p.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    s = sub.add_parser('info', help='per-layer report of an .nnp or .lutq model')
    s.add_argument('model', help='.nnp or .lutq')
    s.add_argument('--json', action='store_true', help='print the report as JSON')
    s.set_defaults(func=_cmd_info)
    s = sub.add_parser('plot', help='per-layer weight/dictionary histograms')
    s.add_argument('model', help='.nnp, .lutq or a parameter .h5 (with float W: histograms)')
    s.add_argument('-o', '--output', required=True, help='image file (.png, .pdf, .svg)')
    s.add_argument('--dpi', type=_at_least(1, MAX_DPI), default=110,
                   help=f'resolution of raster images, 1 to {MAX_DPI} (default: %(default)s)')
    s.set_defaults(func=_cmd_plot)
    s = sub.add_parser('pack', help='.nnp -> packed .lutq (indices at ceil(log2 K) bits)')
    s.add_argument('input', help='.nnp')
    s.add_argument('output', help='.lutq')
    s.set_defaults(func=_cmd_pack)
    s = sub.add_parser('unpack', help='.lutq -> .nnp (lossless)')
    s.add_argument('input', help='.lutq')
    s.add_argument('output', help='.nnp')
    s.set_defaults(func=_cmd_unpack)
    s = sub.add_parser('convert', help='post-training LUT-Q of a float .nnp')
    s.add_argument('input', help='float .nnp')
    s.add_argument('output', help='LUT-Q .nnp')
    s.add_argument('--n-values', type=int, default=16, help='K, values per dictionary')
    s.add_argument('--dictionary', choices=['free', 'pow2'], default='free')
    s.add_argument('--prune-ratio', type=float, default=0.0)
    s.add_argument('--iters', type=_at_least(0), default=None,
                   help='bound on the Lloyd iterations after the optimal table fit (default: '
                        'to the fixed point)')
    s.add_argument('--min-weights', type=_at_least(0), default=0,
                   help='layers with fewer weights stay float')
    s.add_argument('--mlbn', action='store_true',
                   help='multiplier-less batch normalization too (folded to x * a + b)')
    s.add_argument('--eval-data', metavar='NPZ', default=None,
                   help='.npz with arrays x (inputs) and y (labels): report the accuracy change')
    s.add_argument('--calibration', metavar='NPZ', default=None,
                   help='.npz with inputs x and optional labels y (without: the float model\'s '
                        'predictions): sensitivity-weighted tables (softmax cross-entropy of '
                        'the first output)')
    b = s.add_mutually_exclusive_group()
    b.add_argument('--bits-per-weight', metavar='BITS', type=float, default=None,
                   help='budget: average bits per weight of the quantized layers, tables '
                        'included; K is chosen per layer (needs --calibration)')
    b.add_argument('--budget-bits', metavar='BITS', type=_at_least(1), default=None,
                   help='budget: total bits of the quantized layers (needs --calibration)')
    s.add_argument('--candidates', metavar='K', type=_at_least(2), nargs='+',
                   default=[2, 4, 8, 16, 32, 64, 128, 256],
                   help='the K a budget chooses from (default: %(default)s)')
    s.add_argument('--unweighted', action='store_true',
                   help='plain tables even with --calibration')
    s.add_argument('--calibration-batch-size', metavar='N', type=_at_least(1), default=32,
                   help='samples per calibration minibatch (default: %(default)s)')
    s.set_defaults(func=_cmd_convert)
    s = sub.add_parser('verify-int', help='run an exported LUT-Q .nnp with the integer, '
                       'multiplication-free executor beside nnabla: agreement and op counts')
    s.add_argument('model', help='.nnp exported with look-up tables and quantized activations')
    s.add_argument('--eval-data', metavar='NPZ', required=True,
                   help='.npz with uint8 images x (batch first) and optional labels y, or an '
                        '.npy of images')
    s.add_argument('--limit', type=_at_least(1), default=None, help='only the first N images')
    s.add_argument('--input-scale', type=float, default=1.0,
                   help='the network input is input_scale * pixels (the examples: 1)')
    s.add_argument('--acc-bits', type=int, choices=[16, 32, 64], default=32,
                   help='accumulator width the executor must prove sufficient')
    s.add_argument('--json', action='store_true', help='print the results as JSON')
    s.add_argument('--c', metavar='FILE.c', default=None,
                   help='also write a stand-alone C program of the network')
    s.set_defaults(func=_cmd_verify_int)
    s = _deploy_parser(
        sub, 'onnx', '.onnx', 'ONNX graph',
        help='.nnp -> .onnx through nnabla\'s converter ([onnx] extra)',
        description="Any .nnp to ONNX with nnabla's ONNX exporter, look-up tables kept as "
                    "Gather(d, A)\nwith uint8 indices, checked with onnxruntime beside nnabla "
                    "before the file is written.",
        epilog="`nnabla_cli convert x.nnp x.onnx` fails without TensorFlow (as in the "
               "environment\n`make env` builds): nnabla's command imports TensorFlow for every "
               "ONNX conversion,\nand the [onnx] install leaves it out. This command calls "
               "nnabla's ONNX exporter\nwithout it, for any .nnp:\n\n"
               "    nnabla-lutq onnx x.nnp x.onnx --batch-size 1")
    s.set_defaults(func=_cmd_onnx)
    s = _deploy_parser(
        sub, 'nnb', '.nnb', 'NNB network',
        help='.nnp -> .nnb for nnabla\'s C runtime (weights fixed point where exact)',
        description="A LUT-Q .nnp to NNB with nnabla's NNB writer. nnabla's C runtime has no "
                    "Embed:\nthe tables are stored as their weights d[A], each in the narrowest "
                    "NNB type\nthat holds it exactly (FIXED8, FIXED16, else FLOAT32).",
        epilog="`nnabla_cli convert model.nnp model.nnb` fails on a LUT-Q model with an Affine "
               "layer.\nWith --nnp and --settings, nnabla's own command writes the same "
               "file:\n\n    nnabla-lutq nnb model.nnp model.nnb --nnp deploy.nnp "
               "--settings deploy.yaml\n    nnabla_cli convert deploy.nnp model.nnb -b 1 --api "
               "<level> --settings deploy.yaml")
    s.add_argument('--api-level', metavar='L', type=_at_least(1), default=None,
                   help='NNB API level (default: the lowest that holds the network)')
    s.add_argument('--settings', metavar='YAML', default=None,
                   help='also write the settings used (nnb_template\'s form) to this file')
    s.add_argument('--nnp', metavar='NNP', default=None,
                   help='also write the .nnp given to nnabla\'s NNB writer')
    s.set_defaults(func=_cmd_nnb)
    return p


def main(argv=None):
    """Entry point of the ``nnabla-lutq`` console script.

    Args:
        argv (list or None): the arguments (default: ``sys.argv[1:]``).

    Returns:
        int: the exit status: 0, 1 after an error, 141 after a broken pipe (argparse exits with 2
        on wrong arguments).
    """
    args = _parser().parse_args(argv)
    out = getattr(args, 'output', None)
    if out is not None and getattr(args, 'input', None) is not None and \
            os.path.abspath(out) == os.path.abspath(args.input):
        print("nnabla-lutq: error: the output must be another file than the input",
              file=sys.stderr)
        return 1
    caught = []
    try:
        try:
            with warnings.catch_warnings(record=True) as caught:
                args.func(args)
        finally:
            _show(caught)
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()
        return BROKEN_PIPE_STATUS
    except (ValueError, OSError, RuntimeError, ImportError) as e:
        print(f"nnabla-lutq: error: {e}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"nnabla-lutq: error: not enough memory for `nnabla-lutq {args.command}`",
              file=sys.stderr)
        return 1
    return 0


def _show(caught):
    """Print this package's warnings as ``nnabla-lutq: warning: ...``; show others as usual."""
    for w in caught:
        if issubclass(w.category, UserWarning) and os.path.abspath(w.filename).startswith(
                _PACKAGE_DIR + os.sep):
            print(f"nnabla-lutq: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _drop_stdout():
    """Point stdout at /dev/null, so that the exit does not fail flushing into the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == '__main__':
    sys.exit(main())
