import numpy as np
import pytest

from gpu_tiler.data import nuclei


@pytest.mark.parametrize("shape, chunks_a, chunks_b", [((300, 200), 64, (37, 200)), ((20, 30, 40), 7, (20, 11, 40))])
def test_nuclei_are_the_same_for_every_chunking(shape, chunks_a, chunks_b):
    a = nuclei(shape, chunks=chunks_a, radius=6).compute()
    b = nuclei(shape, chunks=chunks_b, radius=6).compute()
    np.testing.assert_array_equal(a, b)
    assert a.shape == shape and a.dtype == np.float32
    assert 0.001 < (a > 0.5).mean() < 0.6  # there are nuclei, and background


def test_nuclei_integer_dtype_and_seed():
    a = nuclei((64, 64), chunks=32, dtype=np.uint16, seed=1).compute()
    b = nuclei((64, 64), chunks=32, dtype=np.uint16, seed=2).compute()
    assert a.dtype == np.uint16 and a.max() > 500
    assert not np.array_equal(a, b)
