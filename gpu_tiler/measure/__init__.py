"""regionprops across tiles: per-label measurements equal to scikit-image's on the whole image.

The tiles are planned from the memory budget and run at most ``tiles_in_flight`` at a time. Each tile
of the label image (with the matching tile of the intensity image) is reduced on its device to a small
*partial table*, one row per label present in it (``_partials``), which comes to the host in one
transfer; the host merges the tables by label and finishes each requested column from the merged table
(``_properties``: one table declaring every property, what it needs and how it is finished).
"""
from __future__ import annotations

import functools
import math

import dask
import dask.array as da
import numpy as np

from gpu_tiler._backends import get_backend, resolve_backend
from gpu_tiler._execution.bounded import run_bounded
from gpu_tiler._io.sources import as_dask
from gpu_tiler._planning.checks import check_image
from gpu_tiler._planning.plan import chunk_bounds, plan_tiles, strip_order
from gpu_tiler.measure._crops import CropRequest, Failed, normalize_spacing
from gpu_tiler.measure._crops import columns as crop_columns
from gpu_tiler.measure._partials import Merger, Plan, tile_partial
from gpu_tiler.measure._properties import (
    DEFAULT_PROPERTIES,
    PROPERTIES,
    SUPPORTED_PROPERTIES,
    normalize_properties,
    partial_columns,
    partials_of,
)


def regionprops(labels, intensity=None, properties=None, *, extra_properties=None, spacing=None, offset=None,
                separator="-", backend=None, budget=None):
    """Measure every labelled object of an image larger than memory, tile by tile.

    Returns a ``pandas.DataFrame`` with one row per label (sorted by label; voxels labelled 0 or
    below are background) whose columns are those of ``skimage.measure.regionprops_table(labels,
    intensity, properties=properties, extra_properties=..., spacing=..., separator=...)`` on the whole
    image, with the same names (``bbox-0``..., ``centroid-1``, ``moments_central-2-0``...; old names such
    as ``bbox_area`` too) and dtypes, without the whole image ever being in memory.

    ``labels``: an integer label image (dask, zarr, NumPy or CuPy array, or a path gpu_tiler can
    open). ``intensity``: an image of the same shape, or with one more (last) axis of channels. Tiles are
    planned as :func:`gpu_tiler.map_tiles` plans them, as large as the tiles in flight fit ``budget``
    (bytes, ``"2GiB"``, a fraction of free memory; default: the device's budget) on the labels' chunk
    edges, and run at most that many at a time. ``backend``: ``"numpy"``, ``"cupy"`` or None for the
    configured choice (as in :func:`gpu_tiler.map_tiles`).

    ``properties`` (default ``label, bbox``, as scikit-image) may name any of :data:`SUPPORTED_PROPERTIES`,
    each measured one of two ways. *From partials*: each tile is reduced on its device to a table with
    one row per label it contains (counts, coordinate sums, bounding boxes, intensity sums and extrema,
    moments; and for ``perimeter``, ``perimeter_crofton`` and 2-D ``euler_number``, counts of scikit-image's
    local configuration codes, read with a halo of 1-2 voxels), which comes to the host at once, where the
    tables are merged by label. *On crops*: what needs a region whole (3-D ``euler_number``, ``solidity``,
    convex and filled images and areas, ``feret_diameter_max``, ``image*``, ``coords*``, ``slice``, ``intensity_median``,
    ``eccentricity``, ``orientation``, and ``extra_properties``) is measured by scikit-image's own code: a
    region lying in one tile in that tile's task (on the host), a region crossing tiles once on its
    bounding-box crop of the labels and intensities; so are the properties a ``spacing`` other than 1
    changes, and intensity properties of a multichannel image. A crossing region whose crop (with its
    working copies) exceeds the budget is a ``ValueError`` naming it and the budget it needs.

    ``extra_properties``: functions ``f(region_mask)`` or ``f(region_mask, intensity_crop)``, columns named
    after the function, as scikit-image. ``spacing``: the voxel size per axis. ``offset``: added to
    ``coords`` and ``coords_scaled`` (as ``skimage.measure.regionprops(offset=)``). ``separator``: between a
    property's name and its column's index.

    Exactness (see ``docs/measure.md``): crop properties, the local configurations, integer columns, extrema, ``label``,
    ``num_pixels``, ``bbox``, ``area``, ``area_bbox``, ``extent``, ``equivalent_diameter_area``,
    ``centroid``, ``centroid_local`` and, for an integer intensity image, ``intensity_mean``,
    ``centroid_weighted`` and ``centroid_weighted_local`` are bit-identical to scikit-image on every CPU;
    raw ``moments`` too while they stay below 2**53. Other float columns built from sums (central,
    normalized, weighted and Hu moments, inertia tensors, axis lengths, standard deviation, means of float
    intensities) equal scikit-image's to float64 rounding (about 1e-12 relative to the size of the
    quantity) because the sums are added in another order; for float32 intensities scikit-image
    accumulates ``intensity_mean`` and ``intensity_std`` in float32, so those agree to float32 rounding.
    """
    import pandas as pd

    lab = as_dask(labels)
    dtype = np.dtype(lab.dtype)
    if not np.issubdtype(dtype, np.integer):
        raise ValueError(
            f"labels has dtype {dtype}; regionprops needs an integer label image "
            f"(label a mask first, e.g. with gpu_tiler.label or scipy.ndimage.label)"
        )
    if lab.ndim == 0:
        raise ValueError("labels is 0-d; give a label image with at least one axis")
    plain, channels = None, None
    if intensity is not None:
        plain = check_image(as_dask(intensity), name="intensity")
        if plain.shape[:lab.ndim] != lab.shape or plain.ndim not in (lab.ndim, lab.ndim + 1):
            raise ValueError(
                f"intensity has shape {plain.shape} but labels has shape {lab.shape}; give an intensity image "
                f"of the labels' shape, or of it with one more (last) axis of channels"
            )
        channels = 0 if plain.ndim == lab.ndim else plain.shape[-1]
    spacing = normalize_spacing(spacing, lab.ndim)
    offset = _normalize_offset(offset, lab.ndim)
    requested = normalize_properties(properties, intensity is not None, lab.ndim, spacing=spacing,
                                     multichannel=bool(channels))
    request = CropRequest([r.name for r in requested if r.crop], extra_properties, spacing, offset, lab.shape,
                          channels)
    # the partials read the intensities only when a property measured from partials needs them
    partial_intensity = plain if channels == 0 and any(
        not r.crop and PROPERTIES[r.name].intensity for r in requested) else None
    plan = Plan(partials_of(requested), lab.ndim, None if partial_intensity is None else plain.dtype,
                crops=bool(request))
    chosen = resolve_backend(*[x for x in (lab, plain) if x is not None], backend=backend)
    images = [lab] + ([plain] if plain is not None and (request or partial_intensity is not None) else [])
    tiles = plan_measure(plan, images, budget, chosen, request)
    budget_bytes = tiles.budget_bytes
    tiles, chunks, carry = _carrying_chunks(tiles, plan, images, chosen, request)
    chunks = _at_least(chunks, plan.depth)
    inputs = [lab.rechunk(chunks)]
    if len(images) > 1:
        inputs.append(plain.rechunk(chunks + (((channels,),) if channels else ())))
    if plan.depth:  # the labels with a halo (0 outside the image) for the local configurations
        depth = {a: min(plan.depth, n) for a, n in enumerate(lab.shape)}  # a shorter axis: one tile (padded)
        inputs.append(da.overlap.overlap(inputs[0], depth=depth, boundary=0))
    if channels:  # the labels get a channel axis of length 1, block for block with the intensities'
        inputs = [x if x.ndim > lab.ndim else x[..., None] for x in inputs]
    blocks = da.map_blocks(
        functools.partial(_tile_block, plan=plan, backend=chosen.name, request=request,
                          partial_intensity=partial_intensity is not None, ndim=lab.ndim, halo=bool(plan.depth)),
        *inputs, dtype=object, meta=np.empty((0,) * inputs[0].ndim, dtype=object),
    )
    merger = Merger(plan)
    order = strip_order(blocks.chunks, [x.chunks for x in images]) if carry else None
    run_bounded(blocks, lambda index, part: merger.add(part), tiles.tiles_in_flight, carry_bytes=carry, order=order)
    part = merger.result()
    by_property = partial_columns(requested, part, plan, separator)
    if request:
        # no region: the columns of scikit-image's dummy region
        values = list(part["crop"]) or [request.dummy(int, None if plain is None else plain.dtype)]
        _measure_crossing(part, values, lab, plain, request, budget_bytes, chosen)
        for given in [r.given for r in requested if r.crop] + [f.__name__ for f in request.extra]:
            columns = crop_columns(request, [given], values, plain is not None, separator)
            by_property[given] = {name: column[:len(part["label"])] for name, column in columns.items()}
    order = [r.given for r in requested] + [f.__name__ for f in request.extra]
    return pd.DataFrame({name: column for given in dict.fromkeys(order) for name, column in by_property[given].items()})


def _normalize_offset(offset, ndim):
    if offset is None:
        return None
    array = np.asarray(offset)
    if array.ndim != 1 or array.size != ndim:
        raise ValueError(f"offset={offset!r}: give one integer per axis of the labels ({ndim})")
    return array


def _measure_crossing(part, values, lab, intensity, request, budget_bytes, backend):
    """Regions present in several tiles, measured once each on their bounding-box crop (host), the crops read
    in batches whose crops and working copies fit the budget (one computation per batch)."""
    for value in values:
        if isinstance(value, Failed):  # a whole region scikit-image cannot measure: its error, as on the whole image
            value.raise_error()
    label_itemsize = lab.dtype.itemsize
    intensity_itemsize = 0 if intensity is None else intensity.dtype.itemsize
    batches, batch, size = [], [], 0
    for i in (i for i, v in enumerate(values) if v is None):
        box = list(zip(part["bmin"][i], part["bmax"][i] + 1))
        needed = request.bytes_for(box, label_itemsize, intensity_itemsize)
        if needed > budget_bytes:
            raise ValueError(
                f"region {int(part['label'][i])} crosses tiles and its bounding box "
                f"{'x'.join(str(b - a) for a, b in box)} needs {needed} bytes with its intensities and scikit-image's "
                f"working copies to be measured whole (for {', '.join(request.wanted)}), more than the memory budget "
                f"of {budget_bytes} bytes: raise budget= (or memory_budget) to at least {needed} bytes, or leave "
                f"those properties out"
            )
        if batch and size + needed > budget_bytes:
            batches.append(batch)
            batch, size = [], 0
        batch.append((i, box))
        size += needed
    batches += [batch] if batch else []
    for batch in batches:
        windows = [tuple(slice(int(a), int(b)) for a, b in box) for _, box in batch]
        crops = dask.compute([lab[w] for w in windows], [] if intensity is None else [intensity[w] for w in windows])
        for k, (i, box) in enumerate(batch):
            # chunks kept on a device come over explicitly
            labels = backend.to_host(crops[0][k])
            crop = None if intensity is None else backend.to_host(crops[1][k])
            values[i] = request.measure(int(part["label"][i]), box, labels, crop, [a for a, _ in box])


def plan_measure(plan, images, budget, backend, request=None):
    """The tiles regionprops reads: ``tiles_in_flight`` of them, each with its inputs, its foreground mask
    (the plan's output tile) and the memory its partials need per voxel (the working copies), and for crop
    properties the tile's host copy, fit the budget."""
    widest = max((image.dtype for image in images), key=lambda d: d.itemsize)
    intensity_bytes = images[-1].dtype.itemsize * (images[-1].shape[-1] if images[-1].ndim > images[0].ndim else 1)
    per_voxel = plan.voxel_bytes(images[0].dtype.itemsize, images[-1].dtype.itemsize if len(images) > 1 else 0)
    if request:  # the tile's host copy, and scikit-image's cached crops of its regions (masks, filled and
        # convex masks, intensity crops: about the tile's voxels again for regions that do not overlap)
        per_voxel += images[0].dtype.itemsize + 2 * (intensity_bytes if len(images) > 1 else 0) + 4
    unit = widest.itemsize * len(images)
    if len(images) > 1 and images[-1].ndim > images[0].ndim:  # channels: count them among the working copies
        per_voxel += intensity_bytes
    return plan_tiles(  # the halo of the local configurations is counted per voxel (Plan.voxel_bytes)
        images[0].shape, widest, 0, budget, out_dtype=np.bool_, working_copies=-(-per_voxel // unit),
        chunks=images[0].chunks, backend=backend, n_inputs=len(images),
    )


def _carrying_chunks(tiles, plan, images, backend, request):
    """Out of core, where a source chunk does not fit a tile, tiles are smaller than the chunks they are cut
    from and, in raster order, each chunk is decoded once per row of tiles. Then, where it can: tiles that split
    each chunk evenly along every axis but the first, run strip by strip (``strip_order``: strips as wide as the
    longest chunks, walked along the first axis), with the chunks carried from batch to batch in room the plan
    keeps: per input, three rows of its chunks across a strip (the row a tile is in and the next, carried, and
    one being decoded), at most a third of the budget. It cannot where an image has channels, where the local
    configurations' halo would read the neighbouring strips' chunks (``plan.depth``), or where the inputs'
    chunk edges do not fall on the strips' edges; then the plan's tiles run in raster order, nothing carried.
    Returns the plan, the tiles' chunks and the bytes to carry."""
    as_planned = tiles, tiles.chunks, 0
    ndim = len(tiles.shape)
    if plan.depth or any(image.ndim != ndim for image in images):
        return as_planned
    if all(t >= max(c) for image in images for t, c in zip(tiles.tile_shape, image.chunks) if c):
        return as_planned
    strips = []
    for axis in range(1, ndim):  # the input with the longest chunks along the axis sets the strips
        strip = max((image.chunks[axis] for image in images), key=lambda c: max(c) if c else 0)
        edges = set(chunk_bounds([strip])[0].tolist())
        if any(not edges <= set(chunk_bounds([image.chunks[axis]])[0].tolist()) for image in images):
            return as_planned
        strips.append(strip)
    across = math.prod(max(c) if c else 1 for c in strips)
    reserve = sum(3 * (max(image.chunks[0]) if image.chunks[0] else 1) * across * image.dtype.itemsize
                  for image in images)
    if reserve > tiles.budget_bytes // 3:
        return as_planned
    try:
        smaller = plan_measure(plan, images, tiles.budget_bytes - reserve, backend, request)
    except ValueError:  # no tile fits what the room leaves
        return as_planned
    if smaller.tiles_in_flight < tiles.tiles_in_flight:
        return as_planned
    chunks = (smaller.chunks[0],) + tuple(_split_evenly(c, t) for c, t in zip(strips, smaller.tile_shape[1:]))
    return smaller, chunks, 2 * reserve // 3


def _split_evenly(chunks, longest):
    """Each of ``chunks`` cut into the fewest near-equal pieces of at most ``longest``."""
    out = []
    for n in chunks:
        pieces = max(1, -(-n // longest))
        base, extra = divmod(n, pieces)
        out += [base + 1] * extra + [base] * (pieces - extra)
    return tuple(out)


def _at_least(chunks, depth):
    """Tile edges with every tile at least ``depth`` long (small ones merged with the next), so that a halo
    of ``depth`` comes from the neighbouring tile alone."""
    if not depth:
        return chunks
    out = []
    for axis in chunks:
        merged = []
        for n in axis:
            if merged and merged[-1] < depth:
                merged[-1] += n
            else:
                merged.append(n)
        if len(merged) > 1 and merged[-1] < depth:
            merged[-2] += merged.pop()
        out.append(tuple(merged))
    return tuple(out)


def _tile_block(labels, *rest, plan, backend, request, partial_intensity, ndim, halo, block_info=None):
    origin = tuple(start for start, _ in block_info[0]["array-location"][:ndim])
    halo_labels = rest[-1] if halo else None
    intensity = rest[0] if len(rest) > halo else None
    if labels.ndim > ndim:  # multichannel: the labels' channel axis of length 1
        labels = labels[..., 0]
        halo_labels = None if halo_labels is None else halo_labels[..., 0]
    part = tile_partial(labels, intensity if partial_intensity else None, origin, plan, backend, halo_labels)
    if request:
        part["crop"] = _measure_in_tile(part, labels, intensity, origin, request, backend)
    return part


def _measure_in_tile(part, labels, intensity, origin, request, backend):
    """Each region of the tile measured on the tile's host copy, unless it touches a side the tile shares
    with another (then it is measured on its crop after the tiles); kept only if in no other tile."""
    out = np.empty(len(part["label"]), dtype=object)
    if not out.size:
        return out
    chosen = get_backend(backend)
    labels = chosen.to_host(labels)
    intensity = None if intensity is None else chosen.to_host(intensity)
    low = np.asarray(origin)
    high = low + np.asarray(labels.shape)
    inner_low, inner_high = low > 0, high < np.asarray(request.shape)
    items, rows = [], []
    for i, label in enumerate(part["label"]):
        start, stop = part["bmin"][i], part["bmax"][i] + 1
        if np.any(inner_low & (start == low)) or np.any(inner_high & (stop == high)):
            continue
        items.append((int(label), list(zip(start, stop))))
        rows.append(i)
    for i, values in zip(rows, request.measure_pieces(items, labels, intensity, origin)):
        out[i] = values
    return out


__all__ = ["DEFAULT_PROPERTIES", "SUPPORTED_PROPERTIES", "regionprops"]
