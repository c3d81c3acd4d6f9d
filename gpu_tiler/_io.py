"""Lazy sources and safe, streaming sinks.

``open`` turns zarr (v2/v3), TIFF, ``.npy``, NumPy and dask into a lazy dask array without reading
pixels. ``save`` streams tiles into a zarr store written *beside* the target and renamed into
place only when every tile is written, so a target path never holds a half-written result and an
existing output is never touched unless ``overwrite=True``.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import dask.array as da
import numpy as np

from ._execute import default_tiles_in_flight, run_bounded

_TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".btf", ".tf8")


def _is_zarr_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("zarr.json", ".zarray", ".zgroup"))


def _zarr_array_from(node, where):
    import zarr

    if isinstance(node, zarr.Array):
        return node
    arrays = sorted(name for name, _ in node.arrays())
    if "0" in arrays:  # a multiscale group (OME-Zarr, pyramidal TIFF): level 0 is full resolution
        return node["0"]
    hint = f"; open one of its arrays, e.g. '{where}/{arrays[0]}'" if arrays else " with no arrays in it"
    raise ValueError(f"{where} is a zarr group, not an image{hint}")


def open(source, chunks=None) -> da.Array:  # noqa: A001 - the natural name, exported as gpu_tiler.open
    """Open an image lazily as a dask array.

    ``source``: a path to a zarr store (v2 or v3, or an array inside one), a TIFF file (read
    lazily through tifffile's zarr view), a ``.npy`` file (memory-mapped), or a NumPy, CuPy, zarr or
    dask array. ``chunks`` rechunks (dask's forms: a tuple, ``"auto"``, a number of voxels); by
    default the source's own chunks are kept. A path that does not exist is a ``FileNotFoundError``.
    """
    if isinstance(source, da.Array):
        return source if chunks is None else source.rechunk(chunks)
    if isinstance(source, (str, os.PathLike)):
        return _open_path(Path(source), chunks)
    try:
        import zarr

        if isinstance(source, zarr.Array):
            return da.from_zarr(source, chunks=chunks if chunks is not None else source.chunks)
    except ImportError:  # pragma: no cover - zarr is a dependency
        pass
    if not hasattr(source, "shape") or not hasattr(source, "dtype"):
        source = np.asarray(source)
    if source.ndim == 0:
        raise ValueError("gpu_tiler works on images with at least one axis; got a 0-d value")
    meta = source[(slice(0, 0),) * source.ndim] if not isinstance(source, np.ndarray) else None
    return da.from_array(source, chunks=chunks if chunks is not None else "auto", meta=meta)


def _open_path(path: Path, chunks) -> da.Array:
    if not path.exists():
        raise FileNotFoundError(f"no such file or zarr store: '{path}'")
    name = path.name.lower()
    if path.is_file() and name.endswith(".npy"):
        data = np.load(path, mmap_mode="r")
        return da.from_array(data, chunks=chunks if chunks is not None else "auto")
    if path.is_file() and name.endswith(_TIFF_SUFFIXES):
        import tifffile
        import zarr

        store = tifffile.imread(path, aszarr=True)
        node = zarr.open(store, mode="r")
        return open(_zarr_array_from(node, str(path)), chunks)
    if path.is_dir():
        import zarr

        if not _is_zarr_dir(path):
            raise ValueError(f"'{path}' is a directory but not a zarr store (no zarr.json, .zarray or .zgroup)")
        return open(_zarr_array_from(zarr.open(str(path), mode="r"), str(path)), chunks)
    raise ValueError(
        f"don't know how to open '{path}': expected a zarr store, a .tif/.tiff file or a .npy file"
    )


def _regular_chunks(array: da.Array):
    """A zarr chunk shape for ``array``: its chunks when regular (all equal but the last), else None."""
    shape = []
    for c in array.chunks:
        if len(c) > 1 and (len(set(c[:-1])) > 1 or c[-1] > c[0]):
            return None
        shape.append(max(c[0], 1) if c else 1)
    return tuple(shape)


def save(
    array,
    path,
    overwrite: bool = False,
    *,
    zarr_format: int = 3,
    attrs: dict | None = None,
    tiles_in_flight: int | None = None,
    budget=None,
    progress=None,
) -> da.Array:
    """Compute ``array`` tile by tile into a zarr store at ``path``; return the saved image, lazily.

    Tiles are written into ``.<name>.partial-<id>`` beside ``path`` and the store is renamed to
    ``path`` only when complete. If ``path`` exists this is a ``FileExistsError`` unless
    ``overwrite=True``; if anything fails the partial store is removed and ``path`` is as before.
    The zarr chunks are the array's tiles. At most ``tiles_in_flight`` tiles are computed at once
    (default: the plan of a :func:`map_tiles` result, else as many as ``budget`` holds).
    """
    import zarr

    from ._engine import as_dask, plan_of

    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"'{target}' exists; pass overwrite=True to replace it")
    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, not {zarr_format!r}")
    source = as_dask(array)
    chunk_shape = _regular_chunks(source)
    if chunk_shape is None:
        source = source.rechunk(tuple(max(c) for c in source.chunks))
        chunk_shape = _regular_chunks(source)
    if tiles_in_flight is None:
        plan = plan_of(source)
        if plan is not None and budget is None:
            tiles_in_flight = plan.tiles_in_flight
        else:
            from ._backends import NUMPY

            tiles_in_flight = default_tiles_in_flight(source, NUMPY.device(budget).budget_bytes)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        store = zarr.create_array(
            store=str(partial), shape=source.shape, chunks=chunk_shape, dtype=source.dtype,
            zarr_format=zarr_format, fill_value=0,
        )
        if attrs:
            store.attrs.update(attrs)

        def write(index, block):
            region = tuple(slice(i * c, i * c + n) for i, c, n in zip(index, chunk_shape, block.shape))
            store[region] = block if isinstance(block, np.ndarray) else _to_host(block)

        run_bounded(source, write, tiles_in_flight, progress=progress)
        _commit(partial, target, overwrite)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return open(target)


def _to_host(block):
    get = getattr(block, "get", None)
    return get() if callable(get) else np.asarray(block)


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


__all__ = ["open", "save"]
