"""One record per lazy array: it lives as long as the array, whatever else the process makes."""
import gc

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

import gpu_tiler as gt
from gpu_tiler._io import DONE_LOG, SaveError
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
    from gpu_tiler._io import _TileWriter

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
    for moved in (x.T, x[::-1], x[:10], x[..., None]):
        assert gt.metadata_of(moved) is None
