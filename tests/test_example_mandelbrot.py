"""Exercise (a): the Mandelbrot frames, their lazy stack, and the first-uniform-frame search.

The search is checked against brute force: every frame up to the reported one computed in full.
"""
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpu_tiler.data import (
    MANDELBROT_CENTER,
    mandelbrot_frame,
    mandelbrot_pixels,
    mandelbrot_scale,
    mandelbrot_stack,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "mandelbrot_first_uniform.py"


def reference_count(x, y, max_iter):
    """One point, plain Python floats (one rounding per operation, like mandelbrot_frame)."""
    zr = zi = 0.0
    for n in range(1, max_iter + 1):
        zr, zi = zr * zr - zi * zi + x, 2.0 * zr * zi + y
        if zr * zr + zi * zi > 4.0:
            return n
    return max_iter


def reference_pixel(i, row, col, size, max_iter, center=MANDELBROT_CENTER):
    step = 3.0 / 1.00025 ** i / size
    return reference_count(center[0] + (col - size / 2) * step, center[1] + (row - size / 2) * step,
                           max_iter)


def test_frame_dtype_shape_and_known_values():
    frame = mandelbrot_frame(0, size=24, max_iter=64)
    assert frame.shape == (24, 24) and frame.dtype == np.uint16
    assert 1 <= frame.min() and frame.max() == 64
    # the centre pixel is the centre point; it escapes at 251 with the default max_iter
    assert mandelbrot_frame(5000, size=16)[8, 8] == reference_count(*MANDELBROT_CENTER, 256) == 251
    # a tiny frame around 0 (inside the set) never escapes; one around 10 escapes at once
    inside = mandelbrot_frame(0, size=8, max_iter=50, center=(0.0, 0.0), scale0=1e-3)
    assert (inside == 50).all() and inside.dtype == np.uint16
    assert (mandelbrot_frame(0, size=8, center=(10.0, 0.0), scale0=1e-3) == 1).all()
    # pixel by pixel against the scalar reference, on the documented coordinate convention
    i, size, max_iter = 12000, 16, 40
    frame = mandelbrot_frame(i, size=size, max_iter=max_iter)
    expected = [[reference_pixel(i, r, c, size, max_iter) for c in range(size)] for r in range(size)]
    np.testing.assert_array_equal(frame, expected)
    assert mandelbrot_scale(i) == 3.0 / 1.00025 ** i


def test_sample_pixels_are_bit_for_bit_those_of_full_frames():
    frames, rows, cols = [3, 40000, 90000, 139967], [0, 5, 31], [0, 16, 17, 31]
    samples = mandelbrot_pixels(frames, rows, cols, size=32, max_iter=256)
    assert samples.shape == (4, 3, 4) and samples.dtype == np.uint16
    for k, i in enumerate(frames):
        np.testing.assert_array_equal(samples[k], mandelbrot_frame(i, size=32)[np.ix_(rows, cols)])


def test_stack_is_lazy_with_one_task_per_frame():
    start = time.perf_counter()
    stack = mandelbrot_stack()  # the exercise's 200000 frames of 512x512
    assert time.perf_counter() - start < 10  # built, not computed
    assert stack.shape == (200000, 512, 512) and stack.dtype == np.uint16
    assert stack.numblocks == (200000, 1, 1) and len(stack.__dask_graph__()) == 200000
    small = mandelbrot_stack(50, size=16, max_iter=32)
    assert len(small.__dask_graph__()) == 50
    np.testing.assert_array_equal(small[7].compute(), mandelbrot_frame(7, size=16, max_iter=32))
    np.testing.assert_array_equal(small[10:12].compute(),
                                  [mandelbrot_frame(i, size=16, max_iter=32) for i in (10, 11)])


def run_example(*args):
    return subprocess.run([sys.executable, str(EXAMPLE), *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_example_finds_the_true_first_uniform_frame():
    size, max_iter = 16, 8  # small enough for brute force, deep enough for every stage to reject
    result = run_example("--size", size, "--max-iter", max_iter, "--frames", 20000, "--backend", "numpy")
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"first uniform frame: (\d+)\s+scale (\S+)\s.*all pixels (\d+)", result.stdout)
    assert found, result.stdout
    answer, scale, value = int(found[1]), float(found[2]), int(found[3])
    assert "FAILED" not in result.stdout and "none skipped" in result.stdout
    assert scale == pytest.approx(mandelbrot_scale(answer), rel=1e-5)
    # brute force: every frame before the answer, computed in full, has two different values
    for i in range(answer):
        frame = mandelbrot_frame(i, size=size, max_iter=max_iter)
        assert frame.min() != frame.max(), f"frame {i} is uniform, but the example said {answer}"
    frame = mandelbrot_frame(answer, size=size, max_iter=max_iter)
    assert frame.min() == frame.max() == value


def test_example_says_when_no_frame_is_uniform():
    result = run_example("--size", 16, "--max-iter", 8, "--frames", 300, "--backend", "numpy")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no frame among the first 300 is uniform" in result.stdout


@pytest.mark.gpu
def test_frames_are_the_same_on_cupy(gpu):
    import cupy

    for i in (0, 60000, 139967, 139968):
        on_gpu = mandelbrot_frame(i, size=64, xp=cupy)
        assert isinstance(on_gpu, cupy.ndarray)
        np.testing.assert_array_equal(cupy.asnumpy(on_gpu), mandelbrot_frame(i, size=64))
    stack = mandelbrot_stack(10, size=32, xp=cupy)
    assert isinstance(stack._meta, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(stack[3].compute()), mandelbrot_frame(3, size=32))
