"""dask-image's ``ndmeasure`` functions, tile by tile, with SciPy's ``labels``/``index`` rules and results.

Each function takes ``(image, label_image=None, index=None)`` as dask-image's do and returns what
``scipy.ndimage.<function>(image, labels, index)`` returns on the whole image (the same types: NumPy
scalars, arrays shaped like ``index``, lists of tuples), computed without the whole image in memory:

- ``label_image=None``: the whole image is one region; ``index=None``: every voxel with a label above 0 is
  one region; a scalar ``index``: the voxels of that label; an array ``index``: one result per element, in
  its shape, ``0`` a region like any other (the background), repeated labels repeated.
- Labels in ``index`` with no voxel: 0 for sums, NaN (with NumPy's warning) for means and variances, 0 and
  position ``(0, ..., 0)`` for extrema, ``default`` for :func:`labeled_comprehension`, None for
  :func:`histogram`, and for :func:`median` the value SciPy gives (the lowest value of the lowest label in
  the image). A scalar ``index`` with no voxel: SciPy's error for minima and maxima, NaN for means.

The image is planned in tiles from the memory budget (as :func:`gpu_tiler.map_tiles`), each tile reduced on
its backend's device to one small row per region (counts, sums, extrema with their first position, per-axis
sums, histograms) that comes to the host in one transfer per quantity and is merged there as the tiles
finish. :func:`median` and :func:`labeled_comprehension` need each region's values whole: they are gathered
(host) in batches of regions that fit the budget, one pass over the tiles per batch; a region larger than the
budget is a ``ValueError`` naming it. Exactness: see ``docs/measure.md``.
"""
from __future__ import annotations

import functools
import warnings

import dask.array as da
import numpy as np

from gpu_tiler._backends import get_backend, resolve_backend
from gpu_tiler._execution.bounded import run_bounded
from gpu_tiler._io.sources import as_dask
from gpu_tiler._planning.checks import check_image
from gpu_tiler._planning.plan import plan_tiles
from gpu_tiler.measure._partials import _scatter, extreme_encoding

#: device bytes per voxel a tile's reduction may use besides its inputs: group ids, float64 values,
#: positions, coordinates, a product and a mask
_WORKING_BYTES = 6 * 8 + 1


# ----------------------------------------------------------------------------- the request


class _Job:
    """Which voxels form which region (the ``labels``/``index`` rule), as plain data for the tiles."""

    def __init__(self, image, labels, index, *, comprehension=False):
        self.image = check_image(as_dask(image), name="image")
        self.dtype = np.dtype(self.image.dtype)
        self.labels = None
        self.shape = self.image.shape
        self.scalar = np.isscalar(index)
        if labels is None:
            if index is not None and comprehension:
                raise ValueError("index without defined labels")
            self.mode, self.keys = "all", None
        else:
            lab = as_dask(labels)
            try:
                shape = np.broadcast_shapes(self.image.shape, lab.shape)
            except ValueError:
                raise ValueError(f"image has shape {self.image.shape} and label_image {lab.shape}: they must have "
                                 f"the same shape (excepting dimensions with width 1)") from None
            self.image, self.labels = (x if x.shape == shape else da.broadcast_to(x, shape) for x in (self.image, lab))
            self.labels = self.labels.rechunk(self.image.chunks)
            self.shape = shape
            if index is None:
                self.mode, self.keys = "positive", None
            elif self.scalar and not comprehension:
                self.mode, self.keys = "scalar", index
            else:
                self.mode = "array"
                self.index = np.atleast_1d(index) if comprehension else np.asarray(index)
                if comprehension:
                    label_dtype = np.dtype(self.labels.dtype)
                    if np.any(self.index.astype(label_dtype).astype(self.index.dtype) != self.index):
                        raise ValueError(f"Cannot convert index values from <{self.index.dtype}> to <{label_dtype}> "
                                         f"(labels' type) without loss of precision")
                    self.index = self.index.astype(label_dtype)
                self.keys = np.unique(self.index)
        self.groups = len(self.keys) if self.mode == "array" else 1
        self.wanted = ()
        self.means = None
        self.edges = None
        self.gather = None  #: group ids whose values are gathered (median, labeled_comprehension)

    def where(self):
        """Each element of an array ``index``: its group (row) among the sorted distinct labels."""
        return np.searchsorted(self.keys, self.index)

    def tile_args(self):
        return {k: v for k, v in vars(self).items() if k not in ("image", "labels")}


def _sum_dtype(dtype):
    """The dtype ``numpy.sum`` gives an array of ``dtype`` (SciPy's sums of one region)."""
    return np.zeros(1, dtype=dtype).sum().dtype


# ----------------------------------------------------------------------------- one tile on its device


def _select(xp, image, labels, job):
    """The tile's voxels in a region: their values, their group, and their local flat indices."""
    flat_values = image.reshape(-1)
    if job["mode"] == "all":
        return flat_values, None, None
    flat_labels = labels.reshape(-1)
    if job["mode"] == "positive":
        selected = xp.nonzero(flat_labels > 0)[0]
        return flat_values[selected], None, selected
    if job["mode"] == "scalar":
        selected = xp.nonzero(flat_labels == job["keys"])[0]
        return flat_values[selected], None, selected
    keys = xp.asarray(job["keys"])
    row = xp.searchsorted(keys, flat_labels)
    row = xp.minimum(row, keys.size - 1)
    selected = xp.nonzero(keys[row] == flat_labels)[0]
    return flat_values[selected], row[selected], selected


def _tile(image, labels=None, *, job, backend, block_info=None):
    """One tile's reductions (host NumPy, one row per group)."""
    backend = get_backend(backend)
    xp = backend.xp
    origin = tuple(start for start, _ in block_info[0]["array-location"])
    image = backend.to_backend(image)
    labels = None if labels is None else backend.to_backend(labels)
    values, group, local = _select(xp, image, labels, job)
    n = job["groups"]
    wanted = job["wanted"]
    out = {}
    count = (xp.bincount(group, minlength=n) if group is not None
             else xp.asarray([values.size], dtype=np.int64))
    if "count" in wanted:
        out["count"] = count
    if group is None:
        def total(weights, dtype=np.float64):
            return weights.sum(dtype=dtype).reshape(1)
    else:
        def total(weights, dtype=np.float64):
            return xp.bincount(group, weights=weights, minlength=n)

    if "sum" in wanted:
        out["sum"] = total(values, job["sum_dtype"])
    coordinates = None
    if {"com", "minpos", "maxpos"} & set(wanted):
        local_flat = xp.arange(values.size, dtype=np.int64) if local is None else local.astype(np.int64)
        coordinates = [c + o for c, o in zip(xp.unravel_index(local_flat, image.shape), origin)]
    if "com" in wanted:
        doubles = values.astype(np.float64)
        out["com"] = xp.stack([total(doubles * c.astype(np.float64)) for c in coordinates], axis=1)
    if "sumsq" in wanted:
        means = xp.asarray(job["means"])
        centred = values.astype(np.float64) - (means[group] if group is not None else means[0])
        out["sumsq"] = total(centred * centred)
    for kind in ("min", "max"):
        if kind in wanted or f"{kind}pos" in wanted:
            out.update(_extreme(xp, kind, values, group, n, coordinates, job["shape"], count))
    if "hist" in wanted:
        edges = xp.asarray(job["edges"])
        bins = edges.size - 1
        inside = xp.nonzero((values >= edges[0]) & (values <= edges[-1]))[0]
        which = xp.minimum(xp.searchsorted(edges, values[inside], side="right") - 1, bins - 1)
        rows = xp.zeros(inside.size, dtype=np.int64) if group is None else group[inside]
        out["hist"] = xp.bincount(rows * bins + which, minlength=n * bins).reshape(n, bins)
    if "labelmin" in wanted:  # the lowest label of the tile and its lowest value (SciPy's median of no voxel)
        flat_labels = labels.reshape(-1)
        low = flat_labels.min()
        out["labelmin"] = xp.stack([low.astype(np.float64), image.reshape(-1)[flat_labels == low].min().astype(np.float64)])
    host = {name: backend.to_host(value) for name, value in out.items()}
    for kind in ("min", "max"):
        if kind in host:
            host[kind] = _decode(host[kind], np.dtype(image.dtype))
        if f"{kind}pos" in host:
            host[f"{kind}pos"] = host[f"{kind}pos"].astype(np.int64)
    if job["gather"] is not None and group is not None:
        keep = xp.nonzero(xp.asarray(job["gather"])[group])[0]
        flat = _global_flat(xp, local[keep], image.shape, origin, job["shape"])
        host["values"] = tuple(backend.to_host(x) for x in (group[keep], flat, values[keep]))
    elif job["gather"] is not None:
        local_flat = xp.arange(values.size, dtype=np.int64) if local is None else local
        flat = _global_flat(xp, local_flat, image.shape, origin, job["shape"])
        host["values"] = tuple(backend.to_host(x) for x in (xp.zeros(values.size, dtype=np.int64), flat, values))
    return host


def _global_flat(xp, local_flat, tile_shape, origin, shape):
    coordinates = xp.unravel_index(local_flat.astype(np.int64), tile_shape)
    flat = xp.zeros(local_flat.size, dtype=np.int64)
    for c, o, n in zip(coordinates, origin, shape):
        flat = flat * n + (c + o)
    return flat


def _extreme(xp, kind, values, group, n, coordinates, shape, count):
    """Per group the lowest (highest) value, encoded in a type the device's atomics take (as regionprops'
    extrema), and the first (C order) global flat index where it is (uint64; the largest: no voxel)."""
    name = "minimum" if kind == "min" else "maximum"
    dtype, flip = extreme_encoding(values.dtype)
    encoded = (values.astype(np.int64) ^ np.int64(-(2**63))).astype(np.uint64) if flip else values.astype(dtype)
    at = xp.zeros(values.size, dtype=np.intp) if group is None else group
    found = _scatter(xp, name, at, n, encoded)
    out = {kind: found}
    if coordinates is not None:
        flat = xp.zeros(values.size, dtype=np.uint64)
        for c, size in zip(coordinates, shape):
            flat = flat * np.uint64(size) + c.astype(np.uint64)
        hit = xp.nonzero(encoded == found[at])[0]
        out[f"{kind}pos"] = _scatter(xp, "minimum", at[hit], n, flat[hit])
    return out


def _decode(value, dtype):
    """Extrema as :func:`_extreme` encoded them, back in the image's dtype (host)."""
    encoding, flip = extreme_encoding(dtype)
    if flip:
        value = (value.astype(np.uint64) ^ np.uint64(1 << 63)).view(np.int64)
    return value.astype(dtype)


# ----------------------------------------------------------------------------- on the host


class _Merged:
    """Tile reductions merged as they come (host NumPy)."""

    def __init__(self, job):
        self.job, self.part, self.values = job, None, []

    def add(self, index, part):
        if "values" in part:
            self.values.append(part.pop("values"))
        if self.part is None:
            self.part = part
            return
        merged = self.part
        for name, value in part.items():
            if name in ("count", "sum", "com", "sumsq", "hist"):
                merged[name] = merged[name] + value
            elif name == "labelmin":
                if value[0] < merged[name][0] or (value[0] == merged[name][0] and value[1] < merged[name][1]):
                    merged[name] = value
        for kind in ("min", "max"):
            if kind in part:
                _merge_extreme(merged, part, kind)


def _merge_extreme(merged, part, kind):
    a, b = merged[kind], part[kind]
    present_a, present_b = merged["count"] > 0, part["count"] > 0
    better = (b < a) if kind == "min" else (b > a)
    take = present_b & (~present_a | better)
    if f"{kind}pos" in merged:
        tie = present_a & present_b & (a == b)
        pa, pb = merged[f"{kind}pos"], part[f"{kind}pos"]
        merged[f"{kind}pos"] = np.where(take, pb, np.where(tie, np.minimum(pa, pb), pa))
    merged[kind] = np.where(take, b, a)


def _run(job, wanted, budget=None, backend=None):
    """Every tile reduced and merged: the merged quantities (one row per group)."""
    job.wanted = tuple(wanted) + (("count",) if "count" not in wanted else ())
    job.sum_dtype = np.float64 if job.mode == "array" or job.dtype.kind in "fc" else _sum_dtype(job.dtype)
    images = [job.image] + ([] if job.labels is None else [job.labels])
    chosen = resolve_backend(*images, backend=backend)
    widest = max((np.dtype(x.dtype) for x in images), key=lambda d: d.itemsize)
    unit = widest.itemsize * len(images)
    tiles = plan_tiles(job.shape, widest, 0, budget, out_dtype=np.bool_, working_copies=-(-_WORKING_BYTES // unit),
                       chunks=job.image.chunks, backend=chosen, n_inputs=len(images))
    inputs = [x.rechunk(tiles.chunks) for x in images]
    blocks = da.map_blocks(functools.partial(_tile, job=job.tile_args(), backend=chosen.name), *inputs,
                           dtype=object, meta=np.empty((0,) * len(job.shape), dtype=object))
    merged = _Merged(job)
    run_bounded(blocks, merged.add, tiles.tiles_in_flight)
    job.budget_bytes = tiles.budget_bytes
    return merged


def _spread(job, value):
    """A per-group array as SciPy gives an array ``index``'s results (its shape, its repeats)."""
    return value[job.where()]


def _stats(image, label_image, index, *, centered=False, budget=None):
    """SciPy's ``_stats``: (count, sum[, centred sum of squares]), each in SciPy's form."""
    job = _Job(image, label_image, index)
    merged = _run(job, ("count", "sum"), budget).part
    count, total = merged["count"], merged["sum"]
    if job.mode != "array":
        count = int(count[0])
        total = total.astype(_sum_dtype(job.dtype))[0]
        if not centered:
            return count, total
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.float64(total) / count if count else np.float64(np.nan)
        mean_dtype = np.zeros(1, dtype=job.dtype).mean().dtype
        if count == 0:
            warnings.warn("Mean of empty slice.", RuntimeWarning, stacklevel=3)
        job.means = np.asarray([mean], dtype=np.float64)
        centred = _run(job, ("sumsq",), budget).part["sumsq"]
        return count, total, centred.astype(mean_dtype)[0]
    if not centered:
        return _spread(job, count), _spread(job, total)
    with np.errstate(invalid="ignore", divide="ignore"):
        job.means = total / count
    job.means[count == 0] = 0
    centred = _run(job, ("sumsq",), budget).part["sumsq"]
    return _spread(job, count), _spread(job, total), _spread(job, centred)


# ----------------------------------------------------------------------------- dask-image's functions


def sum_labels(image, label_image=None, index=None, *, budget=None):
    """``scipy.ndimage.sum_labels`` on the whole image (dask-image's ``ndmeasure.sum_labels``)."""
    return _stats(image, label_image, index, budget=budget)[1]


def sum(image, label_image=None, index=None, *, budget=None):  # noqa: A001 - SciPy's and dask-image's name
    """The old name of :func:`sum_labels`, as in SciPy and dask-image."""
    return sum_labels(image, label_image, index, budget=budget)


def mean(image, label_image=None, index=None, *, budget=None):
    """``scipy.ndimage.mean`` on the whole image."""
    count, total = _stats(image, label_image, index, budget=budget)
    return total / np.asanyarray(count).astype(np.float64)


def variance(image, label_image=None, index=None, *, budget=None):
    """``scipy.ndimage.variance`` on the whole image (two passes: the means, then squares about them)."""
    count, _, centred = _stats(image, label_image, index, centered=True, budget=budget)
    return centred / np.asanyarray(count).astype(float)


def standard_deviation(image, label_image=None, index=None, *, budget=None):
    """``scipy.ndimage.standard_deviation`` on the whole image."""
    return np.sqrt(variance(image, label_image, index, budget=budget))


def area(image, label_image=None, index=None, *, budget=None):
    """dask-image's ``ndmeasure.area``: the voxel count of each region (the image's size without labels)."""
    if label_image is None:
        return np.prod(np.array(as_dask(image).shape))
    job = _Job(image, label_image, index)
    count = _run(job, ("count",), budget).part["count"]
    if job.mode != "array":
        return np.int64(count[0])
    return _spread(job, count).astype(int)


def _extremes(image, label_image, index, kinds, budget):
    job = _Job(image, label_image, index)
    merged = _run(job, kinds, budget).part
    if job.mode != "array":
        if merged["count"][0] == 0:
            raise ValueError(f"zero-size array to reduction operation {'minimum' if 'min' in kinds else 'maximum'} "
                             f"which has no identity")
        return job, {k: merged[k][0] for k in kinds}
    absent = merged["count"] == 0
    out = {}
    for k in kinds:
        value = merged[k].copy()
        value[absent] = 0
        out[k] = _spread(job, value)
    return job, out


def minimum(image, label_image=None, index=None, *, budget=None):
    """``scipy.ndimage.minimum`` on the whole image."""
    return _extremes(image, label_image, index, ("min",), budget)[1]["min"]


def maximum(image, label_image=None, index=None, *, budget=None):
    """``scipy.ndimage.maximum`` on the whole image."""
    return _extremes(image, label_image, index, ("max",), budget)[1]["max"]


def _positions(job, flat):
    dims = np.array(job.shape)
    dim_prod = np.cumprod([1] + list(dims[:0:-1]))[::-1]
    if job.mode != "array":
        return tuple((np.int64(flat) // dim_prod) % dims)
    return [tuple(v) for v in (np.asarray(flat).reshape(-1, 1) // dim_prod) % dims]


def minimum_position(image, label_image=None, index=None, *, budget=None):
    """``scipy.ndimage.minimum_position`` on the whole image (the first position in C order on ties)."""
    job, out = _extremes(image, label_image, index, ("min", "minpos"), budget)
    return _positions(job, out["minpos"])


def maximum_position(image, label_image=None, index=None, *, budget=None):
    """``scipy.ndimage.maximum_position`` on the whole image (the first position in C order on ties)."""
    job, out = _extremes(image, label_image, index, ("max", "maxpos"), budget)
    return _positions(job, out["maxpos"])


def extrema(image, label_image=None, index=None, *, budget=None):
    """``scipy.ndimage.extrema``: (minima, maxima, their positions), on the whole image."""
    job, out = _extremes(image, label_image, index, ("min", "minpos", "max", "maxpos"), budget)
    return out["min"], out["max"], _positions(job, out["minpos"]), _positions(job, out["maxpos"])


def center_of_mass(image, label_image=None, index=None, *, budget=None):
    """``scipy.ndimage.center_of_mass`` on the whole image."""
    job = _Job(image, label_image, index)
    merged = _run(job, ("sum", "com"), budget).part
    if job.mode != "array":
        normalizer = merged["sum"].astype(_sum_dtype(job.dtype))[0]
        return tuple(merged["com"][0, a] / normalizer for a in range(len(job.shape)))
    normalizer = _spread(job, merged["sum"])
    results = [_spread(job, merged["com"][:, a]) / normalizer for a in range(len(job.shape))]
    return [tuple(v) for v in np.array(results).T]


def histogram(image, min, max, bins, label_image=None, index=None, *, budget=None):  # noqa: A002
    """``scipy.ndimage.histogram`` on the whole image (counts merged exactly across tiles)."""
    job = _Job(image, label_image, index, comprehension=True)
    job.edges = np.linspace(min, max, bins + 1)
    merged = _run(job, ("hist",), budget).part
    if job.mode != "array":
        return merged["hist"][0]
    out = np.empty(job.index.shape, dtype=object)
    out[:] = None
    for i, row in enumerate(job.where()):
        if merged["count"][row]:
            out[i] = merged["hist"][row]
    return out[0] if job.scalar else out


def _gathered(job, budget, backend=None):
    """Each group's values (and global flat positions), in C order, in batches that fit the budget."""
    counts = _run(job, ("count",), budget, backend).part["count"]
    itemsize = job.dtype.itemsize + 3 * 8
    limit = job.budget_bytes
    order = np.argsort(counts, kind="stable")
    batches, batch, size = [], [], 0
    for g in order:
        need = int(counts[g]) * itemsize
        if need > limit:
            label = {"array": lambda: f"region {job.keys[g]}", "scalar": lambda: f"region {job.keys}",
                     "positive": lambda: "the region of every label above 0", "all": lambda: "the whole image"}
            raise ValueError(f"{label[job.mode]()} has {int(counts[g])} voxels, {need} bytes with their positions, more "
                             f"than the memory budget of {limit} bytes: raise budget= (or memory_budget) to at "
                             f"least {need} bytes")
        if counts[g] == 0:
            continue
        if size + need > limit and batch:
            batches.append(batch)
            batch, size = [], 0
        batch.append(g)
        size += need
    if batch:
        batches.append(batch)
    for batch in batches:
        job.gather = np.zeros(job.groups, dtype=bool)
        job.gather[batch] = True
        merged = _run(job, ("count",), budget, backend)
        groups = np.concatenate([v[0] for v in merged.values])
        flat = np.concatenate([v[1] for v in merged.values])
        values = np.concatenate([v[2] for v in merged.values])
        order = np.lexsort((flat, groups))
        groups, flat, values = groups[order], flat[order], values[order]
        starts = np.searchsorted(groups, batch)
        stops = np.searchsorted(groups, batch, side="right")
        for g, a, b in zip(batch, starts, stops):
            yield g, values[a:b], flat[a:b]
    job.gather = None


def labeled_comprehension(image, label_image, index, func, out_dtype, default, pass_positions=False, *,
                          budget=None):
    """``scipy.ndimage.labeled_comprehension`` on the whole image: ``func`` gets each region's values (and
    flat positions) in C order, gathered within the budget."""
    job = _Job(image, label_image, index, comprehension=True)
    if job.mode != "array":
        job.keys = None
        job.groups = 1
        ((_, values, flat),) = list(_gathered(job, budget)) or [(0, np.zeros(0, job.dtype), np.zeros(0, np.int64))]
        return func(values, flat) if pass_positions else func(values)
    out_dtype = np.dtype(out_dtype)
    temp = np.empty(job.keys.shape, out_dtype)
    temp[:] = default
    for g, values, flat in _gathered(job, budget):
        temp[g] = func(values, flat) if pass_positions else func(values)
    output = temp[job.where()]
    return output[0] if job.scalar else output


def median(image, label_image=None, index=None, *, budget=None):
    """``scipy.ndimage.median`` on the whole image (each region's values gathered within the budget)."""
    job = _Job(image, label_image, index)
    if job.mode != "array":
        job.groups = 1
        found = list(_gathered(job, budget))
        return np.median(found[0][1] if found else np.zeros(0, dtype=job.dtype))
    integer = np.issubdtype(job.dtype, np.integer) or np.issubdtype(job.dtype, np.bool_)
    result = np.zeros(job.groups, dtype=np.float64 if integer else job.dtype)
    present = np.zeros(job.groups, dtype=bool)
    for g, values, _ in _gathered(job, budget):
        values = np.sort(values)
        step = (values.size - 1) // 2
        low, high = values[step], values[values.size - 1 - step]
        result[g] = (low.astype("d") + high.astype("d")) / 2.0 if integer else (low + high) / 2.0
        present[g] = True
    if not present.all():  # SciPy's value for a label with no voxel: the lowest value of the lowest label
        job.wanted = ()
        low = _run(job, ("labelmin",), budget).part["labelmin"][1]
        low = np.asarray(low).astype(job.dtype)
        result[~present] = (low.astype("d") + low.astype("d")) / 2.0 if integer else (low + low) / 2.0
    return _spread(job, result)


__all__ = [
    "area", "center_of_mass", "extrema", "histogram", "labeled_comprehension", "maximum", "maximum_position",
    "mean", "median", "minimum", "minimum_position", "standard_deviation", "sum", "sum_labels", "variance",
]
