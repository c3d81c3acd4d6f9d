"""map_labels(): a per-tile segmentation stitched by overlap equals the segmentation of the whole image."""
import time

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

from gpu_tiler import backend_of
from gpu_tiler.data import nuclei
from gpu_tiler.labels import label, map_labels
from gpu_tiler.labels._merge import merger_problem
from gpu_tiler.labels._stitch import StitchSummary, matched_pieces, summarise_window
from gpu_tiler.labels._tiles import TileGrid


def threshold_label(tile, level=0.5, structure=None):
    """The user's segmentation: a threshold, then connected components (on NumPy or CuPy tiles)."""
    return backend_of(tile).ndimage.label(tile > level, structure)[0]


def scrambled_label(tile, level=0.5, seed=0):
    """The same objects under ids that mean nothing: shuffled, offset far beyond the tile, int64."""
    labels, n = ndi.label(np.asarray(tile) > level)
    ids = np.random.default_rng(seed + n).permutation(n) * 7919 + 10**12
    return np.concatenate([[0], ids]).astype(np.int64)[labels]


def blobs(shape, sigma=2.0, fraction=0.3, seed=0):
    noise = np.random.default_rng(seed).random(shape, dtype=np.float32)
    smooth = ndi.gaussian_filter(noise, sigma)
    return (smooth > np.quantile(smooth, 1 - fraction)).astype(np.float32)


def widest(labels):
    """The largest bounding-box extent of any object, over all axes."""
    return max(s.stop - s.start for box in ndi.find_objects(labels) for s in box)


def whole(image, structure=None):
    return ndi.label(image > 0.5, structure)


def assert_refines(got, want):
    """Every stitched object lies inside one object of ``want`` (never merges two of them)."""
    fg = want > 0
    assert np.array_equal(got > 0, fg)
    pairs = np.unique(np.stack([got[fg], want[fg]]), axis=1)
    assert np.unique(pairs[0]).size == pairs.shape[1]


@pytest.mark.parametrize("tile_shape", [(37, 53), (64, 64), (100, 29), (250, 300)])
def test_2d_equals_whole_image_labelling_for_objects_smaller_than_the_halo(tile_shape, backend_name):
    image = nuclei((203, 247), radius=6, density=4, seed=2, chunks=(90, 80))
    want, n_want = ndi.label(image.compute() > 0.3)
    halo = widest(want) - 1  # every object spans at most halo + 1 voxels
    labels, n = map_labels(threshold_label, image, halo, tile_shape=tile_shape, backend=backend_name, level=0.3)
    assert isinstance(labels, da.Array) and isinstance(n, int) and n == n_want > 40
    assert labels.chunks == da.empty(image.shape, chunks=tile_shape).chunks
    got = labels.compute()
    got = got if isinstance(got, np.ndarray) else got.get()
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)  # same partition and scipy's raster-order numbering


@pytest.mark.parametrize("connectivity", [1, 3])
def test_3d_equals_whole_image_labelling(connectivity):
    image = nuclei((40, 56, 52), radius=4, density=8, seed=2, chunks=64).compute()
    structure = ndi.generate_binary_structure(3, connectivity)
    want, n_want = ndi.label(image > 0.3, structure)
    halo = (widest(want) - 1,) * 3
    labels, n = map_labels(threshold_label, image, halo, tile_shape=(13, 17, 11), level=0.3, structure=structure)
    assert n == n_want > 15
    np.testing.assert_array_equal(labels.compute(), want)


def test_ids_that_mean_nothing_give_the_same_result():
    image = blobs((180, 150), seed=5)
    want, n_want = whole(image)
    halo = widest(want) - 1
    for func, kwargs in [(scrambled_label, {"seed": 1}), (threshold_label, {})]:
        labels, n = map_labels(func, image, halo, tile_shape=(41, 33), **kwargs)
        assert n == n_want
        np.testing.assert_array_equal(labels.compute(), want)


def test_small_unsigned_ids_with_gaps():
    image = blobs((120, 90), seed=6)
    want, n_want = whole(image)

    def gappy(tile):
        labels = ndi.label(tile > 0.5)[0]
        return np.where(labels > 0, 3 * labels + 1, 0).astype(np.uint16)

    labels, n = map_labels(gappy, image, widest(want), tile_shape=(32, 40))
    assert n == n_want
    np.testing.assert_array_equal(labels.compute(), want)


def test_a_wide_convex_object_is_stitched_whole_even_with_a_small_halo():
    """Bars and a disc far wider than the halo stay connected inside every window: their views agree."""
    image = np.zeros((120, 160), dtype=np.float32)
    image[10:14, 3:157] = 1  # a bar through every tile along x
    image[20:110, 70:74] = 1  # one through every tile along y
    yy, xx = np.mgrid[:120, :160]
    image[(yy - 70) ** 2 + (xx - 120) ** 2 < 30**2] = 1
    want, n_want = whole(image)
    labels, n = map_labels(threshold_label, image, 2, tile_shape=(25, 30))
    assert n == n_want == 3
    np.testing.assert_array_equal(labels.compute(), want)


def combs(shape, depth, prongs=3, gap=3, width=2, spacing=18):
    """Combs with their prongs upwards: ``prongs`` vertical bars ``depth`` long, joined only at the bottom."""
    image = np.zeros(shape, dtype=np.float32)
    span = prongs * width + (prongs - 1) * gap
    for x in range(2, shape[1] - span - 2, spacing):
        for k in range(prongs):
            image[2 : 2 + depth, x + k * (width + gap) : x + k * (width + gap) + width] = 1
        image[2 + depth - width : 2 + depth, x : x + span] = 1
    return image


def test_an_object_whose_parts_connect_only_outside_the_window_stays_split_and_is_never_overmerged():
    """The documented limit: a comb deeper than the halo, cut by a tile border across its prongs, is
    seen by the upper tile as three bars; in the overlap each bar has IoU 1/3 with the comb seen by the
    lower tile, below min_overlap, so the pieces stay apart (more objects than scipy finds), and are
    never merged with another object. A halo that reaches the comb's back stitches it whole."""
    image = combs((60, 80), depth=40)
    want, n_want = whole(image)
    small, n_small = map_labels(threshold_label, image, 4, tile_shape=(20, 80))
    small = small.compute()
    assert n_small == n_want * 4  # each comb: three prongs in the top tile, the rest below it
    assert_refines(small, want)
    big, n_big = map_labels(threshold_label, image, 41, tile_shape=(20, 80))
    assert n_big == n_want
    np.testing.assert_array_equal(big.compute(), want)
    # a two-pronged U sits exactly at IoU 1/2: merged at the default min_overlap (>= 0.5), not above
    u = combs((60, 80), depth=40, prongs=2)
    _, n_u = map_labels(threshold_label, u, 4, tile_shape=(20, 80))
    _, n_split = map_labels(threshold_label, u, 4, tile_shape=(20, 80), min_overlap=0.51)
    assert n_u == whole(u)[1] and n_split == 3 * n_u


def test_no_halo_matches_nothing_each_tile_counts_on_its_own():
    image = blobs((96, 96), seed=2)
    want, n_want = whole(image)
    labels, n = map_labels(threshold_label, image, 0, tile_shape=(32, 32))
    naive = sum(ndi.label(image[i : i + 32, j : j + 32] > 0.5)[1] for i in range(0, 96, 32) for j in range(0, 96, 32))
    assert n == naive > n_want
    assert_refines(labels.compute(), want)


def test_iou_rule_counts_inside_the_overlap_region_only():
    mine = np.array([1, 1, 1, 1, 0, 2, 2, 0, 3, 3])
    theirs = np.array([5, 5, 5, 0, 0, 6, 7, 7, 8, 8])
    # 1~5: I=3, |1|=4, |5|=3 -> 3/4; 2~6: 1/(2+1-1)=1/2; 2~7: 1/(2+2-1)=1/3; 3~8: 2/2
    a, b = matched_pieces(np, mine, theirs, 3, 8, 0.5)
    assert sorted(zip(a.tolist(), b.tolist())) == [(1, 5), (2, 6), (3, 8)]
    a, b = matched_pieces(np, mine, theirs, 3, 8, 0.75)
    assert sorted(zip(a.tolist(), b.tolist())) == [(1, 5), (3, 8)]
    a, b = matched_pieces(np, mine, theirs, 3, 8, 1.0)
    assert sorted(zip(a.tolist(), b.tolist())) == [(3, 8)]


def test_disagreeing_windows_merge_only_what_overlaps_enough():
    """A function that shrinks objects near its window's edge: views differ, the rule decides."""
    image = np.zeros((40, 80), dtype=np.float32)
    image[10:20, 5:75] = 1  # one bar across the two tiles

    def shrinking(tile, cut):
        labels = ndi.label(tile > 0.5)[0]
        labels[:, :cut] = 0  # this "segmentation" drops both ends of every window
        labels[:, -cut:] = 0
        return labels

    # in each overlap (8 wide) one window sees the bar cut by ``cut``: IoU = (8 - cut) / 8 both ways
    for cut, merged in [(2, True), (3, False), (6, False)]:
        _, n = map_labels(shrinking, image, 8, tile_shape=(40, 40), min_overlap=0.7, mode="constant", cut=cut)
        assert n == (1 if merged else 2)


def test_many_small_objects_are_fast():
    side, step = 1280, 4
    image = np.zeros((side, side), dtype=np.float32)
    image[1::step, 1::step] = 1
    image[2::step, 1::step] = 1  # 2x1 dots: 320 * 320 = 102400 objects
    image[::13, :] = 0
    want, n_want = whole(image)
    assert n_want > 95_000
    start = time.perf_counter()
    labels, n = map_labels(threshold_label, image, 3, tile_shape=(256, 200))
    got = labels.compute()
    elapsed = time.perf_counter() - start
    assert n == n_want
    np.testing.assert_array_equal(got, want)
    assert elapsed < 10, f"{n} objects took {elapsed:.1f} s"


def test_only_overlap_data_goes_to_the_merge():
    """Per tile: its window's labels over neighbours' cores and halo-thick bands of its own core."""
    shape, tile, halo = (300, 300), (100, 100), (5, 5)
    grid = TileGrid(shape, ((100,) * 3, (100,) * 3))
    window = np.random.default_rng(0).integers(0, 50, size=(110, 110))
    local, summary = summarise_window(window, (1, 1), grid=grid, halo=halo, backend=backend_of(window))
    assert isinstance(summary, StitchSummary) and local.shape == tile
    assert summary.n_labels == np.unique(window[5:105, 5:105][window[5:105, 5:105] > 0]).size
    halo_voxels = sum(a.size for a in summary.halo.values())
    band_voxels = sum(a.size for a in summary.bands.values())
    assert len(summary.halo) == 8 and halo_voxels == 110 * 110 - 100 * 100
    assert len(summary.bands) == 4 and band_voxels == 4 * 5 * 100
    assert all(a.dtype == np.uint8 for a in (*summary.halo.values(), *summary.bands.values()))


def test_scratch_on_disk_equals_memory(tmp_path):
    image = blobs((90, 110), seed=8)
    want, n_want = whole(image)
    halo = widest(want) - 1
    labels, n = map_labels(threshold_label, image, halo, tile_shape=(30, 40), scratch=str(tmp_path))
    assert n == n_want
    np.testing.assert_array_equal(labels.compute(), want)
    memory, _ = map_labels(threshold_label, image, halo, tile_shape=(30, 40), scratch="memory")
    np.testing.assert_array_equal(memory.compute(), want)


@pytest.mark.parametrize("merger", ["opencl", "c"])
def test_kernel_merger_gives_the_same_labels(merger):
    if merger_problem(merger) is not None:  # the other kernel merger runs the same kernel source
        pytest.skip(f"the {merger!r} merger cannot run here: {merger_problem(merger)}")
    image = blobs((100, 100), seed=9)
    want, n_want = whole(image)
    labels, n = map_labels(threshold_label, image, widest(want), tile_shape=(30, 30), merger=merger)
    assert n == n_want
    np.testing.assert_array_equal(labels.compute(), want)


def test_agrees_with_label_on_one_image_and_handles_borders_and_empties():
    image = blobs((64, 64), seed=4)
    image[0, :] = 1  # an object along the image border (reflect mode mirrors it; it stays one)
    stitched, n = map_labels(threshold_label, image, 63, tile_shape=(16, 16))
    labelled, n_label = label(image > 0.5, tile_shape=(16, 16))
    assert n == n_label
    np.testing.assert_array_equal(stitched.compute(), labelled.compute())
    empty, n = map_labels(threshold_label, np.zeros((20, 30), dtype=np.float32), 3, tile_shape=(7, 7))
    assert n == 0 and not empty.compute().any()
    nothing, n = map_labels(threshold_label, np.zeros((0, 5), dtype=np.float32), 3)
    assert n == 0 and nothing.shape == (0, 5)


def test_bad_input_names_the_parameter():
    image = blobs((40, 40))
    with pytest.raises(ValueError, match="halo"):
        map_labels(threshold_label, image, -1)
    with pytest.raises(ValueError, match="halo"):
        map_labels(threshold_label, image, (2, 2, 2))
    with pytest.raises(ValueError, match="min_overlap"):
        map_labels(threshold_label, image, 2, min_overlap=0)
    with pytest.raises(ValueError, match="min_overlap"):
        map_labels(threshold_label, image, 2, min_overlap=1.5)
    with pytest.raises(ValueError, match="mode"):
        map_labels(threshold_label, image, 2, mode="bounce")
    with pytest.raises(TypeError, match="func"):
        map_labels("threshold", image, 2)

    def cropped(tile):
        return ndi.label(tile[1:] > 0.5)[0]

    with pytest.raises(ValueError, match="func 'cropped' returned shape"):
        map_labels(cropped, image, 2, tile_shape=(20, 20))
    with pytest.raises(TypeError, match="dtype float32; func must return an integer"):
        map_labels(lambda t: t, image, 2, tile_shape=(20, 20))
    with pytest.raises(TypeError, match="tuple"):
        map_labels(lambda t: ndi.label(t > 0.5), image, 2, tile_shape=(20, 20))
    with pytest.raises(TypeError, match="integer"):
        map_labels(lambda t: t > 0.5, image, 2, tile_shape=(20, 20))


def test_two_worker_distributed_cluster_gives_the_same_result():
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    image = nuclei((300, 260), radius=6, density=4, seed=7, chunks=100)
    want, n_want = ndi.label(image.compute() > 0.3)
    halo = widest(want)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    with cluster, distributed.Client(cluster):
        labels, n = map_labels(threshold_label, image, halo, tile_shape=(70, 90), level=0.3)
        got = labels.compute()
        on_disk, n_disk = map_labels(threshold_label, image, halo, tile_shape=(70, 90), level=0.3, scratch="disk")
        got_disk = on_disk.compute()
    assert n == n_want == n_disk
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_disk, want)


@pytest.mark.gpu
def test_cupy_path_equals_numpy_path_with_device_resident_tiles(gpu):
    import cupy

    image = nuclei((256, 200), radius=6, density=4, seed=3, chunks=64).compute()
    want, n_want = map_labels(threshold_label, image, 40, tile_shape=(60, 70), backend="numpy", level=0.3)
    on_device = da.from_array(cupy.asarray(image), chunks=64)
    labels, n = map_labels(threshold_label, on_device, 40, tile_shape=(60, 70), level=0.3)
    got = labels.compute()
    assert isinstance(got, cupy.ndarray) and n == n_want
    np.testing.assert_array_equal(cupy.asnumpy(got), want.compute())
    for ids in (lambda t: threshold_label(t, 0.3) * 7 + 1000 * (t > 0.3),  # direct ids, with gaps
                lambda t: threshold_label(t, 0.3).astype(cupy.int64) * -(10**12)):  # negative: ranked ids
        offset, n = map_labels(ids, on_device, 40, tile_shape=(60, 70), backend="cupy")
        assert n == n_want
        np.testing.assert_array_equal(cupy.asnumpy(offset.compute()), want.compute())
