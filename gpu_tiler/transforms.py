"""Geometric transforms of images larger than memory: affine_transform, zoom, shift, rotate,
map_coordinates (scipy.ndimage's parameters) and the light-sheet ``deskew`` recipe.

Each output tile reads the source window its pre-image needs (:func:`gpu_tiler._engine.map_regions`)
and is computed on the backend's ``ndimage`` (``scipy.ndimage`` or ``cupyx.scipy.ndimage``) with
``map_coordinates`` at coordinates computed exactly as SciPy computes them on the whole image:

- the window along an axis is the footprint of the tile's coordinates (``order`` samples of reach)
  cut to the image; the local coordinate is the global one minus the window's start, an exact
  subtraction because the start is a whole number between 0 and the coordinate. Where the footprint
  crosses the image border in the modes whose reach wraps or reflects into the image
  (``mirror``, ``reflect``, ``wrap``, ``grid-wrap``), the window is the whole axis, so SciPy maps
  such coordinates with the image's own length. Orders 0 and 1 are therefore equal to SciPy on the
  whole image bit for bit, in every mode.
- orders 2-5 with ``prefilter=True`` need the global spline coefficients. They are computed per
  window with a halo of :func:`spline_halo` samples of real image data beyond the footprint, the
  distance after which the recursive filter's influence (its largest pole ``|z|`` to the power of
  the distance, times its gain) falls below 2**-53; the result agrees with SciPy to within a few
  units in the last place of float64 (tests check ``<= 1e-12`` of the image's range).
"""
from __future__ import annotations

import itertools
import math
import warnings

import dask.array as da
import numpy as np

from gpu_tiler._backends import chunk_backend
from gpu_tiler._engine.regions import map_regions
from gpu_tiler._io.sources import as_dask
from gpu_tiler._planning.plan import _resolve_budget, chunk_bounds

MODES = ("constant", "grid-constant", "nearest", "reflect", "grid-mirror", "mirror", "wrap", "grid-wrap")
_WHOLE_AXIS_MODES = ("mirror", "reflect", "wrap", "grid-wrap")  # reach folds back into the image

#: the poles of the B-spline prefilter of each order (scipy's ni_splines.c)
SPLINE_POLES = {
    2: (math.sqrt(8.0) - 3.0,),
    3: (math.sqrt(3.0) - 2.0,),
    4: (math.sqrt(664.0 - math.sqrt(438976.0)) + math.sqrt(304.0) - 19.0,
        math.sqrt(664.0 + math.sqrt(438976.0)) - math.sqrt(304.0) - 19.0),
    5: (math.sqrt(67.5 - math.sqrt(4436.25)) + math.sqrt(26.25) - 6.5,
        math.sqrt(67.5 + math.sqrt(4436.25)) - math.sqrt(26.25) - 6.5),
}


def spline_halo(order: int, tolerance: float = 2.0**-53) -> int:
    """Samples of real data each window needs beyond its footprint for the prefilter of ``order``.

    The prefilter is a cascade of causal and anticausal first-order recursions, one pair per pole
    ``z``; a sample ``k`` away contributes at most ``gain * |z|**k / (1 - |z|)**2`` of its value, where
    ``gain = prod (1 - z)(1 - 1/z)``. The halo is the smallest ``k`` that brings this below
    ``tolerance`` (relative to the image's largest value), for the slowest pole."""
    if order < 2:
        return 0
    poles = SPLINE_POLES[order]
    gain = math.prod((1 - z) * (1 - 1 / z) for z in poles)
    zmax = max(abs(z) for z in poles)
    bound = gain / (1 - zmax) ** 2
    return int(math.ceil(math.log(tolerance / bound) / math.log(zmax)))


# ---- parameters ---------------------------------------------------------------------------------------------

def _check_common(x, order, mode, cval, output):
    if isinstance(order, (bool, np.bool_)) or not float(order).is_integer() or not 0 <= int(order) <= 5:
        raise ValueError(f"order={order!r} is not a spline order; give a whole number 0..5")
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode={mode!r} is not a boundary mode of scipy.ndimage's transforms; use one of "
                         f"{', '.join(map(repr, MODES))} (one mode for all axes)")
    if np.iscomplexobj(np.asarray(cval)) or np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError("complex images (or cval) are not supported: transform the real and imaginary parts "
                        "separately")
    if isinstance(output, np.ndarray) or hasattr(output, "__array__") and not isinstance(output, (type, np.dtype)):
        raise TypeError("output= takes a dtype here (results are lazy); save or compute the result to get an array")
    if x.ndim < 1:
        raise ValueError("the image must have at least one axis")
    out_dtype = x.dtype if output is None else np.dtype(output)
    return int(order), ("reflect" if mode == "grid-mirror" else mode), float(cval), out_dtype


def _prepad(order, mode, prefilter):
    """SciPy's pre-pad for prefiltered 'nearest'/'grid-constant' (12 samples; the window reads it as the
    boundary mode extends the image, so no padded copy of the source is made)."""
    return 12 if prefilter and order > 1 and mode in ("nearest", "grid-constant") else 0


# ---- coordinates, exactly as scipy.ndimage computes them -----------------------------------------------------

class _Affine:
    """c[h] = offset[h] + sum_l o[l] * M[h, l], accumulated left to right (NI_GeometricTransform)."""

    def __init__(self, matrix, offset):
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float64)
        self.offset = np.asarray(offset, dtype=np.float64)

    def _at(self, xp, positions, out=None):
        """Each input axis's coordinate at the grid of output ``positions`` (1-D per output axis), one
        axis at a time; the partial sums broadcast, only the last addition is the grid's size (into
        ``out`` when given: it is overwritten for the next axis)."""
        n_out = len(positions)
        axes = [p.reshape(tuple(-1 if k == l else 1 for k in range(n_out))) for l, p in enumerate(positions)]
        for h in range(self.matrix.shape[0]):
            t = float(self.offset[h])
            for l in range(n_out - 1):
                t = t + axes[l] * float(self.matrix[h, l])
            last = axes[-1] * float(self.matrix[h, -1])
            yield t + last if out is None else xp.add(t, last, out=out)

    def each(self, xp, box, out=None):
        return self._at(xp, [xp.arange(a, b, dtype=xp.float64) for a, b in box], out)

    def bounds(self, box):
        """The extreme coordinates over the tile: at its corners (each sum is monotone in each output
        coordinate, rounding included), computed with the tiles' own arithmetic (Python floats are the
        same IEEE doubles, one rounding per operation, in the same order), so they are exact."""
        corners = list(itertools.product(*((float(a), float(b - 1)) for a, b in box)))
        lo, hi = [], []
        for offset, row in zip(self.offset.tolist(), self.matrix.tolist()):
            values = []
            for corner in corners:
                t = offset
                for o, m in zip(corner, row):
                    t = t + o * m
                values.append(t)
            lo.append(min(values))
            hi.append(max(values))
        return lo, hi


class _ZoomShift:
    """c = (o + shift) * zoom, or ((o + shift) + 0.5) * zoom - 0.5 with grid_mode (NI_ZoomShift)."""

    def __init__(self, zoom, shift, grid_mode=False):
        self.zoom = None if zoom is None else np.asarray(zoom, dtype=np.float64)
        self.shift = None if shift is None else np.asarray(shift, dtype=np.float64)
        self.grid_mode = grid_mode

    def _axis(self, o, k):
        c = o
        if self.shift is not None:
            c = c + float(self.shift[k])
        if self.zoom is not None:
            if self.grid_mode:
                c = ((c + 0.5) * float(self.zoom[k])) - 0.5
            else:
                c = c * float(self.zoom[k])
        return c

    def each(self, xp, box, out=None):
        n = len(box)
        for k, (a, b) in enumerate(box):
            yield self._axis(xp.arange(a, b, dtype=xp.float64), k).reshape(tuple(-1 if j == k else 1 for j in range(n)))

    def bounds(self, box):
        """The coordinates at both ends of each axis (monotone; the tiles' arithmetic on Python floats)."""
        ends = [(self._axis(float(a), k), self._axis(float(b - 1), k)) for k, (a, b) in enumerate(box)]
        return [min(e) for e in ends], [max(e) for e in ends]


class _Given:
    """Coordinates from an array (map_coordinates): bounds from each tile's block, computed beforehand
    (their exact minimum and maximum)."""

    def __init__(self, ranges):
        self.ranges = ranges

    def bounds(self, box):
        return self.ranges[box]


def _first_sample(c: float, order: int) -> int:
    """The first sample SciPy's spline of ``order`` reads at coordinate ``c`` (it reads ``order + 1``)."""
    return math.floor(c + 0.5) - order // 2 if order % 2 == 0 else math.floor(c) - order // 2


def _axis_window(lo_c, hi_c, length, order, mode, halo):
    """The window along one axis for coordinates in ``[lo_c, hi_c]`` (exact bounds): every sample SciPy
    reads there (zero weights included, so NaN and inf spread as in SciPy), and the whole numbers around
    each coordinate (so a coordinate never falls outside its window), plus ``halo``, cut to the image."""
    if not (math.isfinite(lo_c) and math.isfinite(hi_c)):
        return 0, length
    lo = min(math.floor(lo_c), _first_sample(lo_c, order))
    hi = max(math.ceil(hi_c), _first_sample(hi_c, order) + order)
    if mode in _WHOLE_AXIS_MODES and (lo < 0 or hi > length - 1):
        return 0, length
    lo = min(max(lo, 0), length - 1)
    hi = min(max(hi, 0), length - 1)
    start, stop = max(0, lo - halo), min(length, hi + halo + 1)
    if mode == "grid-wrap" and halo and (start == 0 or stop == length):
        return 0, length  # the periodic prefilter starts from the whole line: a window cut at the border cannot
    if stop - start < min(length, 2 * halo + 2):  # room for the edge rules and the prefilter's start
        want = min(length, 2 * halo + 2)
        start = max(0, min(start, stop - want))
        stop = min(length, start + want)
    return start, stop


def _source_region(coords, shape, order, mode, halo, npad):
    """Source region of an output tile, in the image's coordinates (SciPy's pre-padded ones less ``npad``)."""
    padded = tuple(n + 2 * npad for n in shape)

    def region(box):
        lo, hi = coords.bounds(box)
        return tuple((a - npad, b - npad) for a, b in (
            _axis_window(float(l) + npad, float(h) + npad, n, order, mode, halo) for l, h, n in zip(lo, hi, padded)))
    return region


#: output voxels interpolated per call: bounds the coordinate arrays a tile needs, whatever its size
SLAB_VOXELS = 1 << 15


def _slabs(shape, limit=SLAB_VOXELS):
    """Sub-boxes of a tile of ``shape`` (local slices) with at most ``limit`` voxels each (or one line)."""
    k = next(a for a in range(len(shape)) if math.prod(shape[a + 1 :]) <= limit)
    step = max(1, limit // math.prod(shape[k + 1 :]))
    for lead in itertools.product(*(range(n) for n in shape[:k])):
        for i in range(0, shape[k], step):
            yield (*(slice(j, j + 1) for j in lead), slice(i, min(i + step, shape[k])),
                   *(slice(0, n) for n in shape[k + 1 :]))


def _transform_tile(window, *given, out_box, src_box, coords, order, interp_mode, interp_cval, prefilter, npad,
                    lengths, out_dtype):
    mode, cval = interp_mode, interp_cval
    backend = chunk_backend(window)
    xp, ndi = backend.xp, backend.ndimage
    source = window
    if prefilter and order > 1:
        source = ndi.spline_filter(window, order=order, output=xp.float64, mode=mode)
    del window
    tile = tuple(b - a for a, b in out_box)
    starts = [float(a + npad) for a, _ in src_box]  # the window's start in SciPy's (pre-padded) coordinates
    out = xp.empty(tile, dtype=out_dtype)
    size = min(SLAB_VOXELS, math.prod(tile))
    flat_points = xp.empty(len(starts) * size, dtype=xp.float64)  # one slab's coordinates, reused
    flat_sums = xp.empty(size, dtype=xp.float64)
    for part in _slabs(tile):
        shape = tuple(p.stop - p.start for p in part)
        voxels = math.prod(shape)
        points = flat_points[: len(starts) * voxels].reshape(len(starts), *shape)
        if coords is None:  # map_coordinates: this slab of the coordinate block, in float64 as SciPy reads it
            block = given[0][(slice(None), *part)]
            glob = (block[k].astype(xp.float64) for k in range(block.shape[0]))
        else:
            sums = flat_sums[:voxels].reshape(shape)
            glob = coords.each(xp, tuple((a + p.start, a + p.stop) for (a, _), p in zip(out_box, part)), sums)
        for k, c in enumerate(glob):
            if npad:
                c = c + float(npad)
            start = starts[k]
            if order == 0 and start:
                # SciPy rounds c + 0.5; in the few samples where that rounds across a whole number and
                # (c - start) + 0.5 does not, give the sample index SciPy picks (inside the image only)
                here = c - start  # exact: start is a whole number in [0, c] for every sample read
                picked = xp.floor(c + 0.5) - start
                inside = (c >= 0) & (c <= lengths[k] - 1) if mode not in ("nearest", "grid-constant") else c == c
                points[k] = xp.where((picked != xp.floor(here + 0.5)) & inside, picked, here)
            else:
                xp.subtract(c, start, out=points[k])  # exact, as above
        # a slab is a contiguous block of the tile: interpolated straight into it
        ndi.map_coordinates(source, points, output=out[part], order=order, mode=mode, cval=cval, prefilter=False)
    return out


def _transform(x, coords, output_shape, order, mode, cval, prefilter, out_dtype, budget, tile_shape, backend,
               given=(), chunks=None):
    npad = _prepad(order, mode, prefilter)
    halo = spline_halo(order) if prefilter and order > 1 else 0
    region = _source_region(coords, x.shape, order, mode, halo, npad)
    ndim = len(x.shape)
    # per window voxel: the window, and the float64 spline coefficients when prefiltered; per output voxel:
    # the tile (and, for map_coordinates, its block of coordinates and one axis of it in float64)
    window_bytes = x.dtype.itemsize + (8 if prefilter and order > 1 else 0)
    tile_bytes = out_dtype.itemsize + (given[0].dtype.itemsize * ndim + 8 if given else 0)
    # one slab's coordinates (float64, one per input axis), its partial sums and its interpolated values
    slab = (SLAB_VOXELS, 8 * (ndim + 3) + out_dtype.itemsize)
    return map_regions(
        _transform_tile, x, region, output_shape=output_shape, dtype=out_dtype, aligned=given, chunks=chunks,
        window_bytes=window_bytes, tile_bytes=tile_bytes, slab=slab, out_work=8 * (order + 1) ** ndim,
        budget=budget, tile_shape=tile_shape, backend=backend, mode=mode, cval=cval,
        coords=None if isinstance(coords, _Given) else coords, order=order, interp_mode=mode, interp_cval=cval,
        prefilter=bool(prefilter), npad=npad, lengths=tuple(n + 2 * npad for n in x.shape), out_dtype=out_dtype,
    )


# ---- public functions ---------------------------------------------------------------------------------------

def affine_transform(image, matrix, offset=0.0, output_shape=None, output=None, order=3, mode="constant", cval=0.0,
                     prefilter=True, *, budget=None, tile_shape=None, backend=None) -> da.Array:
    """``scipy.ndimage.affine_transform`` of an image larger than memory; a lazy dask array.

    The output voxel ``o`` takes the input's value at ``matrix @ o + offset`` (``matrix``: an
    ``(ndim, ndim)`` matrix, an ``(ndim + 1, ndim + 1)`` or ``(ndim, ndim + 1)`` homogeneous one whose last
    column is the offset, or a 1-D diagonal). ``order`` 0-5, ``mode`` (scipy.ndimage's, ``grid-constant``
    and ``grid-wrap`` included), ``cval`` and ``prefilter`` as in SciPy; ``output`` is the output dtype
    (default: the image's). Orders 0 and 1 equal SciPy on the whole image bit for bit; orders 2-5 agree
    to float64 rounding (see :mod:`gpu_tiler.transforms`). ``budget``/``tile_shape``/``backend`` as for
    :func:`gpu_tiler.map_tiles`."""
    x = as_dask(image)
    order, mode, cval, out_dtype = _check_common(x, order, mode, cval, output)
    matrix = np.asarray(matrix, dtype=np.float64)
    n = x.ndim
    if matrix.ndim not in (1, 2) or matrix.shape[0] < 1:
        raise ValueError(f"matrix of shape {matrix.shape} is not an affine matrix; give an ({n}, {n}) matrix, an "
                         f"({n + 1}, {n + 1}) homogeneous one, or {n} diagonal values")
    if matrix.ndim == 2 and matrix.shape[1] == n + 1 and matrix.shape[0] in (n, n + 1):
        if matrix.shape[0] == n + 1 and not np.all(matrix[n] == [0] * n + [1]):
            raise ValueError(f"the homogeneous matrix's bottom row must be {[0] * n + [1]}, not {matrix[n].tolist()}")
        offset = matrix[:n, n]
        matrix = matrix[:n, :n]
    if matrix.shape[0] != n:
        raise ValueError(f"matrix has {matrix.shape[0]} rows; the image has {n} axes (one row per input axis)")
    if output_shape is None:
        output_shape = x.shape
    output_shape = tuple(int(s) for s in output_shape)
    if matrix.ndim == 2 and matrix.shape[1] != len(output_shape):
        raise ValueError(f"matrix has {matrix.shape[1]} columns; output_shape {output_shape} has "
                         f"{len(output_shape)} axes (one column per output axis)")
    offset = np.asarray(offset, dtype=np.float64)
    offset = np.full(n, float(offset)) if offset.ndim == 0 else offset
    if offset.shape != (n,):
        raise ValueError(f"offset has shape {offset.shape}; give one number or {n} (one per input axis)")
    if matrix.ndim == 1:
        if len(output_shape) != n:
            raise ValueError(f"a diagonal matrix keeps the rank: output_shape {output_shape} needs {n} axes")
        with np.errstate(divide="ignore", invalid="ignore"):
            coords = _ZoomShift(matrix, offset / matrix)
    else:
        coords = _Affine(matrix, offset)
    return _transform(x, coords, output_shape, order, mode, cval, prefilter, out_dtype, budget, tile_shape, backend)


def shift(image, shift, output=None, order=3, mode="constant", cval=0.0, prefilter=True, *, budget=None,
          tile_shape=None, backend=None) -> da.Array:
    """``scipy.ndimage.shift`` out of core (parameters as SciPy's; see :func:`affine_transform`)."""
    x = as_dask(image)
    order, mode, cval, out_dtype = _check_common(x, order, mode, cval, output)
    values = np.asarray(shift, dtype=np.float64)
    values = np.full(x.ndim, float(values)) if values.ndim == 0 else values
    if values.shape != (x.ndim,):
        raise ValueError(f"shift has {values.size} values; give one number or {x.ndim} (one per axis)")
    return _transform(x, _ZoomShift(None, -values), x.shape, order, mode, cval, prefilter, out_dtype, budget,
                      tile_shape, backend)


def zoom(image, zoom, output=None, order=3, mode="constant", cval=0.0, prefilter=True, *, grid_mode=False,
         budget=None, tile_shape=None, backend=None) -> da.Array:
    """``scipy.ndimage.zoom`` out of core (parameters as SciPy's, ``grid_mode`` included)."""
    x = as_dask(image)
    order, mode, cval, out_dtype = _check_common(x, order, mode, cval, output)
    factors = np.asarray(zoom, dtype=np.float64)
    factors = np.full(x.ndim, float(factors)) if factors.ndim == 0 else factors
    if factors.shape != (x.ndim,) or not np.all(factors > 0):
        raise ValueError(f"zoom={zoom!r} must be one positive number or {x.ndim} (one per axis)")
    output_shape = tuple(int(round(n * z)) for n, z in zip(x.shape, factors))
    if np.all(factors == 1) and prefilter:
        return x.astype(out_dtype)
    if grid_mode and mode in ("constant", "wrap"):
        warnings.warn(f"It is recommended to use mode = {'grid-' + mode} instead of {mode} when grid_mode is True.",
                      stacklevel=2)
    div = np.array(output_shape)
    num = np.array(x.shape)
    if not grid_mode:
        div -= 1
        num -= 1
    scale = np.divide(num, div, out=np.ones(x.ndim, dtype=np.float64), where=div != 0)
    return _transform(x, _ZoomShift(scale, None, grid_mode), output_shape, order, mode, cval, prefilter, out_dtype,
                      budget, tile_shape, backend)


def rotate(image, angle, axes=(1, 0), reshape=True, output=None, order=3, mode="constant", cval=0.0, prefilter=True,
           *, budget=None, tile_shape=None, backend=None) -> da.Array:
    """``scipy.ndimage.rotate`` out of core: ``angle`` degrees in the plane of ``axes``; with ``reshape``
    the output holds the whole rotated image. In 3-D and more, every plane rotates alike (one affine)."""
    from scipy import (
        special,  # graph construction only: SciPy's own degree cosine, for SciPy's matrix
    )

    x = as_dask(image)
    order, mode, cval, out_dtype = _check_common(x, order, mode, cval, output)
    n = x.ndim
    if n < 2:
        raise ValueError("rotate needs an image with at least two axes")
    axes = list(axes)
    if len(axes) != 2 or any(isinstance(a, float) for a in axes):
        raise ValueError(f"axes={axes!r} must be two whole-number axes")
    axes = [a + n if a < 0 else a for a in axes]
    if any(a < 0 or a >= n for a in axes) or axes[0] == axes[1]:
        raise ValueError(f"axes={axes!r} is not a plane of a {n}-axis image")
    axes.sort()
    c, s = special.cosdg(angle), special.sindg(angle)
    rot = np.array([[c, s], [-s, c]])
    shape = np.asarray(x.shape)
    in_plane = shape[axes]
    if reshape:
        iy, ix = in_plane
        bounds = rot @ [[0, 0, iy, iy], [0, ix, 0, ix]]
        out_plane = (np.ptp(bounds, axis=1) + 0.5).astype(int)
    else:
        out_plane = in_plane
    offset_plane = (in_plane - 1) / 2 - rot @ ((out_plane - 1) / 2)
    matrix = np.eye(n)
    offset = np.zeros(n)
    for i, a in enumerate(axes):
        offset[a] = offset_plane[i]
        for j, b in enumerate(axes):
            matrix[a, b] = rot[i, j]
    out_shape = shape.copy()
    out_shape[axes] = out_plane
    return _transform(x, _Affine(matrix, offset), tuple(int(v) for v in out_shape), order, mode, cval, prefilter,
                      out_dtype, budget, tile_shape, backend)


def map_coordinates(image, coordinates, output=None, order=3, mode="constant", cval=0.0, prefilter=True, *,
                    budget=None, backend=None) -> da.Array:
    """``scipy.ndimage.map_coordinates`` with ``coordinates`` a lazy (dask) or in-memory array of shape
    ``(image.ndim, *output_shape)``. Output tiles follow the coordinates' chunks (halved until each
    tile's source window fits the budget); each tile's window is found from its coordinates' range."""
    x = as_dask(image)
    order, mode, cval, out_dtype = _check_common(x, order, mode, cval, output)
    coords = as_dask(coordinates)
    if coords.ndim < 2 or coords.shape[0] != x.ndim:
        raise ValueError(f"coordinates of shape {coords.shape} must be (image.ndim={x.ndim}, *output_shape)")
    if np.issubdtype(coords.dtype, np.complexfloating):
        raise TypeError("coordinates must be real numbers")
    output_shape = coords.shape[1:]
    coords = coords.rechunk({0: x.ndim})

    budget_bytes, _ = _resolve_budget(budget, backend)
    while True:
        chunks = coords.chunks[1:]

        blocks = list(np.ndindex(*coords.numblocks[1:]))
        import dask

        mins = [coords.blocks[(0, *b)] for b in blocks]
        ranges = dask.compute(*[(da.nanmin(m.reshape(x.ndim, -1), axis=1), da.nanmax(m.reshape(x.ndim, -1), axis=1))
                                for m in mins])
        edges = chunk_bounds(chunks)
        table = {tuple((int(e[i]), int(e[i + 1])) for e, i in zip(edges, b)): (np.asarray(lo), np.asarray(hi))
                 for b, (lo, hi) in zip(blocks, ranges)}
        try:
            return _transform(x, _Given(table), output_shape, order, mode, cval, prefilter, out_dtype, budget_bytes,
                              None, backend, given=(coords,), chunks=chunks)
        except ValueError as exc:
            if "more than the memory budget" not in str(exc) or max(max(c) for c in chunks) <= 1:
                raise
            axis = 1 + max(range(len(chunks)), key=lambda a: max(chunks[a]))
            coords = coords.rechunk({axis: max(1, math.ceil(max(coords.chunks[axis]) / 2))})


def deskew(image, angle, step, pixel_size=1.0, *, scan_axis=0, shear_axis=1, order=1, mode="constant", cval=0.0,
           output=None, budget=None, tile_shape=None, backend=None) -> da.Array:
    """Deskew stage-scanned light-sheet data: slice ``z`` along ``scan_axis`` is displaced along
    ``shear_axis`` by ``z * step * cos(angle) / pixel_size`` pixels (``angle`` in degrees between the
    sheet and the scan direction, ``step`` the stage step and ``pixel_size`` the camera pixel in the
    same unit). The output is widened along ``shear_axis`` by the total displacement so no data is cut;
    output voxel ``(z, y, x)`` is the input at ``(z, y - shear * z, x)`` (an :func:`affine_transform`)."""
    x = as_dask(image)
    n = x.ndim
    if n < 2:
        raise ValueError("deskew needs an image with a scan axis and a shear axis")
    scan_axis, shear_axis = (a + n if a < 0 else a for a in (scan_axis, shear_axis))
    if not (0 <= scan_axis < n and 0 <= shear_axis < n) or scan_axis == shear_axis:
        raise ValueError(f"scan_axis={scan_axis} and shear_axis={shear_axis} must be two different axes of the image")
    if not (step > 0 and pixel_size > 0):
        raise ValueError(f"step={step!r} and pixel_size={pixel_size!r} must be positive")
    shear = float(step) * math.cos(math.radians(float(angle))) / float(pixel_size)
    extra = int(math.ceil(abs(shear) * (x.shape[scan_axis] - 1) - 1e-9)) if x.shape[scan_axis] else 0
    matrix = np.eye(n)
    matrix[shear_axis, scan_axis] = -shear
    offset = np.zeros(n)
    if shear < 0:
        offset[shear_axis] = -float(extra)
    out_shape = list(x.shape)
    out_shape[shear_axis] += extra
    return affine_transform(x, matrix, offset, tuple(out_shape), output=output, order=order, mode=mode, cval=cval,
                            budget=budget, tile_shape=tile_shape, backend=backend)


__all__ = ["affine_transform", "deskew", "map_coordinates", "rotate", "shift", "spline_halo", "zoom"]
