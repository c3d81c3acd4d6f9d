"""regionprops across tiles: per-label measurements equal to scikit-image's on the whole image.

The tiles are planned from the memory budget and run at most ``tiles_in_flight`` at a time. Each tile
of the label image (with the matching tile of the intensity image) is reduced on its device to a small
*partial table*, one row per label present in it (``_partials``), which comes to the host in one
transfer; the host merges the tables by label and finishes each requested column from the merged table
(``_properties``: one table declaring every property, what it needs and how it is finished).
"""
from __future__ import annotations

import functools

import dask.array as da
import numpy as np

from gpu_tiler._backends import resolve_backend
from gpu_tiler._execution.bounded import run_bounded
from gpu_tiler._io.sources import as_dask
from gpu_tiler._planning.checks import check_image
from gpu_tiler._planning.plan import plan_tiles
from gpu_tiler.measure._partials import Merger, Plan, tile_partial
from gpu_tiler.measure._properties import (
    DEFAULT_INTENSITY_PROPERTIES,
    DEFAULT_PROPERTIES,
    SUPPORTED_PROPERTIES,
    normalize_properties,
    partials_of,
    table,
)


def regionprops(labels, intensity=None, properties=None, *, backend=None, budget=None):
    """Measure every labelled object of an image larger than memory, tile by tile.

    Returns a ``pandas.DataFrame`` with one row per label (sorted by label; voxels labelled 0 or
    below are background) whose columns are those of
    ``skimage.measure.regionprops_table(labels, intensity, properties=properties)`` on the whole
    image, with the same names (``bbox-0``..., ``centroid-1``, ``moments_central-2-0``...) and
    dtypes, without the whole image ever being in memory.

    ``labels``: an integer label image (dask, zarr, NumPy or CuPy array, or a path gpu_tiler can
    open). ``intensity``: an image of the same shape. Tiles are planned as :func:`gpu_tiler.map_tiles`
    plans them, as large as the tiles in flight fit ``budget`` (bytes, ``"2GiB"``, a fraction of free
    memory; default: the device's budget) on the labels' chunk edges, and run at most that many at a
    time. Each tile is reduced on its device to a table with one row per label it contains (counts,
    coordinate sums, bounding boxes, intensity sums and extrema, central moments), which comes to the
    host at once, where the tables are merged by label, so memory grows with the labels, not the
    voxels. ``backend``: ``"numpy"``, ``"cupy"`` or None for the configured choice (as in
    :func:`gpu_tiler.map_tiles`).

    ``properties`` (default ``label, area, centroid, bbox``, plus ``intensity_mean``,
    ``intensity_min`` and ``intensity_max`` with an intensity image) may name any of
    :data:`SUPPORTED_PROPERTIES`. Bit-identical to scikit-image on every CPU, because they are
    computed from exact integer sums with scikit-image's operations in its order and scalar form
    (see ``docs/measure.md``): ``label``, ``num_pixels``, ``bbox``, ``area``, ``area_bbox``,
    ``extent``, ``equivalent_diameter_area``, ``centroid``, ``centroid_local``, the extrema and,
    for an integer intensity image, ``intensity_mean``, ``centroid_weighted`` and
    ``centroid_weighted_local``; raw ``moments`` too while they stay below 2**53. Other float
    columns built from sums (central and weighted moments, inertia tensors, axis lengths, standard
    deviation, means of float intensities) equal scikit-image's to float64 rounding (about 1e-12
    relative to the size of the quantity) because the sums are added in another order; for float32
    intensities scikit-image accumulates ``intensity_mean`` and ``intensity_std`` in float32, so
    those agree to float32 rounding. Properties that need a whole object at once (``perimeter``,
    ``solidity``, ``eccentricity``...) are a ``ValueError``.
    """
    lab = as_dask(labels)
    dtype = np.dtype(lab.dtype)
    if not np.issubdtype(dtype, np.integer):
        raise ValueError(
            f"labels has dtype {dtype}; regionprops needs an integer label image "
            f"(label a mask first, e.g. with gpu_tiler.label or scipy.ndimage.label)"
        )
    if lab.ndim == 0:
        raise ValueError("labels is 0-d; give a label image with at least one axis")
    images = [lab]
    if intensity is not None:
        plain = check_image(as_dask(intensity), name="intensity")
        if plain.shape != lab.shape:
            raise ValueError(
                f"intensity has shape {plain.shape} but labels has shape {lab.shape}; give an intensity image "
                f"of the labels' shape (one channel; measure channels one call each)"
            )
        images.append(plain)
    names = normalize_properties(properties, intensity is not None, lab.ndim)
    plan = Plan(partials_of(names), lab.ndim, None if intensity is None else images[1].dtype)
    chosen = resolve_backend(*images, backend=backend)
    tiles = plan_measure(plan, images, budget, chosen)
    blocks = da.map_blocks(
        functools.partial(_tile_block, plan=plan, backend=chosen.name),
        *(image.rechunk(tiles.chunks) for image in images),
        dtype=object, meta=np.empty((0,) * lab.ndim, dtype=object),
    )
    merger = Merger(plan)
    run_bounded(blocks, lambda index, part: merger.add(part), tiles.tiles_in_flight)
    return table(names, merger.result(), plan)


def plan_measure(plan, images, budget, backend):
    """The tiles regionprops reads: ``tiles_in_flight`` of them, each with its inputs, its foreground mask
    (the plan's output tile) and the device memory its partials need per voxel (the working copies), fit
    the budget."""
    widest = max((image.dtype for image in images), key=lambda d: d.itemsize)
    per_voxel = plan.voxel_bytes(images[0].dtype.itemsize, images[-1].dtype.itemsize if len(images) > 1 else 0)
    unit = widest.itemsize * len(images)
    return plan_tiles(
        images[0].shape, widest, 0, budget, out_dtype=np.bool_, working_copies=-(-per_voxel // unit),
        chunks=images[0].chunks, backend=backend, n_inputs=len(images),
    )


def _tile_block(labels, intensity=None, *, plan, backend, block_info=None):
    origin = tuple(start for start, _ in block_info[0]["array-location"])
    return tile_partial(labels, intensity, origin, plan, backend)


__all__ = ["DEFAULT_PROPERTIES", "SUPPORTED_PROPERTIES", "regionprops"]
