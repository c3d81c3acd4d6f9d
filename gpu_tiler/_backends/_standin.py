"""A strict stand-in for a GPU backend, so the device path runs (and is checked) on any CPU.

Its arrays (:class:`DeviceArray`) hold NumPy data but behave as device arrays do under CuPy:

- converting one to NumPy implicitly (``np.asarray``, ``__array__``, mixing it with a host array in
  arithmetic or in an array-module call) raises ``TypeError`` with CuPy's words; only the backend's
  ``to_host`` (or the array's ``.get()``) brings data back, and only ``to_backend`` / ``xp.asarray``
  takes host data over;
- every transfer is counted (calls and bytes, each direction);
- an allocator ledger counts the bytes of live device buffers (views share their base's buffer; a
  buffer is freed when its last array is dropped) and their peak; with a device budget, an
  allocation beyond it raises :class:`OutOfMemoryError` (a ``MemoryError``, as CuPy's is), so the
  engine's split-and-retry runs for real.

Its ``xp``, ``ndimage`` and ``skimage`` namespaces call NumPy, SciPy and scikit-image on the unwrapped
data and wrap the results again, so results equal the NumPy backend's bit for bit.
"""
from __future__ import annotations

import importlib
import threading
import types
import weakref
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from gpu_tiler._devices import Device, budget_for

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array "
            "explicitly.")


class OutOfMemoryError(MemoryError):
    """The stand-in device has no room for an allocation (CuPy raises its own ``OutOfMemoryError``)."""


@dataclass
class Ledger:
    """Transfers and device memory of the stand-in device."""

    total_bytes: int = 16 * 2**30
    limit_bytes: int | None = None  #: allocations beyond this raise OutOfMemoryError (None: the total)
    h2d_calls: int = 0
    h2d_bytes: int = 0
    d2h_calls: int = 0
    d2h_bytes: int = 0
    scalar_reads: int = 0  #: int()/float()/bool()/item() of device values
    live_bytes: int = 0
    peak_bytes: int = 0
    allocations: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _buffers: dict = field(default_factory=dict, repr=False)  # id(owner ndarray) -> nbytes

    def reset(self, *, limit_bytes=None, total_bytes=None):
        """Zero the counters and the peak (live buffers stay counted); set a new limit."""
        with self.lock:
            self.h2d_calls = self.h2d_bytes = self.d2h_calls = self.d2h_bytes = self.allocations = 0
            self.scalar_reads = 0
            self.peak_bytes = self.live_bytes
            self.limit_bytes = limit_bytes
            if total_bytes is not None:
                self.total_bytes = int(total_bytes)

    def snapshot(self) -> dict:
        with self.lock:
            return {k: getattr(self, k) for k in ("h2d_calls", "h2d_bytes", "d2h_calls", "d2h_bytes", "scalar_reads",
                                                  "live_bytes", "peak_bytes", "allocations")}

    def track(self, data: np.ndarray) -> None:
        """Count the buffer holding ``data`` (its base) once, until that buffer is freed."""
        owner = data
        while isinstance(owner.base, np.ndarray):
            owner = owner.base
        key = id(owner)
        with self.lock:
            if key in self._buffers:
                return
            size = int(owner.nbytes)
            limit = self.limit_bytes if self.limit_bytes is not None else self.total_bytes
            if self.live_bytes + size > limit:
                raise OutOfMemoryError(
                    f"Out of memory allocating {size:,} bytes (allocated so far: {self.live_bytes:,} bytes, "
                    f"limit {limit:,} bytes) on the stand-in device"
                )
            self._buffers[key] = size
            self.live_bytes += size
            self.allocations += 1
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        weakref.finalize(owner, self._free, key, size)

    def _free(self, key, size):
        with self.lock:
            if self._buffers.pop(key, None) is not None:
                self.live_bytes -= size

    def count(self, direction: str, nbytes: int) -> None:
        with self.lock:
            if direction == "h2d":
                self.h2d_calls += 1
                self.h2d_bytes += int(nbytes)
            elif direction == "scalar":
                self.scalar_reads += 1
            else:
                self.d2h_calls += 1
                self.d2h_bytes += int(nbytes)


LEDGER = Ledger()


def wrap(value):
    """NumPy results as device arrays (0-d for NumPy scalars, as CuPy returns them); containers kept."""
    if isinstance(value, DeviceArray):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("the stand-in device holds numeric arrays only (CuPy has no object dtype)")
        return DeviceArray(value)
    if isinstance(value, np.generic):
        return DeviceArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(wrap(v) for v in value)
    if isinstance(value, list):
        return [wrap(v) for v in value]
    return value


def unwrap(value, *, allow_host=False, where="this call"):
    """Device arrays to their NumPy data; a host array is refused as CuPy refuses it."""
    if isinstance(value, DeviceArray):
        return value._data
    if isinstance(value, np.ndarray) and not allow_host and value.ndim > 0:
        raise TypeError(f"Unsupported type {type(value)} in {where}: a host (NumPy) array mixed with device arrays; "
                        f"move it with the backend's to_backend (xp.asarray) first")
    if isinstance(value, (tuple, list)):
        return type(value)(unwrap(v, allow_host=allow_host, where=where) for v in value)
    if isinstance(value, dict):
        return {k: unwrap(v, allow_host=allow_host, where=where) for k, v in value.items()}
    return value


class DeviceArray(NDArrayOperatorsMixin):
    """An array on the stand-in device: NumPy data that will not leave without an explicit transfer."""

    __slots__ = ("_data", "__weakref__")

    def __init__(self, data: np.ndarray):
        LEDGER.track(data)
        self._data = data

    # ---- what CuPy refuses ------------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        args = unwrap(inputs, where=f"numpy.{ufunc.__name__}")
        if "out" in kwargs:
            kwargs["out"] = unwrap(kwargs["out"], where=f"numpy.{ufunc.__name__}")
        return wrap(getattr(ufunc, method)(*args, **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        where = f"numpy.{func.__name__}"
        return wrap(func(*unwrap(args, where=where), **unwrap(kwargs, where=where)))

    # ---- explicit transfer --------------------------------------------------------------------
    def get(self) -> np.ndarray:
        """A host copy (a counted device-to-host transfer), as CuPy's ``ndarray.get``."""
        LEDGER.count("d2h", self._data.nbytes)
        return np.array(self._data, copy=True)

    # ---- what an array is -----------------------------------------------------------------------
    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)
    nbytes = property(lambda self: self._data.nbytes)
    itemsize = property(lambda self: self._data.itemsize)
    strides = property(lambda self: self._data.strides)
    flags = property(lambda self: self._data.flags)
    T = property(lambda self: wrap(self._data.T))

    def __len__(self):
        return len(self._data)

    def __getitem__(self, index):
        return wrap(self._data[unwrap(index, where="indexing")])

    def __setitem__(self, index, value):
        if isinstance(value, np.ndarray) and value.ndim > 0:  # CuPy copies host data over: a transfer
            LEDGER.count("h2d", value.nbytes)
            self._data[unwrap(index, where="indexing")] = value
            return
        self._data[unwrap(index, where="indexing")] = unwrap(value, where="assignment")

    def __iter__(self):
        return (wrap(v) for v in self._data)

    # a Python scalar of a device value is a read across the border (a synchronisation on CuPy):
    # counted apart from the bulk transfers
    def __bool__(self):
        LEDGER.count("scalar", self._data.itemsize)
        return bool(self._data)

    def __int__(self):
        LEDGER.count("scalar", self._data.itemsize)
        return int(self._data)

    def __float__(self):
        LEDGER.count("scalar", self._data.itemsize)
        return float(self._data)

    def __index__(self):
        LEDGER.count("scalar", self._data.itemsize)
        return self._data.__index__()

    def item(self):
        LEDGER.count("scalar", self._data.itemsize)
        return self._data.item()

    def tolist(self):
        LEDGER.count("d2h", self._data.nbytes)
        return self._data.tolist()

    def __getattr__(self, name):  # methods: astype, reshape, ravel, sum, max, copy, ... on the device
        if name.startswith("__") or name in ("ctypes", "data", "base", "tobytes", "tofile", "view"):
            # no buffer or array interface: NumPy must not read the data behind our back
            raise AttributeError(f"'standin.ndarray' object has no attribute '{name}'")
        attribute = getattr(self._data, name)
        if not callable(attribute):
            return wrap(attribute)

        def method(*args, **kwargs):
            where = f"ndarray.{name}"
            return wrap(attribute(*unwrap(args, where=where), **unwrap(kwargs, where=where)))

        return method

    def __reduce__(self):
        return (DeviceArray, (self._data,))

    def __repr__(self):
        return f"standin.{self._data!r}"


class Namespace:
    """A module (NumPy, scipy.ndimage, scikit-image) whose functions take and give device arrays.

    With ``parameters_on_host``, arguments after the first (the image) may be small host arrays
    (structures, footprints, weights), as cupyx and cuCIM accept them; the image must be on the device."""

    def __init__(self, module, *, parameters_on_host=False):
        self._module = module
        self._parameters_on_host = parameters_on_host
        self.__name__ = f"standin:{module.__name__}"

    def __getattr__(self, name):
        try:
            value = getattr(self._module, name)
        except AttributeError:
            if not isinstance(self._module, types.ModuleType):
                raise
            value = importlib.import_module(f"{self._module.__name__}.{name}")
        if isinstance(value, types.ModuleType):
            return Namespace(value, parameters_on_host=self._parameters_on_host)
        if isinstance(value, type) or not callable(value):
            return value
        if isinstance(value, np.ufunc):
            return _Ufunc(value)
        where = f"{self._module.__name__}.{name}"
        lenient = self._parameters_on_host

        def call(*args, **kwargs):
            args = tuple(unwrap(a, allow_host=lenient and i > 0, where=where) for i, a in enumerate(args))
            kwargs = {k: unwrap(v, allow_host=lenient, where=where) for k, v in kwargs.items()}
            return wrap(value(*args, **kwargs))

        call.__name__ = name
        return call


class _Ufunc:
    """A NumPy ufunc on device arrays, its methods (``at``, ``reduce``, ``accumulate``) included,
    as CuPy's ufuncs have them."""

    def __init__(self, ufunc):
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        return _on_device(self._ufunc, f"numpy.{self.__name__}", args, kwargs)

    def __getattr__(self, method):
        function = getattr(self._ufunc, method)
        if not callable(function):
            return function
        return lambda *args, **kwargs: _on_device(function, f"numpy.{self.__name__}.{method}", args, kwargs)


def _on_device(function, where, args, kwargs):
    return wrap(function(*unwrap(args, where=where), **unwrap(kwargs, where=where)))


class _ArrayModule(Namespace):
    """The stand-in's ``xp``: NumPy's functions on device arrays, plus CuPy's transfer functions."""

    ndarray = DeviceArray

    def __init__(self):
        super().__init__(np)
        self.__name__ = "standin"

    def asarray(self, value, dtype=None):
        if isinstance(value, DeviceArray):
            return value if dtype is None else value.astype(dtype, copy=False)
        host = np.asarray(value, dtype=dtype)
        LEDGER.count("h2d", host.nbytes)
        return DeviceArray(np.array(host, copy=True))

    array = asarray

    def asnumpy(self, value):
        return value.get() if isinstance(value, DeviceArray) else np.asarray(value)

    def argsort(self, value, axis=-1):
        """Stable, as CuPy's (radix) sort always is."""
        return wrap(np.argsort(unwrap(value, where="argsort"), axis=axis, kind="stable"))

    def sort(self, value, axis=-1):
        return wrap(np.sort(unwrap(value, where="sort"), axis=axis, kind="stable"))

    def ascontiguousarray(self, value, dtype=None):
        return wrap(np.ascontiguousarray(unwrap(value, where="ascontiguousarray"), dtype=dtype))


XP = _ArrayModule()


class StandInBackend:
    """The device stand-in: same code paths as a GPU backend, computing with NumPy/SciPy underneath."""

    name = "standin"
    device_kind = "standin"
    is_device = True
    default_merger = "numpy"

    def __init__(self, ledger: Ledger = LEDGER):
        self.ledger = ledger
        self.xp = XP
        self.ndimage = Namespace(importlib.import_module("scipy.ndimage"), parameters_on_host=True)

    @property
    def skimage(self):
        return Namespace(importlib.import_module("skimage"), parameters_on_host=True)

    def to_backend(self, array):
        """A chunk on the stand-in device: host chunks are copied over (a counted transfer)."""
        if isinstance(array, DeviceArray):
            return array
        return XP.asarray(array)

    def to_host(self, array) -> np.ndarray:
        if isinstance(array, DeviceArray):
            return array.get()
        return np.asarray(array)

    def meta(self, dtype, ndim):
        return DeviceArray(np.empty((0,) * ndim, dtype=dtype))

    def device(self, budget=None) -> Device:
        free = self.ledger.total_bytes - self.ledger.live_bytes
        return Device("standin", 0, "gpu_tiler device stand-in", self.ledger.total_bytes, free,
                      budget_for("standin", free, budget))

    def release_memory(self) -> None:
        """Nothing is pooled: freed buffers are returned at once."""

    def __repr__(self):
        return "<gpu_tiler backend 'standin' (a strict GPU stand-in computing with NumPy/SciPy)>"


STANDIN = StandInBackend()

__all__ = ["DeviceArray", "LEDGER", "Ledger", "OutOfMemoryError", "STANDIN", "StandInBackend", "XP"]
