"""Generated images: lazy, deterministic, the same voxels for any chunking."""
from __future__ import annotations

import dask.array as da
import numpy as np


def _hash_noise(coords, seed):
    """Uniform noise in [0, 1) from global voxel coordinates (independent of chunking)."""
    h = np.full(coords[0].shape, (seed * 0x9E3779B1 + 0x7F4A7C15) & 0xFFFFFFFF, dtype=np.uint64)
    for axis, c in enumerate(coords):
        h ^= (c.astype(np.uint64) + np.uint64(axis * 0x632BE5AB)) * np.uint64(0x85EBCA6B)
        h = (h ^ (h >> np.uint64(13))) * np.uint64(0xC2B2AE35)
        h &= np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    return (h & np.uint64(0xFFFFFF)).astype(np.float32) / np.float32(2**24)


def _nuclei_block(centers, radii, brightness, noise, seed, dtype, block_info=None):
    info = block_info[None]
    location = info["array-location"]
    out = np.zeros(info["chunk-shape"], dtype=np.float32)
    for c, r, b in zip(centers, radii, brightness):
        # the nucleus' bounding box inside this chunk, in chunk coordinates
        box = [(max(lo, int(np.floor(ci - r))), min(hi, int(np.ceil(ci + r)) + 1)) for ci, (lo, hi) in zip(c, location)]
        if any(start >= stop for start, stop in box):
            continue
        grids = np.meshgrid(*(np.arange(start, stop) for start, stop in box), indexing="ij", sparse=True)
        d2 = sum(((g - ci) / r) ** 2 for g, ci in zip(grids, c))
        # a smooth dome; plain arithmetic (no exp) so every chunking gives the same bits
        region = tuple(slice(start - lo, stop - lo) for (start, stop), (lo, _) in zip(box, location))
        out[region] += (b * np.clip(1.0 - d2 * d2, 0.0, 1.0)).astype(np.float32)
    dense = np.meshgrid(*(np.arange(a, b) for a, b in location), indexing="ij")
    out += noise * _hash_noise(dense, seed)
    if np.issubdtype(dtype, np.integer):
        out = np.clip(out * 1000, 0, np.iinfo(dtype).max)
    return out.astype(dtype)


def nuclei(shape=(2048, 2048), *, density=3.0, radius=12.0, noise=0.2, seed=0, dtype=np.float32, chunks=512):
    """A lazy fluorescence-like image of blob-shaped 'nuclei' on a noisy background.

    Any number of axes. Nuclei centres, radii and brightness come from ``seed``; each chunk is
    computed from the nuclei near it, so the image is the same for every ``chunks``. ``density``
    scales the number of nuclei (1.0: about one per (8 * radius)^ndim voxels). Integer ``dtype``
    scales intensities by 1000.
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    rng = np.random.default_rng(seed)
    count = max(1, int(density * np.prod(shape) / (8 * radius) ** ndim))
    centers = rng.uniform(0, 1, size=(count, ndim)) * np.array(shape)
    radii = rng.uniform(0.6, 1.4, size=count) * radius
    brightness = rng.uniform(0.5, 1.0, size=count)
    template = da.empty(shape, chunks=chunks, dtype=dtype)
    return da.map_blocks(
        _nuclei_block, centers, radii, brightness, float(noise), int(seed), np.dtype(dtype),
        chunks=template.chunks, dtype=dtype, meta=np.empty((0,) * ndim, dtype=dtype),
        name=f"gpu_tiler-nuclei-{seed}-{'x'.join(map(str, shape))}-{density}-{radius}-{noise}-{np.dtype(dtype)}",
    )
