import numpy as np
import pytest

from gpu_tiler._backends import cupy_problem


def _gpu_skip_reason():
    return cupy_problem()


@pytest.fixture
def gpu():
    """Skip unless a CUDA device actually works (importing CuPy is not enough)."""
    reason = _gpu_skip_reason()
    if reason is not None:
        pytest.skip(f"no working CUDA GPU: {reason}")


@pytest.fixture(params=["numpy", "standin", pytest.param("cupy", marks=pytest.mark.gpu)])
def backend_name(request):
    """Run a test body once per backend: NumPy, the strict device stand-in (every machine: the GPU
    code path with arrays that refuse implicit host conversion), and CuPy (skipped, with the reason,
    where no GPU works)."""
    if request.param == "cupy":
        reason = _gpu_skip_reason()
        if reason is not None:
            pytest.skip(f"no working CUDA GPU: {reason}")
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _clean_settings(monkeypatch):
    """Each test starts from default settings and no GPU_TILER_* environment."""
    from gpu_tiler import _config

    for var in ("GPU_TILER_BACKEND", "GPU_TILER_MEMORY_BUDGET", "GPU_TILER_TILES_IN_FLIGHT"):
        monkeypatch.delenv(var, raising=False)
    saved = dict(_config._settings)
    _config._settings.clear()
    yield
    _config._settings.clear()
    _config._settings.update(saved)


@pytest.fixture
def disk_full_after(monkeypatch):
    """``disk_full_after(n)``: zarr chunk writes after the first ``n`` fail as a full disk would;
    ``disk_full_after(None)`` lets writes through again."""
    import zarr.core.array as zarray

    original = zarray.Array.__setitem__

    def arm(n):
        if n is None:
            monkeypatch.setattr(zarray.Array, "__setitem__", original)
            return
        writes = {"n": 0}

        def write(self, key, value):
            writes["n"] += 1
            if writes["n"] > n:
                raise OSError(28, "No space left on device")
            return original(self, key, value)

        monkeypatch.setattr(zarray.Array, "__setitem__", write)

    return arm
