# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Reproduce the paper's ImageNet results (Table 2): run configurations, then write RESULTS.md.

Examples::

    # every Table-2 row for the three networks; LUT-Q rows fine-tuned from the float run
    python reproduce.py --run table2 --archs resnet18 resnet34 resnet50 --init-from-float \\
        --runs runs --data-dir /data/imagenet --context cudnn --epochs 90
    python reproduce.py --run float lutq2-pow2-a8 --archs resnet18 --runs runs --data-dir ...
    # only collect finished runs (every results.json below the folder)
    python reproduce.py --collect runs --output RESULTS.md

A run is named ``<config>[-a<bits>]`` (train.py's ``--config`` and ``--act-bits``); Table 2's rows
are ``float``, ``lutq4-pow2-a8``, ``lutq4-pow2-mlbn-a8``, ``lutq2-pow2``, ``lutq2-pow2-a8`` and
``lutq2-pow2-mlbn-a8`` (``table2`` names them all). Run folders are ``RUNS/<arch>/<name>``.

RESULTS.md holds the paper's Table 2 with nnabla-examples' float baselines, then one table per
schedule, laid out like Table 2 with the paper's errors beside ours (runs on other data than the
1000 ImageNet classes are marked as pipeline checks, without the paper's columns), and the memory
footprint of every network as the paper counts it, beside the paper's ResNet-50 figures.
"""
import os
import re
import sys

if __package__ in (None, ''):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
if __name__ == '__main__':  # before the slow imports: no nnabla INFO lines, Ctrl-C in one line
    from examples.common.console import script_console
    script_console('reproduce.py', 'interrupted (Ctrl-C); a run it was training keeps its last '
                   'checkpoint, and running this again continues it')

from examples.common import configs  # noqa: E402
from examples.common import reproduce as common  # noqa: E402
from examples.imagenet import paper  # noqa: E402

_NAME = re.compile(r'^(?P<config>.+?)(?:-a(?P<bits>\d+))?$')
#: Distinct footprints of Table 2 (multiplier-less BN stores as much as float BN).
FOOTPRINT_SETTINGS = (('float', None), ('lutq4-pow2', 8), ('lutq2-pow2', None), ('lutq2-pow2', 8))
_TITLES = {'resnet18': 'ResNet-18', 'resnet34': 'ResNet-34', 'resnet50': 'ResNet-50'}


def parse_name(name):
    """``(config, act_bits)`` of a run name ``<config>[-a<bits>]``.

    Raises:
        ValueError: for an unknown configuration or activation bits.
    """
    m = _NAME.match(name)
    config, bits = m['config'], int(m['bits']) if m['bits'] else None
    configs.parse(config, act_bits=bits)
    return config, bits


def run_name(config, act_bits):
    """The run name of a configuration (the inverse of :func:`parse_name`)."""
    return config + (f'-a{act_bits}' if act_bits else '')


def _fmt(x, digits=1):
    return '—' if x is None else f"{x:.{digits}f}"


def _row_key(r):
    return run_name(r['config'], r.get('act_bits'))


def _describe_row(r):
    """(weights, activations, BN) of a run that is not a Table-2 row."""
    layers = r['layers']
    act = f"{r['act_bits']}-bit" if r.get('act_bits') else 'float'
    bn = 'multiplier-less BN' if layers['mlbn'] else 'float BN'
    return common.weights_label(layers), act, bn


def paper_table():
    """Table 2 of the paper (validation error, %) and nnabla-examples' float baselines."""
    archs = paper.ARCHS
    lines = ['| configuration | weights | activations | BN | ' + ' | '.join(
        _TITLES[a] for a in archs) + ' |', '|---|---|---|---|' + '---:|' * len(archs)]
    for name, _, _, w, act, bn in paper.ROWS:
        lines.append(f"| {name} | {w} | {act} | {bn} | " + ' | '.join(
            _fmt(e) for e in paper.ERRORS[name]) + ' |')
    lines.append('| float (nnabla-examples) | float | float | float BN | ' + ' | '.join(
        _fmt(e, 2) for e in paper.NNABLA_EXAMPLES_FLOAT) + ' |')
    return lines


def schedule_table(rs):
    """The rows of one schedule's table (Table-2 layout; paper columns for ImageNet data)."""
    inet = rs[0]['imagenet']
    full = inet['n_classes'] == 1000
    archs = [a for a in paper.ARCHS if any(r['imagenet']['arch'] == a for r in rs)]
    by = {}
    for r in sorted(rs, key=lambda r: r['run']):  # the last run of a cell wins
        by[(_row_key(r), r['imagenet']['arch'])] = r
    head = '| configuration | weights | activations | BN | '
    if full:
        head += ' | '.join(f"{_TITLES[a]} paper | ours" for a in archs) + ' |'
        sep = '|---|---|---|---|' + '---:|---:|' * len(archs)
    else:
        head += ' | '.join(f"{_TITLES[a]} ours (Δ vs float)" for a in archs) + ' |'
        sep = '|---|---|---|---|' + '---:|' * len(archs)
    lines = [head, sep]
    names = [n for n, *_ in paper.ROWS] + sorted({k for k, _ in by} - {n for n, *_ in paper.ROWS})
    for name in names:
        if not any((name, a) in by for a in archs):
            continue
        desc = next((row[3:] for row in paper.ROWS if row[0] == name), None)
        if desc is None:
            desc = _describe_row(next(by[(name, a)] for a in archs if (name, a) in by))
        cells = []
        for a in archs:
            r = by.get((name, a))
            ours = '—' if r is None else common.pct(r['final_val_error']) + (
                '†' if r['schedule'].get('init') else '')
            if full:
                cells += [_fmt(paper.paper_error(name, a)), ours]
            else:
                base = by.get(('float', a))
                if r is not None and base is not None and name != 'float':
                    ours += f" ({100 * (r['final_val_error'] - base['final_val_error']):+.2f})"
                cells.append(ours)
        lines.append(f"| {name} | {' | '.join(desc)} | " + ' | '.join(cells) + ' |')
    return lines, sorted(r['run'] for r in by.values())


def footprint_table(archs, image_size=224):
    """The inference footprint of every network and Table-2 setting (built, not trained)."""
    import nnabla as nn
    from examples.imagenet import models
    from examples.imagenet.train import DEPTHS, footprint
    lines = ['| network | weights | activations | parameters (MiB) | peak activations (MiB) | '
             'total (MiB) | paper (MB) |', '|---|---|---|---:|---:|---:|---:|']
    for arch in archs:
        def model(x, layers, test=False):
            return models.resnet(x, layers, DEPTHS[arch], test, n_classes=1000)
        for config, bits in FOOTPRINT_SETTINGS:
            nn.clear_parameters()
            fp = footprint(model, configs.parse(config, act_bits=bits), image_size, bits)
            nn.clear_parameters()
            ref = paper.FOOTPRINT_RESNET50.get(run_name(config, bits)) if arch == 'resnet50' \
                else None
            layers = configs.parse(config)
            w = f"{layers.n_values.bit_length() - 1}-bit" if layers.lutq else 'float'
            lines.append(f"| {_TITLES[arch]} | {w} | {f'{bits}-bit' if bits else 'float'} | "
                         f"{fp['param_mib']:.2f} | {fp['activation_mib']:.2f} | "
                         f"{fp['total_mib']:.2f} | {_fmt(ref)} |")
    return lines


def write_report(runs, output, title_note='', footprint_archs=paper.ARCHS):
    """Write RESULTS.md.

    Args:
        runs (list): results dicts of ImageNet runs (:func:`examples.common.reproduce.collect`;
            others are left out).
        output (str): path of the markdown file.
        title_note (str): a paragraph under the title.
        footprint_archs (tuple): networks of the footprint section (none: no section).

    Returns:
        str: the markdown text.
    """
    runs = [r for r in runs if 'imagenet' in r]
    lines = ['# ImageNet ResNet-18/34/50 results (paper Table 2)', '']
    if title_note:
        lines += [title_note, '']
    lines += ['## The paper', '',
              'Validation error (%) in Table 2 of Cardinaux, Uhlich et al. (single center crop), '
              'and the float ResNets of nnabla-examples (top-1 error, %): the float baselines to '
              'beat.', ''] + paper_table() + ['']
    groups = {}
    per_row = ('act_bits', 'init')
    for r in runs:
        key = common.schedule_key(r, per_row) + (r['imagenet']['image_size'],
                                                 r['imagenet']['n_classes'])
        groups.setdefault(key, []).append(r)
    ordered = sorted(groups.values(), key=lambda rs: -len(rs))  # the fullest table first
    for n, rs in enumerate(ordered, 1):
        inet = rs[0]['imagenet']
        check = inet['n_classes'] != 1000
        lines += [f"## Schedule {n}{': pipeline check' if check else ''}", '',
                  f"{common.describe_schedule(rs[0], per_row)}; image size {inet['image_size']}, "
                  f"{inet['n_classes']} classes, {rs[0]['val_images']} validation images.", '']
        if check:
            lines += ['Not ImageNet (not 1000 classes): these numbers check the pipeline and are '
                      'not comparable with the paper\'s, which are therefore not shown. Δ: '
                      'points above our float run of the same network and schedule.', '']
        table, names = schedule_table(rs)
        lines += table + ['', '† fine-tuned from the float run\'s parameters (`--init`); other '
                          'numbers from scratch. Runs: ' + ', '.join(f'`{x}`' for x in names), '']
    if footprint_archs:
        lines += ['## Memory footprint (inference, one 224 x 224 image)', '',
                  'As the paper counts it (see README.md, "Memory footprint"): parameters at '
                  'their bit widths (K·32 + N·⌈log2 K⌉ bits per LUT-Q layer, 32 bits per float '
                  'weight, bias and folded BN scale/offset) plus the peak of the activations '
                  'held at once, at the activation bit width (32 for float). MiB = 2^20 bytes; '
                  'the paper\'s MB are the same unit (25.6 M float weights = 97.5). '
                  'Multiplier-less BN stores as much as float BN, so each row stands for the '
                  'quasi and the fully multiplier-less network. The paper does not say how it '
                  'counts activations: its float ResNet-50 figure equals the parameters alone.',
                  ''] + \
            footprint_table(footprint_archs) + ['']
    text = '\n'.join(lines)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, 'w') as f:
        f.write(text)
    return text


def _plan(args):
    names = []
    for n in args.run:
        names += [r[0] for r in paper.ROWS] if n == 'table2' else [n]
    parsed = [(n, parse_name(n)) for n in dict.fromkeys(names)]
    parsed.sort(key=lambda t: t[0] != 'float')  # the float run first (--init-from-float)
    jobs = []
    for arch in args.archs:
        base = os.path.join(args.runs, arch, 'float', 'params.h5')
        if args.init_from_float and 'float' not in names and not os.path.isfile(base):
            raise ValueError(f"--init-from-float: {base} does not exist; add float to --run")
        for name, (config, bits) in parsed:
            argv = ['--arch', arch, '--config', config] + (
                ['--act-bits', str(bits)] if bits else [])
            if args.init_from_float and name != 'float':
                argv += ['--init', base]
            jobs.append((f"{arch}/{name}", os.path.join(args.runs, arch, name), argv))
    return jobs


def _train(argv):
    from examples.imagenet import train
    return train.main(argv)


def main(argv=None):
    p = common.parser(__doc__.split('\n\n')[0], run_help='run names <config>[-a<bits>] to '
                      'train first, or table2 (every row of Table 2)')
    p.add_argument('--archs', nargs='+', choices=paper.ARCHS, default=['resnet18'],
                   help='networks of --run')
    p.add_argument('--init-from-float', action='store_true',
                   help='--run: LUT-Q runs start from RUNS/<arch>/float/params.h5 (trained first)')
    p.add_argument('--footprint-archs', nargs='*', choices=paper.ARCHS, default=list(paper.ARCHS),
                   help='networks of the footprint section (none: leave it out)')
    common.main(p, argv, _plan, _train, lambda runs, args: write_report(
        runs, args.output, args.note, args.footprint_archs))


if __name__ == '__main__':
    main()
