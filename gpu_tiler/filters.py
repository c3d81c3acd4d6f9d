"""Filters that equal scipy.ndimage / scikit-image on the whole image, computed tile by tile.

Every function takes scipy.ndimage's parameters with its defaults and output dtypes (``output=``: a
dtype, or an array or zarr array the result is written into; ``origin=`` and ``axes=`` where SciPy
has them), declares the halo it needs from them (footprint or structure extent, origin shift,
iterations, derivative order, truncate/radius; the user never passes an overlap), and returns a
lazy dask array. The NumPy backend calls SciPy / scikit-image on each tile, the CuPy backend
cupyx.scipy.ndimage / cuCIM: the same call through the backend's ``ndimage``. A filter applied to
the result of another runs in the same tiled pass (one read, one write per tile) whenever that is
exactly equal to running them one after another; pass ``fuse=False`` to keep passes apart.
Results equal SciPy's bit for bit for finite data (rank filters on NaN differ where SciPy's own NaN
result depends on data outside the footprint). Morphology that is not local (``iterations`` < 1,
``binary_fill_holes``) lives in :mod:`gpu_tiler._morphology` and is exact too.
"""
from __future__ import annotations

import math
import numbers
from functools import partial

import numpy as np

from gpu_tiler._backends import chunk_backend, resolve_backend, to_numpy
from gpu_tiler._engine.chain import (
    Operation,
    Step,
    apply_operation,
    deliver,
    ndimage_step,
    output_target,
    run_on_window,
)
from gpu_tiler._engine.materialise import Reduction, materialise
from gpu_tiler._engine.tiles import map_tiles
from gpu_tiler._errors import ParameterRuntimeError, ParameterTypeError
from gpu_tiler._io.ome import physical_to_pixels
from gpu_tiler._io.sources import as_dask
from gpu_tiler._morphology import (
    binary_closing,
    binary_dilation,
    binary_erosion,
    binary_fill_holes,
    binary_opening,
)
from gpu_tiler._planning.checks import (
    _per_axis,
    check_footprint,
    check_image,
    check_not_negative,
    check_positive,
    check_structure,
    expand_array,
    normalize_axes,
    normalize_modes,
    normalize_order,
    normalize_origin,
    normalize_sigma,
    normalize_size,
    on_axes,
    reach,
    reach_1d,
)
from gpu_tiler._registry import metadata_of

__all__ = [
    "binary_closing", "binary_dilation", "binary_erosion", "binary_fill_holes", "binary_opening", "black_tophat", "convolve", "convolve1d", "correlate", "correlate1d", "difference_of_gaussians", "gaussian",
    "gaussian_filter1d", "gaussian_gradient_magnitude", "gaussian_laplace", "generic_filter", "generic_filter1d",
    "grey_closing", "grey_dilation", "grey_erosion", "grey_opening", "laplace", "maximum", "maximum_filter1d",
    "median", "minimum", "minimum_filter1d", "percentile_filter", "prewitt", "rank_filter", "sobel",
    "subtract_background", "threshold", "threshold_local", "threshold_otsu", "uniform", "uniform_filter1d",
    "white_tophat",
]


def _prepare(image, mode):
    x = check_image(as_dask(image))
    return x, normalize_modes(mode, x.ndim)


def _spatial(x, value, fill, *, name, units=None):
    """Per-axis values for an image that knows its axes: a single value applies to the space axes
    only (``fill`` on time and channel axes); with ``units`` physical lengths become pixels."""
    meta = metadata_of(x)
    if meta is not None and np.ndim(value) == 0 and len(meta.spatial) < x.ndim:
        value = tuple(value if a in meta.spatial else fill for a in range(x.ndim))
    if units is None:
        return value
    return physical_to_pixels(_per_axis(name, value, x.ndim), meta, units, name)


def _single_mode(name, modes):
    if len(set(modes)) > 1:
        raise ParameterRuntimeError(
            f"{name} takes one boundary mode for all axes (as scipy.ndimage does), not {modes!r}")
    return modes


def _axis(axis, ndim) -> int:
    """One axis (negative counts from the end), refused as NumPy refuses it (AxisError)."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ParameterTypeError(f"axis={axis!r}: give a whole number")
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(f"axis={axis!r} is out of range for an image with {ndim} axes")
    return int(axis) % ndim


def _only_on(axis, value, ndim, fill=0):
    return tuple(value if a == axis else fill for a in range(ndim))


def _result(x, name, steps, dtype, target, *, fuse, budget, whole_axes=(), combine=None):
    """Run ``steps`` as one operation (fused onto ``x``'s chain when exact) and deliver it to ``output``."""
    op = Operation(name, tuple(steps), dtype, combine=combine, whole_axes=whole_axes)
    return deliver(apply_operation(x, op, fuse=fuse, budget=budget), target)


def _with_output(kwargs, output, dtype):
    """The backend call's keyword arguments, with ``output=dtype`` when the caller gave ``output``."""
    return dict(kwargs, output=dtype) if output is not None else dict(kwargs)


# ---- Gaussians ----------------------------------------------------------------------------------


def gaussian_radius(sigma, truncate=4.0, radius=None) -> tuple[int, ...]:
    """scipy.ndimage.gaussian_filter's reach per axis: ``radius``, else ``int(truncate * sigma + 0.5)``."""
    if radius is not None:
        return tuple(radius)
    return tuple(int(truncate * s + 0.5) if s > 1e-15 else 0 for s in sigma)


def _check_radius(radius, n):
    """SciPy's ``radius=``: whole numbers >= 0 (``1.1`` is refused, as SciPy refuses it)."""
    if radius is None:
        return None
    values = _per_axis("radius", radius, n)
    for r in values:
        if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 0:
            raise ValueError(f"radius={radius!r}: each value must be a whole number >= 0 (as SciPy requires)")
    return tuple(int(r) for r in values)


def gaussian_steps(sigma, order, modes, cval, truncate, radius=None, *, axes=None, ndim=None,
                   output=None) -> tuple[Step, ...]:
    """gaussian_filter as SciPy runs it: one gaussian_filter1d per axis with sigma > 0, in the order of
    ``axes`` (``sigma``, ``order``, ``modes``, ``radius``: one per axis of ``axes``; default: all).

    Separate steps let each axis' pass meet the image border as SciPy's does; with mode="constant"
    that is what makes tiles exact (SciPy pads each pass with cval, not with the previous pass's
    smoothing of the padding). ``output``: the first pass writes this dtype, as SciPy's does."""
    axes = tuple(range(len(sigma))) if axes is None else tuple(axes)
    ndim = len(sigma) if ndim is None else ndim
    reach_ = gaussian_radius(sigma, truncate, radius)
    steps = []
    for i, axis in enumerate(axes):
        if sigma[i] <= 1e-15:
            continue
        kwargs = {"sigma": sigma[i], "axis": axis, "order": order[i], "truncate": truncate}
        if radius is not None:
            kwargs["radius"] = radius[i]
        if output is not None and not steps:
            kwargs["output"] = output
        steps.append(ndimage_step(f"gaussian_filter1d[{axis}]", "gaussian_filter1d", _only_on(axis, reach_[i], ndim),
                                  (modes[i],) * ndim, cval, **kwargs))
    return tuple(steps)


def _copy_step(ndim, modes, cval, dtype=None):
    return Step("copy", (0,) * ndim, tuple(modes), float(cval), partial(_copy, dtype))


def _copy(dtype, backend, tile, border):
    return tile.copy() if dtype is None else tile.astype(dtype, copy=True)


def gaussian(image, sigma, order=0, output=None, mode="reflect", cval=0.0, truncate=4.0, *, radius=None, axes=None,
             units=None, fuse=True, budget=None):
    """``scipy.ndimage.gaussian_filter`` tile by tile (halo: ``int(truncate * sigma + 0.5)`` per axis, or
    ``radius``). ``truncate=0`` is radius 0 (order 0: the image itself), as in SciPy.

    On an image that knows its axes (OME-Zarr), a single ``sigma`` smooths the space axes only; with
    ``units`` (e.g. ``"um"``) ``sigma`` is a physical length, converted per axis with the pixel sizes.
    """
    x = check_image(as_dask(image))
    on = normalize_axes(axes, x.ndim)
    if axes is None:
        sigma = _spatial(x, sigma, 0.0, name="sigma", units=units)
    elif units is not None:
        raise ValueError("units= converts sigma for all axes; give sigma in pixels with axes=")
    n = len(on)
    modes = normalize_modes(mode, n)
    sigma = normalize_sigma(sigma, n)
    order = normalize_order(order, n)
    truncate = check_not_negative("truncate", truncate)
    radius = _check_radius(radius, n)
    dtype, target = output_target(output, x.dtype)
    steps = gaussian_steps(sigma, order, modes, cval, truncate, radius, axes=on, ndim=x.ndim,
                           output=dtype if output is not None else None)
    if not steps:  # SciPy copies the input (into the output's dtype)
        steps = (_copy_step(x.ndim, ("reflect",) * x.ndim, cval, dtype),)
    return _result(x, "gaussian", steps, dtype, target, fuse=fuse, budget=budget)


def gaussian_filter1d(image, sigma, axis=-1, order=0, output=None, mode="reflect", cval=0.0, truncate=4.0, *,
                      radius=None, fuse=True, budget=None):
    """``scipy.ndimage.gaussian_filter1d`` tile by tile (halo along ``axis``: ``int(truncate * sigma + 0.5)``
    or ``radius``)."""
    x = check_image(as_dask(image))
    axis = _axis(axis, x.ndim)
    (m,) = normalize_modes(mode, 1)
    (s,) = normalize_sigma(sigma, 1)
    (o,) = normalize_order(order, 1)
    truncate = check_not_negative("truncate", truncate)
    r = _check_radius(radius, 1)
    dtype, target = output_target(output, x.dtype)
    kwargs = _with_output({"sigma": s, "axis": axis, "order": o, "truncate": truncate}, output, dtype)
    if r is not None:
        kwargs["radius"] = r[0]
    halo = _only_on(axis, r[0] if r is not None else int(truncate * s + 0.5), x.ndim)
    step = ndimage_step("gaussian_filter1d", "gaussian_filter1d", halo, (m,) * x.ndim, cval, **kwargs)
    return _result(x, "gaussian_filter1d", (step,), dtype, target, fuse=fuse, budget=budget)


def _derivative_modes(name, mode, n):
    """gaussian_laplace / gaussian_gradient_magnitude run a whole gaussian_filter per axis with that
    axis' mode on every axis: per-axis modes are exact tiled unless they mix wrap with other modes."""
    modes = normalize_modes(mode, n)
    wrapping = {m in ("wrap", "grid-wrap") for m in modes}
    if len(wrapping) > 1:
        raise ValueError(f"{name} with mode={mode!r}: per-axis modes that mix wrap with other modes are not "
                         f"supported tiled (SciPy applies each axis' mode to every axis); give one mode")
    return modes


def _gaussian_derivatives(name, image, sigma, output, mode, cval, axes, truncate, radius, fuse, budget):
    x = check_image(as_dask(image))
    on = normalize_axes(axes, x.ndim)
    modes = _derivative_modes(name, mode, len(on))
    sig = normalize_sigma(sigma, len(on))
    truncate = check_not_negative("truncate", truncate)
    r = _check_radius(radius, len(on))
    dtype, target = output_target(output, x.dtype)
    halo = on_axes(gaussian_radius(sig, truncate, r), on, x.ndim, 0)
    kwargs = _with_output({"sigma": sigma, "truncate": truncate}, output, dtype)
    if radius is not None:
        kwargs["radius"] = radius
    if axes is not None:
        kwargs["axes"] = on
    step = ndimage_step(name, name, halo, on_axes(modes, on, x.ndim, modes[0]), cval, mode_arg=_mode_arg(modes),
                        **kwargs)
    return _result(x, name, (step,), dtype, target, fuse=fuse, budget=budget)


def gaussian_laplace(image, sigma, output=None, mode="reflect", cval=0.0, *, axes=None, truncate=4.0, radius=None,
                     fuse=True, budget=None):
    """``scipy.ndimage.gaussian_laplace``: the sum over axes of second Gaussian derivatives (halo: the
    Gaussian's radius per axis; ``truncate``/``radius`` go to each gaussian_filter, as SciPy's kwargs)."""
    return _gaussian_derivatives("gaussian_laplace", image, sigma, output, mode, cval, axes, truncate, radius, fuse,
                                 budget)


def gaussian_gradient_magnitude(image, sigma, output=None, mode="reflect", cval=0.0, *, axes=None, truncate=4.0,
                                radius=None, fuse=True, budget=None):
    """``scipy.ndimage.gaussian_gradient_magnitude``: the gradient's length from first Gaussian
    derivatives (halo: the Gaussian's radius per axis)."""
    return _gaussian_derivatives("gaussian_gradient_magnitude", image, sigma, output, mode, cval, axes, truncate,
                                 radius, fuse, budget)


# ---- uniform (running sums: whole lines) -------------------------------------------------------


def _uniform_pass(axis, size, mode, cval, origin, ndim, kwargs):
    step = ndimage_step(f"uniform_filter1d[{axis}]", "uniform_filter1d", (0,) * ndim, (mode,) * ndim, cval,
                        size=size, axis=axis, origin=origin, **kwargs)
    return step


def uniform(image, size=3, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None, budget=None):
    """``scipy.ndimage.uniform_filter`` tile by tile (sizes 0 and 1 leave an axis as it is, as in SciPy).

    SciPy computes each line with a running sum from the line's start, so a value depends (in its
    last bits) on everything before it on the line. To equal it bit for bit, each axis is one pass
    whose tiles hold whole lines along that axis. Passes are chained lazily; for images far larger
    than memory, save between axes if a single pass's whole lines exceed the budget.
    """
    x = check_image(as_dask(image))
    on = normalize_axes(axes, x.ndim)
    modes = normalize_modes(mode, len(on))
    size = normalize_size(size if axes is not None else _spatial(x, size, 1, name="size"), len(on), minimum=0)
    origin = normalize_origin(origin, size)
    dtype, target = output_target(output, x.dtype)
    out = x
    for axis, n, m, o in zip(on, size, modes, origin):
        if n > 1:
            kwargs = _with_output({}, output, dtype) if out is x else {}
            step = _uniform_pass(axis, n, m, cval, o, x.ndim, kwargs)
            out = apply_operation(out, Operation(f"uniform{axis}", (step,), dtype, whole_axes=(axis,)), fuse=False,
                                  budget=budget)
    if out is x:  # scipy copies the input (into the output's dtype) when no axis has size > 1
        out = apply_operation(x, Operation("uniform", (_copy_step(x.ndim, ("reflect",) * x.ndim, cval, dtype),),
                                           dtype), fuse=False, budget=budget)
    return deliver(out, target)


def uniform_filter1d(image, size, axis=-1, output=None, mode="reflect", cval=0.0, origin=0, *, budget=None):
    """``scipy.ndimage.uniform_filter1d``: one pass whose tiles hold whole lines along ``axis`` (SciPy's
    running sum makes each value depend on the line before it, in its last bits)."""
    x = check_image(as_dask(image))
    axis = _axis(axis, x.ndim)
    (m,) = normalize_modes(mode, 1)
    (n,) = normalize_size(size, 1)
    (o,) = normalize_origin(origin, (n,))
    dtype, target = output_target(output, x.dtype)
    step = _uniform_pass(axis, n, m, cval, o, x.ndim, _with_output({}, output, dtype))
    out = apply_operation(x, Operation("uniform_filter1d", (step,), dtype, whole_axes=(axis,)), fuse=False,
                          budget=budget)
    return deliver(out, target)


# ---- neighbourhoods: rank filters, correlation, generic ------------------------------------------


def _neighbourhood(x, size, footprint, origin, axes, *, structure=None, size_minimum=1):
    """SciPy's size/footprint/structure rule over ``axes``: ``(kwargs, halo, separable)``.

    A footprint wins over a size; a structure without a footprint takes a footprint of its shape
    (the size is then ignored, as SciPy ignores it); a footprint of all ones is the size of its
    shape (SciPy's separable path, where per-axis modes are allowed). Arrays given for ``axes`` grow
    length-1 axes elsewhere as SciPy's do, and origins are spread over the axes in the order given."""
    ndim = x.ndim
    on = normalize_axes(axes, ndim)
    if structure is not None:
        structure = expand_array(check_structure(structure, len(on)), on, ndim, "structure")
    if footprint is not None:
        footprint = expand_array(check_footprint(footprint, len(on)), on, ndim)
        shape = footprint.shape
        if structure is not None and structure.shape != shape:
            raise ParameterRuntimeError(f"structure has shape {structure.shape}; the footprint has {shape}")
    elif structure is not None:
        shape = structure.shape
    elif size is not None:
        shape = on_axes(normalize_size(_spatial(x, size, 1, name="size") if axes is None else size, len(on),
                                       minimum=size_minimum), on, ndim, 1)
    else:
        raise ParameterRuntimeError(
            "give size= (an int or one per axis) or footprint= (a boolean array); neither was given")
    origin = normalize_origin(on_axes(_per_axis("origin", origin, len(on)), on, ndim, 0), shape)
    if footprint is not None:
        kwargs = {"footprint": footprint}
    elif structure is None:
        kwargs = {"size": shape}
    else:
        kwargs = {}
    if structure is not None:
        kwargs["structure"] = structure
    if any(origin):
        kwargs["origin"] = origin
    separable = structure is None and (footprint is None or bool(footprint.all()))
    return kwargs, reach(shape, origin=origin), separable


def _full_modes(name, mode, axes, ndim, separable):
    """Modes over all axes (SciPy's per-axis modes only where a filter is separable)."""
    on = normalize_axes(axes, ndim)
    modes = normalize_modes(mode, len(on))
    if not separable:
        _single_mode(name, modes)
        return (modes[0],) * ndim
    return on_axes(modes, on, ndim, "constant") if len(on) < ndim else modes


def _mode_arg(modes):
    return modes[0] if len(set(modes)) == 1 else list(modes)


def _neighbourhood_filter(name, function, image, size, footprint, output, mode, cval, origin, axes, fuse, budget,
                          /, *, structure=None, per_axis_modes=True, size_minimum=1, **extra):
    """One step calling ``backend.ndimage.<function>`` with a size/footprint neighbourhood."""
    x = check_image(as_dask(image))
    kwargs, halo, separable = _neighbourhood(x, size, footprint, origin, axes, structure=structure,
                                             size_minimum=size_minimum)
    modes = _full_modes(name, mode, axes, x.ndim, separable and per_axis_modes)
    dtype, target = output_target(output, x.dtype)
    step = ndimage_step(name, function, halo, modes, cval, **_with_output(dict(kwargs, **extra), output, dtype))
    return _result(x, name, (step,), dtype, target, fuse=fuse, budget=budget)


def median(image, size=None, footprint=None, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None, fuse=True,
           budget=None):
    """``scipy.ndimage.median_filter`` tile by tile (halo: half the size or footprint, plus the origin shift)."""
    return _neighbourhood_filter("median", "median_filter", image, size, footprint, output, mode, cval, origin, axes,
                                 fuse, budget, per_axis_modes=False)


def minimum(image, size=None, footprint=None, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None, fuse=True,
            budget=None):
    """``scipy.ndimage.minimum_filter`` tile by tile (halo: half the size or footprint, plus the origin shift)."""
    return _neighbourhood_filter("minimum", "minimum_filter", image, size, footprint, output, mode, cval, origin, axes,
                                 fuse, budget, size_minimum=0)


def maximum(image, size=None, footprint=None, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None, fuse=True,
            budget=None):
    """``scipy.ndimage.maximum_filter`` tile by tile (halo: half the size or footprint, plus the origin shift)."""
    return _neighbourhood_filter("maximum", "maximum_filter", image, size, footprint, output, mode, cval, origin, axes,
                                 fuse, budget, size_minimum=0)


def _filter_size(x, size, footprint, axes):
    """How many voxels a size/footprint neighbourhood holds (for rank and percentile checks)."""
    on = normalize_axes(axes, x.ndim)
    if footprint is not None:
        return int(np.count_nonzero(check_footprint(footprint, len(on))))
    if size is None:
        raise ParameterRuntimeError(
            "give size= (an int or one per axis) or footprint= (a boolean array); neither was given")
    return math.prod(normalize_size(size if axes is not None else _spatial(x, size, 1, name="size"), len(on)))


def rank_filter(image, rank, size=None, footprint=None, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None,
                fuse=True, budget=None):
    """``scipy.ndimage.rank_filter`` tile by tile: the ``rank``-th smallest value of each neighbourhood
    (negative ranks count from the largest)."""
    x = check_image(as_dask(image))
    n = _filter_size(x, size, footprint, axes)
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
        raise ParameterTypeError(f"rank={rank!r} must be a whole number")
    if not -n <= rank < n:
        raise ParameterRuntimeError(f"rank={rank!r} is not within the footprint's {n} voxels ({-n} to {n - 1})")
    return _neighbourhood_filter("rank_filter", "rank_filter", x, size, footprint, output, mode, cval, origin, axes,
                                 fuse, budget, per_axis_modes=False, rank=int(rank))


def percentile_filter(image, percentile, size=None, footprint=None, output=None, mode="reflect", cval=0.0, origin=0, *,
                      axes=None, fuse=True, budget=None):
    """``scipy.ndimage.percentile_filter`` tile by tile (negative percentiles count from 100)."""
    x = check_image(as_dask(image))
    _filter_size(x, size, footprint, axes)
    if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real) or not -100 <= percentile <= 100:
        raise ParameterRuntimeError(f"percentile={percentile!r} must be a number from -100 to 100")
    return _neighbourhood_filter("percentile_filter", "percentile_filter", x, size, footprint, output, mode, cval,
                                 origin, axes, fuse, budget, per_axis_modes=False, percentile=percentile)


def _weights(weights, n, name="weights"):
    w = np.asarray(weights)
    if np.issubdtype(w.dtype, np.complexfloating):
        raise ValueError(f"{name} are complex; give real weights (complex images are not supported)")
    if w.ndim != n:
        raise ParameterRuntimeError(f"{name} has {w.ndim} axes; {n} are needed (one per filtered axis)")
    if w.size == 0:
        raise ParameterRuntimeError(f"{name} is empty; give at least one weight per axis")
    return w


def _correlation(name, image, weights, output, mode, cval, origin, axes, fuse, budget):
    x = check_image(as_dask(image))
    on = normalize_axes(axes, x.ndim)
    w = expand_array(_weights(weights, len(on)), on, x.ndim, "weights")
    origins = normalize_origin(on_axes(_per_axis("origin", origin, len(on)), on, x.ndim, 0), w.shape)
    modes = (_single_mode(name, normalize_modes(mode, len(on)))[0],) * x.ndim
    dtype, target = output_target(output, x.dtype)
    kwargs = _with_output({"weights": w, "origin": origins}, output, dtype)
    step = ndimage_step(name, name, reach(w.shape, origin=origins), modes, cval, **kwargs)
    return _result(x, name, (step,), dtype, target, fuse=fuse, budget=budget)


def correlate(image, weights, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None, fuse=True, budget=None):
    """``scipy.ndimage.correlate`` tile by tile (halo: the weights' extent on each side, origin included)."""
    return _correlation("correlate", image, weights, output, mode, cval, origin, axes, fuse, budget)


def convolve(image, weights, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None, fuse=True, budget=None):
    """``scipy.ndimage.convolve`` tile by tile (halo: the mirrored weights' extent, origin included)."""
    return _correlation("convolve", image, weights, output, mode, cval, origin, axes, fuse, budget)


def _filter1d(name, image, axis, n, output, mode, cval, origin, fuse, budget, **kwargs):
    """One step of a 1-D filter of ``n`` taps along ``axis`` (halo: its reach there)."""
    x = check_image(as_dask(image))
    axis = _axis(axis, x.ndim)
    (m,) = normalize_modes(mode, 1)
    (o,) = normalize_origin(origin, (n,))
    dtype, target = output_target(output, x.dtype)
    step = ndimage_step(name, name, _only_on(axis, reach_1d(n, o), x.ndim), (m,) * x.ndim, cval,
                        **_with_output(dict(kwargs, axis=axis, origin=o), output, dtype))
    return _result(x, name, (step,), dtype, target, fuse=fuse, budget=budget)


def correlate1d(image, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0, *, fuse=True, budget=None):
    """``scipy.ndimage.correlate1d`` tile by tile (halo along ``axis``: the weights' reach, origin included)."""
    w = _weights(weights, 1)
    return _filter1d("correlate1d", image, axis, len(w), output, mode, cval, origin, fuse, budget, weights=w)


def convolve1d(image, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0, *, fuse=True, budget=None):
    """``scipy.ndimage.convolve1d`` tile by tile (halo along ``axis``: the weights' reach, origin included)."""
    w = _weights(weights, 1)
    return _filter1d("convolve1d", image, axis, len(w), output, mode, cval, origin, fuse, budget, weights=w)


def minimum_filter1d(image, size, axis=-1, output=None, mode="reflect", cval=0.0, origin=0, *, fuse=True,
                     budget=None):
    """``scipy.ndimage.minimum_filter1d`` tile by tile (halo along ``axis``: half the size, plus the origin)."""
    (n,) = normalize_size(size, 1)
    return _filter1d("minimum_filter1d", image, axis, n, output, mode, cval, origin, fuse, budget, size=n)


def maximum_filter1d(image, size, axis=-1, output=None, mode="reflect", cval=0.0, origin=0, *, fuse=True,
                     budget=None):
    """``scipy.ndimage.maximum_filter1d`` tile by tile (halo along ``axis``: half the size, plus the origin)."""
    (n,) = normalize_size(size, 1)
    return _filter1d("maximum_filter1d", image, axis, n, output, mode, cval, origin, fuse, budget, size=n)


def _check_function(function):
    if not callable(function):
        raise ParameterTypeError(f"function={function!r} is not callable; give a Python function "
                                 f"(on CuPy: a cupy.ReductionKernel or RawKernel, as cupyx requires)")
    return function


def generic_filter(image, function, size=None, footprint=None, output=None, mode="reflect", cval=0.0, origin=0,
                   extra_arguments=(), extra_keywords=None, *, axes=None, fuse=True, budget=None):
    """``scipy.ndimage.generic_filter`` tile by tile: ``function`` gets each neighbourhood's values
    (halo: half the size or footprint, plus the origin shift)."""
    return _neighbourhood_filter("generic_filter", "generic_filter", image, size, footprint, output, mode, cval, origin,
                                 axes, fuse, budget, per_axis_modes=False, function=_check_function(function),
                                 extra_arguments=tuple(extra_arguments), extra_keywords=dict(extra_keywords or {}))


def generic_filter1d(image, function, filter_size, axis=-1, output=None, mode="reflect", cval=0.0, origin=0,
                     extra_arguments=(), extra_keywords=None, *, budget=None):
    """``scipy.ndimage.generic_filter1d``: ``function(input_line, output_line)`` on every line along
    ``axis``. Tiles hold whole lines along ``axis`` (the function sees the line as SciPy gives it,
    whatever it computes from it), so the result is SciPy's for any function."""
    x = check_image(as_dask(image))
    axis = _axis(axis, x.ndim)
    (m,) = normalize_modes(mode, 1)
    (n,) = normalize_size(filter_size, 1, name="filter_size")
    (o,) = normalize_origin(origin, (n,))
    dtype, target = output_target(output, x.dtype)
    kwargs = _with_output({"function": _check_function(function), "filter_size": n, "axis": axis, "origin": o,
                           "extra_arguments": tuple(extra_arguments), "extra_keywords": dict(extra_keywords or {})},
                          output, dtype)
    step = ndimage_step("generic_filter1d", "generic_filter1d", (0,) * x.ndim, (m,) * x.ndim, cval, **kwargs)
    out = apply_operation(x, Operation("generic_filter1d", (step,), dtype, whole_axes=(axis,)), fuse=False,
                          budget=budget)
    return deliver(out, target)


# ---- derivatives -----------------------------------------------------------------------------


def _edge(name, image, axis, output, mode, cval, fuse, budget):
    x = check_image(as_dask(image))
    axis = _axis(axis, x.ndim)
    modes = normalize_modes(mode, x.ndim)
    dtype, target = output_target(output, x.dtype)
    step = ndimage_step(name, name, (1,) * x.ndim, modes, cval, **_with_output({"axis": axis}, output, dtype))
    return _result(x, name, (step,), dtype, target, fuse=fuse, budget=budget)


def sobel(image, axis=-1, output=None, mode="reflect", cval=0.0, *, fuse=True, budget=None):
    """``scipy.ndimage.sobel``: the derivative along ``axis`` smoothed along the others (halo 1)."""
    return _edge("sobel", image, axis, output, mode, cval, fuse, budget)


def prewitt(image, axis=-1, output=None, mode="reflect", cval=0.0, *, fuse=True, budget=None):
    """``scipy.ndimage.prewitt``: the derivative along ``axis`` averaged along the others (halo 1)."""
    return _edge("prewitt", image, axis, output, mode, cval, fuse, budget)


def laplace(image, output=None, mode="reflect", cval=0.0, *, axes=None, fuse=True, budget=None):
    """``scipy.ndimage.laplace``: the sum of second differences along ``axes`` (halo 1 on them)."""
    x = check_image(as_dask(image))
    on = normalize_axes(axes, x.ndim)
    modes = normalize_modes(mode, len(on))
    dtype, target = output_target(output, x.dtype)
    kwargs = _with_output({"axes": on} if axes is not None else {}, output, dtype)
    step = ndimage_step("laplace", "laplace", on_axes((1,) * len(on), on, x.ndim, 0),
                        on_axes(modes, on, x.ndim, "constant"), cval, mode_arg=_mode_arg(modes), **kwargs)
    return _result(x, "laplace", (step,), dtype, target, fuse=fuse, budget=budget)


# ---- grey morphology --------------------------------------------------------------------------


def _grey_steps(x, names, size, footprint, structure, output, mode, cval, origin, axes):
    """Steps calling ``backend.ndimage.<name>`` one after another on the same neighbourhood; the last
    writes ``output``'s dtype, as SciPy's opening/closing/top-hats do."""
    if size is None and footprint is None and structure is None:
        raise ParameterRuntimeError("give size=, footprint= or structure=; none was given")
    kwargs, halo, separable = _neighbourhood(x, size, footprint, origin, axes, structure=structure, size_minimum=0)
    modes = _full_modes(names[-1], mode, axes, x.ndim, separable)
    dtype, target = output_target(output, x.dtype)
    steps = []
    for k, name in enumerate(names):
        call = _with_output(kwargs, output, dtype) if k == len(names) - 1 else kwargs
        steps.append(ndimage_step(name, name, halo, modes, cval, **call))
    return tuple(steps), dtype, target


def _grey(name, names, image, size, footprint, structure, output, mode, cval, origin, axes, fuse, budget,
          combine=None):
    x = check_image(as_dask(image))
    steps, dtype, target = _grey_steps(x, names, size, footprint, structure, output, mode, cval, origin, axes)
    return _result(x, name, steps, dtype, target, fuse=fuse, budget=budget, combine=combine)


def grey_erosion(image, size=None, footprint=None, structure=None, output=None, mode="reflect", cval=0.0, origin=0, *,
                 axes=None, fuse=True, budget=None):
    """``scipy.ndimage.grey_erosion`` tile by tile (halo: the neighbourhood's reach, origin included)."""
    return _grey("grey_erosion", ("grey_erosion",), image, size, footprint, structure, output, mode, cval, origin,
                 axes, fuse, budget)


def grey_dilation(image, size=None, footprint=None, structure=None, output=None, mode="reflect", cval=0.0, origin=0, *,
                  axes=None, fuse=True, budget=None):
    """``scipy.ndimage.grey_dilation`` tile by tile (halo: the mirrored neighbourhood's reach)."""
    return _grey("grey_dilation", ("grey_dilation",), image, size, footprint, structure, output, mode, cval, origin,
                 axes, fuse, budget)


_OPENING, _CLOSING = ("grey_erosion", "grey_dilation"), ("grey_dilation", "grey_erosion")


def grey_opening(image, size=None, footprint=None, structure=None, output=None, mode="reflect", cval=0.0, origin=0, *,
                 axes=None, fuse=True, budget=None):
    """``scipy.ndimage.grey_opening``: erosion then dilation in one tiled pass (halo: twice the reach)."""
    return _grey("grey_opening", _OPENING, image, size, footprint, structure, output, mode, cval, origin, axes, fuse,
                 budget)


def grey_closing(image, size=None, footprint=None, structure=None, output=None, mode="reflect", cval=0.0, origin=0, *,
                 axes=None, fuse=True, budget=None):
    """``scipy.ndimage.grey_closing``: dilation then erosion in one tiled pass (halo: twice the reach)."""
    return _grey("grey_closing", _CLOSING, image, size, footprint, structure, output, mode, cval, origin, axes, fuse,
                 budget)


def _subtract(first, backend, op_input, result):
    """Top-hat combine as SciPy's: ``input - opening`` (white) or ``closing - input`` (black), written
    into the opening/closing (so in ``output``'s dtype, with NumPy's casting rules)."""
    a, b = (op_input, result) if first == "input" else (result, op_input)
    if op_input.dtype == np.bool_ and result.dtype == np.bool_:
        return backend.xp.bitwise_xor(a, b, out=result)
    return backend.xp.subtract(a, b, out=result)


def white_tophat(image, size=None, footprint=None, structure=None, output=None, mode="reflect", cval=0.0, origin=0, *,
                 axes=None, fuse=True, budget=None):
    """``scipy.ndimage.white_tophat``: the image minus its grey opening (halo: twice the reach)."""
    return _grey("white_tophat", _OPENING, image, size, footprint, structure, output, mode, cval, origin, axes, fuse,
                 budget, combine=partial(_subtract, "input"))


def black_tophat(image, size=None, footprint=None, structure=None, output=None, mode="reflect", cval=0.0, origin=0, *,
                 axes=None, fuse=True, budget=None):
    """``scipy.ndimage.black_tophat``: the grey closing minus the image (halo: twice the reach)."""
    return _grey("black_tophat", _CLOSING, image, size, footprint, structure, output, mode, cval, origin, axes, fuse,
                 budget, combine=partial(_subtract, "result"))


def ball_footprint(radius: int, ndim: int) -> np.ndarray:
    """A flat disk (2-D), ball (3-D) or n-ball footprint, as skimage.morphology.disk/ball draw them."""
    if ndim == 2:
        from skimage.morphology import disk

        return disk(radius).astype(bool)
    if ndim == 3:
        from skimage.morphology import ball

        return ball(radius).astype(bool)
    grid = np.indices((2 * radius + 1,) * ndim) - radius
    return (grid**2).sum(axis=0) <= radius**2


def subtract_background(image, radius, mode="reflect", cval=0.0, *, fuse=True, budget=None):
    """Remove a smooth background: the white top-hat with a flat disk (2-D) or ball (3-D) of ``radius``.

    Equals ``skimage.morphology.white_tophat(image, disk(radius))`` (``ball`` in 3-D): everything
    narrower than the disk is kept, the slowly varying background under it is subtracted.
    """
    x = check_image(as_dask(image))
    if isinstance(radius, bool) or not float(radius).is_integer() or radius < 1:
        raise ValueError(f"radius={radius!r} must be a whole number >= 1 (voxels)")
    meta = metadata_of(x)
    space = meta.spatial if meta is not None else tuple(range(x.ndim))
    ball = ball_footprint(int(radius), len(space))
    footprint = ball.reshape(tuple(ball.shape[space.index(a)] if a in space else 1 for a in range(x.ndim)))
    return white_tophat(x, footprint=footprint, mode=mode, cval=cval, fuse=fuse, budget=budget)


def _float_dtype(dtype):
    """scikit-image's float type for a dtype: float16/float32 -> float32, float64 -> float64, else float64."""
    dtype = np.dtype(dtype)
    if dtype in (np.float16, np.float32):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _difference_of_gaussians(low_steps, high_steps, backend, tile, border):
    """skimage's difference_of_gaussians: to float as skimage does, smooth twice, subtract."""
    image = backend.skimage.util.img_as_float(tile)
    smoothed = []
    for steps in (low_steps, high_steps):
        op = Operation("gaussian", steps, image.dtype)
        smoothed.append(run_on_window(image, border, (op,), backend))
    return smoothed[0] - smoothed[1]


def difference_of_gaussians(image, sigma_low, sigma_high=None, mode="nearest", cval=0.0, truncate=4.0, *,
                            units=None, fuse=True, budget=None):
    """``skimage.filters.difference_of_gaussians``: a band-pass, the image smoothed by ``sigma_low`` minus
    the image smoothed by ``sigma_high`` (default ``1.6 * sigma_low``), in scikit-image's float type."""
    x, modes = _prepare(image, mode)
    _single_mode("difference_of_gaussians", modes)
    resolve_backend(x).skimage  # noqa: B018 - scikit-image's float conversion on the device needs cuCIM: say so now
    low = normalize_sigma(_spatial(x, sigma_low, 0.0, name="sigma_low", units=units), x.ndim, "sigma_low")
    high = tuple(1.6 * s for s in low) if sigma_high is None else normalize_sigma(
        _spatial(x, sigma_high, 0.0, name="sigma_high", units=units), x.ndim, "sigma_high")
    if any(h < lo for h, lo in zip(high, low)):
        raise ValueError(f"sigma_high={sigma_high!r} must be >= sigma_low={sigma_low!r} on every axis")
    truncate = check_positive("truncate", truncate)
    halo = tuple(max(a, b) for a, b in zip(gaussian_radius(low, truncate), gaussian_radius(high, truncate)))
    order = (0,) * x.ndim
    step = Step("difference_of_gaussians", halo, modes, float(cval), partial(
        _difference_of_gaussians, gaussian_steps(low, order, modes, cval, truncate),
        gaussian_steps(high, order, modes, cval, truncate)))
    op = Operation("difference_of_gaussians", (step,), _float_dtype(x.dtype))
    return apply_operation(x, op, fuse=fuse, budget=budget)


# ---- thresholds ---------------------------------------------------------------------------------


def _histogram_block(block, low, high, nbins, integer):
    xp = chunk_backend(block).xp
    if integer:
        counts = xp.bincount((block.astype(np.int64) - int(low)).ravel(), minlength=int(high) - int(low) + 1)
    else:
        counts, _ = xp.histogram(block, bins=nbins, range=(low, high))
    return to_numpy(counts.astype(np.int64)).reshape((1,) * block.ndim + (-1,))


#: values counted per bincount call (its intp copy: 2 MiB)
_COUNT_SLAB = 1 << 18


def _tile_counts(lowest, size, block):
    """One tile's count of every value of a small integer type (value - ``lowest`` indexes the counts)."""
    xp = chunk_backend(block).xp
    flat, counts = block.ravel(), xp.zeros(size, dtype=np.int64)
    for start in range(0, flat.size, _COUNT_SLAB):  # slabs: NumPy's bincount converts small types 3x slower
        values = flat[start : start + _COUNT_SLAB].astype(np.intp)  # itself; a slab's copy stays in cache
        if lowest:
            values -= lowest
        counts += xp.bincount(values, minlength=size)
    return counts


def _tile_min(block):
    return block.min().reshape(1)


def _tile_max(block):
    return block.max().reshape(1)


def threshold_otsu(image, nbins=256):
    """Otsu's threshold over the whole image, equal to ``skimage.filters.threshold_otsu`` on it.

    scikit-image's histogram: one bin per value for integer images, ``nbins`` bins between the minimum
    and the maximum otherwise; Otsu's criterion runs on the summed histogram. A lazy ``image`` (a
    filter's result) is computed once and kept for the operations after this one (in memory when it
    fits the budget, else where the cost model of ``gpu_tiler._engine.materialise`` says), and its
    reductions are computed from each tile in the pass that makes the tile: for 8- and 16-bit images the
    count of every value (so the threshold costs no pass of its own), else the minimum and maximum, then
    one histogram pass over the kept copy (the bins depend on both)."""
    from skimage.filters import threshold_otsu as otsu_from_histogram

    x = check_image(as_dask(image))
    if isinstance(nbins, bool) or not isinstance(nbins, (int, np.integer)) or nbins < 1:
        raise ValueError(f"nbins={nbins!r} must be a whole number >= 1")
    if x.size == 0:
        raise ValueError("threshold_otsu needs a non-empty image")
    if np.issubdtype(x.dtype, np.integer) and x.dtype.itemsize <= 2:
        lowest, size = int(np.iinfo(x.dtype).min), 2 ** (8 * x.dtype.itemsize)
        counting = Reduction(partial(_tile_counts, lowest, size), size, np.int64)
        x, (counts,) = materialise(x, [counting], passes=1)
        present = np.flatnonzero(counts)
        low, high = int(present[0]) + lowest, int(present[-1]) + lowest
        if low == high:  # scikit-image returns the single value
            return x.dtype.type(low)
        return otsu_from_histogram(hist=(counts[present[0] : present[-1] + 1], np.arange(low, high + 1)))
    reductions = [Reduction(_tile_min, 1, x.dtype, "min"), Reduction(_tile_max, 1, x.dtype, "max")]
    x, (low, high) = materialise(x, reductions, passes=2)
    low, high = low[0], high[0]
    if low == high:  # scikit-image returns the single value
        return low
    integer = np.issubdtype(x.dtype, np.integer)
    width = int(high) - int(low) + 1 if integer else nbins
    per_block = x.map_blocks(_histogram_block, low, high, nbins, integer, new_axis=x.ndim,
                             chunks=tuple((1,) * len(c) for c in x.chunks) + ((width,),), dtype=np.int64,
                             meta=np.empty((0,) * (x.ndim + 1), dtype=np.int64))
    counts = per_block.sum(axis=tuple(range(x.ndim))).compute()
    if integer:
        centers = np.arange(int(low), int(high) + 1)
    else:
        edges = np.histogram_bin_edges(np.array([low, high], dtype=x.dtype), bins=nbins, range=(low, high))
        centers = (edges[:-1] + edges[1:]) / 2.0
    return otsu_from_histogram(hist=(counts, centers))


def _host_scalar(value):
    return to_numpy(value)[()]


THRESHOLD_METHODS = {"otsu": threshold_otsu}


def _threshold(tile, value):
    return tile > value


def threshold(image, value_or_method="otsu"):
    """A lazy boolean mask ``image > t``: ``t`` a number, or a method computed over the whole image
    (``"otsu"``). The threshold used is on the result as ``.attrs``-free: call the method to see it."""
    x = check_image(as_dask(image))
    if isinstance(value_or_method, str):
        if value_or_method not in THRESHOLD_METHODS:
            raise ValueError(
                f"value_or_method={value_or_method!r} is not a method; use a number or one of "
                f"{', '.join(map(repr, THRESHOLD_METHODS))}"
            )
        value = THRESHOLD_METHODS[value_or_method](x)
        x = as_dask(x)  # the method computed x once and kept it: threshold what it kept
    elif isinstance(value_or_method, (int, float, np.number)) and not isinstance(value_or_method, bool):
        if not math.isfinite(float(value_or_method)):
            raise ValueError(f"value_or_method={value_or_method!r} must be a finite number or a method name")
        value = value_or_method
    else:
        raise ValueError(f"value_or_method={value_or_method!r}: give a number or one of {', '.join(map(repr, THRESHOLD_METHODS))}")
    return map_tiles(_threshold, x, dtype=bool, value=value)


#: threshold_local's methods: the neighbourhood statistic each computes (scikit-image's choices)
LOCAL_METHODS = ("gaussian", "mean", "median", "generic")


def threshold_local(image, block_size=3, method="gaussian", offset=0, mode="reflect", param=None, cval=0, *,
                    budget=None):
    """``skimage.filters.threshold_local``: a threshold image, each voxel's neighbourhood statistic minus
    ``offset``, in scikit-image's float type (halo: the neighbourhood's; ``"mean"`` runs as uniform,
    on whole lines per axis). ``method``: ``"gaussian"`` (sigma ``(block_size - 1) / 6`` or ``param``),
    ``"mean"``, ``"median"`` or ``"generic"`` (``param`` a function of the neighbourhood's values)."""
    x = check_image(as_dask(image))
    if np.ndim(block_size) == 0:
        block_size = (block_size,) * x.ndim
    elif len(block_size) != x.ndim:
        raise ValueError(f"block_size={block_size!r} gives {len(block_size)} values; the image has {x.ndim} axes")
    block_size = normalize_size(tuple(block_size), x.ndim, name="block_size")
    if any(b % 2 == 0 for b in block_size):
        raise ValueError(f"block_size={block_size!r} must be odd on every axis (as scikit-image requires)")
    if method not in LOCAL_METHODS:
        raise ValueError(f"method={method!r} is not a method; use one of {', '.join(map(repr, LOCAL_METHODS))}")
    image_f = x.astype(_float_dtype(x.dtype))
    if method == "generic":
        local = generic_filter(image_f, param, block_size, mode=mode, cval=cval, budget=budget)
    elif method == "gaussian":
        sigma = tuple((b - 1) / 6.0 for b in block_size) if param is None else param
        local = gaussian(image_f, sigma, mode=mode, cval=cval, budget=budget)
    elif method == "mean":
        local = uniform(image_f, block_size, mode=mode, cval=cval, budget=budget)
    else:
        local = median(image_f, block_size, mode=mode, cval=cval, budget=budget)
    return local - offset
