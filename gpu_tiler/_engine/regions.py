"""map_regions: output-driven source windows.

Each output tile reads the bounding box of its pre-image under a transform (plus the interpolation's reach),
assembled from the source's chunks; output tiles are planned so the largest window fits the budget.
"""
from __future__ import annotations

import functools
import itertools
import math
import uuid

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from gpu_tiler._backends import resolve_backend
from gpu_tiler._engine.tiles import _assemble_window, _combine_pieces
from gpu_tiler._io.provenance import function_token
from gpu_tiler._io.sources import as_dask
from gpu_tiler._planning.halo import SCIPY_TO_NUMPY_PAD, axis_pieces, normalize_modes
from gpu_tiler._planning.plan import (
    MIN_PARALLEL_TILE,
    TilePlan,
    _resolve_budget,
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


def _region_cost(out_box, region, window_bytes, tile_bytes):
    return (math.prod(b - a for a, b in region) * window_bytes
            + math.prod(b - a for a, b in out_box) * tile_bytes)


def _boxes(chunks):
    edges = [np.concatenate([[0], np.cumsum(c)]).astype(int) for c in chunks]
    for index in itertools.product(*(range(len(c)) for c in chunks)):
        yield index, tuple((int(e[i]), int(e[i + 1])) for e, i in zip(edges, index))


def _chunks_for(shape, tile):
    out = []
    for n, t in zip(shape, tile):
        full, rest = divmod(n, t)
        out.append((t,) * full + ((rest,) if rest else ()))
    return tuple(out)


def plan_regions(output_shape, source_region, *, window_bytes: int, tile_bytes: int, budget=None, backend=None,
                 tile_shape=None, tiles_in_flight=None, dtype=np.float32) -> TilePlan:
    """Plan output tiles for :func:`map_regions`: the largest tiles such that ``tiles_in_flight`` of the
    most expensive ones fit the budget, a tile costing ``window_bytes`` per voxel of its source window
    (``source_region(box)``, which depends on the tile) plus ``tile_bytes`` per voxel of the tile."""

    shape = tuple(int(n) for n in output_shape)
    budget_bytes, kind = _resolve_budget(budget, backend)
    wanted = int(tiles_in_flight if tiles_in_flight is not None else default_tiles_in_flight(kind))
    if wanted < 1:
        raise ValueError(f"tiles_in_flight must be >= 1, not {wanted}")

    def worst(tile):
        return max(_region_cost(box, source_region(box), window_bytes, tile_bytes)
                   for _, box in _boxes(_chunks_for(shape, tile)))

    if tile_shape is not None:
        tile = tuple(min(max(1, int(t)), max(n, 1)) for t, n in zip(tile_shape, shape))
        if len(tile) != len(shape):
            raise ValueError(f"tile_shape {tile_shape} must give a length for each of the {len(shape)} output axes")
        cost = worst(tile)
        if cost > budget_bytes:
            raise ValueError(f"tile_shape {tile} needs {cost} bytes with its source window, more than the memory "
                             f"budget of {budget_bytes} bytes: raise memory_budget or pass a smaller tile_shape")
        return TilePlan(shape, np.dtype(dtype), tile, (0,) * len(shape), max(1, min(wanted, budget_bytes // cost)),
                        cost, budget_bytes)
    tile = [max(1, n) for n in shape]
    cost = worst(tile)
    while cost * wanted > budget_bytes:
        if max(tile) == 1:
            if cost > budget_bytes:
                raise ValueError(
                    f"a memory budget of {budget_bytes} bytes cannot hold one output voxel with its source window "
                    f"({cost} bytes): raise memory_budget to at least {cost} bytes")
            wanted = max(1, budget_bytes // cost)
            break
        axis = max(range(len(tile)), key=lambda a: (tile[a], -a))
        tile[axis] = math.ceil(tile[axis] / 2)
        cost = worst(tile)
    # enough tiles for every tile in flight, while tiles stay at least MIN_PARALLEL_TILE long

    while math.prod(math.ceil(n / t) for n, t in zip(shape, tile)) < wanted:
        axis = max(range(len(tile)), key=lambda a: (tile[a], -a))
        if math.ceil(tile[axis] / 2) < MIN_PARALLEL_TILE:
            break
        tile[axis] = math.ceil(tile[axis] / 2)
        cost = worst(tile)
    return TilePlan(shape, np.dtype(dtype), tuple(tile), (0,) * len(shape), wanted, cost, budget_bytes)


def _run_region(window, *extras, func, out_box, src_box, backend, to_host, dtype, kwargs):
    moved = backend.to_backend(window)
    extra = [backend.to_backend(e) for e in extras]
    out = func(moved, *extra, out_box=out_box, src_box=src_box, **kwargs)
    want = tuple(b - a for a, b in out_box)
    if getattr(out, "shape", None) != want:
        raise ValueError(f"map_regions: {getattr(func, '__name__', func)!r} returned shape {getattr(out, 'shape', None)} "
                         f"for an output tile of shape {want}")
    if out.dtype != dtype:
        out = out.astype(dtype, copy=False)
    return backend.to_host(out) if to_host else out


def map_regions(func, image, source_region, *, output_shape, dtype=None, mode="constant", cval=0.0, aligned=(),
                window_bytes=None, tile_bytes=None, budget=None, tile_shape=None, chunks=None,
                tiles_in_flight=None, backend=None, name=None, **kwargs) -> da.Array:
    """Output-driven tiling: each output tile is computed from a source window that depends on the tile.

    ``source_region(box)`` gets an output tile as per-axis ``(start, stop)`` and returns the source
    region it needs, per source axis ``(start, stop)`` (it may reach past the image; what lies outside
    is filled as scipy.ndimage extends an image for ``mode``, ``cval`` for the constant modes).
    ``func(window, *aligned_blocks, out_box=box, src_box=region, **kwargs)`` gets that window as a
    backend array (NumPy or CuPy) and returns the output tile (shape of ``box``). ``aligned`` are dask
    arrays whose trailing axes are ``output_shape`` (e.g. coordinates); each tile gets its block of them.

    Output tiles are planned (:func:`plan_regions`) so the most expensive tile — ``window_bytes`` per
    window voxel (default: the image's itemsize x 3) plus ``tile_bytes`` per output voxel (default: the
    output itemsize) — times the tiles in flight fits the budget; ``chunks`` gives the tiles instead.
    """
    x = as_dask(image)
    output_shape = tuple(int(n) for n in output_shape)
    out_dtype = np.dtype(dtype) if dtype is not None else x.dtype
    modes = normalize_modes(mode, x.ndim)
    chosen = resolve_backend(x, backend=backend)
    window_bytes = x.dtype.itemsize * 3 if window_bytes is None else int(window_bytes)
    tile_bytes = out_dtype.itemsize if tile_bytes is None else int(tile_bytes)
    if chunks is not None:
        chunks = tuple(tuple(int(c) for c in cs) for cs in chunks)
        if tuple(sum(c) for c in chunks) != output_shape:
            raise ValueError(f"chunks {chunks} do not cover the output shape {output_shape}")

        budget_bytes, kind = _resolve_budget(budget, chosen)
        cost = max(_region_cost(box, source_region(box), window_bytes, tile_bytes) for _, box in _boxes(chunks))
        if cost > budget_bytes:
            raise ValueError(f"an output tile with its source window needs {cost} bytes, more than the memory budget of "
                             f"{budget_bytes} bytes: raise memory_budget or use smaller chunks")
        wanted = tiles_in_flight if tiles_in_flight is not None else default_tiles_in_flight(kind)
        plan = TilePlan(output_shape, out_dtype, tuple(max(c) for c in chunks), (0,) * len(output_shape),
                        max(1, min(int(wanted), budget_bytes // cost)), cost, budget_bytes)
    else:
        plan = plan_regions(output_shape, source_region, window_bytes=window_bytes, tile_bytes=tile_bytes,
                            budget=budget, backend=chosen, tile_shape=tile_shape, tiles_in_flight=tiles_in_flight,
                            dtype=out_dtype)
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
    bounds = [np.concatenate([[0], np.cumsum(c)]) for c in x.chunks]
    native = type(x._meta) is type(chosen.meta(x.dtype, 0))
    dsk = {}
    for index, box in _boxes(chunks):
        region = tuple((int(a), int(b)) for a, b in source_region(box))
        if len(region) != x.ndim or any(b <= a for a, b in region):
            raise ValueError(f"source_region gave {region} for output tile {box}; it must give a non-empty "
                             f"(start, stop) for each of the image's {x.ndim} axes")
        per_axis = [axis_pieces(region_indices(x.shape[a], lo, hi, modes[a]), bounds[a])
                    for a, (lo, hi) in enumerate(region)]
        keys, pieces = _combine_pieces(x.name, per_axis)
        dsk[(wname, *index)] = (_assemble_window, tuple(b - a for a, b in region), cval, pieces, *keys)
        extra_keys = [(a.name, *((0,) * (a.ndim - len(output_shape))), *index) for a in aligned]
        run = functools.partial(_run_region, func=func, out_box=box, src_box=region, backend=chosen,
                                to_host=not native, dtype=out_dtype, kwargs=kwargs)
        dsk[(name, *index)] = (run, (wname, *index), *extra_keys)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x, *aligned])
    meta = chosen.meta(out_dtype, len(output_shape)) if native else np.empty((0,) * len(output_shape), out_dtype)
    out = da.Array(graph, name, chunks, meta=meta)
    record(out, plan=plan)
    return out
