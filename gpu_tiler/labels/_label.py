"""label(): connected components of an image larger than memory, numbered exactly as SciPy numbers them.

Two passes over the tiles, with a small merge between them:

1. **Pass 1** labels every tile with the backend's labeller and keeps, per tile, the order key of
   each local label and the tile's border faces (``_tiles``). The local labels themselves are kept
   for pass 2: in memory when they fit the memory budget (returned by one computation on the local
   schedulers; persisted on a dask.distributed cluster, so they stay on its workers), else streamed
   to a scratch zarr store (``_scratch``) in bounded batches of tiles (``run_bounded``), so the image
   is never in memory. How they are kept, and pass 2, are shared with ``map_labels`` (``_twopass``).
2. **Merge** (eager, small): pairs of touching pieces across tile faces, edges and corners
   (``_equivalences``), a union-find over the border pieces (``_merge``), and numbering in raster order
   of first voxels (``_numbering``). This gives ``n`` and one lookup table per tile.
3. **Pass 2** (lazy): each output tile is its local labels mapped through its lookup table; tiles
   kept in memory are mapped in place, once (``_TileLabels``), so the labels cost one array, not two.

Cost: pass 1 and pass 2 are linear in the voxels and run tile-parallel. The merge state is the
faces (``2 * ndim`` slices per tile, i.e. about ``2 * ndim * N / t`` voxels for tiles of side ``t``)
plus one int64 order key per piece; the union-find only sees pieces that touch a tile border.
Memory in flight is ``tiles_in_flight`` tiles (source, local labels, output) plus that merge state.
"""
from __future__ import annotations

import functools
import itertools
import math
import threading
import uuid

import dask.array as da
import numpy as np
from dask.base import tokenize

from gpu_tiler._backends import namespace_of, resolve_backend
from gpu_tiler._io.ome import attach_metadata
from gpu_tiler._io.provenance import stamps_of
from gpu_tiler._io.sources import as_dask, check_unchanged, remember_job_name
from gpu_tiler._planning.plan import chunk_bounds
from gpu_tiler._registry import metadata_of
from gpu_tiler.labels._equivalences import border_pairs
from gpu_tiler.labels._merge import merger_for
from gpu_tiler.labels._structure import (
    connected_axes,
    neighbour_offsets,
    normalize_structure,
)
from gpu_tiler.labels._tiles import TileGrid, label_and_summarise
from gpu_tiler.labels._tiling import tiles_for
from gpu_tiler.labels._twopass import TAKE_SLAB as _TAKE_SLAB
from gpu_tiler.labels._twopass import (
    LocalTile,
    check_scratch,
    keeps_in_memory,
    labels_to_host,
    number_objects,
    pass2,
    result_dtype,
    run_pass1,
)


def _check_image(x: da.Array):
    if x.ndim == 0:
        raise ValueError("image must have at least one axis; got a 0-d value")
    if x.dtype.kind == "c":
        raise ValueError(
            f"image has the complex dtype {x.dtype}; label needs real or boolean values "
            "(nonzero voxels are foreground): pass abs(image) != 0 or the real part"
        )
    if x.dtype.kind not in "biuf":
        raise ValueError(f"image has dtype {x.dtype}; label needs a boolean, integer or floating-point image")


def _check_dtype(dtype):
    if dtype is None:
        return None
    out = np.dtype(dtype)
    if out.kind not in "iu":
        raise ValueError(f"dtype must be an integer type (e.g. 'int32', 'int64', 'uint32'), not {out}")
    return out


def _tile_sources(source: da.Array, grid):
    """Per tile, the argument that gives its voxels to a pass-1 task, or None.

    When every tile boundary is a chunk boundary of ``source`` and its chunks are data already in
    the graph (in-memory images), each tile is assembled inside its own task from those chunks,
    passed by value: no rechunk tasks, and no scheduling of one key per source chunk. Otherwise
    ``None`` (the caller rechunks and passes tile keys).
    """
    chunks = getattr(source.dask, "layers", {}).get(source.name)  # key -> chunk, data or task
    if chunks is None:
        return None
    source_bounds = chunk_bounds(source.chunks)
    tile_bounds = chunk_bounds(grid.chunks)
    if not all(np.isin(t, b).all() for t, b in zip(tile_bounds, source_bounds)):
        return None
    # along each axis: for each tile, the source chunk indices it covers
    covers = [
        [range(int(np.searchsorted(b, t[i])), int(np.searchsorted(b, t[i + 1]))) for i in range(len(t) - 1)]
        for t, b in zip(tile_bounds, source_bounds)
    ]
    args = {}
    for index in grid.indices():
        origin = grid.origin(index)
        places, parts = [], []
        for part in itertools.product(*(covers[a][i] for a, i in enumerate(index))):
            start = [int(source_bounds[a][j]) - origin[a] for a, j in enumerate(part)]
            places.append(tuple(slice(s0, s0 + source.chunks[a][j]) for a, (s0, j) in enumerate(zip(start, part))))
            chunk = chunks[(source.name, *part)]
            if not (hasattr(chunk, "shape") and hasattr(chunk, "dtype")):
                return None  # chunks that are tasks (a lazy source): the caller rechunks
            parts.append(chunk)
        args[index] = (_assemble_tile, grid.tile_shape(index), places, *parts)
    return args


def _assemble_tile(shape, places, *parts):
    """One tile from the source chunks it covers (a single chunk is used as it is)."""
    if len(parts) == 1:
        return parts[0]
    xp = namespace_of(parts[0])
    tile = xp.empty(shape, dtype=parts[0].dtype)
    for place, part in zip(places, parts):
        tile[place] = part
    return tile


class _TileLabels(LocalTile):
    """One tile's labels kept in memory between the passes: local after pass 1, global after pass 2.

    On NumPy, pass 2 maps them in place, once, so labels held in memory cost one array per tile
    rather than two; later computations of the result get the mapped array, made read-only so that
    code mutating the blocks it is given cannot corrupt them. Mapping runs slab by slab under a lock
    and records how far it got (see :meth:`_map_in_place`): an interrupted mapping resumes where it
    stopped, a second thread waits, and a pickled copy (a dask.distributed worker spilling or moving
    the tile) carries a consistent state. On CuPy each computation maps into a new device array.
    """

    def __init__(self, array):
        super().__init__(array)
        self.mapped = 0  # voxels of the flattened tile already mapped (NumPy, in place)
        self.pending = None  # (start, mapped slab) being copied in when an interruption came
        self.is_global = False
        self._lock = threading.Lock()

    def to_global(self, lut, *, backend, to_host):
        in_place = (
            backend.xp is np and self.array.dtype == lut.dtype and self.array.flags.c_contiguous
            and (self.is_global or self.array.flags.writeable)
        )
        if not in_place:  # a new array every time; the local labels stay as they are
            return super().to_global(lut, backend=backend, to_host=to_host)
        with self._lock:
            if not self.is_global:
                self._map_in_place(lut)
        return self.array

    def _map_in_place(self, lut):
        """Map slab by slab, recording progress, so an interrupted mapping finishes exactly once per voxel.

        Ctrl-C reaches only the main thread, where it lands between C calls: after a slab is written
        but before the progress is recorded. There (the synchronous scheduler, a direct call) each
        slab is mapped into a buffer, recorded as pending, then copied in, and a pending slab is
        copied again on the next call. Worker threads map each slab straight into place.
        """
        flat = self.array.reshape(-1)
        if self.pending is not None:  # copying it may have been cut short: copy it again
            start, slab = self.pending
            flat[start : start + slab.size] = slab
            self.mapped, self.pending = max(self.mapped, start + slab.size), None
        interruptible = threading.current_thread() is threading.main_thread()
        buffer = np.empty(min(_TAKE_SLAB, flat.size), dtype=flat.dtype) if interruptible else None
        for start in range(self.mapped, flat.size, _TAKE_SLAB):
            piece = slice(start, min(start + _TAKE_SLAB, flat.size))
            if interruptible:
                slab = buffer[: piece.stop - start]
                np.take(lut, flat[piece], out=slab, mode="clip")
                self.pending = (start, slab)
                flat[piece] = slab
                self.mapped, self.pending = piece.stop, None
            else:
                np.take(lut, flat[piece], out=flat[piece], mode="clip")
                self.mapped = piece.stop
        self.array.flags.writeable = False
        self.is_global = True

    def __getstate__(self):
        with self._lock:
            pending = None if self.pending is None else (self.pending[0], self.pending[1].copy())
            return {"array": self.array, "mapped": self.mapped, "pending": pending, "is_global": self.is_global}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
        if self.is_global and isinstance(self.array, np.ndarray):
            self.array.flags.writeable = False


def label(
    image,
    connectivity=1,
    structure=None,
    dtype=None,
    *,
    backend=None,
    budget=None,
    tile_shape=None,
    scratch="auto",
    merger=None,
):
    """Label connected components of an image of any size; identical to ``scipy.ndimage.label``.

    Nonzero voxels are foreground. Two foreground voxels are connected when they are neighbours
    under ``connectivity`` (1: faces only, up to ``ndim``: faces, edges and corners; as
    ``scipy.ndimage.generate_binary_structure``) or under ``structure`` (a symmetric boolean array of
    shape ``(3,) * ndim``, used instead of ``connectivity`` when given). Returns ``(labels, n)``:
    ``labels`` is a lazy dask array equal to ``scipy.ndimage.label(image, structure)[0]`` computed on
    the whole image, numbering included (objects numbered 1..n in raster order of their first voxel),
    for any chunking; ``n`` (an int) is the number of objects, computed now.

    ``image``: a dask, NumPy, CuPy or zarr array, or anything :func:`gpu_tiler.open` opens. Tiles are
    planned as :func:`gpu_tiler.map_tiles` plans them: as large as the tiles in flight fit ``budget``
    (bytes, ``"2GiB"``, a fraction of free memory; default: the device's budget), on the image's
    chunk edges; ``tile_shape`` gives them instead (a shape, or ``"chunks"`` for the image's own
    chunks); the labels' chunks are the tiles. ``dtype``: of the labels; by default int32, or int64
    when the image has 2**31 voxels or more or the labels need it.
    ``backend``: ``"numpy"``, ``"cupy"`` or None (configured/auto); on CuPy the labelling, the merge
    and the relabelling run on the GPU. ``merger``: the union-find (``"numpy"``, ``"c"`` (the kernel on
    the host's cores), ``"opencl"``, ``"cuda"``, or ``"auto"``: CUDA on a GPU, else OpenCL, then C, then
    NumPy; default: CUDA on CuPy, NumPy on the host).

    Saving the labels of the same image again (same input, tiles, structure and dtype) with
    ``gpu_tiler.save(labels, path, resume=True)`` resumes an interrupted save. When the labels are
    held in memory their blocks are shared between computations and handed to ``map_blocks``
    functions read-only (``compute()`` returns an array of your own).

    Pass 1's local labels are kept for pass 2: ``scratch="auto"`` keeps them in memory when they fit
    the budget and otherwise writes them to a temporary zarr store (removed when the result is no
    longer referenced); ``"memory"`` or ``"disk"`` force either, and a directory path means disk,
    with the temporary store made inside that directory.
    """
    x = as_dask(image)
    _check_image(x)

    axes_and_sizes = metadata_of(x)  # the labels keep the image's axes and pixel sizes
    struct = normalize_structure(x.ndim, connectivity, structure)
    requested = _check_dtype(dtype)
    mode, scratch_dir = check_scratch(scratch)
    chosen = resolve_backend(x, backend=backend)
    merge = merger_for(chosen, merger)
    if math.prod(x.shape) == 0:
        out_dtype = requested or np.dtype(np.int32)
        return da.zeros(x.shape, dtype=out_dtype, chunks=x.chunks, meta=chosen.meta(out_dtype, x.ndim)), 0
    budget_bytes = chosen.device(budget).budget_bytes
    in_memory = keeps_in_memory(mode, x.shape, math.prod(max(c) for c in x.chunks), budget_bytes)
    source, x = x, tiles_for(x, chosen, budget_bytes, tile_shape, regular=not in_memory)
    grid = TileGrid.of(x)
    token = uuid.uuid4().hex[:16]
    run = functools.partial(
        label_and_summarise, structure=struct, backend=chosen, grid=grid, face_axes=connected_axes(struct)
    )
    inputs = stamps_of(source)  # the stored inputs as pass 1 reads them
    pass1 = run_pass1(
        run, x, grid, name=f"gpu_tiler-label-pass1-{token}", backend=chosen, to_host=labels_to_host(x, chosen),
        in_memory=in_memory, scratch_dir=scratch_dir, budget_bytes=budget_bytes, keep=_TileLabels,
        by_value=lambda: _tile_sources(source, grid),
    )
    check_unchanged(inputs, stamps_of(source), "it was being labelled")
    summaries = pass1.gather(f"gpu_tiler-label-summaries-{token}")
    label_of_piece, piece_ranges, n_objects = number_objects(
        chosen.xp, {i: summaries[i].n_labels for i in grid.indices()}, {i: s.order_keys for i, s in summaries.items()},
        lambda offsets: border_pairs(chosen.xp, summaries, grid, neighbour_offsets(struct), offsets), merge,
    )
    del summaries
    out_dtype = result_dtype(requested, n_objects, math.prod(grid.shape))
    # a name of its own (the graph holds this call's tiles); saving it is a job named by what
    # determines the result, so a save(labels, resume=True) of the same labelling resumes
    labels = pass2(pass1.local, grid, label_of_piece.astype(out_dtype), piece_ranges, f"gpu_tiler-label-{token}")
    job = tokenize(x.name, grid.chunks, struct.tobytes(), struct.shape, str(out_dtype), chosen.name, n_objects)
    remember_job_name(labels, f"gpu_tiler-label-{job}", inputs)
    return attach_metadata(labels, axes_and_sizes), n_objects

__all__ = ["label"]
