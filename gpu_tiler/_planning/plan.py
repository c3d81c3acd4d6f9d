"""Tile planning: how large a tile, how many in flight, so a device stays inside its budget."""
from __future__ import annotations

import itertools
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

from gpu_tiler._backends import get_backend, resolve_backend
from gpu_tiler._config import get_setting, parse_budget
from gpu_tiler._devices import devices
from gpu_tiler._execution.bounded import active_client

#: Tiles are cut for parallelism (one per tile in flight) only while they stay at least this long.
MIN_PARALLEL_TILE = 64
#: Host tiles hold at most this many voxels (while they stay MIN_PARALLEL_TILE and four halos long): a tile
#: of 2**20 voxels with its working copies stays in the L2/L3 caches, where SciPy's filters, labeller and
#: histograms run 2-3x faster per voxel than on tiles of tens of millions of voxels.
HOST_TILE_VOXELS = 2**20


def normalize_halo(halo, ndim: int) -> tuple[int, ...]:
    """A per-axis halo: an int for every axis, or a sequence of ``ndim`` non-negative ints."""
    if np.isscalar(halo):
        values = (halo,) * ndim
    else:
        values = tuple(halo)
        if len(values) != ndim:
            raise ValueError(f"halo {halo!r} has {len(values)} entries; the image has {ndim} axes")
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or int(v) != v or v < 0:
            raise ValueError(f"halo {halo!r} must hold whole numbers >= 0")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class TilePlan:
    """How an image is cut into tiles for one operation.

    ``bytes_per_tile`` counts the tile with its halo, the working copies the operation makes of it,
    and the output tile; ``tiles_in_flight * bytes_per_tile <= budget_bytes``.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    tile_shape: tuple[int, ...]
    halo: tuple[int, ...]
    tiles_in_flight: int
    bytes_per_tile: int
    budget_bytes: int

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of tiles along each axis."""
        return tuple(math.ceil(n / t) if n else 0 for n, t in zip(self.shape, self.tile_shape))

    @property
    def n_tiles(self) -> int:
        return math.prod(self.grid)

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        """The plan as dask chunks (the last tile along an axis may be smaller)."""
        out = []
        for n, t in zip(self.shape, self.tile_shape):
            full, rest = divmod(n, t) if t else (0, 0)
            out.append((t,) * full + ((rest,) if rest else ()) or (0,))
        return tuple(out)

    @property
    def peak_bytes(self) -> int:
        return self.bytes_per_tile * self.tiles_in_flight

    def __str__(self):
        mib = 2**20
        return (
            f"{self.n_tiles} tiles of {'x'.join(map(str, self.tile_shape))} (halo {self.halo}), "
            f"{self.tiles_in_flight} in flight x {self.bytes_per_tile / mib:.1f} MiB = "
            f"{self.peak_bytes / mib:.1f} MiB of a {self.budget_bytes / mib:.1f} MiB budget"
        )


def tile_bytes(tile_shape, halo, in_itemsize, out_itemsize, working_copies) -> int:
    """Bytes one tile needs: its halo'd input, ``working_copies`` more like it, and its output."""
    with_halo = math.prod(t + 2 * h for t, h in zip(tile_shape, halo))
    core = math.prod(tile_shape)
    working = max(in_itemsize, out_itemsize)
    return with_halo * in_itemsize + with_halo * working * working_copies + core * out_itemsize


def default_tiles_in_flight(device_kind: str) -> int:
    configured = get_setting("tiles_in_flight")
    if configured is not None:
        return configured
    if device_kind == "cpu":
        return max(1, min(os.cpu_count() or 1, 8))
    return 2  # one tile computing while the next one is copied in


def _resolve_budget(budget, backend) -> tuple[int, str]:
    """The budget to plan with, in bytes, and the device kind it is for.

    Bytes are used as given. A fraction or the configured default is taken of the device's free
    memory: this process's device, or, when a dask.distributed client is active, the smallest such
    budget among its workers' devices, so every tile fits on whichever worker runs it."""
    backend = resolve_backend() if backend is None else (get_backend(backend) if isinstance(backend, str) else backend)
    value = None if budget is None else parse_budget(budget)
    if isinstance(value, int):
        return value, backend.device_kind
    workers = _worker_budgets(backend.device_kind, value)
    if workers:
        return min(workers), backend.device_kind
    return backend.device(value).budget_bytes, backend.device_kind


def _worker_budgets(kind: str, fraction) -> list[int]:
    """Each distributed worker's budget for its devices of ``kind`` (empty without a client)."""
    client = active_client()
    if client is None:
        return []

    def budgets(kind=kind, fraction=fraction):
        return [d.budget_bytes for d in devices(fraction) if d.kind == kind]

    try:
        found = client.run(budgets)
    except (OSError, TimeoutError, RuntimeError, ImportError) as exc:  # a worker that cannot answer
        warnings.warn(f"could not ask the cluster's workers for their memory budgets ({type(exc).__name__}: {exc}); "
                      f"planning tiles with this process's budget instead", RuntimeWarning, stacklevel=3)
        return []
    return [b for per_worker in found.values() for b in per_worker]


def plan_tiles(
    shape,
    dtype,
    halo=0,
    budget=None,
    *,
    out_dtype=None,
    working_copies: int = 2,
    tiles_in_flight: int | None = None,
    chunks=None,
    backend=None,
    n_inputs: int = 1,
    tile_shape=None,
    whole_axes=(),
    cache_voxels=None,
) -> TilePlan:
    """Plan tiles for an image of ``shape``/``dtype`` processed with ``halo`` voxels of context per side.

    The largest tiles are chosen such that ``tiles_in_flight`` of them, each with its halo, the
    operation's ``working_copies`` and its output, fit in ``budget`` (bytes, ``"512MiB"``, a fraction
    of free memory, or None for the device's configured budget). Tiles are cut evenly, the axis with
    the longest tile first, and when ``chunks`` (the source's chunk shape) is given, tile edges fall
    on chunk edges wherever one chunk fits. An image that fits in one tile is still cut into as many
    tiles as go in flight, so every worker has one, unless that would make tiles shorter than
    ``MIN_PARALLEL_TILE`` or four halos. Fewer tiles go in flight if even single-voxel tiles would
    not fit; if one cannot, it is a ``ValueError`` that says how large the budget must be.
    ``n_inputs`` counts the images read per tile (all of ``dtype``'s size or smaller). A given
    ``tile_shape`` is used as it is (clipped to the image) and only tiles in flight are planned.
    ``whole_axes`` are never cut (for operations that need whole lines along them).
    ``cache_voxels``: tiles are cut further until they hold at most this many voxels (while they stay
    ``MIN_PARALLEL_TILE`` and four halos long); None: ``HOST_TILE_VOXELS`` on the host (cache-sized tiles
    run faster), no limit on a GPU (large tiles keep it busy); 0: no limit (the largest tiles that fit).
    """
    shape = tuple(int(n) for n in shape)
    if any(n < 0 for n in shape):
        raise ValueError(f"shape {shape} has a negative length")
    ndim = len(shape)
    if ndim == 0:
        raise ValueError("cannot tile a 0-d array")
    dtype = np.dtype(dtype)
    out_dtype = dtype if out_dtype is None else np.dtype(out_dtype)
    halo = normalize_halo(halo, ndim)
    budget_bytes, device_kind = _resolve_budget(budget, backend)
    if working_copies < 0:
        raise ValueError(f"working_copies must be >= 0, not {working_copies}")
    wanted = tiles_in_flight if tiles_in_flight is not None else default_tiles_in_flight(device_kind)
    if int(wanted) < 1:
        raise ValueError(f"tiles_in_flight must be >= 1, not {wanted}")
    align = _source_chunk_shape(chunks, ndim)

    def cost(tile):
        return tile_bytes(tile, halo, dtype.itemsize * n_inputs, out_dtype.itemsize, working_copies)

    whole_axes = tuple(sorted(set(whole_axes)))
    minimal = tuple(max(1, shape[a]) if a in whole_axes else 1 for a in range(ndim))
    smallest = cost(minimal)
    if smallest > budget_bytes:
        raise ValueError(
            f"a memory budget of {budget_bytes} bytes ({budget_bytes / 2**20:.2f} MiB) cannot hold even one "
            f"{'x'.join(map(str, minimal))} tile with its halo {halo} ({smallest} bytes for {dtype} in, {out_dtype} out, "
            f"{working_copies} working copies): raise memory_budget to at least {smallest} bytes, "
            f"or use a smaller halo"
        )
    if tile_shape is not None:
        tile = tuple(int(t) for t in tile_shape)
        if len(tile) != ndim or any(t < 1 for t in tile):
            raise ValueError(f"tile_shape {tile_shape} must give a length >= 1 for each of the {ndim} axes")
        tile = tuple(min(t, max(n, 1)) for t, n in zip(tile, shape))
        if cost(tile) > budget_bytes:
            raise ValueError(
                f"tile_shape {tile} needs {cost(tile)} bytes with its halo {halo}, more than the memory "
                f"budget of {budget_bytes} bytes: raise memory_budget or pass a smaller tile_shape"
            )
        in_flight = max(1, min(int(wanted), budget_bytes // cost(tile)))
        return TilePlan(shape, dtype, tile, halo, in_flight, cost(tile), budget_bytes)
    in_flight = max(1, min(int(wanted), budget_bytes // smallest))
    counts = [1] * ndim  # tiles along each axis
    tile = [max(1, n) for n in shape]
    last = None
    cuttable = [a for a in range(ndim) if a not in whole_axes]
    while cost(tile) * in_flight > budget_bytes:  # ends: in_flight tiles of ``minimal`` fit
        axis = max(cuttable, key=lambda a: (tile[a], -a))
        counts[axis] *= 2
        tile[axis] = _cut(shape[axis], counts[axis], align, axis, below=tile[axis])
        last = axis
    if last is not None:
        # Halving overshoots by up to 2x: take the fewest cuts along the last axis cut that still fit.
        for count in range(counts[last] // 2 + 1, counts[last]):
            trial = tile.copy()
            trial[last] = _cut(shape[last], count, align, last, below=shape[last] + 1)
            if trial[last] > tile[last] and cost(trial) * in_flight <= budget_bytes:
                tile = trial
                break

    def halve_while(condition):  # cut the longest axis in two while tiles stay large next to their halo
        while cuttable and condition():
            axis = max(cuttable, key=lambda a: (tile[a], -a))
            shorter = _cut(shape[axis], counts[axis] * 2, align, axis, below=tile[axis])
            if shorter < max(MIN_PARALLEL_TILE, 4 * halo[axis]):
                return
            counts[axis] *= 2
            tile[axis] = shorter

    # Enough tiles to keep every worker busy.
    halve_while(lambda: math.prod(math.ceil(n / t) for n, t in zip(shape, tile)) < in_flight)
    # On the host, tiles small enough for the caches: a filter's passes then read the tile from cache, not
    # from memory (2-3x less time per voxel on a 1024^2 tile than on a 4096x8192 one; docs/pipelines.md).
    cap = HOST_TILE_VOXELS if cache_voxels is None and device_kind == "cpu" else (cache_voxels or 0)
    halve_while(lambda: cap and math.prod(tile) > cap)
    return TilePlan(shape, dtype, tuple(tile), halo, in_flight, cost(tile), budget_bytes)



def chunk_bounds(chunks) -> list[np.ndarray]:
    """Where the chunks of each axis start and end: ``[0, c0, c0 + c1, ...]`` (int64), one array per axis."""
    return [np.concatenate([[0], np.cumsum(c, dtype=np.int64)]) for c in chunks]


def strip_order(tiles, sources) -> list[tuple[int, ...]]:
    """The block indices of a grid of ``tiles`` (dask chunks) in an order where consecutive tiles read the same
    chunks of the ``sources`` (their dask chunks): strips as wide as the largest source chunk along every axis
    but the first, each walked along the first axis (raster order within a strip). Tiles smaller than the
    chunks they are cut from then need a chunk for a few consecutive batches, not once per row of tiles."""
    ndim = len(tiles)
    starts = chunk_bounds(tiles)
    width = [max([max(c[a]) if c[a] else 1 for c in sources] + [1]) for a in range(ndim)]

    def key(index):
        return tuple(int(starts[a][index[a]]) // width[a] for a in range(1, ndim)), index

    return sorted(itertools.product(*(range(len(c)) for c in tiles)), key=key)


def regular_chunk_shape(chunks) -> tuple[int, ...] | None:
    """A zarr chunk shape for dask ``chunks``: their shape when regular (all equal but a smaller last one along
    each axis), else None."""
    shape = []
    for c in chunks:
        if len(c) > 1 and (len(set(c[:-1])) > 1 or c[-1] > c[0]):
            return None
        shape.append(max(c[0], 1) if c else 1)
    return tuple(shape)

def _cut(length, count, align, axis, below):
    """Tile length for ``count`` even tiles along an axis, on source-chunk edges, shorter than ``below``."""
    t = math.ceil(length / count)
    if align and align[axis] and t >= align[axis]:
        t = (t // align[axis]) * align[axis]
    return max(1, min(t, below - 1))


def _source_chunk_shape(chunks, ndim):
    if chunks is None:
        return None
    out = []
    for c in chunks:
        out.append(int(max(c)) if isinstance(c, (tuple, list)) and c else int(c) if not isinstance(c, (tuple, list)) else 0)
    if len(out) != ndim:
        raise ValueError(f"chunks {chunks!r} do not match an image with {ndim} axes")
    return out
