"""Halo arithmetic: which source voxels fill a tile's window, with scipy.ndimage boundary modes.

A window is a tile grown by ``halo`` voxels on each side. Inside the image the growth is real
neighbour data; beyond the image border it is filled as ``scipy.ndimage`` extends an image for
``mode``, for any halo size, also larger than a chunk or the whole axis. NumPy's ``np.pad`` modes
extend a line exactly like ``scipy.ndimage`` does (checked in the tests, halo > axis included):
"""
from __future__ import annotations

import numpy as np

from gpu_tiler._errors import ParameterRuntimeError

#: scipy.ndimage boundary mode -> np.pad mode extending a line the same way
SCIPY_TO_NUMPY_PAD = {
    "reflect": "symmetric",
    "grid-mirror": "symmetric",
    "mirror": "reflect",
    "nearest": "edge",
    "wrap": "wrap",
    "grid-wrap": "wrap",
    "constant": "constant",
    "grid-constant": "constant",
}
MODES = tuple(SCIPY_TO_NUMPY_PAD)


def normalize_modes(mode, ndim: int) -> tuple[str, ...]:
    """One scipy.ndimage mode per axis (a single mode, or a sequence of ``ndim`` modes)."""
    modes = (mode,) * ndim if isinstance(mode, str) else tuple(mode)
    if len(modes) != ndim:
        raise ParameterRuntimeError(f"mode {mode!r} gives {len(modes)} modes; the image has {ndim} axes")
    for m in modes:
        if m not in SCIPY_TO_NUMPY_PAD:
            raise ParameterRuntimeError(f"mode {m!r} is not a boundary mode; use one of {', '.join(map(repr, MODES))}")
    return modes


def source_indices(length: int, halo: int, mode: str) -> np.ndarray:
    """For an axis of ``length`` grown by ``halo`` per side: the source index of each grown position.

    ``-1`` marks positions filled with the constant value (mode ``"constant"``).
    """
    idx = np.arange(length, dtype=np.int64)
    if halo == 0:
        return idx
    np_mode = SCIPY_TO_NUMPY_PAD[mode]
    if np_mode == "constant":
        return np.pad(idx, halo, mode="constant", constant_values=-1)
    return np.pad(idx, halo, mode=np_mode)


def _runs(indices: np.ndarray):
    """Split a source-index sequence into runs of step +1, step -1, or constant fill (-1)."""
    runs = []
    start = 0
    n = len(indices)
    while start < n:
        v = indices[start]
        stop = start + 1
        if v < 0:
            while stop < n and indices[stop] < 0:
                stop += 1
            runs.append((start, stop, -1, 0))
        else:
            step = 0
            if stop < n and indices[stop] >= 0 and abs(indices[stop] - v) == 1:
                step = int(indices[stop] - v)
                while stop < n and indices[stop] - indices[stop - 1] == step and indices[stop] >= 0:
                    stop += 1
            runs.append((start, stop, int(v), step or 1))
        start = stop
    return runs


def axis_pieces(indices: np.ndarray, chunk_bounds: np.ndarray):
    """Cut a window's source indices along one axis into pieces, each inside one source chunk.

    Returns ``(dst_slice, chunk_index, src_slice)`` triples; ``chunk_index`` is None for constant fill.
    ``chunk_bounds`` are the cumulative chunk edges (``[0, c0, c0 + c1, ...]``).
    """
    pieces = []
    for d0, d1, v0, step in _runs(indices):
        if v0 < 0:
            pieces.append((slice(d0, d1), None, None))
            continue
        d = d0
        while d < d1:
            v = v0 + step * (d - d0)
            chunk = int(np.searchsorted(chunk_bounds, v, side="right") - 1)
            lo, hi = int(chunk_bounds[chunk]), int(chunk_bounds[chunk + 1])
            room = (hi - v) if step > 0 else (v - lo + 1)
            count = min(room, d1 - d)
            local = v - lo
            if step > 0:
                src = slice(local, local + count)
            else:
                end = local - count
                src = slice(local, end if end >= 0 else None, -1)
            pieces.append((slice(d, d + count), chunk, src))
            d += count
    return pieces
