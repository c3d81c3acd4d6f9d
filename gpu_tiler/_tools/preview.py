"""Preview pictures: a downsampled overview of an image with its tile grid and labels in colour."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gpu_tiler._backends import to_numpy
from gpu_tiler._io.sources import as_dask


def label_colours(labels: np.ndarray) -> np.ndarray:
    """A distinct, stable RGB colour per label id (0 stays black)."""
    ids = labels.astype(np.uint64)
    h = ids * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(29)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(0xFF) for s in (0, 8, 16)], axis=-1).astype(np.float32)
    rgb = 64 + rgb * (191 / 255)  # never too dark to see over the image
    rgb[labels == 0] = 0
    return rgb


def _plane(array, step):
    """The middle plane of any leading axes, every ``step``-th voxel of the last two (lazy)."""
    index = tuple(n // 2 for n in array.shape[:-2]) + (slice(None, None, step),) * min(2, array.ndim)
    return array[index]


def _host(array):
    return to_numpy(array.compute() if hasattr(array, "compute") else array)


def preview(image, path, *, labels=None, max_size: int = 1024, grid=True, alpha: float = 0.45) -> Path:
    """Write a PNG overview of ``image`` (and ``labels`` over it in distinct colours) to ``path``.

    2-D images are shown whole, larger ones by the middle plane of their leading axes; the picture is
    at most ``max_size`` pixels on a side (every n-th pixel). With ``grid`` the image's tile grid (its
    chunks) is drawn in yellow. Returns the path.
    """
    from PIL import Image

    x = as_dask(image)
    if max_size < 16:
        raise ValueError(f"max_size={max_size!r} must be at least 16 pixels")
    if x.ndim == 1:
        x = x[None, :]
    step = max(1, math.ceil(max(x.shape[-2:]) / max_size))
    plane = _host(_plane(x, step)).astype(np.float64)
    finite = plane[np.isfinite(plane)]
    lo, hi = (np.percentile(finite, [1, 99.8]) if finite.size else (0.0, 1.0))
    grey = np.clip((plane - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgb = np.repeat(grey[..., None] * 255, 3, axis=-1)
    if labels is not None:
        lab = as_dask(labels)
        if lab.shape != tuple(x.shape[-lab.ndim:]) and lab.shape != x.shape:
            raise ValueError(f"labels have shape {lab.shape}; the image has {x.shape}: give labels of the image")
        lab_plane = _host(_plane(lab if lab.ndim > 1 else lab[None, :], step))
        colours = label_colours(lab_plane)
        inside = lab_plane > 0
        rgb[inside] = (1 - alpha) * rgb[inside] + alpha * colours[inside]
    if grid:
        for axis in (0, 1):
            edges = np.cumsum(x.chunks[x.ndim - 2 + axis])[:-1] // step
            for e in edges:
                if axis == 0:
                    rgb[e, :, :] = (255, 210, 0)
                else:
                    rgb[:, e, :] = (255, 210, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8)).save(path, format="PNG")
    return path
