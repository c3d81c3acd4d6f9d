/* gpu_tiler portability header: one kernel source compiles as CUDA (NVRTC via CuPy) and OpenCL.
 *
 * Kernel files include this header first and use only the GT_ names below for what differs
 * between the two languages: how a kernel is declared, global-memory pointers, thread ids,
 * and the atomics the union-find needs. Everything else is the common subset of C.
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
