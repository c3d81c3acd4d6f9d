/* gpu_tiler portability header: one kernel source compiles as CUDA (NVRTC via CuPy), OpenCL, and C
 * for the host CPU (C11 atomics, POSIX threads; built by the system compiler, loaded with ctypes).
 *
 * Kernel files include this header first and use only the GT_ names below for what differs
 * between the languages: how a kernel is declared, global-memory pointers, thread ids, and the
 * atomics the union-find needs. Everything else is the common subset of C. Kernels are written
 * as grid-stride loops (i = GT_THREAD_ID(); i < n; i += GT_THREAD_COUNT()), so any thread count
 * covers any size: the host target runs one kernel on a few threads.
 *
 * Host C (GPU_TILER_HOST_C defined): a kernel is a static function; gt_host_launch(threads, body,
 * args) runs body(args) on `threads` POSIX threads at once, each seeing its own GT_THREAD_ID() in
 * 0..threads-1, and returns when all have finished (0, or the error of pthread_create). An exported
 * launcher per kernel (see union_find_host.c) packs the arguments and calls it.
 */
#ifndef GPU_TILER_PORTABILITY_H
#define GPU_TILER_PORTABILITY_H

#ifdef __OPENCL_VERSION__
/* ---- OpenCL C ---- */
#pragma OPENCL EXTENSION cl_khr_int64_base_atomics : enable
#pragma OPENCL EXTENSION cl_khr_int64_extended_atomics : enable
#define GT_KERNEL __kernel
#define GT_GLOBAL __global
#define GT_DEVICE_FN static inline
#define GT_THREAD_ID() ((long)get_global_id(0))
#define GT_THREAD_COUNT() ((long)get_global_size(0))
typedef int gt_i32;
typedef long gt_i64;
#define GT_ATOMIC_MIN_I32(ptr, value) atomic_min((ptr), (value))
#define GT_ATOMIC_CAS_I32(ptr, expected, value) atomic_cmpxchg((ptr), (expected), (value))
#define GT_ATOMIC_MIN_I64(ptr, value) atom_min((ptr), (value))
#define GT_ATOMIC_CAS_I64(ptr, expected, value) atom_cmpxchg((ptr), (expected), (value))
#define GT_ATOMIC_OR_I32(ptr, value) atomic_or((ptr), (value))
#elif defined(GPU_TILER_HOST_C)
/* ---- C11 on the host CPU ---- */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#define GT_KERNEL static
#define GT_GLOBAL
#define GT_DEVICE_FN static inline
#define GT_HOST_EXPORT __attribute__((visibility("default")))
typedef int32_t gt_i32;
typedef int64_t gt_i64;
static _Thread_local long gt_host_thread_id = 0;
static _Thread_local long gt_host_thread_count = 1;
#define GT_THREAD_ID() (gt_host_thread_id)
#define GT_THREAD_COUNT() (gt_host_thread_count)

/* The atomics return the old value, as CUDA's and OpenCL's do. Kernel arrays are plain memory shared
 * by the threads; the atomic operations act on them as C11 atomic objects of the same size. */
#define GT_HOST_ATOMIC_MIN(type, name) \
    static inline type name(type *ptr, type value) { \
        _Atomic type *target = (_Atomic type *)ptr; \
        type old = atomic_load(target); \
        while (value < old && !atomic_compare_exchange_weak(target, &old, value)) { \
        } \
        return old; \
    }
#define GT_HOST_ATOMIC_CAS(type, name) \
    static inline type name(type *ptr, type expected, type value) { \
        atomic_compare_exchange_strong((_Atomic type *)ptr, &expected, value); \
        return expected; \
    }
GT_HOST_ATOMIC_MIN(gt_i32, gt_host_atomic_min_i32)
GT_HOST_ATOMIC_MIN(gt_i64, gt_host_atomic_min_i64)
GT_HOST_ATOMIC_CAS(gt_i32, gt_host_atomic_cas_i32)
GT_HOST_ATOMIC_CAS(gt_i64, gt_host_atomic_cas_i64)
#define GT_ATOMIC_MIN_I32(ptr, value) gt_host_atomic_min_i32((ptr), (value))
#define GT_ATOMIC_CAS_I32(ptr, expected, value) gt_host_atomic_cas_i32((ptr), (expected), (value))
#define GT_ATOMIC_MIN_I64(ptr, value) gt_host_atomic_min_i64((ptr), (value))
#define GT_ATOMIC_CAS_I64(ptr, expected, value) gt_host_atomic_cas_i64((ptr), (expected), (value))
#define GT_ATOMIC_OR_I32(ptr, value) atomic_fetch_or((_Atomic gt_i32 *)(ptr), (value))

typedef void (*gt_host_body)(void *args);
struct gt_host_thread {
    pthread_t handle;
    long id, count;
    gt_host_body body;
    void *args;
};

static void *gt_host_thread_main(void *arg) {
    struct gt_host_thread *self = (struct gt_host_thread *)arg;
    gt_host_thread_id = self->id;
    gt_host_thread_count = self->count;
    self->body(self->args);
    return 0;
}

#ifndef GT_HOST_MAX_THREADS
#define GT_HOST_MAX_THREADS 256
#endif

/* Run body(args) on `threads` threads (the caller's thread is thread 0) and wait for all of them.
 * Where the system refuses a thread, the caller's thread runs that thread's share too: the result is
 * the same (grid-stride loops), only slower. Returns the number of threads that ran at once. */
static long gt_host_launch(long threads, gt_host_body body, void *args) {
    struct gt_host_thread pool[GT_HOST_MAX_THREADS];
    if (threads < 1) threads = 1;
    if (threads > GT_HOST_MAX_THREADS) threads = GT_HOST_MAX_THREADS;
    long started = 1;
    for (long t = 0; t < threads; t++) {
        pool[t].id = t;
        pool[t].count = threads;
        pool[t].body = body;
        pool[t].args = args;
    }
    for (; started < threads; started++) {
        if (pthread_create(&pool[started].handle, 0, gt_host_thread_main, &pool[started])) break;
    }
    for (long t = started; t < threads; t++) gt_host_thread_main(&pool[t]); /* shares of refused threads */
    gt_host_thread_main(&pool[0]);
    for (long t = 1; t < started; t++) pthread_join(pool[t].handle, 0);
    gt_host_thread_id = 0;
    gt_host_thread_count = 1;
    return started;
}
#else
/* ---- CUDA C++ ---- */
#define GT_KERNEL extern "C" __global__
#define GT_GLOBAL
#define GT_DEVICE_FN __device__ static inline
#define GT_THREAD_ID() ((long)blockIdx.x * (long)blockDim.x + (long)threadIdx.x)
#define GT_THREAD_COUNT() ((long)gridDim.x * (long)blockDim.x)
typedef int gt_i32;
typedef long long gt_i64;
#define GT_ATOMIC_MIN_I32(ptr, value) atomicMin((ptr), (value))
#define GT_ATOMIC_CAS_I32(ptr, expected, value) atomicCAS((ptr), (expected), (value))
#define GT_ATOMIC_MIN_I64(ptr, value) \
    ((gt_i64)atomicMin((unsigned long long *)(ptr), (unsigned long long)(value)))
#define GT_ATOMIC_CAS_I64(ptr, expected, value) \
    ((gt_i64)atomicCAS((unsigned long long *)(ptr), (unsigned long long)(expected), (unsigned long long)(value)))
#define GT_ATOMIC_OR_I32(ptr, value) atomicOr((ptr), (value))
#endif

#endif /* GPU_TILER_PORTABILITY_H */
