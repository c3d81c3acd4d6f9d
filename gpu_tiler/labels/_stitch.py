"""map_labels(): run a user's instance segmentation tile by tile and stitch its labels into one labelling.

``func(window, **kwargs)`` gets each tile grown by ``halo`` voxels per side (real neighbour data
inside the image, the boundary ``mode`` beyond it, as :func:`gpu_tiler.map_tiles` builds windows) and
returns integer labels for the whole window (0 is background; ids are arbitrary and need not agree
between tiles). Each tile keeps its function's labels on its **core** (the tile without the halo):
every distinct non-zero id there is one *piece*. Pieces of neighbouring tiles are then matched where
one tile's window overlaps the other's core, and matched pieces become one object.

**The matching rule.** For every ordered pair of tiles (A, B) whose regions overlap, let R be the part
of B's core that lies in A's window (a slab of A's halo, at most ``halo`` thick along the axis that
separates them). In R, ``a`` is the set of voxels that A's function gave some id that *also occurs in
A's core* (so ``a`` is A's view of one of A's pieces) and ``b`` the voxels of one of B's pieces. With
``I = |a ∩ b|`` counted in R, the two pieces are merged when

    IoU = I / (|a| + |b| - I) >= min_overlap          (all three counted inside R only)

Both directions (A's window over B's core, B's window over A's core) are tested and either one
merges. Equivalences are closed transitively with the union-find of :func:`gpu_tiler.label`
(``_merge``: NumPy, CUDA or OpenCL). Ids that occur only in A's halo say nothing about A's pieces and
take part only as background. With ``min_overlap > 0.5`` a piece matches at most one piece in any R
(two disjoint partners cannot both cover more than half of it).

**Numbering.** Objects are numbered 1..n in raster order of their first voxel (the smallest
C-order index over all their voxels), which is how ``scipy.ndimage.label`` numbers: when the
stitched objects are the components scipy finds, the arrays are identical. It is computed without a
pass over the whole image (``_numbering``): each piece's first voxel is found in its tile, and an
object's first voxel is the smallest of its pieces'.

**When the result is exact.** If ``func`` is "threshold, then connected components" (any
connectivity), every object whose bounding box spans at most ``halo + 1`` voxels along each axis lies
wholly inside the window of every tile whose core it touches, so all tiles see it whole, IoU is 1 in
every R, and the stitched labels equal the function on the whole image. Window components are
subsets of image components, so such a function's pieces are never merged across two different
objects, whatever their size.

**Limits.**

- An object wider than the halo is cut by a window's outer edge. If it stays connected inside each
  window (most convex shapes: a long bar, a big disc) the views agree in R and it is still stitched
  whole; if its parts connect only outside a window (a U whose bottom lies beyond the halo, a
  spiral), that tile sees several objects, the IoUs fall below ``min_overlap`` and the object stays
  split (never wrongly merged). A larger halo fixes it.
- Only overlap merges pieces, never mere contact: with ``halo=0`` along an axis, nothing is matched
  across tiles along it (each tile is labelled on its own), and two objects that merely touch across
  a border (by a face or only diagonally) stay apart unless ``func`` itself joins them in a window
  that holds both. Which contacts count as connected is ``func``'s choice (e.g. its ``structure``).
- A function that splits one object differently in two windows (a watershed whose seeds depend on
  what the window shows) gets what the overlaps support: pieces whose IoU reaches ``min_overlap`` are
  merged, others kept apart, so each tile's core always shows that tile's own decision, up to merges.
- A tile keeps its core labels only; a function whose labels depend on far context (more than
  ``halo`` away) sees only the window.

**Data flow and cost.** Pass 1 runs ``func`` once per window and keeps three things: the core's local
labels (consecutive, int32; in memory, or in a scratch zarr store when they do not fit the budget,
as :func:`gpu_tiler.label` does), one int64 first-voxel key per piece, and the *overlap data*: the
window's labels on its halo where it overlaps other tiles' cores (mapped to the tile's piece ids, kept
only where some piece reaches) and the ``halo``-thick bands of the core that other windows overlap.
That is ``O(halo x tile surface)`` per tile, never a whole neighbour's labels. One small task per tile
then counts, vectorised (``unique`` of pair codes, ``bincount`` of sizes), the overlaps of its window
with each neighbour's band and keeps the matched piece pairs; only those pairs and the keys reach the
merge, whose size grows with the objects that cross borders, not with the voxels or the tiles' labels.
Pass 2 maps each tile's local labels through its lookup table, lazily.
"""
from __future__ import annotations

import functools
import itertools
import math
import numbers
import operator
import uuid
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from .._backends import namespace_of, resolve_backend
from .._engine import _fit_chunks, as_dask, windows
from .._execute import run_bounded, tiles_in_flight_for_chunks
from .._io import check_unchanged
from .._provenance import stamps_of
from .._halo import normalize_modes
from .._planning import normalize_halo, plan_tiles
from ._label import _check_scratch, _pass2, _result_dtype
from ._merge import merger_for
from ._numbering import number_pieces
from ._scratch import ScratchLabels
from ._tiles import TileGrid, face_dtype, local_label_dtype

#: Ids are used directly as indices (bincount, scatter-min) while they are >= 0 and at most this
#: many times the core's voxels (plus a constant); larger or negative ids are compressed first.
_DIRECT_ID_FACTOR = 4
_DIRECT_ID_SLACK = 1 << 16


@dataclass
class StitchSummary:
    """What the matching and the merge need from one tile, besides its core's local labels."""

    n_labels: int
    #: int64 per local label 1..n: the C-order index in the image of the piece's first voxel
    order_keys: object
    #: neighbour tile index -> this tile's piece ids (0: none) on the part of that tile's core that
    #: this tile's window covers; only where some piece of this tile reaches
    halo: dict = field(default_factory=dict)
    #: (axis, side) -> local labels of the core's first (side 0) / last (side 1) ``halo[axis]`` slices
    bands: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# argument checks


def _check_func(func):
    if not callable(func):
        raise TypeError(f"map_labels: func must be a function tile -> integer labels, not {type(func).__name__}")


def _check_min_overlap(min_overlap) -> float:
    if (
        isinstance(min_overlap, bool)
        or not isinstance(min_overlap, numbers.Real)
        or not np.isfinite(min_overlap)
        or not 0 < min_overlap <= 1
    ):
        raise ValueError(f"min_overlap={min_overlap!r} must be a number in (0, 1] (the IoU two pieces need to merge)")
    return float(min_overlap)


def _func_name(func):
    return getattr(func, "__name__", repr(func))


def _checked_labels(out, window, func, halo):
    """``func``'s result for ``window``, or a clear error naming what is wrong with it."""
    name = _func_name(func)
    if isinstance(out, tuple):
        raise TypeError(
            f"map_labels: func {name!r} returned a tuple; it must return the label array only "
            f"(scipy.ndimage.label returns (labels, n): return its [0])"
        )
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape != window.shape:
        raise ValueError(
            f"map_labels: func {name!r} returned shape {shape} for a window of shape {window.shape} (a tile grown by "
            f"halo={halo} per side); func must return one label per voxel of its input"
        )
    if dtype is None or np.dtype(dtype).kind not in "iu":
        raise TypeError(
            f"map_labels: func {name!r} returned labels of dtype {dtype}; func must return an integer label image "
            f"(0 = background, one id per object), e.g. scipy.ndimage.label(mask)[0]"
        )
    return out


# ------------------------------------------------------------------------------------------------
# pass 1: one tile


def _ids_of(xp, core):
    """Non-negative small ids for the core's labels and a function giving the same ids to other values.

    Returns ``(ids, n_ids, to_ids)``: ``ids`` (flat, intp-like) with 0 for background and values in
    ``0..n_ids-1``; ``to_ids(values)`` maps label values of the same window to those ids, or to
    ``n_ids`` for values that do not occur in the core.
    """
    flat = core.reshape(-1)
    if flat.size == 0:
        return flat.astype(np.int64), 1, lambda v: xp.ones(v.shape, dtype=np.int64)
    low, high = int(flat.min()), int(flat.max())
    if low >= 0 and high <= _DIRECT_ID_FACTOR * flat.size + _DIRECT_ID_SLACK:
        n_ids = high + 1

        def to_ids(values):
            values = values.astype(np.int64, copy=False)
            return xp.where((values >= 0) & (values <= high), values, n_ids)

        return flat, n_ids, to_ids
    # arbitrary ids (negative, or far larger than the tile): rank them, 0 stays 0
    uniq, inverse = xp.unique(flat, return_inverse=True)
    inverse = inverse.reshape(-1)
    zero = int(xp.searchsorted(uniq, xp.zeros(1, dtype=uniq.dtype))[0])
    has_zero = zero < uniq.size and int(uniq[zero]) == 0
    rank = xp.arange(uniq.size, dtype=np.int64) + 1
    if has_zero:
        rank[zero] = 0
        rank[zero + 1 :] -= 1
    n_ids = int(uniq.size) + (0 if has_zero else 1)

    def to_ids(values):
        pos = xp.clip(xp.searchsorted(uniq, values.reshape(-1)), 0, uniq.size - 1)
        found = uniq[pos] == values.reshape(-1)
        return xp.where(found, rank[pos], n_ids).reshape(values.shape)

    return rank[inverse], n_ids, to_ids


def _first_positions(xp, ids, n_ids):
    """For each id 0..n_ids-1, the smallest flat position holding it (``ids.size`` where absent)."""
    index = np.int32 if ids.size < 2**31 - 1 else np.int64
    first = xp.full(n_ids, ids.size, dtype=index)
    xp.minimum.at(first, ids, xp.arange(ids.size, dtype=index))
    return first


def _neighbour_boxes(index, grid: TileGrid, halo):
    """Every other tile whose core meets this tile's window, with that overlap as global slices."""
    origin, shape = grid.origin(index), grid.tile_shape(index)
    per_axis = []
    for a, (o, t, h) in enumerate(zip(origin, shape, halo)):
        lo, hi = max(0, o - h), min(grid.shape[a], o + t + h)
        hits = []
        for j, (s, c) in enumerate(zip(grid.starts[a], grid.chunks[a])):
            start, stop = max(lo, s), min(hi, s + c)
            if start < stop:
                hits.append((j, slice(start, stop)))
        per_axis.append(hits)
    for combo in itertools.product(*per_axis):
        other = tuple(j for j, _ in combo)
        if other != tuple(index):
            yield other, tuple(box for _, box in combo)


def summarise_window(labels, index, *, grid: TileGrid, halo, backend):
    """Pass 1 on one tile, after ``func``: ``(local core labels, StitchSummary)``."""
    xp = backend.xp
    core = labels[tuple(slice(h, h + t) for h, t in zip(halo, grid.tile_shape(index)))]
    core = xp.ascontiguousarray(core)
    ids, n_ids, to_ids = _ids_of(xp, core)
    first = _first_positions(xp, ids, n_ids)
    present = first < ids.size
    present[0] = False
    present_ids = xp.flatnonzero(present)
    # local labels 1..n in raster order of the pieces' first voxels
    order = xp.argsort(first[present_ids])
    n_labels = int(present_ids.size)
    local_dtype = local_label_dtype(core.size)
    lut = xp.zeros(n_ids + 1, dtype=local_dtype)  # the extra id: values absent from the core
    lut[present_ids[order]] = xp.arange(1, n_labels + 1, dtype=local_dtype)
    local = lut[ids].reshape(core.shape)
    origin = grid.origin(index)
    keys = xp.zeros(n_labels, dtype=np.int64)
    if n_labels:
        coords = xp.unravel_index(first[present_ids[order]].astype(np.int64), core.shape)
        strides = [math.prod(grid.shape[a + 1 :]) for a in range(len(grid.shape))]
        for a, c in enumerate(coords):
            keys += (c.astype(np.int64) + origin[a]) * strides[a]
    compact = face_dtype(n_labels)
    summary = StitchSummary(n_labels, keys)
    if n_labels == 0:
        return local, summary
    window_origin = tuple(o - h for o, h in zip(origin, halo))
    for other, box in _neighbour_boxes(index, grid, halo):
        view = labels[tuple(slice(b.start - w, b.stop - w) for b, w in zip(box, window_origin))]
        mapped = lut[to_ids(view)]
        if bool(mapped.any()):
            summary.halo[other] = mapped.astype(compact)
    for a, h in enumerate(halo):
        if h == 0:
            continue
        depth = min(h, core.shape[a])
        lead = (slice(None),) * a
        if index[a] > 0:
            summary.bands[(a, 0)] = local[lead + (slice(0, depth),)].astype(compact)
        if index[a] < grid.grid[a] - 1:
            summary.bands[(a, 1)] = local[lead + (slice(core.shape[a] - depth, None),)].astype(compact)
    return local, summary


def _label_window(window, func, kwargs, halo, backend):
    tile = backend.to_backend(window)
    return _checked_labels(func(tile, **kwargs), tile, func, halo)


def stitch_pass1(window, index, *, func, kwargs, grid, halo, backend):
    """Pass 1 keeping local labels in memory: ``(local core labels, summary)`` of one tile."""
    return summarise_window(_label_window(window, func, kwargs, halo, backend), index, grid=grid, halo=halo,
                            backend=backend)


def stitch_pass1_to_scratch(window, index, *, func, kwargs, grid, halo, backend, scratch):
    """Pass 1 streaming local labels to a scratch store: write them, return the summary."""
    local, summary = stitch_pass1(window, index, func=func, kwargs=kwargs, grid=grid, halo=halo, backend=backend)
    scratch.write(index, grid, backend.to_host(local).astype(scratch.dtype, copy=False))
    return summary


# ------------------------------------------------------------------------------------------------
# matching: one small task per tile, on its overlap data and its neighbours' bands


def _band_for(index, other, box, grid: TileGrid, halo):
    """``(axis, side)`` of ``other``'s band holding ``box`` and the box's slices in that band."""
    axis = next(a for a, (i, j) in enumerate(zip(index, other)) if i != j)
    side = 0 if other[axis] > index[axis] else 1
    origin, shape = grid.origin(other), grid.tile_shape(other)
    depth = min(halo[axis], shape[axis])
    where = []
    for a, b in enumerate(box):
        start = origin[a] if a != axis or side == 0 else origin[a] + shape[a] - depth
        where.append(slice(b.start - start, b.stop - start))
    return (axis, side), tuple(where)


def matched_pieces(xp, mine, theirs, n_mine: int, n_theirs: int, min_overlap: float):
    """Pairs ``(a, b)`` of local ids whose IoU inside one overlap region is at least ``min_overlap``.

    ``mine`` and ``theirs`` are the two tiles' ids on the same region (0: no piece). Counting is
    vectorised: one ``unique`` over the region's pair codes, two ``bincount`` for the sizes.
    """
    a = mine.reshape(-1).astype(np.int64)
    b = theirs.reshape(-1).astype(np.int64)
    both = (a != 0) & (b != 0)
    if not bool(both.any()):
        empty = xp.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    codes, inter = xp.unique(a[both] * (n_theirs + 1) + b[both], return_counts=True)
    pa, pb = codes // (n_theirs + 1), codes % (n_theirs + 1)
    size_a = xp.bincount(a, minlength=n_mine + 1)[pa]
    size_b = xp.bincount(b, minlength=n_theirs + 1)[pb]
    union = size_a + size_b - inter
    keep = inter >= min_overlap * union
    return pa[keep], pb[keep]


def match_tile(summary, bands, counts, *, index, neighbours, grid, halo, min_overlap):
    """Tile ``index``'s matches with each neighbour, and what numbering needs from the tile.

    ``bands`` and ``counts`` are, per tile in ``neighbours``, the band of its core that this tile's
    window overlaps and its number of pieces. Returns ``(n_labels, order_keys, [(neighbour, own local
    ids, neighbour's local ids), ...])``.
    """
    out = []
    boxes = dict(_neighbour_boxes(index, grid, halo))
    for other, band, n_theirs in zip(neighbours, bands, counts):
        mine = summary.halo.get(other)
        if mine is None or band is None:
            continue
        _, where = _band_for(index, other, boxes[other], grid, halo)
        a, b = matched_pieces(namespace_of(mine), mine, band[where], summary.n_labels, n_theirs, min_overlap)
        if a.size:
            out.append((other, a, b))
    return summary.n_labels, summary.order_keys, out


def _band_of(summary, axis, side):
    return summary.bands.get((axis, side))


def _collect(indices, results):
    return dict(zip(indices, results))


def _count_of(summary):
    return summary.n_labels


# ------------------------------------------------------------------------------------------------
# the public function


def map_labels(
    func,
    image,
    halo,
    *,
    mode="reflect",
    tile_shape=None,
    budget=None,
    min_overlap=0.5,
    backend=None,
    merger=None,
    scratch="auto",
    **kwargs,
):
    """Run an instance-segmentation ``func`` tile by tile with a halo; stitch its labels into one labelling.

    ``func(window, **kwargs)`` receives a backend array (NumPy, or CuPy on a GPU): a tile grown by
    ``halo`` voxels per side (an int, or one per axis; real neighbour data inside the image, the
    scipy.ndimage boundary ``mode`` beyond it) and returns integer labels of the same shape (0 is
    background; any ids, which need not agree between calls). Returns ``(labels, n)``: lazy int32
    labels (int64 when needed) with objects numbered 1..n in raster order of their first voxel, as
    ``scipy.ndimage.label`` numbers them, and the number of objects ``n`` (an int, computed now).

    Each tile keeps ``func``'s labels on its core; pieces of neighbouring tiles are merged when, in
    the region where one tile's window overlaps the other's core, their intersection over union is
    at least ``min_overlap`` (default 0.5), with the union-find of :func:`gpu_tiler.label`. For
    "threshold + connected components" functions this equals the function on the whole image for
    every object whose bounding box spans at most ``halo + 1`` voxels per axis (and larger ones that
    stay connected inside each window); objects are never merged across two objects of the image.
    See ``gpu_tiler.labels._stitch`` for the exact rule, its limits, and what data moves.

    Tiles are planned like :func:`gpu_tiler.map_tiles` plans them from ``budget`` (or given as
    ``tile_shape``). ``backend``: ``"numpy"``, ``"cupy"`` or None (configured/auto). ``merger``: the
    union-find (``"numpy"``, ``"cuda"``, ``"opencl"``; default: CUDA on CuPy, NumPy on the host).
    ``scratch``: where the tiles' local labels wait for pass 2, as for :func:`gpu_tiler.label`
    (``"auto"``, ``"memory"``, ``"disk"`` or a directory). Other keyword arguments go to ``func``.
    """
    _check_func(func)
    x = as_dask(image)
    if x.ndim == 0:
        raise ValueError("image must have at least one axis; got a 0-d value")
    halo = normalize_halo(halo, x.ndim)
    modes = normalize_modes(mode, x.ndim)
    min_overlap = _check_min_overlap(min_overlap)
    scratch_mode, scratch_dir = _check_scratch(scratch)
    chosen = resolve_backend(x, backend=backend)
    merge = merger_for(chosen, merger)
    if math.prod(x.shape) == 0:
        return da.zeros(x.shape, dtype=np.int32, chunks=x.chunks, meta=chosen.meta(np.int32, x.ndim)), 0
    # the window, func's labels (up to int64) and their working copies, the local labels out
    plan = plan_tiles(
        x.shape, x.dtype, halo, budget, out_dtype=np.int64, working_copies=3, chunks=x.chunks, backend=chosen,
        tile_shape=tile_shape,
    )
    grid = TileGrid(tuple(x.shape), tuple(tuple(int(c) for c in cs) for cs in plan.chunks))
    wins = windows(_fit_chunks(x, plan.tile_shape), grid.chunks, halo, modes, 0)
    budget_bytes = plan.budget_bytes
    local_bytes = math.prod(x.shape) * local_label_dtype(math.prod(plan.tile_shape)).itemsize
    in_memory = scratch_mode == "memory" or (scratch_mode == "auto" and local_bytes <= budget_bytes)
    token = uuid.uuid4().hex[:16]
    indices = list(itertools.product(*(range(n) for n in grid.grid)))
    common = {"func": func, "kwargs": kwargs, "grid": grid, "halo": halo, "backend": chosen}
    meta = np.empty((0,) * x.ndim, dtype=object)
    summary_name = f"gpu_tiler-map-labels-summary-{token}"
    dsk = {}
    inputs = stamps_of(x)  # the stored inputs as pass 1 reads them
    if in_memory:
        name = f"gpu_tiler-map-labels-pass1-{token}"
        run = functools.partial(stitch_pass1, **common)
        pass1_dsk = {(name, *i): (run, (wins.name, *i), i) for i in indices}
        pass1 = da.Array(HighLevelGraph.from_collections(name, pass1_dsk, dependencies=[wins]), name, grid.chunks,
                         meta=meta)
        (pass1,) = dask.persist(pass1, optimize_graph=False)
        for i in indices:
            dsk[(summary_name, *i)] = (operator.getitem, (pass1.name, *i), 1)
        dependencies, store = [pass1], None
    else:
        tile = tuple(max(c) for c in grid.chunks)
        store = ScratchLabels(grid.shape, tile, local_label_dtype(math.prod(tile)), where=scratch_dir)
        name = f"gpu_tiler-map-labels-pass1-{token}"
        run = functools.partial(stitch_pass1_to_scratch, scratch=store, **common)
        pass1_dsk = {(name, *i): (run, (wins.name, *i), i) for i in indices}
        summaries_array = da.Array(HighLevelGraph.from_collections(name, pass1_dsk, dependencies=[wins]), name,
                                   grid.chunks, meta=meta)
        summaries = {}
        run_bounded(summaries_array, summaries.__setitem__, tiles_in_flight_for_chunks(wins, budget_bytes, 3))
        for i in indices:
            dsk[(summary_name, *i)] = summaries[i]
        dependencies, pass1 = [], None
    check_unchanged(inputs, stamps_of(x), "it was being segmented")

    results = _match_all(dsk, dependencies, summary_name, indices, grid, halo, min_overlap, token)
    label_of_piece, piece_ranges, n_objects = _merge_matches(chosen.xp, results, indices, merge)
    out_dtype = _result_dtype(None, n_objects, math.prod(grid.shape))
    name = f"gpu_tiler-map-labels-{token}"
    return _pass2(x, grid, chosen, label_of_piece.astype(out_dtype), piece_ranges, (pass1, store), name), n_objects


def _match_all(dsk, dependencies, summary_name, indices, grid, halo, min_overlap, token):
    """Run one matching task per tile; gather its matches, piece count and first-voxel keys."""
    count_name, band_name = f"gpu_tiler-map-labels-count-{token}", f"gpu_tiler-map-labels-band-{token}"
    match_name, gather = f"gpu_tiler-map-labels-match-{token}", f"gpu_tiler-map-labels-matches-{token}"
    ndim = len(grid.shape)
    for i in indices:
        dsk[(count_name, *i)] = (_count_of, (summary_name, *i))
        for axis, side in itertools.product(range(ndim), (0, 1)):
            dsk[(band_name, *i, axis, side)] = (_band_of, (summary_name, *i), axis, side)
    for i in indices:
        neighbours, band_keys = [], []
        for other, box in _neighbour_boxes(i, grid, halo):
            (axis, side), _ = _band_for(i, other, box, grid, halo)
            neighbours.append(other)
            band_keys.append((band_name, *other, axis, side))
        run = functools.partial(match_tile, index=i, neighbours=tuple(neighbours), grid=grid, halo=halo,
                                min_overlap=min_overlap)
        dsk[(match_name, *i)] = (run, (summary_name, *i), band_keys, [(count_name, *o) for o in neighbours])
    dsk[gather] = (_collect, indices, [(match_name, *i) for i in indices])
    graph = HighLevelGraph.from_collections(gather, dsk, dependencies=dependencies)
    return Delayed(gather, graph).compute(optimize_graph=False)


def _merge_matches(xp, results, indices, merger):
    """Global label of every piece, each tile's piece-id range, and n (as ``_label._merge_pieces``)."""
    offsets, ranges, total = {}, {}, 0
    for i in indices:
        offsets[i] = total
        ranges[i] = (total, total + results[i][0])
        total += results[i][0]
    keys = [results[i][1] for i in indices if results[i][0]]
    order_keys = xp.concatenate(keys) if keys else xp.zeros(0, dtype=np.int64)
    firsts, seconds = [], []
    for i in indices:
        for other, a, b in results[i][2]:
            firsts.append(xp.asarray(a, dtype=np.int64) + offsets[i])
            seconds.append(xp.asarray(b, dtype=np.int64) + offsets[other])
    if firsts:
        first, second = xp.concatenate(firsts), xp.concatenate(seconds)
    else:
        first, second = xp.zeros(0, dtype=np.int64), xp.zeros(0, dtype=np.int64)
    label_of_piece, n_objects = number_pieces(xp, order_keys, first, second, merger)
    return label_of_piece, ranges, n_objects


__all__ = ["StitchSummary", "map_labels", "matched_pieces", "summarise_window"]
