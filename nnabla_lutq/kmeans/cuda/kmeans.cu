// The fused LUT-Q k-means step on a CUDA device: all layers in three launches per step.
//
// Loaded by nnabla_lutq/kmeans/fused.py (as the PTX built from this file, kmeans.ptx) and, for
// the CPU tests, compiled as C++ with a SIMT emulation (tests/cuda_emu/). Only what both can run
// is used: threadIdx/blockIdx/blockDim, __syncthreads, static __shared__ arrays, integer
// atomicAdd/atomicMax, and IEEE intrinsics with explicit rounding. No warp intrinsics.
//
// Per step, for every layer l with weights w (n float32), dictionary d (k float32, sorted) and
// assignment a (n int32):
//
//   lutq_absmax   max |w| of each layer as float bits (integer atomicMax); a NaN or an infinity
//                 shows as bits >= 0x7f800000, which the host checks before anything changes.
//   lutq_assign   a[i] = #{j : b_j < w[i]} with b_j the float32 boundary of the midpoint of
//                 d[j], d[j+1] (exactly as nnabla_lutq.core.kmeans.boundaries); per-cluster sums
//                 of w in fixed point (q = rint(w * 2^S), S from the layer's max so |q| < 2^62),
//                 split in 32-bit halves so that 64-bit integer sums cannot overflow, and counts.
//                 Integer additions commute: the sums, and so d, do not depend on the order the
//                 atomics run in (identical across runs and data-parallel ranks).
//   lutq_update   d[j] = float32(double(sum_j) / count_j * 2^-S) for non-empty clusters, rounded
//                 to a power of two for pow-2 layers (the rule of nnabla_lutq.core.pow2); empty
//                 clusters keep their value; fixed dictionaries keep d. Clears the sums for the
//                 next iteration (the host zeroes the max before each lutq_absmax).
//
// Compiled with --fmad=false, and the double arithmetic uses explicit-rounding intrinsics, so the
// numpy reference (nnabla_lutq.kmeans.fixedpoint) reproduces every result bit for bit.

#ifndef LUTQ_HOST_EMULATION
#define LUTQ_FN static __device__ __forceinline__
#endif

#define LUTQ_MAX_K 256      // layers with more values use another backend
#define LUTQ_BLOCK 256      // threads per block (a power of two; the reductions rely on it)
#define LUTQ_CHUNK 4096     // weights per block in lutq_absmax and lutq_assign
#define LUTQ_KIND_FREE 0
#define LUTQ_KIND_POW2 1
#define LUTQ_KIND_FIXED 2

typedef unsigned long long lutq_u64;

// One layer, as nnabla_lutq/kmeans/fused.py writes it (56 bytes, 8-byte aligned).
struct LutqLayer {
    const float* w;
    float* d;
    int* a;
    long long n;
    int k;
    int kind;
    int has_range;
    int exp_lo;
    int exp_hi;
    int first_block;
};

// The float32 boundary between v0 <= v1: the largest float32 b with b <= (v0 + v1) / 2, so that
// for float32 w, w > b exactly when w > (v0 + v1) / 2 (the double sum of two float32 is exact).
LUTQ_FN float lutq_boundary(float v0, float v1) {
    double mid = __dmul_rn(__dadd_rn((double)v0, (double)v1), 0.5);
    float b = __double2float_rn(mid);
    if ((double)b > mid) b = nextafterf(b, __int_as_float(0xff800000u));
    return b;
}

// Number of boundaries below w (numpy.searchsorted(b, w, side='left') for non-decreasing b).
LUTQ_FN int lutq_search(const float* b, int nb, float w) {
    int lo = 0, hi = nb;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (b[mid] < w) lo = mid + 1; else hi = mid;
    }
    return lo;
}

// The fixed-point exponent S of a layer from the float bits of its max |w|: |w| < 2^e with
// e = E - 126 (E the biased exponent; e = -126 for zeros and subnormals), S = 62 - e.
LUTQ_FN int lutq_scale_exp(unsigned maxbits) {
    int e = (int)(maxbits >> 23);
    e = (e == 0) ? -126 : e - 126;
    return 62 - e;
}

// w in fixed point: rint(w * 2^S); the product is exact and |result| < 2^62.
LUTQ_FN long long lutq_fixed(float w, double scale) {
    return __double2ll_rn(__dmul_rn((double)w, scale));
}

// The mean of a cluster from its fixed-point sum (hi * 2^32 + lo, as accumulated) and count.
LUTQ_FN float lutq_mean(lutq_u64 lo, lutq_u64 hi, lutq_u64 count, int s) {
    long long t = (long long)hi + (long long)(lo >> 32);
    lutq_u64 low = lo & 0xffffffffull;
    double x = __dadd_rn(__dmul_rn(__ll2double_rn(t), 4294967296.0), __ull2double_rn(low));
    double m = __ddiv_rn(x, __ull2double_rn(count));
    return __double2float_rn(ldexp(m, -s));
}

// sign(x) * 2^k with k the exponent nearest to log2|x| (nnabla_lutq.core.pow2): k = e - 1 for
// |x| = f * 2^e, f in [0.5, 1), plus one when 2f >= the smallest float32 above sqrt(2).
LUTQ_FN float lutq_pow2(float x, int has_range, int lo, int hi) {
    if (x == 0.0f) return 0.0f;
    int e;
    float f = frexpf(fabsf(x), &e);
    int k = e - 1 + ((f * 2.0f >= __int_as_float(0x3fb504f4u)) ? 1 : 0);
    if (has_range) k = k < lo ? lo : (k > hi ? hi : k);
    return copysignf(ldexpf(1.0f, k), x);
}

extern "C" __global__ void lutq_absmax(const LutqLayer* layers, const int* block_layer,
                                       unsigned* maxbits) {
    __shared__ unsigned red[LUTQ_BLOCK];
    int l = block_layer[blockIdx.x];
    LutqLayer ly = layers[l];
    long long start = (long long)(blockIdx.x - ly.first_block) * LUTQ_CHUNK;
    long long end = start + LUTQ_CHUNK < ly.n ? start + LUTQ_CHUNK : ly.n;
    unsigned m = 0;
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        unsigned u = __float_as_uint(ly.w[i]) & 0x7fffffffu;
        m = u > m ? u : m;
    }
    red[threadIdx.x] = m;
    __syncthreads();
    for (unsigned s = blockDim.x >> 1; s > 0; s >>= 1) {
        if (threadIdx.x < s && red[threadIdx.x + s] > red[threadIdx.x])
            red[threadIdx.x] = red[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicMax(&maxbits[l], red[0]);
}

extern "C" __global__ void lutq_assign(const LutqLayer* layers, const int* block_layer,
                                       const unsigned* maxbits, lutq_u64* sums) {
    __shared__ float b[LUTQ_MAX_K];
    __shared__ lutq_u64 h_lo[LUTQ_MAX_K];
    __shared__ lutq_u64 h_hi[LUTQ_MAX_K];
    __shared__ lutq_u64 h_n[LUTQ_MAX_K];
    int l = block_layer[blockIdx.x];
    LutqLayer ly = layers[l];
    int nb = ly.k - 1;
    for (int j = threadIdx.x; j < ly.k; j += blockDim.x) {
        if (j < nb) b[j] = lutq_boundary(ly.d[j], ly.d[j + 1]);
        h_lo[j] = 0; h_hi[j] = 0; h_n[j] = 0;
    }
    __syncthreads();
    int fit = ly.kind != LUTQ_KIND_FIXED;
    double scale = ldexp(1.0, lutq_scale_exp(maxbits[l]));
    long long start = (long long)(blockIdx.x - ly.first_block) * LUTQ_CHUNK;
    long long end = start + LUTQ_CHUNK < ly.n ? start + LUTQ_CHUNK : ly.n;
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        float w = ly.w[i];
        int a = lutq_search(b, nb, w);
        ly.a[i] = a;
        if (fit) {
            long long q = lutq_fixed(w, scale);
            atomicAdd(&h_lo[a], (lutq_u64)q & 0xffffffffull);
            atomicAdd(&h_hi[a], (lutq_u64)(q >> 32));
            atomicAdd(&h_n[a], 1ull);
        }
    }
    __syncthreads();
    if (fit) {
        lutq_u64* s = sums + (long long)l * 3 * LUTQ_MAX_K;
        for (int j = threadIdx.x; j < ly.k; j += blockDim.x) {
            if (h_n[j]) {
                atomicAdd(&s[j], h_lo[j]);
                atomicAdd(&s[LUTQ_MAX_K + j], h_hi[j]);
                atomicAdd(&s[2 * LUTQ_MAX_K + j], h_n[j]);
            }
        }
    }
}

extern "C" __global__ void lutq_update(const LutqLayer* layers, const unsigned* maxbits,
                                       lutq_u64* sums) {
    int l = blockIdx.x;
    LutqLayer ly = layers[l];
    int s_exp = lutq_scale_exp(maxbits[l]);
    lutq_u64* s = sums + (long long)l * 3 * LUTQ_MAX_K;
    if (ly.kind != LUTQ_KIND_FIXED) {
        for (int j = threadIdx.x; j < ly.k; j += blockDim.x) {
            lutq_u64 n = s[2 * LUTQ_MAX_K + j];
            if (n) {
                float m = lutq_mean(s[j], s[LUTQ_MAX_K + j], n, s_exp);
                if (ly.kind == LUTQ_KIND_POW2) m = lutq_pow2(m, ly.has_range, ly.exp_lo, ly.exp_hi);
                ly.d[j] = m;
            }
            s[j] = 0; s[LUTQ_MAX_K + j] = 0; s[2 * LUTQ_MAX_K + j] = 0;
        }
    }
}
