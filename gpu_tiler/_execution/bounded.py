"""Bounded execution: compute a dask array tile by tile with at most N tiles in flight.

Dask's schedulers decide on their own how much to hold in memory; for images many times the
budget that can be far more than the plan allows. Here the array's optimized graph is built once
and run in batches of ``tiles_in_flight`` output blocks, each batch with that many threads of
dask's own threaded scheduler, and every block is handed to ``write`` as soon as it is done, so
that at no time more than one batch of tiles (with the source chunks they read) is in memory.
"""
from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass, field

import dask
import dask.array as da
import dask.core
import dask.threaded
from dask.callbacks import Callback


def _needed(dsk, keys):
    """The sub-graph that computing ``keys`` needs (culling, without touching the rest)."""
    seen, stack = set(), list(keys)
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        stack.extend(dep for dep in dask.core.get_dependencies(dsk, key) if dep not in seen)
    return {k: dsk[k] for k in seen}


def active_client():
    """The dask.distributed client our work should run on, or None for the local threaded scheduler."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:  # distributed is installed, but no client is running
        return None


def _write_in_task(write, index, block):
    return write(index, block)


def run_bounded(array: da.Array, write, tiles_in_flight: int, progress=None, skip=frozenset(), *,
                in_task: bool = False, on_done=None, carry_bytes: int = 0, order=None) -> None:
    """Compute every block of ``array`` in batches of ``tiles_in_flight`` blocks, in raster order or ``order``.

    ``write(block_index, block)`` receives each block: in this process after its batch (the default:
    for small blocks, e.g. per-tile summaries), or, with ``in_task=True``, inside the task that
    computed it (for tiles written to shared storage; ``write`` must then be picklable, and what it
    returns goes to ``on_done``). ``on_done(indices)`` is called here after each batch with the
    indices it finished. Blocks whose index is in ``skip`` (written by an earlier run) are not
    computed. ``progress(done, total)`` is called after each batch, counting skipped blocks as done.

    Locally, batches run on dask's threaded scheduler with ``tiles_in_flight`` threads. When a
    dask.distributed client is active, they run on its workers, ``tiles_in_flight`` per worker.

    ``carry_bytes`` (locally): values a batch computed that later batches need again (a source chunk,
    a neighbour's halo lines) are kept for them, smallest first, up to this many bytes, instead of being
    computed (decoded) again; each is dropped after the last batch that needs it. ``order``: every block index
    once, in the order to compute them (e.g. one that keeps blocks reading the same source chunks together, so
    that what they share is carried from batch to batch)."""
    in_flight = max(1, int(tiles_in_flight))
    every = list(itertools.product(*(range(n) for n in array.numblocks)))
    if order is not None:
        order = [tuple(int(k) for k in i) for i in order]
        if len(order) != len(every) or set(order) != set(every):
            raise ValueError(f"order must list each of the {len(every)} block indices of the array once")
        every = order
    indices = [i for i in every if i not in skip]
    already = len(every) - len(indices)
    keys = [(array.name, *i) for i in indices]
    # with values kept between batches, small tasks (a neighbour's halo lines) must stay keys of their own
    with dask.config.set({"optimization.fuse.active": False} if carry_bytes else {}):
        dsk = dict(array.__dask_optimize__(array.__dask_graph__(), keys))
    if not all(k in dsk for k in keys):  # an optimization renamed the outputs: run the graph as built
        dsk = dict(array.__dask_graph__())
    client = active_client()
    if client is not None:
        batch_size = in_flight * max(1, len(client.scheduler_info().get("workers", {})))

        def get(graph, wanted):
            return client.get(graph, wanted, sync=True)
    else:
        batch_size = in_flight

        def get(graph, wanted):
            return dask.threaded.get(graph, wanted, num_workers=in_flight)

    token = "gpu_tiler-write-" + array.name
    total = len(every)
    progress = PassLog.following(array, total, progress)  # one pass, however many batches
    if progress is not None and already:
        progress(already, total)
    batches = [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]
    carry = _Carry(dsk, [[(array.name, *i) for i in batch] for batch in batches],
                   carry_bytes if client is None else 0)
    _in_bounded_run.depth = getattr(_in_bounded_run, "depth", 0) + 1
    done = already
    try:
        for b, batch in enumerate(batches):
            block_keys = [(array.name, *i) for i in batch]
            sub = _needed(carry.graph, block_keys)
            kept = carry.candidates(b, sub, block_keys)
            if in_task:
                writes = {(token, *i): (_write_in_task, write, i, key) for i, key in zip(batch, block_keys)}
                sub.update(writes)
                *results, values = get(sub, [*writes, kept])
            else:
                *blocks, values = get(sub, [*block_keys, kept])
                for index, block in zip(batch, blocks):
                    write(index, block)
                results = batch
            carry.keep(b, kept, values)
            if on_done is not None:
                on_done(list(results))
            done += len(batch)
            if progress is not None:
                progress(done, total)
    finally:
        _in_bounded_run.depth -= 1


class _Carry:
    """Values computed by one batch that later batches need, kept for them within ``allowance`` bytes.

    A batch also computes the one-input tasks of its values that later batches need (the halo lines a
    later window takes from a chunk this batch decoded), so the chunk need not be kept or decoded again for
    them. What is kept is what is needed soonest (values needed again nearest first)."""

    def __init__(self, dsk, batches, allowance):
        self.allowance, self.values, self.uses = int(allowance), {}, {}
        self.graph = _Overlay(self.values, dsk)
        self.dependents = {}
        if self.allowance > 0:
            for b, keys in enumerate(batches):
                for key in _needed(dsk, keys):
                    self.uses.setdefault(key, []).append(b)
            computed = {key for key in dsk if dask.core.get_dependencies(dsk, key)}  # not data in the graph
            for key in computed:
                deps = dask.core.get_dependencies(dsk, key)
                if len(deps) == 1 and next(iter(deps)) in computed:
                    self.dependents.setdefault(next(iter(deps)), []).append(key)

    def _next_use(self, key, b):
        later = [u for u in self.uses.get(key, ()) if u > b]
        return later[0] if later else None

    def candidates(self, b, sub, outputs):
        """Keys worth keeping after batch ``b`` (its graph ``sub`` grows by the small tasks they need)."""
        if self.allowance <= 0:
            return []
        outputs = set(outputs)
        wanted = [k for k in sub if k not in outputs and k not in self.values and self._next_use(k, b) is not None]
        for key in list(sub):  # one-input tasks of this batch's values that a later batch needs
            for child in self.dependents.get(key, ()):
                if child not in sub and child not in self.values and self._next_use(child, b) is not None:
                    sub[child] = self.graph.dsk[child]
                    wanted.append(child)
        return wanted

    def keep(self, b, keys, values):
        pool = {k: v for k, v in self.values.items() if self._next_use(k, b) is not None}
        pool.update(zip(keys, values))
        self.values.clear()
        used = 0
        for key in sorted(pool, key=lambda k: (self._next_use(k, b), _nbytes(pool[k]))):
            size = _nbytes(pool[key])
            if used + size <= self.allowance:
                self.values[key], used = pool[key], used + size


class _Overlay(dict):
    """A graph read through kept values: a kept key is its value (no task, no dependencies)."""

    def __init__(self, values, dsk):
        super().__init__()
        self.values, self.dsk = values, dsk

    def __getitem__(self, key):
        return self.values[key] if key in self.values else self.dsk[key]

    def __contains__(self, key):
        return key in self.values or key in self.dsk


def _nbytes(value) -> int:
    return int(getattr(value, "nbytes", 1 << 62))  # what cannot say its size is never kept


def tiles_in_flight_for_chunks(array: da.Array, budget_bytes: int, working_copies: int = 2) -> int:
    """Tiles in flight for an array that was not planned by map_tiles: as many of its largest
    chunks (with working copies) as the budget holds, at most one per CPU core, at least one."""
    biggest = 1
    for c in array.chunks:
        biggest *= max(c) if c else 0
    per_tile = max(1, biggest * array.dtype.itemsize * (1 + working_copies))
    return max(1, min(os.cpu_count() or 1, budget_bytes // per_tile))


# ---- passes --------------------------------------------------------------------------------------------------

_in_bounded_run = threading.local()  # run_bounded's batches are one pass, not one each


def _names(dsk) -> frozenset:
    """The layer names of a graph (before optimization fuses them, when it has layers)."""
    layers = getattr(dsk, "layers", None)
    if layers is not None:
        return frozenset(layers)
    return frozenset(key[0] if isinstance(key, tuple) else str(key) for key in dsk)


def _only_finishes(names) -> bool:
    """Whether a computation only finishes values already computed (a persisted reduction's last step)."""
    return all("finalize" in name or "aggregate" in name for name in names)


@dataclass
class Pass:
    """One pass over tiles: the graph layers (dask names) it computed, its tasks (or tiles) and how many are done."""

    names: frozenset
    total: int
    done: int = 0
    extra: dict = field(default_factory=dict)


class PassLog(Callback):
    """While active (``with PassLog(...)``), every pass this process runs: each computation on the local
    schedulers (but those that only finish reductions already computed), and each :func:`run_bounded` job
    (one pass, however many batches), in order.

    ``on_pass(p)`` is called when pass ``p`` (a :class:`Pass`) starts and may return a callback
    ``update(done, total)`` (a progress bar's). Passes run on a dask.distributed cluster are not seen
    (its scheduler runs them)."""

    _active: list = []

    def __init__(self, on_pass=None):
        super().__init__()
        self.passes: list[Pass] = []
        self.on_pass = on_pass or (lambda p: None)
        self._updates: dict = {}
        self._lock = threading.Lock()

    def __enter__(self):
        PassLog._active.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        PassLog._active.remove(self)
        return super().__exit__(*exc)

    def begin(self, names, total):
        with self._lock:
            p = Pass(frozenset(names), int(total))
            self.passes.append(p)
        update = self.on_pass(p)

        def advance(done, total):
            p.done, p.total = done, total
            if update is not None:
                update(done, total)

        return advance

    @classmethod
    def following(cls, array, total, progress=None):
        """A ``progress(done, total)`` for a run_bounded job: the caller's, and every active log's pass."""
        if not cls._active:
            return progress
        names = _names(array.__dask_graph__())
        callbacks = [log.begin(names, total) for log in list(cls._active)] + ([progress] if progress else [])

        def report(done, total):
            for callback in callbacks:
                callback(done, total)

        return report

    # dask's callbacks: one pass per computation on the local schedulers, unless run_bounded runs it
    def _start_state(self, dsk, state):
        names = _names(dsk)
        if getattr(_in_bounded_run, "depth", 0) or _only_finishes(names):
            return
        total = len(state["ready"]) + len(state["waiting"]) + len(state["finished"])
        self._updates[id(state)] = (self.begin(names, total), total)

    def _posttask(self, key, result, dsk, state, worker_id):
        found = self._updates.get(id(state))
        if found is not None:
            found[0](len(state["finished"]), found[1])

    def _finish(self, dsk, state, failed):
        found = self._updates.pop(id(state), None)
        if found is not None:
            found[0](found[1], found[1])


__all__ = ["Pass", "PassLog", "active_client", "tiles_in_flight_for_chunks", "run_bounded"]
