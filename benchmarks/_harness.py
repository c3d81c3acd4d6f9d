"""Shared benchmark helpers: hardware description, peak-RSS measurement, medians."""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time

import psutil


def hardware() -> str:
    from gpu_tiler._devices import _cpu_name

    mem = psutil.virtual_memory().total / 2**30
    return f"{_cpu_name()}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def versions(*names) -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in names:
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


class PeakRSS:
    """Peak resident memory growth of this process while the block runs (sampled and ru_maxrss)."""

    def __enter__(self):
        self.process = psutil.Process()
        self.start = self.process.memory_info().rss
        self.start_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if maxrss > self.start_maxrss:  # the kernel's own peak, when it rose during the block
            self.peak = max(self.peak, maxrss)
        self.growth = self.peak - self.start
        return False


def run_isolated(script: str, *args: str) -> dict:
    """Run ``script`` with ``args`` in a fresh interpreter; it prints one JSON line as its last line."""
    result = subprocess.run([sys.executable, script, *args], check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def median(values):
    return statistics.median(values)


def timed(fn, repeats, sync=None):
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up run (kernel compilation,
    memory pools, caches), and the warm-up's result; ``sync`` waits for a device to finish."""
    result = fn()
    if sync is not None:
        sync()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def gpu_benchmark_args(description: str, side: int = 8192):
    """The options every GPU benchmark takes (``--out``, ``--side``, ``--repeats``), and whether a CUDA
    GPU works: returns ``(args, None)`` when it does, ``(args, reason)`` when the benchmark must skip
    (it then prints ``skipped: <reason>`` and exits 0, as benchmarks/gpu_check.sh expects)."""
    import argparse

    from gpu_tiler._backends import cupy_problem

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=".")
    parser.add_argument("--side", type=int, default=side)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    problem = cupy_problem()
    if problem is not None:
        print(f"skipped: {problem}")
    return args, problem


def gpu_name() -> str:
    """The name of the CUDA GPU gpu_tiler sees (for the GPU benchmarks' headers and reports)."""
    import gpu_tiler as gt

    return next((d.name for d in gt.devices() if d.kind == "cuda"), "CUDA GPU")


def write_report(out_dir, filename: str, report: dict) -> None:
    """Write a benchmark's figures as JSON into ``out_dir`` (made when missing)."""
    import json
    from pathlib import Path

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    Path(out_dir, filename).write_text(json.dumps(report, indent=1))


def cuda_sync():
    """Wait until the current CUDA device has finished (for timing GPU work)."""
    import cupy

    cupy.cuda.Stream.null.synchronize()
