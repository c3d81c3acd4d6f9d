"""Union-find over equivalence pairs: one interface, four implementations.

``merger.roots(first, second, n_nodes)`` takes pairs of node indices (0..n_nodes-1) that belong to
one object and returns, for every node, the smallest node of its connected component. Because the
answer is that canonical minimum, every implementation returns the same array for the same pairs:

- ``"numpy"``:  vectorised on the host: rounds of min-hooking (``np.minimum.at``) and pointer jumping,
  dropping each pair once its two nodes share a root;
- ``"cuda"``:   the kernels of ``gpu_tiler/kernels/union_find.h`` on a CUDA GPU through CuPy (``RawModule``,
  compiled once per device and index width); CuPy arrays in and out, the merge never leaves the device;
- ``"opencl"``: the same kernel source through pyopencl (any OpenCL device, e.g. PoCL on the CPU);
  host arrays in and out;
- ``"c"``:      the same kernel source as C11 for the host CPU (``portability.h``'s third target: C11
  atomics, POSIX threads), built by the system C compiler into a cached shared library and called with
  ctypes; host arrays in and out. It runs wherever a C compiler does, e.g. where PoCL's LLVM does not
  know the CPU.

:func:`merger_for` chooses: ``None`` keeps the backend's own (CUDA on CuPy, NumPy on the host);
``"auto"`` takes the fastest that works here (CUDA on CuPy; else OpenCL, C, NumPy), and where an
installed OpenCL runtime cannot build the kernel it says why once, in a warning, and goes on.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import threading
import warnings

import numpy as np

from gpu_tiler._kernels import kernel_dir, load_host_library, read_kernel

KERNEL_FILE = "union_find.h"
HOST_KERNEL_FILE = "union_find_host.c"
MERGERS = ("numpy", "cuda", "opencl", "c")
#: names ``merger_for`` takes besides ``MERGERS``: "auto", the fastest merger that works here
CHOICES = MERGERS + ("auto",)
#: A loop that has not converged after this many rounds has a bug, not a hard input (rounds grow
#: with the logarithm of the longest chain of pairs).
_MAX_ROUNDS = 10_000


def _index_dtype(n_nodes: int):
    return np.int32 if n_nodes < 2**31 - 1 else np.int64


def kernel_source(index_bits: int) -> str:
    """The union-find kernel source specialised for ``index_bits`` (32 or 64)."""
    if index_bits not in (32, 64):
        raise ValueError(f"index_bits must be 32 or 64, not {index_bits!r}")
    return f"#define GT_UF_INDEX_BITS {index_bits}\n" + read_kernel(KERNEL_FILE)


def _check_pairs(first, second, n_nodes):
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(
            f"pairs must be two 1-D arrays of one length; got shapes {first.shape} and {second.shape}"
        )
    if n_nodes < 0:
        raise ValueError(f"n_nodes must be >= 0, not {n_nodes}")


def _host_start(first, second, n_nodes):
    """Checked host pairs, the index dtype for ``n_nodes`` and the initial parent array (every node its own root)."""
    first, second = np.asarray(first), np.asarray(second)
    _check_pairs(first, second, n_nodes)
    if first.size and (min(first.min(), second.min()) < 0 or max(first.max(), second.max()) >= n_nodes):
        raise ValueError(f"pairs name nodes outside 0..{n_nodes - 1}")  # a kernel would write out of bounds
    dtype = _index_dtype(n_nodes)
    return first, second, dtype, np.arange(n_nodes, dtype=dtype)


class NumpyUnionFind:
    """Vectorised union-find on the host (NumPy arrays in and out)."""

    name = "numpy"
    on_device = False  #: whether roots() takes and returns device (CuPy) arrays

    def roots(self, first, second, n_nodes: int) -> np.ndarray:
        first, second, dtype, parent = _host_start(first, second, n_nodes)
        a, b = first.astype(dtype, copy=False), second.astype(dtype, copy=False)
        for _ in range(_MAX_ROUNDS):
            ra, rb = parent[a], parent[b]  # parent is fully compressed: these are roots
            open_ = ra != rb
            if not open_.any():
                return parent
            # a pair whose nodes share a root keeps sharing it: only open pairs go on
            a, b, ra, rb = a[open_], b[open_], ra[open_], rb[open_]
            np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
            while True:  # pointer jumping until every node points at its root
                grand = parent[parent]
                if np.array_equal(grand, parent):
                    break
                parent = grand
        raise RuntimeError(f"union-find did not converge in {_MAX_ROUNDS} rounds")


class _KernelUnionFind:
    """The host loop shared by the CUDA and OpenCL mergers: hook, compress, until nothing changes."""

    def _run(self, hook, compress, read_changed, clear_changed):
        for _ in range(_MAX_ROUNDS):
            clear_changed()
            hook()
            compress()
            if not read_changed():
                return
        raise RuntimeError(f"union-find did not converge in {_MAX_ROUNDS} rounds")


@functools.lru_cache(maxsize=None)
def _cuda_functions(device_id: int, index_bits: int):
    """The compiled hook and compress kernels for one CUDA device (compiled once, then cached)."""
    import cupy

    # CuPy caches compiled code by source text: name the included header's content in it too
    header = hashlib.sha256(read_kernel("portability.h").encode()).hexdigest()[:16]
    code = f"{kernel_source(index_bits)}\n// portability.h {header}\n"
    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=code, options=(f"-I{kernel_dir()}",))
        return (
            module.get_function(f"gpu_tiler_uf_hook_pairs_i{index_bits}"),
            module.get_function(f"gpu_tiler_uf_compress_i{index_bits}"),
        )


class CudaUnionFind(_KernelUnionFind):
    """Union-find on the current CUDA device (CuPy arrays in and out)."""

    name = "cuda"
    on_device = True  #: whether roots() takes and returns device (CuPy) arrays
    threads = 256

    def roots(self, first, second, n_nodes: int):
        import cupy

        first, second = cupy.asarray(first), cupy.asarray(second)
        _check_pairs(first, second, n_nodes)
        dtype = _index_dtype(n_nodes)
        bits = 8 * np.dtype(dtype).itemsize
        parent = cupy.arange(n_nodes, dtype=dtype)
        if first.size == 0 or n_nodes == 0:
            return parent
        a = cupy.ascontiguousarray(first, dtype=dtype)
        b = cupy.ascontiguousarray(second, dtype=dtype)
        hook, compress = _cuda_functions(cupy.cuda.runtime.getDevice(), bits)
        changed = cupy.zeros(1, dtype=np.int32)

        def blocks(n):
            return (min(65535 * 16, -(-n // self.threads)),)

        n_pairs, n = np.int64(a.size), np.int64(n_nodes)
        self._run(
            hook=lambda: hook(blocks(a.size), (self.threads,), (parent, a, b, n_pairs, changed)),
            compress=lambda: compress(blocks(n_nodes), (self.threads,), (parent, n)),
            read_changed=lambda: bool(changed.get()[0]),
            clear_changed=lambda: changed.fill(0),
        )
        return parent


_OPENCL_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def opencl_problem() -> str | None:
    """Why the OpenCL merger cannot run here, or None when an OpenCL device builds its kernels.

    Building is part of the check: an OpenCL runtime can list a device and still be unable to compile for
    it (PoCL whose LLVM does not know the host CPU: "unknown target CPU 'generic'")."""
    try:
        _opencl_context()
        _opencl_kernels(32)
    except Exception as exc:  # pyopencl missing, no platform/device, or the build failed
        return " ".join(f"{type(exc).__name__}: {exc}".split())[:600]
    return None


def opencl_advice(problem: str) -> str:
    """What to install or set for ``problem`` (a string from :func:`opencl_problem`)."""
    if "pyopencl is not installed" in problem:
        return "install it with pip install 'gpu_tiler[opencl]' (pyopencl and PoCL), or use merger='c' or 'auto'"
    if "unknown target CPU" in problem or "build" in problem.lower():
        return (
            "the OpenCL compiler rejected the kernel for this device; with PoCL on the CPU that is usually a CPU newer than "
            "PoCL's LLVM: upgrade pyopencl and pocl-binary-distribution, pick another device with PYOPENCL_CTX, or use "
            "merger='c' (the same kernel built by the system C compiler) or merger='auto'"
        )
    return (
        "install an OpenCL driver (pip install pocl-binary-distribution for the CPU, or your GPU vendor's ICD), pick a "
        "device with PYOPENCL_CTX, or use merger='c' or 'auto'"
    )


@functools.lru_cache(maxsize=None)
def _opencl_context():
    """One OpenCL context and queue per process (the device pyopencl picks; PYOPENCL_CTX chooses)."""
    try:
        import pyopencl as cl
    except ImportError as exc:
        raise RuntimeError("pyopencl is not installed; install gpu_tiler[opencl]") from exc
    context = cl.create_some_context(interactive=False)
    return context, cl.CommandQueue(context)


@functools.lru_cache(maxsize=None)
def _opencl_kernels(index_bits: int):
    """The built hook and compress kernels for the process's OpenCL context (built once, then cached)."""
    import pyopencl as cl

    context, _ = _opencl_context()
    program = cl.Program(context, kernel_source(index_bits)).build(options=["-I", str(kernel_dir())])
    return (
        cl.Kernel(program, f"gpu_tiler_uf_hook_pairs_i{index_bits}"),
        cl.Kernel(program, f"gpu_tiler_uf_compress_i{index_bits}"),
    )


class OpenCLUnionFind(_KernelUnionFind):
    """Union-find on an OpenCL device through pyopencl (host arrays in and out)."""

    name = "opencl"
    on_device = False  #: whether roots() takes and returns device (CuPy) arrays

    def roots(self, first, second, n_nodes: int) -> np.ndarray:
        import pyopencl as cl

        first, second, dtype, parent = _host_start(first, second, n_nodes)
        if first.size == 0 or n_nodes == 0:
            return parent
        bits = 8 * np.dtype(dtype).itemsize
        context, queue = _opencl_context()
        with _OPENCL_LOCK:  # kernel objects hold their arguments: one merge at a time per process
            return self._roots_locked(cl, context, queue, first, second, n_nodes, parent, dtype, bits)

    def _roots_locked(self, cl, context, queue, first, second, n_nodes, parent, dtype, bits):
        hook, compress = _opencl_kernels(bits)
        mf = cl.mem_flags
        d_parent = cl.Buffer(context, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=parent)
        d_a = cl.Buffer(context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=np.ascontiguousarray(first, dtype))
        d_b = cl.Buffer(context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=np.ascontiguousarray(second, dtype))
        flag = np.zeros(1, dtype=np.int32)
        d_flag = cl.Buffer(context, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=flag)
        n_pairs, n = np.int64(first.size), np.int64(n_nodes)

        def read_changed():
            cl.enqueue_copy(queue, flag, d_flag)
            return bool(flag[0])

        self._run(
            hook=lambda: hook(queue, (first.size,), None, d_parent, d_a, d_b, n_pairs, d_flag),
            compress=lambda: compress(queue, (n_nodes,), None, d_parent, n),
            read_changed=read_changed,
            clear_changed=lambda: cl.enqueue_fill_buffer(queue, d_flag, np.int32(0), 0, 4),
        )
        cl.enqueue_copy(queue, parent, d_parent)
        return parent


@functools.lru_cache(maxsize=None)
def _c_functions(index_bits: int):
    """The host-C hook and compress launchers for ``index_bits`` (built once per source and compiler, cached
    on disk; loaded once per process)."""
    if index_bits not in (32, 64):
        raise ValueError(f"index_bits must be 32 or 64, not {index_bits!r}")
    library = load_host_library(HOST_KERNEL_FILE, (f"-DGT_UF_INDEX_BITS={index_bits}",))
    pointer, long_, i64 = ctypes.c_void_p, ctypes.c_long, ctypes.c_int64
    hook = getattr(library, f"gpu_tiler_uf_hook_pairs_launch_i{index_bits}")
    hook.argtypes = [long_, pointer, pointer, pointer, i64, pointer]
    compress = getattr(library, f"gpu_tiler_uf_compress_launch_i{index_bits}")
    compress.argtypes = [long_, pointer, i64]
    hook.restype = compress.restype = long_
    return hook, compress


@functools.lru_cache(maxsize=None)
def c_problem() -> str | None:
    """Why the C merger cannot run here (no C compiler, or it failed), or None when it builds."""
    try:
        _c_functions(32)
    except Exception as exc:
        return " ".join(f"{type(exc).__name__}: {exc}".split())[:600]
    return None


def merger_problem(name: str) -> str | None:
    """Why the kernel merger ``name`` ("opencl" or "c") cannot run here, or None when it builds."""
    return {"opencl": opencl_problem, "c": c_problem}[name]()


def _host_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class CUnionFind(_KernelUnionFind):
    """Union-find on the host CPU: the kernels of ``union_find.h`` built as C11 with POSIX threads (host arrays
    in and out). ``threads``: how many threads run each kernel (default: the CPUs this process may use, one per
    2048 items at most)."""

    name = "c"
    on_device = False  #: whether roots() takes and returns device (CuPy) arrays

    def __init__(self, threads: int | None = None):
        if threads is not None and not 1 <= int(threads) <= 256:
            raise ValueError(f"threads must be 1..256, not {threads!r}")
        self.threads = None if threads is None else int(threads)

    def roots(self, first, second, n_nodes: int) -> np.ndarray:
        first, second, dtype, parent = _host_start(first, second, n_nodes)
        if first.size == 0 or n_nodes == 0:
            return parent
        hook, compress = _c_functions(8 * np.dtype(dtype).itemsize)
        a = np.ascontiguousarray(first, dtype=dtype)
        b = np.ascontiguousarray(second, dtype=dtype)
        changed = np.zeros(1, dtype=np.int32)
        threads = self.threads or max(1, min(_host_threads(), max(a.size, n_nodes) // 2048))
        p_parent, p_a, p_b, p_changed = (x.ctypes.data for x in (parent, a, b, changed))
        self._run(  # ctypes releases the GIL for each call: other Python threads go on meanwhile
            hook=lambda: hook(threads, p_parent, p_a, p_b, a.size, p_changed),
            compress=lambda: compress(threads, p_parent, n_nodes),
            read_changed=lambda: bool(changed[0]),
            clear_changed=lambda: changed.fill(0),
        )
        return parent


@functools.lru_cache(maxsize=None)
def get_merger(name: str):
    """The union-find merger called ``name`` (one of ``MERGERS``)."""
    if name == "numpy":
        return NumpyUnionFind()
    if name == "cuda":
        return CudaUnionFind()
    if name == "opencl":
        return OpenCLUnionFind()
    if name == "c":
        return CUnionFind()
    raise ValueError(
        f"merger {name!r} is not one of {', '.join(map(repr, CHOICES))} (or None for the backend's own)"
    )


_WARNED = set()


def _warn_once(message: str):
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)  # at the call of label() or map_labels()


def _auto_host_merger() -> str:
    """OpenCL where it builds, else C where a compiler does, else NumPy; one warning per cause of a fallback from
    an installed OpenCL runtime that does not build (a missing pyopencl is an optional extra, not a fault)."""
    problem = opencl_problem()
    if problem is None:
        return "opencl"
    fallback = "c" if c_problem() is None else "numpy"
    if "pyopencl is not installed" not in problem:
        _warn_once(f"merger='auto': the OpenCL runtime cannot run the union-find here ({problem}); "
                   f"using the {fallback!r} merger instead")
    return fallback


def merger_for(backend, name: str | None = None):
    """The merger to use on ``backend``: ``name`` if given (one of ``CHOICES``), else CUDA on CuPy and NumPy on
    the host. ``"auto"``: CUDA on CuPy; on the host OpenCL, C or NumPy, the first that works here."""
    if name is None:
        name = backend.default_merger
    if name == "auto":
        name = "cuda" if backend.default_merger == "cuda" else _auto_host_merger()
    if name == "cuda" and backend.default_merger != "cuda":
        raise ValueError("merger 'cuda' needs the CuPy backend (backend='cupy'); use 'numpy', 'c' or 'opencl' here")
    if name == "opencl":
        problem = opencl_problem()
        if problem is not None:
            raise RuntimeError(
                f"merger 'opencl' was asked for, but OpenCL cannot run gpu_tiler's union-find here ({problem}); "
                f"{opencl_advice(problem)}"
            )
    if name == "c":
        problem = c_problem()
        if problem is not None:
            raise RuntimeError(f"merger 'c' was asked for, but the host C build failed ({problem})")
    return get_merger(name)


__all__ = [
    "CHOICES", "CUnionFind", "CudaUnionFind", "MERGERS", "NumpyUnionFind", "OpenCLUnionFind", "c_problem",
    "get_merger", "kernel_source", "merger_for", "merger_problem", "opencl_advice", "opencl_problem",
]
