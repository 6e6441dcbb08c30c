// The kernels of nnabla_lutq/kmeans/cuda/kmeans.cu, compiled for the CPU on the SIMT emulation,
// with C entry points that tests/test_kmeans_fused.py calls through ctypes.
#include "emu.h"
#include KMEANS_CU

extern "C" {
int emu_layer_size() { return (int)sizeof(LutqLayer); }
int emu_max_k() { return LUTQ_MAX_K; }
int emu_chunk() { return LUTQ_CHUNK; }

void emu_absmax(unsigned grid, unsigned block, const LutqLayer* layers, const int* block_layer,
                unsigned* maxbits) {
    emu_launch(grid, block, [=] { lutq_absmax(layers, block_layer, maxbits); });
}
void emu_assign(unsigned grid, unsigned block, const LutqLayer* layers, const int* block_layer,
                const unsigned* maxbits, const LutqPrune* prune, lutq_u64* sums) {
    emu_launch(grid, block, [=] { lutq_assign(layers, block_layer, maxbits, prune, sums); });
}
void emu_prune_hist(unsigned grid, unsigned block, const LutqLayer* layers,
                    const int* block_layer, const LutqPrune* prune, unsigned* hist, int pass) {
    emu_launch(grid, block, [=] { lutq_prune_hist(layers, block_layer, prune, hist, pass); });
}
void emu_prune_select(unsigned grid, unsigned block, const LutqLayer* layers, LutqPrune* prune,
                      unsigned* hist, int pass) {
    emu_launch(grid, block, [=] { lutq_prune_select(layers, prune, hist, pass); });
}
void emu_prune_count(unsigned grid, unsigned block, const LutqLayer* layers,
                     const int* block_layer, const LutqPrune* prune, unsigned* ties) {
    emu_launch(grid, block, [=] { lutq_prune_count(layers, block_layer, prune, ties); });
}
void emu_prune_ties(unsigned grid, unsigned block, const LutqLayer* layers, LutqPrune* prune,
                    const unsigned* ties) {
    emu_launch(grid, block, [=] { lutq_prune_ties(layers, prune, ties); });
}
int emu_prune_size() { return (int)sizeof(LutqPrune); }
int emu_radix() { return LUTQ_RADIX; }
void emu_update(unsigned grid, unsigned block, const LutqLayer* layers, const unsigned* maxbits,
                lutq_u64* sums) {
    emu_launch(grid, block, [=] { lutq_update(layers, maxbits, sums); });
}
float emu_boundary(float a, float b) { return lutq_boundary(a, b); }
float emu_pow2(float x, int has_range, int lo, int hi) { return lutq_pow2(x, has_range, lo, hi); }
float emu_mean(lutq_u64 lo, lutq_u64 hi, lutq_u64 n, int s) { return lutq_mean(lo, hi, n, s); }
}
