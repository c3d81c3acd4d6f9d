"""The tiles :func:`~gpu_tiler.label` works on: planned from the budget, or the image's chunks, or given."""
from __future__ import annotations

import math

import dask.array as da
import numpy as np

from gpu_tiler._planning.plan import default_tiles_in_flight as planned_tiles_in_flight
from gpu_tiler._planning.plan import plan_tiles, regular_chunk_shape

#: Bytes per voxel a tile needs while it is labelled and relabelled, besides its source voxels:
#: local labels, the labeller's own working copy and the output tile.
LABEL_BYTES_PER_VOXEL = 3 * 4


def tiles_for(x: da.Array, backend, budget_bytes: int, tile_shape, regular: bool) -> da.Array:
    """Rechunk ``x`` to the tiles label works on.

    ``None``: planned like :func:`gpu_tiler.map_tiles` plans tiles: as large as ``tiles_in_flight``
    of them fit the budget (source voxels, local labels, a working copy, output labels), on the
    source's chunk edges, at least one per tile in flight; fewer, larger tiles mean fewer borders to
    merge and fewer tasks. ``"chunks"``: the source's own chunks (split only where one would not fit
    the budget). A tuple: that tile shape. ``regular``: tiles of one shape (but the last along each
    axis), as a scratch store's chunks need.
    """
    ndim = x.ndim
    if isinstance(tile_shape, str) and tile_shape == "chunks":
        biggest = math.prod(max(c) for c in x.chunks)
        per_tile = biggest * (x.dtype.itemsize + LABEL_BYTES_PER_VOXEL)
        if per_tile * planned_tiles_in_flight(backend.device_kind) > budget_bytes or biggest >= 2**31:
            tile_shape = None
    elif tile_shape is not None:
        tile = tuple(int(t) for t in tile_shape) if not isinstance(tile_shape, str) else ()
        if len(tile) != ndim or any(t < 1 for t in tile):
            raise ValueError(
                f"tile_shape must be None, 'chunks' or a length >= 1 for each of the {ndim} axes, not {tile_shape!r}"
            )
        x = x.rechunk(tuple(min(t, n) for t, n in zip(tile, x.shape)))
    if tile_shape is None:
        plan_budget = budget_bytes
        while True:
            plan = plan_tiles(
                x.shape, x.dtype, 0, plan_budget, out_dtype=np.int32, working_copies=2, chunks=x.chunks,
                backend=backend,
            )
            voxels = math.prod(plan.tile_shape)
            if voxels < 2**31:  # CuPy's labeller indexes with int32; local labels stay int32
                break
            plan_budget = int(plan_budget * (2**31 - 1) / voxels)
        if tuple(max(c) for c in x.chunks) != plan.tile_shape or regular_chunk_shape(x.chunks) is None:
            x = x.rechunk(plan.chunks)
    if regular and regular_chunk_shape(x.chunks) is None:
        x = x.rechunk(tuple(max(c) for c in x.chunks))
    return x


__all__ = ["LABEL_BYTES_PER_VOXEL", "tiles_for"]
