"""find_margin: how large must the halo be for a function of your own?

Runs the function tiled with growing margins and compares each result with the function on the
whole image. For a neighbourhood function the error drops to zero once the margin reaches its
reach and stays there; the smallest such margin is the halo to pass to :func:`map_tiles`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu_tiler._backends import chunk_backend, get_backend, to_numpy
from gpu_tiler._engine.tiles import map_tiles
from gpu_tiler._io.sources import as_dask


@dataclass(frozen=True)
class MarginReport:
    """Errors of the tiled result against the whole-image result, one per margin tried."""

    margins: tuple[int, ...]
    errors: tuple[float, ...]
    margin: int | None  # smallest margin from which every error is within tolerance; None if none
    tolerance: float
    tile_shape: tuple[int, ...]
    plot: Path | None = None

    def __str__(self):
        found = f"margin {self.margin}" if self.margin is not None else "no margin tried was enough"
        rows = ", ".join(f"{m}: {e:.3g}" for m, e in zip(self.margins, self.errors))
        return f"{found} (tolerance {self.tolerance:g}, tiles {self.tile_shape}); max error by margin: {rows}"


def find_margin(func, image, margins=range(0, 33), *, tile_shape=None, mode="reflect", cval=0.0,
                tolerance=0.0, plot=None, backend=None, **kwargs) -> MarginReport:
    """Find the smallest margin (halo) at which ``func`` tiled equals ``func`` on the whole image.

    ``image`` is a small sample that fits in memory (NumPy, or anything :func:`gpu_tiler.open`
    takes); ``func(tile, **kwargs)`` is run on the whole of it and tiled (``tile_shape``, default a
    quarter of each axis) with each margin in ``margins``, the border extended with ``mode``. The
    error is the largest absolute difference. ``margin`` in the report is the smallest margin from
    which every larger margin tried is within ``tolerance``. With ``plot`` (a path), a PNG of error
    against margin is written there (needs matplotlib). ``func`` runs on ``backend``'s arrays
    (default: the sample's own: NumPy for a host sample, the device's for device chunks).
    """
    x = as_dask(image)
    chosen = chunk_backend(x._meta) if backend is None else get_backend(backend)
    sample = to_numpy(x.compute())
    margins = tuple(int(m) for m in margins)
    if not margins or any(m < 0 for m in margins) or list(margins) != sorted(set(margins)):
        raise ValueError(f"margins={margins!r} must be increasing whole numbers >= 0")
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(f"tolerance={tolerance!r} must be a number >= 0")
    if tile_shape is None:
        tile_shape = tuple(max(1, math.ceil(n / 4)) for n in sample.shape)
    whole = to_numpy(func(chosen.to_backend(sample), **kwargs))
    if whole.shape != sample.shape:
        raise ValueError(f"func returned shape {whole.shape} for an image of shape {sample.shape}; it must keep the shape")
    errors = []
    for m in margins:
        tiled = to_numpy(map_tiles(func, sample, halo=m, mode=mode, cval=cval, tile_shape=tile_shape,
                                   dtype=whole.dtype, backend=chosen.name, **kwargs).compute())
        diff = np.abs(tiled.astype(np.float64) - whole.astype(np.float64))
        errors.append(float(np.nanmax(diff)) if diff.size else 0.0)
    margin = None
    for i in range(len(margins) - 1, -1, -1):
        if errors[i] > tolerance:
            break
        margin = margins[i]
    path = _plot(margins, errors, margin, tolerance, plot, getattr(func, "__name__", "func")) if plot else None
    return MarginReport(margins, tuple(errors), margin, float(tolerance), tuple(tile_shape), path)


def _plot(margins, errors, margin, tolerance, path, name) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is in the test and plot extras
        raise ImportError("find_margin(plot=...) needs matplotlib: pip install 'gpu_tiler[plot]'") from exc
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(margins, errors, "o-", color="tab:blue", label="max |tiled - whole|")
    ax.set_yscale("symlog", linthresh=max(tolerance, 1e-12))
    if margin is not None:
        ax.axvline(margin, color="tab:green", linestyle="--", label=f"margin {margin}")
    if tolerance > 0:
        ax.axhline(tolerance, color="tab:gray", linestyle=":", label=f"tolerance {tolerance:g}")
    ax.set_xlabel("margin (voxels)")
    ax.set_ylabel("error")
    ax.set_title(f"How large must the margin be? ({name})")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
