"""Safe, streaming sinks.

``save`` streams tiles into a zarr store written *beside* the target and renamed into place only when every
tile is written, so a target path never holds a half-written result and an existing output is never touched
unless ``overwrite=True``; a killed save resumes where it stopped, and only for the same job on the same inputs.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import dask.array as da
import numpy as np

from gpu_tiler._backends import NUMPY, to_numpy
from gpu_tiler._execution.bounded import run_bounded, tiles_in_flight_for_chunks
from gpu_tiler._io.claim import claim_output
from gpu_tiler._io.ome import (
    ImageMetadata,
    check_ome_shape,
    image_level_transforms,
    level_transforms,
    merge_user_attrs,
    multiscales_attrs,
    multiscales_of,
    next_level,
    ngff_order,
    omero_for,
    permuted,
    pyramid_factors,
    read_multiscale,
    with_metadata,
)
from gpu_tiler._io.provenance import (
    stamps_of,
    unverifiable_in,
)
from gpu_tiler._io.sources import (
    InputChangedError,
    _is_zarr_dir,
    as_dask,
    check_unchanged,
)
from gpu_tiler._io.sources import open as open_source
from gpu_tiler._planning.plan import regular_chunk_shape
from gpu_tiler._registry import info_of, metadata_of, plan_of

MANIFEST = "gpu_tiler-job.json"
DONE_LOG = "gpu_tiler-done.log"


class SaveError(OSError):
    """Writing the output failed (disk full, permissions); finished tiles are kept for ``resume=True``."""


FORMATS = ("zarr", "ome-zarr")


def save(
    array,
    path,
    overwrite: bool = False,
    *,
    resume: bool = False,
    format: str = "zarr",  # noqa: A002 - the natural name for the output format
    zarr_format: int | None = None,
    pyramid_levels: int | None = None,
    kind: str = "image",
    axes: str | None = None,
    scale=None,
    units: str | None = None,
    attrs: dict | None = None,
    tiles_in_flight: int | None = None,
    budget=None,
    progress=None,
    wait=False,
) -> da.Array:
    """Compute ``array`` tile by tile into a zarr store at ``path``; return the saved image, lazily.

    Tiles are written into ``.<name>.partial`` beside ``path``, each recorded in a small manifest
    once written, and the store is renamed to ``path`` only when complete. If ``path`` exists this
    is a ``FileExistsError`` unless ``overwrite=True``. The zarr chunks are the array's tiles; at
    most ``tiles_in_flight`` tiles are computed at once (default: the plan of a :func:`map_tiles`
    result, else as many as ``budget`` holds).

    ``zarr_format``: 3 (the default) or 2. ``format="ome-zarr"`` writes an OME-Zarr multiscale image
    (NGFF 0.5 on zarr v3, 0.4 on zarr v2; 2 to 5 axes): level 0 tile by tile, then ``pyramid_levels``
    levels in all (default: halving the space axes until the largest is under 256; an axis stops at
    one voxel), each computed from the stored level before within the budget: the mean for
    ``kind="image"``, every second voxel for ``kind="labels"`` (integers only; no label is
    invented). Axes and pixel sizes come from the array's metadata (an OME-Zarr, OME-TIFF or ImageJ
    TIFF input carries them, and an OME-Zarr's ``omero`` channel names and colours, through every
    operation and every selection such as ``x[1]``), overridden by ``axes`` (e.g. ``"zyx"``),
    ``scale`` (pixel sizes) and ``units`` (a length unit for the space axes, or ``{axis: unit}``,
    e.g. ``{"t": "second", "z": "um"}``). OME-Zarr orders axes time, channel, space: an image with
    its axes in another order (an ImageJ ``tzcyx`` stack, an RGB ``yxc`` image) is written transposed
    into that order, its axes named, so viewers read it the right way round. ``attrs`` are written
    with the image; ``omero`` and ``image-label`` (label ``colors`` and ``properties``) go where the
    NGFF version keeps them (inside ``ome`` for 0.5).

    Saving labels to ``<image>.ome.zarr/labels/<name>`` writes them in the image's NGFF version and
    zarr format, with the image's levels at the image's pixel sizes (the image's axes and pixel
    sizes are used when the labels carry none), and lists them in the image's ``labels`` group
    beside the label images already there; an image with consolidated metadata is consolidated again.

    When a save fails: a write that fails (disk full, permissions) raises :class:`SaveError` and
    keeps the finished tiles; with ``resume=True`` any failure keeps them; otherwise the partial
    store is removed. ``resume=True`` continues a partial store left by an earlier run of the same
    job, computing only the tiles not yet written. The manifest proves it is the same job on the
    same data: the operations and parameters, the code of user functions, the library versions and
    a stamp of every file of every stored input (size and mtime of each chunk); a partial store that
    differs in any of these is refused with :class:`ResumeRefusedError` naming what changed, never
    mixed. An input that changes while the save reads it is an :class:`InputChangedError` and
    nothing is written.

    A save claims ``path`` before it writes anything (an OS lock on ``.<name>.lock`` beside it, held
    by this process, released when it ends however it ends): a second job into the same output
    fails at once with :class:`OutputInUseError` naming the job that holds it, unless ``wait``
    (True, or seconds) queues it behind that job. Use :func:`gpu_tiler.claim_output` to hold the
    claim across a longer computation (e.g. around :func:`gpu_tiler.label` and its save).
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"'{target}' exists; pass overwrite=True to replace it")
    if zarr_format not in (None, 2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, not {zarr_format!r}")
    if format not in FORMATS:
        raise ValueError(f"format={format!r} is not one of {', '.join(map(repr, FORMATS))}")
    if kind not in ("image", "labels"):
        raise ValueError(f"kind={kind!r} must be 'image' or 'labels'")
    source = as_dask(array)
    if kind == "labels" and not np.issubdtype(source.dtype, np.integer):
        raise ValueError(f"kind='labels' needs integer label values (NGFF label images are integers); this array is "
                         f"{source.dtype}: convert it (e.g. x.astype(np.uint32), rounding first) or save it as "
                         f"kind='image'")
    plan = plan_of(source)
    info = info_of(source)
    job_name, recorded_inputs = info.job if info is not None and info.job else (source.name, {})
    ome = None
    if format == "ome-zarr":
        parent = _parent_image(target) if kind == "labels" else None
        zarr_format = _labels_zarr_format(target, parent, zarr_format) if kind == "labels" else zarr_format or 3
        merge_user_attrs({"ome": {}} if zarr_format == 3 else {}, attrs, kind, "0.5" if zarr_format == 3 else "0.4")
        carried = metadata_of(array) or metadata_of(source)
        if carried is None and parent is not None:
            carried = parent.label_metadata(source.ndim, axes)
        meta = with_metadata(carried, source.ndim, axes, scale, units)
        order = ngff_order(meta)
        if order is not None:  # e.g. an ImageJ TZCYX stack: OME-Zarr wants TCZYX
            source, meta = source.transpose(order), permuted(meta, order)
            job_name = f"{job_name}-transposed-{'-'.join(map(str, order))}"
        check_ome_shape(meta, source.shape)
        if parent is not None:
            meta, transforms, factors = parent.label_levels(meta, source.shape, pyramid_levels)
        else:
            factors = pyramid_factors(source.shape, meta, pyramid_levels)
            transforms = image_level_transforms(meta, factors, kind)
        ome = (meta, factors, transforms)
    elif zarr_format is None:
        zarr_format = 3
    chunk_shape = regular_chunk_shape(source.chunks)
    if chunk_shape is None:
        source = source.rechunk(tuple(max(c) for c in source.chunks))
        chunk_shape = regular_chunk_shape(source.chunks)
    if tiles_in_flight is None:
        if plan is not None and budget is None:
            tiles_in_flight = plan.tiles_in_flight
        else:
            tiles_in_flight = tiles_in_flight_for_chunks(source, NUMPY.device(budget).budget_bytes)
    job = {
        "format": 2, "array": job_name, "shape": list(source.shape), "dtype": str(source.dtype),
        "chunks": list(chunk_shape), "zarr_format": zarr_format, "output": format,
        "pyramid": [list(f) for f in ome[1]] if ome else None, "kind": kind,
        "axes": list(ome[0].axes) if ome else None,
    }
    claim = contextlib.ExitStack()
    try:
        claim.enter_context(claim_output(target, wait=wait, job=job_name))
    except OSError as exc:  # permissions, a file where a folder should be, a read-only disk
        raise SaveError(f"cannot claim '{target}' ({exc.strerror or exc}); choose a folder you can write to") from exc
    with claim:
        if target.exists() and not overwrite:  # finished by another job while we waited for it
            raise FileExistsError(f"'{target}' exists; pass overwrite=True to replace it")
        read_now = stamps_of(source)
        job.update(inputs={**recorded_inputs, **read_now}, versions=_versions(), unverifiable=unverifiable_in(source))
        _save_claimed(source, target, job, read_now, ome, resume, overwrite, kind, zarr_format, attrs,
                      chunk_shape, tiles_in_flight, progress)
    return open_source(target)


def _versions() -> dict:
    """Versions of the libraries a result depends on: a resume across an upgrade is another job."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("gpu_tiler", "numpy", "scipy", "scikit-image", "dask", "zarr", "cupy", "cucim"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _save_claimed(source, target: Path, job, read_now, ome, resume, overwrite, kind, zarr_format, attrs,
                  chunk_shape, tiles_in_flight, progress):
    """The body of :func:`save`, run while this process holds the output's claim."""
    import zarr

    partial = target.parent / f".{target.name}.partial"
    tiles_at = partial / "0" if ome else partial
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if ome and not (resume and (tiles_at / MANIFEST).is_file()):
            if partial.exists():
                shutil.rmtree(partial)
            zarr.open_group(str(partial), mode="w", zarr_format=zarr_format)
        layout = _layout(zarr_format, ome[0].axes) if ome else {}
        store, done = _start_or_resume(tiles_at, job, resume, None if ome else attrs, layout)
    except OSError as exc:  # permissions, a file where a folder should be, a read-only disk
        raise SaveError(f"cannot create '{partial}' beside '{target}' ({exc.strerror or exc}); choose a folder you "
                        f"can write to") from exc
    log = (tiles_at / DONE_LOG).open("a")

    def record(indices):
        log.write("".join(",".join(map(str, index)) + "\n" for index in indices))
        log.flush()
        os.fsync(log.fileno())

    try:
        run_bounded(source, _TileWriter(store, chunk_shape, str(target), str(partial)), tiles_in_flight,
                    progress=progress, skip=done, in_task=True, on_done=record)
        log.close()
        try:
            check_unchanged(read_now, stamps_of(source), f"'{target}' was computed from it")
        except InputChangedError:
            shutil.rmtree(partial, ignore_errors=True)  # its tiles mix two versions of the input
            raise
        (tiles_at / DONE_LOG).unlink()
        (tiles_at / MANIFEST).unlink()
        if ome:
            _write_pyramid(partial, target, ome, kind, zarr_format, tiles_in_flight, attrs, source)
        _commit(partial, target, overwrite)
        if ome and kind == "labels":
            _register_label(target, zarr_format)
    except BaseException as exc:
        log.close()
        if not (resume or isinstance(exc, SaveError)):
            shutil.rmtree(partial, ignore_errors=True)
        raise


def _layout(zarr_format: int, axes) -> dict:
    """How OME-Zarr arrays are laid out: zarr v3 arrays name their dimensions after the axes (NGFF
    0.5 requires it); zarr v2 chunks go in nested folders (NGFF 0.4 expects the '/' separator)."""
    if zarr_format == 3:
        return {"dimension_names": tuple(axes)}
    return {"chunk_key_encoding": {"name": "v2", "separator": "/"}}


def _write_pyramid(partial: Path, target: Path, ome, kind, zarr_format, tiles_in_flight, attrs, source):
    """Levels 1.. of an OME-Zarr pyramid, each from the stored level before; then the NGFF attributes."""
    import zarr

    meta, factors, transforms = ome
    for level, factor in enumerate(factors, start=1):
        previous = open_source(partial / str(level - 1))
        # each level keeps the chunks downsampling gives (a tile's worth of the level before, halved):
        # one level-k chunk then reads exactly one level-(k-1) chunk, so memory stays at the plan's
        smaller = next_level(previous, factor, kind)
        chunks = regular_chunk_shape(smaller.chunks)
        store = zarr.create_array(store=str(partial / str(level)), shape=smaller.shape, chunks=chunks,
                                  dtype=smaller.dtype, zarr_format=zarr_format, fill_value=0,
                                  **_layout(zarr_format, meta.axes))
        run_bounded(smaller, _TileWriter(store, chunks, str(target), str(partial)), tiles_in_flight, in_task=True)
    version = "0.4" if zarr_format == 2 else "0.5"
    group = zarr.open_group(str(partial), mode="a", zarr_format=zarr_format)
    name = target.name
    for suffix in (".ome.zarr", ".zarr"):
        name = name[: -len(suffix)] if name.endswith(suffix) and name != suffix else name
    group_attrs = multiscales_attrs(meta, transforms, kind, version, name)
    home = group_attrs["ome"] if version == "0.5" else group_attrs
    if kind == "labels":
        home["image-label"] = {"source": {"image": "../../"}, **({"version": "0.4"} if version == "0.4" else {})}
    else:
        omero = omero_for(meta, source.shape, source.dtype)
        if omero is not None:
            home["omero"] = omero
    group.attrs.update(merge_user_attrs(group_attrs, attrs, kind, version))


@dataclass(frozen=True)
class _ParentImage:
    """The OME-Zarr image a label image is saved into (``<image>/labels/<name>``)."""

    path: Path
    version: str
    zarr_format: int
    meta: ImageMetadata  #: level 0
    transforms: tuple  #: (scale, translation) per level, as the spec composes them

    def _pick(self, names, what: str) -> list[int]:
        index = {a: i for i, a in enumerate(self.meta.axes)}
        missing = [a for a in names if a not in index]
        if missing:
            raise ValueError(f"{what} has axes {''.join(names)!r}; {missing} are not axes of the image '{self.path}' "
                             f"({''.join(self.meta.axes)!r}): name the label axes with axes=")
        return [index[a] for a in names]

    def label_metadata(self, ndim: int, axes=None) -> ImageMetadata:
        """The image's axes and pixel sizes for labels of ``ndim`` axes that carry none: all its axes,
        its space axes, or its last ``ndim`` (``axes`` names them)."""
        meta = self.meta
        if axes is not None:
            names = tuple(axes)
        elif ndim == len(meta.axes):
            names = meta.axes
        elif ndim == len([t for t in meta.types if t == "space"]):
            names = tuple(a for a, t in zip(meta.axes, meta.types) if t == "space")
        else:
            names = meta.axes[-ndim:]
        if len(names) != ndim:
            raise ValueError(f"axes={axes!r} names {len(names)} axes; the labels have {ndim}")
        pick = self._pick(names, "the label image")
        take = lambda values: tuple(values[i] for i in pick)  # noqa: E731
        return ImageMetadata(take(meta.axes), take(meta.types), take(meta.scale), take(meta.units),
                             take(meta.translation), meta.name)

    def label_levels(self, meta: ImageMetadata, shape, pyramid_levels):
        """(metadata, (scale, translation) per level, factors per level) of labels ``meta`` in this
        image: the image's number of levels at the image's pixel sizes, as NGFF requires."""
        pick = self._pick(meta.axes, "the label image")
        levels = len(self.transforms)
        if pyramid_levels is not None and pyramid_levels != levels:
            raise ValueError(f"pyramid_levels={pyramid_levels}: label images have their image's levels, and "
                             f"'{self.path}' has {levels}; leave pyramid_levels out")
        scales = [tuple(scale[i] for i in pick) for scale, _ in self.transforms]
        if not np.allclose(meta.scale, scales[0], rtol=1e-6, atol=0):
            raise ValueError(f"the labels' pixel sizes {meta.scale} ({''.join(meta.axes)}) differ from the image's "
                             f"{scales[0]}: a label image has its image's pixel sizes; pass scale={scales[0]} or none")
        units = tuple(u or self.meta.units[i] for u, i in zip(meta.units, pick))
        meta = replace(meta, scale=scales[0], units=units, types=tuple(self.meta.types[i] for i in pick))
        factors, current = [], list(shape)
        for previous, scale in zip(scales, scales[1:]):
            ratios = [s / p for s, p in zip(scale, previous)]
            step = tuple(max(1, round(r)) for r in ratios)
            if any(abs(r - f) > 1e-6 * f for r, f in zip(ratios, step)):
                raise ValueError(f"the image '{self.path}' has levels {len(factors)} and {len(factors) + 1} at pixel "
                                 f"sizes {previous} and {scale}, not an integer factor apart: labels cannot be "
                                 f"subsampled to match; save them as an image of their own")
            if any(n // f < 1 for n, f in zip(current, step)):
                raise ValueError(f"labels of shape {tuple(shape)} are too small for the {levels} levels of "
                                 f"'{self.path}'")
            factors.append(step)
            current = [n // f for n, f in zip(current, step)]
        return meta, [(scale, meta.translation) for scale in scales], tuple(factors)


def _parent_image(target: Path) -> _ParentImage | None:
    """The OME-Zarr image ``target`` (``<image>/labels/<name>``) is a label image of, or None."""
    import zarr

    image = target.parent.parent
    if target.parent.name != "labels" or not _is_zarr_dir(image):
        return None
    try:
        group = zarr.open_group(str(image), mode="r")
    except Exception:  # noqa: BLE001 - an array or damaged metadata there: no image to follow
        return None
    found = multiscales_of(dict(group.attrs))
    if found is None:
        return None
    entry, version = found
    _, _, meta = read_multiscale(group, str(image), None)
    transforms = tuple(level_transforms(entry, len(meta.axes), str(image)))
    return _ParentImage(image, version, group.metadata.zarr_format, meta, transforms)


def _group_formats(folder: Path) -> set[int]:
    """The zarr formats whose group metadata ``folder`` holds (both: a hierarchy mixed by mistake)."""
    return ({3} if (folder / "zarr.json").is_file() else set()) | \
        ({2} if any((folder / f).is_file() for f in (".zgroup", ".zattrs")) else set())


def _labels_zarr_format(target: Path, parent: _ParentImage | None, zarr_format: int | None) -> int:
    """The zarr format of a label image saved to ``target``: its image's (NGFF keeps one version in
    a hierarchy), else the existing ``labels`` group's, else ``zarr_format`` (default 3)."""
    labels_dir = target.parent
    found = _group_formats(labels_dir) if labels_dir.name == "labels" else set()
    if len(found) > 1:
        raise ValueError(f"'{labels_dir}' holds both zarr v2 (.zattrs) and zarr v3 (zarr.json) group metadata, so readers "
                         f"see only some of its label images: remove the one not matching the image (zarr.json for an "
                         f"NGFF 0.4 image, .zgroup/.zattrs for 0.5) after copying its 'labels' list into the other")
    follow = parent.zarr_format if parent is not None else (next(iter(found)) if found else None)
    if follow is None:
        return zarr_format or 3
    if zarr_format is not None and zarr_format != follow:
        what = f"the image '{parent.path}' is NGFF {parent.version} on zarr v{follow}" if parent is not None else \
            f"the labels group '{labels_dir}' is zarr v{follow}"
        raise ValueError(f"zarr_format={zarr_format}: {what}, and NGFF keeps one version in a hierarchy: leave "
                         f"zarr_format out (or pass {follow}) to write these labels in it")
    if found and parent is not None and found != {follow}:
        raise ValueError(f"'{labels_dir}' is zarr v{next(iter(found))} inside the zarr v{follow} image '{parent.path}': "
                         f"rewrite the labels group in the image's format")
    return follow


def check_label_output(path, zarr_format: int | None = None) -> int:
    """The zarr format labels saved to ``path`` get as OME-Zarr (see :func:`save`); a ValueError
    saying what to change when ``zarr_format`` contradicts the image or labels group they go into."""
    target = Path(path)
    return _labels_zarr_format(target, _parent_image(target), zarr_format)


def _register_label(target: Path, zarr_format: int):
    """List a label image in its parent ``labels`` group (created if missing), as NGFF asks, beside
    the ones listed there; then consolidate the image's metadata again if it was consolidated."""
    labels_dir = target.parent
    if labels_dir.name != "labels":
        return
    # two label images saved into one image at once: their read-modify-writes of the list take turns
    with claim_output(labels_dir, wait=True, job=f"registering label '{target.name}'"):
        _add_label_name(labels_dir, target.name, zarr_format)
        _reconsolidate(labels_dir.parent, zarr_format)


def _add_label_name(labels_dir: Path, name: str, zarr_format: int):
    import zarr

    _labels_zarr_format(labels_dir / name, None, zarr_format)  # refuses a group of the other format
    group = zarr.open_group(str(labels_dir), mode="a", zarr_format=zarr_format, use_consolidated=False)
    key_owner = dict(group.attrs).get("ome", {}) if zarr_format == 3 else dict(group.attrs)
    names = list(key_owner.get("labels", []))
    if name not in names:
        names.append(name)
    if zarr_format == 3:
        group.attrs.update({"ome": {**key_owner, "version": key_owner.get("version", "0.5"), "labels": names}})
    else:
        group.attrs.update({"labels": names})


def _reconsolidate(image: Path, zarr_format: int) -> None:
    """Consolidate ``image``'s metadata again when it has consolidated metadata (ngff-zarr writes it):
    readers that use it would not see a new label image otherwise."""
    import zarr

    if zarr_format == 2:
        present = (image / ".zmetadata").is_file()
    else:
        try:
            present = json.loads((image / "zarr.json").read_text()).get("consolidated_metadata") is not None
        except (OSError, ValueError):
            present = False
    if present:
        import warnings

        with warnings.catch_warnings():  # the claims' lock files beside the groups are not zarr nodes, as meant
            warnings.filterwarnings("ignore", message=r"Object at (.*/)?\.[^/]*\.lock is not recognized")
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            zarr.consolidate_metadata(str(image), zarr_format=zarr_format)


class _TileWriter:
    """Writes one tile into the partial store, in the task that computed it (picklable for workers)."""

    def __init__(self, store, chunk_shape, target: str, partial: str):
        self.store, self.chunk_shape, self.target, self.partial = store, tuple(chunk_shape), target, partial

    def __call__(self, index, block):
        region = tuple(slice(i * c, i * c + n) for i, c, n in zip(index, self.chunk_shape, block.shape))
        try:
            self.store[region] = to_numpy(block)
        except OSError as exc:
            raise SaveError(
                f"writing tile {index} of '{self.target}' failed ({exc.strerror or exc}); the finished tiles are kept "
                f"in '{self.partial}': free space or fix permissions, then save again with resume=True"
            ) from exc
        return index


def _start_or_resume(partial: Path, job: dict, resume: bool, attrs, layout=None):
    """Open the partial store of an earlier run of the same job (resume), or start a fresh one;
    ``layout``: zarr.create_array's options for a fresh one (see :func:`_layout`)."""
    import zarr

    if resume and (partial / MANIFEST).is_file():
        try:
            earlier = json.loads((partial / MANIFEST).read_text())
        except ValueError:
            earlier = {}
        problem = _why_not_the_same_job(earlier, job)
        if problem:
            raise ResumeRefusedError(
                f"cannot resume '{partial}': {problem}; its finished tiles cannot be reused, so save without "
                f"resume=True (without --resume on the command line) to start over"
            )
        store = zarr.open_array(str(partial), mode="r+")
        return store, _completed(partial / DONE_LOG)
    if partial.exists():  # left by an earlier run that was not resumed: start over
        shutil.rmtree(partial)
    store = zarr.create_array(
        store=str(partial), shape=tuple(job["shape"]), chunks=tuple(job["chunks"]), dtype=job["dtype"],
        zarr_format=job["zarr_format"], fill_value=0, **(layout or {}),
    )
    if attrs:
        store.attrs.update(attrs)
    manifest = partial / MANIFEST
    manifest.with_suffix(".tmp").write_text(json.dumps(job))
    manifest.with_suffix(".tmp").replace(manifest)
    return store, frozenset()


class ResumeRefusedError(ValueError):
    """A partial output was left by a different job, or by the same job on different data."""


def _why_not_the_same_job(earlier: dict, job: dict) -> str | None:
    """One clause naming what differs between the job that left a partial store and this one."""
    if earlier.get("format") != job["format"]:
        return "it was left by another version of gpu_tiler"
    if job["unverifiable"]:
        return (f"the function of {', '.join(job['unverifiable'])} cannot be identified by its code (a closure or "
                f"default value that cannot be hashed), so it cannot be proven unchanged")
    mine, theirs = job["inputs"], earlier.get("inputs", {})
    if set(mine) != set(theirs):
        return f"it was computed from other inputs ({', '.join(sorted(theirs)) or 'none stored'})"
    unknown = [where for where, stamp in mine.items() if stamp is None]
    if unknown:
        return f"input {', '.join(map(repr, unknown))} is in a store whose changes cannot be detected"
    changed = [where for where in mine if mine[where] != theirs[where]]
    if changed:
        return f"input {', '.join(map(repr, changed))} changed since that run (its files were modified)"
    if earlier.get("versions") != job["versions"]:
        was, now = earlier.get("versions", {}), job["versions"]
        moved = [f"{p} {was.get(p)} -> {now.get(p)}" for p in sorted(set(was) | set(now)) if was.get(p) != now.get(p)]
        return f"the libraries changed since that run ({', '.join(moved)})"
    if earlier.get("array") != job["array"]:
        return "it was started by a different job (the operations, their parameters or a function's code differ)"
    changed = sorted(k for k in job if earlier.get(k) != job[k])
    if changed:
        return f"it was started by a different job ({', '.join(changed)} differ)"
    return None


def _completed(log: Path) -> frozenset:
    """Tile indices the done-log records (a line cut short by a kill is ignored)."""
    if not log.is_file():
        return frozenset()
    done = set()
    for line in log.read_text().splitlines():
        try:
            done.add(tuple(int(v) for v in line.split(",")))
        except ValueError:
            continue
    return frozenset(done)


def _commit(partial: Path, target: Path, overwrite: bool) -> None:
    """Move a complete store into place; an old one is moved aside first and removed last."""
    if not target.exists():
        os.rename(partial, target)
        return
    if not overwrite:
        raise FileExistsError(f"'{target}' appeared while saving; pass overwrite=True to replace it")
    aside = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
    os.rename(target, aside)
    try:
        os.rename(partial, target)
    except BaseException:
        os.rename(aside, target)
        raise
    if aside.is_dir():
        shutil.rmtree(aside)
    else:
        aside.unlink()


__all__ = ["DONE_LOG", "FORMATS", "MANIFEST", "ResumeRefusedError", "SaveError", "check_label_output", "save"]
