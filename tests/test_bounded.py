"""run_bounded's block order and carried values (gpu_tiler._execution.bounded), and strip_order
(gpu_tiler._planning.plan): tiles smaller than their source chunks, walked strip by strip with the chunks
carried between batches, decode each chunk once."""
import collections
import threading

import dask.array as da
import numpy as np
import pytest

from gpu_tiler._execution.bounded import run_bounded
from gpu_tiler._planning.plan import strip_order


class CountingSource:
    """An array whose chunk reads are counted (by chunk), as dask reads a stored source."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.reads, self.lock = collections.Counter(), threading.Lock()

    def __getitem__(self, index):
        with self.lock:
            self.reads[tuple((s.start or 0) for s in index)] += 1
        return self.array[index]


def tiles_of(shape=(32, 24), chunk=8, tile=(3, 4)):
    source = CountingSource(np.arange(np.prod(shape), dtype=np.int64).reshape(shape))
    x = da.from_array(source, chunks=chunk, asarray=False, name="counted-source",
                      meta=np.empty((0, 0), np.int64)).rechunk(tile)
    return source, x.map_blocks(lambda b: np.array([[b.sum()]]), chunks=(1, 1), dtype=np.int64), x


def test_strip_order_walks_each_strip_one_chunk_wide_along_the_first_axis():
    tiles = ((2, 2, 2, 2), (2, 2, 2, 2))
    order = strip_order(tiles, [((4, 4), (4, 4))])
    assert sorted(order) == [(i, j) for i in range(4) for j in range(4)]
    assert order[:8] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    assert order[8:] == [(0, 2), (0, 3), (1, 2), (1, 3), (2, 2), (2, 3), (3, 2), (3, 3)]
    assert strip_order(((3, 3, 1),), [((4, 3),)]) == [(0,), (1,), (2,)]  # one axis: raster order


def test_blocks_run_in_the_given_order_and_an_incomplete_order_is_refused():
    _, sums, _ = tiles_of()
    order = list(reversed(strip_order(sums.chunks, [sums.chunks])))
    seen = []
    run_bounded(sums, lambda index, block: seen.append(index), 1, order=order)
    assert seen == order
    with pytest.raises(ValueError, match="each of the .* block indices of the array once"):
        run_bounded(sums, lambda index, block: None, 1, order=order[1:])
    with pytest.raises(ValueError, match="once"):
        run_bounded(sums, lambda index, block: None, 1, order=order[1:] + order[:1] * 2)


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_chunks_carried_along_a_strip_are_read_once(in_flight):
    source, sums, tiles = tiles_of()
    want = source.array
    got = {}
    chunk_bytes = 8 * 8 * 8
    order = strip_order(sums.chunks, [((8,) * 4, (8,) * 3)])
    # the chunks a tile row of a strip needs (two, where tiles straddle chunk rows), and the pieces cut from them
    run_bounded(sums, got.__setitem__, in_flight, carry_bytes=8 * chunk_bytes, order=order)
    assert sorted(source.reads.values()) == [1] * 12  # 12 chunks, each read once
    starts = [np.cumsum((0,) + c) for c in tiles.chunks]
    for (i, j), block in got.items():
        window = want[starts[0][i]:starts[0][i + 1], starts[1][j]:starts[1][j + 1]]
        assert block[0, 0] == window.sum()

    source, sums, _ = tiles_of()
    run_bounded(sums, lambda index, block: None, in_flight)  # raster order, nothing carried
    assert sum(source.reads.values()) > 12
