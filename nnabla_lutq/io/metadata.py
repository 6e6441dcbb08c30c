# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The self-description that exported files carry (``lutq.json`` inside an .nnp, the manifest of a
.lutq): which parameters are look-up tables and of what kind, which BN layers are multiplier-less.

Readers (``report``, ``pack``, ``info``, a future integer executor) read these facts instead of
recognising graph shapes. Layout, version 1::

    {"format": "nnabla-lutq", "version": 1, "flags": [],
     "tables": {"<layer>": {"kind": "conv"|"affine"|"depthwise_conv"|"deconv",
                            "dictionary": "free"|"pow2"|"fixed", "n_values": K,
                            "prune_ratio": p, "pruned": bool, "pow2_range": [lo, hi] or null,
                            "fixed_values": [...] or null, "n_weights": N,
                            "stored": "tables"|"dense", "A": name, "d": name, "W": name}},
     "bn": {"<layer>": {"multiplier_less": bool, "folded": bool, "params": [names],
                        "reason": why it stayed float (optional)}},
     "float_layers": {"<scope>": {"function": "Convolution"|..., "weight": name,
                                  "n_weights": N, "reason": why it is not LUT-Q}}}

``float_layers`` (optional, added in 0.1 without a version change: older readers ignore it)
lists the weight layers that compute with a stored float weight, with the reason recorded when
the graph was converted (:func:`nnabla_lutq.convert`: an override to None, ``min_weights``, a
function that cannot be converted) or "built as a float layer".

``stored`` is ``"tables"`` when the file holds ``A`` (int) and ``d`` and the graph computes
``d[A]`` (``Embed(A, d)``, or the ``Gather`` of grouped tables, :mod:`nnabla_lutq.io.lookup`),
``"dense"`` when it holds ``d[A]`` as the float parameter ``W``. ``flags`` lists features a
reader must understand to use the file; a reader refuses a file with a flag or a version it does
not know rather than misreading it.

Grouped tables (flag ``"grouped_tables"``): a layer with one table per ``group_size`` output
channels has, in its entry, ``"group_size": g, "n_groups": G, "out_axis": axis`` (the
output-channel axis of ``A``/``W``, non-negative); its ``d`` has shape ``(G, K)`` and ``A``
indexes its group's row. A reader of the previous layout would take ``d`` for one table of G
values, so a description with a grouped table (stored as tables or dense) carries the flag, and
such a reader refuses it; a description without one is written exactly as before.
"""
from ..core.kinds import WEIGHT_LAYERS

__all__ = ['FILE_NAME', 'FORMAT', 'VERSION', 'KNOWN_FLAGS', 'GROUPED', 'KINDS', 'new', 'table',
           'grouping', 'add_table', 'check']

#: the member of an .nnp archive that holds the description
FILE_NAME = 'lutq.json'
FORMAT = 'nnabla-lutq'
VERSION = 1
#: the flag of a description with grouped tables
GROUPED = 'grouped_tables'
#: flags this version understands
KNOWN_FLAGS = frozenset({GROUPED})
#: nnabla function type -> the ``kind`` a table of its layer has (from
#: :data:`nnabla_lutq.core.kinds.WEIGHT_LAYERS`)
KINDS = {w.function: w.kind for w in WEIGHT_LAYERS}


def new():
    """An empty description of the current version.

    Returns:
        dict: ``{"format", "version", "flags", "tables", "bn"}``.
    """
    return {'format': FORMAT, 'version': VERSION, 'flags': [], 'tables': {}, 'bn': {}}


def table(kind, config, stored, prefix):
    """One entry of ``tables``: a look-up table layer and how the file stores it (with the
    :func:`grouping` keys for grouped tables; put it in with :func:`add_table`).

    Args:
        kind (str): the layer's kind (a value of :data:`KINDS`).
        config (~nnabla_lutq.core.config.LUTQConfig): the settings its table was fitted with.
        stored (str): ``'tables'`` (``<prefix>/A`` and ``<prefix>/d``) or ``'dense'``
            (``d[A]`` as ``<prefix>/W``).
        prefix (str): the layer's parameter prefix, e.g. ``'net/conv1/lutq_conv'``.

    Returns:
        dict: the entry.
    """
    tables = stored == 'tables'
    entry = {'kind': kind, 'dictionary': config.kind, 'n_values': config.n_values,
             'prune_ratio': config.prune_ratio, 'pruned': config.pruned,
             'pow2_range': list(config.pow2_range) if config.pow2_range else None,
             'fixed_values': list(config.fixed_values) if config.fixed_values else None,
             'n_weights': config.n_weights, 'stored': stored,
             'A': f"{prefix}/A" if tables else None, 'd': f"{prefix}/d" if tables else None,
             'W': None if tables else f"{prefix}/W"}
    if config.group_size is not None:
        entry.update(grouping(config.group_size, config.n_groups, config.out_axis))
    return entry


def grouping(group_size, n_groups, out_axis):
    """The keys a grouped table adds to its entry (see the module documentation).

    Args:
        group_size (int): output channels per table.
        n_groups (int): G, the number of tables.
        out_axis (int): the output-channel axis of ``A`` (non-negative).

    Returns:
        dict: ``group_size``, ``n_groups``, ``out_axis``.
    """
    return {'group_size': int(group_size), 'n_groups': int(n_groups), 'out_axis': int(out_axis)}


def add_table(meta, layer, entry):
    """Put a table entry into a description, flagging it when the table is grouped.

    Args:
        meta (dict): the description.
        layer (str): the layer's name.
        entry (dict): its entry (:func:`table`).

    Returns:
        dict: ``meta``.
    """
    meta['tables'][layer] = entry
    if entry.get('group_size') is not None and GROUPED not in meta['flags']:
        meta['flags'].append(GROUPED)
    return meta


def check(meta, source, error=ValueError):
    """Validate a description read from a file.

    Args:
        meta (dict): the parsed JSON.
        source (str): the file, for messages.
        error (type): the exception class to raise.

    Returns:
        dict: ``meta``.

    Raises:
        error: for another format, a newer version, unknown flags or a malformed layout.
    """
    if not isinstance(meta, dict) or meta.get('format') != FORMAT:
        raise error(f"{source}: {FILE_NAME} is not an {FORMAT} description")
    version = meta.get('version')
    if not isinstance(version, int) or version < 1:
        raise error(f"{source}: {FILE_NAME} has no valid version ({version!r})")
    if version > VERSION:
        raise error(f"{source}: written by a newer nnabla-lutq (description version {version}, "
                    f"this one reads up to {VERSION}); upgrade nnabla-lutq")
    flags = meta.get('flags', [])
    unknown = sorted(set(flags) - KNOWN_FLAGS) if isinstance(flags, list) else [flags]
    if unknown:
        raise error(f"{source}: uses format flags {unknown} that this nnabla-lutq does not know; "
                    "upgrade nnabla-lutq to read it")
    if not isinstance(meta.get('tables', {}), dict) or not isinstance(meta.get('bn', {}), dict):
        raise error(f"{source}: {FILE_NAME} is malformed (tables and bn must be objects)")
    meta.setdefault('tables', {})
    meta.setdefault('bn', {})
    return meta
