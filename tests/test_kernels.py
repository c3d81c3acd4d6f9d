"""Kernel sources ship with the package and compile for OpenCL (run on PoCL), CUDA (nvcc) and C on the host
(run with POSIX threads: the kernel logic runs on every machine with a C compiler, whatever its OpenCL)."""
import ctypes
import os
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from gpu_tiler._kernels import (
    HostBuildError,
    build_host_library,
    host_compiler,
    kernel_dir,
    read_kernel,
)
from gpu_tiler.labels._merge import c_problem

ROOT = Path(__file__).resolve().parent.parent

# A small kernel written only with the portability header's names: atomic-min of values into slots.
PROBE = """
#include "portability.h"
GT_KERNEL void gpu_tiler_probe_atomic_min_i32(GT_GLOBAL gt_i32 *slots, GT_GLOBAL const gt_i32 *values,
                                              const long n) {
    const long i = GT_THREAD_ID();
    if (i < n) GT_ATOMIC_MIN_I32(&slots[i % 4], values[i]);
}
"""


def test_kernels_are_found_in_the_checkout():
    assert (kernel_dir() / "portability.h").is_file()
    assert "GT_ATOMIC_MIN_I32" in read_kernel("portability.h")
    with pytest.raises(FileNotFoundError, match="no kernel source 'nope.cu'"):
        read_kernel("nope.cu")


@pytest.mark.slow
def test_kernels_are_found_from_an_installed_wheel(tmp_path):
    pytest.importorskip("hatchling")
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)],
        check=True, capture_output=True,
    )
    wheel = next(dist.glob("gpu_tiler-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "gpu_tiler/kernels/portability.h" in names
    assert "gpu_tiler/kernels/union_find.h" in names
    assert "gpu_tiler/kernels/union_find_host.c" in names
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )
    code = (
        "import gpu_tiler, gpu_tiler._kernels as k; "
        "print(gpu_tiler.__file__); print(k.kernel_dir()); print(len(k.read_kernel('portability.h')))"
    )
    # run outside the checkout so the installed copy, not the source tree, is imported
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                            check=True, capture_output=True, text=True)
    module_file, folder, size = result.stdout.split()
    assert Path(module_file).is_relative_to(target)
    assert Path(folder) == target / "gpu_tiler" / "kernels"
    assert int(size) > 100


def test_portability_header_runs_on_opencl():
    cl = pytest.importorskip("pyopencl", reason="pyopencl not installed (gpu_tiler[opencl])")
    try:
        ctx = cl.create_some_context(interactive=False)
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no OpenCL device: {exc}")
    queue = cl.CommandQueue(ctx)
    try:
        program = cl.Program(ctx, PROBE).build(options=["-I", str(kernel_dir())])
    except cl.RuntimeError as exc:  # e.g. PoCL whose LLVM does not know this CPU; test_*_host_c run the logic
        pytest.skip(f"the OpenCL device cannot build kernels here: {' '.join(str(exc).split())[:400]}")
    values = np.array([9, 3, 7, 8, 5, 6, 1, 4, 2, 0], dtype=np.int32)
    slots = np.full(4, 100, dtype=np.int32)
    mf = cl.mem_flags
    d_slots = cl.Buffer(ctx, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=slots)
    d_values = cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=values)
    program.gpu_tiler_probe_atomic_min_i32(queue, (16,), None, d_slots, d_values, np.int64(values.size))
    cl.enqueue_copy(queue, slots, d_slots)
    expected = [min(values[i::4]) for i in range(4)]
    assert slots.tolist() == expected


def test_portability_header_compiles_as_cuda(tmp_path):
    nvcc = shutil.which("nvcc") or (Path("/usr/local/cuda/bin/nvcc") if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    source = tmp_path / "probe.cu"
    source.write_text(PROBE)
    subprocess.run([str(nvcc), "-I", str(kernel_dir()), "-c", str(source), "-o", str(tmp_path / "probe.o")],
                   check=True, capture_output=True, text=True)
    assert (tmp_path / "probe.o").stat().st_size > 0


# ---- the host C target: the same header compiled by the system C compiler, run on POSIX threads ----

# The probe above, and a contention test of every host atomic: each thread adds 1 to a counter with a CAS
# loop, sets its bit with atomic-or, and atomic-mins values into 32- and 64-bit slots (grid-stride loops).
HOST_PROBE = PROBE + """
GT_KERNEL void gpu_tiler_probe_contention(GT_GLOBAL gt_i32 *counter, GT_GLOBAL gt_i32 *bits,
                                          GT_GLOBAL gt_i64 *slots64, GT_GLOBAL const gt_i64 *values64,
                                          const long n) {
    for (long i = GT_THREAD_ID(); i < n; i += GT_THREAD_COUNT()) {
        gt_i32 old = counter[0], seen;
        while ((seen = GT_ATOMIC_CAS_I32(counter, old, old + 1)) != old) old = seen;
        GT_ATOMIC_OR_I32(bits, 1 << (GT_THREAD_ID() % 31));
        GT_ATOMIC_MIN_I64(&slots64[i % 3], values64[i]);
        (void)GT_ATOMIC_CAS_I64(&slots64[3], (gt_i64)0, (gt_i64)0);
    }
}
struct probe_args { gt_i32 *a; gt_i32 *b; gt_i64 *c; const gt_i64 *d; long n; };
static void min_body(void *raw) {
    struct probe_args *p = (struct probe_args *)raw;
    gpu_tiler_probe_atomic_min_i32(p->a, p->b, p->n);
}
static void contention_body(void *raw) {
    struct probe_args *p = (struct probe_args *)raw;
    gpu_tiler_probe_contention(p->a, p->b, p->c, p->d, p->n);
}
GT_HOST_EXPORT long probe_min(long threads, gt_i32 *slots, gt_i32 *values, long n) {
    struct probe_args p = {slots, values, 0, 0, n};
    return gt_host_launch(threads, min_body, &p);
}
GT_HOST_EXPORT long probe_contention(long threads, gt_i32 *counter, gt_i32 *bits, gt_i64 *slots64,
                                     const gt_i64 *values64, long n) {
    struct probe_args p = {counter, bits, slots64, values64, n};
    return gt_host_launch(threads, contention_body, &p);
}
"""


@pytest.fixture
def host_probe(tmp_path, monkeypatch):
    if c_problem() is not None:
        pytest.skip(f"no host C build here: {c_problem()}")
    monkeypatch.setenv("GPU_TILER_KERNEL_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "probe.c"
    source.write_text(HOST_PROBE)
    library = ctypes.CDLL(str(build_host_library(source)))
    for name in ("probe_min", "probe_contention"):
        getattr(library, name).restype = ctypes.c_long
    return library


def test_portability_header_runs_on_host_c(host_probe):
    values = np.array([9, 3, 7, 8, 5, 6, 1, 4, 2, 0], dtype=np.int32)
    slots = np.full(4, 100, dtype=np.int32)
    ran = host_probe.probe_min(ctypes.c_long(16), ctypes.c_void_p(slots.ctypes.data),
                               ctypes.c_void_p(values.ctypes.data), ctypes.c_long(values.size))
    assert ran == 16  # sixteen threads at once, each with its own GT_THREAD_ID()
    assert slots.tolist() == [min(values[i::4]) for i in range(4)]


def test_host_atomics_hold_under_contention(host_probe):
    n, threads = 200_000, 8
    values = np.random.default_rng(0).integers(-(2**62), 2**62, n, dtype=np.int64)
    counter, bits = np.zeros(1, np.int32), np.zeros(1, np.int32)
    slots = np.full(4, 2**62, dtype=np.int64)
    slots[3] = 0
    arrays = [ctypes.c_void_p(a.ctypes.data) for a in (counter, bits, slots, values)]
    ran = host_probe.probe_contention(ctypes.c_long(threads), *arrays, ctypes.c_long(n))
    assert ran == threads
    assert counter[0] == n  # no increment lost to a race
    assert bits[0] == (1 << threads) - 1
    assert slots[:3].tolist() == [values[i::3].min() for i in range(3)] and slots[3] == 0


def _build_in(cache):
    os.environ["GPU_TILER_KERNEL_CACHE"] = cache
    return str(build_host_library("union_find_host.c", ("-DGT_UF_INDEX_BITS=32",)))


def test_host_build_is_cached_by_content_and_written_atomically(tmp_path, monkeypatch):
    if c_problem() is not None:
        pytest.skip(f"no host C build here: {c_problem()}")
    cache = tmp_path / "cache"
    with ProcessPoolExecutor(4) as pool:  # four processes build into one empty cache at once
        paths = set(pool.map(_build_in, [str(cache)] * 4))
    assert len(paths) == 1
    built = Path(paths.pop())
    assert [p.name for p in cache.iterdir()] == [built.name]  # no temporary file left behind
    library = ctypes.CDLL(str(built))
    assert hasattr(library, "gpu_tiler_uf_hook_pairs_launch_i32")
    monkeypatch.setenv("GPU_TILER_KERNEL_CACHE", str(cache))
    stamp = built.stat().st_mtime_ns
    assert build_host_library("union_find_host.c", ("-DGT_UF_INDEX_BITS=32",)) == built  # a cache hit
    assert built.stat().st_mtime_ns == stamp
    other = build_host_library("union_find_host.c", ("-DGT_UF_INDEX_BITS=64",))
    assert other != built and other.parent == cache  # other defines, another library


def test_host_build_without_a_compiler_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("GPU_TILER_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("GPU_TILER_CC", "no-such-cc-gpu-tiler")
    with pytest.raises(HostBuildError, match="GPU_TILER_CC='no-such-cc-gpu-tiler' names no program on PATH"):
        build_host_library("union_find_host.c")
    monkeypatch.delenv("GPU_TILER_CC")
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HostBuildError, match="no C compiler found .* install one"):
        host_compiler()


def test_host_build_reports_compiler_errors(tmp_path, monkeypatch):
    if c_problem() is not None:
        pytest.skip(f"no host C build here: {c_problem()}")
    monkeypatch.setenv("GPU_TILER_KERNEL_CACHE", str(tmp_path / "cache"))
    broken = tmp_path / "broken.c"
    broken.write_text('#include "portability.h"\nthis is not C;\n')
    with pytest.raises(HostBuildError, match="could not build .*broken.c"):
        build_host_library(broken)
    assert list((tmp_path / "cache").iterdir()) == []  # the failed build left nothing
