"""Intermediates that several passes read are computed once and kept where it costs least.

A pipeline such as ``g = gaussian(x); m = threshold(g, "otsu"); labels, n = label(m)`` reads ``g`` in
more than one pass: the Otsu histogram, then label's pass 1 (through ``m``). Lazily, each pass would
compute the Gaussian again. When a global step consumes a lazy intermediate, :func:`materialise`
computes it once, in the pass that needs it, with the step's whole-image reductions
(:class:`Reduction`: a histogram, a minimum) computed from each tile in the task that made the tile,
and decides by a cost model (:func:`choose`, docs/pipelines.md) where later passes read it from:

- **memory** (persisted: in this process, or on the workers under dask.distributed), on the device
  that computed it, when it fits that device's budget;
- **host memory**, for an intermediate computed on a GPU that does not fit the GPU's budget but the host's;
- **a scratch store**: a zarr store written tile by tile within the budget in the same pass, removed
  when no graph reads it any more;
- **nowhere** (recomputed by every later pass) when that is cheaper: a cheap filter on a GPU whose
  result would cross the host link twice per pass, or an array whose graph holds no tile operation (a
  stored image, arithmetic on one), which is read again instead of copied.

The kept array is recorded as the intermediate's materialised twin: every gpu_tiler operation that
receives the intermediate (through ``as_dask``) reads the twin instead, so downstream stages never
recompute the chain. Nothing runs before a global step asks for it: everything stays lazy until then.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import dask
import dask.array as da
import numpy as np

from gpu_tiler._backends import NUMPY, chunk_backend, to_numpy
from gpu_tiler._execution.bounded import run_bounded, tiles_in_flight_for_chunks
from gpu_tiler._io.provenance import StoredArray, stamps_of
from gpu_tiler._io.sinks import _TileWriter
from gpu_tiler._io.sources import _ChunkReader
from gpu_tiler._planning.plan import regular_chunk_shape
from gpu_tiler._registry import (
    info_of,
    info_of_name,
    metadata_of,
    plan_of,
    record,
)

__all__ = ["COSTS", "Choice", "Reduction", "choose", "explain", "materialise", "needs_computing", "work_per_voxel"]

#: layer-name prefixes of gpu_tiler's tile operations: an array whose graph has one costs real work
_WORK = ("gpu_tiler-",)

#: The cost model's rates (docs/pipelines.md), in seconds per unit: measured on the 2-core Xeon this was
#: written on (host), and typical PCIe 4 / datacenter GPU figures (device). They only rank the choices.
COSTS = {
    "host_mac": 0.4e-9,  # one multiply-add of a filter on the host (SciPy on a cache-sized tile)
    "device_mac": 0.005e-9,  # the same on a GPU
    "source_byte": 2.5e-9,  # reading and decoding a stored (compressed zarr) image, per byte
    "host_memory_byte": 0.2e-9,  # reading a kept array from host memory
    "link_byte": 0.08e-9,  # moving a byte between host and GPU (about 12 GB/s)
    "scratch_write_byte": 2.0e-9,  # writing a scratch zarr store (compression and the file system)
    "scratch_read_byte": 1.5e-9,  # reading it back
}


def needs_computing(x: da.Array) -> bool:
    """Whether ``x``'s graph runs a gpu_tiler tile operation (not only reads and elementwise steps)."""
    layers = getattr(x.__dask_graph__(), "layers", {})
    return any(name.startswith(_WORK) for name in layers)


def work_per_voxel(x: da.Array):
    """What recomputing ``x`` costs: the multiply-adds per voxel of the gpu_tiler operations in its graph
    (a step reaching ``h`` voxels along some axes: the product of ``2h + 1`` over them; None when a tile
    operation is a user's function, whose cost is unknown), the bytes of the image they start from, and
    whether that image is stored (read and decoded again) rather than in memory."""
    layers = getattr(x.__dask_graph__(), "layers", {})
    macs, source = 0, None
    for name in layers:
        if not name.startswith(_WORK) or name.startswith("gpu_tiler-window-"):  # windows: part of a map_tiles
            continue
        info = info_of_name(name)
        if info is None or info.chain is None:
            return None, x.nbytes, True
        chain_source, operations = info.chain
        macs += sum(math.prod(2 * h + 1 for h in step.halo) for op in operations for step in op.steps)
        source = chain_source if source is None or chain_source.nbytes > source.nbytes else source
    if source is None:
        return macs, x.nbytes, bool(stamps_of(x))
    return macs, source.nbytes, bool(stamps_of(source))


@dataclass(frozen=True)
class Choice:
    """Where an intermediate is kept, and the estimated seconds of each option (docs/pipelines.md)."""

    where: str  # "memory", "host memory", "a scratch store" or "nowhere"
    costs: dict

    def __str__(self):
        ranked = ", ".join(f"{k} {v:.3g} s" if math.isfinite(v) else f"{k} -" for k, v in self.costs.items())
        return f"{self.where} (estimated: {ranked})"


def choose(nbytes, voxels, *, passes, macs, source_bytes, source_stored=True, on_device, fits_device, fits_host,
           costs=COSTS) -> Choice:
    """The cheapest place for an intermediate of ``nbytes`` read by ``passes`` later passes.

    Each option's cost is what it adds to the job beyond computing the intermediate once (seconds, from
    ``COSTS``): keeping it in the computing device's memory (on the host: read back per pass; on a GPU:
    free); on the host when computed on a GPU (one copy down, then per pass a read and a copy up); in a
    scratch store (written once, read per pass); or recomputing it in every later pass (its source read
    again: decoded when ``source_stored``, else from memory; moved to the GPU; ``macs`` multiply-adds per
    voxel; a user's function, ``macs=None``, is never recomputed). Options that do not fit are out."""
    inf = math.inf
    link = costs["link_byte"] if on_device else 0.0
    host = costs["host_memory_byte"]
    source_rate = costs["source_byte"] if source_stored else host
    options = {
        "memory": (0.0 if on_device else passes * nbytes * host) if fits_device else inf,
        "host memory": nbytes * link + passes * nbytes * (host + link) if on_device and fits_host else inf,
        "a scratch store": nbytes * (costs["scratch_write_byte"] + link)
        + passes * nbytes * (costs["scratch_read_byte"] + link),
        "nowhere": inf if macs is None else passes * (
            source_bytes * (source_rate + link) + voxels * macs * (costs["device_mac"] if on_device else costs["host_mac"])),
    }
    best = min(options, key=lambda k: (options[k], list(options).index(k)))
    return Choice(best, options)


@dataclass(frozen=True)
class Reduction:
    """A whole-image value computed tile by tile in the pass that computes the array.

    ``tile(block)`` gives the tile's 1-D partial of ``size`` values of ``dtype`` (any backend's array);
    partials are combined elementwise by ``how``: ``"sum"``, ``"min"`` or ``"max"``."""

    tile: Callable
    size: int
    dtype: Any
    how: str = "sum"

    def partials(self, x: da.Array) -> da.Array:
        """Lazy: every tile's partial, one block per tile, on the host."""
        return x.map_blocks(_block_partial, self.tile, self.size, x.ndim, new_axis=x.ndim,
                            chunks=tuple((1,) * len(c) for c in x.chunks) + ((self.size,),), dtype=self.dtype,
                            meta=np.empty((0,) * (x.ndim + 1), dtype=self.dtype))

    def of(self, x: da.Array) -> da.Array:
        """Lazy: the value over all of ``x``."""
        return getattr(self.partials(x), self.how)(axis=tuple(range(x.ndim)))

    def merge(self, a, b):
        return {"sum": np.add, "min": np.minimum, "max": np.maximum}[self.how](a, b)


def _block_partial(block, tile, size, ndim):
    return np.asarray(to_numpy(tile(block))).reshape((1,) * ndim + (size,))


class ScratchStore:
    """A temporary directory for one materialised array, removed with the last graph that reads it."""

    def __init__(self, where=None):
        self.path = tempfile.mkdtemp(prefix="gpu_tiler-kept-", dir=None if where is None else os.fspath(where))
        weakref.finalize(self, shutil.rmtree, self.path, True)

    def __reduce__(self):  # a copy on a worker reads the store; only the owner removes it
        return (_attached, (self.path,))


def _attached(path):
    copy = ScratchStore.__new__(ScratchStore)
    copy.path = path
    return copy


class _WriteAndReduce:
    """In the task that computed a tile: write it to the scratch store and give its reductions' partials."""

    def __init__(self, writer, reductions):
        self.writer, self.reductions = writer, reductions

    def __call__(self, index, block):
        self.writer(index, block)
        return index, [np.asarray(to_numpy(r.tile(block))) for r in self.reductions]


def _to_scratch(x: da.Array, budget_bytes: int, reductions, where=None, progress=None):
    """Write ``x`` tile by tile into a scratch zarr store, each tile's ``reductions`` computed in the task
    that writes it; return the stored array (lazy) and the reductions' values."""
    import zarr
    from zarr.codecs import BloscCodec

    scratch = ScratchStore(where)
    chunks = regular_chunk_shape(x.chunks)
    if chunks is None:
        x = x.rechunk(tuple(max(c) for c in x.chunks))
        chunks = regular_chunk_shape(x.chunks)
    path = os.path.join(scratch.path, "kept.zarr")
    # LZ4 at level 1 (as label's scratch store): zstd cost the pass more time than the filter did; every chunk
    # is written as it is (checking whether it is all fill value is one more pass over it)
    store = zarr.create_array(store=path, shape=x.shape, chunks=chunks, dtype=x.dtype, zarr_format=3, fill_value=0,
                              compressors=[BloscCodec(cname="lz4", clevel=1, shuffle="shuffle")],
                              config={"write_empty_chunks": True})
    values = [None] * len(reductions)

    def gather(done):
        for _, partials in done:
            for k, (r, p) in enumerate(zip(reductions, partials)):
                values[k] = p if values[k] is None else r.merge(values[k], p)

    plan = plan_of(x)
    in_flight = plan.tiles_in_flight if plan is not None else tiles_in_flight_for_chunks(x, budget_bytes)
    # half of what the tiles in flight leave of the budget (the other half: the source chunks their windows
    # read, which the plan does not count) keeps source chunks and halo lines for later batches
    spare = budget_bytes - (plan.peak_bytes if plan is not None else budget_bytes // 2)
    run_bounded(x, _WriteAndReduce(_TileWriter(store, chunks, path, path), tuple(reductions)), in_flight, progress,
                in_task=True, on_done=gather, carry_bytes=max(0, spare // 2))
    z = zarr.open_array(path, mode="r")
    stored = StoredArray(z, path, path, keep=scratch)  # the graph holds the store's owner: it lives while read
    kept = da.from_array(stored, chunks=z.chunks, name=f"kept-{uuid.uuid4().hex}",
                         getitem=_ChunkReader(path, z.chunks), meta=np.empty((0,) * z.ndim, dtype=z.dtype))
    return kept, values


def _to_host(block):
    return to_numpy(block)


def materialise(x: da.Array, reductions=(), *, passes: int = 1, budget=None, scratch=None, progress=None):
    """``x`` computed once and kept (see the module's text) with ``reductions`` (:class:`Reduction`)
    computed from its tiles in the same pass; ``passes``: how many later passes will read it (the cost
    model's weight). Returns ``(kept, values)``, one value (a NumPy array) per reduction.
    ``progress(done, total)`` follows the pass when it writes a scratch store."""
    reductions = tuple(reductions)
    info = info_of(x)
    if info is not None and info.materialised is not None:
        return info.materialised, _values(info.materialised, reductions)
    if not needs_computing(x):
        return x, _values(x, reductions)
    backend = chunk_backend(x._meta)
    host_budget = NUMPY.device(budget).budget_bytes
    device_budget = backend.device(budget).budget_bytes if backend.is_device else host_budget
    macs, source_bytes, source_stored = work_per_voxel(x)
    choice = choose(x.nbytes, x.size, passes=passes, macs=macs, source_bytes=source_bytes, source_stored=source_stored,
                    on_device=backend.is_device, fits_device=x.nbytes <= min(device_budget, host_budget),
                    fits_host=x.nbytes <= host_budget)
    if choice.where in ("memory", "host memory"):
        kept_form = x if choice.where == "memory" else x.map_blocks(
            _to_host, dtype=x.dtype, meta=np.empty((0,) * x.ndim, dtype=x.dtype))
        kept, *values = dask.persist(kept_form, *[r.of(kept_form) for r in reductions])  # one computation
        record(x, materialised=kept, kept_in=str(choice))  # the same name (memory): the same record
        if kept.name != x.name:
            record(kept, kept_in=str(choice))
        return kept, [np.asarray(v) for v in dask.compute(*values)]
    if choice.where == "nowhere":
        record(x, kept_in=str(choice))  # later passes compute x again
        return x, _values(x, reductions)
    kept, values = _to_scratch(x, host_budget, reductions, scratch, progress)
    record(kept, metadata=metadata_of(x), kept_in=str(choice))
    record(x, materialised=kept)
    return kept, values


def _values(x, reductions):
    return [np.asarray(v) for v in dask.compute(*[r.of(x) for r in reductions])]


def explain(*arrays) -> str:
    """The stages behind ``arrays``: gpu_tiler's tile operations, the intermediates kept (in memory, on
    the host, in a scratch store: with the cost model's estimates) that they read instead of computing
    again, those recomputed by every pass, and the stored inputs each reads. This is the lazy rest of a
    job; the passes already run (a threshold's, label's) are what ``PassLog`` records."""
    lines = []
    for array in arrays:
        graph = array.__dask_graph__()
        layers = getattr(graph, "layers", {})
        lines.append(f"{array.name}: shape {array.shape}, {array.dtype}")
        for name in layers:
            info = info_of_name(name)
            kept = None if info is None else info.kept_in
            if kept is not None and kept.startswith("nowhere"):
                lines.append(f"  stage   {name} (recomputed by every pass that reads it: kept {kept})")
            elif kept is not None:
                lines.append(f"  kept in {kept}: {name} (computed once; later passes read it)")
            elif name.startswith(_WORK) and not name.startswith("gpu_tiler-window-"):
                lines.append(f"  stage   {name}")
        for where in stamps_of(array):
            lines.append(f"  reads   {where}")
    return "\n".join(lines)
