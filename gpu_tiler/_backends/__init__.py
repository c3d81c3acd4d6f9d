"""Backends: one object per array library, chosen once per graph.

A backend knows its array module (``xp``), its ``ndimage``, how to move arrays to its device
and back, and which device's memory budget applies. Operations ask :func:`resolve_backend`
once when they build a graph and never import CuPy themselves.
"""
from __future__ import annotations

import functools

import numpy as np
from dask.utils import Dispatch

from gpu_tiler._backends._cupy import CupyBackend
from gpu_tiler._backends._numpy import NumpyBackend
from gpu_tiler._backends._standin import STANDIN, DeviceArray
from gpu_tiler._config import get_setting
from gpu_tiler._devices import cupy_problem

NUMPY = NumpyBackend()

#: chunk type -> backend that natively holds such chunks
backend_for_chunk_type = Dispatch("gpu_tiler_backend_for_chunk_type")
backend_for_chunk_type.register(np.ndarray, lambda: NUMPY)
backend_for_chunk_type.register(DeviceArray, lambda: STANDIN)

#: names get_backend knows ("standin": the strict GPU stand-in of gpu_tiler.testing, for tests)
BACKEND_NAMES = ("numpy", "cupy", "standin")


@backend_for_chunk_type.register_lazy("cupy")
def _register_cupy():
    import cupy

    backend_for_chunk_type.register(cupy.ndarray, lambda: get_cupy_backend())


@functools.lru_cache(maxsize=None)
def get_cupy_backend():
    return CupyBackend()


def get_backend(name: str):
    """The backend called ``name`` (``"numpy"`` or ``"cupy"``); ``"cupy"`` raises if no GPU works."""
    if name == "numpy":
        return NUMPY
    if name == "standin":
        return STANDIN
    if name == "cupy":
        problem = cupy_problem()
        if problem is not None:
            raise RuntimeError(
                f"backend 'cupy' was asked for, but {problem}. Use backend='numpy' (or 'auto', which "
                f"falls back to NumPy only when you did not ask for CuPy)."
            )
        return get_cupy_backend()
    raise ValueError(f"backend {name!r} is not one of 'auto', {', '.join(map(repr, BACKEND_NAMES))}")


def chunk_backend(meta):
    """The backend whose arrays look like ``meta`` (a dask array's ``_meta``); NumPy if unknown."""
    try:
        make = backend_for_chunk_type.dispatch(type(meta))
    except TypeError:  # no backend registered for this type (a scalar, a list, ...)
        return NUMPY
    return make()


def resolve_backend(*arrays, backend=None):
    """Pick the backend for a graph built from ``arrays`` (dask arrays).

    ``backend`` (or the configured setting) ``"numpy"``/``"cupy"`` forces it. ``"auto"`` keeps the
    chunks' own library when it is CuPy, and otherwise uses CuPy only when a CUDA device works.
    """
    choice = backend if backend is not None else get_setting("backend")
    if choice not in (None, "auto"):
        return get_backend(choice)
    for arr in arrays:
        native = chunk_backend(getattr(arr, "_meta", arr))
        if native is not NUMPY:
            return native
    return get_cupy_backend() if cupy_problem() is None else NUMPY


def to_numpy(array) -> np.ndarray:
    """A host (NumPy) copy of a chunk or value of any backend: the one explicit way back to the host."""
    return chunk_backend(array).to_host(array)


def namespace_of(array):
    """The array module of one chunk (NumPy or CuPy), without importing CuPy for NumPy arrays."""
    if isinstance(array, np.ndarray) or np.isscalar(array):
        return np
    return chunk_backend(array).xp


__all__ = [
    "BACKEND_NAMES", "NUMPY", "STANDIN", "backend_for_chunk_type", "chunk_backend", "cupy_problem", "get_backend",
    "get_cupy_backend", "namespace_of", "resolve_backend", "to_numpy",
]
