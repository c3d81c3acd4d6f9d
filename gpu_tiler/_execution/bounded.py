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


def active_client():
    """The dask.distributed client our work should run on, or None for the local threaded scheduler."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:  # distributed is installed, but no client is running
        return None


def _write_in_task(write, index, block):
    return write(index, block)


def run_bounded(array: da.Array, write, tiles_in_flight: int, progress=None, skip=frozenset(), *,
                in_task: bool = False, on_done=None) -> None:
    """Compute every block of ``array`` in raster-order batches of ``tiles_in_flight`` blocks.

    ``write(block_index, block)`` receives each block: in this process after its batch (the default:
    for small blocks, e.g. per-tile summaries), or, with ``in_task=True``, inside the task that
    computed it (for tiles written to shared storage; ``write`` must then be picklable, and what it
    returns goes to ``on_done``). ``on_done(indices)`` is called here after each batch with the
    indices it finished. Blocks whose index is in ``skip`` (written by an earlier run) are not
    computed. ``progress(done, total)`` is called after each batch, counting skipped blocks as done.

    Locally, batches run on dask's threaded scheduler with ``tiles_in_flight`` threads. When a
    dask.distributed client is active, they run on its workers, ``tiles_in_flight`` per worker."""
    in_flight = max(1, int(tiles_in_flight))
    every = list(itertools.product(*(range(n) for n in array.numblocks)))
    indices = [i for i in every if i not in skip]
    already = len(every) - len(indices)
    keys = [(array.name, *i) for i in indices]
    dsk = dict(array.__dask_optimize__(array.__dask_graph__(), keys))
    if not all(k in dsk for k in keys):  # an optimization renamed the outputs: run the graph as built
        dsk = dict(array.__dask_graph__())
    client = active_client()
    if client is not None:
        batch_size = in_flight * max(1, len(client.scheduler_info().get("workers", {})))

        def get(graph, wanted):
            return client.get(graph, wanted, sync=True)
    else:
        batch_size = in_flight

        def get(graph, wanted):
            return dask.threaded.get(graph, wanted, num_workers=in_flight)

    token = "gpu_tiler-write-" + array.name
    total = len(every)
    if progress is not None and already:
        progress(already, total)
    for start in range(0, len(indices), batch_size):
        batch = indices[start : start + batch_size]
        block_keys = [(array.name, *i) for i in batch]
        sub = _needed(dsk, block_keys)
        if in_task:
            writes = {(token, *i): (_write_in_task, write, i, key) for i, key in zip(batch, block_keys)}
            sub.update(writes)
            results = get(sub, list(writes))
        else:
            for index, block in zip(batch, get(sub, block_keys)):
                write(index, block)
            results = batch
        if on_done is not None:
            on_done(list(results))
        if progress is not None:
            progress(already + min(start + batch_size, len(indices)), total)


def tiles_in_flight_for_chunks(array: da.Array, budget_bytes: int, working_copies: int = 2) -> int:
    """Tiles in flight for an array that was not planned by map_tiles: as many of its largest
    chunks (with working copies) as the budget holds, at most one per CPU core, at least one."""
    biggest = 1
    for c in array.chunks:
        biggest *= max(c) if c else 0
    per_tile = max(1, biggest * array.dtype.itemsize * (1 + working_copies))
    return max(1, min(os.cpu_count() or 1, budget_bytes // per_tile))


__all__ = ["active_client", "tiles_in_flight_for_chunks", "run_bounded"]
