"""The main job on an embedded default: what ``make demo`` and ``gpu-tiler demo`` run.

A generated nuclei image is denoised (median then Gaussian, one fused pass), thresholded with a
global Otsu level, labelled across tiles, measured, and written out: a zarr store per stage, a CSV
table and a PNG preview. The tiled results are checked against SciPy on the whole image.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

import gpu_tiler as gt
from gpu_tiler._tools.preview import preview
from gpu_tiler.data import nuclei

BUDGET = "64MiB"
PROPERTIES = ("label", "area", "centroid", "bbox", "intensity_mean", "intensity_min", "intensity_max")


def run_demo(out: Path, *, shape=(8192, 8192), overwrite=True, say=print, progress=lambda label: None,
             check=True) -> int:
    out = Path(out)
    say("gpu_tiler demo: denoise, threshold, label and measure a generated nuclei image")
    for device in gt.devices():
        say(f"  device     {device}")
    image = nuclei(shape, chunks=1024, seed=1)
    say(f"  input      generated nuclei {image.shape} {image.dtype} ({image.nbytes / 2**20:.0f} MiB), "
        f"budget {BUDGET}, backend {gt.resolve_backend(image).name}")
    t0 = time.perf_counter()
    with gt.config(memory_budget=BUDGET):
        smoothed = gt.gaussian(gt.median(image, 3), 2.0)
        plan = gt.plan_of(smoothed)
        say(f"  plan       {plan}")
        smoothed = gt.save(smoothed, out / "smoothed.zarr", overwrite=overwrite, progress=progress("denoise"))
        level = gt.threshold_otsu(smoothed)
        mask = gt.threshold(smoothed, level)
        labels, count = gt.label(mask)
        labels = gt.save(labels, out / "labels.zarr", overwrite=overwrite, progress=progress("label"))
        table = gt.regionprops(labels, smoothed, properties=PROPERTIES)
    table_path = out / "nuclei.csv"
    table.to_csv(table_path, index=False)
    picture = preview(smoothed, out / "preview.png", labels=labels, max_size=1024)
    seconds = time.perf_counter() - t0
    say(f"  denoised   {out / 'smoothed.zarr'} (median 3 + Gaussian sigma 2, fused into one pass)")
    say(f"  threshold  global Otsu level {float(level):.4f} from tile histograms")
    say(f"  labelled   {count} nuclei, merged across {math.prod(labels.numblocks)} tiles -> {out / 'labels.zarr'}")
    say(f"  measured   {len(table)} rows x {len(table.columns)} columns -> {table_path}; "
        f"median area {float(np.median(table['area'])) if len(table) else 0:.0f} px")
    say(f"  preview    {picture}")
    say(f"  time       {seconds:.1f} s for {image.nbytes / 2**20:.0f} MiB")
    if not check:
        return 0
    whole = ndi.gaussian_filter(ndi.median_filter(image.compute(), 3), 2.0)
    same_smooth = np.array_equal(np.asarray(smoothed), whole)
    whole_labels, whole_count = ndi.label(whole > level)
    same_labels = whole_count == count and np.array_equal(np.asarray(labels), whole_labels)
    say(f"  check      denoised {'equals' if same_smooth else 'DIFFERS FROM'} SciPy on the whole image; labels "
        f"{'equal' if same_labels else 'DIFFER FROM'} scipy.ndimage.label ({whole_count} objects), numbering included")
    return 0 if same_smooth and same_labels else 1
