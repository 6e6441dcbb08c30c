// A stand-in for the CUDA driver library (libcuda.so.1) that runs the kernels of
// nnabla_lutq/kmeans/cuda/kmeans.cu on the SIMT emulation, with "device" memory in host memory.
// It lets the CPU tests drive nnabla_lutq/kmeans/fused.py end to end (module loading, memory,
// the layer table, kernel parameters, launches), and records what the backend asked of it.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include "emu.h"
#include KMEANS_CU

typedef unsigned long long dptr;
static int n_launch[7];
static int n_alloc, n_free, n_upload, n_download, n_memset, bad_calls;

extern "C" {
int cuInit(unsigned) { return 0; }
int cuGetErrorName(int r, const char** s) {
    static char buf[64];
    std::snprintf(buf, sizeof buf, "CUDA_ERROR_FAKE_%d", r);
    *s = buf;
    return 0;
}
int cuDeviceGet(int* dev, int ordinal) { *dev = ordinal; return ordinal == 0 ? 0 : 101; }
int cuDevicePrimaryCtxRetain(void** ctx, int) { *ctx = (void*)0x1; return 0; }
int cuCtxSetCurrent(void* ctx) { return ctx == (void*)0x1 ? 0 : 201; }
int cuModuleLoadData(void** mod, const void* image) {
    std::string ptx((const char*)image);
    for (const char* k : {"lutq_absmax", "lutq_prune_hist", "lutq_prune_select",
                          "lutq_prune_count", "lutq_prune_ties", "lutq_assign", "lutq_update"})
        if (ptx.find(std::string(".entry ") + k + "(") == std::string::npos) return 200;
    *mod = (void*)0x2;
    return 0;
}
int cuModuleGetFunction(void** fn, void* mod, const char* name) {
    if (mod != (void*)0x2) return 400;
    const char* names[7] = {"lutq_absmax", "lutq_assign", "lutq_update", "lutq_prune_hist",
                            "lutq_prune_select", "lutq_prune_ties", "lutq_prune_count"};
    for (long i = 0; i < 7; ++i)
        if (!std::strcmp(name, names[i])) { *fn = (void*)(i + 16); return 0; }
    return 500;
}
int cuMemAlloc_v2(dptr* p, size_t n) { *p = (dptr)std::calloc(1, n); ++n_alloc; return 0; }
int cuMemFree_v2(dptr p) { std::free((void*)p); ++n_free; return 0; }
int cuMemcpyHtoD_v2(dptr dst, const void* src, size_t n) {
    std::memcpy((void*)dst, src, n); ++n_upload; return 0;
}
int cuMemcpyDtoH_v2(void* dst, dptr src, size_t n) {
    std::memcpy(dst, (const void*)src, n); ++n_download; return 0;
}
int cuCtxSynchronize() { return 0; }
int cuMemsetD32Async(dptr p, unsigned v, size_t n, void* stream) {
    if (stream) ++bad_calls;
    for (size_t i = 0; i < n; ++i) ((unsigned*)p)[i] = v;
    ++n_memset;
    return 0;
}
int cuLaunchKernel(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                   unsigned bz, unsigned shmem, void* stream, void** p, void** extra) {
    if (gy != 1 || gz != 1 || by != 1 || bz != 1 || bx != LUTQ_BLOCK || shmem || stream || extra)
        { ++bad_calls; return 1; }
    long id = (long)fn - 16;
    if (id == 0) {
        const LutqLayer* L = *(const LutqLayer**)p[0]; const int* b = *(const int**)p[1];
        unsigned* m = *(unsigned**)p[2];
        emu_launch(gx, bx, [=] { lutq_absmax(L, b, m); });
    } else if (id == 1) {
        const LutqLayer* L = *(const LutqLayer**)p[0]; const int* b = *(const int**)p[1];
        const unsigned* m = *(const unsigned**)p[2]; const LutqPrune* q = *(const LutqPrune**)p[3];
        lutq_u64* s = *(lutq_u64**)p[4];
        emu_launch(gx, bx, [=] { lutq_assign(L, b, m, q, s); });
    } else if (id == 2) {
        const LutqLayer* L = *(const LutqLayer**)p[0]; const unsigned* m = *(const unsigned**)p[1];
        lutq_u64* s = *(lutq_u64**)p[2];
        emu_launch(gx, bx, [=] { lutq_update(L, m, s); });
    } else if (id == 3) {
        const LutqLayer* L = *(const LutqLayer**)p[0]; const int* b = *(const int**)p[1];
        const LutqPrune* q = *(const LutqPrune**)p[2]; unsigned* h = *(unsigned**)p[3];
        int pass = *(int*)p[4];
        emu_launch(gx, bx, [=] { lutq_prune_hist(L, b, q, h, pass); });
    } else if (id == 4) {
        const LutqLayer* L = *(const LutqLayer**)p[0]; LutqPrune* q = *(LutqPrune**)p[1];
        unsigned* h = *(unsigned**)p[2];
        int pass = *(int*)p[3];
        emu_launch(gx, bx, [=] { lutq_prune_select(L, q, h, pass); });
    } else if (id == 5) {
        const LutqLayer* L = *(const LutqLayer**)p[0]; LutqPrune* q = *(LutqPrune**)p[1];
        const unsigned* c = *(const unsigned**)p[2];
        emu_launch(gx, bx, [=] { lutq_prune_ties(L, q, c); });
    } else if (id == 6) {
        const LutqLayer* L = *(const LutqLayer**)p[0]; const int* b = *(const int**)p[1];
        const LutqPrune* q = *(const LutqPrune**)p[2]; unsigned* c = *(unsigned**)p[3];
        emu_launch(gx, bx, [=] { lutq_prune_count(L, b, q, c); });
    } else {
        ++bad_calls;
        return 400;
    }
    ++n_launch[id];
    return 0;
}
// what the backend asked for: launches of the three kernels, allocations, copies, memsets, and
// calls with arguments the backend should never pass
void fake_counts(int* out) {
    int v[13] = {n_launch[0], n_launch[1], n_launch[2], n_alloc, n_free, n_upload, n_download,
                 n_memset, bad_calls, n_launch[3], n_launch[4], n_launch[5], n_launch[6]};
    std::memcpy(out, v, sizeof v);
}
}
