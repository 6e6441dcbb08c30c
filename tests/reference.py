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
    w64 = w.astype(np.float64).ravel()
    a = ref_assign(w, d, cfg)
    new = np.array(d, np.float32).copy()
    if cfg.kind == 'fixed':
        return new, a
    for k in range(new.size):
        if cfg.pruned and k == 0:
            continue
        members = w64[a == k]
        if members.size:
            m = np.float32(members.mean())
            new[k] = ref_pow2(float(m), cfg.pow2_range) if cfg.kind == 'pow2' else m
    return new, a
