/* gpu_tiler union-find over equivalence pairs: one source for CUDA (NVRTC via CuPy, nvcc) and OpenCL.
 *
 * Nodes are 0..n-1; each pair (first[i], second[i]) says two nodes belong to one object. parent[x] <= x
 * always holds, so every tree's root is the smallest node of its component and the result does not
 * depend on thread scheduling: after the host loop, parent[x] is the smallest node connected to x.
 *
 * The host loop (gpu_tiler/labels/_merge.py) repeats, until a round changes nothing:
 *   gpu_tiler_uf_hook_pairs_*  one thread per pair: find both roots; if they differ, atomic-min the
 *                              larger root's parent to the smaller root and raise the `changed` flag;
 *   gpu_tiler_uf_compress_*    one thread per node: pointer jumping, parent[x] = root of x.
 * Hooks only ever lower a parent, so concurrent finds see a forest at all times (a stale read is an
 * older, larger ancestor pointer) and every walk terminates. A hook lost to a concurrent atomic-min
 * on the same root is redone in the next round: the flag was raised, and the loop ends only after a
 * round in which every pair already had one root.
 *
 * Specialisation: define GT_UF_INDEX_BITS as 32 or 64 before this file (default 64); kernel names end
 * in _i32 or _i64 accordingly.
 */
#include "portability.h"

#ifndef GT_UF_INDEX_BITS
#define GT_UF_INDEX_BITS 64
#endif

#if GT_UF_INDEX_BITS == 32
typedef gt_i32 gt_uf_index;
#define GT_UF_ATOMIC_MIN(ptr, value) GT_ATOMIC_MIN_I32((ptr), (value))
#define GT_UF_NAME(base) base##_i32
#elif GT_UF_INDEX_BITS == 64
typedef gt_i64 gt_uf_index;
#define GT_UF_ATOMIC_MIN(ptr, value) GT_ATOMIC_MIN_I64((ptr), (value))
#define GT_UF_NAME(base) base##_i64
#else
#error "GT_UF_INDEX_BITS must be 32 or 64"
#endif

/* Follow parent pointers to the root. The pointer is volatile: other threads lower parents while
 * this one walks, and each step must read memory, not a value cached from an earlier round. */
GT_DEVICE_FN gt_uf_index GT_UF_NAME(gpu_tiler_uf_find_root)(GT_GLOBAL volatile gt_uf_index *parent,
                                                           gt_uf_index node) {
    gt_uf_index up = parent[node];
    while (up != node) {
        node = up;
        up = parent[node];
    }
    return node;
}

GT_KERNEL void GT_UF_NAME(gpu_tiler_uf_hook_pairs)(GT_GLOBAL gt_uf_index *parent,
                                                   GT_GLOBAL const gt_uf_index *first,
                                                   GT_GLOBAL const gt_uf_index *second,
                                                   const gt_i64 n_pairs,
                                                   GT_GLOBAL gt_i32 *changed) {
    for (gt_i64 i = GT_THREAD_ID(); i < n_pairs; i += GT_THREAD_COUNT()) {
        const gt_uf_index a = GT_UF_NAME(gpu_tiler_uf_find_root)(parent, first[i]);
        const gt_uf_index b = GT_UF_NAME(gpu_tiler_uf_find_root)(parent, second[i]);
        if (a == b) continue;
        const gt_uf_index low = a < b ? a : b;
        const gt_uf_index high = a < b ? b : a;
        GT_UF_ATOMIC_MIN(&parent[high], low);
        changed[0] = 1;
    }
}

GT_KERNEL void GT_UF_NAME(gpu_tiler_uf_compress)(GT_GLOBAL gt_uf_index *parent, const gt_i64 n_nodes) {
    for (gt_i64 i = GT_THREAD_ID(); i < n_nodes; i += GT_THREAD_COUNT()) {
        parent[i] = GT_UF_NAME(gpu_tiler_uf_find_root)(parent, (gt_uf_index)i);
    }
}
