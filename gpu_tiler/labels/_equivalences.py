"""Border equivalences: which pieces of neighbouring tiles touch under the structuring element.

Every pair of neighbouring voxels that lie in different tiles straddles at least one tile boundary
along some axis ``a``: one voxel is on the last slice of the tiles before the boundary, the other on
the first slice of the tiles after it. So for each axis and each boundary along it, the faces of
all tiles on either side are laid out as two global planes of *piece ids* (tile offset + local label,
0 for background), and for each structure offset ``d`` with ``d[a] == +1`` (the structure is
symmetric, so ``-d`` gives the same pairs reversed) the low plane is compared with the high plane
shifted by ``d``'s other components. Within a plane that shift crosses tile boundaries along the other
axes freely, so pieces that meet only across a tile edge or corner (diagonal connectivity) are paired
as well as those meeting across a face. Work and memory grow with the boundary area, not the voxels.
"""
from __future__ import annotations

import itertools

import numpy as np


def _plane(xp, summaries, grid, axis, k, side, piece_offsets):
    """Piece ids on the slice of tile layer ``k`` along ``axis`` (side 0: its first, 1: its last)."""
    other = [c for c in range(len(grid.shape)) if c != axis]
    starts = grid.starts
    # a 1-D image's "plane" is one voxel: kept 1-D so that masks and boolean indexing stay arrays
    plane = xp.zeros([grid.shape[c] for c in other] or [1], dtype=np.int64)
    for sub in itertools.product(*(range(grid.grid[c]) for c in other)):
        index = sub[:axis] + (k,) + sub[axis:]
        summary = summaries[index]
        if summary.n_labels == 0:
            continue
        face = summary.faces[(axis, side)]
        region = tuple(slice(starts[c][i], starts[c][i] + grid.chunks[c][i]) for c, i in zip(other, sub)) or (
            slice(None),
        )
        plane[region] = xp.where(face != 0, face.astype(np.int64) + piece_offsets[index], 0)
    return plane


def _shifted(shift):
    """Slices pairing low[p] with high[p + shift] over a plane, one per plane axis."""
    low, high = [], []
    for s in shift:
        low.append(slice(None, -1) if s == 1 else slice(1, None) if s == -1 else slice(None))
        high.append(slice(1, None) if s == 1 else slice(None, -1) if s == -1 else slice(None))
    return tuple(low), tuple(high)


def _drop_repeats(xp, first, second):
    """Drop pairs equal to the one before (a piece touching another along a border repeats a lot)."""
    if first.size < 2:
        return first, second
    keep = xp.empty(first.shape, dtype=bool)
    keep[0] = True
    keep[1:] = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
    return first[keep], second[keep]


def border_pairs(xp, summaries, grid, offsets, piece_offsets):
    """Pairs ``(first, second)`` of piece ids (int64) that touch across tile borders.

    ``summaries`` maps tile index -> :class:`~gpu_tiler.labels._tiles.TileSummary`, ``offsets`` are the
    structure's neighbour offsets and ``piece_offsets`` maps tile index -> the id of its label 0.
    """
    firsts, seconds = [], []
    ndim = len(grid.shape)
    for axis in range(ndim):
        forward = [d for d in offsets if d[axis] == 1]
        if not forward or grid.grid[axis] < 2:
            continue
        for k in range(grid.grid[axis] - 1):
            low = _plane(xp, summaries, grid, axis, k, 1, piece_offsets)
            high = _plane(xp, summaries, grid, axis, k + 1, 0, piece_offsets)
            for d in forward:
                low_part, high_part = _shifted(d[:axis] + d[axis + 1 :])
                a, b = low[low_part], high[high_part]
                touching = (a != 0) & (b != 0)
                first, second = _drop_repeats(xp, a[touching], b[touching])
                if first.size:
                    firsts.append(first)
                    seconds.append(second)
    if not firsts:
        empty = xp.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    return xp.concatenate(firsts), xp.concatenate(seconds)


__all__ = ["border_pairs"]
