"""gt.ndmeasure (dask-image's names) equals scipy.ndimage's measurements on the whole image, with SciPy's
labels/index rules and return types, across tiles planned from a small budget."""
import importlib.util
import warnings

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

import gpu_tiler as gt
from gpu_tiler import ndmeasure
from test_measure import on_backend

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # SciPy's (and ours): 0/0 for absent labels

#: functions whose results are integers, extrema, positions or medians of any image, or sums of an integer
#: image (exact in float64): every bit as SciPy's. Sums of float images (and variances of any) are added in
#: another order than SciPy's single pass: equal to RTOL.
EXACT_FOR_ANY = {"minimum", "maximum", "median", "minimum_position", "maximum_position", "extrema"}
EXACT_FOR_INTEGERS = {"sum_labels", "sum", "mean", "center_of_mass"}
RTOL = 1e-12
FUNCTIONS = sorted(EXACT_FOR_ANY | EXACT_FOR_INTEGERS | {"variance", "standard_deviation"})


def images(shape=(40, 37), seed=0):
    rng = np.random.default_rng(seed)
    labels = ndi.label(ndi.gaussian_filter(rng.random(shape), 2) > 0.5)[0]
    integers = rng.integers(0, 50, shape).astype(np.uint8)  # many ties
    floats = rng.random(shape)  # no ties
    return labels, integers, floats


LABELS, INTEGERS, FLOATS = images()
TOP = int(LABELS.max())
#: SciPy's rules: no labels (one region: the image); index None (labels > 0 as one region); a scalar label;
#: a scalar label with no voxel; 0 (the background is a region); an array with repeats and absent labels;
#: a 2-D array (results in its shape)
INDEX_RULES = {
    "no-labels": (False, None),
    "index-None": (True, None),
    "scalar": (True, 3),
    "scalar-absent": (True, TOP + 5),
    "zero": (True, 0),
    "array": (True, [1, 2, 0, TOP + 3, 2, -1]),
    "array-2d": (True, np.array([[1, 3], [TOP + 1, 4]])),
}


def assert_same(got, want, exact, where=""):
    """The same structure (tuples, lists, arrays of index's shape), types and dtypes; values bit for bit
    when ``exact``, else to RTOL."""
    if isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), f"{where}: {got!r} vs {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, exact, f"{where}[{i}]")
        return
    if isinstance(want, np.ndarray) and want.dtype == object:
        assert got.dtype == object and got.shape == want.shape, where
        for i, (g, w) in enumerate(zip(got, want)):
            assert (g is None) == (w is None), f"{where}[{i}]"
            if w is not None:
                assert_same(g, w, exact, f"{where}[{i}]")
        return
    assert type(got) is type(want), f"{where}: type {type(got)} vs SciPy's {type(want)}"
    assert np.shape(got) == np.shape(want) and np.asarray(got).dtype == np.asarray(want).dtype, where
    if exact:
        np.testing.assert_array_equal(got, want, err_msg=where, strict=True)
    else:
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=0, equal_nan=True, err_msg=where)


def both(name, image, labels, index, chunks=(7, 9), budget=64 * 1024, *extra):
    """(gpu_tiler's result or error, SciPy's), the images tiled in ``chunks`` within ``budget``."""
    def call(f, *args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return f(*args)
            except Exception as error:  # noqa: BLE001 - compared: the same error type as SciPy's
                return error

    tiled_labels = None if labels is None else da.from_array(labels, chunks=chunks)
    got = call(lambda: getattr(ndmeasure, name)(da.from_array(image, chunks=chunks), *extra[:3], tiled_labels,
                                                index, budget=budget) if extra else
               getattr(ndmeasure, name)(da.from_array(image, chunks=chunks), tiled_labels, index, budget=budget))
    want = call(lambda: getattr(ndi, name)(image, *extra[:3], labels, index) if extra else
                getattr(ndi, name)(image, labels, index))
    return got, want


def check(got, want, exact, where):
    if isinstance(want, Exception):
        assert type(got) is type(want), f"{where}: {got!r}, SciPy raised {want!r}"
        return
    assert not isinstance(got, Exception), f"{where}: {got!r}, SciPy gave {want!r}"
    assert_same(got, want, exact, where)


@pytest.mark.parametrize("rule", list(INDEX_RULES))
@pytest.mark.parametrize("name", FUNCTIONS)
def test_each_function_and_index_rule_equals_scipy(name, rule):
    with_labels, index = INDEX_RULES[rule]
    labels = LABELS if with_labels else None
    for image in (INTEGERS, FLOATS):
        if name.endswith("position") or name == "extrema":
            # SciPy's array-index path picks among tied extrema by an unstable sort of the whole image;
            # its one-region path (and gpu_tiler always) takes the first in C order: ties only there
            if image is INTEGERS and np.ndim(index) > 0:
                continue
        exact = name in EXACT_FOR_ANY or (name in EXACT_FOR_INTEGERS and image is INTEGERS)
        got, want = both(name, image, labels, index)
        check(got, want, exact, f"{name} {rule} {image.dtype}")


@pytest.mark.parametrize("rule", ["no-labels", "index-None", "scalar", "scalar-absent", "array"])
def test_histogram_labeled_comprehension_and_area(rule):
    with_labels, index = INDEX_RULES[rule]
    labels = LABELS if with_labels else None
    got, want = both("histogram", INTEGERS, labels, index, (7, 9), 16 * 1024, 0, 50, 7)
    check(got, want, True, f"histogram {rule}")

    tiled = (da.from_array(FLOATS, chunks=(6, 11)), None if labels is None else da.from_array(labels, chunks=(6, 11)))
    for func, out_dtype, default, positions in [
        (np.median, np.float64, -1.0, False),
        (lambda v, p: p[np.argmax(v)] if v.size else -2, np.int64, -7, True),  # positions: flat, in the image
    ]:
        if labels is None and index is not None:
            continue
        want = ndi.labeled_comprehension(FLOATS, labels, index, func, out_dtype, default, positions)
        got = ndmeasure.labeled_comprehension(*tiled, index, func, out_dtype, default, positions, budget=64 * 1024)
        check(got, want, True, f"labeled_comprehension {rule}")

    got = ndmeasure.area(*tiled, index)
    # SciPy has no area: dask-image's is the count of each region's voxels, as integers
    want = ndi.sum_labels(np.ones(INTEGERS.shape, dtype=bool), labels, index)
    assert_same(got, np.asarray(want).astype(np.int64)[()], True, f"area {rule}")
    if importlib.util.find_spec("dask_image") is not None:  # and dask-image itself, where it is installed
        import dask_image.ndmeasure

        want = dask_image.ndmeasure.area(da.from_array(INTEGERS), None if labels is None else da.from_array(labels),
                                         index)
        assert_same(got, np.asarray(want.compute() if hasattr(want, "compute") else want)[()], True, f"area {rule}")


@pytest.mark.parametrize("chunks", [(1, 5, 4), (3, 1, 7)], ids=["size-1-rows", "size-1-columns"])
def test_3d_awkward_chunks_and_signed_64_bit_values(chunks):
    rng = np.random.default_rng(5)
    labels = ndi.label(ndi.gaussian_filter(rng.random((9, 10, 11)), 1.5) > 0.5)[0]
    image = rng.integers(-2**62, 2**62, labels.shape)  # int64 extrema through the device's uint64 encoding
    index = [0, 1, 2, 3, 77]
    for name in ("minimum", "maximum", "median", "extrema"):
        got, want = both(name, image, labels, index, chunks, 32 * 1024)
        check(got, want, True, f"{name} 3-D")
    small = (image % 1000).astype(np.int32)
    for name in ("sum_labels", "mean", "center_of_mass"):
        got, want = both(name, small, labels, index, chunks, 32 * 1024)
        check(got, want, True, f"{name} 3-D")


def test_on_the_device_the_results_are_the_host_results():
    """On the stand-in (device chunks; implicit conversion raises): the same values as SciPy's."""
    from gpu_tiler.testing import standin_device

    with standin_device() as ledger, gt.config(backend="standin"):
        image, labels = on_backend(FLOATS, 9, "standin"), on_backend(LABELS, 9, "standin")
        index = [0, 1, 2, TOP + 2]
        got = {name: getattr(ndmeasure, name)(image, labels, index) for name in ("sum_labels", "extrema", "median")}
        hist = ndmeasure.histogram(image, 0, 1, 4, labels, index)
    assert ledger.d2h_calls > 0
    assert_same(got["extrema"], ndi.extrema(FLOATS, LABELS, index), True, "extrema")
    assert_same(got["median"], ndi.median(FLOATS, LABELS, index), True, "median")
    assert_same(got["sum_labels"], ndi.sum_labels(FLOATS, LABELS, index), False, "sum_labels")
    assert_same(hist, ndi.histogram(FLOATS, 0, 1, 4, LABELS, index), True, "histogram")


def test_a_region_larger_than_the_budget_is_named_for_median():
    labels = np.zeros((64, 64), np.int32)
    labels[4:60, 4:60] = 9
    with pytest.raises(ValueError, match=r"region 9 has 3136 voxels.* raise budget="):
        ndmeasure.median(da.from_array(labels.astype(float), chunks=16), da.from_array(labels, chunks=16), [9],
                         budget=16 * 1024)


def test_ndmeasure_is_not_in_the_top_level_namespace():
    assert gt.ndmeasure is ndmeasure and gt.median is not ndmeasure.median  # gt.median: the median filter
    assert set(ndmeasure.__all__) >= {"area", "labeled_comprehension", "histogram", "extrema", "center_of_mass"}
