"""The property table: every property :func:`~gpu_tiler.regionprops` computes, declared once.

In scikit-image's manner (its ``PROPS`` and ``COL_DTYPES``), each name maps to a :class:`Property`: whether
it needs an intensity image, its column dtype, the per-tile partials it is made from (see ``_partials``:
how each is computed on a tile and merged) and how its column is finished from the merged table
(``Regions``: every label's quantities at once, on the host, each derived one computed once).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from gpu_tiler.measure import _moments


class Regions:
    """The merged partial table of every label (host NumPy), with the quantities properties share."""

    def __init__(self, part, plan):
        self.part, self.plan, self.ndim = part, plan, plan.ndim
        self.count = part.get("count")

    @functools.cached_property
    def area(self):
        return self.count.astype(np.float64)

    @functools.cached_property
    def box(self):
        return np.prod((self.part["bmax"] - self.part["bmin"] + 1).astype(np.float64), axis=1)

    @functools.cached_property
    def local_sum(self):
        """Coordinate sums in the bounding box's frame (exact integers)."""
        return self.part["sum"] - self.count[:, None] * self.part["bmin"]

    def raw(self, name, exps):
        """Raw moments in the bounding box's frame, as scikit-image takes them."""
        return _moments.shift(self.part[name], exps, self.part["center"] - self.part["bmin"])

    @functools.cached_property
    def central(self):
        # from part["center"] to the centroid, in the box's frame as scikit-image
        d = (self.part["center"] - self.part["bmin"]) - self.local_sum / self.count[:, None]
        return _moments.shift(self.part["mu"], self.plan.exponents, d)

    @functools.cached_property
    def inertia_tensor(self):
        return _moments.inertia_tensor(self.central, self.plan.exponents, self.ndim)

    @functools.cached_property
    def eigvals(self):
        if not len(self.count):
            return np.zeros((0, self.ndim))
        return np.clip(np.linalg.eigvalsh(self.inertia_tensor), 0, None)[:, ::-1]

    def axis_length(self, major):
        ev = self.eigvals
        if self.ndim == 2:
            return 4 * np.sqrt(ev[:, 0] if major else ev[:, -1])
        sign = 1 if major else -1
        return np.sqrt(np.maximum(0, 10 * (sign * ev[:, 0] + ev[:, 1] - sign * ev[:, 2])))

    @functools.cached_property
    def weighted_centroid_local(self):
        # scikit-image: the first weighted raw moment in the bounding box's frame over the zeroth (sums of
        # integers for an integer intensity image: exact, then divided once)
        isum = self.part["isum"][:, None]
        return (self.part["wsum"] - isum * self.part["bmin"]) / isum

    @functools.cached_property
    def weighted_central(self):
        d = (self.part["center"] - self.part["bmin"]) - self.weighted_centroid_local
        return _moments.shift(self.part["wmu"], self.plan.weighted_exponents, d)

    def grid(self, mu):
        return _moments.as_grid(mu, self.ndim)


@dataclass(frozen=True)
class Property:
    """``partials``: what it is made from (``"mu_grid"``: shape moments up to order 3 on every axis);
    ``finish(regions)``: its column(s), one leading row per label; ``dtype``: the columns' dtype (as
    scikit-image's ``COL_DTYPES``); ``intensity``: needs an intensity image; ``ndims``: the image
    dimensions it is defined for (None: any)."""

    partials: tuple[str, ...]
    finish: Callable[[Regions], np.ndarray]
    dtype: type = np.float64
    intensity: bool = False
    ndims: tuple[int, ...] | None = None


_BOX = ("bmin", "bmax")
_CENTRAL = ("count", "sum", "bmin", "mu")
_WEIGHTED = ("bmin", "wsum")

PROPERTIES = {  # scikit-image's names; shape properties, then those of the intensity image
    "label": Property((), lambda r: r.part["label"], np.int64),
    "area": Property(("count",), lambda r: r.area),
    "num_pixels": Property(("count",), lambda r: r.count, np.int64),
    "area_bbox": Property(_BOX, lambda r: r.box),
    "bbox": Property(_BOX, lambda r: np.concatenate([r.part["bmin"], r.part["bmax"] + 1], axis=1), np.int64),
    "extent": Property(("count",) + _BOX, lambda r: r.area / r.box),
    # scikit-image's centroid is the mean of the coordinates and centroid_local the first raw moment (in
    # the box's frame) over the zeroth: both integer sums, exact, divided once
    "centroid": Property(("count", "sum"), lambda r: r.part["sum"] / r.count[:, None]),
    "centroid_local": Property(("count", "sum", "bmin"), lambda r: r.local_sum / r.count[:, None]),
    "equivalent_diameter_area": Property(
        ("count",), lambda r: _moments.scalar_power(2 * r.ndim * r.area / math.pi, 1 / r.ndim)),
    "inertia_tensor": Property(_CENTRAL, lambda r: r.inertia_tensor),
    "inertia_tensor_eigvals": Property(_CENTRAL, lambda r: r.eigvals),
    "axis_major_length": Property(_CENTRAL, lambda r: r.axis_length(major=True), ndims=(2, 3)),
    "axis_minor_length": Property(_CENTRAL, lambda r: r.axis_length(major=False), ndims=(2, 3)),
    "moments": Property(("bmin", "mu_grid"), lambda r: r.grid(r.raw("mu", r.plan.exponents))),
    "moments_central": Property(_CENTRAL + ("mu_grid",), lambda r: r.grid(r.central)),
    "moments_normalized": Property(
        _CENTRAL + ("mu_grid",), lambda r: r.grid(_moments.normalized(r.central, r.plan.exponents, r.ndim))),
    "intensity_mean": Property(("count", "isum"), lambda r: r.part["isum"] / r.count, intensity=True),
    "intensity_min": Property(("imin",), lambda r: r.part["imin"], intensity=True),
    "intensity_max": Property(("imax",), lambda r: r.part["imax"], intensity=True),
    "intensity_std": Property(
        ("count", "imu"), lambda r: np.sqrt(np.maximum(r.part["imu"][:, 2], 0) / r.count), intensity=True),
    "centroid_weighted": Property(
        _WEIGHTED, lambda r: r.weighted_centroid_local + r.part["bmin"], intensity=True),  # as scikit-image
    "centroid_weighted_local": Property(_WEIGHTED, lambda r: r.weighted_centroid_local, intensity=True),
    "moments_weighted": Property(
        ("bmin", "wmu"), lambda r: r.grid(r.raw("wmu", r.plan.weighted_exponents)), intensity=True),
    "moments_weighted_central": Property(_WEIGHTED + ("wmu",), lambda r: r.grid(r.weighted_central), intensity=True),
    "moments_weighted_normalized": Property(
        _WEIGHTED + ("wmu",),
        lambda r: r.grid(_moments.normalized(r.weighted_central, r.plan.weighted_exponents, r.ndim)), intensity=True),
}

#: the columns returned when ``properties`` is not given (and, with an intensity image, these too)
DEFAULT_PROPERTIES = ("label", "area", "centroid", "bbox")
DEFAULT_INTENSITY_PROPERTIES = ("intensity_mean", "intensity_min", "intensity_max")
#: every property :func:`~gpu_tiler.regionprops` computes, in scikit-image's names
SUPPORTED_PROPERTIES = tuple(PROPERTIES)

#: scikit-image properties that need a whole object at once (its pixels' layout, its outline or a
#: median), so they cannot be assembled from per-tile sums and extrema; and two that can, but whose
#: scikit-image definition jumps at ties that float rounding decides (orientation when the two
#: second moments are equal, eccentricity of a circle)
NOT_MERGEABLE = {
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


def normalize_properties(properties, has_intensity, ndim) -> tuple[str, ...]:
    """The requested names, checked against the table (each error names the property and the fix)."""
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
        if name in NOT_MERGEABLE:
            raise ValueError(
                f"property {name!r} cannot be computed across tiles: it {NOT_MERGEABLE[name]}. "
                f"Supported properties: {supported}"
            )
        if name not in PROPERTIES:
            raise ValueError(f"unknown property {name!r}; supported properties: {supported}")
        if PROPERTIES[name].intensity and not has_intensity:
            raise ValueError(f"property {name!r} needs an intensity image: pass intensity=")
        if name not in out:
            out.append(name)
    for name in out:
        ndims = PROPERTIES[name].ndims
        if ndims is not None and ndim not in ndims:
            shown = " and ".join(f"{n}-D" for n in ndims)
            raise ValueError(f"property {name!r} is defined for {shown} images only; the labels have {ndim} axes")
    return tuple(out)


def partials_of(names) -> set[str]:
    return {partial for name in names for partial in PROPERTIES[name].partials}


def table(names, part, plan):
    """The requested columns (a DataFrame) from the merged partial table, as scikit-image names them."""
    import pandas as pd

    regions = Regions(part, plan)
    columns = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name in names:
            spec = PROPERTIES[name]
            value = np.asarray(spec.finish(regions))
            if value.ndim == 1:
                columns[name] = value.astype(spec.dtype, copy=False)
                continue
            for position in np.ndindex(value.shape[1:]):
                column = value[(slice(None),) + position]
                columns[f"{name}-{'-'.join(map(str, position))}"] = column.astype(spec.dtype, copy=False)
    return pd.DataFrame(columns)
