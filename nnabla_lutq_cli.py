"""Entry point of the ``nnabla-lutq`` console script.

It configures logging before nnabla is imported, so that nnabla's start-up INFO lines do not mix
with the command's output; the command itself is :mod:`nnabla_lutq.cli`.
"""
import logging
import sys


def main():
    logging.basicConfig(level=logging.WARNING, format='%(name)s: %(levelname)s: %(message)s')
    from nnabla_lutq.cli import main as cli_main
    return cli_main()


if __name__ == '__main__':
    sys.exit(main())
