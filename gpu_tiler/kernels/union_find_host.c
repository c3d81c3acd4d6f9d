/* Host-C launchers of the union-find kernels (union_find.h), for gpu_tiler's "c" merger.
 *
 * Compiled by the system C compiler with -DGPU_TILER_HOST_C -DGT_UF_INDEX_BITS=32 or 64 into a shared
 * library (gpu_tiler/_kernels.py: build_host_library) and called through ctypes. Each launcher runs one
 * kernel on `threads` POSIX threads, as a GPU launch runs it on many, and returns the number of threads
 * that ran at once. The host loop (hook, compress, until nothing changed) is gpu_tiler/labels/_merge.py's.
 */
#include "union_find.h"

struct gt_uf_hook_args {
    gt_uf_index *parent;
    const gt_uf_index *first;
    const gt_uf_index *second;
    gt_i64 n_pairs;
    gt_i32 *changed;
};

static void gt_uf_hook_body(void *raw) {
    struct gt_uf_hook_args *a = (struct gt_uf_hook_args *)raw;
    GT_UF_NAME(gpu_tiler_uf_hook_pairs)(a->parent, a->first, a->second, a->n_pairs, a->changed);
}

struct gt_uf_compress_args {
    gt_uf_index *parent;
    gt_i64 n_nodes;
};

static void gt_uf_compress_body(void *raw) {
    struct gt_uf_compress_args *a = (struct gt_uf_compress_args *)raw;
    GT_UF_NAME(gpu_tiler_uf_compress)(a->parent, a->n_nodes);
}

GT_HOST_EXPORT long GT_UF_NAME(gpu_tiler_uf_hook_pairs_launch)(long threads, gt_uf_index *parent,
                                                              const gt_uf_index *first,
                                                              const gt_uf_index *second, gt_i64 n_pairs,
                                                              gt_i32 *changed) {
    struct gt_uf_hook_args args = {parent, first, second, n_pairs, changed};
    return gt_host_launch(threads, gt_uf_hook_body, &args);
}

GT_HOST_EXPORT long GT_UF_NAME(gpu_tiler_uf_compress_launch)(long threads, gt_uf_index *parent,
                                                            gt_i64 n_nodes) {
    struct gt_uf_compress_args args = {parent, n_nodes};
    return gt_host_launch(threads, gt_uf_compress_body, &args);
}
