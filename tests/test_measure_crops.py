"""Properties measured on region crops (and the parameters scikit-image's regionprops_table takes) equal
scikit-image's on the whole image, every value bit for bit: regions inside one tile, and regions crossing
1, 2 and (3-D) 3 tile borders measured once on their bounding-box crop."""
import dask.array as da
import numpy as np
import pytest
from skimage.measure import regionprops as skimage_regionprops
from skimage.measure import regionprops_table
from skimage.measure._regionprops import _props_to_dict

from gpu_tiler._backends import NUMPY
from gpu_tiler.measure import SUPPORTED_PROPERTIES, _at_least, plan_measure, regionprops
from gpu_tiler.measure._crops import CropRequest
from gpu_tiler.measure._partials import Plan
from gpu_tiler.measure._properties import PROPERTIES, normalize_properties, partials_of
from test_measure import blobs, intensity_image, on_backend

pytestmark = pytest.mark.filterwarnings(
    "ignore:Failed to get convex hull image:UserWarning",  # scikit-image's, for flat regions (as on the whole image)
    "ignore:divide by zero:RuntimeWarning", "ignore:invalid value:RuntimeWarning",
)

CROP_PROPERTIES = [p for p in SUPPORTED_PROPERTIES if PROPERTIES[p].crop]
#: counted per label from local configurations with a halo (scikit-image's codes): exact too
LOCAL_PROPERTIES = ["perimeter", "perimeter_crofton", "euler_number"]


def quartiles(region_mask, intensity):
    """An extra property of the mask and the intensities (a fixed-size column group)."""
    return np.percentile(intensity[region_mask], q=(25, 50, 75))


def holes(region_mask):
    """An extra property of the mask only (an integer scalar)."""
    return int(region_mask.size - region_mask.sum())


def assert_same_values(got, want):
    """Every column and value as scikit-image's, bit for bit: names and order, dtypes, floats as their
    bit patterns, object columns (images, coordinates, slices) element by element."""
    assert list(got.columns) == list(want), f"columns {list(got.columns)} vs scikit-image's {list(want)}"
    for column, expected in want.items():
        values = got[column].to_numpy()
        assert values.dtype == expected.dtype, f"{column}: dtype {values.dtype} vs {expected.dtype}"
        if expected.dtype == object:
            for g, w in zip(values, expected):
                if isinstance(w, np.ndarray):
                    assert g.dtype == w.dtype and g.shape == w.shape and np.array_equal(g, w), column
                else:
                    assert g == w, f"{column}: {g} vs {w}"
        elif expected.dtype.kind == "f":
            differ = values.view(np.uint64) != expected.view(np.uint64)
            assert not differ.any(), f"{column}: {values[differ][:3]} vs {expected[differ][:3]}"
        else:
            np.testing.assert_array_equal(values, expected, err_msg=column)


def tile_edges(labels, chunks, intensity, properties, budget, **options):
    """The interior tile edges regionprops plans along each axis for these inputs."""
    ndim = labels.ndim
    channels = None if intensity is None else (0 if intensity.ndim == ndim else intensity.shape[-1])
    requested = normalize_properties(properties, intensity is not None, ndim, **options)
    request = CropRequest([r.name for r in requested if r.crop], None, None, None, labels.shape, channels)
    plan = Plan(partials_of(requested), ndim, None, crops=bool(request))
    images = [da.from_array(labels, chunks=chunks)] + ([] if intensity is None else [da.from_array(intensity)])
    tiles = plan_measure(plan, images, budget, NUMPY, request)
    return [np.cumsum(c)[:-1] for c in _at_least(tiles.chunks, plan.depth)]


def put(labels, label, where):
    """A solid box of ``label`` at ``where`` (slices), with a one-voxel ring of background around it."""
    ring = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in where)
    labels[ring] = 0
    labels[where] = label


def with_crossing_objects(labels, edges):
    """Objects across 1, 2 and (3-D) 3 interior tile borders, placed on the planned edges: a bar across
    the first edge of axis 0, a box on a corner of 4 tiles, in 3-D a box on a corner of 8 tiles, and an
    object in two pieces, in two tiles, that never touch a tile border (one label, not connected)."""
    labels = labels.copy()
    ndim = labels.ndim
    e = [int(edges[a][0]) for a in range(ndim)]
    top = int(labels.max())
    around = [slice(max(0, x - 2), x + 2) for x in e]
    put(labels, top + 1, (slice(e[0] - 2, e[0] + 2),) + tuple(slice(1, 3) for _ in range(ndim - 1)))
    put(labels, top + 2, tuple(around[:2]) + tuple(slice(1, 3) for _ in range(ndim - 2)))
    if ndim == 3:
        put(labels, top + 3, tuple(around))
    crossed = {top + 1: 1, top + 2: 2, top + 3: 3}
    for label, borders in crossed.items():
        if label in labels:
            lows, highs = (np.argwhere(labels == label).min(0), np.argwhere(labels == label).max(0))
            assert sum(bool(np.any((edges[a] > lows[a]) & (edges[a] <= highs[a]))) for a in range(ndim)) == borders
    return labels


CASES = {  # shape, label chunks, intensity dtype, budget (bytes)
    "2d-uneven": ((61, 47), (17, 13), np.float32, 64 * 1024),
    "2d-size-1-chunks": ((20, 24), 1, np.uint16, 48 * 1024),
    "3d-uneven": ((19, 23, 21), (6, 10, 7), np.uint16, 384 * 1024),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_crop_property_equals_skimage_across_tile_borders(case):
    shape, chunks, dtype, budget = CASES[case]
    ndim = len(shape)
    properties = ["label"] + [p for p in CROP_PROPERTIES + LOCAL_PROPERTIES
                              if PROPERTIES[p].ndims is None or ndim in PROPERTIES[p].ndims]
    properties += ["bbox_area", "local_centroid", "area"]  # old names; a property from partials
    if ndim == 3:  # scikit-image's 3-D feret_diameter_max fails on flat regions: measured on its own below
        properties.remove("feret_diameter_max")
    intensity = intensity_image(shape, dtype, seed=3)
    edges = tile_edges(np.zeros(shape, np.int32), chunks, intensity, properties, budget)
    assert all(len(e) >= 1 for e in edges) and sum(map(len, edges)) >= 4
    labels = with_crossing_objects(blobs(shape, seed=9), edges)
    got = regionprops(on_backend(labels, chunks), da.from_array(intensity, chunks=5), properties,
                      extra_properties=[quartiles, holes], budget=budget)
    want = regionprops_table(labels, intensity, properties=properties, extra_properties=[quartiles, holes])
    assert len(got) == len(np.unique(labels)) - 1 > 4
    assert_same_values(got, want)


def test_feret_diameter_in_3d_across_tile_borders():
    labels = np.zeros((20, 22, 18), np.int32)
    put(labels, 4, (slice(2, 9), slice(3, 15), slice(5, 11)))  # crosses tiles
    put(labels, 9, (slice(12, 18), slice(16, 20), slice(2, 8)))
    labels[13:15, 17:19, 3:5] = 0  # a hole
    got = regionprops(da.from_array(labels, chunks=(5, 6, 4)), None, ["label", "feret_diameter_max", "euler_number"],
                      budget=64 * 1024)
    assert_same_values(got, regionprops_table(labels, properties=["label", "feret_diameter_max", "euler_number"]))


def test_spacing_offset_separator_and_multichannel_intensity():
    """Multichannel intensities, an anisotropic spacing (every spacing-dependent property then comes from
    crops), a separator, extra properties per channel; and offset, which moves coords as in regionprops."""
    shape = (19, 23, 21)
    labels = blobs(shape, seed=9)
    intensity = np.random.default_rng(1).integers(0, 1000, shape + (3,)).astype(np.uint16)
    properties = ["label", "area", "centroid", "bbox", "euler_number", "coords_scaled", "intensity_mean",
                  "intensity_median", "intensity_max", "moments_weighted", "centroid_weighted", "solidity",
                  "inertia_tensor_eigvals", "image_intensity"]
    options = dict(spacing=(1, 0.5, 2), separator=":")
    got = regionprops(da.from_array(labels, chunks=(6, 10, 7)), da.from_array(intensity, chunks=(10, 10, 10, 2)),
                      properties, extra_properties=[quartiles, holes], budget=1024 * 1024, **options)
    want = regionprops_table(labels, intensity, properties, extra_properties=[quartiles, holes], **options)
    assert_same_values(got, want)

    properties = ["label", "coords", "coords_scaled", "bbox", "centroid", "slice"]
    got = regionprops(da.from_array(labels, chunks=(6, 10, 7)), None, properties, offset=(5, -6, 7), spacing=2,
                      budget=256 * 1024)
    want = _props_to_dict(skimage_regionprops(labels, offset=(5, -6, 7), spacing=2), properties)
    assert_same_values(got, want)


def test_crops_on_the_device_come_to_the_host_explicitly():
    """On the stand-in (implicit conversions raise), device chunks reach scikit-image only through
    ``to_host``: results equal scikit-image's."""
    from gpu_tiler.testing import standin_device

    import gpu_tiler

    labels = blobs((40, 36), seed=4)
    intensity = intensity_image(labels.shape, np.float32, seed=2)
    properties = ["label", "area", "perimeter", "image_intensity", "intensity_median", "orientation"]
    with standin_device() as ledger, gpu_tiler.config(backend="standin"):
        got = regionprops(on_backend(labels, 9, "standin"), on_backend(intensity, 9, "standin"), properties,
                          extra_properties=[quartiles], budget=32 * 1024)
    assert ledger.d2h_calls > 0
    assert_same_values(got, regionprops_table(labels, intensity, properties, extra_properties=[quartiles]))


def test_a_crossing_region_larger_than_the_budget_is_named():
    labels = np.zeros((60, 60), np.int32)
    labels[5:55, 5:55] = 7
    with pytest.raises(ValueError, match=r"region 7 crosses tiles and its bounding box 50x50 .* raise budget="):
        regionprops(da.from_array(labels, chunks=10), None, ["label", "image"], budget=16 * 1024)


def test_errors_of_whole_regions_are_scikit_images_and_pieces_do_not_raise():
    """An extra property that fails on a region piece a tile sees (a label in two distant pieces) but not
    on the whole region works; one that fails on a whole region raises its error, as on the whole image."""
    labels = np.zeros((30, 30), np.int32)
    labels[2:5, 2:5] = 3
    labels[22:28, 22:24] = 3  # the same label, another piece in another tile
    labels[12:14, 3:6] = 5

    def two_rows_at_least(mask):
        if mask.shape[0] < 7 and mask.sum() == 9:  # only the first piece alone
            raise RuntimeError("a piece")
        return int(mask.shape[0])

    got = regionprops(da.from_array(labels, chunks=10), None, ["label"], extra_properties=[two_rows_at_least])
    assert_same_values(got, regionprops_table(labels, properties=["label"], extra_properties=[two_rows_at_least]))

    def refuses_label_5(mask):
        if mask.sum() == 6:
            raise RuntimeError("label 5 is refused")
        return 1

    with pytest.raises(RuntimeError, match="label 5 is refused"):
        regionprops(da.from_array(labels, chunks=10), None, ["label"], extra_properties=[refuses_label_5])


def test_local_configurations_on_the_device_stay_within_the_budget():
    """perimeter, perimeter_crofton and euler_number counted on the stand-in from halo'd tiles: each tile's
    labels (with their halo) cross once, the peak stays within the budget, the values are scikit-image's."""
    import scipy.ndimage as ndi

    import gpu_tiler
    from gpu_tiler.testing import standin_device

    budget = 256 * 1024
    labels = ndi.label(ndi.gaussian_filter(np.random.default_rng(0).random((256, 256)), 3) > 0.5)[0]
    properties = ["label", "perimeter", "perimeter_crofton", "euler_number"]
    with standin_device() as ledger, gpu_tiler.config(backend="standin"):
        got = regionprops(da.from_array(labels, chunks=64), None, properties, budget=budget)
    moved = ledger.snapshot()
    assert moved["peak_bytes"] <= budget
    assert moved["h2d_calls"] == moved["d2h_calls"] // 2  # per tile: its halo'd labels over; two small tables back
    assert_same_values(got, regionprops_table(labels, properties=properties))


@pytest.mark.parametrize("shape", [(1, 20), (2, 21)], ids=["one-row", "two-rows"])
def test_local_configurations_of_images_thinner_than_their_halo(shape):
    labels = np.zeros(shape, np.int32)
    labels[:, 3:9] = 2
    labels[-1, 12:19] = 5
    labels[0, 10] = 7
    properties = ["label", "perimeter", "perimeter_crofton", "euler_number"]
    got = regionprops(da.from_array(labels, chunks=(1, 3)), None, properties, budget=64 * 1024)
    assert_same_values(got, regionprops_table(labels, properties=properties))
