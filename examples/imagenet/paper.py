# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The paper's ImageNet numbers (Cardinaux, Uhlich et al., Table 2) and the float references.

One place for ``train.py`` (``results.json`` puts the paper's footprint beside ours) and
``reproduce.py`` (RESULTS.md puts the paper's errors beside ours).
"""

#: Architectures of Table 2, in its column order.
ARCHS = ('resnet18', 'resnet34', 'resnet50')

#: Table 2's rows: ``(row name, config, act_bits, weights, activations, BN)``. The row name is
#: what ``reproduce.py --run`` takes; ``config`` and ``act_bits`` are train.py's ``--config`` and
#: ``--act-bits``. "Quasi multiplier-less": power-of-two weights, float BN; "fully": also
#: multiplier-less BN.
ROWS = (
    ('float', 'float', None, 'float', 'float', 'float BN'),
    ('lutq4-pow2-a8', 'lutq4-pow2', 8, '4-bit pow-2', '8-bit', 'float BN (quasi multiplier-less)'),
    ('lutq4-pow2-mlbn-a8', 'lutq4-pow2-mlbn', 8, '4-bit pow-2', '8-bit',
     'multiplier-less BN (fully multiplier-less)'),
    ('lutq2-pow2', 'lutq2-pow2', None, '2-bit pow-2', 'float', 'float BN (quasi multiplier-less)'),
    ('lutq2-pow2-a8', 'lutq2-pow2', 8, '2-bit pow-2', '8-bit', 'float BN (quasi multiplier-less)'),
    ('lutq2-pow2-mlbn-a8', 'lutq2-pow2-mlbn', 8, '2-bit pow-2', '8-bit',
     'multiplier-less BN (fully multiplier-less)'),
)

#: Validation error (%) of Table 2, per row name and architecture (None: not in the paper).
ERRORS = {
    'float': (31.0, 28.1, 25.9),
    'lutq4-pow2-a8': (31.6, 28.1, 25.5),
    'lutq4-pow2-mlbn-a8': (35.1, 30.7, 26.9),
    'lutq2-pow2': (31.8, None, None),
    'lutq2-pow2-a8': (35.8, 30.5, 26.9),
    'lutq2-pow2-mlbn-a8': (43.2, 35.2, 29.8),
}

#: Float top-1 errors (%) of nnabla-examples' ImageNet ResNets: the baselines to beat.
NNABLA_EXAMPLES_FLOAT = (29.42, 26.44, 23.27)

#: ResNet-50 memory footprint in the paper (MB; these are MiB: 25.6 M weights x 32 bit = 97.5).
FOOTPRINT_RESNET50 = {'float': 97.5, 'lutq2-pow2-a8': 7.4, 'lutq2-pow2-mlbn-a8': 7.4}


def row_of(config, act_bits):
    """The Table-2 row name of a run (``None`` for a configuration the table does not have)."""
    for name, c, a, *_ in ROWS:
        if c == config and a == act_bits:
            return name
    return None


def paper_error(row, arch):
    """Table 2's validation error (%) of ``row`` for ``arch``, or None."""
    if row not in ERRORS or arch not in ARCHS:
        return None
    return ERRORS[row][ARCHS.index(arch)]
