"""map_labels' pass 1 on one window and the matching of pieces by overlap (see ``_stitch`` for the rule).

Pass 1 keeps, besides the core's local labels, a :class:`StitchSummary`: one first-voxel key per piece
and the *overlap data* (the window's piece ids where it covers other tiles' cores, and the bands of the
core that other windows cover). One small task per tile then matches its pieces with its neighbours'
(:func:`match_tile`, IoU counted vectorised by :func:`matched_pieces`); :func:`match_all` runs them and
:func:`matched_pairs` turns their matches into the piece-id pairs the merge joins.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from gpu_tiler._backends import namespace_of, to_numpy
from gpu_tiler.labels._tiles import TileGrid, face_dtype, local_label_dtype

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
# pass 1: one window


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
    # the overlap data waits on the host for the matching (device memory holds only tiles in flight)
    summary.halo, summary.bands = _packed_to_host(backend, (summary.halo, summary.bands), compact)
    return local, summary


def _packed_to_host(backend, groups, dtype):
    """The arrays of ``groups`` (dicts) on the host, moved in one transfer."""
    arrays = [a for group in groups for a in group.values()]
    if not arrays or not backend.is_device:
        return groups
    xp = backend.xp
    flat = backend.to_host(xp.concatenate([a.reshape(-1) for a in arrays]).astype(dtype, copy=False))
    out, start = [], 0
    for group in groups:
        moved = {}
        for key, a in group.items():
            moved[key] = flat[start : start + a.size].reshape(a.shape)
            start += a.size
        out.append(moved)
    return tuple(out)


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


def _count_of(summary):
    return summary.n_labels


def _collect(indices, results):
    return dict(zip(indices, results))


def match_all(dsk, dependencies, summary_name, indices, grid, halo, min_overlap, token):
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


def matched_pairs(xp, results, offsets):
    """The piece ids ``(first, second)`` that ``match_all``'s matches join, given each tile's first
    piece id: gathered on the host (where the matching ran), moved to ``xp`` once."""
    firsts, seconds = [], []
    for i, (_, _, matches) in results.items():
        for other, a, b in matches:
            firsts.append(to_numpy(a).astype(np.int64) + offsets[i])
            seconds.append(to_numpy(b).astype(np.int64) + offsets[other])
    if not firsts:
        return xp.zeros(0, dtype=np.int64), xp.zeros(0, dtype=np.int64)
    pairs = xp.asarray(np.stack([np.concatenate(firsts), np.concatenate(seconds)]))
    return pairs[0], pairs[1]


__all__ = ["StitchSummary", "match_all", "match_tile", "matched_pairs", "matched_pieces", "summarise_window"]
