"""The CuPy backend: CuPy arrays, cupyx.scipy.ndimage, cuCIM where installed; runs on a CUDA GPU."""
from __future__ import annotations

from gpu_tiler._devices import cuda_devices


class CupyBackend:
    name = "cupy"
    device_kind = "cuda"
    is_device = True  #: arrays live in GPU memory
    default_merger = "cuda"

    def __init__(self):
        import cupy

        self._cupy = cupy

    @property
    def xp(self):
        return self._cupy

    @property
    def ndimage(self):
        import cupyx.scipy.ndimage

        return cupyx.scipy.ndimage

    @property
    def skimage(self):
        """cuCIM's scikit-image (``cucim.skimage``): the same functions on CuPy arrays."""
        try:
            import cucim.skimage
        except ImportError as exc:
            raise ImportError(
                "this operation needs cuCIM on the GPU (scikit-image's functions for CuPy arrays): install "
                "gpu_tiler[cuda12] or [cuda13], or run it with backend='numpy'"
            ) from exc
        return cucim.skimage

    def release_memory(self) -> None:
        """Return CuPy's pooled device memory (after an out-of-memory error, before retrying smaller)."""
        self._cupy.get_default_memory_pool().free_all_blocks()

    def to_backend(self, array):
        """Bring a chunk onto the current CUDA device (host chunks are copied over)."""
        return self._cupy.asarray(array)

    def to_host(self, array):
        return self._cupy.asnumpy(array)

    def meta(self, dtype, ndim):
        return self._cupy.empty((0,) * ndim, dtype=dtype)

    def device(self, budget=None):
        current = self._cupy.cuda.runtime.getDevice()
        return cuda_devices(budget)[current]

    def __repr__(self):
        return "<gpu_tiler backend 'cupy' (CuPy/cupyx on a CUDA GPU)>"


__all__ = ["CupyBackend"]
