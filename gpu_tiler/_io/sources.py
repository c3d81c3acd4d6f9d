"""Lazy sources: ``open`` turns zarr (v2/v3), OME-Zarr, TIFF, ``.npy``, NumPy and dask into a lazy dask array
without reading pixels; stored inputs are wrapped so that a resume can tell whether they changed."""
from __future__ import annotations

import os
from pathlib import Path

import dask.array as da
import numpy as np

from gpu_tiler._io.ome import (
    attach_metadata,
    multiscales_of,
    read_multiscale,
    tiff_metadata,
)
from gpu_tiler._io.provenance import (
    StoredArray,
    files_of_zarr,
)
from gpu_tiler._registry import info_of, record

_TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".btf", ".tf8")
def remember_job_name(array, job_name: str, inputs: dict | None = None):
    """Record that saving ``array`` is the job ``job_name``, computed from ``inputs`` (``{where:
    stamp}``, read before the array was built): for results whose dask name is unique to one call
    (labels hold that call's pass-1 tiles) but whose job is fixed by input and parameters."""
    return record(array, job=(job_name, dict(inputs or {})))


class InputChangedError(RuntimeError):
    """A stored input changed while a job read it: its result would mix old and new data."""


def check_unchanged(before: dict, after: dict, doing: str) -> None:
    """Raise :class:`InputChangedError` naming the inputs whose stamps differ."""
    changed = [where for where in before if before[where] != after.get(where)]
    if changed:
        raise InputChangedError(
            f"input {', '.join(map(repr, changed))} changed while {doing} (its files were modified); the result "
            f"would mix its old and new data, so nothing was written: run the job again once the input is final"
        )


def as_dask(array) -> da.Array:
    """``array`` as a dask array: itself when it is one (or the copy of it a global step computed
    once and kept, see ``gpu_tiler._materialise``), else :func:`open` of it."""
    if not isinstance(array, da.Array):
        return open(array)
    info = info_of(array)
    return array if info is None or info.materialised is None else info.materialised


def _is_zarr_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("zarr.json", ".zarray", ".zgroup"))


class ChunkReadError(OSError):
    """Reading one chunk of an input failed; the message names the input, the chunk and the cause."""


class _ChunkReader:
    """dask's getter for a zarr-backed input, with errors that say which chunk of which input failed."""

    def __init__(self, where: str, chunk_shape):
        self.where = where
        self.chunk_shape = tuple(chunk_shape)

    def __call__(self, a, b, asarray=True, lock=None):
        from dask.array.core import getter

        try:
            return getter(a, b, asarray=asarray, lock=lock)
        except Exception as exc:
            index = tuple((s.start or 0) // c for s, c in zip(b, self.chunk_shape)) if isinstance(b, tuple) else b
            raise ChunkReadError(
                f"reading chunk {index} of '{self.where}' failed ({type(exc).__name__}: {exc}); the input is "
                f"damaged there: restore that chunk or rewrite the input"
            ) from exc


def _from_zarr(z, where: str, chunks, files: str | None = None) -> da.Array:
    """A zarr array (or tifffile's zarr view of a TIFF) as a dask array; ``files``: what holds it on
    disk (default: the array's folder in a local store), stamped by every resumable save."""
    from dask.base import tokenize

    chunks = chunks if chunks is not None else z.chunks
    name = "from-zarr-" + tokenize(where, z.shape, str(z.dtype), z.chunks, chunks, _stamp(where))
    meta = np.empty((0,) * z.ndim, dtype=z.dtype)
    stored = StoredArray(z, where, files if files is not None else files_of_zarr(z))
    return da.from_array(stored, chunks=chunks, name=name, getitem=_ChunkReader(where, z.chunks), meta=meta)


def stored_source(array) -> StoredArray | None:
    """The stored input (zarr, TIFF, ``.npy``) that ``array`` is exactly ``open``'s view of, else None: a
    caller may then read any region of it with :func:`read_stored` instead of through dask's chunks."""
    graph = array.__dask_graph__()
    layers = getattr(graph, "layers", None)
    if layers is None or len(layers) != 2:
        return None
    parents = graph.dependencies.get(array.name, ())
    if len(parents) != 1:
        return None
    (parent,) = parents
    values = list(layers[parent].values()) if parent.startswith("original-") else []
    if len(values) == 1 and isinstance(values[0], StoredArray) and values[0].shape == array.shape:
        return values[0]
    return None


def reads_into(stored: StoredArray) -> bool:
    """Whether :func:`read_stored` can write a region straight into a given array (a zarr array: the
    decoded chunk is copied into it, no copy of the region is made on the way)."""
    return hasattr(stored.array, "get_basic_selection")


class _Into:
    """A zarr array whose ``[region]`` is read into ``out`` (a NumPy array or view of the region's shape)."""

    def __init__(self, array, out):
        self.array, self.out = array, out

    def __getitem__(self, region):
        from zarr.core.buffer import default_buffer_prototype

        self.array.get_basic_selection(region, out=default_buffer_prototype().nd_buffer.from_numpy_array(self.out))
        return self.out


def read_stored(stored: StoredArray, region, out=None) -> np.ndarray:
    """``stored[region]`` (a tuple of slices within one of its chunks), with the error that names the chunk;
    written into ``out`` (and returned) when given and :func:`reads_into` says it can be."""
    reader = _ChunkReader(stored.where, stored.chunks or stored.shape)
    if out is not None and reads_into(stored):
        return reader(_Into(stored.array, out), tuple(region))
    block = reader(stored, tuple(region))
    if out is not None:
        out[...] = block
        return out
    return block


def _stamp(where: str):
    """What identifies a stored input's version cheaply: its metadata file's or file's size and mtime."""
    path = Path(where)
    for candidate in (path / "zarr.json", path / ".zarray", path):
        try:
            stat = candidate.stat()
            return (candidate.name, stat.st_size, stat.st_mtime_ns)
        except OSError:
            continue
    return None


def _zarr_array_from(node, where):
    import zarr

    if isinstance(node, zarr.Array):
        return node, where
    arrays = sorted(name for name, _ in node.arrays())
    if "0" in arrays:  # a multiscale group (OME-Zarr, pyramidal TIFF): level 0 is full resolution
        return node["0"], f"{where}/0"
    hint = f"; open one of its arrays, e.g. '{where}/{arrays[0]}'" if arrays else " with no arrays in it"
    raise ValueError(f"{where} is a zarr group, not an image{hint}")


def open(source, chunks=None, *, level=None) -> da.Array:  # noqa: A001 - the natural name, exported as gpu_tiler.open
    """Open an image lazily as a dask array.

    ``source``: a path to a zarr store (v2 or v3, or an array inside one), a TIFF file (read
    lazily through tifffile's zarr view), a ``.npy`` file (memory-mapped), or a NumPy, CuPy, zarr or
    dask array. ``chunks`` rechunks (dask's forms: a tuple, ``"auto"``, a number of voxels); by
    default the source's own chunks are kept. A path that does not exist is a ``FileNotFoundError``.
    An OME-Zarr image (NGFF 0.4 or 0.5) opens at full resolution, or at ``level`` (an index or a
    dataset path); its axes and pixel sizes travel with the array (:func:`gpu_tiler.metadata_of`), as
    do those of an OME-TIFF (OME-XML) or ImageJ TIFF (resolution tags, z spacing, frame interval).
    """
    if isinstance(source, da.Array):
        return source if chunks is None else source.rechunk(chunks)
    if isinstance(source, (str, os.PathLike)):
        return _open_path(Path(source), chunks, level)
    try:
        import zarr

        if isinstance(source, zarr.Array):
            return _from_zarr(source, f"{source.store}/{source.path}", chunks)
    except ImportError:  # pragma: no cover - zarr is a dependency
        pass
    if not hasattr(source, "shape") or not hasattr(source, "dtype"):
        source = np.asarray(source)
    if source.ndim == 0:
        raise ValueError("gpu_tiler works on images with at least one axis; got a 0-d value")
    meta = source[(slice(0, 0),) * source.ndim] if not isinstance(source, np.ndarray) else None
    return da.from_array(source, chunks=chunks if chunks is not None else "auto", meta=meta)


def _open_path(path: Path, chunks, level=None) -> da.Array:
    if not path.exists():
        raise FileNotFoundError(f"no such file or zarr store: '{path}'")
    name = path.name.lower()
    if path.is_file() and name.endswith(".npy"):
        from dask.base import tokenize

        data = np.load(path, mmap_mode="r")
        stored = StoredArray(data, str(path), str(path))
        name = "from-npy-" + tokenize(str(path.resolve()), data.shape, str(data.dtype), chunks, _stamp(str(path)))
        return da.from_array(stored, chunks=chunks if chunks is not None else "auto", name=name,
                             meta=np.empty((0,) * data.ndim, dtype=data.dtype))
    if path.is_file() and name.endswith(_TIFF_SUFFIXES):
        import tifffile
        import zarr

        store = tifffile.imread(path, aszarr=True)
        z, where = _zarr_array_from(zarr.open(store, mode="r"), str(path))
        return attach_metadata(_from_zarr(z, where, chunks, files=str(path)), tiff_metadata(path))
    if path.is_dir():
        import zarr

        if not _is_zarr_dir(path):
            raise ValueError(f"'{path}' is a directory but not a zarr store (no zarr.json, .zarray or .zgroup)")
        node = zarr.open(str(path), mode="r")
        if isinstance(node, zarr.Group) and multiscales_of(dict(node.attrs)) is not None:
            z, where, metadata = read_multiscale(node, str(path), level)
            return attach_metadata(_from_zarr(z, where, chunks), metadata)
        if level is not None:
            raise ValueError(f"level={level!r}: '{path}' is not a multiscale (OME-Zarr) image")
        z, where = _zarr_array_from(node, str(path))
        return _from_zarr(z, where, chunks)
    raise ValueError(
        f"don't know how to open '{path}': expected a zarr store, a .tif/.tiff file or a .npy file"
    )


__all__ = ["ChunkReadError", "InputChangedError", "as_dask", "check_unchanged", "open", "read_stored",
           "reads_into", "remember_job_name", "stored_source"]
