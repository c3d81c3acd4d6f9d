"""map_tiles against the whole-image result: every mode, awkward chunkings, 1-D to 4-D."""
from functools import partial

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

import gpu_tiler as gt
from gpu_tiler._planning.halo import MODES, source_indices

SCIPY_MODES = ["reflect", "mirror", "nearest", "wrap", "constant"]


def smooth(tile, sigma, mode, cval=0.0):
    return gt.backend_of(tile).ndimage.gaussian_filter(tile, sigma, mode=mode, cval=cval)


def halo_of(sigma):
    return int(4.0 * sigma + 0.5)  # scipy's gaussian radius for truncate=4


@pytest.mark.parametrize("mode", SCIPY_MODES)
@pytest.mark.parametrize(
    "shape, chunks, tile_shape, sigma",
    [
        ((37, 53), (5, 7), (4, 9), 3.0),  # uneven chunks, halo (12) larger than chunks and tiles
        ((64, 64), (64, 64), (1, 64), 1.0),  # single-row tiles
        ((9, 11, 13), (2, 5, 3), (3, 3, 4), 1.5),  # 3-D
        ((200,), (1,), (7,), 2.0),  # 1-D, size-1 chunks
        ((6, 5, 7, 4), (2, 3, 3, 2), (3, 2, 4, 4), 1.0),  # 4-D
        ((5, 40), (5, 8), (5, 6), 4.0),  # halo (16) larger than the whole first axis
    ],
)
def test_map_tiles_equals_the_whole_image_for_every_mode(shape, chunks, tile_shape, sigma, mode, backend_name):
    image = np.random.default_rng(7).random(shape).astype(np.float32)
    expected = ndi.gaussian_filter(image, sigma, mode=mode, cval=0.25)
    func = partial(smooth, sigma=sigma, mode=mode, cval=0.25)
    out = gt.map_tiles(
        func, da.from_array(image, chunks=chunks), halo=halo_of(sigma), mode=mode, cval=0.25,
        tile_shape=tile_shape, backend=backend_name,
    )
    assert isinstance(out, da.Array)
    assert out.dtype == image.dtype
    assert out.chunks == gt.plan_of(out).chunks
    np.testing.assert_array_equal(out.compute(), expected)


def test_planned_tiles_from_a_budget_equal_the_whole_image():
    # integers: uniform_filter's running sums are exact, so any tiling gives the same bits
    image = np.random.default_rng(0).integers(0, 60000, (300, 257)).astype(np.uint16)
    out = gt.map_tiles(ndi.uniform_filter, image, halo=3, budget="128KiB", tiles_in_flight=2, size=7)
    plan = gt.plan_of(out)
    assert plan.n_tiles > 4 and plan.peak_bytes <= 128 * 2**10
    np.testing.assert_array_equal(out.compute(), ndi.uniform_filter(image, 7))


def test_per_axis_halo_and_modes():
    image = np.random.default_rng(1).random((30, 40)).astype(np.float32)
    expected = ndi.uniform_filter(image, size=(1, 9), mode=["wrap", "mirror"])
    out = gt.map_tiles(
        partial(ndi.uniform_filter, size=(1, 9), mode=["wrap", "mirror"]),
        da.from_array(image, chunks=(7, 6)), halo=(0, 4), mode=("wrap", "mirror"), tile_shape=(8, 5),
    )
    np.testing.assert_array_equal(out.compute(), expected)


def test_several_inputs_reach_the_function_tile_by_tile():
    rng = np.random.default_rng(2)
    a, b = rng.random((50, 60)), rng.random((50, 60))

    def blend(x, y):
        return ndi.maximum_filter(x, 3, mode="nearest") - ndi.minimum_filter(y, 5, mode="nearest")

    out = gt.map_tiles(blend, da.from_array(a, chunks=11), da.from_array(b, chunks=(50, 7)), halo=2,
                       mode="nearest", tile_shape=(13, 17))
    expected = ndi.maximum_filter(a, 3, mode="nearest") - ndi.minimum_filter(b, 5, mode="nearest")
    np.testing.assert_array_equal(out.compute(), expected)


def test_function_is_never_called_on_dummy_data_and_result_is_lazy():
    calls = []

    def record(tile):
        assert tile.size > 0, "called on dummy data"
        calls.append(tile.shape)
        return tile + 1

    out = gt.map_tiles(record, np.zeros((20, 20), np.int16), halo=1, tile_shape=(10, 10))
    assert calls == []
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out.compute(), np.ones((20, 20), np.int16))
    assert sorted(calls) == [(12, 12)] * 4


def test_dtype_change_must_be_declared():
    image = np.arange(24, dtype=np.uint8).reshape(4, 6)
    with pytest.raises(TypeError, match="pass dtype='float64'"):
        gt.map_tiles(lambda t: t / 2, image).compute()
    out = gt.map_tiles(lambda t: t / 2, image, dtype="float64")
    np.testing.assert_array_equal(out.compute(), image / 2)
    cast = gt.map_tiles(lambda t: t * 2.0, image, dtype=np.uint8)
    assert cast.dtype == np.uint8 and cast.compute().max() == 46


def test_shape_changing_function_is_a_clear_error():
    with pytest.raises(ValueError, match="keep the shape"):
        gt.map_tiles(lambda t: t[1:], np.zeros((8, 8))).compute()


def test_mismatched_inputs_and_bad_mode_are_refused():
    with pytest.raises(ValueError, match="share one shape"):
        gt.map_tiles(np.add, np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="'periodic' is not a boundary mode"):
        gt.map_tiles(np.negative, np.zeros((3, 3)), halo=1, mode="periodic")
    with pytest.raises(ValueError, match="gives 1 modes"):
        gt.map_tiles(np.negative, np.zeros((3, 3)), halo=1, mode=["wrap"])
    with pytest.raises(TypeError, match="function first"):
        gt.map_tiles(np.zeros(3), np.zeros(3))


def test_empty_image_gives_an_empty_result():
    out = gt.map_tiles(np.negative, np.zeros((0, 5)), halo=2)
    assert out.shape == (0, 5) and out.compute().shape == (0, 5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("length, halo", [(1, 3), (2, 5), (5, 2), (5, 12)])
def test_source_indices_extend_a_line_as_scipy_does(mode, length, halo):
    line = np.arange(1.0, length + 1.0)
    idx = source_indices(length, halo, mode)
    extended = np.where(idx >= 0, line[np.maximum(idx, 0)], -7.0)
    for shift in range(2 * halo + 1):
        weights = np.zeros(2 * halo + 1)
        weights[shift] = 1.0
        got = ndi.correlate1d(line, weights, mode=mode, cval=-7.0)
        np.testing.assert_array_equal(got, extended[shift : shift + length])


def test_a_cval_the_tiles_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="cval=-1 cannot be stored in uint8"):
        gt.map_tiles(np.negative, np.zeros((4, 4), np.uint8), halo=1, mode="constant", cval=-1)
    with pytest.raises(ValueError, match="cval=0.5"):
        gt.map_tiles(np.negative, np.zeros((4, 4), np.int16), halo=1, mode="constant", cval=0.5)
    gt.map_tiles(np.negative, np.zeros((4, 4), np.uint8), halo=1, mode="reflect", cval=-1)  # unused: fine
