"""The GPU contract in numbers, on the device stand-in: transfers and peak device bytes per operation.

These are exact counts, not timings: the stand-in counts every host<->device transfer and every live
device buffer (see gpu_tiler/testing.py). Each operation runs on an image 8x the budget, in 256² chunks.

    .venv/bin/python benchmarks/standin_contract.py [--size 1024] [--budget 524288]
"""
from __future__ import annotations

import argparse

import dask.array as da
import numpy as np
import scipy.ndimage as ndi

import gpu_tiler as gt
from gpu_tiler.testing import standin_device


def operations(size, budget):
    rng = np.random.default_rng(0)
    image = rng.random((size, size)).astype(np.float32)
    smooth = ndi.gaussian_filter(rng.random((size, size)), 4)
    labels = ndi.label(smooth > 0.5)[0]
    mask = ndi.gaussian_filter(rng.random((2 * size, 2 * size)), 4) > 0.5  # bool: 4x the voxels for 8x the budget

    def chunks(a):
        return da.from_array(a, chunks=256)

    def segment(window):
        return gt.backend_of(window).ndimage.label(window > 0.5)[0]

    yield "gaussian sigma 2", image, lambda: gt.gaussian(chunks(image), 2.0, budget=budget).compute()
    yield "chain median 3 -> gaussian 1 -> white top-hat 3", image, lambda: gt.white_tophat(
        gt.gaussian(gt.median(chunks(image), 3, budget=budget), 1.0, budget=budget), 3, budget=budget).compute()

    def label():
        result, _ = gt.label(chunks(mask), budget=budget)
        return result.compute()

    def map_labels():
        result, _ = gt.map_labels(segment, chunks(smooth), halo=8, budget=budget)
        return result.compute()

    yield "label (pass 1, merge, pass 2)", mask, label
    yield "map_labels, halo 8", smooth, map_labels
    yield "regionprops label, area, intensity_mean", labels, lambda: gt.regionprops(
        chunks(labels), chunks(image), properties=["label", "area", "intensity_mean"], budget=budget)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--budget", type=int, default=512 * 1024)
    args = parser.parse_args(argv)
    print(f"image {args.size}^2, budget {args.budget:,} bytes, 256^2 chunks, backend 'standin'")
    print("| operation | image bytes / budget | host->device calls | bytes | device->host calls | bytes "
          "| peak device bytes | / budget |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, data, run in operations(args.size, args.budget):
        with standin_device() as ledger, gt.config(backend="standin"):
            run()
            c = ledger.snapshot()
        print(f"| {name} | {data.nbytes / args.budget:.0f}x | {c['h2d_calls']} | {c['h2d_bytes']:,} | {c['d2h_calls']} "
              f"| {c['d2h_bytes']:,} | {c['peak_bytes']:,} | {c['peak_bytes'] / args.budget:.2f} |")


if __name__ == "__main__":
    main()
