"""The two passes :func:`~gpu_tiler.label` and :func:`~gpu_tiler.map_labels` share.

Both label every tile on its own (pass 1), merge the tiles' pieces into objects with a small eager
computation, and map every tile's local labels through a lookup table (pass 2, lazy). This module holds
what does not depend on how a tile is labelled or how pieces are matched:

- **where the local labels wait** between the passes (:func:`keeps_in_memory`): in memory when the whole
  image's local labels fit the budget (``scratch="auto"``), else in a scratch zarr store
  (:class:`~gpu_tiler.labels._scratch.ScratchLabels`);
- **pass 1** (:func:`run_pass1`): on the local schedulers one computation brings every tile's
  ``(local labels, summary)`` back; on a dask.distributed cluster the pairs are persisted, so the local
  labels stay on the workers; out of memory, tiles are labelled into the scratch store in bounded
  batches (``run_bounded``) and only the summaries come back;
- **the hand-off to the merge** (:func:`number_objects`): piece ids per tile, order keys, union-find
  and numbering;
- **pass 2** (:func:`pass2`) through one interface, :class:`LocalLabels`: each of its three kinds
  (:class:`TilesInGraph`, :class:`PersistedTiles`, :class:`ScratchTiles`) gives the task
  ``task(index, lookup)`` that maps one tile; the relabelling itself is :func:`relabel` (or, for tiles
  a caller owns, a :class:`LocalTile` subclass that maps in place).
"""
from __future__ import annotations

import functools
import math
import operator
import os
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.sizeof import sizeof

from gpu_tiler._execution.bounded import (
    active_client,
    run_bounded,
    tiles_in_flight_for_chunks,
)
from gpu_tiler.labels._numbering import number_pieces
from gpu_tiler.labels._scratch import ScratchLabels
from gpu_tiler.labels._tiles import TileGrid, local_label_dtype

SCRATCH_CHOICES = ("auto", "memory", "disk")
#: Voxels mapped per np.take call: np.take converts its whole index array to intp first, so large
#: tiles are mapped in slabs that keep that copy small (and in cache).
TAKE_SLAB = 1 << 18


# ------------------------------------------------------------------------------------------------
# arguments and choices both functions make


def check_scratch(scratch):
    """``(mode, directory)`` from ``scratch``: a mode name, or an existing directory (meaning disk)."""
    if isinstance(scratch, str) and scratch in SCRATCH_CHOICES:
        return scratch, None
    if isinstance(scratch, (str, os.PathLike)) and os.path.isdir(scratch):
        return "disk", scratch
    raise ValueError(
        f"scratch must be one of {', '.join(map(repr, SCRATCH_CHOICES))} or an existing directory for the "
        f"temporary store, not {scratch!r}"
    )


def keeps_in_memory(mode, shape, tile_voxels: int, budget_bytes: int) -> bool:
    """Whether pass 1's local labels stay in memory: forced, or (``"auto"``) when they fit the budget."""
    local_bytes = math.prod(shape) * local_label_dtype(tile_voxels).itemsize
    return mode == "memory" or (mode == "auto" and local_bytes <= budget_bytes)


def result_dtype(requested, n_objects, n_voxels):
    if requested is not None:
        if n_objects > np.iinfo(requested).max:
            raise ValueError(
                f"dtype {requested} cannot hold {n_objects} labels; pass dtype='int64' (or leave dtype=None)"
            )
        return requested
    if n_voxels < 2**31 and n_objects < 2**31:
        return np.dtype(np.int32)
    return np.dtype(np.int64)


def labels_to_host(image: da.Array, backend) -> bool:
    """Whether pass 2 brings the labels to the host: the image's chunks are not the backend's arrays."""
    return type(image._meta) is not type(backend.meta(np.int32, 0))


# ------------------------------------------------------------------------------------------------
# relabelling: local labels through a tile's lookup table


def relabel(local, lut, *, backend, to_host, in_place=False):
    """Pass 2 on one tile: map local labels through the tile's lookup table.

    ``in_place``: the caller owns ``local`` and may have it overwritten (on NumPy, when the
    lookup table has the local labels' dtype), which spares allocating, and faulting in, a
    second tile of labels.
    """
    xp = backend.xp
    local = backend.to_backend(local)
    if xp is not np:
        out = xp.take(lut, local)
    else:
        if in_place and local.dtype == lut.dtype and local.flags.c_contiguous and local.flags.writeable:
            out = local
        else:
            out = np.empty(local.shape, dtype=lut.dtype)
        flat_in, flat_out = local.reshape(-1), out.reshape(-1)
        for start in range(0, flat_in.size, TAKE_SLAB):
            piece = slice(start, start + TAKE_SLAB)
            # every local label indexes the table, so "clip" never clips; "raise" would buffer out
            np.take(lut, flat_in[piece], out=flat_out[piece], mode="clip")
    return backend.to_host(out) if to_host else out


class LocalTile:
    """One tile's local labels kept in memory between the passes; pass 2 maps them into a new array.

    Subclasses whose labels the labeller owns may map them in place (``label``'s ``_TileLabels``).
    """

    def __init__(self, array):
        self.array = array

    def to_global(self, lut, *, backend, to_host):
        return relabel(self.array, lut, backend=backend, to_host=to_host)


@sizeof.register(LocalTile)
def _sizeof_local_tile(tile):
    return sizeof(tile.array)


def _tile_to_global(tile, lut, *, backend, to_host):
    return tile.to_global(lut, backend=backend, to_host=to_host)


def _pair_to_global(pair, lut, *, backend, to_host):
    return pair[0].to_global(lut, backend=backend, to_host=to_host)


def _scratch_to_global(store, index, lut, *, grid, backend, to_host):
    return relabel(store.read(index, grid), lut, backend=backend, to_host=to_host, in_place=True)


# ------------------------------------------------------------------------------------------------
# where pass 1's local labels wait: one interface, three kinds


class LocalLabels:
    """Pass 1's local labels, wherever they wait: ``task(index, lookup)`` maps tile ``index`` (pass 2).

    ``dependencies`` are the collections whose keys those tasks read (none when the tasks carry
    their data). The mapped tiles come back on the host when ``to_host``, else as the backend's arrays.
    """

    dependencies: tuple = ()

    def __init__(self, relabel_task, *, backend, to_host):
        self._relabel = functools.partial(relabel_task, backend=backend, to_host=to_host)
        self.backend, self.to_host = backend, to_host

    def meta(self, dtype, ndim):
        """The meta of the labels pass 2 gives."""
        return np.empty((0,) * ndim, dtype=dtype) if self.to_host else self.backend.meta(dtype, ndim)


class TilesInGraph(LocalLabels):
    """Tiles in this process (local schedulers): each :class:`LocalTile` travels inside its pass-2 task."""

    def __init__(self, tiles, **options):
        super().__init__(_tile_to_global, **options)
        self.tiles = tiles

    def task(self, index, lookup):
        return (self._relabel, self.tiles[index], lookup)


class PersistedTiles(LocalLabels):
    """Tiles persisted on a dask.distributed cluster: blocks of ``(LocalTile, summary)`` on the workers."""

    def __init__(self, array: da.Array, **options):
        super().__init__(_pair_to_global, **options)
        self.array, self.dependencies = array, (array,)

    def task(self, index, lookup):
        return (self._relabel, (self.array.name, *index), lookup)


class ScratchTiles(LocalLabels):
    """Tiles in a scratch store, read back by their pass-2 task (mapped in place: the read is its own)."""

    def __init__(self, store: ScratchLabels, grid: TileGrid, **options):
        super().__init__(functools.partial(_scratch_to_global, grid=grid), **options)
        self.store = store

    def task(self, index, lookup):
        return (self._relabel, self.store, index, lookup)


# ------------------------------------------------------------------------------------------------
# pass 1


@dataclass
class Pass1:
    """What pass 1 leaves: the local labels, and per tile its summary (a value, or a task reading it
    from ``local``'s persisted blocks, whose keys are then among ``local.dependencies``)."""

    local: LocalLabels
    summaries: dict = field(default_factory=dict)

    def summary_layer(self, name) -> dict:
        """Graph entries ``(name, *index)`` giving each tile's summary."""
        return {(name, *index): summary for index, summary in self.summaries.items()}

    def gather(self, name) -> dict:
        """Every tile's summary, here (computed from the workers when they are persisted there)."""
        if not self.local.dependencies:
            return dict(self.summaries)
        dsk = self.summary_layer(name)
        everything = f"{name}-all"
        dsk[everything] = (_collect, list(self.summaries), [(name, *index) for index in self.summaries])
        graph = HighLevelGraph.from_collections(everything, dsk, dependencies=self.local.dependencies)
        return Delayed(everything, graph).compute(optimize_graph=False)


def _collect(indices, results):
    return dict(zip(indices, results))


def _kept_in_memory(source, index, *, run, keep):
    """One tile's pass 1, its local labels kept in memory: ``(keep(local labels), summary)``."""
    local, summary = run(source, index)
    return keep(local), summary


def _written_to_scratch(source, index, *, run, store, grid, backend):
    """One tile's pass 1 streaming its local labels to ``store``: write them, return the summary."""
    local, summary = run(source, index)
    store.write(index, grid, backend.to_host(local).astype(store.dtype, copy=False))
    return summary


def _blocks(name, task, sources, grid, dependencies) -> da.Array:
    """An internal array collection whose block ``index`` is ``task(sources[index], index)``."""
    dsk = {(name, *index): (task, sources[index], index) for index in grid.indices()}
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=dependencies)
    return da.Array(graph, name, grid.chunks, meta=np.empty((0,) * len(grid.shape), dtype=object))


def run_pass1(run, tiles: da.Array, grid: TileGrid, *, name, backend, to_host, in_memory, scratch_dir=None,
              budget_bytes=None, keep=LocalTile, by_value=None) -> Pass1:
    """Run ``run(tile, index) -> (local labels, summary)`` on every tile of ``tiles``.

    ``in_memory``: keep the local labels in memory, each wrapped by ``keep`` (a :class:`LocalTile`
    type), else write them to a scratch store in ``scratch_dir`` in batches that fit ``budget_bytes``.
    ``by_value()``: on the local schedulers and in memory, per tile a task that gives its voxels
    without ``tiles``' keys (or None: use them).
    """
    options = {"backend": backend, "to_host": to_host}
    keys = {index: (tiles.name, *index) for index in grid.indices()}
    if not in_memory:
        tile = tuple(max(c) for c in grid.chunks)
        store = ScratchLabels(grid.shape, tile, local_label_dtype(math.prod(tile)), where=scratch_dir)
        write = functools.partial(_written_to_scratch, run=run, store=store, grid=grid, backend=backend)
        summaries = {}
        in_flight = tiles_in_flight_for_chunks(tiles, budget_bytes, working_copies=3)
        run_bounded(_blocks(name, write, keys, grid, [tiles]), summaries.__setitem__, in_flight)
        return Pass1(ScratchTiles(store, grid, **options), summaries)
    kept = functools.partial(_kept_in_memory, run=run, keep=keep)
    if active_client() is None:
        sources = None if by_value is None else by_value()
        pass1 = _blocks(name, kept, keys, grid, [tiles]) if sources is None else _blocks(name, kept, sources, grid, [])
        gather = f"{name}-gather"
        dsk = {gather: (_collect, list(keys), [(name, *index) for index in keys])}
        graph = HighLevelGraph.from_collections(gather, dsk, dependencies=[pass1])
        results = Delayed(gather, graph).compute(optimize_graph=False)
        tiles_kept = TilesInGraph({i: r[0] for i, r in results.items()}, **options)
        return Pass1(tiles_kept, {i: r[1] for i, r in results.items()})
    # unoptimised: each tile's task must run once, on a worker, and stay there
    (pass1,) = dask.persist(_blocks(name, kept, keys, grid, [tiles]), optimize_graph=False)
    return Pass1(PersistedTiles(pass1, **options), {i: (operator.getitem, (pass1.name, *i), 1) for i in keys})


# ------------------------------------------------------------------------------------------------
# the merge's hand-off and pass 2


def number_objects(xp, counts, order_keys, pairs, merger):
    """Global label of every piece (int64, index = piece id - 1), each tile's piece-id range, and n.

    ``counts``: tile index -> its number of pieces, in tile raster order (piece ids follow it);
    ``order_keys``: tile index -> its pieces' order keys; ``pairs(offsets)``: the piece ids ``(first,
    second)`` of pieces that belong to one object, where a piece's id is ``offsets[tile]`` plus its
    local label (from 1).
    """
    offsets, ranges, total = {}, {}, 0
    for index, n in counts.items():
        offsets[index], ranges[index] = total, (total, total + n)
        total += n
    keys = [order_keys[index] for index, n in counts.items() if n]
    keys = xp.concatenate(keys) if keys else xp.zeros(0, dtype=np.int64)
    first, second = pairs(offsets)
    label_of_piece, n_objects = number_pieces(xp, keys, first, second, merger)
    return label_of_piece, ranges, n_objects


def pass2(local: LocalLabels, grid: TileGrid, label_of_piece, piece_ranges, name) -> da.Array:
    """The lazy result: every tile's local labels through its lookup table (``label_of_piece``'s dtype)."""
    xp, out_dtype = local.backend.xp, label_of_piece.dtype
    zero = xp.zeros(1, dtype=out_dtype)
    dsk = {}
    for index, (start, stop) in piece_ranges.items():
        lut = xp.concatenate([zero, label_of_piece[start:stop]])  # local label -> global label
        dsk[(name, *index)] = local.task(index, lut)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=list(local.dependencies))
    return da.Array(graph, name, grid.chunks, meta=local.meta(out_dtype, len(grid.shape)))


__all__ = [
    "LocalLabels", "LocalTile", "Pass1", "PersistedTiles", "SCRATCH_CHOICES", "ScratchTiles", "TAKE_SLAB",
    "TilesInGraph", "check_scratch", "keeps_in_memory", "labels_to_host", "number_objects", "pass2", "relabel",
    "result_dtype", "run_pass1",
]
