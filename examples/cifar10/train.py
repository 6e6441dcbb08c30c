# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Train ResNet-20 on CIFAR-10, float or LUT-Q, and export the result.

Examples::

    python train.py --config float --data-dir ~/nnabla_data
    python train.py --config lutq4-pow2 --init float-RUN/params.h5    # or float-RUN/model.nnp
    python train.py --config lutq2-pow2-mlbn --act-bits 8 --context cudnn
    python train.py --list-configs
    python train.py --resume lutq4-20261123-101500

A run folder holds the monitors, the latest checkpoint, params.h5, the inference graph
model.nnp (look-up tables, no float W) and results.json; see examples/common/trainer.py.
"""
import argparse
import os
import sys

if __package__ in (None, ''):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
if __name__ == '__main__':  # before the slow imports: no nnabla INFO lines, Ctrl-C in one line
    from examples.common.console import script_console
    script_console('train.py')

from examples.common import trainer  # noqa: E402
from examples.common.image_data import DataError  # noqa: E402
from examples.common.models import resnet20  # noqa: E402
from examples.cifar10.data import load_cifar10  # noqa: E402


def parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    trainer.add_arguments(p, epochs=160)
    p.add_argument('--data-dir', default=None,
                   help='folder with cifar-10-python.tar.gz, cifar-10-batches-py/ or a JPEG tree '
                        '(train/<class>/*.jpg, test/<class>/*.jpg; folder or .tar.gz); default '
                        '~/nnabla_data, downloading the official file there if missing')
    return p


def dataset(args):
    """The CIFAR-10 training/validation data of a run."""
    return load_cifar10(args.data_dir, progress=args.progress)


def main(argv=None, stop_at=None):
    args = trainer.parse_args(parser(), argv)
    if args.list_configs:
        trainer.list_configs(act_bits=args.act_bits)
        return None
    try:
        return trainer.train(args, dataset, resnet20, stop_at=stop_at)
    except (trainer.RunError, DataError) as e:
        raise SystemExit(f"error: {e}")


if __name__ == '__main__':
    main()
