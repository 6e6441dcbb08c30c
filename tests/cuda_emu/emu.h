// A SIMT emulation of the CUDA subset that nnabla_lutq/kmeans/cuda/kmeans.cu uses, so that the
// kernels themselves (not a transcription) run in the CPU tests.
//
// Blocks run one after another; the threads of a block are real threads (std::thread) meeting at
// a std::barrier for __syncthreads, so __shared__ arrays become function statics shared by the
// block's threads. Atomics are the compiler's __atomic builtins. Double arithmetic is plain IEEE
// (built with -ffp-contract=off: no fused multiply-add, as the PTX is built with --fmad=false).
#pragma once
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#define LUTQ_HOST_EMULATION 1
#define LUTQ_FN static inline
#define __global__
#define __shared__ static

struct emu_dim3 { unsigned x, y, z; };
static thread_local emu_dim3 threadIdx, blockIdx;
static emu_dim3 blockDim, gridDim;
static thread_local std::barrier<>* emu_barrier;

static inline void __syncthreads() { emu_barrier->arrive_and_wait(); }

static inline unsigned __float_as_uint(float x) { unsigned u; std::memcpy(&u, &x, 4); return u; }
static inline float __int_as_float(unsigned u) { float x; std::memcpy(&x, &u, 4); return x; }
static inline float __double2float_rn(double x) { return (float)x; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __ll2double_rn(long long x) { return (double)x; }
static inline double __ull2double_rn(unsigned long long x) { return (double)x; }
static inline long long __double2ll_rn(double x) { return std::llrint(x); }
#include <math.h>  // copysignf, fabsf, frexpf, ldexp, ldexpf, nextafterf

static inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
static inline unsigned atomicAdd(unsigned* p, unsigned v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
static inline unsigned atomicMax(unsigned* p, unsigned v) {
    unsigned old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED,
                                                    __ATOMIC_RELAXED)) {}
    return old;
}

// Run kernel(args...) on a grid of `grid` blocks of `block` threads.
template <class F>
static void emu_launch(unsigned grid, unsigned block, F kernel) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        std::barrier<> bar(block);
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < block; ++t) {
            threads.emplace_back([&, b, t] {
                blockIdx = {b, 0, 0};
                threadIdx = {t, 0, 0};
                emu_barrier = &bar;
                kernel();
            });
        }
        for (auto& th : threads) th.join();
    }
}
