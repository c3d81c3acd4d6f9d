"""One record per lazy array: it lives as long as the array, whatever else the process makes."""
import gc

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

import gpu_tiler as gt
from gpu_tiler._io.sinks import DONE_LOG, SaveError
from gpu_tiler._registry import _records as records


def test_more_than_2000_arrays_later_a_resume_of_the_first_is_the_same_job(tmp_path, disk_full_after):
    mask = (np.random.default_rng(8).random((64, 64)) > 0.55).astype(np.uint8)
    source, target = tmp_path / "mask.zarr", tmp_path / "lab.zarr"
    zarr.create_array(str(source), shape=mask.shape, chunks=(16, 16), dtype=mask.dtype)[:] = mask
    labels, n = gt.label(gt.open(source), tile_shape=(16, 16))  # a unique dask name; its job is in the record
    disk_full_after(4)
    with pytest.raises(SaveError):
        gt.save(labels, target, resume=True)
    disk_full_after(None)
    # 2,200 more records, 1,100 of them labels with job identities of their own (a cap would drop the first)
    kept = [gt.gaussian(np.full((8, 8), i, np.float32), 1.0) for i in range(1100)]
    kept += [gt.label(np.eye(4, dtype=np.uint8) * (i % 2))[0] for i in range(1100)]
    assert len(records) > 2000
    written = (tmp_path / ".lab.zarr.partial" / DONE_LOG).read_text().splitlines()
    assert len(written) == 4
    calls = []
    from gpu_tiler._io.sinks import _TileWriter

    original = _TileWriter.__call__

    def counting(self, index, block):
        calls.append(index)
        return original(self, index, block)

    _TileWriter.__call__ = counting
    try:
        out = gt.save(labels, target, resume=True)
    finally:
        _TileWriter.__call__ = original
    assert len(calls) == 16 - 4  # the same job: the four finished tiles were not written again
    np.testing.assert_array_equal(out.compute(), ndi.label(mask)[0])


def test_records_go_with_their_arrays():
    before = len(records)
    results = [gt.gaussian(np.ones((8, 8), np.float32) * i, 1.0) for i in range(20)]
    assert len(records) >= before + 20
    del results
    gc.collect()
    assert len(records) <= before


def test_metadata_survives_astype_arithmetic_and_rechunk_but_not_moving_voxels(tmp_path):
    image = np.random.default_rng(1).random((30, 40)).astype(np.float32)
    gt.save(image, tmp_path / "img.ome.zarr", format="ome-zarr", axes="yx", scale=(0.5, 0.25), units="um")
    x = gt.open(tmp_path / "img.ome.zarr")
    meta = gt.metadata_of(x)
    assert meta.scale == (0.5, 0.25)
    for same in (x.astype(np.float64), x * 2 + 1, x.rechunk((7, 9)), (x > 0.5).astype(np.uint8), x.persist()):
        assert gt.metadata_of(same) == meta
    for moved in (x.T, x[::-1], x[..., None], x[[0, 2]]):
        assert gt.metadata_of(moved) is None
    assert gt.metadata_of(x[:10]) == meta  # a unit-step slice from the start moves nothing


def test_selections_keep_the_other_axes_pixel_sizes_and_move_the_translation(tmp_path):
    image = np.random.default_rng(2).random((3, 30, 40)).astype(np.float32)
    path = tmp_path / "cyx.ome.zarr"
    gt.save(gt.open(image, chunks=(1, 16, 16)), path, format="ome-zarr", axes="cyx", scale=(1.0, 0.5, 0.25),
            units="um", pyramid_levels=1)
    one = gt.open(path)[1]  # the opened array object is gone: its record lives on in the graph
    gc.collect()
    meta = gt.metadata_of(one)
    assert meta.axes == ("y", "x") and meta.scale == (0.5, 0.25) and meta.units == ("micrometer",) * 2
    crop = gt.metadata_of(gt.open(path)[:, 10:, 3:])
    assert crop.scale == (1.0, 0.5, 0.25) and crop.translation == (0.0, 5.0, 0.75)
    strided = gt.metadata_of(gt.open(path)[:, ::2, 1::3])  # every 2nd / 3rd voxel: larger pixels, never the old ones
    assert strided.scale == (1.0, 1.0, 0.75) and strided.translation == (0.0, 0.0, 0.25)
    chained = gt.metadata_of(gt.gaussian(gt.open(path), 1.0)[2][5:] * 2)
    assert chained.axes == ("y", "x") and chained.translation == (2.5, 0.0)
