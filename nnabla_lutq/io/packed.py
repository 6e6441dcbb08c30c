# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The packed look-up-table file (``.lutq``): an .nnp with its indices stored at ⌈log2 K⌉ bits.

Format, version 1 (all integers little-endian)::

    offset  size  content
    0       4     magic b'LUTQ'
    4       2     format version (uint16) = 1
    6       2     flags (uint16): 0, or 0x0001 when a look-up table is grouped (see below)
    8       4     M = length of the compressed metadata (uint32)
    12      8     P = length of the parameter payload (uint64)
    20      M     xz (LZMA, preset 9e) of: uint32 J, J bytes of JSON manifest (UTF-8), then the network
                  definition (binary protobuf, nnabla_pb2.NNablaProtoBuf, without parameters)
    20+M    P     parameter payloads, in manifest order (see below)
    20+M+P  4     CRC-32 of every byte before it (uint32)

The manifest is ``{"params": [...], "payload": total payload bytes}``. Each entry is either

* a look-up table ``{"A": name, "d": name, "shape": [...], "K": K, "bits": b, "A_dtype": ...,
  "need_grad": [gA, gd]}``: payload = ``d`` as K float32 values (K·32 bits) followed by the N
  indices of ``A`` packed at b = ⌈log2 K⌉ bits each, least significant bit first, the layer
  padded to a whole byte: exactly ``K·4 + ⌈N·b / 8⌉`` bytes, the paper's K·32 + N·⌈log2 K⌉ bits;
* grouped look-up tables (``d`` of shape ``(G, K)``, one table per group of output channels):
  the same entry with ``"groups": G``; payload = the G·K float32 values of ``d`` (row by row)
  followed by the N indices at b = ⌈log2 K⌉ bits: ``G·K·4 + ⌈N·b / 8⌉`` bytes, G·K·32 +
  N·⌈log2 K⌉ bits. A file with such an entry sets header flag 0x0001, so that a reader of the
  one-table layout refuses it instead of reading K values of ``d``;
* any other parameter ``{"name": ..., "shape": [...], "dtype": ..., "need_grad": g}``: its raw
  little-endian C-order bytes.

A look-up table is a stored integer ``A`` and float32 ``d`` that the model's description names
(``lutq.json``), or for a file without one, a look-up ``d[A]`` the network computes
(:mod:`nnabla_lutq.io.lookup`: ``Embed(A, d)``, or the ``Gather`` of grouped tables), as
:func:`nnabla_lutq.export_nnp` writes them. Everything beyond
the raw parameters and the tables — header, names, network definition, checksum — is the
compressed metadata plus 24 bytes.
"""
import json
import lzma
import os
import struct
import warnings
import zlib

import numpy as np

from ..core.checks import check_indices
from ..core.config import bits_per_index
from . import metadata
from .lookup import table_lookups
from .nnp import Nnp, NnpError, atomic_output, read_nnp, write_nnp

__all__ = ['pack', 'unpack', 'read_lutq', 'write_lutq', 'pack_indices', 'unpack_indices',
           'LutqFormatError', 'FORMAT_VERSION', 'MAGIC', 'FLAG_GROUPED']

MAGIC = b'LUTQ'
#: Header flag: the file holds grouped look-up tables (entries with ``"groups"``).
FLAG_GROUPED = 0x0001
#: Header flags this version understands; a file with others is refused.
KNOWN_FLAGS = FLAG_GROUPED
FORMAT_VERSION = 1
_HEADER = struct.Struct('<4sHHIQ')


class LutqFormatError(ValueError):
    """A .lutq file is truncated, corrupted, of another version, or not a .lutq file."""


def pack_indices(a, bits):
    """Pack non-negative integers below ``2**bits`` at ``bits`` bits each (LSB first).

    Args:
        a (numpy.ndarray): the indices (any shape; flattened in C order).
        bits (int): bits per index (0 gives no bytes).

    Returns:
        bytes: ``ceil(a.size * bits / 8)`` bytes.
    """
    a = np.ascontiguousarray(a).ravel().astype(np.uint32)
    if bits == 0 or a.size == 0:
        return b''
    planes = ((a[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(planes.ravel(), bitorder='little').tobytes()


def unpack_indices(buf, n, bits):
    """Inverse of :func:`pack_indices`: ``n`` indices as int64."""
    if bits == 0 or n == 0:
        return np.zeros(n, np.int64)
    planes = np.unpackbits(np.frombuffer(buf, np.uint8), count=n * bits, bitorder='little')
    return (planes.reshape(n, bits).astype(np.int64) << np.arange(bits)).sum(1)


def _tables(model):
    """``A name -> (d name, K)`` of every look-up table that can be packed (``d`` of shape
    ``(K,)`` or, grouped, ``(G, K)``).

    The file's LUT-Q description names its tables; a file without one (written by other tools)
    is searched for the look-ups ``d[A]`` of stored parameters (:mod:`nnabla_lutq.io.lookup`).
    """
    if model.meta is not None:
        pairs = [(t['A'], t['d']) for t in model.meta['tables'].values()
                 if t.get('stored') == 'tables']
        missing = [n for pair in pairs for n in pair if n not in model.params]
        if missing:
            raise LutqFormatError(f"the model's description names tables that it does not hold: "
                                  f"{missing[:3]}")
    else:
        pairs = [(lk.a, lk.d) for net in model.proto.network
                 for lk in table_lookups(net, model.params)]
    out = {}
    for a, d in pairs:
        if model.params[d].dtype != np.float32 or model.params[d].ndim not in (1, 2) or a in out:
            continue
        k = model.params[d].shape[-1]
        arr = model.params[a]
        check_indices(arr, k, a, f" of {d}; not a valid look-up table", LutqFormatError)
        out[a] = (d, k)
    return out


def write_lutq(path, model):
    """Write an :class:`~nnabla_lutq.io.nnp.Nnp` as a .lutq file (atomically).

    Args:
        path (str): destination.
        model (Nnp): the model.

    Returns:
        dict: byte counts: ``total``, ``tables`` (look-up tables), ``raw`` (other parameters),
        ``overhead`` (header, metadata, checksum) and per-table ``layers`` (``name``, ``K``,
        ``bits``, ``n_weights``, ``bytes``; ``n_groups`` for grouped tables).
    """
    tables = _tables(model)
    in_table = {d for d, _ in tables.values()}
    entries, payload, layers, flags = [], [], [], 0
    for name, arr in model.params.items():
        if name in in_table:
            continue
        if name in tables:
            d, k = tables[name]
            b = bits_per_index(k)
            blob = model.params[d].astype('<f4').tobytes() + pack_indices(arr, b)
            entry = {'A': name, 'd': d, 'shape': list(arr.shape), 'K': k, 'bits': b,
                     'A_dtype': arr.dtype.str,
                     'need_grad': [bool(model.need_grad.get(name)),
                                   bool(model.need_grad.get(d))]}
            layer = {'name': name[:-2] if name.endswith('/A') else name, 'K': k, 'bits': b,
                     'n_weights': int(arr.size), 'bytes': len(blob)}
            if model.params[d].ndim == 2:
                entry['groups'] = layer['n_groups'] = model.params[d].shape[0]
                flags |= FLAG_GROUPED
            entries.append(entry)
            layers.append(layer)
        else:
            le = arr.dtype.newbyteorder('<') if arr.dtype.byteorder == '>' else arr.dtype
            blob = np.ascontiguousarray(arr, dtype=le).tobytes()
            entries.append({'name': name, 'shape': list(arr.shape), 'dtype': le.str,
                            'need_grad': bool(model.need_grad.get(name))})
        payload.append(blob)
    body = b''.join(payload)
    manifest = json.dumps({'params': entries, 'payload': len(body), 'lutq': model.meta},
                          separators=(',', ':')).encode()
    meta = lzma.compress(struct.pack('<I', len(manifest)) + manifest +
                         model.proto.SerializeToString(), preset=9 | lzma.PRESET_EXTREME)
    data = _HEADER.pack(MAGIC, FORMAT_VERSION, flags, len(meta), len(body)) + meta + body
    data += struct.pack('<I', zlib.crc32(data) & 0xFFFFFFFF)
    with atomic_output(path, '.lutq') as tmp:
        with open(tmp, 'wb') as f:
            f.write(data)
    table_bytes = sum(x['bytes'] for x in layers)
    return {'total': len(data), 'tables': table_bytes, 'raw': len(body) - table_bytes,
            'overhead': len(data) - len(body), 'layers': layers}


def read_lutq(path):
    """Read a .lutq file into an :class:`~nnabla_lutq.io.nnp.Nnp` (indices back in their dtype).

    Raises:
        LutqFormatError: missing, not a .lutq file, other version, truncated or corrupted.
    """
    from nnabla.utils import nnabla_pb2
    if not os.path.isfile(path):
        raise LutqFormatError(f"{path}: no such file")
    with open(path, 'rb') as f:
        data = f.read()
    if data[:4] != MAGIC:
        raise LutqFormatError(f"{path}: not a .lutq file (it does not start with {MAGIC!r})")
    if len(data) < _HEADER.size + 4:
        raise LutqFormatError(f"{path}: truncated ({len(data)} bytes)")
    magic, version, flags, meta_len, payload_len = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise LutqFormatError(f"{path}: format version {version}; this nnabla-lutq reads version "
                              f"{FORMAT_VERSION} (use the nnabla-lutq that wrote it)")
    if flags & ~KNOWN_FLAGS:
        raise LutqFormatError(f"{path}: format flags 0x{flags:04x} that this nnabla-lutq does not "
                              f"know (it reads 0x{KNOWN_FLAGS:04x}); use the nnabla-lutq that "
                              "wrote it")
    expected = _HEADER.size + meta_len + payload_len + 4
    if len(data) != expected:
        raise LutqFormatError(
            f"{path}: " + ('truncated' if len(data) < expected else 'has extra bytes') +
            f" ({len(data)} bytes, the header says {expected}); re-create it with "
            "`nnabla-lutq pack`")
    if zlib.crc32(data[:-4]) & 0xFFFFFFFF != struct.unpack('<I', data[-4:])[0]:
        raise LutqFormatError(f"{path}: corrupted (checksum mismatch); re-create it with "
                              "`nnabla-lutq pack`")
    try:
        meta = lzma.decompress(data[_HEADER.size:_HEADER.size + meta_len])
        (jlen,) = struct.unpack_from('<I', meta)
        manifest = json.loads(meta[4:4 + jlen].decode())
        proto = nnabla_pb2.NNablaProtoBuf()
        proto.ParseFromString(meta[4 + jlen:])
    except (lzma.LZMAError, struct.error, ValueError, UnicodeDecodeError) as e:
        raise LutqFormatError(f"{path}: damaged metadata ({e})")
    body = data[_HEADER.size + meta_len:-4]
    if len(body) != manifest['payload']:
        raise LutqFormatError(f"{path}: payload is {len(body)} bytes, the manifest says "
                              f"{manifest['payload']}")
    params, need_grad, pos = {}, {}, 0

    def take(n):
        nonlocal pos
        if pos + n > len(body):
            raise LutqFormatError(f"{path}: payload shorter than its manifest")
        pos += n
        return body[pos - n:pos]
    for e in manifest['params']:
        if 'A' in e:
            n = int(np.prod(e['shape'], dtype=np.int64))
            groups = e.get('groups')
            if groups is not None and not flags & FLAG_GROUPED:
                raise LutqFormatError(f"{path}: damaged manifest (a grouped table without the "
                                      "header flag)")
            d = np.frombuffer(take(4 * e['K'] * (groups or 1)), '<f4').astype(np.float32)
            if groups is not None:
                d = d.reshape(groups, e['K'])
            idx = unpack_indices(take((n * e['bits'] + 7) // 8), n, e['bits'])
            params[e['A']] = idx.astype(np.dtype(e['A_dtype'])).reshape(e['shape'])
            params[e['d']] = d
            need_grad[e['A']], need_grad[e['d']] = e['need_grad']
        else:
            dt = np.dtype(e['dtype'])
            n = int(np.prod(e['shape'], dtype=np.int64))
            params[e['name']] = np.frombuffer(take(n * dt.itemsize), dt).astype(
                dt.newbyteorder('=')).reshape(e['shape'])
            need_grad[e['name']] = e['need_grad']
    meta = manifest.get('lutq')
    if meta is not None:
        meta = metadata.check(meta, path, LutqFormatError)
    return Nnp(proto, params, need_grad, meta)


def pack(nnp_path, lutq_path):
    """Pack an .nnp into a .lutq file (see the module docs for the format).

    Args:
        nnp_path (str): an .nnp, typically written by :func:`nnabla_lutq.export_nnp`.
        lutq_path (str): destination.

    Returns:
        dict: byte counts (see :func:`write_lutq`).

    Warns:
        UserWarning: if the model has no look-up tables: nothing is stored at fewer bits (the
            .lutq can be larger than the .nnp, whose parameters are compressed).

    Raises:
        ~nnabla_lutq.io.nnp.NnpError: if the .nnp cannot be read.
        LutqFormatError: if a look-up table has indices outside its dictionary, or
            ``lutq_path`` does not end with ``.lutq`` (nothing is written then).
    """
    if os.path.abspath(nnp_path) == os.path.abspath(lutq_path):
        raise LutqFormatError("the input and the output are the same file")
    if not str(lutq_path).endswith('.lutq'):  # readers tell the formats apart by the name
        raise LutqFormatError(f"{lutq_path}: the file name must end with .lutq")
    stats = write_lutq(lutq_path, read_nnp(nnp_path))
    if not stats['layers']:
        size = os.path.getsize(nnp_path)
        warnings.warn(
            f"{nnp_path}: no look-up tables to pack (no look-up d[A] of a stored integer A): "
            f"every parameter is stored raw, so {lutq_path} saves nothing on the weights "
            f"({stats['total']:,} bytes; the .nnp has {size:,}); pack a LUT-Q model "
            "(nnabla_lutq.export_nnp, or `nnabla-lutq convert` for a float one)", stacklevel=2)
    return stats


def unpack(lutq_path, nnp_path):
    """Unpack a .lutq file into an .nnp with the same definition and parameters (lossless).

    Args:
        lutq_path (str): the packed file.
        nnp_path (str): destination ``.nnp``.

    Returns:
        ~nnabla_lutq.io.nnp.Nnp: the unpacked model.

    Raises:
        LutqFormatError: truncated, corrupted, other version or not a .lutq file (nothing is
            written then).
    """
    if not str(nnp_path).endswith('.nnp'):
        raise NnpError(f"{nnp_path}: the file name must end with .nnp")
    model = read_lutq(lutq_path)
    write_nnp(nnp_path, model)
    return model
