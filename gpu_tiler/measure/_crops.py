"""Region crops: properties that need a whole region, computed by scikit-image's own code on its crop.

A region whose voxels all lie in one tile is measured in that tile's task, on the host copy of the tile; a
region present in several tiles is measured once, on the bounding-box crop of the labels (and intensities)
gathered from the images. Either way the measuring is scikit-image's ``RegionProperties`` given the region's
*global* slice and a :class:`Window` that answers a global slice with the crop's data: ``image``,
``image_intensity``, ``coords``, ``slice``, ``bbox`` and the centroids are computed by the same code from the
same numbers as on the whole image, so every column equals ``regionprops_table``'s bit for bit.

The scikit-image internals this module relies on (``RegionProperties``, ``PROPS``, ``COL_DTYPES``,
``_props_to_dict``, ``_normalize_spacing``) are imported here and nowhere else.
"""
from __future__ import annotations

import math

import numpy as np
from skimage.measure._regionprops import (
    COL_DTYPES,
    PROPS,
    RegionProperties,
    _props_to_dict,
)
from skimage.measure._regionprops_utils import _normalize_spacing

#: scikit-image's property names, and every old name it still accepts mapped to its current one
CANONICAL = {**{name: name for name in COL_DTYPES}, **PROPS}
#: bytes per crop voxel besides the labels and intensities: the region's mask, filled and convex masks,
#: its intensity crop and that crop as float64 (per channel), scikit-image's working copies
_WORK_PER_VOXEL = 4
_WORK_PER_CHANNEL_VOXEL = 8 + 8


def normalize_spacing(spacing, ndim):
    """scikit-image's spacing (one per axis, its dtype kept: integer spacings give integer coords_scaled), or
    None for unit spacing (the partials' frame)."""
    if spacing is None:
        return None
    normal = _normalize_spacing(spacing, ndim)
    return None if np.all(normal == 1) else normal


class Window:
    """A crop of an image that answers slices in the whole image's coordinates (only what
    ``RegionProperties`` asks of its images: ``shape``, ``ndim``, ``dtype`` and a slice)."""

    def __init__(self, data, origin, shape):
        self.data, self.origin = data, tuple(int(o) for o in origin)
        self.shape = tuple(shape) + tuple(data.shape[len(origin):])
        self.ndim, self.dtype = len(self.shape), data.dtype

    def __getitem__(self, key):
        return self.data[tuple(slice(s.start - o, s.stop - o) for s, o in zip(key, self.origin))]


class CropRequest:
    """What the crops measure: ``names`` (scikit-image's canonical names), the ``extra_properties``
    functions, ``spacing`` and ``offset`` as scikit-image takes them. Plain data: travels to workers."""

    def __init__(self, names, extra_properties, spacing, offset, shape, intensity_channels):
        self.names = tuple(names)
        self.extra = tuple(extra_properties or ())
        self.spacing, self.offset = spacing, offset
        self.shape = tuple(shape)
        self.channels = intensity_channels  #: None: no intensity; 0: one channel; C: C channels (last axis)

    def __bool__(self):
        return bool(self.names or self.extra)

    @property
    def wanted(self):
        return self.names + tuple(f.__name__ for f in self.extra)

    def region(self, label, box, labels, intensity, origin):
        """scikit-image's RegionProperties of one region, its crops given as ``labels``/``intensity`` at
        ``origin``; ``box``: its bounding box (global) as (start, stop) per axis."""
        window = tuple(slice(int(a), int(b)) for a, b in box)
        return RegionProperties(
            window, label, Window(labels, origin, self.shape),
            None if intensity is None else Window(intensity, origin, self.shape), True,
            extra_properties=self.extra or None, spacing=self.spacing, offset=self.offset,
        )

    def measure(self, label, box, labels, intensity, origin):
        """The region's values of every requested crop property, by name."""
        region = self.region(label, box, labels, intensity, origin)
        return {name: getattr(region, name) for name in self.wanted}

    def measure_pieces(self, items, labels, intensity, origin):
        """:meth:`measure` of regions that may be only pieces (a tile's part of a region), ``items`` as
        ``(label, box)``: property by property over the regions, as scikit-image's table is built. A piece's
        error is kept as a :class:`Failed`, raised only if the piece turns out to be the whole region."""
        regions = [self.region(label, box, labels, intensity, origin) for label, box in items]
        out = [{} for _ in regions]
        for name in self.wanted:
            for i, region in enumerate(regions):
                if isinstance(out[i], Failed):
                    continue
                try:
                    out[i][name] = getattr(region, name)
                except Exception as exc:  # noqa: BLE001 - scikit-image's or the user's function's error, raised later
                    out[i] = Failed(exc)
        return out

    def dummy(self, dtype, intensity_dtype):
        """The values of a one-voxel region in a 3**ndim image, as scikit-image measures when it has no
        region (to learn its columns): checks the request early too, with scikit-image's own errors."""
        ndim = len(self.shape)
        labels = np.zeros((3,) * ndim, dtype=dtype)
        labels[(1,) * ndim] = 1
        intensity = None
        if self.channels is not None:
            intensity = np.zeros((3,) * ndim + ((self.channels,) if self.channels else ()), dtype=intensity_dtype)
        saved, self.shape = self.shape, labels.shape
        try:
            return self.measure(1, [(0, 3)] * ndim, labels, intensity, (0,) * ndim)
        finally:
            self.shape = saved

    def bytes_for(self, box, label_itemsize, intensity_itemsize):
        """Host bytes measuring one region of bounding box ``box`` needs, at worst."""
        voxels = math.prod(int(b) - int(a) for a, b in box)
        channels = 0 if self.channels is None else max(1, self.channels)
        return voxels * (label_itemsize + _WORK_PER_VOXEL + channels * (intensity_itemsize + _WORK_PER_CHANNEL_VOXEL))


class Failed:
    """The error measuring a region raised (scikit-image's, or an extra property's)."""

    def __init__(self, error):
        self.error = error

    def raise_error(self):
        raise self.error


class _Measured:
    """A region's measured values, standing in for its RegionProperties in ``_props_to_dict``."""

    def __init__(self, values, request, has_intensity):
        self._values = values
        self._extra_properties = {f.__name__: f for f in request.extra}
        self._intensity_image = True if has_intensity else None
        self._ndim = len(request.shape)

    @property
    def image(self):
        return self._values.get("image", np.zeros((1,) * self._ndim, dtype=bool))

    def __getattr__(self, name):
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name):
        return self._values[name]


def columns(request, given, values, has_intensity, separator):
    """The columns of the crop properties (``given``: the names as the user wrote them, old ones too) from
    each region's values, built by scikit-image's own column code (names, dtypes, splitting)."""
    regions = [_Measured(v, request, has_intensity) for v in values]
    return _props_to_dict(regions, properties=list(given), separator=separator)
