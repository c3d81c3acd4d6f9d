"""map_regions: output-driven source windows.

Each output tile reads the bounding box of its pre-image under a transform (plus the interpolation's reach),
assembled from the source's chunks; output tiles are planned so the largest window fits the budget.
"""
from __future__ import annotations

import bisect
import contextlib
import functools
import itertools
import math
import threading
import uuid

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from gpu_tiler._backends import resolve_backend
from gpu_tiler._engine.tiles import _assemble_window, _combine_pieces
from gpu_tiler._io.provenance import function_token
from gpu_tiler._io.sources import as_dask, read_stored, reads_into, stored_source
from gpu_tiler._planning.halo import SCIPY_TO_NUMPY_PAD, axis_pieces, normalize_modes
from gpu_tiler._planning.plan import (
    MIN_PARALLEL_TILE,
    TilePlan,
    _resolve_budget,
    chunk_bounds,
    default_tiles_in_flight,
)
from gpu_tiler._registry import record


def region_indices(length: int, start: int, stop: int, mode: str) -> np.ndarray:
    """Source index of each position ``start .. stop-1`` of an axis of ``length`` (positions outside
    ``[0, length)`` extended as scipy.ndimage extends an image for ``mode``; -1 marks the constant)."""

    before, after = max(0, -start), max(0, stop - length)
    idx = np.arange(length, dtype=np.int64)
    if before or after:
        np_mode = SCIPY_TO_NUMPY_PAD[mode]
        if np_mode == "constant":
            idx = np.pad(idx, (before, after), mode="constant", constant_values=-1)
        else:
            idx = np.pad(idx, (before, after), mode=np_mode)
    return idx[start + before : stop + before]


class _Reads:
    """How each window is read from the source, and what reading it holds.

    A stored input (zarr, TIFF, ``.npy``: ``open``'s view of it) is read straight from the store, for
    each source chunk a window touches only the sub-box it needs, written into the window. A compressed
    chunk is still decoded whole, so each read holds the chunk's stored and decoded bytes while it
    runs; reads are limited to a few at a time per process (:class:`ReadSlots`), so this is counted per
    read slot, not per tile. Any other dask array is read through its chunks, which dask computes whole
    and holds until the window is assembled: counted per tile (NumPy arrays given in memory: their
    chunks are views of the array, free)."""

    def __init__(self, x: da.Array):
        self.itemsize = x.dtype.itemsize
        self.shape = tuple(x.shape)
        self.stored = stored_source(x)
        physical = getattr(self.stored, "chunks", None) if self.stored is not None else x.chunks
        self.chunked = self.stored is not None and physical is not None
        if self.chunked:
            physical = tuple(tuple(min(c, n - i) for i in range(0, n, c)) for c, n in zip(physical, x.shape))
        elif self.stored is not None:  # a memory-mapped .npy: any region is read as it is
            physical = tuple((n,) for n in x.shape)
        self.bounds = chunk_bounds(physical)
        self.edges = [e.tolist() for e in self.bounds]
        graph = x.__dask_graph__()
        layer = getattr(graph, "layers", {}).get(x.name)
        self.free = (self.stored is not None and not self.chunked) or (
            self.stored is None and layer is not None and not graph.dependencies.get(x.name)
            and all(isinstance(v, np.ndarray) for v in layer.values()))
        self.into = self.stored is not None and reads_into(self.stored)

    def _touched(self, region):
        """Per axis, the lengths of the source chunks the region reads."""
        out = []
        for a, (lo, hi) in enumerate(region):
            n, edges = self.shape[a], self.edges[a]
            if lo < 0 or hi > n:  # reach past the border: the chunks of what it maps to (reflect reads most)
                chunks = sorted({bisect.bisect_right(edges, int(i)) - 1 for i in region_indices(n, lo, hi, "reflect")})
            else:
                chunks = range(bisect.bisect_right(edges, lo) - 1, bisect.bisect_right(edges, hi - 1))
            out.append([edges[c + 1] - edges[c] for c in chunks])
        return out

    def costs(self, region, window_voxels: int):
        """``(per tile, per read, decoded)`` bytes of reading one window:

        - per tile: what a tile holds while its window is read, beyond the window (dask's whole chunks);
        - per read: what one read of a stored chunk holds while it runs: the chunk stored and decoded, and
          the sub-box copied out of it unless it is decoded straight into the window (inside the image);
        - decoded: the bytes decoded (or computed) to assemble the window, the work of reading it."""
        if self.free:
            return 0, 0, window_voxels * self.itemsize
        touched = self._touched(region)
        decoded = math.prod(sum(t) for t in touched) * self.itemsize
        if self.stored is None:
            return decoded, 0, decoded
        chunk = math.prod(max(t) for t in touched) * self.itemsize
        inside = all(0 <= lo and hi <= n for (lo, hi), n in zip(region, self.shape))
        return 0, 2 * chunk + (0 if self.into and inside else min(chunk, window_voxels * self.itemsize)), decoded


_SLOTS: dict[int, threading.Semaphore] = {}
_SLOTS_LOCK = threading.Lock()


class ReadSlots:
    """At most ``n`` stored chunks read at once in this process, by every map_regions result planned
    with ``n`` slots (a semaphore per ``n``, shared by the tasks that unpickle this in one process)."""

    def __init__(self, n: int):
        self.n = max(1, int(n))

    def __reduce__(self):
        return (ReadSlots, (self.n,))

    @contextlib.contextmanager
    def hold(self):
        with _SLOTS_LOCK:
            semaphore = _SLOTS.setdefault(self.n, threading.Semaphore(self.n))
        with semaphore:
            yield


def _region_cost(out_box, region, window_bytes, tile_bytes, slab=(0, 0), reads=None):
    """Bytes one tile holds (its window, tile, scratch and dask's chunks), what one of its reads holds,
    and the bytes decoded to read its window."""
    window = math.prod(b - a for a, b in region)
    tile = math.prod(b - a for a, b in out_box)
    per_tile, per_read, decoded = reads.costs(region, window) if reads is not None else (0, 0, window)
    return window * window_bytes + tile * tile_bytes + min(tile, slab[0]) * slab[1] + per_tile, per_read, decoded


def _boxes(chunks):
    edges = chunk_bounds(chunks)
    for index in itertools.product(*(range(len(c)) for c in chunks)):
        yield index, tuple((int(e[i]), int(e[i + 1])) for e, i in zip(edges, index))


def _chunks_for(shape, tile):
    out = []
    for n, t in zip(shape, tile):
        full, rest = divmod(n, t)
        out.append((t,) * full + ((rest,) if rest else ()))
    return tuple(out)


def _worst(costs):
    """The largest tile cost and the largest read cost among ``(tile, read)`` costs."""
    tile, read = 1, 0
    for t, r, *_ in costs:
        tile, read = max(tile, t), max(read, r)
    return tile, read


#: above this many tiles, planning halves the longest tile axis instead of trying each axis, and does not
#: refine the last cut (each evaluation of a tiling looks at every tile)
_SEARCHED_TILES = 512


def _halve(shape, evaluate, budget_bytes, wanted):
    """Halve tile axes until ``wanted`` of the most expensive tiles and one read fit the budget, each
    time the axis whose halving reads the least in all (the longest among equals; the longest while
    there are more than ``_SEARCHED_TILES`` tiles); then cut the longest axis for parallelism while
    tiles stay MIN_PARALLEL_TILE long. Halving overshoots by up to 2x, so the last axis halved is then
    cut in the fewest tiles that fit (a few counts tried, up to ``_SEARCHED_TILES`` tiles).
    ``evaluate(tile)`` gives ``((worst tile cost, worst read cost), bytes read by all tiles)``.
    Returns (tile, (worst tile cost, worst read cost), bytes read, tiles in flight)."""
    tile = [max(1, n) for n in shape]
    cost, read = evaluate(tile)
    last = None
    while cost[0] * wanted + cost[1] > budget_bytes:
        if max(tile) == 1:
            if sum(cost) > budget_bytes:
                raise ValueError(
                    f"a memory budget of {budget_bytes} bytes cannot hold one output voxel with its source window "
                    f"({sum(cost)} bytes): raise memory_budget to at least {sum(cost)} bytes")
            wanted = max(1, (budget_bytes - cost[1]) // cost[0])
            break
        tiles = math.prod(math.ceil(n / t) for n, t in zip(shape, tile))
        axes = [a for a in range(len(tile)) if tile[a] > 1]
        if tiles > _SEARCHED_TILES:  # many tiles: each evaluation is long; halve the longest axis
            axes = [max(axes, key=lambda a: (tile[a], -a))]
        options = []
        for axis in axes:
            trial = tile.copy()
            trial[axis] = math.ceil(tile[axis] / 2)
            options.append((*evaluate(trial)[::-1], -tile[axis], axis, trial))
        read, cost, _, last, tile = min(options, key=lambda o: o[:1] + o[2:4])
    if last is not None and math.prod(math.ceil(n / t) for n, t in zip(shape, tile)) <= _SEARCHED_TILES:
        fewest, most = math.ceil(shape[last] / (2 * tile[last] - 1)), math.ceil(shape[last] / tile[last])
        for count in sorted({fewest + (most - fewest) * i // 8 for i in range(8)} - {most}):
            trial = tile.copy()
            trial[last] = math.ceil(shape[last] / count)
            found = evaluate(trial)
            if trial[last] > tile[last] and found[0][0] * wanted + found[0][1] <= budget_bytes:
                tile, (cost, read) = trial, found
                break
    while math.prod(math.ceil(n / t) for n, t in zip(shape, tile)) < wanted:
        axis = max(range(len(tile)), key=lambda a: (tile[a], -a))
        if math.ceil(tile[axis] / 2) < MIN_PARALLEL_TILE:
            break
        tile[axis] = math.ceil(tile[axis] / 2)
        cost, read = evaluate(tile)
    return tuple(tile), cost, read, wanted


def _slots(cost, in_flight, budget_bytes):
    """Read slots: as many reads at once as the budget holds next to the tiles (at least one, at most one
    per tile in flight)."""
    if not cost[1]:
        return in_flight
    return max(1, min(in_flight, (budget_bytes - cost[0] * in_flight) // cost[1]))


def _plan(shape, tile, cost, in_flight, budget_bytes, dtype):
    """A TilePlan whose bytes per tile include its share of the read slots (so its peak is the total)."""
    slots = _slots(cost, in_flight, budget_bytes)
    per_tile = cost[0] + math.ceil(cost[1] * slots / in_flight)
    return TilePlan(shape, np.dtype(dtype), tuple(tile), (0,) * len(shape), in_flight, per_tile, budget_bytes), slots


def plan_regions(output_shape, source_region, *, window_bytes: int, tile_bytes: int, budget=None, backend=None,
                 tile_shape=None, tiles_in_flight=None, dtype=np.float32, slab=(0, 0),
                 reads: _Reads | None = None, out_work: int | None = None):
    """Plan output tiles for :func:`map_regions`: large tiles such that ``tiles_in_flight`` of the most
    expensive ones and one read of a stored chunk fit the budget, a tile costing ``window_bytes`` per
    voxel of its source window (``source_region(box)``, which depends on the tile), ``tile_bytes`` per
    voxel of the tile, ``slab`` ``(voxels, bytes)``: bytes per voxel of scratch for at most that many
    voxels at once, and dask's chunks its window is read from (``reads``). Tile axes are halved where
    that reads the least source data in all (windows overlap, and source chunks are decoded whole).
    Returns the plan and the number of reads allowed at once (the budget left next to the tiles).

    When reading costs more than the windows (source chunks larger than windows), fewer tiles in
    flight with larger tiles read less in all: unless ``tiles_in_flight`` is given, every count from
    the default down to one is tried and the plan with the least estimated time is kept (bytes read,
    at the reads allowed at once, against bytes read plus ``out_work`` per output voxel, default
    ``tile_bytes``, at the tiles in flight)."""

    shape = tuple(int(n) for n in output_shape)
    budget_bytes, kind = _resolve_budget(budget, backend)
    wanted = int(tiles_in_flight if tiles_in_flight is not None else default_tiles_in_flight(kind))
    if wanted < 1:
        raise ValueError(f"tiles_in_flight must be >= 1, not {wanted}")

    known = {}

    def evaluate(tile):
        key = tuple(tile)
        if key not in known:
            costs = [_region_cost(box, source_region(box), window_bytes, tile_bytes, slab, reads)
                     for _, box in _boxes(_chunks_for(shape, tile))]
            known[key] = _worst(costs), sum(c[2] for c in costs)
        return known[key]

    if tile_shape is not None:
        tile = tuple(min(max(1, int(t)), max(n, 1)) for t, n in zip(tile_shape, shape))
        if len(tile) != len(shape):
            raise ValueError(f"tile_shape {tile_shape} must give a length for each of the {len(shape)} output axes")
        cost = evaluate(tile)[0]
        if sum(cost) > budget_bytes:
            raise ValueError(f"tile_shape {tile} needs {sum(cost)} bytes with its source window, more than the "
                             f"memory budget of {budget_bytes} bytes: raise memory_budget or pass a smaller tile_shape")
        in_flight = max(1, min(wanted, (budget_bytes - cost[1]) // cost[0]))
        return _plan(shape, tile, cost, in_flight, budget_bytes, dtype)
    choices = [wanted] if tiles_in_flight is not None or reads is None or reads.free else range(wanted, 0, -1)
    best = None
    computed = math.prod(shape) * (tile_bytes if out_work is None else out_work)
    for n in choices:
        tile, cost, read, in_flight = _halve(shape, evaluate, budget_bytes, n)
        seconds = max(read / _slots(cost, in_flight, budget_bytes), (read + computed) / in_flight)
        if best is None or seconds < best[0] * 0.95:  # fewer in flight only for clearly less time
            best = (seconds, tile, cost, in_flight)
    _, tile, cost, in_flight = best
    return _plan(shape, tile, cost, in_flight, budget_bytes, dtype)


def _run_region(window, *extras, func, out_box, src_box, backend, to_host, dtype, kwargs):
    moved = backend.to_backend(window)
    del window
    extra = [backend.to_backend(e) for e in extras]
    out = func(moved, *extra, out_box=out_box, src_box=src_box, **kwargs)
    want = tuple(b - a for a, b in out_box)
    if getattr(out, "shape", None) != want:
        raise ValueError(f"map_regions: {getattr(func, '__name__', func)!r} returned shape {getattr(out, 'shape', None)} "
                         f"for an output tile of shape {want}")
    if out.dtype != dtype:
        out = out.astype(dtype, copy=False)
    return backend.to_host(out) if to_host else out


def _read_window(stored, shape, dtype, cval, reads, slots):
    """One window read straight from a stored input: ``reads`` are (box, [(dst, src)]) per source chunk
    (box None: the constant fill), each box a sub-box of one chunk, read in turn, each in a read slot:
    into the window when the chunk gives one piece in order, else copied piece by piece."""
    out = np.empty(shape, dtype=dtype)
    for box, parts in reads:
        if box is None:
            for dst, _ in parts:
                out[dst] = cval
            continue
        with slots.hold():
            if len(parts) == 1 and all(s.step in (None, 1) for s in parts[0][1]):
                read_stored(stored, box, out=out[parts[0][0]])
                continue
            block = read_stored(stored, box)
            for dst, src in parts:
                out[dst] = block[src]
            del block
    return out


def _read_and_run(*extras, stored, shape, dtype, cval, reads, slots, run):
    return run(_read_window(stored, shape, dtype, cval, reads, slots), *extras)


def _index_range(s: slice, length: int):
    r = range(*s.indices(length))
    return r[0], r[-1], r.step


def _stored_reads(per_axis, bounds):
    """Group a window's pieces by source chunk: for each, the sub-box of the chunk its pieces need (global
    slices) and each piece's source relative to that sub-box; the constant fill first (box None)."""
    groups, constant = {}, []
    for combo in itertools.product(*per_axis):
        dst = tuple(p[0] for p in combo)
        if any(p[1] is None for p in combo):
            constant.append((dst, None))
            continue
        groups.setdefault(tuple(p[1] for p in combo), []).append((dst, tuple(p[2] for p in combo)))
    reads = [(None, constant)] if constant else []
    for chunk, parts in groups.items():
        lengths = [int(bounds[a][c + 1] - bounds[a][c]) for a, c in enumerate(chunk)]
        spans = [[_index_range(src[a], n) for _, src in parts] for a, n in enumerate(lengths)]
        low = [min(min(f, last) for f, last, _ in sp) for sp in spans]
        high = [max(max(f, last) for f, last, _ in sp) + 1 for sp in spans]
        box = tuple(slice(int(bounds[a][c]) + lo, int(bounds[a][c]) + hi)
                    for a, (c, lo, hi) in enumerate(zip(chunk, low, high)))
        moved = []
        for dst, src in parts:
            rel = []
            for a, s in enumerate(src):
                first, last, step = _index_range(s, lengths[a])
                first, last = first - low[a], last - low[a]
                rel.append(slice(first, last + 1) if step > 0 else slice(first, last - 1 if last > 0 else None, -1))
            moved.append((dst, tuple(rel)))
        reads.append((box, moved))
    return reads


def map_regions(func, image, source_region, *, output_shape, dtype=None, mode="constant", cval=0.0, aligned=(),
                window_bytes=None, tile_bytes=None, slab=(0, 0), out_work=None, budget=None, tile_shape=None,
                chunks=None, tiles_in_flight=None, backend=None, name=None, **kwargs) -> da.Array:
    """Output-driven tiling: each output tile is computed from a source window that depends on the tile.

    ``source_region(box)`` gets an output tile as per-axis ``(start, stop)`` and returns the source
    region it needs, per source axis ``(start, stop)`` (it may reach past the image; what lies outside
    is filled as scipy.ndimage extends an image for ``mode``, ``cval`` for the constant modes).
    ``func(window, *aligned_blocks, out_box=box, src_box=region, **kwargs)`` gets that window as a
    backend array (NumPy or CuPy) and returns the output tile (shape of ``box``). ``aligned`` are dask
    arrays whose trailing axes are ``output_shape`` (e.g. coordinates); each tile gets its block of them.

    Output tiles are planned (:func:`plan_regions`) so the most expensive tile — ``window_bytes`` per
    window voxel (default: the image's itemsize x 3), ``tile_bytes`` per output voxel (default: the
    output itemsize), the scratch of ``slab`` (see :func:`plan_regions`) and what reading its window
    holds — times the tiles in flight fits the budget; ``chunks`` gives the tiles instead. A stored input (``gt.open`` of zarr, TIFF,
    ``.npy``) is read straight from the store, only the sub-box of each chunk a window needs, one chunk
    at a time; other dask arrays through their chunks (held whole while a window is assembled).
    """
    x = as_dask(image)
    output_shape = tuple(int(n) for n in output_shape)
    out_dtype = np.dtype(dtype) if dtype is not None else x.dtype
    modes = normalize_modes(mode, x.ndim)
    chosen = resolve_backend(x, backend=backend)
    window_bytes = x.dtype.itemsize * 3 if window_bytes is None else int(window_bytes)
    tile_bytes = out_dtype.itemsize if tile_bytes is None else int(tile_bytes)
    reads = _Reads(x) if math.prod(x.shape) else None
    if chunks is not None:
        chunks = tuple(tuple(int(c) for c in cs) for cs in chunks)
        if tuple(sum(c) for c in chunks) != output_shape:
            raise ValueError(f"chunks {chunks} do not cover the output shape {output_shape}")

        budget_bytes, kind = _resolve_budget(budget, chosen)
        cost = _worst(_region_cost(box, source_region(box), window_bytes, tile_bytes, slab, reads)
                      for _, box in _boxes(chunks))
        if sum(cost) > budget_bytes:
            raise ValueError(f"an output tile with its source window needs {sum(cost)} bytes, more than the memory "
                             f"budget of {budget_bytes} bytes: raise memory_budget or use smaller chunks")
        wanted = tiles_in_flight if tiles_in_flight is not None else default_tiles_in_flight(kind)
        plan, slots = _plan(output_shape, tuple(max(c) for c in chunks), cost,
                            max(1, min(int(wanted), (budget_bytes - cost[1]) // cost[0])), budget_bytes, out_dtype)
    else:
        plan, slots = plan_regions(output_shape, source_region, window_bytes=window_bytes, tile_bytes=tile_bytes,
                                   budget=budget, backend=chosen, tile_shape=tile_shape,
                                   tiles_in_flight=tiles_in_flight, dtype=out_dtype, slab=slab, reads=reads,
                                   out_work=out_work)
        chunks = plan.chunks
    if math.prod(output_shape) == 0 or math.prod(x.shape) == 0:
        if math.prod(output_shape) and math.prod(x.shape) == 0:
            raise ValueError(f"cannot compute a {output_shape} output from an empty image of shape {x.shape}")
        return da.zeros(output_shape, dtype=out_dtype, chunks=chunks)
    aligned = [as_dask(a) for a in aligned]
    for a in aligned:
        if a.shape[a.ndim - len(output_shape):] != output_shape:
            raise ValueError(f"aligned array of shape {a.shape} does not end in the output shape {output_shape}")
    aligned = [a.rechunk(tuple((n,) for n in a.shape[: a.ndim - len(output_shape)]) + chunks) for a in aligned]
    if name is None:
        code = function_token(func)
        name = f"gpu_tiler-{getattr(func, '__name__', 'region')}-" + tokenize(
            code if code is not None else uuid.uuid4().hex, x.name, [a.name for a in aligned], output_shape,
            modes, cval, out_dtype, chunks, chosen.name, kwargs)
    wname = "gpu_tiler-region-window-" + name.rsplit("-", 1)[-1]
    stored = reads.stored
    bounds = reads.bounds if stored is not None else chunk_bounds(x.chunks)
    native = type(x._meta) is type(chosen.meta(x.dtype, 0))
    dsk = {}
    for index, box in _boxes(chunks):
        region = tuple((int(a), int(b)) for a, b in source_region(box))
        if len(region) != x.ndim or any(b <= a for a, b in region):
            raise ValueError(f"source_region gave {region} for output tile {box}; it must give a non-empty "
                             f"(start, stop) for each of the image's {x.ndim} axes")
        per_axis = [axis_pieces(region_indices(x.shape[a], lo, hi, modes[a]), bounds[a])
                    for a, (lo, hi) in enumerate(region)]
        extra_keys = [(a.name, *((0,) * (a.ndim - len(output_shape))), *index) for a in aligned]
        run = functools.partial(_run_region, func=func, out_box=box, src_box=region, backend=chosen,
                                to_host=not native, dtype=out_dtype, kwargs=kwargs)
        shape = tuple(b - a for a, b in region)
        if stored is not None:
            task = functools.partial(_read_and_run, stored=stored, shape=shape, dtype=x.dtype, cval=cval,
                                     reads=_stored_reads(per_axis, bounds), slots=ReadSlots(slots), run=run)
            dsk[(name, *index)] = (task, *extra_keys)
        else:
            keys, pieces = _combine_pieces(x.name, per_axis)
            dsk[(wname, *index)] = (_assemble_window, shape, cval, pieces, *keys)
            dsk[(name, *index)] = (run, (wname, *index), *extra_keys)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x, *aligned])
    meta = chosen.meta(out_dtype, len(output_shape)) if native else np.empty((0,) * len(output_shape), out_dtype)
    out = da.Array(graph, name, chunks, meta=meta)
    record(out, plan=plan)
    return out
