# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Train ResNet-18/34/50 on ImageNet (any ImageFolder), float or LUT-Q, and export the result.

Examples::

    python train.py --data-dir /data/imagenet --arch resnet18 --config float --context cudnn \\
        --output runs/resnet18/float
    python train.py --data-dir /data/imagenet --arch resnet18 --config lutq4-pow2 --act-bits 8 \\
        --init runs/resnet18/float/params.h5 --context cudnn --output runs/resnet18/lutq4-pow2-a8
    mpirun -n 4 python train.py --data-dir /data/imagenet --arch resnet50 \\
        --config lutq2-pow2-mlbn --act-bits 8 --context cudnn       # 4 GPUs, data-parallel
    python train.py --resume runs/resnet18/float                    # continue a stopped run
    python train.py --list-configs

The run folder is the one of examples/common/trainer.py (monitors, checkpoint, params.h5,
model.nnp with the look-up tables, results.json); results.json also records the architecture,
image size, loader and the memory footprint as the paper counts it, beside the paper's.
"""
import argparse
import json
import os
import sys
import time

if __package__ in (None, ''):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
if __name__ == '__main__':  # before the slow imports: no nnabla INFO lines, Ctrl-C in one line
    from examples.common.console import script_console
    script_console('train.py')

from examples.common import trainer  # noqa: E402
from examples.common.image_data import DataError  # noqa: E402
from examples.imagenet import models, paper  # noqa: E402
from examples.imagenet.data import ImageFolder  # noqa: E402

#: ``--arch`` -> depth of :func:`examples.imagenet.models.resnet`
DEPTHS = {'resnet18': 18, 'resnet34': 34, 'resnet50': 50}
#: the image size the paper's footprint is counted at
PAPER_IMAGE_SIZE = 224


def parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    trainer.add_arguments(p, epochs=90)
    # ImageNet defaults: lr 0.1 per 256 images (per process: scaled by the number of processes).
    # Set on the actions, not with p.set_defaults(): trainer.parse_args would take parser-level
    # defaults for given flags (and --resume would refuse them as changed).
    defaults = {'batch_size': 64, 'lr': 0.025, 'weight_decay': 1e-4, 'schedule': 'cosine',
                'val_batch_size': 100}
    for action in p._actions:
        action.default = defaults.get(action.dest, action.default)
    p.add_argument('--data-dir', default=None,
                   help='ImageNet-style folder: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG, or a '
                        'flat val/ with LOC_val_solution.csv or val.txt (see '
                        'examples/imagenet/data.py); test/ is accepted for val/')
    p.add_argument('--arch', choices=sorted(DEPTHS), default='resnet18',
                   help='network (default: %(default)s)')
    p.add_argument('--image-size', type=int, default=224,
                   help='side of the square network input; >= 32 (default: %(default)s)')
    p.add_argument('--workers', type=int, default=4,
                   help='decoding processes (Pillow) or threads (DALI); 0 decodes in the '
                        'training process (default: %(default)s)')
    p.add_argument('--loader', choices=['auto', 'pil', 'dali'], default='auto',
                   help='auto: NVIDIA DALI when installed and --context is cudnn, else Pillow '
                        'worker processes; dali: DALI (GPU decoding with cudnn, CPU threads '
                        'otherwise; an error if not installed); pil: Pillow '
                        '(default: %(default)s)')
    return p


class Run:
    """What the trainer's callbacks share: the run's own settings (a resumed run's come from its
    args.json, so they are known only when the trainer asks for the data) and the data set."""

    def __init__(self):
        self.args = self.data = None
        self.loader = None

    def dataset(self, args):
        """The ImageFolder of a run (``trainer.train``'s ``dataset_fn``)."""
        self.args = args
        if args.data_dir is None:
            raise DataError("--data-dir: give the ImageNet folder (train/<wnid>/, val/)")
        if args.image_size < 32:
            raise DataError(f"--image-size {args.image_size}: the ResNets need at least 32")
        if args.workers < 0:
            raise DataError(f"--workers {args.workers}: give 0 or more")
        self.loader = resolve_loader(args.loader, args.context)
        if self.loader == 'dali':
            from examples.imagenet.dali_loader import DaliImageFolder
            self.data = DaliImageFolder(args.data_dir, args.image_size, workers=args.workers,
                                        device='cpu' if args.context == 'cpu' else 'gpu')
        else:
            self.data = ImageFolder(args.data_dir, args.image_size, workers=args.workers)
        return self.data

    def model(self, x, layers, test=False):
        """The run's ResNet (``trainer.train``'s ``model_fn``), one output per class."""
        return models.resnet(x, layers, DEPTHS[self.args.arch], test,
                             n_classes=len(self.data.classes))

    def close(self):
        if self.data is not None:
            self.data.close()


def resolve_loader(choice, context):
    """``'pil'`` or ``'dali'`` for ``--loader choice`` in ``context``.

    Raises:
        DataError: ``--loader dali`` without DALI installed.
    """
    from examples.imagenet.dali_loader import available
    if choice == 'dali' and not available():
        raise DataError("--loader dali needs NVIDIA DALI: pip install nvidia-dali-cuda120 (or "
                        "use --loader pil)")
    if choice == 'auto':
        return 'dali' if context not in (None, 'cpu') and available() else 'pil'
    return choice


def footprint(model_fn, layers, image_size, act_bits):
    """The inference footprint of the run's network (:func:`nnabla_lutq.analysis.footprint`)
    for one ``image_size`` image, in MiB."""
    from nnabla_lutq.analysis.footprint import footprint as count
    x, y, _ = trainer.predict_fn(model_fn, layers, 1, (3, image_size, image_size))
    fp = count(y, act_bits=act_bits or 32, inputs=[x])
    return {'image_size': image_size, 'act_bits': act_bits or 32,
            **{k: fp[k] for k in ('param_mib', 'activation_mib', 'total_mib', 'peak_at')}}


def add_results(run, results, run_dir, log=print):
    """Add the architecture, data and footprint to a finished run's ``results.json``."""
    from nnabla_lutq.io.nnp import atomic_output
    a = run.args
    layers = trainer.run_layers(a)
    fp = {'run': footprint(run.model, layers, a.image_size, a.act_bits)}
    if a.image_size != PAPER_IMAGE_SIZE:
        fp[str(PAPER_IMAGE_SIZE)] = footprint(run.model, layers, PAPER_IMAGE_SIZE, a.act_bits)
    at224 = fp.get(str(PAPER_IMAGE_SIZE), fp['run'])
    row = paper.row_of(a.config, a.act_bits)
    fp['paper_mib'] = paper.FOOTPRINT_RESNET50.get(row) if a.arch == 'resnet50' else None
    results['imagenet'] = {'arch': a.arch, 'image_size': a.image_size,
                           'n_classes': len(run.data.classes), 'loader': run.loader,
                           'workers': a.workers, 'row': row, 'footprint': fp}
    with atomic_output(os.path.join(run_dir, 'results.json'), '.json') as tmp, \
            open(tmp, 'w') as f:
        json.dump(results, f, indent=1)
    ref = f" (paper: {fp['paper_mib']} MB)" if fp['paper_mib'] else ''
    log(f"footprint at {at224['image_size']} px: parameters {at224['param_mib']:.2f} MiB + "
        f"activations {at224['activation_mib']:.2f} MiB = {at224['total_mib']:.2f} MiB{ref}")
    return results


def main(argv=None, stop_at=None, comm=None):
    args = trainer.parse_args(parser(), argv)
    if args.list_configs:
        trainer.list_configs(act_bits=args.act_bits)
        return None
    if not args.resume and not args.output:  # the trainer's default name, with the network
        args.output = f"{args.arch}-{args.config}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = Run()
    try:
        results = trainer.train(args, run.dataset, run.model, stop_at=stop_at, comm=comm)
        if results is not None and 'final_val_error' in results:  # finished, on rank 0
            results = add_results(run, results, args.resume or args.output)
        return results
    except (trainer.RunError, DataError) as e:
        raise SystemExit(f"error: {e}")
    finally:
        run.close()


if __name__ == '__main__':
    main()
