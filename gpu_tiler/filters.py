"""Filters that equal scipy.ndimage / scikit-image on the whole image, computed tile by tile.

Every function takes scipy.ndimage's parameters with its defaults and output dtypes, declares the
halo it needs from them (the user never passes an overlap), and returns a lazy dask array. The
NumPy backend calls SciPy / scikit-image on each tile, the CuPy backend cupyx.scipy.ndimage /
cuCIM: the same call. A filter applied to the result of another runs in the same tiled pass (one
read, one write per tile) whenever that is exactly equal to running them one after another; pass
``fuse=False`` to keep passes apart.
"""
from __future__ import annotations

import math
from functools import partial

import dask

import numpy as np

from ._chain import Operation, Step, apply_operation, ndimage_step, run_on_window
from ._checks import (
    check_image,
    check_positive,
    check_structure,
    normalize_modes,
    normalize_order,
    normalize_sigma,
    normalize_size,
    _per_axis,
    reach,
    size_or_footprint,
)
from ._backends import chunk_backend, resolve_backend, to_numpy
from ._engine import map_tiles
from ._io import as_dask
from ._ome import metadata_of, physical_to_pixels

__all__ = [
    "black_tophat", "difference_of_gaussians", "gaussian", "maximum", "median", "minimum",
    "subtract_background", "threshold", "threshold_otsu", "uniform", "white_tophat",
]


def _prepare(image, mode):
    x = check_image(as_dask(image))
    return x, normalize_modes(mode, x.ndim)


def _spatial(x, value, fill, *, name, units=None):
    """Per-axis values for an image that knows its axes: a single value applies to the space axes
    only (``fill`` on time and channel axes); with ``units`` physical lengths become pixels."""
    meta = metadata_of(x)
    if meta is not None and np.isscalar(value) and len(meta.spatial) < x.ndim:
        value = tuple(value if a in meta.spatial else fill for a in range(x.ndim))
    if units is None:
        return value
    return physical_to_pixels(_per_axis(name, value, x.ndim), meta, units, name)


def _single_mode(name, modes):
    if len(set(modes)) > 1:
        raise ValueError(f"{name} takes one boundary mode for all axes (as scipy.ndimage does), not {modes!r}")
    return modes


def gaussian_radius(sigma, truncate=4.0, radius=None) -> tuple[int, ...]:
    """scipy.ndimage.gaussian_filter's reach per axis: ``radius``, else ``int(truncate * sigma + 0.5)``."""
    if radius is not None:
        return tuple(radius)
    return tuple(int(truncate * s + 0.5) if s > 1e-15 else 0 for s in sigma)


def gaussian_steps(sigma, order, modes, cval, truncate, radius=None) -> tuple[Step, ...]:
    """gaussian_filter as SciPy runs it: one gaussian_filter1d per axis with sigma > 0, in axis order.

    Separate steps let each axis' pass meet the image border as SciPy's does; with mode="constant"
    that is what makes tiles exact (SciPy pads each pass with cval, not with the previous pass's
    smoothing of the padding)."""
    ndim = len(sigma)
    reach_ = gaussian_radius(sigma, truncate, radius)
    steps = []
    for axis in range(ndim):
        if sigma[axis] <= 1e-15:
            continue
        kwargs = {"sigma": sigma[axis], "axis": axis, "order": order[axis], "truncate": truncate}
        if radius is not None:
            kwargs["radius"] = radius[axis]
        halo = tuple(reach_[axis] if a == axis else 0 for a in range(ndim))
        mode = (modes[axis],) * ndim
        steps.append(ndimage_step(f"gaussian_filter1d[{axis}]", "gaussian_filter1d", halo, mode, cval, **kwargs))
    return tuple(steps)


def _copy_step(ndim, modes, cval):
    return Step("copy", (0,) * ndim, tuple(modes), float(cval), _copy)


def _copy(backend, tile, border):
    return tile.copy()


def gaussian(image, sigma, order=0, mode="reflect", cval=0.0, truncate=4.0, *, radius=None, units=None, fuse=True,
             budget=None):
    """``scipy.ndimage.gaussian_filter`` tile by tile (halo: ``int(truncate * sigma + 0.5)`` per axis).

    On an image that knows its axes (OME-Zarr), a single ``sigma`` smooths the space axes only; with
    ``units`` (e.g. ``"um"``) ``sigma`` is a physical length, converted per axis with the pixel sizes.
    """
    x, modes = _prepare(image, mode)
    sigma = normalize_sigma(_spatial(x, sigma, 0.0, name="sigma", units=units), x.ndim)
    order = normalize_order(order, x.ndim)
    truncate = check_positive("truncate", truncate)
    if radius is not None:
        radius = tuple(int(r) for r in _per_axis("radius", radius, x.ndim))
        if any(r < 0 for r in radius):
            raise ValueError(f"radius={radius!r}: each value must be a whole number >= 0")
    steps = gaussian_steps(sigma, order, modes, cval, truncate, radius) or (_copy_step(x.ndim, modes, cval),)
    return apply_operation(x, Operation("gaussian", steps, x.dtype), fuse=fuse, budget=budget)


def uniform(image, size=3, mode="reflect", cval=0.0, *, budget=None):
    """``scipy.ndimage.uniform_filter`` tile by tile.

    SciPy computes each line with a running sum from the line's start, so a value depends (in its
    last bits) on everything before it on the line. To equal it bit for bit, each axis is one pass
    whose tiles hold whole lines along that axis. Passes are chained lazily; for images far larger
    than memory, save between axes if a single pass's whole lines exceed the budget.
    """
    x, modes = _prepare(image, mode)
    size = normalize_size(_spatial(x, size, 1, name="size"), x.ndim)
    out = x
    for axis, (n, m) in enumerate(zip(size, modes)):
        if n > 1:
            step = ndimage_step("uniform_filter1d", "uniform_filter1d", (0,) * x.ndim, (m,) * x.ndim, cval,
                                size=n, axis=axis)
            op = Operation(f"uniform{axis}", (step,), x.dtype, whole_axes=(axis,))
            out = apply_operation(out, op, fuse=False, budget=budget)
    if out is x:  # scipy copies the input when no axis has size > 1
        out = map_tiles(np.copy, x, budget=budget)
    return out


def _rank(name, function, image, size, footprint, mode, cval, fuse, budget, per_axis_modes):
    x, modes = _prepare(image, mode)
    if not per_axis_modes:
        _single_mode(name, modes)
    size, footprint = size_or_footprint(None if size is None else _spatial(x, size, 1, name="size"), footprint, x.ndim)
    kwargs = {"footprint": footprint} if footprint is not None else {"size": size}
    halo = reach(size=size, footprint=footprint)
    step = ndimage_step(name, function, halo, modes, cval, **kwargs)
    return apply_operation(x, Operation(name, (step,), x.dtype), fuse=fuse, budget=budget)


def median(image, size=None, footprint=None, mode="reflect", cval=0.0, *, fuse=True, budget=None):
    """``scipy.ndimage.median_filter`` tile by tile (halo: half the size or footprint)."""
    return _rank("median", "median_filter", image, size, footprint, mode, cval, fuse, budget, False)


def minimum(image, size=None, footprint=None, mode="reflect", cval=0.0, *, fuse=True, budget=None):
    """``scipy.ndimage.minimum_filter`` tile by tile (halo: half the size or footprint)."""
    return _rank("minimum", "minimum_filter", image, size, footprint, mode, cval, fuse, budget, True)


def maximum(image, size=None, footprint=None, mode="reflect", cval=0.0, *, fuse=True, budget=None):
    """``scipy.ndimage.maximum_filter`` tile by tile (halo: half the size or footprint)."""
    return _rank("maximum", "maximum_filter", image, size, footprint, mode, cval, fuse, budget, True)


def _subtract(first, backend, op_input, result):
    """Top-hat combine: ``input - opening`` (white) or ``closing - input`` (black), as SciPy does."""
    a, b = (op_input, result) if first == "input" else (result, op_input)
    if a.dtype == np.bool_ and b.dtype == np.bool_:
        return backend.xp.bitwise_xor(a, b)
    return backend.xp.subtract(a, b)


def _tophat(name, inner, outer, first, image, size, footprint, structure, mode, cval, fuse, budget):
    x, modes = _prepare(image, mode)
    _single_mode(name, modes)
    if structure is not None:
        structure = check_structure(structure, x.ndim)
        if footprint is None and size is None:
            footprint = np.ones(structure.shape, dtype=bool)
    size, footprint = size_or_footprint(None if size is None else _spatial(x, size, 1, name="size"), footprint, x.ndim)
    kwargs = {"footprint": footprint} if footprint is not None else {"size": size}
    if structure is not None:
        kwargs["structure"] = structure
    halo = reach(size=size, footprint=footprint, structure=structure)
    steps = (
        ndimage_step(inner, inner, halo, modes, cval, **kwargs),
        ndimage_step(outer, outer, halo, modes, cval, **kwargs),
    )
    op = Operation(name, steps, x.dtype, combine=partial(_subtract, first))
    return apply_operation(x, op, fuse=fuse, budget=budget)


def white_tophat(image, size=None, footprint=None, structure=None, mode="reflect", cval=0.0, *, fuse=True,
                 budget=None):
    """``scipy.ndimage.white_tophat``: the image minus its grey opening (halo: twice the reach)."""
    return _tophat("white_tophat", "grey_erosion", "grey_dilation", "input", image, size, footprint, structure,
                   mode, cval, fuse, budget)


def black_tophat(image, size=None, footprint=None, structure=None, mode="reflect", cval=0.0, *, fuse=True,
                 budget=None):
    """``scipy.ndimage.black_tophat``: the grey closing minus the image (halo: twice the reach)."""
    return _tophat("black_tophat", "grey_dilation", "grey_erosion", "result", image, size, footprint, structure,
                   mode, cval, fuse, budget)


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


def threshold_otsu(image, nbins=256):
    """Otsu's threshold over the whole image, equal to ``skimage.filters.threshold_otsu`` on it.

    Two passes over the tiles, nothing whole-image in memory: the global minimum and maximum, then
    a histogram per tile on the global bins (one bin per value for integer images, ``nbins`` bins
    otherwise, as scikit-image does), summed; Otsu's criterion runs on the summed histogram.
    """
    from skimage.filters import threshold_otsu as otsu_from_histogram

    x = check_image(as_dask(image))
    if isinstance(nbins, bool) or not isinstance(nbins, (int, np.integer)) or nbins < 1:
        raise ValueError(f"nbins={nbins!r} must be a whole number >= 1")
    if x.size == 0:
        raise ValueError("threshold_otsu needs a non-empty image")
    low, high = dask.compute(x.min(), x.max())
    low, high = _host_scalar(low), _host_scalar(high)
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


def _greater(tile, value):
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
    elif isinstance(value_or_method, (int, float, np.number)) and not isinstance(value_or_method, bool):
        if not math.isfinite(float(value_or_method)):
            raise ValueError(f"value_or_method={value_or_method!r} must be a finite number or a method name")
        value = value_or_method
    else:
        raise ValueError(f"value_or_method={value_or_method!r}: give a number or one of {', '.join(map(repr, THRESHOLD_METHODS))}")
    return map_tiles(_greater, x, dtype=bool, value=value)


