# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""What the examples' ``reproduce.py`` scripts share: train the missing runs, collect their
``results.json``, group them by schedule and describe each schedule.

A reproduce script names its runs (one folder per run below ``--runs``), trains those without a
``results.json`` (continuing those with a checkpoint), then writes its report from every
``results.json`` below the folder; ``--collect DIR`` only writes the report. Numbers of runs
with different schedules never share a table: :func:`schedule_key` says which runs are
comparable, :func:`describe_schedule` states the schedule under each table.
"""
import argparse
import glob
import json
import os

__all__ = ['collect', 'schedule_key', 'describe_schedule', 'weights_label', 'pct', 'parser',
           'train_runs', 'main']


def collect(folder):
    """Every ``results.json`` below ``folder`` (with its run folder added as ``run``)."""
    out = []
    for path in sorted(glob.glob(os.path.join(folder, '**', 'results.json'), recursive=True)):
        with open(path) as f:
            r = json.load(f)
        r['run'] = os.path.relpath(os.path.dirname(path), folder)
        out.append(r)
    return out


def schedule_key(r, per_row=()):
    """Runs with equal keys were trained with the same schedule (comparable with each other).

    Args:
        r (dict): a run's results.
        per_row (tuple): parts that may differ within one table because the table states them
            per row or per number: ``'act_bits'`` (activation bits), ``'init'`` (from scratch or
            fine-tuned from float).
    """
    s = r['schedule']
    parts = {'name': s['name'], 'lr': s['lr'], 'iterations': s['iterations'],
             'batch_size': s['batch_size'], 'processes': s.get('processes', 1),
             'weight_decay': s['weight_decay'], 'act_bits': r.get('act_bits'),
             'n_train': r['n_train'], 'init': bool(s.get('init')), 'seed': r.get('seed', 0)}
    return tuple(v for k, v in parts.items() if k not in per_row)


def describe_schedule(r, per_row=()):
    """One line stating the schedule of a run (without the ``per_row`` parts, see
    :func:`schedule_key`)."""
    s = r['schedule']
    init = '' if 'init' in per_row else (
        ', fine-tuned from float' if s.get('init') else ', from scratch')
    act = f", {r['act_bits']}-bit activations" if r.get('act_bits') and 'act_bits' not in \
        per_row else ''
    epochs = f"{s['epochs_run']:.3g} epoch" + ('' if s['epochs_run'] == 1 else 's')
    procs = f" x {s['processes']} processes" if s.get('processes', 1) > 1 else ''
    return (f"{epochs} ({s['iterations']} it., batch {s['batch_size']}{procs}), "
            f"{s['name']} lr {s['lr']:g}, wd {s['weight_decay']:g}{init}{act}, "
            f"{r['n_train']} training images, seed {r.get('seed', 0)}, {r['context']}")


def weights_label(layers):
    """``float``, or ``<bits>-bit <dictionary>[, P% pruned]`` of a results' ``layers``."""
    if not layers['lutq']:
        return 'float'
    bits = int(layers['n_values']).bit_length() - 1
    prune = f", {layers['prune_ratio']:.0%} pruned" if layers['prune_ratio'] else ''
    return f"{bits}-bit {layers['dictionary']}{prune}"


def pct(x):
    """An error rate as a percentage with two decimals."""
    return f"{100 * x:.2f}"


def parser(description, run_help='configurations to train first',
           output_help='markdown file to write'):
    """The flags every reproduce script has: ``--run ... | --collect DIR``, ``--runs``,
    ``--output``, ``--note``; unknown flags go to train.py."""
    p = argparse.ArgumentParser(
        description=description,
        epilog='Other flags (e.g. --epochs, --context, --data-dir) are passed to train.py.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument('--run', nargs='+', metavar='CONFIG', help=run_help)
    g.add_argument('--collect', metavar='DIR', help='only collect results.json below DIR')
    p.add_argument('--runs', default='runs', help='folder of the run folders (with --run)')
    p.add_argument('--output', default='RESULTS.md', help=output_help)
    p.add_argument('--note', default='', help='a paragraph for the top of RESULTS.md')
    return p


def train_runs(train_main, jobs, train_args):
    """Train every job that has not finished.

    Args:
        train_main (callable): the example's ``train.main(argv)``.
        jobs (list): ``(label, run folder, argv of a new run)``; a folder with ``results.json``
            is kept, one with a checkpoint continues (``--resume``), else a new run starts
            there.
        train_args (list): flags added to every call (schedule, data, context).
    """
    for label, out, argv in jobs:
        if os.path.exists(os.path.join(out, 'results.json')):
            print(f"{label}: finished run in {out}, kept")
            continue
        new = argv + ['--output', out]
        train_main((['--resume', out] if os.path.exists(os.path.join(out, 'checkpoint'))
                    else new) + train_args)


def main(p, argv, plan, train_main, write):
    """Run a reproduce script: train the planned runs (``--run``) or not (``--collect``), then
    write the report from every ``results.json`` found.

    Args:
        p (argparse.ArgumentParser): from :func:`parser` (plus the script's own flags).
        argv (list or None): the command line.
        plan (callable): ``plan(args) -> jobs`` for :func:`train_runs`; raises ValueError for
            a wrong ``--run`` (reported as a usage error before anything runs).
        train_main (callable): ``train_main(argv)`` trains one run (the example's
            ``train.main``).
        write (callable): ``write(runs, args)`` writes the report.
    """
    args, train_args = p.parse_known_args(argv)
    if args.run:
        try:
            jobs = plan(args)
        except ValueError as e:
            p.error(str(e))
        train_runs(train_main, jobs, train_args)
        folder = args.runs
    else:
        folder = args.collect
        if not os.path.isdir(folder):
            p.error(f"--collect {folder}: no such folder")
    runs = collect(folder)
    if not runs:
        raise SystemExit(f"error: no results.json below {folder}")
    write(runs, args)
    print(f"wrote {args.output} from {len(runs)} runs")
