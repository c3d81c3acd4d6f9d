"""map_tiles on a GPU: gaussian smoothing of a generated image, CuPy tiles against the anchors.

Anchors measured in the same run: scipy.ndimage on the whole image (CPU) and cupyx.scipy.ndimage on
the whole image (GPU, data already on the device). gpu_tiler runs host chunks through the CuPy
backend tile by tile (copies in and out included). Median of repeats after a warm-up.

    python benchmarks/gpu_map_tiles.py [--out DIR] [--side 8192] [--repeats 5]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SIGMA = 4.0
HALO = int(4 * SIGMA + 0.5)



def main() -> int:
    from _harness import cuda_sync, gpu_benchmark_args, gpu_name, hardware, timed, write_report

    args, problem = gpu_benchmark_args(__doc__)
    if problem is not None:
        return 0
    import numpy as np
    import scipy.ndimage as ndi

    import gpu_tiler as gt
    import cupy
    import cupyx.scipy.ndimage as cndi

    image = np.random.default_rng(0).random((args.side, args.side), dtype=np.float32)
    device = gpu_name()

    def smooth(tile):
        return gt.backend_of(tile).ndimage.gaussian_filter(tile, SIGMA)

    def scipy_whole():
        ndi.gaussian_filter(image, SIGMA)

    device_image = cupy.asarray(image)

    def cupyx_whole():
        cndi.gaussian_filter(device_image, SIGMA)
        cuda_sync()

    def tiled(backend, budget):
        def run():
            with gt.config(backend=backend):
                gt.map_tiles(smooth, image, halo=HALO, budget=budget).compute(scheduler="threads")
        return run

    results = {
        "scipy whole image (CPU)": timed(scipy_whole, max(1, args.repeats // 2))[0],
        "cupyx whole image (GPU, on device)": timed(cupyx_whole, args.repeats)[0],
        "gpu_tiler cupy, budget 1GiB (host in/out)": timed(tiled("cupy", "1GiB"), args.repeats)[0],
        "gpu_tiler cupy, budget 128MiB (host in/out)": timed(tiled("cupy", "128MiB"), args.repeats)[0],
        "gpu_tiler numpy, budget 1GiB": timed(tiled("numpy", "1GiB"), max(1, args.repeats // 2))[0],
    }
    exact = np.array_equal(
        gt.map_tiles(smooth, image, halo=HALO, budget="128MiB", backend="cupy").compute(),
        cndi.gaussian_filter(device_image, SIGMA).get(),
    )
    anchor = results["scipy whole image (CPU)"]
    mpx = image.size / 1e6
    print(f"# gaussian sigma={SIGMA} on {args.side}x{args.side} float32; {device}; host {hardware()}")
    print("| method | median s | Mpx/s | speed vs scipy whole image |")
    print("| --- | --- | --- | --- |")
    for name, secs in results.items():
        print(f"| {name} | {secs:.3f} | {mpx / secs:.0f} | {anchor / secs:.1f}x |")
    print(f"# tiled CuPy result equals cupyx on the whole image: {exact}")
    write_report(args.out, "gpu_map_tiles.json", {"gpu": device, "seconds": results, "exact": exact})
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
