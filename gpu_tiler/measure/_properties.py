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
from skimage.measure import moments_hu as skimage_moments_hu
from skimage.measure._regionprops_utils import EULER_COEFS2D_8

from gpu_tiler.measure import _moments
from gpu_tiler.measure._crops import CANONICAL
from gpu_tiler.measure._partials import BORDER_CODES


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

    @functools.cached_property
    def normalized(self):
        return self.grid(_moments.normalized(self.central, self.plan.exponents, self.ndim))

    @functools.cached_property
    def weighted_normalized(self):
        return self.grid(_moments.normalized(self.weighted_central, self.plan.weighted_exponents, self.ndim))


@dataclass(frozen=True)
class Property:
    """``partials``: what it is made from (``"mu_grid"``: shape moments up to order 3 on every axis);
    ``finish(regions)``: its column(s), one leading row per label; ``dtype``: the columns' dtype (as
    scikit-image's ``COL_DTYPES``); ``intensity``: needs an intensity image; ``ndims``: the image
    dimensions it is defined for (None: any); ``crop``: needs the whole region, so it is measured on the
    region's crop by scikit-image (``_crops``), never from partials (``crop_ndims``: in those dimensions only); ``spacing``: its value depends on the
    voxel spacing (then, with a spacing other than 1, it is measured on crops too)."""

    partials: tuple[str, ...] = ()
    finish: Callable[[Regions], np.ndarray] | None = None
    dtype: type = np.float64
    intensity: bool = False
    ndims: tuple[int, ...] | None = None
    crop: bool = False
    spacing: bool = True
    crop_ndims: tuple[int, ...] = ()


def _crop(intensity=False, ndims=None, dtype=np.float64):
    return Property(dtype=dtype, intensity=intensity, ndims=ndims, crop=True)


def _per_region(coefs, histograms):
    """``coefs @ h`` one region at a time, as scikit-image computes it (``h``: the region's counts as int64)."""
    return np.array([coefs @ h for h in histograms.astype(np.int64)], dtype=np.float64)


def _euler(r):
    """scikit-image's ``euler_number(image, connectivity=2)`` from each region's window counts (2-D; 3-D
    regions are measured on crops: 256 codes per label would make the tiles' tables too wide)."""
    return np.array([EULER_COEFS2D_8 @ h for h in r.part["windows"].astype(np.int64)], dtype=np.int64)


def _perimeter(r):
    """scikit-image's ``perimeter(image, 4)``: its histogram of codes (the weighted ones counted) @ weights."""
    out = np.empty(len(r.part["borders"]))
    histogram = np.zeros(50, dtype=np.int64)
    for i, counts in enumerate(r.part["borders"].astype(np.int64)):
        histogram[list(BORDER_CODES)] = counts
        out[i] = histogram @ _PERIMETER_WEIGHTS
    return out


_PERIMETER_WEIGHTS = np.zeros(50, dtype=np.float64)  # scikit-image's perimeter(neighborhood=4)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
_PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + math.sqrt(2)) / 2
_CROFTON_4 = [  # scikit-image's perimeter_crofton(directions=4), the same expressions
    0,
    np.pi / 4 * (1 + 1 / (np.sqrt(2))),
    np.pi / (4 * np.sqrt(2)),
    np.pi / (2 * np.sqrt(2)),
    0,
    np.pi / 4 * (1 + 1 / (np.sqrt(2))),
    0,
    np.pi / (4 * np.sqrt(2)),
    np.pi / 4,
    np.pi / 2,
    np.pi / (4 * np.sqrt(2)),
    np.pi / (4 * np.sqrt(2)),
    np.pi / 4,
    np.pi / 2,
    0,
    0,
]


def _hu(moments):
    """scikit-image's Hu moments of each region's normalized moments (one region at a time, as it does)."""
    if not len(moments):
        return np.zeros((0, 7))
    return np.stack([skimage_moments_hu(nu) for nu in moments])


_BOX = ("bmin", "bmax")
_CENTRAL = ("count", "sum", "bmin", "mu")
_WEIGHTED = ("bmin", "wsum")

PROPERTIES = {  # scikit-image's names; shape properties, then those of the intensity image
    "label": Property((), lambda r: r.part["label"], np.int64, spacing=False),
    "area": Property(("count",), lambda r: r.area),
    "num_pixels": Property(("count",), lambda r: r.count, np.int64, spacing=False),
    "area_bbox": Property(_BOX, lambda r: r.box),
    "bbox": Property(_BOX, lambda r: np.concatenate([r.part["bmin"], r.part["bmax"] + 1], axis=1), np.int64,
                     spacing=False),
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
    "moments_normalized": Property(_CENTRAL + ("mu_grid",), lambda r: r.normalized),
    "moments_hu": Property(_CENTRAL + ("mu_grid",), lambda r: _hu(r.normalized), ndims=(2,)),
    "intensity_mean": Property(("count", "isum"), lambda r: r.part["isum"] / r.count, intensity=True, spacing=False),
    "intensity_min": Property(("imin",), lambda r: r.part["imin"], intensity=True, spacing=False),
    "intensity_max": Property(("imax",), lambda r: r.part["imax"], intensity=True, spacing=False),
    "intensity_std": Property(
        ("count", "imu"), lambda r: np.sqrt(np.maximum(r.part["imu"][:, 2], 0) / r.count), intensity=True,
        spacing=False),
    "centroid_weighted": Property(
        _WEIGHTED, lambda r: r.weighted_centroid_local + r.part["bmin"], intensity=True),  # as scikit-image
    "centroid_weighted_local": Property(_WEIGHTED, lambda r: r.weighted_centroid_local, intensity=True),
    "moments_weighted": Property(
        ("bmin", "wmu"), lambda r: r.grid(r.raw("wmu", r.plan.weighted_exponents)), intensity=True),
    "moments_weighted_central": Property(_WEIGHTED + ("wmu",), lambda r: r.grid(r.weighted_central), intensity=True),
    "moments_weighted_normalized": Property(_WEIGHTED + ("wmu",), lambda r: r.weighted_normalized, intensity=True),
    "moments_weighted_hu": Property(
        _WEIGHTED + ("wmu",), lambda r: _hu(r.weighted_normalized), intensity=True, ndims=(2,)),
    # measured on each region's crop by scikit-image (exact: its code on the same voxels): what needs the
    # region whole (its outline, hull, holes, topology, voxels, median), and eccentricity and orientation,
    # whose definitions jump at ties (l1 == l2, mu20 == mu02) that the rounding of merged sums would decide
    "eccentricity": _crop(ndims=(2,)),
    "orientation": _crop(ndims=(2,)),
    # local configurations counted per label with a halo (scikit-image's codes and coefficients: exact)
    "perimeter": Property(("borders",), _perimeter, ndims=(2,)),
    "perimeter_crofton": Property(("windows",), lambda r: _per_region(_CROFTON_4, r.part["windows"]), ndims=(2,)),
    "euler_number": Property(("windows",), _euler, np.int64, ndims=(2, 3), spacing=False, crop_ndims=(3,)),
    "solidity": _crop(),
    "area_convex": _crop(),
    "image_convex": _crop(dtype=object),
    "feret_diameter_max": _crop(ndims=(2, 3)),
    "area_filled": _crop(),
    "image_filled": _crop(dtype=object),
    "image": _crop(dtype=object),
    "coords": _crop(dtype=object),
    "coords_scaled": _crop(dtype=object),
    "slice": _crop(dtype=object),
    "image_intensity": _crop(intensity=True, dtype=object),
    "intensity_median": _crop(intensity=True),
}

#: the columns returned when ``properties`` is not given, with or without an intensity image (scikit-image's)
DEFAULT_PROPERTIES = ("label", "bbox")
#: every property :func:`~gpu_tiler.regionprops` computes, in scikit-image's names (its old names work too)
SUPPORTED_PROPERTIES = tuple(PROPERTIES)


@dataclass(frozen=True)
class Requested:
    """One requested property: ``given`` as the user named it (its columns' name), ``name`` scikit-image's
    current name, ``crop``: measured on the region's crop rather than from partials."""

    given: str
    name: str
    crop: bool


def normalize_properties(properties, has_intensity, ndim, *, spacing=None, multichannel=False):
    """The requested properties, checked against the table (each error names the property and the fix),
    each with the way it is measured: on crops when the table says so, when a ``spacing`` other than 1
    changes it, or for intensity properties of a multichannel image; else from merged partials."""
    if properties is None:
        properties = DEFAULT_PROPERTIES
    if isinstance(properties, str):
        properties = (properties,)
    try:
        names = list(properties)
    except TypeError:
        raise ValueError(f"properties={properties!r}: give a list of property names such as ('label', 'area')") from None
    supported = ", ".join(SUPPORTED_PROPERTIES)
    out = []
    for given in names:
        if not isinstance(given, str):
            raise ValueError(f"properties: {given!r} is not a property name (a string); supported: {supported}")
        name = CANONICAL.get(given)
        if name not in PROPERTIES:
            raise ValueError(f"unknown property {given!r}; supported properties: {supported}")
        spec = PROPERTIES[name]
        if spec.intensity and not has_intensity:
            raise ValueError(f"property {given!r} needs an intensity image: pass intensity=")
        if spec.ndims is not None and ndim not in spec.ndims:
            shown = " and ".join(f"{n}-D" for n in spec.ndims)
            raise ValueError(f"property {given!r} is defined for {shown} images only; the labels have {ndim} axes")
        crop = (spec.crop or ndim in spec.crop_ndims or (spacing is not None and spec.spacing)
                or (multichannel and spec.intensity))
        out.append(Requested(given, name, crop))
    return tuple(out)


def partials_of(requested) -> set[str]:
    """The partials the requested properties measured from partials need (names or ``Requested``)."""
    wanted = set()
    for item in requested:
        if isinstance(item, str):
            item = Requested(item, item, PROPERTIES[item].crop)
        if not item.crop:
            wanted.update(PROPERTIES[item.name].partials)
    return wanted


def partial_columns(requested, part, plan, separator="-"):
    """The columns of the properties measured from partials, by requested property, as scikit-image names them."""
    regions = Regions(part, plan)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for item in requested:
            if item.crop:
                continue
            spec = PROPERTIES[item.name]
            value = np.asarray(spec.finish(regions))
            if value.ndim == 1:
                out[item.given] = {item.given: value.astype(spec.dtype, copy=False)}
                continue
            columns = out[item.given] = {}
            for position in np.ndindex(value.shape[1:]):
                column = value[(slice(None),) + position]
                columns[separator.join(map(str, (item.given,) + position))] = column.astype(spec.dtype, copy=False)
    return out


def table(requested, part, plan):
    """The requested columns (a DataFrame) from the merged partial table, as scikit-image names them
    (properties measured from partials only)."""
    import pandas as pd

    requested = [Requested(r, r, False) if isinstance(r, str) else r for r in requested]
    columns = partial_columns(requested, part, plan)
    return pd.DataFrame({name: value for item in requested for name, value in columns[item.given].items()})
