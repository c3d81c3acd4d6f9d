"""One record per lazy array gpu_tiler made: what dask's array does not carry.

A dask array is its graph, chunks and dtype; gpu_tiler needs a few more facts about some arrays:
the tile plan of a :func:`map_tiles` result, the fused chain of operations behind a filter result
(so the next filter can fuse onto it), the job identity of a result whose dask name is unique to
one call (labels) and the image metadata (axes, pixel sizes) of an image.

They live in one table, keyed by dask name, under one lock. A record lives exactly as long as an
array object of that name, or its graph layer, does: every array object that gets or finds a
record holds it, and so does the array's layer of that name (a finalizer per object), which every
array made from it shares (``gt.open(path)[1]`` keeps the opened image's record after the opened
array object is gone); the record goes with the last of them. There is no cap and no eviction, so
what a record says never depends on how many other arrays the process made.

Arrays made from a recorded one by operations that keep every voxel where it was (``astype``,
elementwise arithmetic, ``rechunk``, ``map_blocks`` that keep the shape) keep its metadata: the
lookup follows the graph back through layers with one input and the same shape. A selection
``x[1]``, ``x[:, 10:300]`` or ``x[::2]`` (integers and slices with a positive step) keeps it too,
adapted by the metadata's ``sliced``: indexed axes dropped, pixel sizes times the step, the
translation moved to the first voxel kept. Other moves (``x.T``, ``x[::-1]``, ``x[None]``, fancy
indexing) lose it.
"""
from __future__ import annotations

import numbers
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["ArrayInfo", "info_of", "info_of_name", "metadata_of", "plan_of", "record"]


@dataclass(frozen=True)
class ArrayInfo:
    """What gpu_tiler knows about one lazy array beyond its graph."""

    plan: Any = None  #: the TilePlan of a map_tiles result
    chain: Any = None  #: (source array, operations) of a fused filter chain
    job: Any = None  #: (job name, input stamps) that save(resume=True) records, when not the dask name
    metadata: Any = None  #: ImageMetadata: axes, pixel sizes
    #: the same values computed once and kept (gpu_tiler._materialise): operations read it instead
    materialised: Any = None
    kept_in: str | None = None  #: where this array's values are kept ("memory", "a scratch store")


_lock = threading.RLock()  # reentrant: a finalizer may run (garbage collection) while this thread holds it
_records: dict[str, ArrayInfo] = {}
_holders: dict[str, int] = {}
_held_by: dict[int, str] = {}  # id of an array object holding a record -> its name


def _hold(array, name: str) -> None:
    """Make ``array`` and its graph layer ``name`` keep the record of ``name`` alive."""
    _hold_by(array, name)
    layers = getattr(getattr(array, "dask", None), "layers", None)
    layer = layers.get(name) if isinstance(layers, Mapping) else None
    if layer is not None:
        _hold_by(layer, name)


def _hold_by(holder, name: str) -> None:
    """Make ``holder`` (an object) keep the record of ``name`` alive; once per object."""
    key = id(holder)
    if _held_by.get(key) == name:
        return
    try:
        weakref.finalize(holder, _release, key, name)
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
        # another object of the same name (persist, a copy) keeps it alive too; not the record's own
        # kept twin (it would then keep itself alive)
        if found is not None and array is not found.materialised:
            _hold(array, name)
        return found


def info_of_name(name: str) -> ArrayInfo | None:
    """The record of the array named ``name`` (a graph layer's name), or None; holds nothing."""
    with _lock:
        return _records.get(name)


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


def _task_selection(task, parent: str):
    """(parent block key, index tuple) of one task of a getitem layer, or None when it is not a
    plain selection of one parent block (dask's Task/Alias objects, or the older tuple form)."""
    import operator

    from dask.array.chunk import getitem

    getters = (getitem, operator.getitem)
    if isinstance(task, tuple) and len(task) == 3 and task[0] in getters:  # dask < 2024.12
        key, index = task[1], task[2]
    elif type(task).__name__ == "Alias":
        key = getattr(task, "target", None)
        key = getattr(key, "key", key)
        return (key, None) if isinstance(key, tuple) and key[:1] == (parent,) else None
    elif type(task).__name__ == "Task" and getattr(task, "func", None) in getters and len(task.args) == 2:
        key, index = getattr(task.args[0], "key", None), task.args[1]
        index = getattr(index, "value", index)  # a DataNode around a literal
    else:
        return None
    if not (isinstance(key, tuple) and key[:1] == (parent,) and isinstance(index, tuple)):
        return None
    return key, index


def _selection(graph, name: str, shape) -> tuple[str, tuple, tuple] | None:
    """For a getitem layer that selects with integers and positive-step slices only: (its parent,
    per parent axis an int or (start, step, length), the parent's shape); None otherwise."""
    if not name.startswith("getitem") or 0 in shape:
        return None
    dependencies = getattr(graph, "dependencies", {}).get(name, ())
    layer = graph.layers.get(name)
    if len(dependencies) != 1 or layer is None:
        return None
    (parent,) = dependencies
    chunks = (getattr(graph.layers.get(parent), "collection_annotations", None) or {}).get("chunks")
    if chunks is None:
        return None
    first, steps = None, None
    try:
        tasks = {key: layer[key] for key in layer.keys()}
    except Exception:  # noqa: BLE001 - a layer that cannot be materialized here: no metadata, never a guess
        return None
    for key, task in tasks.items():
        found = _task_selection(task, parent)
        if found is None or len(found[0]) != len(chunks) + 1:
            return None
        block, index = found
        index = (slice(None),) * len(chunks) if index is None else index
        if len(index) != len(chunks):
            return None
        these = []
        for entry in index:
            if isinstance(entry, slice):
                step = 1 if entry.step is None else entry.step
                start = 0 if entry.start is None else entry.start
                if not isinstance(step, numbers.Integral) or step <= 0 or not isinstance(start, numbers.Integral) \
                        or start < 0:
                    return None
                these.append(int(step))
            elif isinstance(entry, numbers.Integral) and not isinstance(entry, bool) and entry >= 0:
                these.append(None)
            else:  # None (a new axis), an array, an Ellipsis
                return None
        if steps is None:
            steps = these
        elif these != steps:
            return None
        if key[1:] == (0,) * len(shape):
            first = (block, index)
    if first is None or sum(s is not None for s in steps) != len(shape):
        return None
    block, index = first
    out, kept = [], iter(shape)
    for axis, entry in enumerate(index):
        offset = sum(chunks[axis][: block[axis + 1]])
        if isinstance(entry, slice):
            out.append((offset + int(entry.start or 0), steps[axis], next(kept)))
        else:
            out.append(offset + int(entry))
    return parent, tuple(out), tuple(sum(c) for c in chunks)


def metadata_of(array):
    """The image metadata of ``array``, or of the array it was made from without moving voxels
    (or by selecting some of them with integers and positive-step slices: see the module's docs)."""
    info = info_of(array)
    if info is not None and info.metadata is not None:
        return info.metadata
    graph = getattr(array, "dask", None)
    if graph is None or not hasattr(graph, "layers"):
        return None
    name, shape = array.name, tuple(array.shape)
    selections = []
    for _ in range(64):  # a rechunk, a few arithmetic steps and selections; far enough
        selected = _selection(graph, name, shape)
        if selected is not None:
            parent, index, shape = selected
            selections.append(index)
        else:
            parent = _same_voxels_parent(graph, name, shape)
            if parent is None:
                return None
        with _lock:
            found = _records.get(parent)
        if found is not None and found.metadata is not None:
            return _selected(found.metadata, selections, len(array.shape))
        name = parent
    return None


def _selected(metadata, selections, ndim: int):
    """``metadata`` after the selections (nearest the array first), or None when it cannot follow them."""
    if len(metadata.axes) != (len(selections[-1]) if selections else ndim):
        return None
    for index in reversed(selections):
        sliced = getattr(metadata, "sliced", None)
        if sliced is None or len(metadata.axes) != len(index):
            return None
        metadata = sliced(index)
    return metadata if len(metadata.axes) == ndim else None
