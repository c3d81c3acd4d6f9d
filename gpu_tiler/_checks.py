"""Shared argument checks: each names the parameter, the value and what is allowed."""
from __future__ import annotations

import numbers

import numpy as np

from ._halo import normalize_modes


def _per_axis(name, value, ndim):
    if np.isscalar(value):
        return (value,) * ndim
    values = tuple(np.asarray(value).tolist()) if isinstance(value, np.ndarray) else tuple(value)
    if len(values) != ndim:
        raise ValueError(f"{name}={value!r} gives {len(values)} values; the image has {ndim} axes (give one value or {ndim})")
    return values


def normalize_sigma(sigma, ndim, name="sigma") -> tuple[float, ...]:
    values = _per_axis(name, sigma, ndim)
    out = []
    for v in values:
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not np.isfinite(v) or v < 0:
            raise ValueError(f"{name}={sigma!r}: each value must be a finite number >= 0")
        out.append(float(v))
    return tuple(out)


def normalize_size(size, ndim, name="size") -> tuple[int, ...]:
    values = _per_axis(name, size, ndim)
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name}={size!r}: each value must be a whole number >= 1")
        out.append(int(v))
    return tuple(out)


def normalize_order(order, ndim) -> tuple[int, ...]:
    values = _per_axis("order", order, ndim)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"order={order!r}: each value must be a whole number >= 0 (0 smooths, 1 and up differentiate)")
    return tuple(int(v) for v in values)


def check_positive(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a finite number > 0")
    return float(value)


def check_footprint(footprint, ndim, name="footprint") -> np.ndarray:
    fp = np.asarray(footprint)
    if fp.ndim != ndim:
        raise ValueError(f"{name} has {fp.ndim} axes; the image has {ndim} (give an array with {ndim} axes)")
    if fp.size == 0 or not fp.any():
        raise ValueError(f"{name} must contain at least one nonzero element")
    return fp.astype(bool)


def check_structure(structure, ndim) -> np.ndarray:
    st = np.asarray(structure)
    if st.ndim != ndim or st.size == 0:
        raise ValueError(f"structure has {st.ndim} axes; the image has {ndim} (give an array with {ndim} axes)")
    return st


def check_image(image, name="image"):
    dtype = np.dtype(image.dtype)
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"{name} has complex dtype {dtype}; give real values (e.g. abs(image) or image.real)")
    if image.ndim == 0:
        raise ValueError(f"{name} is 0-d; give an array with at least one axis")
    return image


def size_or_footprint(size, footprint, ndim):
    """scipy.ndimage's rule: a footprint wins over a size; one of them is needed."""
    if footprint is not None:
        return None, check_footprint(footprint, ndim)
    if size is None:
        raise ValueError("give size= (an int or one per axis) or footprint= (a boolean array); neither was given")
    return normalize_size(size, ndim), None


def reach(size=None, footprint=None, structure=None) -> tuple[int, ...]:
    """How far a size/footprint/structure neighbourhood reaches from its centre, per axis."""
    shape = structure.shape if structure is not None else footprint.shape if footprint is not None else size
    return tuple(int(n) // 2 for n in shape)


__all__ = [
    "check_footprint", "check_image", "check_positive", "check_structure", "normalize_modes",
    "normalize_order", "normalize_sigma", "normalize_size", "reach", "size_or_footprint",
]
