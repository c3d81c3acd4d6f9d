"""Intermediates that several passes read are computed once and kept where they fit.

A pipeline such as ``g = gaussian(x); m = threshold(g, "otsu"); labels, n = label(m)`` reads ``g`` in
three passes: the Otsu level's minimum/maximum and histogram, then label's pass 1. Lazily, each pass
would compute the Gaussian again. When a global step consumes a lazy intermediate,
:func:`materialise` computes it once, in the pass that needs it (its reductions ride along in the
same computation), and keeps it:

- in memory (persisted: locally in this process, on the workers under dask.distributed) when it
  fits the host's memory budget;
- else in a scratch zarr store written tile by tile within the budget (removed when no graph reads
  it any more), read back by later passes;
- or not at all when recomputing it costs no more than reading it back: an array whose graph holds
  no tile operation (a stored image, arithmetic on one) is read again instead.

The kept array is recorded as the intermediate's materialised twin: every gpu_tiler operation that
receives the intermediate (through ``as_dask``) reads the twin instead, so downstream stages never
recompute the chain. Nothing runs before a global step asks for it: everything stays lazy until then.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import weakref

import dask
import dask.array as da
import numpy as np

from gpu_tiler._backends import NUMPY, chunk_backend
from gpu_tiler._execution.bounded import run_bounded, tiles_in_flight_for_chunks
from gpu_tiler._io.provenance import StoredArray, stamps_of
from gpu_tiler._io.sinks import _TileWriter
from gpu_tiler._io.sources import _ChunkReader, _regular_chunks
from gpu_tiler._registry import (
    info_of,
    info_of_name,
    metadata_of,
    record,
)

__all__ = ["explain", "materialise", "needs_computing"]

#: layer-name prefixes of gpu_tiler's tile operations: an array whose graph has one costs real work
_WORK = ("gpu_tiler-",)


def needs_computing(x: da.Array) -> bool:
    """Whether ``x``'s graph runs a gpu_tiler tile operation (not only reads and elementwise steps)."""
    layers = getattr(x.__dask_graph__(), "layers", {})
    return any(name.startswith(_WORK) for name in layers)


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


def _to_scratch(x: da.Array, budget_bytes: int, where=None) -> da.Array:
    """Write ``x`` tile by tile into a scratch zarr store; return the stored array (lazy)."""
    import zarr

    scratch = ScratchStore(where)
    chunks = _regular_chunks(x)
    if chunks is None:
        x = x.rechunk(tuple(max(c) for c in x.chunks))
        chunks = _regular_chunks(x)
    path = os.path.join(scratch.path, "kept.zarr")
    store = zarr.create_array(store=path, shape=x.shape, chunks=chunks, dtype=x.dtype, zarr_format=3, fill_value=0)
    run_bounded(x, _TileWriter(store, chunks, path, path), tiles_in_flight_for_chunks(x, budget_bytes), in_task=True)
    z = zarr.open_array(path, mode="r")
    stored = StoredArray(z, path, path, keep=scratch)  # the graph holds the store's owner: it lives while read
    return da.from_array(stored, chunks=z.chunks, name=f"kept-{uuid.uuid4().hex}",
                         getitem=_ChunkReader(path, z.chunks), meta=np.empty((0,) * z.ndim, dtype=z.dtype))


def materialise(x: da.Array, reduce=None, *, budget=None, scratch=None):
    """``x`` computed once and kept (see the module's text), with ``reduce(kept)`` (lazy reductions,
    e.g. ``lambda a: (a.min(), a.max())``) computed in the same pass. Returns ``(kept, values)``."""
    reduce = reduce or (lambda a: ())
    info = info_of(x)
    if info is not None and info.materialised is not None:
        return info.materialised, dask.compute(*reduce(info.materialised))
    if not needs_computing(x):
        return x, dask.compute(*reduce(x))
    backend = chunk_backend(x._meta)
    host_budget = NUMPY.device(budget).budget_bytes
    budget_bytes = min(host_budget, backend.device(budget).budget_bytes) if backend.is_device else host_budget
    if x.nbytes <= budget_bytes:
        kept, *values = dask.persist(x, *reduce(x))  # one computation: x and its reductions
        record(x, materialised=kept, kept_in="memory")  # the same name: the same record
        return kept, dask.compute(*values)
    kept = _to_scratch(x, host_budget, scratch)
    record(kept, metadata=metadata_of(x), kept_in="a scratch store")
    record(x, materialised=kept)
    return kept, dask.compute(*reduce(kept))


def explain(array) -> str:
    """The stages of ``array``'s graph: gpu_tiler's tile operations, the intermediates kept (in
    memory or in a scratch store) that it reads instead of recomputing, and the stored inputs read."""
    graph = array.__dask_graph__()
    layers = getattr(graph, "layers", {})
    lines = [f"{array.name}: shape {array.shape}, {array.dtype}"]
    for name in layers:
        info = info_of_name(name)
        kept = None if info is None else info.kept_in
        if kept is not None:
            lines.append(f"  kept in {kept}: {name} (computed once; later passes read it)")
        elif name.startswith(_WORK):
            lines.append(f"  stage   {name}")
    for where in stamps_of(array):
        lines.append(f"  reads   {where}")
    return "\n".join(lines)
