"""Pass 1 on one tile: local labels, the order key of each local label, and the tile's border faces.

The backend's labeller (``scipy.ndimage.label`` or ``cupyx.scipy.ndimage.label``) numbers a tile's
objects 1..n in the raster order of their first voxel *within the tile*. Since a tile's local
raster order is the global raster order restricted to the tile, that is also the order of their
first voxels in the image. To order labels of *different* tiles we need, for each label, the row
(all coordinates but the last) of its first voxel: two pieces whose first voxels lie in one image
row but in different tiles are ordered by the tiles' positions along the last axis, and pieces of
one tile that start in one row by their local labels. So each label gets the **order key**

    key = global raster index of (first row's coordinates, the tile's first column)

and sorting all pieces stably by key (tiles in raster order, local labels ascending within a tile)
gives the image's raster order of first voxels. The first row of every label comes from one cheap
reduction: the running maximum of the per-row maximum label is non-decreasing and label ``l`` first
appears in the first row where it reaches ``l``.

Faces are the tile's first and last slices along each axis the structure connects, kept only where a
neighbouring tile lies; they are all later passes need from the tile besides its local labels.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from gpu_tiler._planning.plan import chunk_bounds


@dataclass
class TileSummary:
    """What the merge needs from one tile: a few numbers per label and the border faces."""

    n_labels: int
    #: int64, one per local label 1..n: the global raster index that orders the label's first voxel
    order_keys: object
    #: (axis, side) -> local labels on the tile's first (side 0) or last (side 1) slice along axis
    faces: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return int(self.order_keys.nbytes) + sum(int(f.nbytes) for f in self.faces.values())


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles lie: the image shape and the tile chunks (dask's form)."""

    shape: tuple[int, ...]
    chunks: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, array) -> "TileGrid":
        """The grid of a dask array's chunks."""
        return cls(tuple(int(n) for n in array.shape), tuple(tuple(int(c) for c in cs) for cs in array.chunks))

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.chunks)

    def indices(self) -> list[tuple[int, ...]]:
        """Every tile's index, in raster order."""
        return list(itertools.product(*(range(n) for n in self.grid)))

    @functools.cached_property
    def starts(self) -> tuple[tuple[int, ...], ...]:
        """Where each tile begins along each axis."""
        return tuple(tuple(int(s) for s in bounds[:-1]) for bounds in chunk_bounds(self.chunks))

    def origin(self, index) -> tuple[int, ...]:
        starts = self.starts
        return tuple(starts[a][i] for a, i in enumerate(index))

    def tile_shape(self, index) -> tuple[int, ...]:
        return tuple(self.chunks[a][i] for a, i in enumerate(index))


def local_label_dtype(tile_size: int):
    """int32 local labels while a tile has fewer than 2**31 voxels (CuPy's labeller indexes with int32)."""
    return np.dtype(np.int32) if tile_size < 2**31 else np.dtype(np.int64)


def face_dtype(n_labels: int):
    """The smallest unsigned type that holds local labels 0..n_labels (faces are kept until the merge)."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n_labels <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def label_tile(block, structure, backend):
    """Local labels of one tile on ``backend`` and their count."""
    xp = backend.xp
    # SciPy's labeller walks non-contiguous views (a chunk sliced out of a larger array) at half speed
    tile = xp.ascontiguousarray(backend.to_backend(block))
    local = xp.empty(tile.shape, dtype=local_label_dtype(tile.size))
    n = backend.ndimage.label(tile, structure, output=local)
    return local, int(n)


def _running_max(xp, values):
    if xp is np:
        return np.maximum.accumulate(values)
    out = values.copy()  # log-step doubling: any array module with slicing and maximum
    step = 1
    while step < out.size:
        out[step:] = xp.maximum(out[step:], out[:-step])
        step *= 2
    return out


def order_keys(xp, local, n_labels: int, origin, image_shape):
    """The order key (see module docstring) of each local label 1..n_labels, as int64."""
    if n_labels == 0:
        return xp.zeros(0, dtype=np.int64)
    rows = local.reshape(-1, local.shape[-1])
    reached = _running_max(xp, rows.max(axis=1))
    first_row = xp.searchsorted(reached, xp.arange(1, n_labels + 1, dtype=reached.dtype))
    strides = [math.prod(image_shape[a + 1 :]) for a in range(len(image_shape))]
    keys = xp.full(n_labels, origin[-1], dtype=np.int64)
    if local.ndim > 1:
        coords = xp.unravel_index(first_row, local.shape[:-1])
        for a, c in enumerate(coords):
            keys += (c.astype(np.int64) + origin[a]) * strides[a]
    return keys


def summarise_tile(xp, local, n_labels: int, index, grid: TileGrid, face_axes) -> TileSummary:
    """The :class:`TileSummary` of tile ``index`` whose local labels are ``local``."""
    origin = grid.origin(index)
    faces = {}
    compact = face_dtype(n_labels)
    for a in face_axes:
        lead = (slice(None),) * a
        if index[a] > 0:
            faces[(a, 0)] = local[lead + (0,)].astype(compact)
        if index[a] < grid.grid[a] - 1:
            faces[(a, 1)] = local[lead + (-1,)].astype(compact)
    return TileSummary(n_labels, order_keys(xp, local, n_labels, origin, grid.shape), faces)


def label_and_summarise(block, index, *, structure, backend, grid, face_axes):
    """Pass 1 on one tile: ``(local labels, summary)``."""
    local, n = label_tile(block, structure, backend)
    return local, summarise_tile(backend.xp, local, n, index, grid, face_axes)


__all__ = [
    "TileGrid", "TileSummary", "face_dtype", "label_and_summarise", "label_tile",
    "local_label_dtype", "order_keys", "summarise_tile",
]
