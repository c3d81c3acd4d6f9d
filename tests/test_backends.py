import dask.array as da
import numpy as np
import pytest

import gpu_tiler as gt
from gpu_tiler._backends import NUMPY, cupy_problem, namespace_of


def test_auto_picks_numpy_without_a_working_gpu():
    if cupy_problem() is None:
        pytest.skip("a CUDA GPU works here; auto picks CuPy")
    x = da.zeros((4, 4), chunks=2)
    assert gt.resolve_backend(x) is NUMPY
    assert gt.resolve_backend() is NUMPY


def test_asking_for_cupy_without_a_gpu_is_a_clear_error():
    if cupy_problem() is None:
        pytest.skip("a CUDA GPU works here")
    with pytest.raises(RuntimeError, match="backend 'cupy' was asked for"):
        gt.get_backend("cupy")
    with gt.config(backend="cupy"), pytest.raises(RuntimeError, match="backend='numpy'"):
        gt.map_tiles(lambda t: t, np.zeros((4, 4)))


def test_forced_backend_wins_over_chunk_type(monkeypatch):
    monkeypatch.setenv("GPU_TILER_BACKEND", "numpy")
    assert gt.resolve_backend(da.zeros(3, chunks=1)) is NUMPY
    assert gt.resolve_backend(backend="numpy") is NUMPY
    with pytest.raises(ValueError, match="'metal'"):
        gt.resolve_backend(backend="metal")


def test_chunk_type_dispatch_and_namespaces():
    assert gt.backend_of(np.zeros(3)) is NUMPY
    assert gt.backend_of(np.zeros(3)).ndimage.__name__ == "scipy.ndimage"
    assert namespace_of(np.zeros(2)) is np
    assert NUMPY.to_backend(np.ones(2)).sum() == 2


def test_cupy_backend_moves_host_chunks_and_back(gpu):
    import cupy

    backend = gt.get_backend("cupy")
    moved = backend.to_backend(np.arange(5))
    assert isinstance(moved, cupy.ndarray)
    assert np.array_equal(backend.to_host(moved), np.arange(5))
    assert backend.device().kind == "cuda"
    assert any(d.kind == "cuda" for d in gt.devices())
