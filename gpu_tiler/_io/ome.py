"""OME-Zarr (NGFF): reading multiscale images with their axes and pixel sizes, writing pyramids and
label images that napari, Fiji/MoBIE and the OME tools open.

NGFF 0.4 lives on zarr v2 (attributes ``multiscales``), 0.5 on zarr v3 (attributes ``ome``). The axes
and pixel sizes of an opened image travel with the lazy array (see :func:`metadata_of`); every
gpu_tiler operation passes them on to its result, and :func:`gpu_tiler.save` writes them back.
"""
from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from gpu_tiler._backends import namespace_of
from gpu_tiler._registry import record

#: length units NGFF names, in metres, for converting physical sigmas
LENGTH_UNITS = {
    "angstrom": 1e-10, "nanometer": 1e-9, "micrometer": 1e-6, "millimeter": 1e-3, "centimeter": 1e-2,
    "meter": 1.0,
}
UNIT_ALIASES = {"nm": "nanometer", "um": "micrometer", "µm": "micrometer", "micron": "micrometer",
                "mm": "millimeter", "cm": "centimeter", "m": "meter", "A": "angstrom"}
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
#: the time units NGFF names
TIME_UNITS = frozenset(
    f"{prefix}second" for prefix in ("atto", "centi", "deci", "exa", "femto", "giga", "hecto", "kilo", "mega", "micro",
                                     "milli", "nano", "peta", "pico", "", "tera", "yocto", "yotta", "zepto", "zetta")
) | {"minute", "hour", "day"}
TIME_ALIASES = {"s": "second", "sec": "second", "ms": "millisecond", "us": "microsecond", "µs": "microsecond",
                "ns": "nanosecond", "min": "minute", "h": "hour", "d": "day"}


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
    #: the NGFF ``omero`` block (channel names, colours, contrast windows) as JSON text, and the dtype it was read with
    omero_json: str | None = None
    omero_dtype: str | None = None

    @property
    def omero(self) -> dict | None:
        """The ``omero`` block (a new dict each time), or None."""
        return None if self.omero_json is None else json.loads(self.omero_json)

    def with_omero(self, omero: dict | None, dtype=None) -> ImageMetadata:
        """This metadata with ``omero`` (a JSON-able dict, or None) read from an image of ``dtype``."""
        if omero is None:
            return replace(self, omero_json=None, omero_dtype=None)
        return replace(self, omero_json=json.dumps(omero, sort_keys=True),
                       omero_dtype=None if dtype is None else str(np.dtype(dtype)))

    def sliced(self, index) -> ImageMetadata:
        """The metadata of the array ``x[...]`` selects: ``index`` gives, per axis, an int (the axis is
        dropped) or ``(start, step, length)`` of a slice with a positive step. Pixel sizes grow by the
        step; the translation moves to the first kept voxel; a channel axis keeps its scale and
        translation, and ``omero`` the selected channels."""
        keep = [i for i, v in enumerate(index) if not isinstance(v, int)]
        physical = [i for i in keep if self.types[i] != "channel"]  # a channel axis has no positions to move
        scale = tuple(self.scale[i] * index[i][1] if i in physical else self.scale[i] for i in keep)
        translation = tuple(self.translation[i] + index[i][0] * self.scale[i] if i in physical else self.translation[i]
                            for i in keep)
        meta = replace(self, axes=tuple(self.axes[i] for i in keep), types=tuple(self.types[i] for i in keep),
                       units=tuple(self.units[i] for i in keep), scale=scale, translation=translation)
        omero = self.omero
        if omero is not None and "channel" in self.types:
            c = self.types.index("channel")
            channels = list(omero.get("channels", []))
            if isinstance(index[c], int):
                picked = channels[index[c]:index[c] + 1]
            else:
                start, step, length = index[c]
                picked = channels[start:start + step * length:step]
            omero["channels"] = picked
            meta = replace(meta, omero_json=json.dumps(omero, sort_keys=True))
        return meta

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


def _normalized(unit, aliases, names, what: str, examples: str) -> str:
    """The NGFF name of ``unit`` (itself or an alias), or a ValueError listing the accepted ones."""
    name = aliases.get(unit, unit)
    if name not in names:
        raise ValueError(f"{unit!r} is not a {what}; use one of {', '.join(sorted(aliases))} or {examples}")
    return name


def normalize_unit(unit: str) -> str:
    return _normalized(unit, UNIT_ALIASES, LENGTH_UNITS, "length unit", ", ".join(sorted(LENGTH_UNITS)))


def normalize_time_unit(unit: str) -> str:
    return _normalized(unit, TIME_ALIASES, TIME_UNITS, "time unit", "an NGFF name such as 'second' or 'minute'")


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


def omero_of(attrs) -> dict | None:
    """The ``omero`` block of an image group's attributes (inside ``ome`` for NGFF 0.5), or None."""
    omero = attrs["ome"].get("omero") if isinstance(attrs.get("ome"), dict) else None
    omero = omero if omero is not None else attrs.get("omero")
    return omero if isinstance(omero, dict) else None


def compose_transforms(transform_lists, ndim: int, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(scale, translation) of NGFF coordinate transformations applied in order, as the spec composes
    them: each list (a dataset's, then the multiscale's) in sequence, a scale multiplying the
    translation found so far. A voxel index ``i`` lands at ``scale * i + translation``."""
    scale, translation = [1.0] * ndim, [0.0] * ndim
    for transforms in transform_lists:
        for t in transforms or []:
            kind = t.get("type")
            if kind == "identity":
                continue
            if kind not in ("scale", "translation"):
                raise ValueError(f"{where}: coordinate transformation of type {kind!r} is not supported (NGFF 0.4/0.5 "
                                 f"images use 'scale' and 'translation')")
            if kind not in t:
                raise ValueError(f"{where}: a {kind} transformation stored as a path ({t.get('path')!r}) is not "
                                 f"supported; store its values in the metadata")
            values = [float(v) for v in t[kind]]
            if len(values) != ndim:
                raise ValueError(f"{where}: a {kind} transformation has {len(values)} values for {ndim} axes")
            if kind == "scale":
                scale = [s * v for s, v in zip(scale, values)]
                translation = [o * v for o, v in zip(translation, values)]
            else:
                translation = [o + v for o, v in zip(translation, values)]
    return tuple(scale), tuple(translation)


def level_transforms(entry, ndim: int, where: str) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """(scale, translation) of every dataset of a multiscales entry, the entry's own transformations applied."""
    outer = entry.get("coordinateTransformations")
    return [compose_transforms([d.get("coordinateTransformations"), outer], ndim, f"{where}/{d['path']}")
            for d in entry["datasets"]]


def read_multiscale(group, where: str, level: int | str | None):
    """(zarr array of the chosen level, its path, ImageMetadata) for an NGFF multiscale group."""
    attrs = dict(group.attrs)
    entry, _version = multiscales_of(attrs)
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
    scale, translation = level_transforms(entry, ndim, where)[index]
    metadata = ImageMetadata(axes, types, scale, units, translation, entry.get("name"), len(paths), index)
    return array, f"{where}/{paths[index]}", metadata.with_omero(omero_of(attrs), array.dtype)


# ---- writing ------------------------------------------------------------------------------------


#: tifffile's axis letters -> NGFF axis names (S: samples of an RGB pixel, a channel axis)
_TIFF_AXES = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}


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
        sizes["t"] = (float(pixels["TimeIncrement"]), TIME_ALIASES.get(pixels.get("TimeIncrementUnit", "s")))
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
    """Per level, which axes halve: the space axes still 2 voxels or longer at that level (a thin axis
    stops at 1, never 0), until the largest is below ``smallest``."""
    if levels is not None and levels < 1:
        raise ValueError(f"pyramid levels={levels!r} must be >= 1")
    spatial = set(metadata.spatial)
    current = list(shape)
    factors = []
    while True:
        if levels is not None and len(factors) + 1 >= levels:
            break
        largest = max((current[a] for a in spatial), default=1)
        if levels is None and largest <= smallest:
            break
        step = tuple(2 if a in spatial and current[a] >= 2 else 1 for a in range(len(shape)))
        if all(f == 1 for f in step):
            if levels is not None:
                raise ValueError(f"pyramid levels={levels}: the image {tuple(shape)} can be halved only "
                                 f"{len(factors)} time(s); ask for at most {len(factors) + 1} levels")
            break
        factors.append(step)
        current = [n // f for n, f in zip(current, step)]
    return tuple(factors)


def image_level_transforms(metadata: ImageMetadata, factors, kind: str):
    """(scale, translation) per pyramid level: pixel sizes grow by the factors; a mean level's voxel
    sits at the centre of the voxels it averages, a subsampled (labels) level's at its first voxel."""
    out = []
    total = [1] * len(metadata.axes)
    for level in range(len(factors) + 1):
        if level:
            total = [t * f for t, f in zip(total, factors[level - 1])]
        scale = tuple(s * t for s, t in zip(metadata.scale, total))
        shift = [(t - 1) / 2 * s if kind == "image" else 0.0 for t, s in zip(total, metadata.scale)]
        out.append((scale, tuple(o + d for o, d in zip(metadata.translation, shift))))
    return out


def multiscales_attrs(metadata: ImageMetadata, transforms, kind: str, version: str, name: str):
    """NGFF multiscales attributes for a pyramid with the given (scale, translation) per level."""
    axes = []
    for a, t, u in zip(metadata.axes, metadata.types, metadata.units):
        entry = {"name": a}
        if t:
            entry["type"] = t
        if u:
            entry["unit"] = u
        axes.append(entry)
    datasets = []
    for level, (scale, translation) in enumerate(transforms):
        steps = [{"type": "scale", "scale": list(scale)}]
        if any(translation):
            steps.append({"type": "translation", "translation": list(translation)})
        datasets.append({"path": str(level), "coordinateTransformations": steps})
    entry = {"axes": axes, "datasets": datasets, "name": name,
             "type": "mean" if kind == "image" else "subsample (every 2nd voxel, labels kept)"}
    if version == "0.4":
        entry["version"] = "0.4"
        return {"multiscales": [entry]}
    return {"ome": {"version": "0.5", "multiscales": [entry]}}


def check_ome_shape(metadata: ImageMetadata, shape) -> None:
    """NGFF images have 2 to 5 axes, 2 or 3 of them space axes, at most one time and one channel axis."""
    ndim = len(shape)
    if not 2 <= ndim <= 5:
        raise ValueError(f"OME-Zarr (NGFF) images have 2 to 5 axes; this one has {ndim} {tuple(shape)}: "
                         + ("add an axis (x[None]) or save it as format='zarr'" if ndim < 2 else
                            "split or merge axes, or save it as format='zarr'"))
    space = sum(t == "space" for t in metadata.types)
    if not 2 <= space <= 3 or metadata.types.count("time") > 1 or metadata.types.count("channel") > 1:
        raise ValueError(f"OME-Zarr (NGFF) needs 2 or 3 space axes and at most one time and one channel axis; axes "
                         f"{''.join(metadata.axes)!r} have {space} space axes: name them with axes=, e.g. 'czyx'")


def omero_for(metadata: ImageMetadata, shape, dtype) -> dict | None:
    """The ``omero`` block to write with an image of ``shape`` and ``dtype``: the one carried, when its
    channels match the channel axis; contrast windows that no longer fit an integer dtype are reset."""
    omero = metadata.omero
    if omero is None:
        return None
    channels = omero.get("channels")
    count = shape[metadata.types.index("channel")] if "channel" in metadata.types else 1
    if not isinstance(channels, list) or len(channels) != count:
        warnings.warn(f"the image's omero metadata names {len(channels or [])} channel(s), the image has {count}: "
                      "it is not written (pass attrs={'omero': ...} to give it)", stacklevel=4)
        return None
    dtype = np.dtype(dtype)
    if metadata.omero_dtype != str(dtype) and (dtype == bool or np.issubdtype(dtype, np.integer)):
        low, high = (0, 1) if dtype == bool else (np.iinfo(dtype).min, np.iinfo(dtype).max)
        for channel in channels:
            window = channel.get("window") if isinstance(channel, dict) else None
            if isinstance(window, dict):
                fits = all(low <= window.get(k, low) <= high for k in ("start", "end"))
                channel["window"] = {**window, "min": low, "max": high} if fits else \
                    {"min": low, "max": high, "start": low, "end": high}
    return omero


#: NGFF keys that live inside ``ome`` in 0.5 and at the top level in 0.4; the first three save writes itself
_OWN_KEYS = ("multiscales", "version", "labels")
_NGFF_KEYS = ("omero", "image-label")


def merge_user_attrs(group_attrs: dict, attrs: dict | None, kind: str, version: str) -> dict:
    """``group_attrs`` (what save writes) with the caller's ``attrs``: NGFF blocks (``omero``,
    ``image-label``; given at the top level or inside ``ome``) go where ``version`` keeps them, the
    rest beside them. The multiscales are save's own; ``image-label`` entries add to its ``source``."""
    attrs = dict(attrs or {})
    ngff = dict(attrs.pop("ome", None) or {})
    for key in _NGFF_KEYS:
        if key in attrs:
            ngff[key] = attrs.pop(key)
    clash = [k for k in _OWN_KEYS if k in ngff or (k in attrs and k != "version")]
    if clash:
        raise ValueError(f"attrs names {', '.join(map(repr, clash))}, which save writes itself from the image; "
                         f"give axes=, scale=, units= (and pyramid_levels=) instead")
    home = group_attrs["ome"] if version == "0.5" else group_attrs
    if "image-label" in ngff:
        if kind != "labels":
            raise ValueError("attrs 'image-label' (label colors and properties) belongs to kind='labels'")
        given = ngff.pop("image-label")
        _check_image_label(given)
        home["image-label"] = {**given, **home.get("image-label", {})}
    if "omero" in ngff and kind == "labels":
        raise ValueError("attrs 'omero' describes image channels; a label image (kind='labels') has none")
    home.update(ngff)
    group_attrs.update(attrs)
    return group_attrs


def _check_image_label(block) -> None:
    """``colors`` and ``properties`` of an NGFF ``image-label`` block, checked before anything is written."""
    if not isinstance(block, dict):
        raise ValueError("attrs 'image-label' must be a dict such as {'colors': [{'label-value': 1, 'rgba': [255, 0, 0, "
                         "255]}], 'properties': [{'label-value': 1, 'class': 'nucleus'}]}")
    for key in ("colors", "properties"):
        entries = block.get(key, [])
        if not isinstance(entries, list):
            raise ValueError(f"image-label {key!r} must be a list of dicts with a 'label-value'")
        seen = set()
        for entry in entries:
            value = entry.get("label-value") if isinstance(entry, dict) else None
            if isinstance(value, bool) or not isinstance(value, int) or value in seen:
                raise ValueError(f"image-label {key!r}: every entry needs a distinct integer 'label-value'; got {entry!r}")
            seen.add(value)
            rgba = entry.get("rgba")
            if key == "colors" and not (isinstance(rgba, list) and len(rgba) == 4 and all(
                    isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in rgba)):
                raise ValueError(f"image-label colors: 'rgba' must be 4 integers 0..255; got {entry!r}")
    if "colors" in block and "properties" in block:
        colors = {e["label-value"] for e in block["colors"]}
        properties = {e["label-value"] for e in block["properties"]}
        if colors != properties:
            raise ValueError(f"image-label 'colors' and 'properties' must describe the same label values (validators "
                             f"require it); colors has {sorted(colors - properties)} and properties "
                             f"{sorted(properties - colors)} that the other lacks")


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


def with_metadata(metadata: ImageMetadata | None, ndim: int, axes=None, scale=None, units=None) -> ImageMetadata:
    """The metadata to write: what travels with the array, overridden by what the caller gives.
    ``units``: a length unit for every space axis, or ``{axis: unit}`` (a time unit for the time axis)."""
    meta = metadata if metadata is not None and len(metadata.axes) == ndim else ImageMetadata.default(ndim, axes)
    if axes is not None and tuple(axes) != meta.axes:
        fresh = ImageMetadata.default(ndim, axes)
        meta = replace(meta, axes=fresh.axes, types=fresh.types)
    if scale is not None:
        scale = tuple(float(s) for s in (scale if not np.isscalar(scale) else [scale] * ndim))
        if len(scale) != ndim or any(not math.isfinite(s) or s <= 0 for s in scale):
            raise ValueError(f"scale={scale!r} must give a pixel size > 0 for each of the {ndim} axes")
        meta = replace(meta, scale=scale)
    if isinstance(units, Mapping):
        unknown = [a for a in units if a not in meta.axes]
        if unknown:
            raise ValueError(f"units names axes {unknown} that the image does not have (its axes: {''.join(meta.axes)})")
        new = list(meta.units)
        for i, (a, t) in enumerate(zip(meta.axes, meta.types)):
            if a not in units:
                continue
            if t == "time":
                new[i] = normalize_time_unit(units[a])
            elif t == "space":
                new[i] = normalize_unit(units[a])
            else:
                raise ValueError(f"units: axis {a!r} is a {t} axis; only space and time axes take units")
        meta = replace(meta, units=tuple(new))
    elif units is not None:
        unit = normalize_unit(units)
        meta = replace(meta, units=tuple(unit if t == "space" else u for t, u in zip(meta.types, meta.units)))
    return meta
