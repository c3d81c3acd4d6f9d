"""Operations, their halos, and fusing several of them into one tiled pass.

An :class:`Operation` is a few :class:`Step` s (neighbourhood computations, each with the halo it
reaches, its boundary mode and cval) and an optional pointwise ``combine`` of the operation's input
with the steps' result (top-hats subtract an opening from their input). A chain of operations runs
in one :func:`map_tiles` pass with the summed halo, and equals the operations run one after
another on the whole image: each step runs on the window cut back to the image along the axes it
reaches, so the backend's filter extends the image at its border itself, exactly as it does on the
whole image (what lies beyond the border is the step's own mode applied to the previous step's
result, cval at full precision). ``wrap`` cannot be handled that way (the other side of the image
is not in the window); the window's periodic halo serves instead, which is exact only when every
earlier step that reaches along that axis also wraps, and a chain that breaks that rule is not fused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import dask.array as da
import numpy as np

from gpu_tiler._backends import chunk_backend, to_numpy
from gpu_tiler._engine.tiles import map_tiles
from gpu_tiler._errors import ParameterRuntimeError
from gpu_tiler._io.sources import as_dask
from gpu_tiler._planning.plan import plan_tiles
from gpu_tiler._registry import info_of, record

_WRAP = ("wrap", "grid-wrap")


@dataclass(frozen=True)
class Step:
    """One computation on a tile reaching ``halo`` voxels per axis.

    ``call(backend, tile, border)`` returns the new tile; ``border`` is the window's
    :class:`Border` for steps that run sub-chains of their own."""

    name: str
    halo: tuple[int, ...]
    modes: tuple[str, ...]
    cval: float
    call: Callable


@dataclass(frozen=True)
class Operation:
    name: str
    steps: tuple[Step, ...]
    out_dtype: np.dtype
    combine: Callable | None = None  # (backend, op_input, steps_result) -> result
    whole_axes: tuple[int, ...] = field(default=())  # axes along which tiles must hold whole lines

    @property
    def halo(self) -> tuple[int, ...]:
        return tuple(int(sum(h)) for h in zip(*(s.halo for s in self.steps)))


def ndimage_step(name, function, halo, modes, cval, /, *, mode_arg=None, **kwargs) -> Step:
    """A step that calls ``backend.ndimage.<function>(tile, mode=..., cval=..., **kwargs)``.

    ``modes``: per image axis, how the step meets the image border (where the window is cut back
    to the image); ``mode_arg``: the ``mode`` the function is given, when not ``modes`` itself (SciPy
    takes one mode per filtered axis with ``axes=``)."""
    from functools import partial

    if mode_arg is None:
        mode_arg = modes[0] if len(set(modes)) == 1 else list(modes)
    return Step(name, tuple(halo), tuple(modes), float(cval),
                partial(_call_ndimage, function, dict(kwargs, mode=mode_arg, cval=cval)))


def _call_ndimage(function, kwargs, backend, tile, border):
    return getattr(backend.ndimage, function)(tile, **kwargs)


@dataclass(frozen=True)
class Border:
    """Where a window lies: per axis ``(start, stop)`` in image coordinates, and the image's shape."""

    location: tuple[tuple[int, int], ...]
    image_shape: tuple[int, ...]


def fusable(operations) -> bool:
    """Whether ``operations`` run as one pass give exactly the sequential whole-image result."""
    if len(operations) > 1 and any(op.whole_axes for op in operations):
        return False
    steps = [s for op in operations for s in op.steps]
    for k, step in enumerate(steps):
        for axis, (mode, reach) in enumerate(zip(step.modes, step.halo)):
            if mode in _WRAP and reach > 0:
                if any(prev.halo[axis] > 0 and prev.modes[axis] not in _WRAP for prev in steps[:k]):
                    return False
    return True


def run_step(step: Step, backend, tile, border: Border):
    """Run one step on a window; along axes it reaches with a mode other than wrap, the part of the
    window beyond the image border is cut off first, so that the backend's own filter extends the
    image there exactly as it does on the whole image (cval at full precision included)."""
    inner, cropped = [], False
    for axis, ((start, stop), n) in enumerate(zip(border.location, border.image_shape)):
        lo, hi = 0, stop - start
        if step.halo[axis] > 0 and step.modes[axis] not in _WRAP:
            lo, hi = max(0, -start), (stop - start) - max(0, stop - n)
            cropped = cropped or (lo, hi) != (0, stop - start)
        inner.append(slice(lo, hi))
    if not cropped:
        return step.call(backend, tile, border)
    inner = tuple(inner)
    location = tuple((start + s.start, start + s.stop) for (start, _), s in zip(border.location, inner))
    result = step.call(backend, tile[inner], Border(location, border.image_shape))
    out = backend.xp.zeros(tile.shape, dtype=result.dtype)  # beyond the border: never read again
    out[inner] = result
    return out


def run_operations(tile, *, location, image_shape, operations):
    """Run a chain of operations on one window (the map_tiles function behind every filter).

    Work is spent only where the result can depend on it: along an axis where no step wraps, the
    window beyond the image border is never read (each step reaching along it cuts it off, the
    others are pointwise along it), so the chain runs on the window cut back to the image; and
    before each step the window shrinks to the tile's core plus what the remaining steps reach."""
    backend = chunk_backend(tile)
    steps = [s for op in operations for s in op.steps]
    total = tuple(int(sum(h)) for h in zip(*(s.halo for s in steps)))
    core = tuple((start + h, stop - h) for (start, stop), h in zip(location, total))
    where = []
    for axis, ((start, stop), n) in enumerate(zip(location, image_shape)):
        if any(s.halo[axis] > 0 and s.modes[axis] in _WRAP for s in steps):
            where.append((start, stop))
        else:
            where.append((max(start, 0), min(stop, n)))
    result, where = _run_chain(_cut(tile, tuple(location), tuple(where)), tuple(where), core, tuple(image_shape),
                               operations, steps, backend)
    if where == tuple(location):
        return result
    out = backend.xp.zeros(tile.shape, dtype=result.dtype)  # outside the core: trimmed away by map_tiles
    out[tuple(slice(lo - start, hi - start) for (lo, hi), (start, _) in zip(where, location))] = result
    return out


def _cut(tile, where, wanted):
    """The part of ``tile`` (covering image coordinates ``where``) that covers ``wanted``."""
    if where == wanted:
        return tile
    return tile[tuple(slice(lo - start, hi - start) for (lo, hi), (start, _) in zip(wanted, where))]


def run_on_window(tile, border: Border, operations, backend):
    """Run operations on a whole window, keeping all of it (for steps that run sub-chains)."""
    steps = [s for op in operations for s in op.steps]
    return _run_chain(tile, border.location, border.location, border.image_shape, operations, steps, backend)[0]


def _run_chain(tile, where, core, image_shape, operations, steps, backend):
    done = 0
    for op in operations:
        op_input, input_where = tile, where
        for step in op.steps:
            need = tuple(int(sum(h)) for h in zip(*(s.halo for s in steps[done:])))
            wanted = tuple((max(lo, c0 - n), min(hi, c1 + n)) for (lo, hi), (c0, c1), n in zip(where, core, need))
            tile, where = _cut(tile, where, wanted), wanted
            tile = run_step(step, backend, tile, Border(where, image_shape))
            done += 1
        if op.combine is not None:
            tile = op.combine(backend, _cut(op_input, input_where, where), tile)
    return tile, where


def _initial_modes(steps, ndim):
    """The boundary mode the window is first grown with: per axis, the first step reaching along it."""
    modes = []
    for axis in range(ndim):
        reaching = [s for s in steps if s.halo[axis] > 0]
        modes.append((reaching[0] if reaching else steps[0]).modes[axis])
    return tuple(modes)


def apply_operation(image, operation: Operation, *, fuse: bool = True, budget=None) -> da.Array:
    """Run ``operation`` tile by tile on ``image``; fuse it onto the chain that made ``image`` when exact."""
    x = as_dask(image)
    source, operations = x, (operation,)
    info = info_of(x) if fuse else None
    previous = None if info is None else info.chain
    if previous is not None and fusable(previous[1] + (operation,)):
        source, operations = previous[0], previous[1] + (operation,)
    steps = [s for op in operations for s in op.steps]
    halo = tuple(int(sum(h)) for h in zip(*(op.halo for op in operations)))
    whole = operation.whole_axes
    tile_shape = None
    if whole:
        tile_shape = plan_tiles(source.shape, source.dtype, halo, budget, out_dtype=operation.out_dtype,
                                whole_axes=whole).tile_shape
    out = map_tiles(
        # steps cut the window back to the image wherever they use cval, so the padding's cval is never read
        run_operations, source, halo=halo, mode=_initial_modes(steps, source.ndim), cval=0,
        dtype=operations[-1].out_dtype, budget=budget, tile_shape=tile_shape, pass_location=True,
        working_copies=2 + len(steps), image_shape=source.shape, operations=operations,
        name=f"gpu_tiler-{'-'.join(op.name for op in operations)}-{_token(source, operations, budget, tile_shape)}",
    )
    # the record lives as long as a result of that name does: a dropped result does not keep its
    # input's graph (and any image data in it) alive
    return record(out, chain=(source, operations))


def _token(source, operations, budget, tile_shape):
    from dask.base import tokenize

    return tokenize(source.name, [(op.name, op.halo, [(s.name, s.modes, s.cval, s.call) for s in op.steps],
                                   op.combine, str(op.out_dtype)) for op in operations], budget, tile_shape)


# ---- output= ----------------------------------------------------------------------------------


def output_target(output, default_dtype):
    """SciPy's ``output=``: ``(dtype, target)``. None: ``default_dtype``; a dtype (``np.float32``,
    ``"float32"``): the result's dtype; an array (NumPy, CuPy, zarr, anything with ``shape``, ``dtype``
    and item assignment): the result is written into it, in its dtype."""
    if output is None:
        return np.dtype(default_dtype), None
    if isinstance(output, (type, np.dtype, str)):
        try:
            return np.dtype(output), None
        except TypeError:
            raise TypeError(f"output={output!r} is not a dtype; give a dtype, an array to write into, or None") from None
    if all(hasattr(output, a) for a in ("shape", "dtype", "__setitem__")):
        return np.dtype(output.dtype), output
    raise TypeError(f"output={output!r}: give a dtype (e.g. np.float32), an array or zarr array to write into, or None")


def _to_host(block):
    return to_numpy(block)


def deliver(result: da.Array, target):
    """``result`` itself, or (``target`` given) ``result`` written tile by tile into ``target`` (no
    whole-image copy: each tile goes straight to its place), which is returned, as SciPy returns it."""
    if target is None:
        return result
    if tuple(target.shape) != tuple(result.shape):
        raise ParameterRuntimeError(f"output has shape {tuple(target.shape)}; the result has {tuple(result.shape)}")
    on_device = chunk_backend(target).is_device
    if chunk_backend(result._meta).is_device and not on_device:
        result = result.map_blocks(_to_host, dtype=result.dtype, meta=np.empty((0,) * result.ndim, result.dtype))
    # tiles are disjoint: a NumPy target takes them in parallel; a store with chunks of its own
    # (zarr) might share a chunk between two tiles, so its writes take turns
    da.store(result, target, lock=not isinstance(target, np.ndarray))
    return target
