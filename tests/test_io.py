import os
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import tifffile
import zarr

import gpu_tiler as gt


@pytest.fixture
def image():
    return np.random.default_rng(3).integers(0, 4000, (130, 97)).astype(np.uint16)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_round_trip(tmp_path, image, zarr_format):
    saved = gt.save(da.from_array(image, chunks=(40, 33)), tmp_path / "out.zarr", zarr_format=zarr_format)
    assert isinstance(saved, da.Array)
    reopened = gt.open(tmp_path / "out.zarr")
    assert reopened.chunksize == (40, 33)
    np.testing.assert_array_equal(reopened.compute(), image)
    assert zarr.open(str(tmp_path / "out.zarr"), mode="r").metadata.zarr_format == zarr_format
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]  # nothing partial left beside it


def test_irregular_chunks_are_saved_with_regular_zarr_chunks(tmp_path, image):
    x = da.from_array(image, chunks=((30, 50, 50), (97,)))
    out = gt.save(x, tmp_path / "irregular.zarr")
    np.testing.assert_array_equal(out.compute(), image)


def test_open_existing_zarr_made_by_zarr_itself_with_rechunk(tmp_path, image):
    z = zarr.create_array(str(tmp_path / "v2.zarr"), shape=image.shape, chunks=(16, 16), dtype=image.dtype,
                          zarr_format=2)
    z[:] = image
    x = gt.open(tmp_path / "v2.zarr", chunks=(64, 64))
    assert x.chunksize == (64, 64)
    np.testing.assert_array_equal(x.compute(), image)
    np.testing.assert_array_equal(gt.open(z).compute(), image)


def test_zarr_group_opens_level_0_or_says_which_array(tmp_path, image):
    group = zarr.open_group(str(tmp_path / "pyramid.zarr"), mode="w")
    group.create_array("0", shape=image.shape, dtype=image.dtype, chunks=(32, 32))[:] = image
    np.testing.assert_array_equal(gt.open(tmp_path / "pyramid.zarr").compute(), image)
    other = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    other.create_array("raw", shape=(3,), dtype="u1")
    with pytest.raises(ValueError, match="other.zarr/raw"):
        gt.open(tmp_path / "other.zarr")


def test_tiff_opens_lazily(tmp_path, image):
    tifffile.imwrite(tmp_path / "img.tif", image, tile=(32, 32))
    x = gt.open(tmp_path / "img.tif")
    assert x.chunksize == (32, 32)
    np.testing.assert_array_equal(x.compute(), image)
    np.testing.assert_array_equal(gt.open(str(tmp_path / "img.tif"), chunks=(50, 50)).compute(), image)


def test_npy_is_memory_mapped(tmp_path, image):
    np.save(tmp_path / "img.npy", image)
    x = gt.open(tmp_path / "img.npy", chunks=(64, 50))
    assert x.chunksize == (64, 50)
    stored = [v for v in dict(x.__dask_graph__()).values() if hasattr(v, "files")]  # the StoredArray of the file
    assert len(stored) == 1 and isinstance(stored[0].array, np.memmap) and stored[0].files == str(tmp_path / "img.npy")
    np.testing.assert_array_equal(x.compute(), image)


def test_numpy_and_dask_sources(image):
    assert gt.open(image).shape == image.shape
    x = da.from_array(image, chunks=10)
    assert gt.open(x) is x
    assert gt.open(x, chunks=20).chunksize == (20, 20)
    np.testing.assert_array_equal(gt.open([[1, 2], [3, 4]]).compute(), [[1, 2], [3, 4]])


def test_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.zarr"):
        gt.open(tmp_path / "nope.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not a zarr store"):
        gt.open(tmp_path / "plain")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="don't know how to open"):
        gt.open(tmp_path / "notes.txt")


def test_existing_output_is_refused_and_left_intact(tmp_path, image):
    target = tmp_path / "result.zarr"
    gt.save(image, target)
    before = sorted((p.relative_to(target), p.stat().st_mtime_ns) for p in target.rglob("*"))
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        gt.save(np.zeros_like(image), target)
    after = sorted((p.relative_to(target), p.stat().st_mtime_ns) for p in target.rglob("*"))
    assert before == after
    np.testing.assert_array_equal(gt.open(target).compute(), image)


def test_overwrite_replaces_only_when_complete(tmp_path, image):
    target = tmp_path / "result.zarr"
    gt.save(image, target)
    gt.save(image + 1, target, overwrite=True)
    np.testing.assert_array_equal(gt.open(target).compute(), image + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.zarr"]


def _fails_on_the_third_tile():
    count = {"n": 0}

    def func(tile):
        count["n"] += 1
        if count["n"] == 3:
            raise RuntimeError("disk on fire")
        return tile

    return func


def test_a_failing_save_leaves_nothing(tmp_path, image):
    bad = gt.map_tiles(_fails_on_the_third_tile(), image, tile_shape=(20, 20), tiles_in_flight=1)
    with pytest.raises(RuntimeError, match="disk on fire"):
        gt.save(bad, tmp_path / "out.zarr")
    assert list(tmp_path.iterdir()) == []


def test_a_failing_overwrite_keeps_the_old_output(tmp_path, image):
    target = tmp_path / "out.zarr"
    gt.save(image, target)
    bad = gt.map_tiles(_fails_on_the_third_tile(), image, tile_shape=(20, 20), tiles_in_flight=1)
    with pytest.raises(RuntimeError, match="disk on fire"):
        gt.save(bad, target, overwrite=True)
    np.testing.assert_array_equal(gt.open(target).compute(), image)
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]


def test_save_streams_a_map_tiles_result_with_its_plan(tmp_path):
    image = np.random.default_rng(4).random((256, 200)).astype(np.float32)
    smoothed = gt.map_tiles(ndi.gaussian_filter, image, halo=8, budget="512KiB", sigma=2.0)
    written = []
    out = gt.save(smoothed, tmp_path / "s.zarr", progress=lambda done, total: written.append((done, total)))
    plan = gt.plan_of(smoothed)
    assert written[-1] == (plan.n_tiles, plan.n_tiles)
    assert all(b - a <= plan.tiles_in_flight for (a, _), (b, _) in zip([(0, 0)] + written, written))
    np.testing.assert_array_equal(out.compute(), ndi.gaussian_filter(image, 2.0))
    assert gt.open(tmp_path / "s.zarr").chunksize == plan.tile_shape


def test_save_refuses_unknown_zarr_format(tmp_path, image):
    with pytest.raises(ValueError, match="zarr_format"):
        gt.save(image, tmp_path / "x.zarr", zarr_format=4)
    assert not os.listdir(tmp_path)


def test_save_accepts_str_paths_and_creates_parents(tmp_path, image):
    out = gt.save(image, str(tmp_path / "deep" / "er" / "x.zarr"))
    assert Path(tmp_path / "deep" / "er" / "x.zarr").is_dir()
    np.testing.assert_array_equal(out.compute(), image)
