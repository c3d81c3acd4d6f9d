"""One record per lazy array gpu_tiler made: what dask's array does not carry.

A dask array is its graph, chunks and dtype; gpu_tiler needs a few more facts about some arrays:
the tile plan of a :func:`map_tiles` result, the fused chain of operations behind a filter result
(so the next filter can fuse onto it), the job identity of a result whose dask name is unique to
one call (labels) and the image metadata (axes, pixel sizes) of an image.

They live in one table, keyed by dask name, under one lock. A record lives exactly as long as an
array object of that name does: every array object that gets or finds a record holds it (a
finalizer per object), and the record goes with the last of them. There is no cap and no eviction,
so what a record says never depends on how many other arrays the process made.

Arrays made from a recorded one by operations that keep every voxel where it was (``astype``,
elementwise arithmetic, ``rechunk``, ``map_blocks`` that keep the shape) keep its metadata: the
lookup follows the graph back through layers with one input and the same shape.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["ArrayInfo", "info_of", "metadata_of", "plan_of", "record"]


@dataclass(frozen=True)
class ArrayInfo:
    """What gpu_tiler knows about one lazy array beyond its graph."""

    plan: Any = None  #: the TilePlan of a map_tiles result
    chain: Any = None  #: (source array, operations) of a fused filter chain
    job: Any = None  #: (job name, input stamps) that save(resume=True) records, when not the dask name
    metadata: Any = None  #: ImageMetadata: axes, pixel sizes


_lock = threading.RLock()  # reentrant: a finalizer may run (garbage collection) while this thread holds it
_records: dict[str, ArrayInfo] = {}
_holders: dict[str, int] = {}
_held_by: dict[int, str] = {}  # id of an array object holding a record -> its name


def _hold(array, name: str) -> None:
    """Make ``array`` (an object) keep the record of ``name`` alive; once per object."""
    key = id(array)
    if _held_by.get(key) == name:
        return
    try:
        weakref.finalize(array, _release, key, name)
    except TypeError:  # an object without weak references: it cannot hold a record
        return
    _held_by[key] = name
    _holders[name] = _holders.get(name, 0) + 1


def _release(key: int, name: str) -> None:
    with _lock:
        if _held_by.get(key) == name:
            del _held_by[key]
        left = _holders.get(name, 1) - 1
        if left > 0:
            _holders[name] = left
        else:
            _holders.pop(name, None)
            _records.pop(name, None)


def record(array, **facts):
    """Record ``facts`` (fields of :class:`ArrayInfo`) about ``array``; return ``array``."""
    name = array.name
    with _lock:
        _records[name] = replace(_records.get(name, ArrayInfo()), **facts)
        _hold(array, name)
    return array


def info_of(array) -> ArrayInfo | None:
    """The record of ``array`` (by its dask name), or None."""
    name = getattr(array, "name", None)
    if name is None:
        return None
    with _lock:
        found = _records.get(name)
        if found is not None:
            _hold(array, name)  # another object of the same name (persist, a copy) keeps it alive too
        return found


#: dask layers that move voxels while keeping the shape (x.T of a square image, x[::-1], np.roll)
_MOVING = ("getitem", "transpose", "flip", "roll", "rot90", "swapaxes", "moveaxis", "reshape", "shuffle")


def plan_of(array):
    """The tile plan a :func:`gpu_tiler.map_tiles` result was built with (None for other arrays)."""
    info = info_of(array)
    return None if info is None else info.plan


def _same_voxels_parent(graph, name: str, shape) -> str | None:
    """The one layer ``name`` is computed from, when it has one input of the same shape and keeps
    every voxel where it was."""
    if name.startswith(_MOVING):
        return None
    dependencies = getattr(graph, "dependencies", {}).get(name, ())
    if len(dependencies) != 1:
        return None
    (parent,) = dependencies
    layer = graph.layers.get(parent)
    collection = getattr(layer, "collection_annotations", None) or {}
    parent_shape = collection.get("shape")
    if parent_shape is not None and tuple(parent_shape) != tuple(shape):
        return None
    return parent


def metadata_of(array):
    """The image metadata of ``array``, or of the array it was made from without moving voxels."""
    info = info_of(array)
    if info is not None and info.metadata is not None:
        return info.metadata
    graph = getattr(array, "dask", None)
    if graph is None or not hasattr(graph, "layers"):
        return None
    name, shape = array.name, tuple(array.shape)
    for _ in range(64):  # a rechunk or a few arithmetic steps; far enough
        parent = _same_voxels_parent(graph, name, shape)
        if parent is None:
            return None
        with _lock:
            found = _records.get(parent)
        if found is not None and found.metadata is not None:
            return found.metadata if len(found.metadata.axes) == len(shape) else None
        name = parent
    return None
