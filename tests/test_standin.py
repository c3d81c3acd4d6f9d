"""The device stand-in itself: as strict as CuPy about the host/device border, honest in its counts."""
import gc

import numpy as np
import pytest
import scipy.ndimage as ndi

import gpu_tiler as gt
from gpu_tiler._backends import (
    chunk_backend,
    get_backend,
    namespace_of,
    to_numpy,
)
from gpu_tiler.testing import (
    STANDIN,
    DeviceArray,
    OutOfMemoryError,
    standin_device,
)


@pytest.fixture
def image():
    return np.random.default_rng(2).random((40, 30)).astype(np.float32)


def test_implicit_conversion_to_numpy_raises_as_cupy_does(image):
    device = STANDIN.to_backend(image)
    for convert in (np.asarray, np.array, lambda a: np.add(a, image), lambda a: a + image,
                    lambda a: np.concatenate([a, image]), lambda a: STANDIN.xp.concatenate([a, image])):
        with pytest.raises(TypeError, match="Implicit conversion|Unsupported type"):
            convert(device)
    assert not hasattr(device, "__array_interface__") and not hasattr(device, "__array_struct__")


def test_results_equal_numpy_bit_for_bit_and_stay_on_the_device(image):
    xp, device = STANDIN.xp, STANDIN.to_backend(image)
    smoothed = STANDIN.ndimage.gaussian_filter(device, 1.5)
    assert isinstance(smoothed, DeviceArray) and isinstance(device.sum(), DeviceArray)  # 0-d, as CuPy gives
    np.testing.assert_array_equal(STANDIN.to_host(smoothed), ndi.gaussian_filter(image, 1.5))
    labels, n = STANDIN.ndimage.label(device > 0.5)
    assert isinstance(labels, DeviceArray) and n == ndi.label(image > 0.5)[1]
    np.testing.assert_array_equal(to_numpy(xp.cumsum(device * 2, axis=0)), np.cumsum(image * 2, axis=0))
    np.testing.assert_array_equal(to_numpy(STANDIN.skimage.util.img_as_float(device)), image)


def test_the_backend_of_a_chunk_is_found_from_its_type(image):
    assert chunk_backend(STANDIN.to_backend(image)) is STANDIN and namespace_of(STANDIN.to_backend(image)) is STANDIN.xp
    assert chunk_backend(image).name == "numpy" and chunk_backend(1.0).name == "numpy"
    assert get_backend("standin") is STANDIN and gt.backend_of(STANDIN.meta(np.float32, 2)) is STANDIN


def test_transfers_are_counted_in_calls_and_bytes(image):
    with standin_device() as ledger:
        device = STANDIN.to_backend(image)
        device[:2] = image[:2]  # a host array assigned into a device array is copied over
        back = device.get()
        assert (ledger.h2d_calls, ledger.h2d_bytes) == (2, image.nbytes + image[:2].nbytes)
        assert (ledger.d2h_calls, ledger.d2h_bytes) == (1, image.nbytes)
        np.testing.assert_array_equal(back, image)


def test_the_ledger_counts_live_buffers_views_once_and_frees_dropped_ones(image):
    with standin_device() as ledger:
        start = ledger.live_bytes
        device = STANDIN.to_backend(image)
        view = device[5:10]
        assert ledger.live_bytes - start == image.nbytes  # a view shares its base's buffer
        copy = device * 2
        assert ledger.live_bytes - start == 2 * image.nbytes and ledger.peak_bytes - start >= 2 * image.nbytes
        del device, copy
        gc.collect()
        assert ledger.live_bytes - start == image.nbytes  # the view still holds the first buffer
        del view
        gc.collect()
        assert ledger.live_bytes == start


def test_a_device_limit_raises_out_of_memory_like_cupy(image):
    with standin_device(limit_bytes=image.nbytes * 2) as ledger:
        device = STANDIN.to_backend(image)
        with pytest.raises(OutOfMemoryError, match="Out of memory allocating") as caught:
            (device + 1) * (device + 2)
        assert isinstance(caught.value, MemoryError)
        assert ledger.live_bytes <= image.nbytes * 2


def heavy_gaussian(tile):
    """A Gaussian with three working copies of its window on the device (as many GPU filters need)."""
    work = [tile * k for k in (1, 2, 3)]
    assert all(w.shape == tile.shape for w in work)
    return gt.backend_of(tile).ndimage.gaussian_filter(tile, 2.0)


def test_an_out_of_memory_tile_is_split_and_retried_with_the_same_result():
    big = np.random.default_rng(3).random((96, 96)).astype(np.float32)
    smooth = gt.map_tiles(heavy_gaussian, big, halo=8, backend="standin", tile_shape=(96, 96), tiles_in_flight=1)
    window = (96 + 16) ** 2 * 4
    limit = int(window * 4.8)  # the whole window needs 5 (itself, 3 copies, the result); halves fit
    with standin_device(limit_bytes=limit) as ledger:
        with pytest.warns(ResourceWarning, match="ran out of memory"):
            got = smooth.compute(scheduler="synchronous")
        assert ledger.peak_bytes <= limit
    np.testing.assert_array_equal(got, ndi.gaussian_filter(big, 2.0))


def test_the_device_reports_its_size_and_budget():
    with standin_device(total_bytes=2**30):
        device = STANDIN.device("256MiB")
        assert device.kind == "standin" and device.total_bytes == 2**30 and device.budget_bytes == 2**28
