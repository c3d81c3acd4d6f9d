"""The demo `make demo` runs: a generated microscopy-like image, smoothed tile by tile into a
zarr store under a small memory budget, checked against SciPy on the whole image."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

import gpu_tiler as gt
from gpu_tiler.data import nuclei

SHAPE = (4096, 4096)
SIGMA = 2.0
BUDGET = "32MiB"
OUT = Path("demo-output") / "nuclei-smoothed.zarr"


def smooth(tile, sigma):
    # the same call on NumPy (SciPy) or CuPy (cupyx) tiles
    return gt.backend_of(tile).ndimage.gaussian_filter(tile, sigma)


def main() -> int:
    print("gpu_tiler demo")
    for device in gt.devices():
        print(f"  device  {device}")
    image = nuclei(SHAPE, chunks=1024, seed=1)
    print(f"  input   generated nuclei image {image.shape} {image.dtype} "
          f"({image.nbytes / 2**20:.0f} MiB), chunks {image.chunksize}")
    halo = math.ceil(4.0 * SIGMA)  # gaussian_filter's default truncate=4.0 reaches this far
    smoothed = gt.map_tiles(smooth, image, halo=halo, mode="reflect", budget=BUDGET, sigma=SIGMA)
    print(f"  plan    {gt.plan_of(smoothed)}")
    print(f"  backend {gt.resolve_backend(image).name}")
    start = time.perf_counter()
    saved = gt.save(smoothed, OUT, overwrite=True)
    seconds = time.perf_counter() - start
    print(f"  saved   {OUT} in {seconds:.2f} s ({image.nbytes / 2**20 / seconds:.0f} MiB/s)")
    whole = ndi.gaussian_filter(image.compute(), SIGMA)
    equal = np.array_equal(saved.compute(), whole)
    print(f"  check   tiled result {'equals' if equal else 'DIFFERS FROM'} scipy.ndimage.gaussian_filter "
          f"on the whole image, bit for bit")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
