"""label(): connected components of an image larger than memory, numbered exactly as SciPy numbers them.

Two passes over the tiles, with a small merge between them:

1. **Pass 1** labels every tile with the backend's labeller and keeps, per tile, the order key of
   each local label and the tile's border faces (``_tiles``). The local labels themselves are kept
   for pass 2: in memory when they fit the memory budget (returned by one computation on the local
   schedulers; persisted on a dask.distributed cluster, so they stay on its workers), else streamed
   to a scratch zarr store (``_scratch``) in bounded batches of tiles (``run_bounded``), so the image
   is never in memory.
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
import os
import threading
import uuid

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.base import tokenize
from dask.sizeof import sizeof

from .._backends import namespace_of, resolve_backend
from .._engine import as_dask
from .._io import check_unchanged, remember_job_name
from .._provenance import stamps_of
from .._execute import active_client, run_bounded, tiles_in_flight_for_chunks
from .._planning import default_tiles_in_flight as planned_tiles_in_flight
from .._planning import plan_tiles
from ._equivalences import border_pairs
from ._merge import merger_for
from ._numbering import number_pieces
from ._scratch import ScratchLabels
from ._structure import connected_axes, neighbour_offsets, normalize_structure
from ._tiles import TileGrid, label_and_summarise, label_to_scratch, local_label_dtype

SCRATCH_CHOICES = ("auto", "memory", "disk")
#: Bytes per voxel a tile needs while it is labelled and relabelled, besides its source voxels:
#: local labels, the labeller's own working copy and the output tile.
_LABEL_BYTES_PER_VOXEL = 3 * 4


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


def _check_scratch(scratch):
    """``(mode, directory)`` from ``scratch``: a mode name, or an existing directory (meaning disk)."""
    if isinstance(scratch, str) and scratch in SCRATCH_CHOICES:
        return scratch, None
    if isinstance(scratch, (str, os.PathLike)) and os.path.isdir(scratch):
        return "disk", scratch
    raise ValueError(
        f"scratch must be one of {', '.join(map(repr, SCRATCH_CHOICES))} or an existing directory for the "
        f"temporary store, not {scratch!r}"
    )


def _result_dtype(requested, n_objects, n_voxels):
    if requested is not None:
        if n_objects > np.iinfo(requested).max:
            raise ValueError(
                f"dtype {requested} cannot hold {n_objects} labels; pass dtype='int64' (or leave dtype=None)"
            )
        return requested
    if n_voxels < 2**31 and n_objects < 2**31:
        return np.dtype(np.int32)
    return np.dtype(np.int64)


def _regular(chunks) -> bool:
    return all(len(c) < 2 or (len(set(c[:-1])) == 1 and c[-1] <= c[0]) for c in chunks)


def _tiles_for(x: da.Array, backend, budget_bytes: int, tile_shape, regular: bool) -> da.Array:
    """Rechunk ``x`` to the tiles label works on.

    ``None``: planned like :func:`gpu_tiler.map_tiles` plans tiles: as large as ``tiles_in_flight``
    of them fit the budget (source voxels, local labels, a working copy, output labels), on the
    source's chunk edges, at least one per tile in flight; fewer, larger tiles mean fewer borders to
    merge and fewer tasks. ``"chunks"``: the source's own chunks (split only where one would not fit
    the budget). A tuple: that tile shape.
    """
    ndim = x.ndim
    if isinstance(tile_shape, str) and tile_shape == "chunks":
        biggest = math.prod(max(c) for c in x.chunks)
        per_tile = biggest * (x.dtype.itemsize + _LABEL_BYTES_PER_VOXEL)
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
        if tuple(max(c) for c in x.chunks) != plan.tile_shape or not _regular(x.chunks):
            x = x.rechunk(plan.chunks)
    if regular and not _regular(x.chunks):
        x = x.rechunk(tuple(max(c) for c in x.chunks))
    return x


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
    source_bounds = [np.concatenate([[0], np.cumsum(c)]) for c in source.chunks]
    tile_bounds = [np.concatenate([[0], np.cumsum(c)]) for c in grid.chunks]
    if not all(np.isin(t, b).all() for t, b in zip(tile_bounds, source_bounds)):
        return None
    # along each axis: for each tile, the source chunk indices it covers
    covers = [
        [range(int(np.searchsorted(b, t[i])), int(np.searchsorted(b, t[i + 1]))) for i in range(len(t) - 1)]
        for t, b in zip(tile_bounds, source_bounds)
    ]
    args = {}
    for index in _tile_indices(grid.grid):
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


def _tile_indices(grid):
    return list(itertools.product(*(range(n) for n in grid)))


def _collect(indices, results):
    return {index: result[1] for index, result in zip(indices, results)}


def _collect_all(indices, results):
    return dict(zip(indices, results))


def _pass1_in_memory(x, source, grid, structure, backend, face_axes, token):
    """Label every tile, keeping each tile's local labels in memory; return ``(tiles, summaries)``.

    On the local schedulers one computation brings every tile's ``(local labels, summary)`` back:
    ``tiles`` maps tile index to its :class:`_TileLabels`, which pass 2 embeds in its graph. On a
    dask.distributed cluster the local labels stay on the workers (persisted) and only the
    summaries travel: ``tiles`` is then the persisted pass-1 array, whose blocks are those pairs.
    ``x`` is the image in tiles, ``source`` the image as given (see :func:`_tile_sources`).
    """
    indices = _tile_indices(grid.grid)
    tiles, gather = f"gpu_tiler-label-pass1-{token}", f"gpu_tiler-label-summaries-{token}"
    run = functools.partial(_label_in_memory, structure=structure, backend=backend, grid=grid, face_axes=face_axes)
    local = active_client() is None
    by_value = _tile_sources(source, grid) if local else None
    if by_value is None:
        dsk = {(tiles, *index): (run, (x.name, *index), index) for index in indices}
    else:
        dsk = {(tiles, *index): (run, by_value[index], index) for index in indices}
    # an array collection whose blocks are (local labels, summary) pairs: internal, read by pass 2
    graph = HighLevelGraph.from_collections(tiles, dsk, dependencies=[x] if by_value is None else [])
    pass1 = da.Array(graph, tiles, grid.chunks, meta=np.empty((0,) * x.ndim, dtype=object))
    if local:
        gather_dsk = {gather: (_collect_all, indices, [(tiles, *index) for index in indices])}
        everything = Delayed(gather, HighLevelGraph.from_collections(gather, gather_dsk, dependencies=[pass1]))
        results = everything.compute(optimize_graph=False)
        return {i: r[0] for i, r in results.items()}, {i: r[1] for i, r in results.items()}
    gather_dsk = {gather: (_collect, indices, [(tiles, *index) for index in indices])}
    summaries = Delayed(gather, HighLevelGraph.from_collections(gather, gather_dsk, dependencies=[pass1]))
    # unoptimised: the tile task feeds both outputs and must run once, not once per optimiser
    pass1, summaries = dask.persist(pass1, summaries, optimize_graph=False)
    return pass1, summaries.compute()


def _pass1_to_scratch(x, grid, structure, backend, face_axes, token, scratch, tiles_in_flight):
    """Label every tile into ``scratch`` in bounded batches; return the summaries."""
    name = f"gpu_tiler-label-pass1-{token}"
    run = functools.partial(
        label_to_scratch, structure=structure, backend=backend, grid=grid, face_axes=face_axes, scratch=scratch,
    )
    dsk = {(name, *index): (run, (x.name, *index), index) for index in _tile_indices(grid.grid)}
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    summaries_array = da.Array(graph, name, grid.chunks, meta=np.empty((0,) * x.ndim, dtype=object))
    summaries = {}
    run_bounded(summaries_array, summaries.__setitem__, tiles_in_flight)
    return summaries


#: Voxels mapped per np.take call: np.take converts its whole index array to intp first, so large
#: tiles are mapped in slabs that keep that copy small (and in cache).
_TAKE_SLAB = 1 << 18


def _relabel(local, lut, *, backend, to_host, in_place=False):
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
        for start in range(0, flat_in.size, _TAKE_SLAB):
            piece = slice(start, start + _TAKE_SLAB)
            # every local label indexes the table, so "clip" never clips; "raise" would buffer out
            np.take(lut, flat_in[piece], out=flat_out[piece], mode="clip")
    return backend.to_host(out) if to_host else out


class _TileLabels:
    """One tile's labels kept in memory between the passes: local after pass 1, global after pass 2.

    On NumPy, pass 2 maps them in place, once, so labels held in memory cost one array per tile
    rather than two; later computations of the result get the mapped array, made read-only so that
    code mutating the blocks it is given cannot corrupt them. Mapping runs slab by slab under a lock
    and records how far it got (see :meth:`_map_in_place`): an interrupted mapping resumes where it
    stopped, a second thread waits, and a pickled copy (a dask.distributed worker spilling or moving
    the tile) carries a consistent state. On CuPy each computation maps into a new device array.
    """

    def __init__(self, array):
        self.array = array
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
            return _relabel(self.array, lut, backend=backend, to_host=to_host)
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


@sizeof.register(_TileLabels)
def _sizeof_tile_labels(tile):
    return sizeof(tile.array)


def _label_in_memory(block, index, **options):
    """Pass 1 keeping the local labels in memory: ``(_TileLabels, TileSummary)`` of one tile."""
    local, summary = label_and_summarise(block, index, **options)
    return _TileLabels(local), summary


def _relabel_in_memory(pass1_result, lut, *, backend, to_host):
    local = pass1_result[0] if isinstance(pass1_result, tuple) else pass1_result
    if isinstance(local, _TileLabels):
        return local.to_global(lut, backend=backend, to_host=to_host)
    # map_labels' pass 1 keeps views of the caller's labels: never overwritten
    return _relabel(local, lut, backend=backend, to_host=to_host)


def _relabel_from_scratch(scratch, index, lut, *, grid, backend, to_host):
    return _relabel(scratch.read(index, grid), lut, backend=backend, to_host=to_host, in_place=True)


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
    and the relabelling run on the GPU. ``merger``: the union-find (``"numpy"``, ``"opencl"``,
    ``"cuda"``; default: CUDA on CuPy, NumPy on the host).

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
    from .._ome import attach_metadata, metadata_of

    axes_and_sizes = metadata_of(x)  # the labels keep the image's axes and pixel sizes
    struct = normalize_structure(x.ndim, connectivity, structure)
    requested = _check_dtype(dtype)
    mode, scratch_dir = _check_scratch(scratch)
    chosen = resolve_backend(x, backend=backend)
    merge = merger_for(chosen, merger)
    if math.prod(x.shape) == 0:
        out_dtype = requested or np.dtype(np.int32)
        return da.zeros(x.shape, dtype=out_dtype, chunks=x.chunks, meta=chosen.meta(out_dtype, x.ndim)), 0
    budget_bytes = chosen.device(budget).budget_bytes
    local_bytes = math.prod(x.shape) * local_label_dtype(math.prod(max(c) for c in x.chunks)).itemsize
    in_memory = mode == "memory" or (mode == "auto" and local_bytes <= budget_bytes)
    source, x = x, _tiles_for(x, chosen, budget_bytes, tile_shape, regular=not in_memory)
    grid = TileGrid(tuple(x.shape), tuple(tuple(int(c) for c in cs) for cs in x.chunks))
    face_axes = connected_axes(struct)
    token = uuid.uuid4().hex[:16]
    inputs = stamps_of(source)  # the stored inputs as pass 1 reads them
    if in_memory:
        pass1, summaries = _pass1_in_memory(x, source, grid, struct, chosen, face_axes, token)
        store = None
    else:
        tile = tuple(max(c) for c in grid.chunks)
        store = ScratchLabels(grid.shape, tile, local_label_dtype(math.prod(tile)), where=scratch_dir)
        in_flight = tiles_in_flight_for_chunks(x, budget_bytes, working_copies=3)
        summaries = _pass1_to_scratch(x, grid, struct, chosen, face_axes, token, store, in_flight)

    check_unchanged(inputs, stamps_of(source), "it was being labelled")
    label_of_piece, piece_ranges, n_objects = _merge_pieces(chosen.xp, summaries, grid, struct, merge)
    del summaries
    out_dtype = _result_dtype(requested, n_objects, math.prod(grid.shape))
    kept = (pass1, None) if store is None else (None, store)  # where pass 2 finds the local labels
    # a name of its own (the graph holds this call's tiles); saving it is a job named by what
    # determines the result, so a save(labels, resume=True) of the same labelling resumes
    labels = _pass2(x, grid, chosen, label_of_piece.astype(out_dtype), piece_ranges, kept, f"gpu_tiler-label-{token}")
    job = tokenize(x.name, grid.chunks, struct.tobytes(), struct.shape, str(out_dtype), chosen.name, n_objects)
    remember_job_name(labels, f"gpu_tiler-label-{job}", inputs)
    return attach_metadata(labels, axes_and_sizes), n_objects


def _merge_pieces(xp, summaries, grid, structure, merger):
    """Global label of every piece (int64, index = piece id - 1), each tile's piece-id range, and n."""
    piece_offsets, ranges, total = {}, {}, 0
    for index in _tile_indices(grid.grid):
        piece_offsets[index] = total
        ranges[index] = (total, total + summaries[index].n_labels)
        total += summaries[index].n_labels
    # summaries may arrive in any order: concatenate the keys in piece-id (tile raster) order
    keys = [summaries[i].order_keys for i in ranges if summaries[i].n_labels]
    order_keys = xp.concatenate(keys) if keys else xp.zeros(0, dtype=np.int64)
    first, second = border_pairs(xp, summaries, grid, neighbour_offsets(structure), piece_offsets)
    label_of_piece, n_objects = number_pieces(xp, order_keys, first, second, merger)
    return label_of_piece, ranges, n_objects


def _pass2(x, grid, backend, label_of_piece, piece_ranges, kept, name):
    """The lazy result: every tile's local labels through its LUT.

    ``kept`` is ``(pass1, None)`` with pass 1's tiles in memory (a dict of :class:`_TileLabels`
    by tile index, or a persisted array of ``(local labels, summary)`` blocks), or ``(None, store)``.
    """
    pass1, store = kept
    persisted = isinstance(pass1, da.Array)
    xp, out_dtype = backend.xp, label_of_piece.dtype
    native = type(x._meta) is type(backend.meta(out_dtype, 0))
    meta = backend.meta(out_dtype, x.ndim) if native else np.empty((0,) * x.ndim, dtype=out_dtype)
    zero = xp.zeros(1, dtype=out_dtype)
    if store is None:
        relabel = functools.partial(_relabel_in_memory, backend=backend, to_host=not native)
    else:
        relabel = functools.partial(_relabel_from_scratch, grid=grid, backend=backend, to_host=not native)
    dsk = {}
    for index, (start, stop) in piece_ranges.items():
        lut = xp.concatenate([zero, label_of_piece[start:stop]])  # local label -> global label
        if store is not None:
            dsk[(name, *index)] = (relabel, store, index, lut)
        else:
            dsk[(name, *index)] = (relabel, (pass1.name, *index) if persisted else pass1[index], lut)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[pass1] if persisted else [])
    return da.Array(graph, name, grid.chunks, meta=meta)


__all__ = ["label"]
