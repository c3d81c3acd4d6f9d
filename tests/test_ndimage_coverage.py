"""The rest of scipy.ndimage, tiled: every function equals SciPy on the whole image, bit for bit
(finite data), for every boundary mode, 1-D to 4-D, awkward chunkings (uneven, size 1, halo larger
than a chunk), on every backend; SciPy's argument conventions, exception types and ``output=``."""
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.filters
import zarr

import gpu_tiler as gt
import gpu_tiler.filters as F
from gpu_tiler._backends import get_backend, to_numpy

MODES = ["reflect", "mirror", "nearest", "wrap", "constant"]
# (shape, chunks): uneven 2-D, size-1 chunks, a 3-D volume with chunks smaller than the halos, 1-D, 4-D
CHUNKINGS = {
    "2d-uneven": ((23, 19), (6, 11)),
    "2d-size1": ((9, 13), (1, 13)),
    "3d-small-chunks": ((7, 9, 8), (2, 3, 2)),
}
EXTRA = {"1d": ((29,), (4,)), "4d": ((4, 5, 6, 5), (2, 3, 4, 2))}

FP = {2: np.array([[0, 1, 1], [1, 1, 0]], bool), 3: np.ones((2, 1, 3), bool)}
W = {1: np.array([1.0, -2.0, 0.5, 3.0]), 2: np.array([[1.0, 2.0, -1.0], [0.5, -3.0, 1.0]]),
     3: np.arange(12, dtype=float).reshape(2, 3, 2) - 5, 4: np.ones((2, 1, 2, 3)) / 7}


def _fp(ndim):
    return FP.get(ndim, np.ones((2,) * ndim, bool))


def _st(ndim):
    return np.arange(3 ** ndim).reshape((3,) * ndim) % 3


# name -> (gpu_tiler call, SciPy call); each takes (module, image, mode) — the module is F or the
# backend's ndimage, so one description gives both sides
CASES = {
    "correlate": lambda m, x, mode: m.correlate(x, W[x.ndim], mode=mode, cval=2.5, origin=(0,) * (x.ndim - 1) + (-1,)),
    "convolve": lambda m, x, mode: m.convolve(x, W[x.ndim], mode=mode, cval=2.5, origin=(-1,) + (0,) * (x.ndim - 1)),
    "correlate1d": lambda m, x, mode: m.correlate1d(x, W[1], axis=0, mode=mode, cval=2.5, origin=1),
    "convolve1d": lambda m, x, mode: m.convolve1d(x, W[1], mode=mode, cval=2.5),
    "gaussian_filter1d": lambda m, x, mode: m.gaussian_filter1d(x, 1.3, axis=0, order=1, mode=mode, cval=2.5),
    "uniform_filter1d": lambda m, x, mode: m.uniform_filter1d(x, 4, axis=-1, mode=mode, cval=2.5, origin=-1),
    "minimum_filter1d": lambda m, x, mode: m.minimum_filter1d(x, 4, axis=0, mode=mode, cval=2.5, origin=1),
    "maximum_filter1d": lambda m, x, mode: m.maximum_filter1d(x, 3, mode=mode, cval=2.5),
    "sobel": lambda m, x, mode: m.sobel(x, axis=0, mode=mode, cval=2.5),
    "prewitt": lambda m, x, mode: m.prewitt(x, mode=mode, cval=2.5),
    "laplace": lambda m, x, mode: m.laplace(x, mode=mode, cval=2.5),
    "gaussian_laplace": lambda m, x, mode: m.gaussian_laplace(x, 1.2, mode=mode, cval=2.5),
    "gaussian_gradient_magnitude": lambda m, x, mode: m.gaussian_gradient_magnitude(x, 0.9, mode=mode, cval=2.5),
    "rank_filter": lambda m, x, mode: m.rank_filter(x, -2, 3, mode=mode, cval=2.5),
    "percentile_filter": lambda m, x, mode: m.percentile_filter(x, 30, footprint=_fp(x.ndim), mode=mode, cval=2.5),
    "generic_filter": lambda m, x, mode: m.generic_filter(x, np.ptp, footprint=_fp(x.ndim), mode=mode, cval=2.5),
    "grey_erosion": lambda m, x, mode: m.grey_erosion(x, footprint=_fp(x.ndim), mode=mode, cval=2.5,
                                                     origin=(0,) * (x.ndim - 1) + (-1,)),
    "grey_dilation": lambda m, x, mode: m.grey_dilation(x, size=2, mode=mode, cval=2.5),
    "grey_opening": lambda m, x, mode: m.grey_opening(x, structure=_st(x.ndim), mode=mode, cval=2.5),
    "grey_closing": lambda m, x, mode: m.grey_closing(x, size=3, mode=mode, cval=2.5),
    "median_origin": lambda m, x, mode: getattr(m, "median" if m is F else "median_filter")(x, 3, mode=mode, origin=1),
}
SCIPY_ON_BACKEND = ("generic_filter",)  # a Python function runs on host data: the stand-in passes it through


def as_backend(image, chunks, backend_name):
    d = da.from_array(image, chunks=chunks)
    if backend_name != "numpy":
        backend = get_backend(backend_name)
        d = d.map_blocks(backend.to_backend, meta=backend.meta(d.dtype, d.ndim))
    return d


def scipy_on(backend_name, call, image, mode):
    backend = get_backend(backend_name)
    return backend.to_host(call(backend.ndimage, backend.to_backend(image), mode))


def sample(shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 200, shape).astype(dtype)
    return (rng.standard_normal(shape) * 50).astype(dtype)


def check(call, image, chunks, mode, backend_name):
    got = to_numpy(call(F, as_backend(image, chunks, backend_name), mode).compute())
    expected = scipy_on(backend_name, call, image, mode)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("where", list(CHUNKINGS))
@pytest.mark.parametrize("name", list(CASES))
def test_every_function_equals_scipy_in_every_mode(name, where, backend_name):
    shape, chunks = CHUNKINGS[where]
    image = sample(shape, seed=len(name))
    for mode in MODES:
        check(CASES[name], image, chunks, mode, backend_name)


@pytest.mark.parametrize("where", list(EXTRA))
@pytest.mark.parametrize("name", list(CASES))
def test_one_and_four_dimensions(name, where):
    shape, chunks = EXTRA[where]
    image = sample(shape, seed=3)
    for mode in ("mirror", "constant"):
        check(CASES[name], image, chunks, mode, "numpy")


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float64])
def test_output_dtypes_follow_scipy(dtype):
    image = sample((17, 15), dtype)
    x = da.from_array(image, chunks=(5, 4))
    for name in ("sobel", "laplace", "correlate", "grey_closing", "rank_filter", "gaussian_laplace"):
        got = CASES[name](F, x, "reflect")
        expected = CASES[name](ndi, image, "reflect")
        assert got.dtype == expected.dtype, name
        np.testing.assert_array_equal(got.compute(), expected)
    np.testing.assert_array_equal(F.sobel(x, output=np.float32).compute(), ndi.sobel(image, output=np.float32))
    np.testing.assert_array_equal(F.gaussian(x, 1.5, output="float32").compute(),
                                  ndi.gaussian_filter(image, 1.5, output="float32"))
    np.testing.assert_array_equal(F.uniform(x, 3, output=np.float64).compute(),
                                  ndi.uniform_filter(image, 3, output=np.float64))
    np.testing.assert_array_equal(F.white_tophat(x, 3, output=np.float32).compute(),
                                  ndi.white_tophat(image, 3, output=np.float32))


def test_output_arrays_and_zarr_targets(tmp_path, backend_name):
    image = sample((20, 18))
    expected = ndi.gaussian_laplace(image, 1.0)
    target = np.zeros(image.shape, np.float32)
    assert F.gaussian_laplace(as_backend(image, (7, 5), backend_name), 1.0, output=target) is target
    np.testing.assert_array_equal(target, expected)
    z = zarr.open_array(tmp_path / "out.zarr", mode="w", shape=image.shape, chunks=(6, 6), dtype=np.float64)
    assert F.median(da.from_array(image, chunks=(7, 5)), 3, output=z) is z
    np.testing.assert_array_equal(z[...], ndi.median_filter(image, 3, output=np.float64))
    with pytest.raises(RuntimeError, match="shape"):
        F.sobel(image, output=np.zeros((3, 3), np.float32))


@pytest.mark.parametrize("mode", ["reflect", "wrap", "constant"])
def test_axes_and_origins(mode):
    image = sample((11, 9, 10))
    x = da.from_array(image, chunks=(3, 4, 5))
    cases = [
        (lambda m: (m.gaussian if m is F else m.gaussian_filter)(image_of(m, x, image), (1.0, 2.0), mode=mode,
                                                                 axes=(2, 0))),
        (lambda m: (m.uniform if m is F else m.uniform_filter)(image_of(m, x, image), (3, 4), mode=mode, origin=(1, -1),
                                                               axes=(1, 2))),
        (lambda m: (m.maximum if m is F else m.maximum_filter)(image_of(m, x, image), footprint=_fp(2), mode=mode,
                                                               origin=(0, 1), axes=(0, 2))),
        (lambda m: (m.median if m is F else m.median_filter)(image_of(m, x, image), 3, mode=mode, axes=(-1,))),
        (lambda m: m.gaussian_laplace(image_of(m, x, image), 1.0, mode=mode, axes=(0, 1))),
        (lambda m: m.laplace(image_of(m, x, image), mode=mode, axes=(2,))),
        (lambda m: m.correlate(image_of(m, x, image), W[2], mode=mode, axes=(0, 2), origin=(-1, 1))),
        (lambda m: m.white_tophat(image_of(m, x, image), 3, mode=mode, axes=(1, 2), origin=(1, 0))),
    ]
    for case in cases:
        got, expected = case(F).compute(), case(ndi)
        np.testing.assert_array_equal(got, expected)


def image_of(module, x, image):
    return x if module is F else image


BINARY = {
    "binary_erosion": lambda m, x, **k: m.binary_erosion(x, **k),
    "binary_dilation": lambda m, x, **k: m.binary_dilation(x, **k),
    "binary_opening": lambda m, x, **k: m.binary_opening(x, **k),
    "binary_closing": lambda m, x, **k: m.binary_closing(x, **k),
}


def binary_sample(shape, seed=0):
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 1.0) > 0.5


@pytest.mark.parametrize("where", list(CHUNKINGS))
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_morphology_equals_scipy(name, where, backend_name):
    shape, chunks = CHUNKINGS[where]
    image = binary_sample(shape, seed=len(name))
    ndim = image.ndim
    structure = ndi.generate_binary_structure(ndim, ndim)
    mask = binary_sample(shape, seed=5)
    for kwargs in ({}, {"iterations": 3, "border_value": 1}, {"structure": structure, "origin": 1},
                   {"iterations": 2, "mask": mask}, {"iterations": -1}):
        got = BINARY[name](F, as_backend(image, chunks, backend_name), **kwargs)
        backend = get_backend(backend_name)
        if "mask" in kwargs:
            kwargs = dict(kwargs, mask=backend.to_backend(mask))
        expected = backend.to_host(BINARY[name](backend.ndimage, backend.to_backend(image), **kwargs))
        assert got.dtype == bool
        np.testing.assert_array_equal(to_numpy(got.compute()), expected, err_msg=str(kwargs))


@pytest.mark.parametrize("where", list(CHUNKINGS) + list(EXTRA))
def test_fill_holes_equals_scipy(where, backend_name):
    shape, chunks = {**CHUNKINGS, **EXTRA}[where]
    image = ~binary_sample(shape, seed=1)
    backend = get_backend(backend_name)
    ndim = image.ndim
    for structure in (None, ndi.generate_binary_structure(ndim, ndim), np.ones((1,) * (ndim - 1) + (3,), bool),
                      np.ones((2,) * ndim, bool)):  # the last: not symmetric, SciPy's own iteration
        got = to_numpy(F.binary_fill_holes(as_backend(image, chunks, backend_name), structure).compute())
        expected = backend.to_host(backend.ndimage.binary_fill_holes(backend.to_backend(image), structure))
        np.testing.assert_array_equal(got, expected)


def test_fused_chains_of_new_filters_are_one_pass_and_exact():
    image = sample((31, 29))
    x = da.from_array(image, chunks=(8, 7))
    chain = F.grey_closing(F.gaussian_laplace(F.sobel(x, mode="nearest"), 1.0, mode="nearest"), 3, mode="nearest")
    expected = ndi.grey_closing(ndi.gaussian_laplace(ndi.sobel(image, mode="nearest"), 1.0, mode="nearest"), 3,
                                mode="nearest")
    assert gt.plan_of(chain).halo == (1 + 4 + 2, 1 + 4 + 2)
    np.testing.assert_array_equal(chain.compute(), expected)
    opened = F.binary_opening(x > 0, iterations=2)
    assert gt.plan_of(opened).halo == (4, 4)
    np.testing.assert_array_equal(opened.compute(), ndi.binary_opening(image > 0, iterations=2))


@pytest.mark.parametrize("method", ["gaussian", "mean", "median", "generic"])
def test_threshold_local_equals_scikit_image(method, backend_name):
    for dtype in (np.uint8, np.float32):
        image = sample((26, 21), dtype, seed=2)
        param = np.mean if method == "generic" else None
        got = F.threshold_local(as_backend(image, (7, 6), backend_name), 5, method, offset=3, param=param,
                                mode="nearest")
        if backend_name == "numpy":
            expected = skimage.filters.threshold_local(image, 5, method, offset=3, param=param, mode="nearest")
        else:
            expected = to_numpy(F.threshold_local(image, 5, method, offset=3, param=param, mode="nearest").compute())
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(to_numpy(got.compute()), expected)


# ---- SciPy's value conventions, one test per convention -------------------------------------------


def test_truncate_zero_is_radius_zero():
    image = sample((12, 10))
    x = da.from_array(image, chunks=5)
    np.testing.assert_array_equal(F.gaussian(x, 2.0, truncate=0).compute(), ndi.gaussian_filter(image, 2.0, truncate=0))
    np.testing.assert_array_equal(F.gaussian(x, 2.0, truncate=0).compute(), image)
    np.testing.assert_array_equal(F.gaussian(x, 2.0, order=1, truncate=0).compute(),
                                  ndi.gaussian_filter(image, 2.0, order=1, truncate=0))


def test_size_zero_and_whole_float_sizes():
    image = sample((12, 10))
    x = da.from_array(image, chunks=5)
    np.testing.assert_array_equal(F.uniform(x, 0).compute(), ndi.uniform_filter(image, 0))
    np.testing.assert_array_equal(F.uniform(x, 0).compute(), image)
    np.testing.assert_array_equal(F.uniform(x, 3.0).compute(), ndi.uniform_filter(image, 3.0))
    np.testing.assert_array_equal(F.minimum(x, (0, 3)).compute(), ndi.minimum_filter(image, (0, 3)))


def test_zero_d_arrays_and_lists_of_them():
    image = sample((12, 10))
    x = da.from_array(image, chunks=5)
    np.testing.assert_array_equal(F.gaussian(x, np.array(1.0)).compute(), ndi.gaussian_filter(image, np.array(1.0)))
    sig = [np.array(1.0), np.array(2.0)]
    np.testing.assert_array_equal(F.gaussian(x, sig).compute(), ndi.gaussian_filter(image, sig))
    np.testing.assert_array_equal(F.median(x, np.array(3)).compute(), ndi.median_filter(image, np.array(3)))
    np.testing.assert_array_equal(F.uniform(x, [np.array(3), 2]).compute(), ndi.uniform_filter(image, [np.array(3), 2]))


def test_radius_must_be_whole_as_scipy_requires():
    x = da.zeros((8, 8), chunks=4)
    for bad in (1.1, -1):
        with pytest.raises(ValueError, match="radius"):
            F.gaussian(x, 1.0, radius=bad)
        with pytest.raises(ValueError):
            ndi.gaussian_filter(np.zeros((8, 8)), 1.0, radius=bad)
    np.testing.assert_array_equal(F.gaussian(x, 1.0, radius=2).compute(),
                                  ndi.gaussian_filter(np.zeros((8, 8)), 1.0, radius=2))


@pytest.mark.parametrize("call, scipy_call, kind", [
    (lambda x: F.gaussian(x, (1, 2, 3)), lambda a: ndi.gaussian_filter(a, (1, 2, 3)), RuntimeError),
    (lambda x: F.gaussian(x, 1, mode="foo"), lambda a: ndi.gaussian_filter(a, 1, mode="foo"), RuntimeError),
    (lambda x: F.median(x), lambda a: ndi.median_filter(a), RuntimeError),
    (lambda x: F.median(x, 3, mode=["wrap", "reflect"]), lambda a: ndi.median_filter(a, 3, mode=["wrap", "reflect"]),
     RuntimeError),
    (lambda x: F.minimum(x, footprint=np.ones((3, 3, 3))), lambda a: ndi.minimum_filter(a, footprint=np.ones((3,) * 3)),
     RuntimeError),
    (lambda x: F.median(x, 2.5), lambda a: ndi.median_filter(a, 2.5), TypeError),
    (lambda x: F.minimum_filter1d(x, 0), lambda a: ndi.minimum_filter1d(a, 0), RuntimeError),
    (lambda x: F.correlate1d(x, []), lambda a: ndi.correlate1d(a, []), RuntimeError),
    (lambda x: F.rank_filter(x, 10, 3), lambda a: ndi.rank_filter(a, 10, 3), RuntimeError),
    (lambda x: F.percentile_filter(x, 101, 3), lambda a: ndi.percentile_filter(a, 101, 3), RuntimeError),
    (lambda x: F.binary_erosion(x, iterations=1.5), lambda a: ndi.binary_erosion(a, iterations=1.5), TypeError),
    (lambda x: F.uniform(x, 3, origin=2), lambda a: ndi.uniform_filter(a, 3, origin=2), ValueError),
    (lambda x: F.sobel(x, axis=2), lambda a: ndi.sobel(a, axis=2), np.exceptions.AxisError),
    (lambda x: F.uniform(x, 3, axes=(0, 0)), lambda a: ndi.uniform_filter(a, 3, axes=(0, 0)), ValueError),
])
def test_errors_are_also_scipys_type(call, scipy_call, kind):
    with pytest.raises(kind):
        scipy_call(np.zeros((10, 10)))
    with pytest.raises(kind) as ours:
        call(da.zeros((10, 10), chunks=5))
    assert isinstance(ours.value, ValueError)  # and still the ValueError we always raised


def test_finite_promise_for_rank_filters_with_infinities():
    image = sample((20, 20))
    image[3, 4], image[10, 11] = np.inf, -np.inf
    x = da.from_array(image, chunks=(3, 7))
    for f, g in ((F.median, ndi.median_filter), (F.minimum, ndi.minimum_filter), (F.maximum, ndi.maximum_filter)):
        np.testing.assert_array_equal(f(x, 3).compute(), g(image, 3))
