"""Kernel sources ship with the package and compile for OpenCL (run on PoCL) and CUDA (nvcc)."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from gpu_tiler._kernels import kernel_dir, read_kernel

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
    program = cl.Program(ctx, PROBE).build(options=["-I", str(kernel_dir())])
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
