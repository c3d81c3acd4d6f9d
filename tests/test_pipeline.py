"""Pipelines compute each stage once: a global step keeps the intermediate it reads for later stages."""
import collections
import gc
import os

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.filters
import skimage.measure

import gpu_tiler as gt
from gpu_tiler._engine.materialise import choose, explain, work_per_voxel


@pytest.fixture
def image():
    rng = np.random.default_rng(3)
    blobs = ndi.gaussian_filter(rng.random((192, 160)), 5)
    return ((blobs - blobs.min()) / np.ptp(blobs) * 4000).astype(np.float32)


def counting_gaussian(calls):
    def smooth(tile):
        calls[tile.shape] += 1
        return ndi.gaussian_filter(tile, 2.0)

    return smooth


@pytest.mark.parametrize("dtype", [np.float32, np.uint16], ids=["float32", "uint16"])
@pytest.mark.parametrize("budget", [None, "256KiB"], ids=["in-memory", "scratch-store"])
def test_threshold_label_regionprops_run_the_user_function_once_per_tile(image, budget, dtype):
    # float32: Otsu's min/max ride along in the Gaussian's pass, its histogram reads the kept copy;
    # uint16: the count of every value rides along, so the threshold needs no pass of its own
    image = image.astype(dtype)
    calls = collections.Counter()
    x = da.from_array(image, chunks=(48, 40))
    smoothed = gt.map_tiles(counting_gaussian(calls), x, halo=8, tile_shape=(48, 40))
    tiles = int(np.prod(smoothed.numblocks))
    with gt.config(memory_budget=budget) if budget else gt.config():
        mask = gt.threshold(smoothed, "otsu")
        labels, n = gt.label(mask)
        table = gt.regionprops(labels, smoothed, properties=["label", "area", "intensity_mean"])
    assert sum(calls.values()) == tiles  # each tile of the Gaussian once, through every stage
    whole = ndi.gaussian_filter(image, 2.0)
    level = skimage.filters.threshold_otsu(whole)
    want = skimage.measure.regionprops_table(ndi.label(whole > level)[0], whole,
                                             properties=["label", "area", "intensity_mean"])
    assert n == len(want["label"]) == len(table)
    np.testing.assert_array_equal(table["area"].to_numpy(), want["area"])
    # scikit-image sums float32 intensities in float32; ours in float64 (docs/measure.md)
    np.testing.assert_allclose(table["intensity_mean"].to_numpy(), want["intensity_mean"], rtol=1e-6)


def test_explain_shows_what_is_kept_and_where(image):
    smoothed = gt.gaussian(da.from_array(image, chunks=64), 2.0)
    mask = gt.threshold(smoothed, "otsu")
    text = gt.explain(mask)
    assert "kept in memory" in text and smoothed.name in text
    with gt.config(memory_budget="64KiB"):
        kept = gt.threshold(gt.gaussian(da.from_array(image, chunks=64), 3.0), "otsu")
    assert "kept in a scratch store" in explain(kept)
    with gt.config(memory_budget="64KiB"):  # a 3-tap filter of an image in memory: cheaper to recompute
        cheap = gt.uniform(da.from_array(image, chunks=64), 3)
        recomputed = gt.threshold(cheap, "otsu")
    assert "recomputed by every pass" in explain(recomputed) and "kept in" not in explain(recomputed)
    expected = ndi.uniform_filter(image, 3)
    np.testing.assert_array_equal(recomputed.compute(), expected > skimage.filters.threshold_otsu(expected))


def test_a_scratch_store_lives_as_long_as_a_graph_reads_it(image, tmp_path):
    with gt.config(memory_budget="64KiB"):
        mask = gt.threshold(gt.gaussian(da.from_array(image, chunks=64), 3.0), "otsu")
    folders = [line.split("reads", 1)[1].strip() for line in explain(mask).splitlines() if "reads" in line]
    kept = [f for f in folders if "gpu_tiler-kept-" in f]
    assert kept and os.path.exists(kept[0])
    expected = ndi.gaussian_filter(image, 3.0)
    np.testing.assert_array_equal(mask.compute(), expected > skimage.filters.threshold_otsu(expected))
    del mask
    gc.collect()
    assert not os.path.exists(kept[0])  # nothing reads it any more: removed


def test_an_intermediate_cheaper_to_read_than_keep_is_not_copied(image, tmp_path):
    gt.save(image, tmp_path / "in.zarr")
    stored = gt.open(tmp_path / "in.zarr")
    mask = gt.threshold(stored * 2, "otsu")  # arithmetic on a stored image: read again, not kept
    assert "kept" not in explain(mask)
    np.testing.assert_array_equal(mask.compute(), image * 2 > skimage.filters.threshold_otsu(image * 2))


def test_the_cost_model_keeps_what_is_dear_to_recompute_and_recomputes_what_is_cheap():
    gib = 2**30
    zarr_source = {"passes": 2, "source_bytes": gib // 2, "source_stored": True}  # uint16 zarr -> float32
    # on the host: in memory when it fits, else a scratch store beats recomputing a Gaussian from zarr
    assert choose(gib, gib // 4, macs=34, on_device=False, fits_device=True, fits_host=True,
                  **zarr_source).where == "memory"
    assert choose(gib, gib // 4, macs=34, on_device=False, fits_device=False, fits_host=False,
                  **zarr_source).where == "a scratch store"
    # too large for the GPU: decoding the zarr source again is dearer than the host round trip
    assert choose(gib, gib // 4, macs=34, on_device=True, fits_device=False, fits_host=True,
                  **zarr_source).where == "host memory"
    # ... but from a uint8 source in memory, a cheap filter is recomputed on the GPU instead of copied back
    in_memory = {"passes": 2, "source_bytes": gib // 4, "source_stored": False}
    on_gpu = choose(gib, gib // 4, macs=34, on_device=True, fits_device=False, fits_host=True, **in_memory)
    assert on_gpu.where == "nowhere" and on_gpu.costs["nowhere"] < on_gpu.costs["host memory"]
    # a costly filter (a 31^3 median) is kept; a user's function (cost unknown) is never recomputed
    assert choose(gib, gib // 4, macs=31**3, on_device=True, fits_device=False, fits_host=True,
                  **in_memory).where == "host memory"
    assert choose(gib, gib // 4, macs=None, on_device=True, fits_device=False, fits_host=False,
                  **in_memory).where == "a scratch store"


def test_a_chain_s_work_is_counted_from_its_steps_and_a_user_function_is_unknown(image):
    x = da.from_array(image, chunks=64)
    assert work_per_voxel(gt.gaussian(x, 2.0)) == (2 * (2 * 8 + 1), image.nbytes, False)  # two passes of 17 taps
    assert work_per_voxel(gt.map_tiles(lambda t: t + 1, x))[0] is None


def test_a_pass_into_a_scratch_store_decodes_each_source_chunk_about_once():
    # out of core, tiles run in batches; a neighbour's halo lines and chunks needed again are kept between
    # batches within the budget, instead of reading (decoding) the chunk again for every window touching it
    reads = collections.Counter()

    def read(chunk, block_info=None):
        reads[tuple(block_info[0]["chunk-location"])] += 1
        return chunk

    image = np.random.default_rng(5).random((512, 512)).astype(np.float32)
    source = da.from_array(image, chunks=32).map_blocks(read, dtype=np.float32)
    smoothed = gt.map_tiles(lambda t: ndi.gaussian_filter(t, 1.0), source, halo=4, tile_shape=(32, 32))
    with gt.config(memory_budget="512KiB"):  # 1 MiB of image
        mask = gt.threshold(smoothed, "otsu")
    assert "kept in a scratch store" in explain(mask)
    assert sum(reads.values()) <= 1.5 * len(reads) and len(reads) == 256  # without keeping: 1380
    whole = ndi.gaussian_filter(image, 1.0)
    np.testing.assert_array_equal(mask.compute(), whole > skimage.filters.threshold_otsu(whole))


#: tiles the in-process workers ran (the function goes to them pickled: by reference, so it counts here)
_CLUSTER_CALLS = collections.Counter()


def _counted_on_a_worker(tile):
    _CLUSTER_CALLS[tile.shape] += 1
    return ndi.gaussian_filter(tile, 2.0)


def test_under_a_cluster_the_kept_intermediate_lives_on_the_workers(image):
    from dask.core import flatten
    from distributed import Client, LocalCluster

    from gpu_tiler._io.sources import as_dask

    whole = ndi.gaussian_filter(image, 2.0)
    expected, count = ndi.label(whole > skimage.filters.threshold_otsu(whole))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None,
                      silence_logs=50) as cluster, Client(cluster) as client:
        _CLUSTER_CALLS.clear()
        smoothed = gt.map_tiles(_counted_on_a_worker, da.from_array(image, chunks=(48, 40)), halo=8,
                                tile_shape=(48, 40))
        mask = gt.threshold(smoothed, "otsu")
        held = {key for keys in client.has_what().values() for key in keys}
        assert set(flatten(as_dask(smoothed).__dask_keys__())) <= held  # persisted: its tiles are on the workers
        labels, n = gt.label(mask)
        assert n == count
        np.testing.assert_array_equal(labels.compute(), expected)
    assert sum(_CLUSTER_CALLS.values()) == int(np.prod(smoothed.numblocks))  # each tile once, on the workers
