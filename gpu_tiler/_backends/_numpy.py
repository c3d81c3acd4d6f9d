"""The NumPy backend: NumPy arrays, SciPy's ndimage, scikit-image; runs on the host."""
from __future__ import annotations

import numpy as np

from gpu_tiler._devices import host_device


class NumpyBackend:
    name = "numpy"
    device_kind = "cpu"
    is_device = False  #: arrays live in host memory
    default_merger = "numpy"

    @property
    def xp(self):
        return np

    @property
    def ndimage(self):
        import scipy.ndimage

        return scipy.ndimage

    @property
    def skimage(self):
        import skimage

        return skimage

    def release_memory(self) -> None:
        """Host memory is returned by NumPy itself."""

    def to_backend(self, array):
        """Bring a chunk (NumPy or CuPy) onto the host."""
        if isinstance(array, np.ndarray):
            return array
        get = getattr(array, "get", None)  # CuPy arrays
        return get() if callable(get) else np.asarray(array)

    def to_host(self, array):
        return self.to_backend(array)

    def meta(self, dtype, ndim):
        return np.empty((0,) * ndim, dtype=dtype)

    def device(self, budget=None):
        return host_device(budget)

    def __repr__(self):
        return "<gpu_tiler backend 'numpy' (NumPy/SciPy on the host)>"
