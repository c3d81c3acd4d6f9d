"""map_tiles: the one engine every operation runs on.

Each output tile is computed from a *window*: the tile grown by the halo, assembled straight from
the source's chunks (real neighbour data inside the image, the boundary mode beyond it). The
window goes to the backend's device, the function runs on it, the halo is trimmed off and the
tile comes back. The result is a lazy dask array whose chunks are the planned tiles.
"""
from __future__ import annotations

import functools
import itertools
import math
import threading
import uuid
import warnings

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from gpu_tiler._backends import namespace_of, resolve_backend
from gpu_tiler._io.ome import attach_metadata
from gpu_tiler._io.provenance import UNVERIFIABLE, function_token
from gpu_tiler._io.sources import as_dask
from gpu_tiler._planning.halo import axis_pieces, normalize_modes, source_indices
from gpu_tiler._planning.plan import chunk_bounds, normalize_halo, plan_tiles
from gpu_tiler._registry import metadata_of, record


def _check_cval_fits(cval, dtype):
    """Constant padding is stored in the tiles' dtype: refuse a cval that dtype cannot hold."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if not (float(cval).is_integer() and info.min <= cval <= info.max):
            raise ValueError(
                f"cval={cval!r} cannot be stored in {dtype} tiles (whole numbers {info.min}..{info.max}); give a cval "
                f"in that range or convert the image to a float dtype first"
            )
    elif dtype == np.bool_ and cval not in (0, 1):
        raise ValueError(f"cval={cval!r} cannot be stored in bool tiles; give 0 or 1")


def _assemble_window(shape, cval, pieces, *chunks):
    """Build one window from source chunks; ``pieces`` are (dst, arg index or None, src) triples."""
    xp = namespace_of(chunks[0]) if chunks else np
    dtype = chunks[0].dtype if chunks else np.dtype(type(cval))
    out = xp.empty(shape, dtype=dtype)
    for dst, arg, src in pieces:
        if arg is None:
            out[dst] = cval
        else:
            out[dst] = chunks[arg][src]
    return out


def _combine_pieces(source_name, per_axis):
    """One window's pieces from each axis's (dst, chunk, src) pieces: the chunk keys it reads, in order,
    and (dst, index into those keys or None for the constant, src) triples (shared with ``windows``)."""
    keys, pieces = {}, []
    for combo in itertools.product(*per_axis):
        dst = tuple(p[0] for p in combo)
        if any(p[1] is None for p in combo):
            pieces.append((dst, None, None))
            continue
        key = (source_name, *(p[1] for p in combo))
        arg = keys.setdefault(key, len(keys))
        pieces.append((dst, arg, tuple(p[2] for p in combo)))
    return keys, pieces


def windows(x: da.Array, tile_chunks, halo, modes, cval, name=None) -> da.Array:
    """A dask array whose block ``i`` is output tile ``i`` of ``x`` grown by ``halo`` on each side.

    Blocks overlap in the source; each is assembled from the source chunks it touches, with
    ``modes`` (scipy.ndimage names) deciding what lies beyond the image border.
    """
    ndim = x.ndim
    bounds = chunk_bounds(x.chunks)
    per_axis = []  # per axis, per tile: list of (dst, chunk, src)
    for a in range(ndim):
        idx = source_indices(x.shape[a], halo[a], modes[a])
        starts = chunk_bounds(tile_chunks)[a]
        per_axis.append(
            [axis_pieces(idx[s : e + 2 * halo[a]], bounds[a]) for s, e in zip(starts[:-1], starts[1:])]
        )
    win_chunks = tuple(tuple(t + 2 * h for t in tc) for tc, h in zip(tile_chunks, halo))
    name = name or "gpu_tiler-window-" + tokenize(x, tile_chunks, halo, modes, cval)
    dsk = {}
    for tile_index in itertools.product(*(range(len(tc)) for tc in tile_chunks)):
        keys, pieces = _combine_pieces(x.name, [per_axis[a][i] for a, i in enumerate(tile_index)])
        keys, pieces = _halo_pieces(f"{name}-halo", x.chunks, list(keys), pieces, dsk)
        shape = tuple(win_chunks[a][i] for a, i in enumerate(tile_index))
        dsk[(name, *tile_index)] = (_assemble_window, shape, cval, pieces, *keys)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    return da.Array(graph, name, win_chunks, meta=x._meta)


def _halo_pieces(name, chunks, keys, pieces, dsk):
    """A window's parts of neighbouring chunks (its halo: a few lines of each) as keys of their own.

    Each is a small copy, shared by the windows that read that part; a bounded run
    (:func:`~gpu_tiler._execution.bounded.run_bounded`) keeps such small values for its later batches,
    so a chunk is decoded again for a neighbour's halo only while its halo part has not been made yet."""
    out_keys, out_pieces = {}, []
    for dst, arg, src in pieces:
        if arg is None:
            out_pieces.append((dst, None, None))
            continue
        key = keys[arg]
        shape = tuple(chunks[a][i] for a, i in enumerate(key[1:]))
        whole = all(s.step in (None, 1) and (s.start or 0) == 0 and s.stop == n for s, n in zip(src, shape))
        if not whole:
            part = (name, *key[1:], tuple((s.start, s.stop, s.step) for s in src))
            dsk.setdefault(part, (_copy_part, key, src))
            key, src = part, tuple(slice(None) for _ in src)
        out_pieces.append((dst, out_keys.setdefault(key, len(out_keys)), src))
    return list(out_keys), out_pieces


def _copy_part(chunk, src):
    return chunk[src].copy()


def _fit_chunks(x: da.Array, tile_shape) -> da.Array:
    """Split source chunks larger than a tile so each window reads only what it needs."""
    wanted = {}
    for a, (chunks, t) in enumerate(zip(x.chunks, tile_shape)):
        if chunks and max(chunks) > t:
            wanted[a] = t
    return x.rechunk(wanted) if wanted else x


def _is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError on the host, or CuPy's OutOfMemoryError (recognised without importing CuPy)."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


class SplitLimit:
    """Per map_tiles result, in its tasks: the largest tile core (in voxels) that ran out of memory,
    halved. It lives in the result's graph, so it lasts as long as the job does (each process that
    runs tiles, e.g. a distributed worker, learns its own limit)."""

    def __init__(self):
        self.below = None
        self.lock = threading.Lock()

    def __reduce__(self):  # a fresh limit in each process: nothing to share but the class
        return (SplitLimit, ())

    def lower(self, voxels: int) -> bool:
        """Lower the limit below ``voxels``; True the first time (to warn once)."""
        with self.lock:
            first = self.below is None
            self.below = min(self.below if self.below is not None else math.inf, max(1, voxels // 2))
            return first


def _compute_core(blocks, location, run, halo, split, backend):
    """``run`` on one window and its halo trimmed, splitting the window when memory runs out.

    A window whose core is larger than a size that already ran out of memory in this job is split
    before trying; one that runs out now is split along its longest core axis into two windows
    (each with its full halo, so the result is unchanged), the job's limit is lowered and a
    warning is given once."""
    window = blocks[0].shape
    core_shape = tuple(n - 2 * h for n, h in zip(window, halo))
    limit = split.below
    if limit is None or math.prod(core_shape) <= limit or max(core_shape) <= 1:
        try:
            out = run(blocks, location)
            return out[tuple(slice(h, n - h) for h, n in zip(halo, window))]
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            if max(core_shape) <= 1:
                raise MemoryError(
                    f"a tile of one voxel with its halo {halo} does not fit in memory; raise memory_budget or free "
                    f"device memory"
                ) from exc
            backend.release_memory()
            if split.lower(math.prod(core_shape)):
                warnings.warn(
                    f"a tile of {'x'.join(map(str, core_shape))} ran out of memory ({type(exc).__name__}); splitting "
                    f"it and every tile larger than {split.below} voxels for the rest of this job "
                    f"(results are unchanged; a smaller memory_budget avoids the retries)",
                    ResourceWarning, stacklevel=2,
                )
    axis = max(range(len(core_shape)), key=lambda a: core_shape[a])
    cut = core_shape[axis] // 2
    h = halo[axis]
    parts = []
    for lo, hi in ((0, cut + 2 * h), (cut, core_shape[axis] + 2 * h)):
        index = tuple(slice(lo, hi) if a == axis else slice(None) for a in range(len(window)))
        sub_location = None
        if location is not None:
            start = location[axis][0]
            sub_location = tuple((start + lo, start + hi) if a == axis else loc for a, loc in enumerate(location))
        parts.append(_compute_core([b[index] for b in blocks], sub_location, run, halo, split, backend))
    return backend.xp.concatenate(parts, axis=axis)


def _run_tile(*blocks, func, halo, backend, to_host, dtype, dtype_given, kwargs, pass_location, split,
              block_info=None):
    moved = [backend.to_backend(b) for b in blocks]
    location = None
    if pass_location:
        core = block_info[None]["array-location"]
        location = tuple((start - h, stop + h) for (start, stop), h in zip(core, halo))

    def run(tiles, where):
        out = func(*tiles, location=where, **kwargs) if pass_location else func(*tiles, **kwargs)
        window = tiles[0].shape
        if getattr(out, "shape", None) != window:
            raise ValueError(
                f"map_tiles: {getattr(func, '__name__', func)!r} returned shape {getattr(out, 'shape', None)} "
                f"for a tile window of shape {window}; map_tiles needs functions that keep the shape"
            )
        if out.dtype != dtype:
            if not dtype_given:
                raise TypeError(
                    f"map_tiles: {getattr(func, '__name__', func)!r} returned {out.dtype} for {tiles[0].dtype} "
                    f"tiles; pass dtype={out.dtype.name!r} to map_tiles to declare the output dtype"
                )
            out = out.astype(dtype, copy=False)
        return out

    core = _compute_core(moved, location, run, halo, split, backend)
    return backend.to_host(core) if to_host else core


def map_tiles(
    func,
    *arrays,
    halo=0,
    mode="reflect",
    cval=0.0,
    dtype=None,
    budget=None,
    tile_shape=None,
    working_copies: int = 2,
    tiles_in_flight: int | None = None,
    backend=None,
    name: str | None = None,
    pass_location: bool = False,
    **kwargs,
) -> da.Array:
    """Apply ``func`` tile by tile to images larger than memory; return a lazy dask array.

    ``func(*tiles, **kwargs)`` receives one backend array per input (NumPy on the host, CuPy on a
    GPU), each grown by ``halo`` voxels per side, and must return an array of the same shape; the
    halo is trimmed off its result. Beyond the image border tiles are extended as scipy.ndimage
    extends an image for ``mode`` (``"reflect"``, ``"mirror"``, ``"nearest"``, ``"wrap"``,
    ``"constant"`` with ``cval``, stored in the tiles' dtype; one mode or one per axis), so if ``func`` reaches at most ``halo``
    voxels the tiled result equals ``func`` on the whole image. Inputs must share one shape.

    Tiles are planned with :func:`plan_tiles` from ``budget`` (or the device's budget), unless
    ``tile_shape`` is given. ``dtype`` is the output dtype (default: the first input's; a function
    returning another dtype is an error unless ``dtype`` is given). ``backend``: ``"numpy"``,
    ``"cupy"`` or None for the configured choice; with CuPy, host chunks go to the GPU and back.
    With ``pass_location=True``, ``func`` also gets ``location=``: per axis, the ``(start, stop)`` of
    its window in image coordinates (start < 0 or stop > length where the window reaches past the
    border), for functions that must treat the image border themselves.
    """
    if not callable(func):
        raise TypeError(f"map_tiles needs a function first, not {type(func).__name__}")
    if not arrays:
        raise TypeError("map_tiles needs at least one array")
    xs = [as_dask(a) for a in arrays]
    shape = xs[0].shape
    for other in xs[1:]:
        if other.shape != shape:
            raise ValueError(f"map_tiles inputs must share one shape; got {shape} and {other.shape}")
    ndim = len(shape)
    halo = normalize_halo(halo, ndim)
    modes = normalize_modes(mode, ndim)
    if any(m in ("constant", "grid-constant") for m in modes):
        for x in xs:
            _check_cval_fits(cval, x.dtype)
    chosen = resolve_backend(*xs, backend=backend)
    dtype_given = dtype is not None
    out_dtype = np.dtype(dtype) if dtype_given else xs[0].dtype
    widest = max((x.dtype for x in xs), key=lambda d: d.itemsize)
    plan = plan_tiles(
        shape, widest, halo, budget, out_dtype=out_dtype, working_copies=working_copies,
        tiles_in_flight=tiles_in_flight, chunks=xs[0].chunks, backend=chosen, n_inputs=len(xs),
        tile_shape=tile_shape,
    )
    if math.prod(shape) == 0:
        return da.zeros(shape, dtype=out_dtype, chunks=plan.chunks)
    if name is None:
        # named by the function's code (not only its import path): an edited function is another job
        code = function_token(func)
        known = f"-{UNVERIFIABLE}" if code is None else ""
        name = f"gpu_tiler-{getattr(func, '__name__', 'func')}{known}-" + tokenize(
            code if code is not None else uuid.uuid4().hex, [x.name for x in xs], halo, modes, cval, out_dtype,
            plan.tile_shape, chosen.name, kwargs, pass_location,
        )
    wins = [windows(_fit_chunks(x, plan.tile_shape), plan.chunks, halo, modes, cval) for x in xs]
    native = all(type(x._meta) is type(chosen.meta(x.dtype, 0)) for x in xs)
    meta = chosen.meta(out_dtype, ndim) if native else np.empty((0,) * ndim, dtype=out_dtype)
    run = functools.partial(
        _run_tile, func=func, halo=halo, backend=chosen, to_host=not native, dtype=out_dtype,
        dtype_given=dtype_given, kwargs=kwargs, pass_location=pass_location, split=SplitLimit(),
    )
    out = da.map_blocks(run, *wins, chunks=plan.chunks, dtype=out_dtype, meta=meta, name=name)
    record(out, plan=plan)
    return attach_metadata(out, metadata_of(xs[0]))


# ---- output-driven source windows (map_regions) ---------------------------------------------------------------
# Everything below is new and used by gpu_tiler.transforms; nothing above is changed by it.


