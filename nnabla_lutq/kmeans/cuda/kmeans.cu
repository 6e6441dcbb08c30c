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
//   pruning       (layers with a fixed zero d[0] only) the n_pruned smallest |w|, ties to the
//                 lower flat index (nnabla_lutq.core.kmeans.pruned_mask): a radix select on the
//                 float bits of |w| (lutq_prune_hist + lutq_prune_select, three 11/10/10-bit
//                 passes, integer counts) finds the threshold t and how many weights equal to t
//                 are pruned; only when some but not all of those are, lutq_prune_count counts
//                 them per chunk and lutq_prune_ties finds the flat index below which they are
//                 (the chunk from the counts, then a block-wide scan of that chunk in order).
//   lutq_assign   a[i] = #{j : b_j < w[i]} with b_j the float32 boundary of the midpoint of
//                 d[j], d[j+1] (exactly as nnabla_lutq.core.kmeans.boundaries), over d[1:] and
//                 plus one for pruned layers, whose pruned weights get a = 0; per-cluster sums
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
// numpy model of the tests (tests/fused_reference.py) reproduces every result bit for bit.

#ifndef LUTQ_HOST_EMULATION
#define LUTQ_FN static __device__ __forceinline__
#endif

#define LUTQ_MAX_K 256      // layers with more values use another backend
#define LUTQ_BLOCK 256      // threads per block (a power of two; the reductions rely on it)
#define LUTQ_CHUNK 4096     // weights per block in lutq_absmax and lutq_assign
#define LUTQ_KIND_FREE 0
#define LUTQ_KIND_POW2 1
#define LUTQ_KIND_FIXED 2
#define LUTQ_RADIX 2048     // bins of the first radix-select pass (11 bits; then 10 and 10)

typedef unsigned long long lutq_u64;

// One layer, as nnabla_lutq/kmeans/fused.py writes it (64 bytes, 8-byte aligned).
struct LutqLayer {
    const float* w;
    float* d;
    int* a;
    long long n;
    long long n_pruned;   // 0: no pruning; else d[0] is the fixed zero of the smallest |w|
    int k;
    int kind;
    int has_range;
    int exp_lo;
    int exp_hi;
    int first_block;
};

// The pruning threshold of a layer, as the radix select leaves it.
struct LutqPrune {
    long long rank;       // during the select: the rank sought within the current bin
    long long cut;        // weights with |w| == t are pruned below this flat index
    long long n_eq;       // weights with |w| == t
    unsigned prefix;      // the bits of t found so far; after the last pass, t itself
    unsigned pad;
};

// The float32 boundary between v0 <= v1: the largest float32 b with b <= (v0 + v1) / 2, so that
// for float32 w, w > b exactly when w > (v0 + v1) / 2 (the double sum of two float32 is exact).
LUTQ_FN float lutq_boundary(float v0, float v1) {
    double mid = __dmul_rn(__dadd_rn((double)v0, (double)v1), 0.5);
    float b = __double2float_rn(mid);
    if ((double)b > mid) b = nextafterf(b, __int_as_float(0xff800000u));
    return b;
}

// The weights [start, end) of block `block` of a grid over all layers' chunks.
LUTQ_FN long long lutq_chunk_start(const LutqLayer& ly, int block) {
    return (long long)(block - ly.first_block) * LUTQ_CHUNK;
}
LUTQ_FN long long lutq_chunk_end(const LutqLayer& ly, long long start) {
    return start + LUTQ_CHUNK < ly.n ? start + LUTQ_CHUNK : ly.n;
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
    long long start = lutq_chunk_start(ly, blockIdx.x);
    long long end = lutq_chunk_end(ly, start);
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

// The radix digit of |w| bits u in pass 0, 1, 2 (bits 30..20, 19..10, 9..0), and whether u
// matches the prefix found by the earlier passes.
LUTQ_FN unsigned lutq_digit(unsigned u, int pass) {
    return pass == 0 ? u >> 20 : (pass == 1 ? (u >> 10) & 1023u : u & 1023u);
}
LUTQ_FN int lutq_candidate(unsigned u, int pass, unsigned prefix) {
    return pass == 0 || (u >> (pass == 1 ? 20 : 10)) == prefix;
}

extern "C" __global__ void lutq_prune_hist(const LutqLayer* layers, const int* block_layer,
                                           const LutqPrune* prune, unsigned* hist, int pass) {
    __shared__ unsigned h[LUTQ_RADIX];
    int l = block_layer[blockIdx.x];
    LutqLayer ly = layers[l];
    if (!ly.n_pruned) return;  // the whole block: no __syncthreads is skipped by a part of it
    unsigned prefix = prune[l].prefix;
    for (int j = threadIdx.x; j < LUTQ_RADIX; j += blockDim.x) h[j] = 0;
    __syncthreads();
    long long start = lutq_chunk_start(ly, blockIdx.x);
    long long end = lutq_chunk_end(ly, start);
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        unsigned u = __float_as_uint(ly.w[i]) & 0x7fffffffu;
        if (lutq_candidate(u, pass, prefix)) atomicAdd(&h[lutq_digit(u, pass)], 1u);
    }
    __syncthreads();
    unsigned* g = hist + (long long)l * LUTQ_RADIX;
    for (int j = threadIdx.x; j < LUTQ_RADIX; j += blockDim.x)
        if (h[j]) atomicAdd(&g[j], h[j]);
}

// One block per layer: the bin of the sought rank; clears the histogram for the next pass.
extern "C" __global__ void lutq_prune_select(const LutqLayer* layers, LutqPrune* prune,
                                             unsigned* hist, int pass) {
    __shared__ unsigned long long part[LUTQ_BLOCK];
    int l = blockIdx.x;
    LutqLayer ly = layers[l];
    if (!ly.n_pruned) return;
    unsigned* g = hist + (long long)l * LUTQ_RADIX;
    int bins = pass == 0 ? LUTQ_RADIX : 1024;
    int per = (bins + blockDim.x - 1) / blockDim.x;
    unsigned long long c = 0;
    for (int j = threadIdx.x * per; j < (threadIdx.x + 1) * per && j < bins; ++j) c += g[j];
    part[threadIdx.x] = c;
    __syncthreads();
    if (threadIdx.x == 0) {
        long long rank = pass == 0 ? ly.n_pruned : prune[l].rank;
        long long cum = 0;
        unsigned t = 0;
        while (cum + (long long)part[t] < rank) cum += (long long)part[t++];
        int j = t * per;
        while (cum + (long long)g[j] < rank) cum += (long long)g[j++];
        unsigned prefix = pass == 0 ? (unsigned)j : (prune[l].prefix << 10) | (unsigned)j;
        prune[l].prefix = prefix;
        prune[l].rank = rank - cum;
        if (pass == 2) { prune[l].n_eq = g[j]; prune[l].cut = ly.n; }
    }
    __syncthreads();
    for (int j = threadIdx.x; j < bins; j += blockDim.x) g[j] = 0;
}

// Whether a layer's cut among the weights equal to the threshold must be searched: only when
// some but not all of them are pruned (else the cut stays n, as lutq_prune_select set it).
LUTQ_FN int lutq_partial_ties(const LutqLayer& ly, const LutqPrune& q) {
    return ly.n_pruned && q.rank != q.n_eq;
}

// Per block of lutq_assign's grid: how many weights of its chunk equal the threshold.
extern "C" __global__ void lutq_prune_count(const LutqLayer* layers, const int* block_layer,
                                            const LutqPrune* prune, unsigned* block_ties) {
    __shared__ unsigned red[LUTQ_BLOCK];
    int l = block_layer[blockIdx.x];
    LutqLayer ly = layers[l];
    LutqPrune q = prune[l];
    if (!lutq_partial_ties(ly, q)) return;  // the whole block
    long long start = lutq_chunk_start(ly, blockIdx.x);
    long long end = lutq_chunk_end(ly, start);
    unsigned c = 0;
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x)
        c += (__float_as_uint(ly.w[i]) & 0x7fffffffu) == q.prefix;
    red[threadIdx.x] = c;
    __syncthreads();
    for (unsigned s = blockDim.x >> 1; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) block_ties[blockIdx.x] = red[0];
}

// One block per layer, when only some of the weights equal to the threshold are pruned (the
// first `rank` of them in flat order): the flat index just after the last of those. The chunk
// that holds it is found from the per-chunk counts, then that chunk is scanned in order.
extern "C" __global__ void lutq_prune_ties(const LutqLayer* layers, LutqPrune* prune,
                                           const unsigned* block_ties) {
    __shared__ int flag[LUTQ_BLOCK];
    __shared__ long long found, seen, base0, stop;
    int l = blockIdx.x;
    LutqLayer ly = layers[l];
    LutqPrune q = prune[l];
    if (!lutq_partial_ties(ly, q)) return;
    long long need = q.rank;
    if (threadIdx.x == 0) {
        long long cum = 0;
        int b = ly.first_block;
        while (cum + block_ties[b] < need) cum += block_ties[b++];
        found = -1;
        seen = cum;  // ties before the chunk
        base0 = lutq_chunk_start(ly, b);
        stop = lutq_chunk_end(ly, base0);
    }
    __syncthreads();
    for (long long base = base0; base < stop; base += blockDim.x) {
        long long i = base + threadIdx.x;
        int f = (i < stop && (__float_as_uint(ly.w[i]) & 0x7fffffffu) == q.prefix) ? 1 : 0;
        flag[threadIdx.x] = f;
        __syncthreads();
        for (unsigned off = 1; off < blockDim.x; off <<= 1) {  // inclusive scan
            int v = threadIdx.x >= off ? flag[threadIdx.x - off] : 0;
            __syncthreads();
            flag[threadIdx.x] += v;
            __syncthreads();
        }
        if (f && seen + flag[threadIdx.x] == need) found = i + 1;
        __syncthreads();
        if (threadIdx.x == 0) seen += flag[blockDim.x - 1];
        __syncthreads();
        if (found >= 0) break;  // the same for every thread of the block
    }
    if (threadIdx.x == 0) prune[l].cut = found;
}

extern "C" __global__ void lutq_assign(const LutqLayer* layers, const int* block_layer,
                                       const unsigned* maxbits, const LutqPrune* prune,
                                       lutq_u64* sums) {
    __shared__ float b[LUTQ_MAX_K];
    __shared__ lutq_u64 h_lo[LUTQ_MAX_K];
    __shared__ lutq_u64 h_hi[LUTQ_MAX_K];
    __shared__ lutq_u64 h_n[LUTQ_MAX_K];
    int l = block_layer[blockIdx.x];
    LutqLayer ly = layers[l];
    int first = ly.n_pruned ? 1 : 0;  // the fixed zero takes no part in the nearest-value search
    int nb = ly.k - 1 - first;
    unsigned t = 0;
    long long cut = 0;
    if (first) { t = prune[l].prefix; cut = prune[l].cut; }
    for (int j = threadIdx.x; j < ly.k; j += blockDim.x) {
        if (j < nb) b[j] = lutq_boundary(ly.d[first + j], ly.d[first + j + 1]);
        h_lo[j] = 0; h_hi[j] = 0; h_n[j] = 0;
    }
    __syncthreads();
    int fit = ly.kind != LUTQ_KIND_FIXED;
    double scale = ldexp(1.0, lutq_scale_exp(maxbits[l]));
    long long start = lutq_chunk_start(ly, blockIdx.x);
    long long end = lutq_chunk_end(ly, start);
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        float w = ly.w[i];
        int a = first + lutq_search(b, nb, w);
        if (first) {
            unsigned u = __float_as_uint(w) & 0x7fffffffu;
            if (u < t || (u == t && i < cut)) a = 0;
        }
        ly.a[i] = a;
        if (fit && a >= first) {
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
            if (j == 0 && ly.n_pruned) {
                ly.d[0] = 0.0f;  // the fixed zero (its weights are not summed)
            } else if (n) {
                float m = lutq_mean(s[j], s[LUTQ_MAX_K + j], n, s_exp);
                if (ly.kind == LUTQ_KIND_POW2) m = lutq_pow2(m, ly.has_range, ly.exp_lo, ly.exp_hi);
                ly.d[j] = m;
            }
            s[j] = 0; s[LUTQ_MAX_K + j] = 0; s[2 * LUTQ_MAX_K + j] = 0;
        }
    }
}
