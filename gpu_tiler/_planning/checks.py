"""Shared argument checks: each names the parameter, the value and what is allowed.

Values follow scipy.ndimage's conventions: a number may be a Python number, a NumPy scalar or a
0-d array, per-axis values a sequence of those; exceptions are also the type SciPy raises for the
same argument (see :mod:`gpu_tiler._errors`).
"""
from __future__ import annotations

import numbers
import operator

import numpy as np

from gpu_tiler._errors import ParameterRuntimeError, ParameterTypeError
from gpu_tiler._planning.halo import normalize_modes


def _scalar(value):
    """A 0-d array or NumPy scalar as the Python number it holds; anything else unchanged."""
    if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0:
        return value.item()
    return value


def _per_axis(name, value, ndim):
    if np.ndim(value) == 0 and not isinstance(value, (list, tuple)):
        return (_scalar(value),) * ndim
    values = tuple(np.asarray(value).tolist()) if isinstance(value, np.ndarray) else tuple(map(_scalar, value))
    if len(values) != ndim:
        raise ParameterRuntimeError(
            f"{name}={value!r} gives {len(values)} values; the image has {ndim} axes (give one value or {ndim})")
    return values


def normalize_sigma(sigma, ndim, name="sigma") -> tuple[float, ...]:
    values = _per_axis(name, sigma, ndim)
    out = []
    for v in values:
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not np.isfinite(v) or v < 0:
            raise ValueError(f"{name}={sigma!r}: each value must be a finite number >= 0")
        out.append(float(v))
    return tuple(out)


def _whole(name, given, v, minimum):
    """``v`` as an int: whole numbers (``3`` or ``3.0``) from ``minimum`` up."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not float(v).is_integer():
        raise ParameterTypeError(f"{name}={given!r}: each value must be a whole number >= {minimum}")
    if v < minimum:
        raise ParameterRuntimeError(f"{name}={given!r}: each value must be a whole number >= {minimum}")
    return int(v)


def normalize_size(size, ndim, name="size", minimum=1) -> tuple[int, ...]:
    """Per-axis filter sizes; ``minimum=0`` where SciPy takes sizes 0 and 1 as "no filtering"."""
    return tuple(_whole(name, size, v, minimum) for v in _per_axis(name, size, ndim))


def normalize_order(order, ndim) -> tuple[int, ...]:
    values = _per_axis("order", order, ndim)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"order={order!r}: each value must be a whole number >= 0 (0 smooths, 1 and up differentiate)")
    return tuple(int(v) for v in values)


def normalize_origin(origin, shape, name="origin") -> tuple[int, ...]:
    """Per-axis origins, each within its filter as SciPy requires: ``-(n // 2) <= origin <= (n - 1) // 2``."""
    values = _per_axis(name, origin, len(shape))
    out = []
    for v, n in zip(values, shape):
        n = max(int(n), 1)  # a size of 0 filters nothing, as one of 1
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ParameterTypeError(f"{name}={origin!r}: each value must be a whole number")
        if not -(n // 2) <= v <= (n - 1) // 2:
            raise ValueError(f"{name}={origin!r}: {v} lies outside a filter of {n} (allowed: {-(n // 2)} to {(n - 1) // 2})")
        out.append(int(v))
    return tuple(out)


def check_positive(name, value) -> float:
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a finite number > 0")
    return float(value)


def check_not_negative(name, value) -> float:
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value!r} must be a finite number >= 0")
    return float(value)


def check_footprint(footprint, ndim, name="footprint") -> np.ndarray:
    fp = np.asarray(footprint)
    if fp.ndim != ndim:
        raise ParameterRuntimeError(f"{name} has {fp.ndim} axes; the image has {ndim} (give an array with {ndim} axes)")
    if fp.size == 0 or not fp.any():
        raise ValueError(f"{name} must contain at least one nonzero element")
    return fp.astype(bool)


def check_structure(structure, ndim) -> np.ndarray:
    st = np.asarray(structure)
    if st.ndim != ndim or st.size == 0:
        raise ParameterRuntimeError(
            f"structure has {st.ndim} axes; the image has {ndim} (give an array with {ndim} axes)")
    return st


def check_image(image, name="image"):
    dtype = np.dtype(image.dtype)
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"{name} has complex dtype {dtype}; give real values (e.g. abs(image) or image.real)")
    if image.ndim == 0:
        raise ValueError(f"{name} is 0-d; give an array with at least one axis")
    return image


def normalize_axes(axes, ndim) -> tuple[int, ...]:
    """SciPy's ``axes=``: None for all axes, else distinct axes (negative ones count from the end)."""
    if axes is None:
        return tuple(range(ndim))
    items = (axes,) if np.ndim(axes) == 0 else tuple(axes)
    out = []
    for a in items:
        try:
            a = operator.index(_scalar(a))
        except TypeError:
            raise ParameterTypeError(f"axes={axes!r}: give whole numbers (axis indices)") from None
        if not -ndim <= a < ndim:
            raise ValueError(f"axes={axes!r}: axis {a} is out of range for an image with {ndim} axes")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axes={axes!r}: axes must be unique")
    return tuple(out)


def on_axes(values, axes, ndim, fill):
    """Values given for ``axes`` (in their order) spread over all ``ndim`` axes, ``fill`` elsewhere."""
    out = [fill] * ndim
    for a, v in zip(axes, values):
        out[a] = v
    return tuple(out)


def expand_array(array, axes, ndim, name="footprint"):
    """A footprint/structure/weights given for ``axes`` as an ``ndim``-D array (length 1 on the other
    axes), as SciPy expands it (``np.expand_dims``: its axes stay in image order)."""
    if array is None or len(axes) == ndim:
        return array
    if array.ndim != len(axes):
        raise ParameterRuntimeError(f"{name} has {array.ndim} axes; axes={axes!r} names {len(axes)}")
    return np.expand_dims(array, tuple(a for a in range(ndim) if a not in axes))


def size_or_footprint(size, footprint, ndim):
    """scipy.ndimage's rule: a footprint wins over a size; one of them is needed."""
    if footprint is not None:
        return None, check_footprint(footprint, ndim)
    if size is None:
        raise ParameterRuntimeError(
            "give size= (an int or one per axis) or footprint= (a boolean array); neither was given")
    return normalize_size(size, ndim), None


def reach_1d(n, origin=0) -> int:
    """How far a filter of ``n`` taps shifted by ``origin`` reaches from the voxel it computes, on its
    farther side; the same for SciPy's correlation and for its mirrored form (convolution, dilation)."""
    return max(n // 2 + origin, n - 1 - n // 2 - origin, 0)


def reach(shape, origin=None) -> tuple[int, ...]:
    """How far a neighbourhood of ``shape`` (a size per axis, or a footprint's, structure's or
    weights' shape) shifted by ``origin`` reaches from the voxel it computes, per axis."""
    origin = origin if origin is not None else (0,) * len(shape)
    return tuple(reach_1d(int(n), o) for n, o in zip(shape, origin))


__all__ = [
    "check_footprint", "check_image", "check_not_negative", "check_positive", "check_structure", "expand_array",
    "normalize_axes", "normalize_modes", "normalize_order", "normalize_origin", "normalize_sigma",
    "normalize_size", "on_axes", "reach", "reach_1d", "size_or_footprint",
]
