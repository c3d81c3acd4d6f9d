"""OME-Zarr (NGFF): reading multiscale images with their axes and pixel sizes, writing pyramids and
label images that napari, Fiji/MoBIE and the OME tools open.

NGFF 0.4 lives on zarr v2 (attributes ``multiscales``), 0.5 on zarr v3 (attributes ``ome``). The axes
and pixel sizes of an opened image travel with the lazy array (see :func:`metadata_of`); every
gpu_tiler operation passes them on to its result, and :func:`gpu_tiler.save` writes them back.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np

from ._backends import namespace_of
from ._registry import metadata_of, record

#: length units NGFF names, in metres, for converting physical sigmas
LENGTH_UNITS = {
    "angstrom": 1e-10, "nanometer": 1e-9, "micrometer": 1e-6, "millimeter": 1e-3, "centimeter": 1e-2,
    "meter": 1.0,
}
UNIT_ALIASES = {"nm": "nanometer", "um": "micrometer", "µm": "micrometer", "micron": "micrometer",
                "mm": "millimeter", "cm": "centimeter", "m": "meter", "A": "angstrom"}
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


@dataclass(frozen=True)
class ImageMetadata:
    """Axes and physical pixel sizes of an image (of its full-resolution level)."""

    axes: tuple[str, ...]
    types: tuple[str | None, ...]
    scale: tuple[float, ...]
    units: tuple[str | None, ...]
    translation: tuple[float, ...]
    name: str | None = None
    levels: int = 1
    level: int = 0

    @property
    def spatial(self) -> tuple[int, ...]:
        """Indices of the space axes (all axes when none is typed)."""
        found = tuple(i for i, t in enumerate(self.types) if t == "space")
        return found or tuple(range(len(self.axes)))

    def describe(self) -> str:
        sizes = ", ".join(
            f"{a}={s:g}{(' ' + u) if u else ''}" for a, s, u in zip(self.axes, self.scale, self.units)
        )
        return f"axes {''.join(self.axes)}, pixel size {sizes}, {self.levels} level(s), level {self.level} open"

    @classmethod
    def default(cls, ndim: int, axes: str | None = None) -> ImageMetadata:
        names = tuple(axes) if axes else tuple("tczyx"[-ndim:]) if ndim <= 5 else tuple(f"d{i}" for i in range(ndim))
        if len(names) != ndim:
            raise ValueError(f"axes={axes!r} names {len(names)} axes; the image has {ndim}")
        types = tuple(_AXIS_TYPES.get(a, "space") for a in names)
        return cls(names, types, (1.0,) * ndim, (None,) * ndim, (0.0,) * ndim)


def attach_metadata(array, metadata: ImageMetadata | None):
    """Let ``metadata`` travel with ``array`` (when it names one axis per dimension); return ``array``."""
    if metadata is not None and metadata.axes and len(metadata.axes) == array.ndim:
        record(array, metadata=metadata)
    return array


def normalize_unit(unit: str) -> str:
    name = UNIT_ALIASES.get(unit, unit)
    if name not in LENGTH_UNITS:
        raise ValueError(f"units={unit!r} is not a length unit; use one of {', '.join(sorted(UNIT_ALIASES))} "
                         f"or {', '.join(sorted(LENGTH_UNITS))}")
    return name


def physical_to_pixels(values, metadata: ImageMetadata | None, units: str, what: str) -> tuple[float, ...]:
    """Per-axis physical lengths (in ``units``) converted to pixels with the image's pixel sizes."""
    if metadata is None:
        raise ValueError(f"{what} in units={units!r} needs an image with pixel sizes (an OME-Zarr, OME-TIFF or ImageJ "
                         f"TIFF image opened with gpu_tiler.open); this one has none: give {what} in pixels")
    unit = normalize_unit(units)
    out = []
    for value, size, pixel_unit in zip(values, metadata.scale, metadata.units):
        if value == 0:
            out.append(0.0)
            continue
        if pixel_unit is None:
            raise ValueError(f"{what} in {units!r}: the image's pixel sizes have no unit; give {what} in pixels")
        out.append(value * LENGTH_UNITS[unit] / (size * LENGTH_UNITS[normalize_unit(pixel_unit)]))
    return tuple(out)


# ---- reading ------------------------------------------------------------------------------------


def multiscales_of(attrs) -> tuple[dict, str] | None:
    """The first multiscales entry of a group's attributes and its NGFF version, or None."""
    if "ome" in attrs and "multiscales" in attrs["ome"]:
        return attrs["ome"]["multiscales"][0], attrs["ome"].get("version", "0.5")
    if "multiscales" in attrs:
        entry = attrs["multiscales"][0]
        return entry, entry.get("version", "0.4")
    return None


def _transform(transforms, kind, ndim, default):
    for t in transforms or []:
        if t.get("type") == kind:
            return tuple(float(v) for v in t[kind])
    return (default,) * ndim


def read_multiscale(group, where: str, level: int | str | None):
    """(zarr array of the chosen level, its path, ImageMetadata) for an NGFF multiscale group."""
    entry, _version = multiscales_of(dict(group.attrs))
    datasets = entry["datasets"]
    paths = [d["path"] for d in datasets]
    if level is None:
        index = 0
    elif isinstance(level, str):
        if level not in paths:
            raise ValueError(f"level={level!r} is not one of {where}'s levels {paths}")
        index = paths.index(level)
    else:
        if not 0 <= level < len(paths):
            raise ValueError(f"level={level!r}: {where} has levels 0..{len(paths) - 1} ({paths})")
        index = level
    array = group[paths[index]]
    ndim = array.ndim
    raw_axes = entry.get("axes") or [{"name": a} for a in "tczyx"[-ndim:]]
    axes = tuple(a["name"] if isinstance(a, dict) else str(a) for a in raw_axes)
    types = tuple((a.get("type") if isinstance(a, dict) else None) or _AXIS_TYPES.get(n) for a, n in zip(raw_axes, axes))
    units = tuple(a.get("unit") if isinstance(a, dict) else None for a in raw_axes)
    transforms = datasets[index].get("coordinateTransformations")
    scale = _transform(transforms, "scale", ndim, 1.0)
    translation = _transform(transforms, "translation", ndim, 0.0)
    outer = entry.get("coordinateTransformations")
    if outer:
        scale = tuple(s * o for s, o in zip(scale, _transform(outer, "scale", ndim, 1.0)))
        translation = tuple(t + o for t, o in zip(translation, _transform(outer, "translation", ndim, 0.0)))
    metadata = ImageMetadata(axes, types, scale, units, translation, entry.get("name"), len(paths), index)
    return array, f"{where}/{paths[index]}", metadata


# ---- writing ------------------------------------------------------------------------------------


#: tifffile's axis letters -> NGFF axis names (S: samples of an RGB pixel, a channel axis)
_TIFF_AXES = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}
#: time units in OME-XML / ImageJ -> NGFF names
_TIME_UNITS = {"s": "second", "sec": "second", "ms": "millisecond", "µs": "microsecond", "us": "microsecond",
               "ns": "nanosecond", "min": "minute", "h": "hour"}


def _length_unit(unit) -> str | None:
    """The NGFF name of a length unit written in a TIFF (None for unknown ones such as 'pixel')."""
    if not isinstance(unit, str):
        return None
    unit = unit.strip().replace("\\u00B5", "µ").replace("\u03bc", "µ")  # an escaped or Greek mu
    name = UNIT_ALIASES.get(unit, UNIT_ALIASES.get(unit.lower(), unit.lower()))
    return name if name in LENGTH_UNITS else None


def _tiff_axis_names(letters: str) -> tuple[str, ...]:
    names = []
    for letter in letters:
        name = _TIFF_AXES.get(letter, letter.lower())
        names.append(name if name not in names else letter.lower())  # C and S both present: keep "s"
    return tuple(names)


def _ome_sizes(ome_xml: str) -> dict:
    """axis name -> (size, unit) from an OME-XML document's first image."""
    import tifffile

    image = tifffile.xml2dict(ome_xml).get("OME", {}).get("Image", {})
    pixels = (image[0] if isinstance(image, list) else image).get("Pixels", {})
    sizes = {}
    for letter in "XYZ":
        if f"PhysicalSize{letter}" in pixels:
            unit = _length_unit(pixels.get(f"PhysicalSize{letter}Unit", "µm"))
            sizes[letter.lower()] = (float(pixels[f"PhysicalSize{letter}"]), unit)
    if "TimeIncrement" in pixels:
        sizes["t"] = (float(pixels["TimeIncrement"]), _TIME_UNITS.get(pixels.get("TimeIncrementUnit", "s")))
    return sizes


def _imagej_sizes(tif) -> dict:
    """axis name -> (size, unit) from an ImageJ TIFF: x/y from the resolution tags, z spacing, frame interval."""
    info = tif.imagej_metadata or {}
    unit = _length_unit(info.get("unit"))
    sizes = {}
    tags = tif.pages[0].tags
    for letter, tag in (("x", "XResolution"), ("y", "YResolution")):
        if unit is not None and tag in tags:  # without a length unit (ImageJ's "pixel"), dpi say nothing
            numerator, denominator = tags[tag].value
            if numerator and denominator:
                sizes[letter] = (denominator / numerator, unit)
    if unit is not None and info.get("spacing"):
        sizes["z"] = (float(info["spacing"]), unit)
    if info.get("finterval"):
        sizes["t"] = (float(info["finterval"]), "second")
    return sizes


def tiff_metadata(path) -> ImageMetadata | None:
    """Axes and pixel sizes of an OME-TIFF or ImageJ TIFF's first series (None for a plain TIFF).

    Metadata that cannot be read (a malformed OME-XML value, say) is a warning, not an error: the
    image still opens, without pixel sizes.
    """
    try:
        return _tiff_metadata(path)
    except Exception as exc:  # noqa: BLE001 - malformed XML is a SyntaxError, odd values anything else
        warnings.warn(f"{path}: could not read axes and pixel sizes from the TIFF metadata ({exc}); opening "
                      "it without them", stacklevel=3)
        return None


def ngff_order(metadata: ImageMetadata) -> tuple[int, ...] | None:
    """The axis order OME-Zarr requires (time, then channel or custom, then space), or None when
    ``metadata``'s axes are in it already."""
    rank = {"time": 0, "space": 2}
    order = tuple(sorted(range(len(metadata.axes)), key=lambda i: (rank.get(metadata.types[i], 1), i)))
    return None if order == tuple(range(len(order))) else order


def permuted(metadata: ImageMetadata, order) -> ImageMetadata:
    """``metadata`` of the array transposed by ``order``."""
    pick = lambda values: tuple(values[i] for i in order)  # noqa: E731
    return replace(metadata, axes=pick(metadata.axes), types=pick(metadata.types), scale=pick(metadata.scale),
                   units=pick(metadata.units), translation=pick(metadata.translation))


def _tiff_metadata(path) -> ImageMetadata | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not (tif.is_ome or tif.is_imagej):
            return None
        series = tif.series[0]
        sizes = _ome_sizes(tif.ome_metadata) if tif.is_ome else _imagej_sizes(tif)
        axes = _tiff_axis_names(series.axes)
    ndim = len(axes)
    found = [sizes.get(a) for a in axes]
    return ImageMetadata(
        axes, tuple(_AXIS_TYPES.get(a) for a in axes),
        tuple(f[0] if f else 1.0 for f in found), tuple(f[1] if f else None for f in found), (0.0,) * ndim,
        name=getattr(series, "name", None) or None,
    )


def pyramid_factors(shape, metadata: ImageMetadata, levels: int | None, smallest: int = 256):
    """Per level, which axes halve: the space axes longer than 1, until the largest is below ``smallest``."""
    spatial = [a for a in metadata.spatial if shape[a] > 1]
    if levels is None:
        largest = max((shape[a] for a in spatial), default=1)
        levels = 1
        while largest > smallest and largest // 2 >= 1:
            largest //= 2
            levels += 1
    if levels < 1:
        raise ValueError(f"pyramid levels={levels!r} must be >= 1")
    return tuple(tuple(2 if a in spatial else 1 for a in range(len(shape))) for _ in range(levels - 1))


def downsample_mean(block, factors):
    """Mean over ``factors`` blocks; integers are rounded back to their dtype."""
    xp = namespace_of(block)
    trimmed = block[tuple(slice(0, (n // f) * f) for n, f in zip(block.shape, factors))]
    shape = []
    for n, f in zip(trimmed.shape, factors):
        shape += [n // f, f]
    means = trimmed.reshape(shape).astype(np.float64).mean(axis=tuple(range(1, 2 * block.ndim, 2)))
    if np.issubdtype(block.dtype, np.integer):
        means = xp.rint(means)
    return means.astype(block.dtype)


def downsample_labels(block, factors):
    """Every ``factor``-th voxel (the first of each block): keeps label values, invents none."""
    return block[tuple(slice(0, (n // f) * f, f) for n, f in zip(block.shape, factors))]


def next_level(level, factors, kind: str):
    """The next pyramid level of a (stored, lazy) level, computed chunk by chunk."""
    chunks = tuple(tuple(max(f, (c // f) * f) for c in axis) for axis, f in zip(level.chunks, factors))
    even = level.rechunk(tuple(max(c) for c in chunks))
    func = downsample_labels if kind == "labels" else downsample_mean
    out_chunks = tuple(tuple(c // f for c in axis) for axis, f in zip(even.chunks, factors))
    return even.map_blocks(func, factors, chunks=out_chunks, dtype=level.dtype, meta=level._meta)


def multiscales_attrs(metadata: ImageMetadata, factors, kind: str, version: str, name: str):
    """NGFF multiscales attributes for a pyramid with the given per-level factors."""
    axes = []
    for a, t, u in zip(metadata.axes, metadata.types, metadata.units):
        entry = {"name": a}
        if t:
            entry["type"] = t
        if u:
            entry["unit"] = u
        axes.append(entry)
    datasets = []
    total = [1] * len(metadata.axes)
    for level in range(len(factors) + 1):
        if level:
            total = [t * f for t, f in zip(total, factors[level - 1])]
        scale = [s * t for s, t in zip(metadata.scale, total)]
        shift = [(t - 1) / 2 * s if kind == "image" else 0.0 for t, s in zip(total, metadata.scale)]
        translation = [o + d for o, d in zip(metadata.translation, shift)]
        transforms = [{"type": "scale", "scale": scale}]
        if any(translation):
            transforms.append({"type": "translation", "translation": translation})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    entry = {"axes": axes, "datasets": datasets, "name": name,
             "type": "mean" if kind == "image" else "subsample (every 2nd voxel, labels kept)"}
    if version == "0.4":
        entry["version"] = "0.4"
        return {"multiscales": [entry]}
    return {"ome": {"version": "0.5", "multiscales": [entry]}}


def with_metadata(metadata: ImageMetadata | None, ndim: int, axes=None, scale=None, units=None) -> ImageMetadata:
    """The metadata to write: what travels with the array, overridden by what the caller gives."""
    meta = metadata if metadata is not None and len(metadata.axes) == ndim else ImageMetadata.default(ndim, axes)
    if axes is not None and tuple(axes) != meta.axes:
        fresh = ImageMetadata.default(ndim, axes)
        meta = replace(meta, axes=fresh.axes, types=fresh.types)
    if scale is not None:
        scale = tuple(float(s) for s in (scale if not np.isscalar(scale) else [scale] * ndim))
        if len(scale) != ndim or any(not math.isfinite(s) or s <= 0 for s in scale):
            raise ValueError(f"scale={scale!r} must give a pixel size > 0 for each of the {ndim} axes")
        meta = replace(meta, scale=scale)
    if units is not None:
        unit = normalize_unit(units)
        meta = replace(meta, units=tuple(unit if t == "space" else u for t, u in zip(meta.types, meta.units)))
    return meta
