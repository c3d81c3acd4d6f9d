"""Bounded execution: compute a dask array tile by tile with at most N tiles in flight.

Dask's schedulers decide on their own how much to hold in memory; for images many times the
budget that can be far more than the plan allows. Here the array's optimized graph is built once
and run in batches of ``tiles_in_flight`` output blocks, each batch with that many threads of
dask's own threaded scheduler, and every block is handed to ``write`` as soon as it is done, so
that at no time more than one batch of tiles (with the source chunks they read) is in memory.
"""
from __future__ import annotations

import itertools
import os

import dask.array as da
import dask.core
import dask.threaded


def _needed(dsk, keys):
    """The sub-graph that computing ``keys`` needs (culling, without touching the rest)."""
    seen, stack = set(), list(keys)
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        stack.extend(dep for dep in dask.core.get_dependencies(dsk, key) if dep not in seen)
    return {k: dsk[k] for k in seen}


def _write_then_drop(write, index, block):
    write(index, block)
    return None


def run_bounded(array: da.Array, write, tiles_in_flight: int, progress=None, skip=frozenset()) -> None:
    """Compute every block of ``array``; call ``write(block_index, block)`` for each, in raster order
    batches of ``tiles_in_flight`` blocks run on as many threads. Blocks whose index is in ``skip``
    (already written by an earlier run) are not computed. ``progress(done, total)`` is called after
    each batch, counting skipped blocks as done."""
    in_flight = max(1, int(tiles_in_flight))
    every = list(itertools.product(*(range(n) for n in array.numblocks)))
    indices = [i for i in every if i not in skip]
    already = len(every) - len(indices)
    keys = [(array.name, *i) for i in indices]
    dsk = dict(array.__dask_optimize__(array.__dask_graph__(), keys))
    if not all(k in dsk for k in keys):  # an optimization renamed the outputs: run the graph as built
        dsk = dict(array.__dask_graph__())
    token = "gpu_tiler-write-" + array.name
    total = len(every)
    if progress is not None and already:
        progress(already, total)
    for start in range(0, len(indices), in_flight):
        batch = indices[start : start + in_flight]
        writes = {}
        for index in batch:
            writes[(token, *index)] = (_write_then_drop, write, index, (array.name, *index))
        sub = _needed(dsk, [(array.name, *i) for i in batch])
        sub.update(writes)
        dask.threaded.get(sub, list(writes), num_workers=in_flight)
        if progress is not None:
            progress(already + min(start + in_flight, len(indices)), total)


def default_tiles_in_flight(array: da.Array, budget_bytes: int, working_copies: int = 2) -> int:
    """Tiles in flight for an array that was not planned by map_tiles: as many of its largest
    chunks (with working copies) as the budget holds, at most one per CPU core, at least one."""
    biggest = 1
    for c in array.chunks:
        biggest *= max(c) if c else 0
    per_tile = max(1, biggest * array.dtype.itemsize * (1 + working_copies))
    return max(1, min(os.cpu_count() or 1, budget_bytes // per_tile))


__all__ = ["run_bounded", "default_tiles_in_flight"]
