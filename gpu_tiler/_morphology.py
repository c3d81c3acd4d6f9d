"""Binary morphology tile by tile, equal to scipy.ndimage's on the whole image.

``binary_erosion`` / ``binary_dilation`` with ``iterations >= 1`` are local: ``iterations`` times the
structure's reach (origin included) is the halo, and each window is cut back to the image where it
meets the border, so the backend's own function applies ``border_value`` there as SciPy does. A
``mask`` is a second input, tiled with the image. ``iterations < 1`` (repeat until nothing changes)
is not local: it runs as rounds of a fixed number of iterations, each a tiled pass, until a round
changes nothing; the first such round's result is SciPy's (once the iteration reaches its fixed
point it stays there, and it cannot return to an earlier state without cycling forever, which
SciPy's loop would too). ``binary_fill_holes`` is background components not connected to the image
border: the tiled labeller (:func:`gpu_tiler.label`) numbers the background, the labels met on the
border are removed, for a symmetric 3-wide structure at origin 0; any other structure or origin runs
SciPy's own definition (a dilation from the border within the background, until stable).
"""
from __future__ import annotations

import operator
from functools import partial

import numpy as np

from gpu_tiler._backends import chunk_backend, to_numpy
from gpu_tiler._engine.chain import (
    Operation,
    Step,
    _call_ndimage,
    apply_operation,
    deliver,
    output_target,
)
from gpu_tiler._engine.tiles import map_tiles
from gpu_tiler._errors import ParameterRuntimeError, ParameterTypeError
from gpu_tiler._io.sources import as_dask
from gpu_tiler._planning.checks import (
    _per_axis,
    check_image,
    check_structure,
    expand_array,
    normalize_axes,
    normalize_origin,
    on_axes,
    reach,
)
from gpu_tiler.labels import label

#: Iterations per tiled round when iterating until stable (each round: one pass, halo this many reaches).
ROUND_ITERATIONS = 16

__all__ = ["binary_closing", "binary_dilation", "binary_erosion", "binary_fill_holes", "binary_opening"]


def _cross(ndim):
    """``scipy.ndimage.generate_binary_structure(ndim, 1)``: the centre and its face neighbours."""
    return np.abs(np.indices((3,) * ndim) - 1).sum(axis=0) <= 1


def _structure(x, structure, origin, axes):
    """The structure over all axes (SciPy's default cross over ``axes``), its origin and reach."""
    on = normalize_axes(axes, x.ndim)
    st = _cross(len(on)) if structure is None else check_structure(structure, len(on))
    st = expand_array(st, on, x.ndim, "structure")
    origin = normalize_origin(on_axes(_per_axis("origin", origin, len(on)), on, x.ndim, 0), st.shape)
    return st, origin, reach(st.shape, origin=origin)


def _iterations(iterations):
    if isinstance(iterations, bool):
        raise ParameterTypeError(f"iterations={iterations!r} must be a whole number")
    try:
        return operator.index(iterations)
    except TypeError:
        raise ParameterTypeError(f"iterations={iterations!r} must be a whole number (< 1: until nothing changes)") \
            from None


def _mask(x, mask):
    if mask is None:
        return None
    m = as_dask(mask)
    if m.shape != x.shape:
        raise ParameterRuntimeError(f"mask has shape {m.shape}; the image has {x.shape} (they must be equal)")
    return m


def _masked_tile(tile, mask, *, location, image_shape, function, kwargs):
    """``function`` on a window and its mask, both cut back to the image (the function applies
    ``border_value`` beyond it, as on the whole image)."""
    backend = chunk_backend(tile)
    inner = tuple(slice(max(0, -start), (stop - start) - max(0, stop - n))
                  for (start, stop), n in zip(location, image_shape))
    out = backend.xp.zeros(tile.shape, dtype=bool)  # beyond the image: trimmed away by map_tiles
    out[inner] = getattr(backend.ndimage, function)(tile[inner], mask=mask[inner], **kwargs)
    return out


def _iterate(function, x, kwargs, steps, reach_, mask, fuse, budget):
    """``steps`` iterations of ``function`` as one tiled pass (halo: ``steps`` reaches)."""
    halo = tuple(steps * r for r in reach_)
    call = dict(kwargs, iterations=steps)
    if mask is None:
        step = Step(function, halo, ("constant",) * x.ndim, float(bool(kwargs["border_value"])),
                    partial(_call_ndimage, function, call))
        return apply_operation(x, Operation(function, (step,), np.dtype(bool)), fuse=fuse, budget=budget)
    return map_tiles(_masked_tile, x, mask, halo=halo, mode="constant", cval=0, dtype=bool, pass_location=True,
                     budget=budget, image_shape=x.shape, function=function, kwargs=call)


def _until_stable(run, x):
    """Rounds of ``run`` until one changes nothing; each round's result is held (persisted) for the next."""
    current, before = x, x.astype(bool)
    while True:
        result = run(current).persist()
        if not bool(to_numpy((result != before).any().compute())):
            return result
        current = before = result


def _binary(function, image, structure, iterations, mask, output, border_value, origin, brute_force, axes, fuse,
            budget):
    x = check_image(as_dask(image))
    st, origin, reach_ = _structure(x, structure, origin, axes)
    iterations = _iterations(iterations)
    m = _mask(x, mask)
    _, target = output_target(output, bool)  # SciPy's binary morphology gives booleans whatever dtype is asked
    kwargs = {"structure": st, "border_value": border_value, "origin": origin, "brute_force": bool(brute_force)}
    if iterations >= 1:
        out = _iterate(function, x, kwargs, iterations, reach_, m, fuse, budget)
    else:
        out = _until_stable(partial(_iterate, function, kwargs=kwargs, steps=ROUND_ITERATIONS, reach_=reach_, mask=m,
                                    fuse=False, budget=budget), x)
    return deliver(out, target)


def binary_erosion(image, structure=None, iterations=1, mask=None, output=None, border_value=0, origin=0,
                   brute_force=False, *, axes=None, fuse=True, budget=None):
    """``scipy.ndimage.binary_erosion`` tile by tile (halo: ``iterations`` times the structure's reach;
    ``iterations`` < 1 repeats until nothing changes, exactly, in tiled rounds)."""
    return _binary("binary_erosion", image, structure, iterations, mask, output, border_value, origin, brute_force,
                   axes, fuse, budget)


def binary_dilation(image, structure=None, iterations=1, mask=None, output=None, border_value=0, origin=0,
                    brute_force=False, *, axes=None, fuse=True, budget=None):
    """``scipy.ndimage.binary_dilation`` tile by tile (halo: ``iterations`` times the structure's reach;
    ``iterations`` < 1 repeats until nothing changes, exactly, in tiled rounds)."""
    return _binary("binary_dilation", image, structure, iterations, mask, output, border_value, origin, brute_force,
                   axes, fuse, budget)


def _composed(first, second, image, structure, iterations, output, origin, mask, border_value, brute_force, axes, fuse,
              budget):
    """``second(first(image))`` with the same parameters, ``output`` on the second, as SciPy composes them."""
    inner = first(image, structure, iterations, mask, None, border_value, origin, brute_force, axes=axes, fuse=fuse,
                  budget=budget)
    return second(inner, structure, iterations, mask, output, border_value, origin, brute_force, axes=axes, fuse=fuse,
                  budget=budget)


def binary_opening(image, structure=None, iterations=1, output=None, origin=0, mask=None, border_value=0,
                   brute_force=False, *, axes=None, fuse=True, budget=None):
    """``scipy.ndimage.binary_opening``: erosion then dilation, fused into one tiled pass when local."""
    return _composed(binary_erosion, binary_dilation, image, structure, iterations, output, origin, mask, border_value,
                     brute_force, axes, fuse, budget)


def binary_closing(image, structure=None, iterations=1, output=None, origin=0, mask=None, border_value=0,
                   brute_force=False, *, axes=None, fuse=True, budget=None):
    """``scipy.ndimage.binary_closing``: dilation then erosion, fused into one tiled pass when local."""
    return _composed(binary_dilation, binary_erosion, image, structure, iterations, output, origin, mask, border_value,
                     brute_force, axes, fuse, budget)


def _as_label_structure(st, origin):
    """The structure as gt.label takes it (``(3,) * ndim``, symmetric), or None when it cannot be one."""
    if any(origin) or any(n not in (1, 3) for n in st.shape):
        return None
    padded = np.zeros((3,) * st.ndim, dtype=bool)
    padded[tuple(slice(1 - n // 2, 2 + n // 2) for n in st.shape)] = st != 0
    if not np.array_equal(padded, padded[(slice(None, None, -1),) * st.ndim]):
        return None
    padded[(1,) * st.ndim] = True  # the centre decides nothing about connection
    return padded


def _not_in(block, ids):
    backend = chunk_backend(block)
    return ~backend.xp.isin(block, backend.xp.asarray(ids) if backend.is_device else ids)


def _fill_by_labels(x, st3, budget):
    labels, _ = label(x == 0, structure=st3, budget=budget)
    faces = []
    for axis in range(x.ndim):
        if st3.take([0, 2], axis=axis).any():  # the structure reaches out through this axis' faces
            for index in (0, -1):
                face = labels[tuple(index if a == axis else slice(None) for a in range(x.ndim))]
                faces.append(np.unique(to_numpy(face.compute())))
    ids = np.unique(np.concatenate(faces)) if faces else np.zeros(0, labels.dtype)
    ids = ids[ids != 0]
    return labels.map_blocks(_not_in, ids, dtype=bool, meta=labels._meta.astype(bool))


def binary_fill_holes(image, structure=None, output=None, origin=0, *, axes=None, budget=None):
    """``scipy.ndimage.binary_fill_holes``: the background not connected to the image border (under
    ``structure``) becomes foreground. Not local: the background is labelled across tiles by
    :func:`gpu_tiler.label` and components met on the border are kept as background (structures
    other than a symmetric 3-wide one at origin 0 run SciPy's dilation until stable, in tiled rounds)."""
    x = check_image(as_dask(image))
    st, origin, _ = _structure(x, structure, origin, axes)
    _, target = output_target(output, bool)
    st3 = _as_label_structure(st, origin)
    if st3 is not None:
        filled = _fill_by_labels(x, st3, budget)
    else:
        outside = binary_dilation(x.map_blocks(_zeros_like_bool, dtype=bool, meta=x._meta.astype(bool)), st, -1,
                                  x == 0, None, 1, origin, budget=budget)
        filled = ~outside
    return deliver(filled, target)


def _zeros_like_bool(block):
    return chunk_backend(block).xp.zeros(block.shape, dtype=bool)
