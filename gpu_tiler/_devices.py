"""What devices this process can use, how much memory each has, and its budget."""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

import psutil

from gpu_tiler._config import (
    DEFAULT_GPU_FRACTION,
    DEFAULT_HOST_FRACTION,
    get_setting,
    parse_budget,
)


@dataclass(frozen=True)
class Device:
    """One place tiles can be processed: the CPU host or a CUDA GPU."""

    kind: str  # "cpu" or "cuda"
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    budget_bytes: int

    def __str__(self):
        gib = 2**30
        return (
            f"{self.kind}:{self.index} {self.name}: {self.total_bytes / gib:.1f} GiB total, "
            f"{self.free_bytes / gib:.1f} GiB free, budget {self.budget_bytes / 2**20:.0f} MiB"
        )


def budget_for(kind: str, free_bytes: int, budget=None) -> int:
    """Resolve a budget (bytes, fraction, or None for the setting/default) for one device."""
    if budget is None:
        budget = get_setting("memory_budget")
    if budget is None:
        budget = DEFAULT_HOST_FRACTION if kind == "cpu" else DEFAULT_GPU_FRACTION
    else:
        budget = parse_budget(budget)
    if isinstance(budget, float):
        return max(1, int(free_bytes * budget))
    return int(budget)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def host_device(budget=None) -> Device:
    mem = psutil.virtual_memory()
    return Device("cpu", 0, _cpu_name(), int(mem.total), int(mem.available), budget_for("cpu", int(mem.available), budget))


@functools.lru_cache(maxsize=None)
def cupy_problem() -> str | None:
    """Why the CuPy backend cannot run here, or None when a CUDA device really works."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return f"CuPy is not importable ({type(exc).__name__}: {exc}); install gpu_tiler[cuda12] or [cuda13]"
    try:
        if not cupy.is_available():
            return "CuPy is installed but no CUDA device is available (cupy.is_available() is False)"
        probe = cupy.arange(4, dtype=cupy.float32)
        if float((probe * 2).sum()) != 12.0:
            return "a CUDA device is present but a test computation gave a wrong answer"
    except Exception as exc:
        return f"CuPy cannot run on this machine's CUDA device ({type(exc).__name__}: {exc})"
    return None


def cuda_devices(budget=None) -> list[Device]:
    if cupy_problem() is not None:
        return []
    import cupy

    found = []
    for index in range(cupy.cuda.runtime.getDeviceCount()):
        with cupy.cuda.Device(index):
            free, total = cupy.cuda.runtime.memGetInfo()
            name = cupy.cuda.runtime.getDeviceProperties(index)["name"]
        if isinstance(name, bytes):
            name = name.decode()
        found.append(Device("cuda", index, name, int(total), int(free), budget_for("cuda", int(free), budget)))
    return found


def devices(budget=None) -> list[Device]:
    """List the CPU host and every working CUDA GPU with total/free memory and budget.

    ``budget`` overrides the configured budget for this listing (same forms as
    :func:`gpu_tiler.config`'s ``memory_budget``).
    """
    return [host_device(budget), *cuda_devices(budget)]
