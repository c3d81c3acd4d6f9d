"""Every filter equals SciPy / scikit-image on the whole image, bit for bit on NumPy."""
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.filters
import skimage.morphology

import gpu_tiler as gt
import gpu_tiler.filters as F
from gpu_tiler._backends import get_backend, to_numpy

MODES = ["reflect", "mirror", "nearest", "wrap", "constant"]
DTYPES = [np.uint8, np.uint16, np.float32, np.float64]
# (shape, chunks): uneven, size-1, one chunk, halo larger than chunks; 2-D and 3-D
CHUNKINGS = [
    ((41, 37), (6, 11)),
    ((23, 19), (1, 19)),
    ((30, 28), (30, 28)),
    ((9, 12, 10), (2, 5, 3)),
]


def sample(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    return (rng.random(shape) * 1000).astype(dtype)


def as_backend(x, backend_name):
    """A dask array whose chunks live where the backend computes (device arrays for 'cupy', 'standin')."""
    d = da.from_array(x[0], chunks=x[1])
    if backend_name != "numpy":
        backend = get_backend(backend_name)
        d = d.map_blocks(backend.to_backend, meta=backend.meta(d.dtype, d.ndim))
    return d


def host(result):
    return to_numpy(result.compute())


def reference(backend_name):
    """SciPy on the NumPy backend; the backend's own ndimage on the whole image for the others."""
    return get_backend(backend_name).ndimage


def whole(function, image, backend_name, *args, **kwargs):
    backend = get_backend(backend_name)
    return backend.to_host(getattr(backend.ndimage, function)(backend.to_backend(image), *args, **kwargs))


CASES = {
    "gaussian": (lambda x, m: F.gaussian(x, 1.7, mode=m, cval=3), "gaussian_filter", (1.7,), {}),
    "gaussian_per_axis_order": (
        lambda x, m: F.gaussian(x, (1.0,) + (2.5,) * (x.ndim - 1), order=(0,) + (1,) * (x.ndim - 1), mode=m, cval=3),
        "gaussian_filter", None, {}),
    "uniform": (lambda x, m: F.uniform(x, 4, mode=m, cval=3), "uniform_filter", (4,), {}),
    "median": (lambda x, m: F.median(x, 3, mode=m, cval=3), "median_filter", (3,), {}),
    "minimum": (lambda x, m: F.minimum(x, (3,) * (x.ndim - 1) + (4,), mode=m, cval=3), "minimum_filter", None, {}),
    "maximum": (lambda x, m: F.maximum(x, 5, mode=m, cval=3), "maximum_filter", (5,), {}),
    "white_tophat": (lambda x, m: F.white_tophat(x, 4, mode=m, cval=3), "white_tophat", (4,), {}),
    "black_tophat": (lambda x, m: F.black_tophat(x, 3, mode=m, cval=3), "black_tophat", (3,), {}),
}


def expected_for(name, image, mode, backend_name):
    ndim = image.ndim
    if name == "gaussian_per_axis_order":
        return whole("gaussian_filter", image, backend_name, (1.0,) + (2.5,) * (ndim - 1),
                     order=(0,) + (1,) * (ndim - 1), mode=mode, cval=3)
    if name == "minimum":
        return whole("minimum_filter", image, backend_name, (3,) * (ndim - 1) + (4,), mode=mode, cval=3)
    _, function, args, kwargs = CASES[name]
    return whole(function, image, backend_name, *args, mode=mode, cval=3, **kwargs)


@pytest.mark.parametrize("shape, chunks", CHUNKINGS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(CASES))
def test_filter_equals_the_whole_image(name, mode, shape, chunks, backend_name):
    image = sample(shape, np.float32, seed=len(name))
    result = CASES[name][0](as_backend((image, chunks), backend_name), mode)
    expected = expected_for(name, image, mode, backend_name)
    got = host(result)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_filter_keeps_scipys_output_dtype(name, dtype, backend_name):
    image = sample((33, 29), dtype, seed=3)
    result = CASES[name][0](as_backend((image, (8, 7)), backend_name), "reflect")
    expected = expected_for(name, image, "reflect", backend_name)
    assert result.dtype == expected.dtype
    np.testing.assert_array_equal(host(result), expected)


def test_halo_larger_than_the_chunks_and_the_tile():
    image = sample((40, 45), np.float64)
    out = F.gaussian(da.from_array(image, chunks=(3, 4)), 5.0, mode="mirror", budget="160KiB")
    plan = gt.plan_of(out)
    assert plan.halo == (20, 20) and min(plan.tile_shape) < 20
    np.testing.assert_array_equal(out.compute(), ndi.gaussian_filter(image, 5.0, mode="mirror"))


@pytest.mark.parametrize("ndim", [1, 4])
def test_one_and_four_dimensions(ndim):
    shape = {1: (57,), 4: (5, 6, 7, 4)}[ndim]
    chunks = {1: (5,), 4: (2, 3, 4, 4)}[ndim]
    image = sample(shape, np.float32)
    x = da.from_array(image, chunks=chunks)
    np.testing.assert_array_equal(F.gaussian(x, 1.2, mode="wrap").compute(), ndi.gaussian_filter(image, 1.2, mode="wrap"))
    np.testing.assert_array_equal(F.median(x, 3, mode="nearest").compute(), ndi.median_filter(image, 3, mode="nearest"))


def test_footprints_and_structures():
    image = sample((35, 31), np.uint16)
    x = da.from_array(image, chunks=(9, 10))
    fp = np.array([[0, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 0]], bool)
    np.testing.assert_array_equal(F.median(x, footprint=fp).compute(), ndi.median_filter(image, footprint=fp))
    np.testing.assert_array_equal(F.maximum(x, footprint=fp, mode="constant", cval=7).compute(),
                                  ndi.maximum_filter(image, footprint=fp, mode="constant", cval=7))
    st = np.array([[0, 1, 0], [1, 2, 1], [0, 1, 0]], np.uint16)
    np.testing.assert_array_equal(F.white_tophat(x, structure=st, mode="nearest").compute(),
                                  ndi.white_tophat(image, structure=st, mode="nearest"))


@pytest.mark.parametrize("mode", MODES)
def test_difference_of_gaussians_equals_scikit_image(mode):
    for dtype in (np.uint8, np.float32):
        image = sample((37, 40), dtype)
        got = F.difference_of_gaussians(da.from_array(image, chunks=(6, 9)), 1.0, 2.5, mode=mode, cval=0.25)
        expected = skimage.filters.difference_of_gaussians(image, 1.0, 2.5, mode=mode, cval=0.25)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got.compute(), expected)


@pytest.mark.parametrize("shape, footprint", [((60, 50), skimage.morphology.disk(5)),
                                              ((14, 20, 18), skimage.morphology.ball(3))])
def test_subtract_background_equals_scikit_image_white_tophat(shape, footprint):
    image = sample(shape, np.uint16)
    got = F.subtract_background(da.from_array(image, chunks=[n // 3 for n in shape]), (footprint.shape[0] - 1) // 2)
    np.testing.assert_array_equal(got.compute(), skimage.morphology.white_tophat(image, footprint))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunks", [(7, 9), (1, 50), (40, 50)])
def test_global_otsu_equals_scikit_image(dtype, chunks):
    image = sample((40, 50), dtype, seed=9)
    x = da.from_array(image, chunks=chunks)
    assert F.threshold_otsu(x) == skimage.filters.threshold_otsu(image)
    mask = F.threshold(x, "otsu")
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask.compute(), image > skimage.filters.threshold_otsu(image))


def test_otsu_on_a_flat_image_and_threshold_by_value():
    flat = np.full((8, 8), 5, np.uint8)
    assert F.threshold_otsu(da.from_array(flat, chunks=3)) == skimage.filters.threshold_otsu(flat) == 5
    image = sample((20, 20), np.float32)
    np.testing.assert_array_equal(F.threshold(image, 500.0).compute(), image > 500.0)


@pytest.mark.parametrize("mode", MODES)
def test_fused_chain_equals_sequential(mode):
    image = sample((47, 53), np.float32)
    x = da.from_array(image, chunks=(10, 12))
    fused = F.white_tophat(F.gaussian(F.median(x, 3, mode=mode), 1.5, mode=mode, cval=2), 5, mode=mode, cval=2)
    apart = F.white_tophat(F.gaussian(F.median(x, 3, mode=mode, fuse=False), 1.5, mode=mode, cval=2, fuse=False),
                           5, mode=mode, cval=2, fuse=False)
    expected = ndi.white_tophat(ndi.gaussian_filter(ndi.median_filter(image, 3, mode=mode), 1.5, mode=mode, cval=2),
                                5, mode=mode, cval=2)
    # fused: one pass straight from the source, halo = sum of the three
    assert gt.plan_of(fused).halo == (1 + 6 + 2 * 2,) * 2
    def passes(result):
        return [n for n in result.__dask_graph__().layers if n.startswith("gpu_tiler-") and "window" not in n]

    assert len(passes(fused)) == 1 and len(passes(apart)) == 3
    np.testing.assert_array_equal(fused.compute(), expected)
    np.testing.assert_array_equal(apart.compute(), expected)


def test_a_dropped_result_does_not_keep_its_input_alive():
    import gc

    from gpu_tiler._registry import _records as records

    image = sample((40, 40), np.float32)
    smoothed = F.gaussian(F.median(image, 3), 1.0)  # the temporary median result is fused, then dropped
    name = smoothed.name
    assert records[name].chain is not None and gt.plan_of(smoothed).halo == (1 + 4,) * 2
    again = F.gaussian(F.median(image, 3), 1.0)  # an equal call: the same name, another array
    del smoothed
    gc.collect()
    assert records[name].chain is not None and gt.plan_of(F.maximum(again, 3)).halo == (1 + 4 + 1,) * 2  # still fuses
    del again
    gc.collect()
    assert name not in records  # nor, with it, the input's graph and the image data in it


def test_wrap_after_another_mode_is_not_fused_and_still_exact():
    image = sample((30, 33), np.float64)
    x = da.from_array(image, chunks=(8, 8))
    chain = F.gaussian(F.maximum(x, 3, mode="nearest"), 2.0, mode="wrap")
    assert gt.plan_of(chain).halo == (8, 8)  # the gaussian alone: not fused onto the maximum
    expected = ndi.gaussian_filter(ndi.maximum_filter(image, 3, mode="nearest"), 2.0, mode="wrap")
    np.testing.assert_array_equal(chain.compute(), expected)
    both_wrap = F.gaussian(F.maximum(x, 3, mode="wrap"), 2.0, mode="wrap")
    assert gt.plan_of(both_wrap).halo == (9, 9)
    np.testing.assert_array_equal(both_wrap.compute(),
                                  ndi.gaussian_filter(ndi.maximum_filter(image, 3, mode="wrap"), 2.0, mode="wrap"))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: F.gaussian(x, -1), "sigma"),
        (lambda x: F.gaussian(x, (1, 2, 3)), "sigma=.*3 values.*2 axes"),
        (lambda x: F.gaussian(x, 1, mode="periodic"), "'periodic' is not a boundary mode"),
        (lambda x: F.gaussian(x, 1, truncate=-1), "truncate"),  # 0 is radius 0, as in SciPy
        (lambda x: F.gaussian(x, 1, order=-1), "order"),
        (lambda x: F.uniform(x, -1), "size"),  # 0 leaves the image as it is, as in SciPy
        (lambda x: F.median(x), "size= .* or footprint="),
        (lambda x: F.median(x, (3, 3, 3)), "size"),
        (lambda x: F.median(x, 3, mode=["wrap", "reflect"]), "one boundary mode"),
        (lambda x: F.minimum(x, footprint=np.ones((3, 3, 3))), "footprint has 3 axes"),
        (lambda x: F.maximum(x, 2.5), "size"),
        (lambda x: F.subtract_background(x, 0), "radius"),
        (lambda x: F.difference_of_gaussians(x, 2, 1), "sigma_high"),
        (lambda x: F.threshold(x, "magic"), "'magic' is not a method"),
        (lambda x: F.threshold_otsu(x, nbins=0), "nbins"),
        (lambda x: F.gaussian(x.astype(np.complex64), 1), "complex"),
    ],
)
def test_bad_parameters_are_refused_when_called(call, match):
    with pytest.raises(ValueError, match=match):
        call(da.zeros((10, 10), chunks=5))
