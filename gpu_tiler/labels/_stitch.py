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
import math
import numbers
import uuid

import dask.array as da
import numpy as np

from gpu_tiler._backends import resolve_backend
from gpu_tiler._engine.tiles import _fit_chunks, windows
from gpu_tiler._io.provenance import stamps_of
from gpu_tiler._io.sources import as_dask, check_unchanged
from gpu_tiler._planning.halo import normalize_modes
from gpu_tiler._planning.plan import normalize_halo, plan_tiles
from gpu_tiler.labels._matching import (
    StitchSummary,
    match_all,
    matched_pairs,
    matched_pieces,
    summarise_window,
)
from gpu_tiler.labels._merge import merger_for
from gpu_tiler.labels._tiles import TileGrid
from gpu_tiler.labels._twopass import (
    check_scratch,
    keeps_in_memory,
    labels_to_host,
    number_objects,
    pass2,
    result_dtype,
    run_pass1,
)

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
# pass 1 on one tile: func on its window, then its summary


def _label_window(window, func, kwargs, halo, backend):
    tile = backend.to_backend(window)
    return _checked_labels(func(tile, **kwargs), tile, func, halo)


def stitch_pass1(window, index, *, func, kwargs, grid, halo, backend):
    """Pass 1 on one tile: ``func`` on its window, then ``(local core labels, summary)``."""
    return summarise_window(_label_window(window, func, kwargs, halo, backend), index, grid=grid, halo=halo,
                            backend=backend)


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
    union-find, as for :func:`gpu_tiler.label` (``"numpy"``, ``"c"``, ``"opencl"``, ``"cuda"``, ``"auto"``;
    default: CUDA on CuPy, NumPy on the host).
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
    scratch_mode, scratch_dir = check_scratch(scratch)
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
    in_memory = keeps_in_memory(scratch_mode, x.shape, math.prod(plan.tile_shape), plan.budget_bytes)
    token = uuid.uuid4().hex[:16]
    run = functools.partial(stitch_pass1, func=func, kwargs=kwargs, grid=grid, halo=halo, backend=chosen)
    inputs = stamps_of(x)  # the stored inputs as pass 1 reads them
    pass1 = run_pass1(
        run, wins, grid, name=f"gpu_tiler-map-labels-pass1-{token}", backend=chosen, to_host=labels_to_host(x, chosen),
        in_memory=in_memory, scratch_dir=scratch_dir, budget_bytes=plan.budget_bytes,
    )
    check_unchanged(inputs, stamps_of(x), "it was being segmented")

    summary_name, indices = f"gpu_tiler-map-labels-summary-{token}", grid.indices()
    results = match_all(pass1.summary_layer(summary_name), list(pass1.local.dependencies), summary_name, indices,
                        grid, halo, min_overlap, token)
    label_of_piece, piece_ranges, n_objects = number_objects(
        chosen.xp, {i: r[0] for i, r in results.items()}, {i: r[1] for i, r in results.items()},
        lambda offsets: matched_pairs(chosen.xp, results, offsets), merge,
    )
    out_dtype = result_dtype(None, n_objects, math.prod(grid.shape))
    name = f"gpu_tiler-map-labels-{token}"
    return pass2(pass1.local, grid, label_of_piece.astype(out_dtype), piece_ranges, name), n_objects


__all__ = ["StitchSummary", "map_labels", "matched_pieces", "summarise_window"]
