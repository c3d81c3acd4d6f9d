"""Property-based tests: tiled equals whole image on shapes and chunkings nobody thought of.

`make test` runs a few hundred examples (profile "ci"); `make fuzz` runs thousands (profile "fuzz").
"""
import os

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

pytest.importorskip("hypothesis", reason="hypothesis is not installed (gpu_tiler[test])")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import gpu_tiler as gt
import gpu_tiler.filters as F

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

MODES = ["reflect", "mirror", "nearest", "wrap", "constant"]
DTYPES = [np.uint8, np.uint16, np.float32, np.float64]


@st.composite
def images(draw, max_ndim=4, max_side=11):
    ndim = draw(st.integers(1, max_ndim))
    shape = tuple(draw(st.integers(1, max_side)) for _ in range(ndim))
    chunks = []
    for n in shape:
        cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=3))) if n > 1 else []
        edges = [0, *cuts, n]
        chunks.append(tuple(b - a for a, b in zip(edges[:-1], edges[1:])))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        data = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    else:
        data = (rng.standard_normal(shape) * 100).astype(dtype)
    return data, tuple(chunks)


budgets = st.sampled_from([None, "4KiB", "16KiB", "64KiB"])


def planned(build):
    """Build a lazy result; a budget too small for the halo is not what is being tested."""
    try:
        return build()
    except ValueError as exc:
        if "raise memory_budget" in str(exc):
            assume(False)
        raise


# small sides: a tiny budget in 4-D gives thousands of 1-voxel tiles, which is right but slow to test
@given(images(max_side=8), st.sampled_from(MODES), st.floats(0.0, 2.5), st.integers(-5, 5), budgets)
def test_gaussian_tiled_equals_whole(sample, mode, sigma, cval, budget):
    data, chunks = sample
    out = planned(lambda: F.gaussian(da.from_array(data, chunks=chunks), sigma, mode=mode, cval=cval, budget=budget))
    np.testing.assert_array_equal(out.compute(), ndi.gaussian_filter(data, sigma, mode=mode, cval=cval))


@given(images(max_ndim=3), st.sampled_from(MODES), st.integers(1, 5),
       st.sampled_from(["median", "minimum", "maximum", "white_tophat", "black_tophat", "uniform"]), budgets)
def test_size_filters_tiled_equal_whole(sample, mode, size, name, budget):
    data, chunks = sample
    x = da.from_array(data, chunks=chunks)
    scipy_name = {"median": "median_filter", "minimum": "minimum_filter", "maximum": "maximum_filter",
                  "uniform": "uniform_filter"}.get(name, name)
    out = planned(lambda: getattr(F, name)(x, size, mode=mode, cval=7, budget=budget))
    np.testing.assert_array_equal(out.compute(), getattr(ndi, scipy_name)(data, size, mode=mode, cval=7))


@given(images(max_ndim=3), st.sampled_from(MODES), st.sampled_from(MODES), st.floats(0.3, 2.0), st.integers(1, 4),
       budgets)
def test_chains_tiled_equal_sequential(sample, mode_a, mode_b, sigma, size, budget):
    data, chunks = sample
    x = da.from_array(data, chunks=chunks)
    out = planned(lambda: F.gaussian(F.maximum(x, size, mode=mode_a, budget=budget), sigma, mode=mode_b, cval=1,
                                     budget=budget))
    expected = ndi.gaussian_filter(ndi.maximum_filter(data, size, mode=mode_a), sigma, mode=mode_b, cval=1)
    np.testing.assert_array_equal(out.compute(), expected)


@given(images(max_ndim=3, max_side=9), st.sampled_from(MODES), st.data())
def test_map_tiles_with_any_tile_shape(sample, mode, data):
    image, chunks = sample
    tile_shape = tuple(data.draw(st.integers(1, n)) for n in image.shape)
    halo = data.draw(st.integers(0, 4))
    size = 2 * halo + 1
    out = gt.map_tiles(lambda t: ndi.maximum_filter(t, size, mode=mode, cval=3), da.from_array(image, chunks=chunks),
                       halo=halo, mode=mode, cval=3, tile_shape=tile_shape)
    np.testing.assert_array_equal(out.compute(), ndi.maximum_filter(image, size, mode=mode, cval=3))


@pytest.mark.filterwarnings("ignore:threshold_otsu is expected")
@given(sample=images(max_ndim=3))
def test_global_otsu_equals_scikit_image(sample):
    import skimage.filters

    data, chunks = sample
    assume(data.size > 1)
    assert F.threshold_otsu(da.from_array(data, chunks=chunks)) == skimage.filters.threshold_otsu(data)


@given(images(max_ndim=4, max_side=12), st.data())
def test_label_tiled_equals_whole(sample, data):
    import scipy.ndimage as ndi_

    image, chunks = sample
    mask = image > np.median(image) if image.size else image.astype(bool)
    connectivity = data.draw(st.integers(1, image.ndim))
    structure = ndi_.generate_binary_structure(image.ndim, connectivity)
    labels, n = gt.label(da.from_array(mask, chunks=chunks), connectivity=connectivity, tile_shape="chunks")
    expected, count = ndi_.label(mask, structure)
    assert n == count
    np.testing.assert_array_equal(labels.compute(), expected)
