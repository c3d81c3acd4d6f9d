"""Settings: backend choice, memory budget, tiles in flight.

Precedence: values set with :func:`config` win over environment variables
(``GPU_TILER_BACKEND``, ``GPU_TILER_MEMORY_BUDGET``, ``GPU_TILER_TILES_IN_FLIGHT``),
which win over the defaults below.
"""
from __future__ import annotations

import os
import re
import threading

#: "standin": the strict GPU stand-in that runs the device path on any CPU (gpu_tiler.testing)
BACKENDS = ("auto", "numpy", "cupy", "standin")

#: Default budget, as a fraction of the device's *free* memory when the job is planned.
#: Host: a quarter, because dask, the reader, the writer and the rest of the user's pipeline
#: share the host's memory with our tiles. GPU: a half, leaving room for CuPy's memory pool,
#: cuFFT/cuCIM workspaces and a second process on the same device.
DEFAULT_HOST_FRACTION = 0.25
DEFAULT_GPU_FRACTION = 0.5

_ENV = {
    "backend": "GPU_TILER_BACKEND",
    "memory_budget": "GPU_TILER_MEMORY_BUDGET",
    "tiles_in_flight": "GPU_TILER_TILES_IN_FLIGHT",
}
_UNSET = object()
_lock = threading.Lock()
_settings: dict[str, object] = {}

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_BYTES_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_budget(value) -> int | float:
    """Parse a memory budget.

    Returns an ``int`` number of bytes (for ``1_000_000``, ``"512MiB"``, ``"2GB"``,
    ``"1.5 GiB"``) or a ``float`` fraction in (0, 1] of the device's free memory
    (for ``0.5`` or ``"50%"``). Anything else is a ``ValueError`` that quotes the value.
    """
    if isinstance(value, bool):
        raise ValueError(f"memory budget {value!r} is not a size: give bytes, '512MiB', '2GB' or a fraction like 0.5")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"memory budget {value!r} must be a positive number of bytes")
        return value
    if isinstance(value, float):
        if 0 < value <= 1:
            return value
        if value > 1 and value.is_integer():
            return int(value)
        raise ValueError(
            f"memory budget {value!r} is neither a fraction in (0, 1] of free memory nor a whole number of bytes"
        )
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            try:
                pct = float(text[:-1])
            except ValueError:
                pct = -1.0
            if 0 < pct <= 100:
                return pct / 100
            raise ValueError(f"memory budget {value!r}: a percentage must lie in (0, 100]")
        m = _BYTES_RE.match(text)
        if m:
            number, unit = float(m.group(1)), m.group(2).lower()
            if unit in _UNITS:
                if unit == "" and 0 < number <= 1 and "." in m.group(1):
                    return number
                nbytes = int(number * _UNITS[unit])
                if nbytes > 0:
                    return nbytes
        raise ValueError(
            f"memory budget {value!r} does not parse: use bytes (1073741824), a size with a unit "
            f"('512MiB', '2GB', '1.5GiB') or a fraction of free memory (0.5 or '50%')"
        )
    raise ValueError(f"memory budget {value!r} has type {type(value).__name__}; give an int, float or str")


def _check_backend(name) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r} is not one of {', '.join(map(repr, BACKENDS))}")
    return name


def _check_in_flight(value) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(n) != str(value).strip():
        raise ValueError(f"tiles_in_flight {value!r} must be a whole number >= 1")
    return n


_CHECKS = {"backend": _check_backend, "memory_budget": parse_budget, "tiles_in_flight": _check_in_flight}


def get_setting(name: str):
    """The effective value of a setting (config > environment > None for 'use the default')."""
    with _lock:
        if name in _settings:
            return _settings[name]
    env = os.environ.get(_ENV[name])
    if env is not None and env.strip() != "":
        try:
            return _CHECKS[name](env.strip())
        except ValueError as exc:
            raise ValueError(f"environment variable {_ENV[name]}={env!r}: {exc}") from None
    return "auto" if name == "backend" else None


class config:
    """Set gpu_tiler options for the process, or temporarily as a context manager.

    >>> gpu_tiler.config(backend="numpy", memory_budget="512MiB")    # from now on
    >>> with gpu_tiler.config(memory_budget=0.1):                      # just inside the block
    ...     gpu_tiler.save(result, "out.zarr")

    ``backend``: ``"auto"`` (CuPy when a CUDA device works, else NumPy), ``"numpy"`` or ``"cupy"``.
    ``memory_budget``: bytes, ``"512MiB"``, ``"2GB"``, or a fraction of free memory per device.
    ``tiles_in_flight``: how many tiles may be worked on at once (default: planned from the budget).
    Pass ``None`` to return a setting to its environment/default value.
    """

    def __init__(self, *, backend=_UNSET, memory_budget=_UNSET, tiles_in_flight=_UNSET):
        new = {"backend": backend, "memory_budget": memory_budget, "tiles_in_flight": tiles_in_flight}
        checked = {k: (None if v is None else _CHECKS[k](v)) for k, v in new.items() if v is not _UNSET}
        with _lock:
            self._previous = {k: _settings.get(k, _UNSET) for k in checked}
            for key, value in checked.items():
                if value is None:
                    _settings.pop(key, None)
                else:
                    _settings[key] = value

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with _lock:
            for key, value in self._previous.items():
                if value is _UNSET:
                    _settings.pop(key, None)
                else:
                    _settings[key] = value
        return False

    def __repr__(self):
        items = ", ".join(f"{k}={get_setting(k)!r}" for k in _ENV)
        return f"gpu_tiler.config({items})"
