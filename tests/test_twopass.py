"""The two-pass machinery label() and map_labels() share: one local-labels interface, three kinds."""
import numpy as np
import dask.array as da
import pytest

from gpu_tiler._backends import get_backend
from gpu_tiler.labels._tiles import TileGrid
from gpu_tiler.labels._twopass import (
    PersistedTiles,
    ScratchTiles,
    TilesInGraph,
    keeps_in_memory,
    number_objects,
    pass2,
    run_pass1,
)
from gpu_tiler.labels._merge import get_merger

KINDS = {"memory": TilesInGraph, "scratch": ScratchTiles, "cluster": PersistedTiles}


def pieces_of(tile, index):
    """A stand-in for a tile's pass 1: its values are its local labels, its summary their count."""
    local = np.asarray(tile, dtype=np.int32)
    return local, int(local.max())


def run_both_passes(where, tmp_path):
    image = np.arange(48, dtype=np.int32).reshape(6, 8) % 3
    tiles = da.from_array(image, chunks=(3, 4))
    grid = TileGrid.of(tiles)
    pass1 = run_pass1(
        pieces_of, tiles, grid, name=f"test-pass1-{where}", backend=get_backend("numpy"), to_host=False,
        in_memory=where != "scratch", scratch_dir=str(tmp_path), budget_bytes=1 << 20,
    )
    assert type(pass1.local) is KINDS[where]
    summaries = pass1.gather(f"test-summaries-{where}")
    assert summaries == {index: 2 for index in grid.indices()}
    # every tile's two pieces get labels of their own: tile k's local label l becomes 2k + l
    label_of_piece = np.arange(1, 2 * len(summaries) + 1, dtype=np.int64)
    ranges = {index: (2 * k, 2 * k + 2) for k, index in enumerate(grid.indices())}
    labels = pass2(pass1.local, grid, label_of_piece, ranges, f"test-labels-{where}")
    want = image.copy()
    for k, index in enumerate(grid.indices()):
        block = tuple(slice(3 * i, 3 * i + 3) if a == 0 else slice(4 * i, 4 * i + 4) for a, i in enumerate(index))
        want[block] = np.where(image[block] > 0, image[block] + 2 * k, 0)
    np.testing.assert_array_equal(labels.compute(), want)
    np.testing.assert_array_equal(labels.compute(), want)  # mapped again, from the same local labels


@pytest.mark.parametrize("where", ["memory", "scratch"])
def test_every_kind_of_local_labels_maps_its_tiles_through_their_lookup_tables(where, tmp_path):
    run_both_passes(where, tmp_path)


def test_local_labels_persisted_on_a_cluster(tmp_path):
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
    with cluster, distributed.Client(cluster):
        run_both_passes("cluster", tmp_path)


def test_memory_or_scratch():
    assert keeps_in_memory("auto", (64, 64), 256, 64 * 64 * 4)
    assert not keeps_in_memory("auto", (64, 64), 256, 64 * 64 * 4 - 1)
    assert keeps_in_memory("memory", (64, 64), 256, 0) and not keeps_in_memory("disk", (1,), 1, 1 << 30)
    assert not keeps_in_memory("auto", (2**31,), 2**31, 2**33)  # int64 local labels for huge tiles


def test_number_objects_numbers_pieces_across_tiles_by_their_first_voxels():
    # tile (0,): pieces with keys 5, 9; tile (1,): keys 2, 7; the pair joins tile 0's local label 1 with
    # tile 1's local label 2 (piece ids are a tile's first piece id plus its local label)
    counts, keys = {(0,): 2, (1,): 2}, {(0,): np.array([5, 9]), (1,): np.array([2, 7])}
    seen = []

    def pairs(offsets):
        seen.append(offsets)
        return np.array([offsets[(0,)] + 1]), np.array([offsets[(1,)] + 2])

    label_of_piece, ranges, n = number_objects(np, counts, keys, pairs, get_merger("numpy"))
    assert seen == [{(0,): 0, (1,): 2}] and ranges == {(0,): (0, 2), (1,): (2, 4)} and n == 3
    np.testing.assert_array_equal(label_of_piece, [2, 3, 1, 2])
