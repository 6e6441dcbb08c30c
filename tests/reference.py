# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""Independent brute-force numpy reference of the LUT-Q k-means step (float64, no searchsorted)."""
import numpy as np


def ref_pruned(w, n_pruned):
    order = np.lexsort((np.arange(w.size), np.abs(w.astype(np.float64))))
    mask = np.zeros(w.size, bool)
    mask[order[:n_pruned]] = True
    return mask


def ref_assign(w, d, cfg):
    w64 = w.astype(np.float64).ravel()
    d64 = np.asarray(d, np.float64)
    cand = np.arange(cfg.first_free, d64.size)
    dist = np.abs(w64[:, None] - d64[None, cand])
    a = cand[np.argmin(dist, axis=1)]  # first minimum: the lower value on ties
    # among equal values: above them -> the last of the run, at or below -> the first
    last_of_run = {}
    for k in cand:
        last_of_run[d64[k]] = k
    above = w64 > d64[a]
    a[above] = [last_of_run[v] for v in d64[a[above]]]
    if cfg.pruned:
        a[ref_pruned(w64, cfg.n_pruned)] = 0
    return a.astype(np.int32)


def ref_pow2(m, rng=None):
    if m == 0:
        return 0.0
    e = np.round(np.log2(abs(m)))
    if rng is not None:
        e = min(max(e, rng[0]), rng[1])
    return float(np.sign(m) * 2.0 ** e)


def ref_step(w, d, cfg):
    """Returns (new d, assignment made before the means)."""
    a = ref_assign(w, d, cfg)
    return ref_means(w, a, d, cfg), a


def ref_means(w, a, d, cfg):
    """The table the means step makes of ``w`` grouped by ``a`` (empty clusters keep ``d``)."""
    w64 = w.astype(np.float64).ravel()
    a = np.asarray(a).ravel()
    new = np.array(d, np.float32).copy()
    if cfg.kind == 'fixed':
        return new
    for k in range(new.size):
        if cfg.pruned and k == 0:
            continue
        members = w64[a == k]
        if members.size:
            m = np.float32(members.mean())
            new[k] = ref_pow2(float(m), cfg.pow2_range) if cfg.kind == 'pow2' else m
    return new


def ref_group_slices(shape, out_axis, group_size):
    """For each group, the flat indices (in the layer's order) of its weights, in the order the
    package lists them: the group's output channels first, then the layer's order."""
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    n_out = shape[out_axis]
    out = []
    for g in range(n_out // group_size):
        part = np.take(idx, np.arange(g * group_size, (g + 1) * group_size), axis=out_axis)
        out.append(np.moveaxis(part, out_axis, 0).ravel())
    return out


def ref_grouped_step(w, d, cfg):
    """The k-means step of a grouped layer as the one-table reference run group by group."""
    w = np.asarray(w, np.float32).ravel()
    one = cfg.one_group()
    new = np.array(d, np.float32).reshape(cfg.n_groups, -1).copy()
    a = np.zeros(w.size, np.int32)
    for g, ix in enumerate(ref_group_slices(cfg.shape, cfg.out_axis, cfg.group_size)):
        new[g], a[ix] = ref_step(w[ix], new[g], one)
    return new, a


def assert_tables_fitted(layers):
    """Every LUT-Q layer's table is what the solver's last k-means step leaves: each value the
    (constrained) mean of the weights assigned to it, the pruned weights exactly the smallest |W|,
    and ``A`` int32 within [0, K)."""
    assert layers, 'no LUT-Q layer'
    for s in layers:
        w, d, a = s.W.d, s.d.d, s.A.d
        if s.config.group_size is not None:
            one = s.config.one_group()
            assert a.dtype == np.int32 and a.min() >= 0 and a.max() < d.shape[1], s.name
            for g, ix in enumerate(ref_group_slices(s.config.shape, s.config.out_axis,
                                                    s.config.group_size)):
                wg, ag = w.ravel()[ix], a.ravel()[ix]
                np.testing.assert_allclose(d[g], ref_means(wg, ag, d[g], one), rtol=1e-6,
                                           atol=1e-12, err_msg=f"{s.name} group {g}")
                if one.pruned:
                    np.testing.assert_array_equal(ag == 0, ref_pruned(wg, one.n_pruned))
            continue
        assert a.dtype == np.int32 and a.min() >= 0 and a.max() < d.size, s.name
        np.testing.assert_allclose(d, ref_means(w, a, d, s.config), rtol=1e-6, atol=1e-12,
                                   err_msg=s.name)
        if s.config.pruned:
            np.testing.assert_array_equal(a.ravel() == 0, ref_pruned(w.ravel(), s.config.n_pruned),
                                          err_msg=s.name)
