"""Per-tile partials: what one tile of labels (and intensities) reduces to, and how partials merge.

A tile becomes a *partial table*, one row per label present in it. Each partial (a group of columns:
voxel count, coordinate sums, bounding box, intensity sums and extrema, moments about an integer centre)
is declared once in :data:`PARTIALS`: which partials it builds on, how many columns it has, how a tile
computes it on the device, how it is placed in image coordinates and how partials of one label merge.

On the device a tile's partials are written into one float64 table, which crosses to the host in one
transfer right after the tile (every value in it is exact in float64: counts, sums of local coordinates,
local boxes, and integers that might not be are split into two 32-bit halves). The host places each row
in image coordinates and merges the tables by label, so device memory holds only the tiles in flight.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from gpu_tiler._backends import get_backend
from gpu_tiler.measure import _moments

#: rows of partial tables merged at once on the host
MERGE_EVERY = 8
_SIGN_BIT = np.uint64(1 << 63)
_LOW_HALF = np.uint64(0xFFFFFFFF)
_HALF = np.uint64(32)
_EXACT = 2**53  #: integers below this are exact in float64


# ----------------------------------------------------------------------------- intensity extrema


def extreme_encoding(dtype):
    """The dtype in which a tile scatters intensity extrema, and whether int64 is sign-flipped.

    CuPy's ``minimum.at``/``maximum.at`` support int32, uint32, uint64, float32 and float64: narrow types
    widen exactly, and int64 maps to uint64 order-preservingly by flipping its sign bit.
    """
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or (dtype.kind == "u" and dtype.itemsize <= 4):
        return np.dtype(np.uint32), False
    if dtype.kind == "i" and dtype.itemsize <= 4:
        return np.dtype(np.int32), False
    if dtype.kind == "i":
        return np.dtype(np.uint64), True
    if dtype.kind == "u":
        return np.dtype(np.uint64), False
    if dtype.kind == "f" and dtype.itemsize <= 4:
        return np.dtype(np.float32), False
    return np.dtype(np.float64), False


def _scatter(xp, ufunc_name, index, rows, values):
    """``out[index[i]] = ufunc(out[index[i]], values[i])`` into ``rows`` rows, from the identity of
    ``minimum`` or ``maximum`` (CuPy's ``ufunc.at`` is sure of 1-D contiguous targets, as here)."""
    lowest = ufunc_name == "minimum"
    if np.issubdtype(values.dtype, np.integer):
        info = np.iinfo(values.dtype)
        fill = info.max if lowest else info.min
    else:
        fill = np.inf if lowest else -np.inf
    out = xp.full(rows, fill, dtype=values.dtype)
    getattr(xp, ufunc_name).at(out, index, values)
    return out


def _put_exact(out, values, split):
    """Write integers into float64 columns: one column, or (``split``) two exact 32-bit halves of uint64."""
    if not split:
        out[:, 0] = values
        return
    values = values.astype(np.uint64)
    out[:, 0] = values >> _HALF
    out[:, 1] = values & _LOW_HALF


def _take_exact(columns, split):
    """The integers :func:`_put_exact` wrote (host), as uint64 when split."""
    if not split:
        return columns[:, 0]
    return (columns[:, 0].astype(np.uint64) << _HALF) | columns[:, 1].astype(np.uint64)


# ----------------------------------------------------------------------------- one tile on the device


class Tile:
    """One tile on the device, with what its partials share (computed once, when first asked for)."""

    def __init__(self, backend, labels, intensity, plan, halo=None):
        self.xp, self.plan = backend.xp, plan
        self.halo = None  #: the labels with plan.depth voxels more per side (the tile's labels: a view of it)
        if halo is None:
            labels = backend.to_backend(labels)
        else:
            self.halo = backend.to_backend(halo)
            # an axis shorter than the halo got only its length of halo: the rest is outside the image (0)
            short = [plan.depth - (h - n) // 2 for h, n in zip(self.halo.shape, labels.shape)]
            if any(short):
                self.halo = self.xp.pad(self.halo, [(k, k) for k in short])
            labels = self.halo[tuple(slice(plan.depth, plan.depth + n) for n in labels.shape)]
        self.labels = labels
        self.mask = labels > 0
        values = labels[self.mask]
        self.empty = values.size == 0
        if self.empty:
            return
        # the one small transfer before the table: where this tile's labels lie
        self.low, self.high = (int(v) for v in backend.to_host(self.xp.stack([values.min(), values.max()])))
        self.offsets, self.index = self._compact(values)
        self.rows = int(self.offsets.size)
        self.intensity = None if intensity is None else backend.to_backend(intensity)[self.mask]
        self.table = None

    def _compact(self, values):
        """Each present label's offset from the lowest (sorted) and each voxel's row among them.

        Labels in one tile usually span a short range: then one ``bincount`` over ``value - lowest``
        finds them in linear time (its arrays no longer than the voxels); a sort for widely spread ids."""
        xp = self.xp
        span = self.high - self.low + 1
        if span <= values.size:
            offset = (values - values.dtype.type(self.low)).astype(np.intp)
            present = xp.nonzero(xp.bincount(offset, minlength=span))[0]
            row_of = xp.zeros(span, dtype=np.intp)
            row_of[present] = xp.arange(present.size, dtype=np.intp)
            return present, row_of[offset]
        ids, index = xp.unique(values, return_inverse=True)
        return ids - values.dtype.type(self.low), index.reshape(-1).astype(np.intp)

    @property
    def label_split(self):
        return self.high - self.low >= _EXACT

    def column(self, name):
        """A partial already written to this tile's table (a view of its columns)."""
        return self.table[:, self.plan.columns[name]]

    def bincount(self, weights=None):
        return self.xp.bincount(self.index, weights=weights, minlength=self.rows)

    @functools.cached_property
    def coordinates(self):
        """Each foreground voxel's local coordinates, float64 (exact), in the order of ``labels[mask]``."""
        return [c.astype(np.float64) for c in self.xp.nonzero(self.mask)]

    @functools.cached_property
    def weights(self):
        return self.intensity.astype(np.float64)

    @functools.cached_property
    def deltas(self):
        """Each voxel's coordinates about its label's integer centre in this tile."""
        center = self.column("center")
        return [c - center[:, a][self.index] for a, c in enumerate(self.coordinates)]

    def partial_table(self):
        """The packed float64 table: every planned partial's columns, then the label offset's."""
        plan = self.plan
        self.table = self.xp.empty((self.rows, plan.width + 1 + self.label_split), dtype=np.float64)
        for name in plan.partials:
            PARTIALS[name].tile(self, self.table[:, plan.columns[name]])
        _put_exact(self.table[:, plan.width:], self.offsets, self.label_split)
        return self.table


# ----------------------------------------------------------------------------- local configurations


class _Around:
    """The labels at an offset (each -depth..depth) from every foreground voxel of the tile, gathered from its
    halo'd labels (work in proportion to the foreground, not the tile)."""

    def __init__(self, tile):
        xp, d = tile.xp, tile.plan.depth
        shape = tile.halo.shape
        self.steps = [int(np.prod(shape[a + 1:])) for a in range(len(shape))]
        self.flat = tile.halo.reshape(-1)
        self.base = sum((c + d) * step for c, step in zip(xp.nonzero(tile.mask), self.steps))  # labels[mask]'s order
        self.label = self(())

    def __call__(self, offset):
        return self.flat[self.base + sum(o * step for o, step in zip(offset, self.steps))]


def _corner_weights(ndim):
    """scikit-image's ``euler_number`` and ``perimeter_crofton`` code a 2x2(x2) window by convolving with
    powers of two: the weight of each corner ``e`` (0/1 per axis, from the window's low corner)."""
    config = {2: np.array([[0, 0, 0], [0, 1, 4], [0, 2, 8]]),
              3: np.array([[[0, 0, 0], [0, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 1, 4], [0, 2, 8]],
                           [[0, 0, 0], [0, 16, 64], [0, 32, 128]]])}[ndim]
    return [(e, int(config[tuple(2 - np.array(e))])) for e in itertools.product((0, 1), repeat=ndim)]


def _window_codes(tile, out):
    """Per label, how many 2x2(x2) windows touching it have each configuration of its voxels (scikit-image's
    code). A window is counted for a label by the tile holding the first of its corners with that label, so
    each (window, label) is counted once across tiles: the tile needs one voxel of halo."""
    xp = tile.xp
    around = _Around(tile)
    corners = _corner_weights(tile.labels.ndim)
    bins = 2 ** len(corners)
    total = xp.zeros(tile.rows * bins, dtype=np.float64)
    for k, (e, _) in enumerate(corners):  # each voxel as corner e of the window anchored at voxel - e
        code = xp.zeros(around.label.size, dtype=np.intp)
        first = xp.ones(around.label.size, dtype=bool)
        for j, (f, weight) in enumerate(corners):
            same = around([fi - ei for fi, ei in zip(f, e)]) == around.label
            if j < k:
                first &= ~same
            code += same.astype(np.intp) * weight
        which = xp.nonzero(first)[0]
        total += xp.bincount(tile.index[which] * bins + code[which], minlength=tile.rows * bins)
    out[:] = total.reshape(tile.rows, bins)


def _border_codes(tile, out):
    """Per label, how many of its border voxels (a face neighbour is not the label) have each weighted code of
    scikit-image's ``perimeter`` (1 + 2 per face neighbour and 10 per diagonal one that is a border voxel of
    the same label): a border voxel's status needs its neighbours', so two voxels of halo."""
    xp = tile.xp
    around = _Around(tile)
    ndim = tile.labels.ndim
    faces = [tuple(int(a == b) * s for b in range(ndim)) for a in range(ndim) for s in (-1, 1)]

    def border(offset):  # the voxel at offset is a border voxel of this voxel's label
        same = around(offset) == around.label
        outside = xp.zeros(same.shape, dtype=bool)
        for f in faces:
            outside |= around([o + fo for o, fo in zip(offset, f)]) != around.label
        return same & outside

    code = xp.ones(around.label.size, dtype=np.intp)
    for offset in itertools.product((-1, 0, 1), repeat=ndim):
        if any(offset):
            code += border(offset).astype(np.intp) * (2 if sum(map(abs, offset)) == 1 else 10)
    column = xp.full(code.shape, -1, dtype=np.intp)  # each weighted code's column (no table to upload)
    for k, weighted in enumerate(BORDER_CODES):
        column[code == weighted] = k
    which = xp.nonzero(border((0,) * ndim) & (column >= 0))[0]
    bins = len(BORDER_CODES)
    out[:] = xp.bincount(tile.index[which] * bins + column[which], minlength=tile.rows * bins).reshape(tile.rows, bins)


#: the codes of scikit-image's ``perimeter`` with a weight (the others add exact zeros to its dot product)
BORDER_CODES = (5, 7, 13, 15, 17, 21, 23, 25, 27, 33)


def _count(tile, out):
    out[:, 0] = tile.bincount()


def _coordinate_sums(tile, out):
    for a, c in enumerate(tile.coordinates):
        out[:, a] = tile.xp.rint(tile.bincount(c))  # integer sums within one tile: exact in float64


def _box(ufunc_name):
    def compute(tile, out):
        for a, c in enumerate(tile.coordinates):
            out[:, a] = _scatter(tile.xp, ufunc_name, tile.index, tile.rows, c)
    return compute


def _center(tile, out):
    out[:] = tile.xp.floor(tile.column("sum") / tile.column("count"))


def _moments_of(exponents_of, weights=False):
    def compute(tile, out):
        _moments.moment_sums(tile.xp, tile.index, tile.rows, tile.deltas, exponents_of(tile.plan),
                             tile.weights if weights else None, out=out)
    return compute


def _intensity_sum(tile, out):
    out[:, 0] = tile.bincount(tile.weights)


def _extreme(ufunc_name):
    def compute(tile, out):
        dtype, flip = tile.plan.extremes
        raw = tile.intensity
        encoded = (raw.astype(np.int64) ^ np.int64(-(2**63))).astype(np.uint64) if flip else raw.astype(dtype)
        found = _scatter(tile.xp, ufunc_name, tile.index, tile.rows, encoded)
        _put_exact(out, found, _split64(tile.plan))
    return compute


def _intensity_center(tile, out):
    out[:] = tile.column("isum") / tile.column("count")


def _intensity_moments(tile, out):
    d = tile.weights - tile.column("icenter")[:, 0][tile.index]
    _moments.moment_sums(tile.xp, tile.index, tile.rows, [d], _moments.VALUE_EXPONENTS, out=out)


def _weighted_sums(tile, out):
    for a, c in enumerate(tile.coordinates):
        out[:, a] = tile.bincount(tile.weights * c)


# ----------------------------------------------------------------------------- on the host


def _split64(plan):
    """Whether the intensity extrema are 64-bit integers (two float64 columns each)."""
    dtype = plan.extremes[0]
    return dtype.itemsize == 8 and dtype.kind == "u"


def _host_extremes(plan, columns):
    dtype, flip = plan.extremes
    if _split64(plan):
        found = _take_exact(columns, True)
        return (found ^ _SIGN_BIT).view(np.int64) if flip else found
    return columns[:, 0].astype(dtype)


def _integers(plan, columns):
    return columns.astype(np.int64)


def _first(plan, columns):
    return columns[:, 0]


def _recentred(name, plan, out, joined, index, starts):
    return out["sum"] // out["count"][:, None]


def _intensity_recentred(name, plan, out, joined, index, starts):
    return out["isum"] / out["count"]


def _moved_and_summed(exponents_of, center):
    """Merge moments: each row's moments moved to its label's merged centre, then summed per label."""
    def merge(name, plan, out, joined, index, starts):
        d = (joined[center] - out[center][index]).astype(np.float64).reshape(len(index), -1)
        return np.add.reduceat(_moments.shift(joined[name], exponents_of(plan), d), starts, axis=0)
    return merge


def _at_origin(value, part, origin):
    return value + origin


@dataclass(frozen=True)
class Partial:
    """One partial: the partials it builds on; its columns (``width(plan)``); how a tile computes it on the
    device (``tile(tile, out)`` fills its columns of the tile's table); its host form (``host(plan,
    columns)``); how it moves from the tile's frame to the image's (``place(value, part, origin)``); how the
    rows of one label merge: a ufunc reduced per label, or ``merge(name, plan, merged so far, joined rows,
    row of each, where each label's rows start)``."""

    needs: tuple[str, ...]
    width: Callable
    tile: Callable
    host: Callable = lambda plan, columns: columns
    place: Callable | None = None
    merge: object = np.add


def _one(plan):
    return 1


def _ndim(plan):
    return plan.ndim


PARTIALS = {  # each after the partials it needs
    "count": Partial((), _one, _count, lambda plan, c: c[:, 0].astype(np.int64)),
    "sum": Partial(("count",), _ndim, _coordinate_sums, _integers, lambda v, part, o: v + part["count"][:, None] * o),
    "bmin": Partial((), _ndim, _box("minimum"), _integers, _at_origin, np.minimum),
    "bmax": Partial((), _ndim, _box("maximum"), _integers, _at_origin, np.maximum),
    "center": Partial(("sum",), _ndim, _center, _integers, _at_origin, _recentred),
    "mu": Partial(("center",), lambda plan: len(plan.exponents), _moments_of(lambda plan: plan.exponents),
                  merge=_moved_and_summed(lambda plan: plan.exponents, "center")),
    "isum": Partial((), _one, _intensity_sum, _first),
    "imin": Partial((), lambda plan: 1 + _split64(plan), _extreme("minimum"), _host_extremes, merge=np.minimum),
    "imax": Partial((), lambda plan: 1 + _split64(plan), _extreme("maximum"), _host_extremes, merge=np.maximum),
    "icenter": Partial(("isum", "count"), _one, _intensity_center, _first, merge=_intensity_recentred),
    "imu": Partial(("icenter",), lambda plan: 3, _intensity_moments,
                   merge=_moved_and_summed(lambda plan: _moments.VALUE_EXPONENTS, "icenter")),
    "wsum": Partial(("isum",), _ndim, _weighted_sums,
                    place=lambda v, part, o: v + part["isum"][:, None] * o.astype(np.float64)),
    "wmu": Partial(("center",), lambda plan: len(plan.weighted_exponents),
                   _moments_of(lambda plan: plan.weighted_exponents, weights=True),
                   merge=_moved_and_summed(lambda plan: plan.weighted_exponents, "center")),
    # local configurations (halo: DEPTH): counts by code, exact, summed
    "windows": Partial((), lambda plan: 2 ** (2 ** plan.ndim), _window_codes),
    "borders": Partial((), lambda plan: len(BORDER_CODES), _border_codes),
}

#: voxels of halo each local-configuration partial needs
DEPTH = {"windows": 1, "borders": 2}


class Plan:
    """The partials a request needs and where each lies in a tile's table (plain data: it travels to
    dask workers). ``wanted``: partial names, ``"mu_grid"`` for shape moments up to order 3 along every
    axis (``"mu"`` alone: up to total degree 2)."""

    def __init__(self, wanted, ndim, intensity_dtype, *, crops=False):
        wanted = set(wanted) | ({"bmin", "bmax"} if crops else set())
        self.crops = crops  #: each tile measures the crop properties of its regions too (a ``"crop"`` column)
        grid = "mu_grid" in wanted
        if grid:
            wanted = (wanted - {"mu_grid"}) | {"mu"}
        stack = list(wanted)
        while stack:
            for need in PARTIALS[stack.pop()].needs:
                if need not in wanted:
                    wanted.add(need)
                    stack.append(need)
        self.partials = tuple(name for name in PARTIALS if name in wanted)
        self.ndim = ndim
        self.intensity_dtype = None if intensity_dtype is None else np.dtype(intensity_dtype)
        self.exponents = _moments.exponents(ndim, grid) if "mu" in wanted else None
        self.weighted_exponents = _moments.exponents(ndim, True) if "wmu" in wanted else None
        self.extremes = None if self.intensity_dtype is None else extreme_encoding(self.intensity_dtype)
        self.depth = max([DEPTH.get(name, 0) for name in self.partials] + [0])  #: the halo the tiles need
        self.columns, start = {}, 0
        for name in self.partials:
            width = PARTIALS[name].width(self)
            self.columns[name] = slice(start, start + width)
            start += width
        self.width = start  #: the partials' columns; the label offset's one or two follow

    def voxel_bytes(self, label_itemsize, intensity_itemsize) -> int:
        """Device bytes a tile may need per voxel besides its input tiles and its foreground mask, at worst
        (every voxel a label of its own, so a row per voxel): the labels under the mask, the label index (offsets, counts
        by label, rows of labels, row of each voxel, or a sort's copies), the table and a column being
        computed, coordinates (as nonzero gives them and as float64), intensities under the mask with
        their float64 copy and a product, the deltas with their powers and a product term."""
        ndim = self.ndim
        total = label_itemsize + 5 * 8 + 8 * (self.width + 2 + 1)
        if {"sum", "bmin", "bmax", "wsum"} & set(self.partials):
            total += 2 * 8 * ndim
        if self.intensity_dtype is not None:
            total += intensity_itemsize + 2 * 8
        top = max([max(max(p) for p in e) for e in (self.exponents, self.weighted_exponents) if e] or [0])
        if top:
            total += 8 * ndim * top + 2 * 8
        if "imu" in self.partials:
            total += 4 * 8
        if self.depth:  # each voxel's row, its code, the comparisons, and the halo'd labels (tiles are at
            # least ``depth`` long, so at most 3 voxels per axis each)
            total += 2 * 8 + 4 + label_itemsize * (1 + 3**ndim)
        return total

    def host(self, table, origin, low, label_split):
        """A tile's table (host) as its partials in image coordinates, with the labels (int64)."""
        origin = np.asarray(origin, dtype=np.int64)
        offsets = _take_exact(table[:, self.width:], label_split).astype(np.uint64)
        part = {"label": (np.uint64(low) + offsets).astype(np.int64)}
        for name in self.partials:
            spec = PARTIALS[name]
            value = spec.host(self, table[:, self.columns[name]])
            part[name] = value if spec.place is None else spec.place(value, part, origin)
        return part

    def empty(self):
        part = self.host(np.zeros((0, self.width + 1)), (0,) * self.ndim, 0, False)
        if self.crops:
            part["crop"] = np.empty(0, dtype=object)
        return part


def tile_partial(labels, intensity, origin, plan, backend, halo=None):
    """The partial table of one tile (host NumPy): one row per label present, in image coordinates.

    The tile crosses to ``backend``'s device once per image; what comes back is its small table, in one
    transfer (and one of two numbers before it: the tile's lowest and highest label)."""
    backend = get_backend(backend) if isinstance(backend, str) else backend
    tile = Tile(backend, labels, intensity, plan, halo)
    if tile.empty:
        return plan.empty()
    table = backend.to_host(tile.partial_table())
    return plan.host(table, origin, tile.low, tile.label_split)


# ----------------------------------------------------------------------------- merging on the host


def merge(plan, parts):
    """Partial tables (host) merged into one with a row per label, sorted by label."""
    parts = [p for p in parts if p["label"].size] or list(parts[:1])
    if len(parts) == 1:
        return parts[0]
    labels = np.concatenate([p["label"] for p in parts])
    order = np.argsort(labels, kind="stable")
    labels = labels[order]
    change = labels[1:] != labels[:-1]
    first = np.flatnonzero(np.concatenate([[True], change]))  # where each label's rows start
    index = np.concatenate([[0], np.cumsum(change)])  # the merged row of each row
    joined = {name: np.concatenate([p[name] for p in parts])[order] for name in plan.partials}
    out = {"label": labels[first]}
    if plan.crops:  # a region measured in one tile only is whole there; else it is measured on its crop later
        measured = np.concatenate([p["crop"] for p in parts])[order][first]
        rows = np.diff(np.append(first, labels.size))
        measured[rows > 1] = None
        out["crop"] = measured
    for name in plan.partials:
        how = PARTIALS[name].merge
        if isinstance(how, np.ufunc):
            out[name] = how.reduceat(joined[name], first, axis=0)
        else:
            out[name] = how(name, plan, out, joined, index, first)
    return out


class Merger:
    """Merges partial tables as they come, ``MERGE_EVERY`` at a time per level (a tree), so the host holds
    a few tables per level rather than every tile's."""

    def __init__(self, plan):
        self.plan, self.levels = plan, [[]]

    def add(self, part):
        level = 0
        self.levels[0].append(part)
        while len(self.levels[level]) == MERGE_EVERY:
            merged = merge(self.plan, self.levels[level])
            self.levels[level] = []
            level += 1
            if level == len(self.levels):
                self.levels.append([])
            self.levels[level].append(merged)

    def result(self):
        remaining = [p for level in self.levels for p in level]
        return merge(self.plan, remaining) if remaining else self.plan.empty()
