# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The ``nnabla-lutq`` command: info, plot, pack, unpack, convert (post-training), verify-int,
onnx and nnb. Run it as ``nnabla-lutq`` or ``python -m nnabla_lutq.cli``.

Examples::

    nnabla-lutq info model.nnp                 # per-layer report (K, bits, sparsity, memory, ...)
    nnabla-lutq plot run/params.h5 -o w.png    # weight histograms with the dictionary values
    nnabla-lutq pack model.nnp model.lutq      # indices at ceil(log2 K) bits
    nnabla-lutq unpack model.lutq model.nnp
    nnabla-lutq convert float.nnp lutq.nnp --n-values 16 --dictionary pow2
    nnabla-lutq convert float.nnp lutq.nnp --n-values 8 --group-size 4   # a table per 4 channels
    nnabla-lutq verify-int model.nnp --eval-data images.npz   # integer-only executor vs nnabla
    nnabla-lutq onnx model.nnp model.onnx      # needs the [onnx] extra
    nnabla-lutq nnb model.nnp model.nnb        # for nnabla's C runtime

Every command exits with 0 on success and with 1 and one line ``nnabla-lutq: error: ...`` on a
failure (2 for wrong arguments). Warnings are lines ``nnabla-lutq: warning: ...`` on stderr. When
the reader of the output goes away (``nnabla-lutq info --json m.nnp | head``) the command stops
quietly with status 141, as a Unix tool ended by SIGPIPE does.
"""
import argparse
import os
import sys
import warnings

from .commands import (cmd_convert, cmd_info, cmd_nnb, cmd_onnx, cmd_pack, cmd_plot,
                       cmd_unpack, cmd_verify_int, load_model_report, tables_of)

__all__ = ['main', 'load_model_report', 'tables_of']

#: Exit status after a broken pipe: 128 + SIGPIPE, what a shell reports for a tool it ended.
BROKEN_PIPE_STATUS = 141

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def _candidate(text):
    """An argparse type: a budget candidate ``K`` (an integer >= 2) or ``K:G`` (``(K, G)``, G an
    integer >= 1: K values per table of G output channels)."""
    k, sep, g = text.partition(':')
    try:
        pair = (int(k), int(g)) if sep else (int(k), None)
    except ValueError:
        pair = None
    if pair is None or pair[0] < 2 or (pair[1] is not None and pair[1] < 1):
        raise argparse.ArgumentTypeError(
            f"expected K (an integer >= 2) or K:G (G an integer >= 1), got {text!r}")
    return pair if sep else pair[0]


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
    s.set_defaults(func=cmd_info)
    s = sub.add_parser('plot', help='per-layer weight/dictionary histograms')
    s.add_argument('model', help='.nnp, .lutq or a parameter .h5 (with float W: histograms)')
    s.add_argument('-o', '--output', required=True, help='image file (.png, .pdf, .svg)')
    s.add_argument('--dpi', type=_at_least(1, MAX_DPI), default=110,
                   help=f'resolution of raster images, 1 to {MAX_DPI} (default: %(default)s)')
    s.set_defaults(func=cmd_plot)
    s = sub.add_parser('pack', help='.nnp -> packed .lutq (indices at ceil(log2 K) bits)')
    s.add_argument('input', help='.nnp')
    s.add_argument('output', help='.lutq')
    s.set_defaults(func=cmd_pack)
    s = sub.add_parser('unpack', help='.lutq -> .nnp (lossless)')
    s.add_argument('input', help='.lutq')
    s.add_argument('output', help='.nnp')
    s.set_defaults(func=cmd_unpack)
    s = sub.add_parser('convert', help='post-training LUT-Q of a float .nnp')
    s.add_argument('input', help='float .nnp')
    s.add_argument('output', help='LUT-Q .nnp')
    s.add_argument('--n-values', type=int, default=16, help='K, values per dictionary')
    s.add_argument('--dictionary', choices=['free', 'pow2'], default='free')
    s.add_argument('--prune-ratio', type=float, default=0.0)
    s.add_argument('--group-size', metavar='G', type=_at_least(1), default=None,
                   help='one table per G output channels of every converted layer (G must '
                        'divide each one\'s output channels; 1: per-channel tables; default: '
                        'one table per layer)')
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
    s.add_argument('--candidates', metavar='K[:G]', type=_candidate, nargs='+',
                   default=[2, 4, 8, 16, 32, 64, 128, 256],
                   help='the K a budget chooses from, or K:G pairs (K values per table of G '
                        'output channels, G chosen too) (default: %(default)s)')
    s.add_argument('--unweighted', action='store_true',
                   help='plain tables even with --calibration')
    s.add_argument('--calibration-batch-size', metavar='N', type=_at_least(1), default=32,
                   help='samples per calibration minibatch (default: %(default)s)')
    s.set_defaults(func=cmd_convert)
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
    s.set_defaults(func=cmd_verify_int)
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
    s.set_defaults(func=cmd_onnx)
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
    s.set_defaults(func=cmd_nnb)
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
