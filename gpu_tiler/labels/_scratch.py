"""Scratch storage for pass 1's local labels when they do not fit the memory budget.

Local labels go to a temporary zarr array (one chunk per tile, LZ4-compressed: label images compress
well) in a fresh directory made with :func:`tempfile.mkdtemp` inside ``where`` (default: the system's
temporary directory, ``TMPDIR``). Pass 2 reads each tile back instead of labelling the source again.

The directory lives exactly as long as something can still read it: the :class:`ScratchLabels`
object sits inside every pass-2 task of the result's dask graph, and when the last graph holding it
is garbage-collected (or the interpreter exits) a finalizer removes the directory. A copy pickled to
another process (a dask.distributed worker: pass 1 runs there when a client is active) writes and
reads tiles but never removes anything; the directory must then be on a filesystem the workers share.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref

import numpy as np


def _region(index, grid):
    origin = grid.origin(index)
    return tuple(slice(o, o + n) for o, n in zip(origin, grid.tile_shape(index)))


class ScratchLabels:
    """A temporary zarr array of local labels, one chunk per (regular) tile."""

    def __init__(self, shape, tile_shape, dtype, where=None):
        import zarr
        from zarr.codecs import BloscCodec

        self.path = tempfile.mkdtemp(prefix="gpu_tiler-labels-", dir=None if where is None else os.fspath(where))
        self._owner = True
        weakref.finalize(self, shutil.rmtree, self.path, True)
        self._array = zarr.create_array(
            store=os.path.join(self.path, "local.zarr"), shape=tuple(shape), chunks=tuple(tile_shape),
            dtype=np.dtype(dtype), fill_value=0, compressors=[BloscCodec(cname="lz4", clevel=1, shuffle="shuffle")],
            zarr_format=3,
        )

    @classmethod
    def _attach(cls, path):
        """The same store in another process (a dask.distributed worker): reads and writes, never removes."""
        import zarr

        copy = cls.__new__(cls)
        copy.path, copy._owner = path, False
        copy._array = zarr.open_array(os.path.join(path, "local.zarr"), mode="r+")
        return copy

    def __reduce__(self):
        return (ScratchLabels._attach, (self.path,))

    @property
    def dtype(self) -> np.dtype:
        return self._array.dtype

    def write(self, index, grid, block) -> None:
        self._array[_region(index, grid)] = block

    def read(self, index, grid) -> np.ndarray:
        return self._array[_region(index, grid)]

    def __repr__(self):
        return f"<gpu_tiler label scratch {self.path!r}{'' if self._owner else ' (attached)'}>"


__all__ = ["ScratchLabels"]
