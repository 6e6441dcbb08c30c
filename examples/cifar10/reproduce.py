# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Reproduce the paper's CIFAR-10 results: run configurations, then write RESULTS.md + Fig. 2.

Examples::

    # run the paper's table and the pruning sweep with one schedule, then write the report
    python reproduce.py --run float lutq4-pow2 lutq2-pow2 lutq4-pow2-mlbn lutq2-pow2-mlbn \\
        --epochs 160 --context cudnn --data-dir ~/nnabla_data --runs runs
    python reproduce.py --run lutq2 lutq2-prune30 lutq2-prune50 lutq2-prune70 --runs runs
    # only collect finished runs (every results.json below the folder)
    python reproduce.py --collect runs --output RESULTS.md

RESULTS.md puts our validation errors beside the paper's (ResNet-20, full schedule) and states
the schedule behind every number; fig2_pruning.png (next to RESULTS.md) plots the error increase
over float against the pruning ratio, like the paper's Fig. 2.
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
if __name__ == '__main__':  # before the slow imports: no nnabla INFO lines, Ctrl-C in one line
    from examples.common.console import script_console
    script_console('reproduce.py', 'interrupted (Ctrl-C); a run it was training keeps its last '
                   'checkpoint, and running this again continues it')

from examples.common import configs  # noqa: E402
from examples.common.reproduce import (describe_schedule, pct, schedule_key,  # noqa: E402
                                       weights_label)
from examples.common import reproduce as common  # noqa: E402

#: The paper's CIFAR-10 ResNet-20 validation errors (%), full schedule.
PAPER = {'float': 7.4, 'lutq4-pow2': 7.6, 'lutq2-pow2': 8.0, 'lutq4-pow2-mlbn': 8.1,
         'lutq2-pow2-mlbn': 9.0}
_ROWS = [('float', 'float', 'float BN'),
         ('lutq4-pow2', '4-bit pow-2 (quasi multiplier-less)', 'float BN'),
         ('lutq2-pow2', '2-bit pow-2 (quasi multiplier-less)', 'float BN'),
         ('lutq4-pow2-mlbn', '4-bit pow-2 (fully multiplier-less)', 'multiplier-less BN'),
         ('lutq2-pow2-mlbn', '2-bit pow-2 (fully multiplier-less)', 'multiplier-less BN')]


#: The prototype's validation errors (%) from the issue "CIFAR-10 on a GPU" (an H100, the shared
#: JPEG copy, from scratch, cosine lr 0.1, weight decay 5e-4): epochs -> float / 4-bit / 2-bit.
#: It does not record whether its 4- and 2-bit networks used pow-2 or free dictionaries, so the
#: gaps of both are checked against it.
PROTOTYPE = {12: {'float': 17.2, 4: 17.2, 2: 18.1}, 25: {'float': 14.2, 2: 15.0}}
#: How far our gap to float may exceed the prototype's at the same schedule (points).
GAP_TOLERANCE = 0.3


def prototype_check(rs):
    """The lines comparing a table's gaps to float with the prototype's at the same schedule.

    Args:
        rs (list): the results of one table (one schedule).

    Returns:
        list: markdown lines (empty unless the schedule is one the prototype ran and the table
        has a float run).
    """
    s = rs[0]['schedule']
    epochs = s['epochs_run']
    proto = PROTOTYPE.get(int(round(epochs))) if abs(epochs - round(epochs)) < 1e-9 else None
    by = {r['config']: r for r in rs}
    if (proto is None or 'float' not in by or s['name'] != 'cosine' or s['lr'] != 0.1
            or s['weight_decay'] != 5e-4 or s.get('init')):
        return []
    base = by['float']['final_val_error']
    rows = []
    for bits in (4, 2):
        if bits not in proto:
            continue
        theirs = proto[bits] - proto['float']
        for c in (f'lutq{bits}-pow2', f'lutq{bits}'):
            if c in by:
                ours = 100 * (by[c]['final_val_error'] - base)
                ok = ours - theirs <= GAP_TOLERANCE + 1e-9
                rows.append(f"| {c} | {ours:+.2f} | {theirs:+.2f} | {ours - theirs:+.2f} | "
                            + ('yes' if ok else '**no**: find out why before recording') + ' |')
    if not rows:
        return []
    return [f"Against the prototype at this schedule ({int(round(epochs))} epochs; float "
            f"{proto['float']:.1f} % there, {100 * base:.2f} % here; it trained on the 50,000 "
            f"JPEG images, this table on {rs[0]['n_train']:,}): our gap to float may exceed its "
            f"gap by at most {GAP_TOLERANCE} points.", '',
            '| configuration | our gap | prototype gap | excess | within |',
            '|---|---:|---:|---:|---|', *rows, '']


#: Sections that RESULTS.md includes, in this order, from the files of these names next to it
#: (results of other scripts, kept when RESULTS.md is written again): the LUT-Q vs LC comparison
#: (examples/compare_lc.py) and grouped tables / bits per layer (benchmarks/bench_groups.py).
KEPT_SECTIONS = ('lc_comparison.md', 'grouped_tables.md')


def finetuned_from(runs):
    """The float run each fine-tuned run started from, when that run is among ``runs``.

    A run whose ``--init`` file lies in the folder of a collected float run, trained with the
    same schedule apart from the learning rate (a recipe such as ``paper160`` fine-tunes at a
    lower one), is compared with that float run, in its table.

    Args:
        runs (list): results dicts from :func:`collect`.

    Returns:
        dict: ``run folder -> float results dict``.
    """
    floats = {os.path.normpath(r['run']): r for r in runs if r['config'] == 'float'}
    out = {}
    for r in runs:
        init = r['schedule'].get('init')
        if not init or r['config'] == 'float':
            continue
        folder = os.path.normpath(os.path.dirname(init))
        src = next((f for run, f in floats.items()
                    if folder == run or folder.endswith(os.sep + run)), None)
        if src is not None and schedule_key(src, ('init', 'lr')) == schedule_key(r, ('init', 'lr')):
            out[r['run']] = src
    return out


def write_report(runs, output, title_note='', in_progress=()):
    """Write RESULTS.md (tables) and fig2_pruning.png next to it; the text of
    :data:`KEPT_SECTIONS` next to ``output``, where there, are added at the end.

    Args:
        runs (list): results dicts from :func:`collect`.
        output (str): path of the markdown file.
        title_note (str): a paragraph put under the title (e.g. the data used).
        in_progress (list): unfinished runs, ``(run, config, state)`` from
            :func:`examples.cifar10.slices.in_progress`: listed after the tables, not in them.

    Returns:
        str: the markdown text.
    """
    groups = {}
    sources = finetuned_from(runs)
    for r in runs:
        src = sources.get(r['run'])
        groups.setdefault(schedule_key(src if src is not None else r), []).append(r)
    lines = ['# CIFAR-10 ResNet-20 results', '']
    if title_note:
        lines += [title_note, '']
    lines += ["Validation error (%). *Paper*: Cardinaux, Uhlich et al., ResNet-20, full schedule. "
              "*Ours*: the schedule stated under each table (one table per schedule); Δ is the "
              "difference to our float run with the same schedule.", '']
    sweep = []
    ordered = sorted(groups.items(), key=lambda kv: -len(kv[1]))  # the fullest table first
    for n, (key, rs) in enumerate(ordered, 1):
        by = {r['config']: r for r in rs}
        base = by.get('float')
        tuned = sorted({(r['schedule']['init'], r['schedule']['lr']) for r in rs
                        if r['run'] in sources})
        lines += [f"## Schedule {n}: {describe_schedule(rs[0])}", '',
                  '| configuration | weights | BN | paper | ours | Δ vs float | weight memory | '
                  'run |', '|---|---|---|---:|---:|---:|---:|---|']
        names = [c for c, _, _ in _ROWS] + sorted(c for c in by if c not in PAPER)
        for c in names:
            if c not in by:
                continue
            r = by[c]
            label = next((lbl for cc, lbl, _ in _ROWS if cc == c), weights_label(r['layers']))
            bn = 'multiplier-less BN' if r['layers']['mlbn'] else 'float BN'
            delta = (f"{100 * (r['final_val_error'] - base['final_val_error']):+.2f}"
                     if base else 'n/a')
            t = r['report']['totals']
            mem = f"{t['memory_bits'] / 8e3:.1f} kB ({t['compression']:.1f}x)"
            paper = f"{PAPER[c]:.1f}" if c in PAPER else '—'
            mark = ' †' if r['run'] in sources else ''
            lines.append(f"| {c}{mark} | {label} | {bn} | {paper} | {pct(r['final_val_error'])} | "
                         f"{delta} | {mem} | {r['run']} |")
        lines.append('')
        for init, lr in tuned:
            lines += [f"† fine-tuned from this table's float run (`--init {init}`) at lr {lr:g}, "
                      "with the same schedule otherwise.", '']
        lines += prototype_check(rs)
        if base:
            pts = sorted((r['layers']['prune_ratio'], 100 * (r['final_val_error'] -
                                                             base['final_val_error']))
                         for c, r in by.items() if c == 'lutq2' or c.startswith('lutq2-prune'))
            if pts:
                sweep.append((f"schedule {n} ({rs[0]['schedule']['iterations']} it., "
                              f"seed {rs[0].get('seed', 0)})", pts))
    if sweep:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        fig = os.path.join(os.path.dirname(os.path.abspath(output)), 'fig2_pruning.png')
        _plot_sweep(sweep, fig)
        lines += ['## Pruning with 2-bit LUT-Q (paper Fig. 2)', '',
                  'The paper reports up to 70 % pruning with 2-bit LUT-Q without significant '
                  'loss (no per-point numbers are given). Ours, error increase over float '
                  '(points):', '', '| schedule | ' + ' | '.join(
                      f"p = {p:.0%}" for p in sorted({p for _, pts in sweep for p, _ in pts}))
                  + ' |']
        ps = sorted({p for _, pts in sweep for p, _ in pts})
        lines.append('|---|' + '---:|' * len(ps))
        for label, pts in sweep:
            d = dict(pts)
            lines.append(f"| {label} | " + ' | '.join(
                f"{d[p]:+.2f}" if p in d else '' for p in ps) + ' |')
        lines += ['', f"![Fig. 2]({os.path.basename(fig)})", '']
    if in_progress:
        lines += ['## Runs in progress (not in the tables above)', '',
                  '| run | configuration | epoch reached / target | last validation error | '
                  'best |', '|---|---|---:|---:|---:|']
        for run, config, st in in_progress:
            target = f"{st['target_epochs']:g}" if st['target_epochs'] else '?'
            last, best = (pct(e) if e is not None else '—'
                          for e in (st['last_val_error'], st['best_val_error']))
            lines.append(f"| {run} | {config} | {st['epoch']:.2f} / {target} | {last} | {best} |")
        lines.append('')
    for name in KEPT_SECTIONS:  # measured by other scripts
        kept = os.path.join(os.path.dirname(os.path.abspath(output)), name)
        if os.path.isfile(kept):
            with open(kept) as f:
                lines += ['', f.read().rstrip(), '']
    text = '\n'.join(lines)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, 'w') as f:
        f.write(text)
    return text


def _plot_sweep(sweep, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for label, pts in sweep:
        ax.plot([100 * p for p, _ in pts], [d for _, d in pts], 'o-', label=label)
    ax.axhline(0, color='gray', lw=0.8)
    ax.set_xlabel('pruning ratio p (%)')
    ax.set_ylabel('error increase over float (points)')
    ax.set_title('ResNet-20 CIFAR-10, 2-bit LUT-Q with pruning')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plan(args):
    for c in args.run:
        configs.parse(c)  # a ValueError names the wrong configuration
    return [(c, os.path.join(args.runs, c), ['--config', c]) for c in args.run]


def _train(argv):
    from examples.cifar10 import train
    return train.main(argv)


def main(argv=None):
    p = common.parser(__doc__.split('\n\n')[0], output_help='markdown file to write '
                      '(fig2_pruning.png goes next to it)')
    from examples.cifar10.slices import in_progress
    common.main(p, argv, _plan, _train, lambda runs, args: write_report(
        runs, args.output, args.note, in_progress=in_progress(args.collect or args.runs)))


if __name__ == '__main__':
    main()
