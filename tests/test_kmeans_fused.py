# Copyright 2026 The nnabla-lutq authors.
# SPDX-License-Identifier: Apache-2.0
"""The fused CUDA k-means step (``backend='fused'``).

On the CPU the kernels of nnabla_lutq/kmeans/cuda/kmeans.cu run on a SIMT emulation
(tests/cuda_emu: the .cu file itself compiled as C++, real threads and barriers per block). They
must equal the numpy model of tests/fused_reference.py bit for bit, whatever the block size (the
integer sums commute), and the host step with A identical and d within one float32 ulp. The same
comparisons run on a GPU through the driver with ``pytest --context cudnn``.
"""
import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest
import nnabla as nn
import nnabla.parametric_functions as PF
import nnabla.solvers as S

import nnabla_lutq
from nnabla_lutq import STATE
from nnabla_lutq.core.config import make_config
from nnabla_lutq.core import init_dictionary
from nnabla_lutq.core.kmeans import boundaries, kmeans_step
from nnabla_lutq.core.pow2 import SQRT2_ABOVE, pow2_round
from nnabla_lutq.kmeans import FusedKMeans, backend_for
from nnabla_lutq.kmeans import fused
from fused_reference import cluster_mean, fused_step, pow2_nearest, scale_exponent
from test_foundation import _layers as _net_layers  # a conv and an affine LUT-Q layer, W moved

HERE = os.path.dirname(os.path.abspath(__file__))
_P = ctypes.c_void_p
_U = ctypes.c_uint


def _compile_emulation(tmp_path_factory, source):
    """Build tests/cuda_emu/<source> (which includes the kernel file) as a shared library."""
    cxx = shutil.which('g++') or shutil.which('c++')
    if cxx is None:
        pytest.skip('no C++ compiler to build the SIMT emulation of the kernels')
    out = str(tmp_path_factory.mktemp('emu') / (source.split('.')[0] + '.so'))
    subprocess.run([cxx, '-std=c++20', '-O1', '-ffp-contract=off', '-pthread', '-shared',
                    '-fPIC', f'-DKMEANS_CU="{fused.SOURCE_PATH}"', '-o', out,
                    os.path.join(HERE, 'cuda_emu', source)], check=True)
    return out


@pytest.fixture(scope='module')
def emu(tmp_path_factory):
    """The kernels compiled for the CPU on the SIMT emulation (a shared library)."""
    lib = ctypes.CDLL(_compile_emulation(tmp_path_factory, 'launch.cpp'))
    lib.emu_absmax.argtypes = [_U, _U, _P, _P, _P]
    lib.emu_assign.argtypes = [_U, _U, _P, _P, _P, _P, _P]
    lib.emu_prune_hist.argtypes = [_U, _U, _P, _P, _P, _P, ctypes.c_int]
    lib.emu_prune_select.argtypes = [_U, _U, _P, _P, _P, ctypes.c_int]
    lib.emu_prune_count.argtypes = [_U, _U, _P, _P, _P, _P]
    lib.emu_prune_ties.argtypes = [_U, _U, _P, _P, _P]
    lib.emu_update.argtypes = [_U, _U, _P, _P, _P]
    lib.emu_boundary.argtypes = [ctypes.c_float, ctypes.c_float]
    lib.emu_boundary.restype = ctypes.c_float
    lib.emu_pow2.argtypes = [ctypes.c_float, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.emu_pow2.restype = ctypes.c_float
    lib.emu_mean.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int]
    lib.emu_mean.restype = ctypes.c_float
    return lib


def emu_step(lib, layers, iters=1, block=32):
    """Run the three kernels on the emulation over ``(w, d, a, config)`` numpy layers, in place.

    Returns:
        numpy.ndarray: the per-layer max-|w| bits that lutq_absmax found.
    """
    for w, d, a, _ in layers:
        assert w.dtype == np.float32 and d.dtype == np.float32 and a.dtype == np.int32
    table, block_layer = fused.layer_table(
        [c for *_, c in layers], [(w.ctypes.data, d.ctypes.data, a.ctypes.data)
                                  for w, d, a, _ in layers])
    n = len(layers)
    maxbits = np.zeros(n, np.uint32)
    sums = np.zeros(3 * fused.MAX_K * n, np.uint64)
    prune = np.zeros(fused.PRUNE_SIZE * n, np.uint8)
    hist = np.zeros(fused.RADIX * n, np.uint32)
    ties = np.zeros(block_layer.size, np.uint32)
    t, b, m, s, q, h, c = (x.ctypes.data for x in (table, block_layer, maxbits, sums, prune, hist,
                                                    ties))
    lib.emu_absmax(block_layer.size, block, t, b, m)
    if any(c.pruned for *_, c in layers):
        for p in range(3):
            lib.emu_prune_hist(block_layer.size, block, t, b, q, h, p)
            lib.emu_prune_select(n, block, t, q, h, p)
        lib.emu_prune_count(block_layer.size, block, t, b, q, c)
        lib.emu_prune_ties(n, block, t, q, c)
        assert not hist.any()  # the select leaves the histogram cleared for the next pass
    for _ in range(iters):
        lib.emu_assign(block_layer.size, block, t, b, m, q, s)
        lib.emu_update(n, block, t, m, s)
    assert not sums.any()  # lutq_update leaves the sums cleared for the next iteration
    return maxbits


def ulps(x, y):
    """Distance in float32 ulps between same-signed arrays."""
    xi = np.asarray(x, np.float32).view(np.int32).astype(np.int64)
    yi = np.asarray(y, np.float32).view(np.int32).astype(np.int64)
    return np.abs(xi - yi)


def _layer(rng, n, k, dictionary='free', pow2_range=None, scale=0.05, w=None, prune=0.0):
    cfg = make_config(k, dictionary, prune, pow2_range, n)
    if w is None:
        w = (rng.randn(n) * scale).astype(np.float32)
    d0, _ = init_dictionary(w + (rng.randn(n) * scale * 0.3).astype(np.float32), cfg, iters=2)
    return w.astype(np.float32), d0.astype(np.float32), np.full(n, -1, np.int32), cfg


def _layers(rng):
    mids = np.array([0.25, 0.5, 1.0, 2.0], np.float32)  # midpoints 0.375, 0.75, 1.5 are floats
    ties = np.concatenate([b + np.array([-1, 0, 1]) * np.spacing(b)
                           for b in np.float32([0.375, 0.75, 1.5])]).astype(np.float32)
    tie_w = np.concatenate([ties, rng.uniform(0.2, 2.2, 997).astype(np.float32)])
    tie_layer = (tie_w, mids.copy(), np.zeros(tie_w.size, np.int32),
                 make_config(4, 'free', 0.0, None, tie_w.size))
    return [
        _layer(rng, 10000, 16),                                 # 3 blocks
        _layer(rng, 5000, 4, 'pow2', (-6, -1)),
        _layer(rng, 9000, 16, 'pow2'),
        _layer(rng, 3000, 3, [-1, 0, 1], scale=0.8),            # fixed: assignment only
        _layer(rng, 2, 2),                                      # two weights
        _layer(rng, 20000, 256),                                # the largest K
        _layer(rng, 4096, 8, scale=1e30),                       # huge: S < 0
        _layer(rng, 4097, 8, scale=1e-30),                      # tiny: S > 120
        tie_layer,                                              # weights on the midpoints
        _layer(rng, 10000, 4, prune=0.5),                       # pruning
        _layer(rng, 6000, 4, 'pow2', (-6, -2), prune=0.7),
        _layer(rng, 900, 3, [-1, 0, 1], scale=0.8, prune=0.2),  # fixed with the zero pruned
        # few distinct |w|: the threshold value lies on both sides of the cut (index order)
        _layer(rng, 5000, 4, w=(rng.choice([-3, -2, -1, 1, 2, 3], 5000) * 0.01), prune=0.3),
        _layer(rng, 4500, 2, w=(rng.choice([-1, 1], 4500) * 0.01), prune=0.4),  # all equal
    ]


def test_layer_struct_and_constants_match_the_source(emu):
    assert emu.emu_layer_size() == fused.LAYER_DTYPE.itemsize == 64
    assert emu.emu_prune_size() == fused.PRUNE_SIZE
    assert emu.emu_radix() == fused.RADIX
    assert emu.emu_max_k() == fused.MAX_K
    assert emu.emu_chunk() == fused.CHUNK
    with open(fused.SOURCE_PATH) as f:
        src = f.read()
    assert f'#define LUTQ_BLOCK {fused.BLOCK} ' in src


def test_boundaries_and_pow2_rule_are_the_host_ones(emu, rng):
    v = np.sort(np.concatenate([rng.randn(2000), rng.randn(200) * 1e-30, rng.randn(200) * 1e30,
                                [0.0, 0.0]]).astype(np.float32))
    pairs = [(v[i], v[i + 1]) for i in range(v.size - 1)]
    pairs += [(np.float32(1), np.nextafter(np.float32(1), np.float32(2)))]  # midpoint not a float
    got = np.array([emu.emu_boundary(a, b) for a, b in pairs], np.float32)
    for (a, b), g in zip(pairs, got):
        assert g == boundaries(np.array([a, b], np.float32))[0], (a, b)
    # the pow-2 rule, around 2^(k + 1/2) and with a clipped range
    x = np.concatenate([SQRT2_ABOVE * 2.0 ** np.arange(-20, 20),
                        np.nextafter(SQRT2_ABOVE, np.float32(0)) * 2.0 ** np.arange(-20, 20),
                        rng.randn(1000) * 3, [0.0, 1e-40, -1e38]]).astype(np.float32)
    x = np.concatenate([x, -x])
    for rng_ in (None, (-4, 2)):
        want = pow2_round(x, rng_)
        got = np.array([emu.emu_pow2(v, rng_ is not None, *(rng_ or (0, 0))) for v in x],
                       np.float32)
        np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))
        model = np.array([pow2_nearest(v, rng_) for v in x], np.float32)  # the independent rule
        np.testing.assert_array_equal(got.view(np.int32), model.view(np.int32))


def test_mean_formula_matches_the_model(emu, rng):
    for _ in range(300):
        n = int(rng.randint(1, 1 << 22))
        total = int(rng.randint(-(1 << 62), 1 << 62)) * int(rng.randint(1, n + 1)) // 4
        s = int(rng.randint(-60, 180))
        hi, lo = total >> 32, total & 0xffffffff
        got = emu.emu_mean(lo, hi % (1 << 64), n, s)  # the kernel's wrapped 64-bit halves
        assert np.float32(got) == cluster_mean(total, n, s)


def test_emulated_kernels_equal_the_model_bit_for_bit(emu, rng):
    layers = _layers(rng)
    start = [(w.copy(), d.copy()) for w, d, _, _ in layers]
    maxbits = emu_step(emu, layers, iters=3)
    for (w, d, a, cfg), (w0, d0) in zip(layers, start):
        dd = d0
        for _ in range(3):
            dd, aa = fused_step(w0, dd, cfg)
        np.testing.assert_array_equal(a, aa)
        np.testing.assert_array_equal(d.view(np.int32), dd.view(np.int32))
        v = d[cfg.first_free:]
        assert np.all(v[1:] >= v[:-1])
    # the max the kernels found is every layer's max |w|
    want = [np.abs(w).max().view(np.uint32) for w, *_ in layers]
    np.testing.assert_array_equal(maxbits, want)


def test_emulated_kernels_match_the_host_step(emu, rng):
    """One iteration from the same d: A identical, d within one float32 ulp of the float64 host."""
    layers = _layers(rng)
    start = [(w.copy(), d.copy()) for w, d, _, _ in layers]
    emu_step(emu, layers, iters=1)
    worst = 0
    for (w, d, a, cfg), (w0, d0) in zip(layers, start):
        hd, ha = kmeans_step(w0, d0, cfg)
        np.testing.assert_array_equal(a, ha)
        worst = max(worst, int(ulps(d, hd).max()))
    assert worst <= 1


def test_result_does_not_depend_on_the_block_size_or_run(emu, rng):
    runs = []
    for block in (32, 64, 32):
        layers = _layers(np.random.RandomState(5))
        emu_step(emu, layers, iters=2, block=block)
        runs.append([(d.copy(), a.copy()) for _, d, a, _ in layers])
    for other in runs[1:]:
        for (d0, a0), (d1, a1) in zip(runs[0], other):
            np.testing.assert_array_equal(a0, a1)
            np.testing.assert_array_equal(d0.view(np.int32), d1.view(np.int32))


def test_empty_clusters_keep_their_value_and_zeros_work(emu, rng):
    w = np.zeros(100, np.float32)
    d = np.array([-1.0, -0.5, 0.5, 1.0], np.float32)
    cfg = make_config(4, 'free', 0.0, None, 100)
    layer = [(w, d, np.zeros(100, np.int32), cfg)]
    emu_step(emu, layer)
    np.testing.assert_array_equal(d, [-1.0, 0.0, 0.5, 1.0])  # only the cluster of 0 moved
    np.testing.assert_array_equal(layer[0][2], 1)
    assert scale_exponent(w) == 62 + 126


def test_absmax_flags_nonfinite_weights(emu, rng):
    layers = [_layer(rng, 5000, 4), _layer(rng, 300, 4), _layer(rng, 9000, 4)]
    layers[1][0][17] = np.nan
    layers[2][0][8999] = -np.inf
    table, block_layer = fused.layer_table([c for *_, c in layers],
                                           [(w.ctypes.data, 0, 0) for w, *_ in layers])
    maxbits = np.zeros(3, np.uint32)
    emu.emu_absmax(block_layer.size, 32, table.ctypes.data, block_layer.ctypes.data,
                   maxbits.ctypes.data)
    assert maxbits[0] < 0x7f800000 <= min(maxbits[1], maxbits[2])


def test_shipped_ptx_is_built_from_the_source():
    if fused.find_nvrtc() is None:
        pytest.skip('NVRTC is not installed (pip install nvidia-cuda-nvrtc-cu12==12.0.76)')
    with open(fused.PTX_PATH) as f:
        shipped = f.read()
    assert fused.build_ptx() == shipped, 'rebuild it: python -m nnabla_lutq.kmeans.fused'
    assert '.target sm_70' in shipped and '.version 8.0' in shipped
    assert shipped.count('.entry ') == len(fused.KERNELS)
    for name in fused.KERNELS:
        assert f'.entry {name}(' in shipped
    assert 'fma.rn.f64' not in shipped  # --fmad=false: the model's double rounding holds


def test_layer_table_blocks():
    cfgs = [make_config(2, 'free', 0.0, None, n) for n in (2, fused.CHUNK, fused.CHUNK + 1)]
    cfgs.append(make_config(4, 'pow2', 0.0, (-3, 1), 10))
    table, blocks = fused.layer_table(cfgs, [(1, 2, 3)] * 4)
    np.testing.assert_array_equal(blocks, [0, 1, 2, 2, 3])
    np.testing.assert_array_equal(table['first_block'], [0, 1, 2, 4])
    assert list(table[3][['kind', 'has_range', 'exp_lo', 'exp_hi']]) == [1, 1, -3, 1]
    assert fused.fused_supported(cfgs[0])
    assert fused.fused_supported(make_config(4, 'free', 0.5, None, 10))
    assert not fused.fused_supported(make_config(300, 'free', 0.0, None, 1000))
    table, _ = fused.layer_table([make_config(4, 'free', 0.5, None, 11)])
    assert table[0]['n_pruned'] == 6


def test_fused_backend_needs_a_cuda_context(rng):
    layers = _net_layers(rng, dict(n_values=4))
    b = backend_for(layers, backend='fused')
    assert isinstance(b, FusedKMeans)
    before = [(s.d.d.copy(), s.A.d.copy()) for s in layers]
    with pytest.raises(ValueError, match="'fused' k-means backend runs on a CUDA device"):
        b.step()
    for s, (d, a) in zip(layers, before):  # nothing changed
        np.testing.assert_array_equal(s.d.d, d)
        np.testing.assert_array_equal(s.A.d, a)


@pytest.mark.parametrize('opts', [dict(n_values=16), dict(n_values=4, dictionary='pow2'),
                                  dict(n_values=8, dictionary='pow2', pow2_range=(-6, -1)),
                                  dict(n_values=3, dictionary=[-1, 0, 1]),
                                  dict(n_values=4, prune_ratio=0.5)])
def test_fused_backend_on_the_device(ctx, opts, rng):
    """On a GPU (``--context cudnn``): A and d equal the model bit for bit, the host step within
    one ulp, identical across runs; non-finite weights are refused with nothing changed."""
    if not any(b.startswith('cuda') for b in ctx.backend):
        pytest.skip('needs a CUDA context (pytest --context cudnn)')
    layers = _net_layers(rng, opts)
    start = [(s.W.d.ravel().copy(), s.d.d.copy()) for s in layers]
    results = []
    for _ in range(2):
        for s, (w, d) in zip(layers, start):
            s.d.d = d
        with nn.context_scope(ctx):
            FusedKMeans(layers, 2).step()
        results.append([(s.d.d.copy(), s.A.d.copy()) for s in layers])
    for (d_dev, a_dev), (d_two, a_two), s, (w, d0) in zip(results[0], results[1], layers, start):
        assert s.A.data.dtype == np.int32
        np.testing.assert_array_equal(a_dev, a_two)
        np.testing.assert_array_equal(d_dev.view(np.int32), d_two.view(np.int32))
        md = d0
        for _ in range(2):
            md, ma = fused_step(w, md, s.config)
        np.testing.assert_array_equal(a_dev.ravel(), ma)
        np.testing.assert_array_equal(d_dev.view(np.int32), md.view(np.int32))
        hd, ha = kmeans_step(w, fused_step(w, d0, s.config)[0], s.config)
        assert ulps(d_dev, hd).max() <= 1
    # non-finite weights: refused before anything changes
    s = layers[0]
    w = s.W.d.copy()
    w.flat[3] = np.nan
    s.W.d = w
    before = [(x.d.d.copy(), x.A.d.copy()) for x in layers]
    with nn.context_scope(ctx), pytest.raises(ValueError, match='non-finite'):
        FusedKMeans(layers, 1).step()
    for x, (d, a) in zip(layers, before):
        np.testing.assert_array_equal(x.d.d, d)
        np.testing.assert_array_equal(x.A.d, a)


def _train_fused(rng, steps, move_at=None):
    """A few LUTQSolver(backend='fused') updates of a small network; at ``move_at`` the weights
    make a host round trip (their arrays move: the layer table must follow)."""
    from reference import assert_tables_fitted
    x = nn.Variable.from_numpy_array(rng.randn(8, 3, 8, 8).astype(np.float32))
    h = PF.lutq_convolution(x, 4, (3, 3), n_values=16, name='c1')
    y = PF.lutq_affine(h, 10, n_values=4, dictionary='pow2', name='fc')
    loss = nn.functions.mean(y ** 2)
    solver = nnabla_lutq.LUTQSolver(S.Momentum(0.05, 0.9), backend='fused')
    solver.set_parameters(nn.get_parameters())
    for it in range(steps):
        loss.forward()
        solver.zero_grad()
        loss.backward()
        solver.update()
        if it == move_at:
            for s in STATE.lutq_layers():
                s.W.data = nn.NdArray.from_numpy_array(s.W.d.copy())
    assert_tables_fitted(STATE.lutq_layers())


def test_fused_solver_keeps_tables_fitted_on_the_device(ctx, rng):
    """On a GPU: every table stays the k-means fit of its weights over several updates."""
    if not any(b.startswith('cuda') for b in ctx.backend):
        pytest.skip('needs a CUDA context (pytest --context cudnn)')
    with nn.context_scope(ctx):
        _train_fused(rng, 5, move_at=2)


# --- the backend's driver code, on an emulated driver ------------------------------------------

@pytest.fixture
def fake_driver(tmp_path_factory, monkeypatch):
    """fused.py on a stand-in libcuda (tests/cuda_emu/fake_libcuda.cpp) that runs the kernels on
    the SIMT emulation over host memory; the backend then works on cpu arrays."""
    out = _compile_emulation(tmp_path_factory, 'fake_libcuda.cpp')
    monkeypatch.setenv('NNABLA_LUTQ_LIBCUDA', out)
    monkeypatch.setattr(fused._Driver, '_instance', None)
    host = nn.Context(backend=['cpu:float'], array_class='CpuCachedArray', device_id='0')
    monkeypatch.setattr(FusedKMeans, '_device_context', staticmethod(lambda: host))
    lib = ctypes.CDLL(out)

    def counts():
        names = ['absmax', 'assign', 'update', 'alloc', 'free', 'upload', 'download', 'memset',
                 'bad', 'hist', 'select', 'ties', 'count']
        c = np.zeros(len(names), np.int32)  # fake_counts writes this many
        lib.fake_counts(c.ctypes.data_as(ctypes.c_void_p))
        return dict(zip(names, c.tolist()))
    yield counts
    fused._Driver._instance = None


def _mixed_layers(rng):
    x = nn.Variable.from_numpy_array(rng.randn(4, 3, 8, 8).astype(np.float32))
    PF.lutq_convolution(x, 8, (3, 3), n_values=16, name='c1')
    PF.lutq_affine(x, 7, n_values=4, dictionary='pow2', pow2_range=(-6, -1), name='fc1')
    PF.lutq_affine(x, 5, n_values=3, dictionary=[-1, 0, 1], name='fc2')
    PF.lutq_affine(x, 6, n_values=4, prune_ratio=0.5, name='fc3')
    PF.lutq_affine(x, 5, n_values=300, name='fc4')  # K > 256: stepped by the graph backend
    out = STATE.lutq_layers()
    for s in out:
        s.W.d = s.W.d + rng.randn(*s.W.shape).astype(np.float32) * 0.05
    return out


def _expected(layers, start, iters):
    out = []
    for s, (w, d) in zip(layers, start):
        for _ in range(iters):
            d, a = (kmeans_step if s.config.n_values > fused.MAX_K else fused_step)(w, d,
                                                                                    s.config)
        out.append((d, a))
    return out


def test_backend_drives_the_kernels_through_the_driver(fake_driver, rng):
    layers = _mixed_layers(rng)
    start = [(s.W.d.ravel().copy(), s.d.d.copy()) for s in layers]
    b = FusedKMeans(layers, 2)
    b.step()
    for s, (d, a) in zip(layers, _expected(layers, start, 2)):
        assert s.A.data.dtype == np.int32, s.name
        np.testing.assert_array_equal(s.A.d.ravel(), a, err_msg=s.name)
        if s.config.n_values > fused.MAX_K:
            np.testing.assert_allclose(s.d.d, d, rtol=2e-6, atol=1e-9)
        else:
            np.testing.assert_array_equal(s.d.d.view(np.int32), d.view(np.int32), err_msg=s.name)
    c = fake_driver()
    # one max pass, the pruning select (3 passes + ties), then M = 2 times assignment + update,
    # all layers per launch; one 4-byte-per-layer read for the finiteness check; the table
    # uploaded once
    assert (c['absmax'], c['hist'], c['select'], c['count'], c['ties'], c['assign'], c['update'],
            c['download'], c['bad']) == (1, 3, 3, 1, 1, 2, 2, 1, 0)
    uploads = c['upload']
    # a further step re-uses the table; after nnabla gives W a new array it is uploaded again
    start = [(s.W.d.ravel().copy(), s.d.d.copy()) for s in layers]
    b.step()
    assert fake_driver()['upload'] == uploads
    s0 = layers[0]
    s0.W.data = nn.NdArray.from_numpy_array(s0.W.d + np.float32(0.01))
    start = [(s.W.d.ravel().copy(), s.d.d.copy()) for s in layers]
    b.step()
    assert fake_driver()['upload'] == uploads + 1
    for s, (d, a) in zip(layers[:4], _expected(layers[:4], start[:4], 2)):
        np.testing.assert_array_equal(s.A.d.ravel(), a, err_msg=s.name)
        np.testing.assert_array_equal(s.d.d.view(np.int32), d.view(np.int32), err_msg=s.name)


def test_backend_refuses_nonfinite_weights_and_recovers(fake_driver, rng):
    layers = _mixed_layers(rng)
    b = FusedKMeans(layers, 1)
    good = layers[1].W.d.copy()
    bad = good.copy()
    bad.flat[5] = np.inf
    layers[1].W.d = bad
    before = [(s.d.d.copy(), s.A.d.copy()) for s in layers]
    with pytest.raises(ValueError, match='fc1/lutq_affine: W has non-finite values'):
        b.step()
    for s, (d, a) in zip(layers, before):
        np.testing.assert_array_equal(s.d.d, d)
        np.testing.assert_array_equal(s.A.d, a)
    assert fake_driver()['assign'] == 0
    layers[1].W.d = good  # the stale max of the refused step must not leak into the next one
    start = [(s.W.d.ravel().copy(), s.d.d.copy()) for s in layers]
    b.step()
    for s, (d, a) in zip(layers[:4], _expected(layers[:4], start[:4], 1)):
        np.testing.assert_array_equal(s.d.d.view(np.int32), d.view(np.int32), err_msg=s.name)
    # without the check nothing is read back
    n = fake_driver()['download']
    FusedKMeans(layers, 1, check_finite=False).step()
    assert fake_driver()['download'] == n and fake_driver()['bad'] == 0


def test_solver_with_the_fused_backend_keeps_tables_fitted(fake_driver, rng):
    _train_fused(rng, 4, move_at=1)
    c = fake_driver()
    assert c['update'] == 4 and c['bad'] == 0
