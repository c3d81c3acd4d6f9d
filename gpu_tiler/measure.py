"""regionprops across tiles: per-label measurements equal to scikit-image's on the whole image.

Each tile of the label image (with the matching tile of the intensity image) is reduced to a small
*partial table*, one row per label present in that tile: voxel count, exact integer sums of the
coordinates, bounding-box minima and maxima, and, when asked for, intensity sums, extrema and
central moments. Partial tables are merged with scatter reductions keyed by label (``bincount``,
``add.at``, ``minimum.at``, ``maximum.at`` of the tile's array module, NumPy or CuPy), in a tree
of small merges; only the final table (one row per label) comes back to the host, where the
derived properties (centroids, inertia tensors, normalized moments...) are computed vectorised.

Central moments merge exactly in exact arithmetic: each partial row keeps its moments about its
own *integer* centre ``c`` (the floor of its mean coordinate), and moments about another centre
``c'`` follow from the binomial expansion of ``(x - c') = (x - c) + (c - c')``. Rows of one label
are shifted to a common centre and summed; at the end they are shifted to the centroid (central
moments), the weighted centroid (weighted central moments) or the bounding-box corner (raw
moments, which scikit-image takes in the bounding box's local frame). Intensity variance merges the
same way (Chan et al.'s parallel variance is the one-variable case).
"""
from __future__ import annotations

import functools
import itertools
import math

import dask
import numpy as np
from dask import delayed

from ._backends import NUMPY, chunk_backend, get_backend, namespace_of, resolve_backend
from ._checks import check_image
from ._engine import as_dask

#: the columns returned when ``properties`` is not given (and, with an intensity image, these too)
DEFAULT_PROPERTIES = ("label", "area", "centroid", "bbox")
DEFAULT_INTENSITY_PROPERTIES = ("intensity_mean", "intensity_min", "intensity_max")

_SHAPE_PROPERTIES = (
    "label", "area", "num_pixels", "area_bbox", "bbox", "extent", "centroid", "centroid_local",
    "equivalent_diameter_area", "inertia_tensor", "inertia_tensor_eigvals", "axis_major_length",
    "axis_minor_length", "moments", "moments_central", "moments_normalized",
)
_INTENSITY_PROPERTIES = (
    "intensity_mean", "intensity_min", "intensity_max", "intensity_std", "centroid_weighted",
    "centroid_weighted_local", "moments_weighted", "moments_weighted_central", "moments_weighted_normalized",
)
#: every property :func:`regionprops` computes, in scikit-image's names
SUPPORTED_PROPERTIES = _SHAPE_PROPERTIES + _INTENSITY_PROPERTIES

#: scikit-image properties that need a whole object at once (its pixels' layout, its outline or a
#: median), so they cannot be assembled from per-tile sums and extrema; and two that can, but whose
#: scikit-image definition jumps at ties that float rounding decides (orientation when the two
#: second moments are equal, eccentricity of a circle)
_NOT_MERGEABLE = {
    "area_convex": "needs the convex hull of the whole object",
    "area_filled": "needs the object's holes filled as a whole",
    "coords": "lists every voxel (use the label image itself)",
    "coords_scaled": "lists every voxel (use the label image itself)",
    "eccentricity": "is sqrt(1 - l2/l1), which amplifies rounding without bound for round objects",
    "euler_number": "needs the object's topology as a whole",
    "feret_diameter_max": "needs the convex hull of the whole object",
    "image": "is the object's whole mask",
    "image_convex": "needs the convex hull of the whole object",
    "image_filled": "needs the object's holes filled as a whole",
    "image_intensity": "is the object's whole intensity crop",
    "intensity_median": "a median does not merge from per-tile summaries",
    "moments_hu": "is not implemented (moments_normalized is)",
    "moments_weighted_hu": "is not implemented (moments_weighted_normalized is)",
    "orientation": "switches branch when two second moments are exactly equal, which float rounding decides",
    "perimeter": "needs the outline of the whole object",
    "perimeter_crofton": "needs the outline of the whole object",
    "slice": "is a Python object per label (build it from the bbox columns)",
    "solidity": "needs the convex hull of the whole object",
}

_MOMENT_ORDER = 3  # scikit-image's moments* properties are up to order 3 along every axis
_SPLIT_EVERY = 8  # partial tables merged per task in the reduction tree
#: counts, coordinate sums and bounding boxes are non-negative integers: uint64, which CuPy's
#: scatter add/min/max support (its int64 is not); converted to int64 for the table
_INDEX = np.uint64
_SIGN_BIT = np.uint64(1 << 63)


# ----------------------------------------------------------------------------- properties and plan


def _normalize_properties(properties, has_intensity) -> tuple[str, ...]:
    if properties is None:
        return DEFAULT_PROPERTIES + (DEFAULT_INTENSITY_PROPERTIES if has_intensity else ())
    if isinstance(properties, str):
        properties = (properties,)
    try:
        names = list(properties)
    except TypeError:
        raise ValueError(f"properties={properties!r}: give a list of property names such as ('label', 'area')") from None
    if not names:
        raise ValueError("properties is empty; name at least one, e.g. ('label', 'area')")
    supported = ", ".join(SUPPORTED_PROPERTIES)
    out = []
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"properties: {name!r} is not a property name (a string); supported: {supported}")
        if name in _NOT_MERGEABLE:
            raise ValueError(
                f"property {name!r} cannot be computed across tiles: it {_NOT_MERGEABLE[name]}. "
                f"Supported properties: {supported}"
            )
        if name not in SUPPORTED_PROPERTIES:
            raise ValueError(f"unknown property {name!r}; supported properties: {supported}")
        if name in _INTENSITY_PROPERTIES and not has_intensity:
            raise ValueError(f"property {name!r} needs an intensity image: pass intensity=")
        if name not in out:
            out.append(name)
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _exponents(ndim: int, grid: bool) -> tuple[tuple[int, ...], ...]:
    """Moment exponents: every axis up to order 3 (``grid``, as scikit-image's ``moments*``) or
    total degree up to 2 (enough for the inertia tensor). Both sets are closed downwards, which
    the shift between centres needs."""
    if grid:
        return tuple(itertools.product(range(_MOMENT_ORDER + 1), repeat=ndim))
    return tuple(p for p in itertools.product(range(3), repeat=ndim) if sum(p) <= 2)


@functools.lru_cache(maxsize=None)
def _shift_terms(exponents):
    """For each exponent ``p``: the ``(index of j, binomial coefficient, p - j)`` for every ``j <= p``."""
    where = {p: e for e, p in enumerate(exponents)}
    terms = []
    for p in exponents:
        row = []
        for j in itertools.product(*(range(k + 1) for k in p)):
            coef = math.prod(math.comb(pk, jk) for pk, jk in zip(p, j))
            row.append((where[j], float(coef), tuple(pk - jk for pk, jk in zip(p, j))))
        terms.append(row)
    return tuple(terms)


def _extreme_encoding(dtype):
    """The dtype in which intensity extrema are scattered, and whether int64 is sign-flipped.

    CuPy's ``minimum.at``/``maximum.at`` support int32, uint32, uint64, float32 and float64: narrow
    types widen exactly, and int64 maps to uint64 order-preservingly by flipping its sign bit.
    """
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or (dtype.kind == "u" and dtype.itemsize <= 4):
        return np.dtype(np.uint32), False
    if dtype.kind == "i" and dtype.itemsize <= 4:
        return np.dtype(np.int32), False
    if dtype.kind == "i":
        return np.dtype(np.uint64), True
    if dtype.kind == "u":
        return np.dtype(np.uint64), False
    if dtype.kind == "f" and dtype.itemsize <= 4:
        return np.dtype(np.float32), False
    return np.dtype(np.float64), False


def _encode_extremes(values, encoding):
    dtype, flip = encoding
    if flip:
        return values.astype(np.int64).view(np.uint64) ^ _SIGN_BIT
    return values.astype(dtype)


def _decode_extremes(values, encoding):
    """Encoded extrema (host NumPy) as float64, the dtype of scikit-image's columns."""
    if encoding[1]:
        return (values ^ _SIGN_BIT).view(np.int64).astype(np.float64)
    return values.astype(np.float64)


class _Plan:
    """What the requested properties need from each tile (plain data: it travels to dask workers)."""

    def __init__(self, properties, ndim, intensity_dtype):
        wanted = set(properties)
        self.properties = properties
        self.ndim = ndim
        self.intensity_dtype = None if intensity_dtype is None else np.dtype(intensity_dtype)
        grid = bool(wanted & {"moments", "moments_central", "moments_normalized"})
        second = bool(wanted & {"inertia_tensor", "inertia_tensor_eigvals", "axis_major_length", "axis_minor_length"})
        self.exponents = _exponents(ndim, grid) if (grid or second) else None
        weighted_moments = bool(wanted & {"moments_weighted", "moments_weighted_central", "moments_weighted_normalized"})
        self.weighted_exponents = _exponents(ndim, True) if weighted_moments else None
        self.intensity = self.intensity_dtype is not None
        self.extremes = _extreme_encoding(self.intensity_dtype) if self.intensity else None
        self.weighted_sums = weighted_moments or bool(wanted & {"centroid_weighted", "centroid_weighted_local"})
        self.value_moments = "intensity_std" in wanted
        if ndim not in (2, 3):
            for name in ("axis_major_length", "axis_minor_length"):
                if name in wanted:
                    raise ValueError(f"property {name!r} is defined for 2-D and 3-D images only; the labels have {ndim} axes")

    @property
    def centred(self):
        return self.exponents is not None or self.weighted_exponents is not None


# ----------------------------------------------------------------------------- per-tile partials


def _extreme_fill(dtype, which):
    """The identity of ``minimum``/``maximum`` for ``dtype``."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return which == "min"
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return info.max if which == "min" else info.min
    return np.inf if which == "min" else -np.inf


def _empty_partial(xp, plan):
    ndim = plan.ndim
    part = {
        "label": xp.zeros(0, dtype=np.int64),
        "count": xp.zeros(0, dtype=_INDEX),
        "sum": xp.zeros((0, ndim), dtype=_INDEX),
        "bmin": xp.zeros((0, ndim), dtype=_INDEX),
        "bmax": xp.zeros((0, ndim), dtype=_INDEX),
    }
    if plan.centred:
        part["center"] = xp.zeros((0, ndim), dtype=np.int64)
    if plan.exponents is not None:
        part["mu"] = xp.zeros((0, len(plan.exponents)))
    if plan.intensity:
        part["isum"] = xp.zeros(0)
        part["imin"] = xp.zeros(0, dtype=plan.extremes[0])
        part["imax"] = xp.zeros(0, dtype=plan.extremes[0])
    if plan.value_moments:
        part["icenter"] = xp.zeros(0)
        part["imu"] = xp.zeros((0, 3))
    if plan.weighted_sums:
        part["wsum"] = xp.zeros((0, ndim))
    if plan.weighted_exponents is not None:
        part["wmu"] = xp.zeros((0, len(plan.weighted_exponents)))
    return part


def _compact_index(xp, values):
    """Labels present among ``values`` (sorted, int64) and each value's row among them.

    Labels in one tile usually span a short range: then one ``bincount`` over ``value - lowest``
    finds them in linear time; a sort (``unique``) is used only for widely spread ids.
    """
    low, high = int(values.min()), int(values.max())
    span = high - low + 1
    if span <= 4 * values.size + 1024:
        offset = (values - values.dtype.type(low)).astype(np.intp)
        present = xp.nonzero(xp.bincount(offset, minlength=span))[0]
        row_of = xp.zeros(span, dtype=np.intp)
        row_of[present] = xp.arange(present.size, dtype=np.intp)
        return present.astype(np.int64) + low, row_of[offset]
    ids, index = xp.unique(values, return_inverse=True)
    return ids.astype(np.int64), index.reshape(-1).astype(np.intp)


def _moment_sums(xp, index, rows, deltas, exponents, weights=None):
    """Per row: ``sum(weights * prod(deltas[a] ** p[a]))`` for every exponent ``p`` (float64)."""
    top = max(max(p) for p in exponents)
    powers = []
    for d in deltas:
        per_axis = [None, d]
        for _ in range(2, top + 1):
            per_axis.append(per_axis[-1] * d)
        powers.append(per_axis)
    out = xp.empty((rows, len(exponents)))
    for e, p in enumerate(exponents):
        term = weights
        for a, k in enumerate(p):
            if k:
                term = powers[a][k] if term is None else term * powers[a][k]
        if term is None:
            out[:, e] = xp.bincount(index, minlength=rows)
        else:
            out[:, e] = xp.bincount(index, weights=term, minlength=rows)
    return out


def _tile_partial(label_block, intensity_block, offset, plan, backend_name):
    """The partial table of one tile: one row per label present, in image coordinates."""
    backend = get_backend(backend_name)
    labels = backend.to_backend(label_block)
    xp = chunk_backend(labels).xp
    where = xp.nonzero(labels > 0)
    values = labels[where]
    if values.size == 0:
        return _empty_partial(xp, plan)
    ids, index = _compact_index(xp, values)
    rows = int(ids.size)
    count = xp.bincount(index, minlength=rows).astype(_INDEX)
    floats = [c.astype(np.float64) for c in where]
    local_sum = xp.stack([xp.bincount(index, weights=c, minlength=rows) for c in floats], axis=1)
    local_sum = xp.rint(local_sum).astype(_INDEX)  # integer sums within one tile: exact in float64
    origin = xp.asarray(offset, dtype=_INDEX)
    bmin = xp.stack([_scatter(xp, xp.minimum, index, rows, c.astype(_INDEX)) for c in where], axis=1)
    bmax = xp.stack([_scatter(xp, xp.maximum, index, rows, c.astype(_INDEX)) for c in where], axis=1)
    part = {
        "label": ids,
        "count": count,
        "sum": local_sum + count[:, None] * origin,
        "bmin": bmin + origin,
        "bmax": bmax + origin,
    }
    deltas = None
    if plan.centred:
        local_center = (local_sum // count[:, None]).astype(np.int64)
        part["center"] = local_center + origin.astype(np.int64)
        deltas = [c - local_center[index, a].astype(np.float64) for a, c in enumerate(floats)]
    if plan.exponents is not None:
        part["mu"] = _moment_sums(xp, index, rows, deltas, plan.exponents)
    if plan.intensity:
        raw = backend.to_backend(intensity_block)[where]
        weights = raw.astype(np.float64)
        part["isum"] = xp.bincount(index, weights=weights, minlength=rows)
        encoded = _encode_extremes(raw, plan.extremes)
        part["imin"] = _scatter(xp, xp.minimum, index, rows, encoded)
        part["imax"] = _scatter(xp, xp.maximum, index, rows, encoded)
        if plan.value_moments:
            center = part["isum"] / count
            part["icenter"] = center
            part["imu"] = _moment_sums(xp, index, rows, [weights - center[index]], ((0,), (1,), (2,)))
        if plan.weighted_sums:
            local = xp.stack([xp.bincount(index, weights=weights * c, minlength=rows) for c in floats], axis=1)
            part["wsum"] = local + part["isum"][:, None] * origin.astype(np.float64)
        if plan.weighted_exponents is not None:
            part["wmu"] = _moment_sums(xp, index, rows, deltas, plan.weighted_exponents, weights)
    return part


# ----------------------------------------------------------------------------- merging partials


def _shift_moments(xp, mu, exponents, d):
    """Moments about centres ``c`` (one row each) turned into moments about ``c - d``."""
    out = xp.zeros_like(mu)
    for e, row in enumerate(_shift_terms(exponents)):
        total = out[:, e]
        for j, coef, power in row:
            term = mu[:, j] * coef if coef != 1.0 else mu[:, j]
            for a, k in enumerate(power):
                if k:
                    term = term * d[:, a] ** k
            total += term
    return out


def _scatter(xp, ufunc, index, rows, values):
    """``out[index[i]] = ufunc(out[index[i]], values[i])`` into ``rows`` rows, starting from the
    ufunc's identity (``add``, ``minimum``, ``maximum``); ``values`` may have trailing columns,
    scattered as one flat 1-D scatter (CuPy's ``ufunc.at`` is sure of 1-D contiguous targets)."""
    if ufunc is xp.add:
        fill = 0
    else:
        fill = _extreme_fill(values.dtype, "min" if ufunc is xp.minimum else "max")
    width = math.prod(values.shape[1:])
    out = xp.full(rows * width, fill, dtype=values.dtype)
    flat_index = index if width == 1 else (index[:, None] * width + xp.arange(width)).reshape(-1)
    ufunc.at(out, flat_index, values.reshape(-1))
    return out.reshape((rows,) + values.shape[1:])


def _scatter_sum(xp, index, rows, values):
    return _scatter(xp, xp.add, index, rows, values)


def _merge(plan, *parts):
    """Merge partial tables into one with a row per label (itself a partial table)."""
    parts = [p for p in parts if p["label"].size] or list(parts[:1])
    if len(parts) == 1:
        return parts[0]
    xp = namespace_of(parts[0]["label"])
    joined = {key: xp.concatenate([p[key] for p in parts]) for key in parts[0]}
    ids, index = xp.unique(joined["label"], return_inverse=True)
    index = index.reshape(-1)
    rows = int(ids.size)
    out = {"label": ids}
    for key in ("count", "sum", "isum", "wsum"):
        if key in joined:
            out[key] = _scatter_sum(xp, index, rows, joined[key])
    for key, ufunc in (("bmin", xp.minimum), ("imin", xp.minimum), ("bmax", xp.maximum), ("imax", xp.maximum)):
        if key in joined:
            out[key] = _scatter(xp, ufunc, index, rows, joined[key])
    if "center" in joined:
        out["center"] = (out["sum"] // out["count"][:, None]).astype(np.int64)
        d = (joined["center"] - out["center"][index]).astype(np.float64)
        for key, exponents in (("mu", plan.exponents), ("wmu", plan.weighted_exponents)):
            if key in joined:
                out[key] = _scatter_sum(xp, index, rows, _shift_moments(xp, joined[key], exponents, d))
    if "icenter" in joined:
        out["icenter"] = out["isum"] / out["count"]
        d = (joined["icenter"] - out["icenter"][index])[:, None]
        out["imu"] = _scatter_sum(xp, index, rows, _shift_moments(xp, joined["imu"], ((0,), (1,), (2,)), d))
    return out


# ----------------------------------------------------------------------------- final table


def _to_host(part):
    """The merged table on the host, integer fields as int64."""
    host = {key: NUMPY.to_backend(value) for key, value in part.items()}
    for key in ("count", "sum", "bmin", "bmax"):
        host[key] = host[key].astype(np.int64)
    return host


def _scalar_power(base, exponent):
    """``base ** exponent`` one float64 scalar at a time, the form scikit-image uses (one region at a time).

    NumPy's vectorised ``power`` picks a SIMD loop by the CPU at run time (AVX-512 where there is
    one), which may differ from the scalar C ``pow`` in the last bit; NumPy's scalar power always
    calls ``pow``, so this result does not depend on the CPU, and equals scikit-image's bit for bit.
    """
    return np.array([b ** exponent for b in np.asarray(base, dtype=np.float64)], dtype=np.float64)


def _normalized(mu, exponents, ndim):
    """scikit-image's ``moments_normalized``: mu_p / mu_0 ** (|p| / ndim + 1); NaN where |p| < 2."""
    out = np.full_like(mu, np.nan)
    mu0 = mu[:, 0]
    denominators = {}
    for e, p in enumerate(exponents):
        if sum(p) >= 2:
            power = sum(p) / ndim + 1
            if power not in denominators:
                denominators[power] = _scalar_power(mu0, power)
            out[:, e] = mu[:, e] / denominators[power]
    return out


def _as_grid(mu, ndim):
    """(rows, 4**ndim) in C order -> (rows, 4, ..., 4), the layout of scikit-image's moments."""
    return mu.reshape((mu.shape[0],) + (_MOMENT_ORDER + 1,) * ndim)


def _inertia_tensor(mu, exponents, ndim):
    where = {p: e for e, p in enumerate(exponents)}
    unit = np.eye(ndim, dtype=int)
    mu0 = mu[:, where[(0,) * ndim]]
    second = np.stack([mu[:, where[tuple(2 * unit[a])]] for a in range(ndim)], axis=1)
    tensor = np.zeros((mu.shape[0], ndim, ndim))
    for a in range(ndim):
        tensor[:, a, a] = (second.sum(axis=1) - second[:, a]) / mu0
    for a, b in itertools.combinations(range(ndim), 2):
        tensor[:, a, b] = tensor[:, b, a] = -mu[:, where[tuple(unit[a] + unit[b])]] / mu0
    return tensor


def _values(plan, part):
    """Each requested property as an array with one leading row per label (host NumPy)."""
    ndim = plan.ndim
    count = part["count"]
    area = count.astype(np.float64)
    bmin, bmax = part["bmin"], part["bmax"]
    box = np.prod((bmax - bmin + 1).astype(np.float64), axis=1)
    # scikit-image's centroid is the mean of the coordinates and centroid_local the first raw moment
    # (in the bounding box's frame) over the zeroth: both integer sums, exact, divided once
    centroid = part["sum"] / count[:, None]
    local_sum = part["sum"] - count[:, None] * bmin
    cache = {}

    def central():
        if "central" not in cache:  # part["center"] -> centroid
            d = (part["center"] - bmin) - local_sum / count[:, None]  # in the box's frame, as scikit-image
            cache["central"] = _shift_moments(np, part["mu"], plan.exponents, d)
        return cache["central"]

    def weighted_centroid_local():
        # scikit-image: the first weighted raw moment in the bounding box's frame over the zeroth
        # (sums of integers for an integer intensity image: exact, then divided once)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (part["wsum"] - part["isum"][:, None] * bmin) / part["isum"][:, None]

    def weighted_centroid():
        return weighted_centroid_local() + bmin  # scikit-image adds the slice start to the local one

    def eigvals():
        if "eig" not in cache:
            values = np.linalg.eigvalsh(_inertia_tensor(central(), plan.exponents, ndim)) if len(count) else np.zeros((0, ndim))
            cache["eig"] = np.clip(values, 0, None)[:, ::-1]
        return cache["eig"]

    def weighted_central():
        return _shift_moments(np, part["wmu"], plan.weighted_exponents, (part["center"] - bmin) - weighted_centroid_local())

    makers = {
        "label": lambda: part["label"].astype(np.int64),
        "area": lambda: area,
        "num_pixels": lambda: count.astype(np.int64),
        "area_bbox": lambda: box,
        "bbox": lambda: np.concatenate([bmin, bmax + 1], axis=1).astype(np.int64),
        "extent": lambda: area / box,
        "centroid": lambda: centroid,
        "centroid_local": lambda: local_sum / count[:, None],
        "equivalent_diameter_area": lambda: _scalar_power(2 * ndim * area / math.pi, 1 / ndim),
        "inertia_tensor": lambda: _inertia_tensor(central(), plan.exponents, ndim),
        "inertia_tensor_eigvals": eigvals,
        "axis_major_length": lambda: (
            4 * np.sqrt(eigvals()[:, 0]) if ndim == 2
            else np.sqrt(np.maximum(0, 10 * (eigvals()[:, 0] + eigvals()[:, 1] - eigvals()[:, 2])))
        ),
        "axis_minor_length": lambda: (
            4 * np.sqrt(eigvals()[:, -1]) if ndim == 2
            else np.sqrt(np.maximum(0, 10 * (-eigvals()[:, 0] + eigvals()[:, 1] + eigvals()[:, 2])))
        ),
        "moments": lambda: _as_grid(_shift_moments(np, part["mu"], plan.exponents, part["center"] - bmin), ndim),
        "moments_central": lambda: _as_grid(central(), ndim),
        "moments_normalized": lambda: _as_grid(_normalized(central(), plan.exponents, ndim), ndim),
        "intensity_mean": lambda: part["isum"] / count,
        "intensity_min": lambda: _decode_extremes(part["imin"], plan.extremes),
        "intensity_max": lambda: _decode_extremes(part["imax"], plan.extremes),
        "intensity_std": lambda: np.sqrt(np.maximum(part["imu"][:, 2], 0) / count),
        "centroid_weighted": weighted_centroid,
        "centroid_weighted_local": weighted_centroid_local,
        "moments_weighted": lambda: _as_grid(
            _shift_moments(np, part["wmu"], plan.weighted_exponents, part["center"] - bmin), ndim
        ),
        "moments_weighted_central": lambda: _as_grid(weighted_central(), ndim),
        "moments_weighted_normalized": lambda: _as_grid(
            _normalized(weighted_central(), plan.weighted_exponents, ndim), ndim
        ),
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        return {name: makers[name]() for name in plan.properties}


_INTEGER_COLUMNS = {"label", "num_pixels", "bbox"}


def _table(plan, part):
    import pandas as pd

    part = _to_host(part)
    columns = {}
    for name, value in _values(plan, part).items():
        dtype = np.int64 if name in _INTEGER_COLUMNS else np.float64
        value = np.asarray(value)
        if value.ndim == 1:
            columns[name] = value.astype(dtype, copy=False)
            continue
        for position in np.ndindex(value.shape[1:]):
            column = value[(slice(None),) + position]
            columns[f"{name}-{'-'.join(map(str, position))}"] = column.astype(dtype, copy=False)
    return pd.DataFrame(columns)


# ----------------------------------------------------------------------------- public API


def regionprops(labels, intensity=None, properties=None, *, backend=None):
    """Measure every labelled object of an image larger than memory, tile by tile.

    Returns a ``pandas.DataFrame`` with one row per label (sorted by label; voxels labelled 0 or
    below are background) whose columns are those of
    ``skimage.measure.regionprops_table(labels, intensity, properties=properties)`` on the whole
    image, with the same names (``bbox-0``..., ``centroid-1``, ``moments_central-2-0``...) and
    dtypes, without the whole image ever being in memory.

    ``labels``: an integer label image (dask, zarr, NumPy or CuPy array, or a path gpu_tiler can
    open). ``intensity``: an image of the same shape (rechunked to the labels' chunks). Each tile
    is reduced to a table with one row per label it contains (counts, coordinate sums, bounding
    boxes, intensity sums and extrema, central moments), and these tables are merged by label with
    scatter reductions, so memory grows with the labels, not the voxels. ``backend``: ``"numpy"``,
    ``"cupy"`` or None for the configured choice (as in :func:`gpu_tiler.map_tiles`).

    ``properties`` (default ``label, area, centroid, bbox``, plus ``intensity_mean``,
    ``intensity_min`` and ``intensity_max`` with an intensity image) may name any of
    :data:`SUPPORTED_PROPERTIES`. Bit-identical to scikit-image on every CPU, because they are
    computed from exact integer sums with scikit-image's operations in its order and scalar form
    (see ``docs/measure.md``): ``label``, ``num_pixels``, ``bbox``, ``area``, ``area_bbox``,
    ``extent``, ``equivalent_diameter_area``, ``centroid``, ``centroid_local``, the extrema and,
    for an integer intensity image, ``intensity_mean``, ``centroid_weighted`` and
    ``centroid_weighted_local``; raw ``moments`` too while they stay below 2**53. Other float
    columns built from sums (central and weighted moments, inertia tensors, axis lengths, standard
    deviation, means of float intensities) equal scikit-image's to float64 rounding (about 1e-12
    relative to the size of the quantity) because the sums are added in another order; for float32
    intensities scikit-image accumulates ``intensity_mean`` and ``intensity_std`` in float32, so
    those agree to float32 rounding. Properties that need a whole object at once (``perimeter``,
    ``solidity``, ``eccentricity``...) are a ``ValueError``.
    """
    lab = as_dask(labels)
    dtype = np.dtype(lab.dtype)
    if not np.issubdtype(dtype, np.integer):
        raise ValueError(
            f"labels has dtype {dtype}; regionprops needs an integer label image "
            f"(label a mask first, e.g. with gpu_tiler.label or scipy.ndimage.label)"
        )
    if lab.ndim == 0:
        raise ValueError("labels is 0-d; give a label image with at least one axis")
    plain = None
    if intensity is not None:
        plain = check_image(as_dask(intensity), name="intensity")
        if plain.shape != lab.shape:
            raise ValueError(
                f"intensity has shape {plain.shape} but labels has shape {lab.shape}; give an intensity image "
                f"of the labels' shape (one channel; measure channels one call each)"
            )
        plain = plain.rechunk(lab.chunks)
    names = _normalize_properties(properties, plain is not None)
    plan = _Plan(names, lab.ndim, None if plain is None else plain.dtype)
    chosen = resolve_backend(*([lab] if plain is None else [lab, plain]), backend=backend)

    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in lab.chunks]
    label_tiles = lab.to_delayed().ravel()
    intensity_tiles = plain.to_delayed().ravel() if plain is not None else [None] * len(label_tiles)
    blocks = itertools.product(*(range(n) for n in lab.numblocks))
    partial = delayed(_tile_partial, pure=True)
    level = [
        partial(lt, it, tuple(int(starts[a][i]) for a, i in enumerate(block)), plan, chosen.name)
        for lt, it, block in zip(label_tiles, intensity_tiles, blocks)
    ]
    if not level:  # an image with a zero-length axis
        level = [delayed(_empty_partial)(NUMPY.xp, plan)]
    merge = delayed(_merge, pure=True)
    while len(level) > 1:
        level = [merge(plan, *level[i : i + _SPLIT_EVERY]) for i in range(0, len(level), _SPLIT_EVERY)]
    (merged,) = dask.compute(level[0])
    return _table(plan, merged)


__all__ = ["DEFAULT_PROPERTIES", "SUPPORTED_PROPERTIES", "regionprops"]
