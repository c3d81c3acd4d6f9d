"""gpu_tiler's filters on a GPU: device-resident tiles against cupyx on the whole image.

For each filter, a dask array of CuPy chunks (already on the device) goes through gpu_tiler's filter
(tiles, halos, fused chains on the device) and is checked equal to cupyx.scipy.ndimage on the whole
image; medians of repeats after a warm-up, Mpx/s, and the speed relative to cupyx. A 3-D Gaussian and
the fused median -> Gaussian -> top-hat chain are included.

    python benchmarks/gpu_filters.py [--out DIR] [--side 8192] [--repeats 5]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    from _harness import cuda_sync, gpu_benchmark_args, gpu_name, hardware, timed, write_report

    args, problem = gpu_benchmark_args(__doc__)
    if problem is not None:
        return 0
    import cupy
    import cupyx.scipy.ndimage as cndi

    import gpu_tiler as gt

    device = gpu_name()
    rng = cupy.random.default_rng(0)
    side, cube = args.side, max(64, args.side // 16)
    image2 = rng.random((side, side), dtype=cupy.float32)
    image3 = rng.random((cube, cube, cube), dtype=cupy.float32)
    x2 = gt.open(image2, chunks=side // 4)
    x3 = gt.open(image3, chunks=cube // 2)
    cases = [
        (f"gaussian sigma 5, {side}^2", image2, lambda: gt.gaussian(x2, 5), lambda: cndi.gaussian_filter(image2, 5)),
        (f"gaussian sigma 5, {cube}^3", image3, lambda: gt.gaussian(x3, 5), lambda: cndi.gaussian_filter(image3, 5)),
        (f"median 3, {side}^2", image2, lambda: gt.median(x2, 3), lambda: cndi.median_filter(image2, 3)),
        (f"white top-hat 5, {side}^2", image2, lambda: gt.white_tophat(x2, 5), lambda: cndi.white_tophat(image2, 5)),
        (f"chain median 3 -> gaussian 2 -> top-hat 5 (fused), {side}^2", image2,
         lambda: gt.white_tophat(gt.gaussian(gt.median(x2, 3), 2), 5),
         lambda: cndi.white_tophat(cndi.gaussian_filter(cndi.median_filter(image2, 3), 2), 5)),
    ]
    ok, report = True, {"gpu": device, "host": hardware(), "cases": {}}
    print(f"# gpu_tiler filters on {device}; host {hardware()}; medians of {args.repeats} after a warm-up")
    print("| case | cupyx whole image | gpu_tiler (device tiles) | Mpx/s | vs cupyx | equal |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, image, tiled, whole in cases:
        t_whole, want = timed(whole, args.repeats, cuda_sync)
        t_tiled, got = timed(lambda: tiled().compute(scheduler="threads"), args.repeats, cuda_sync)
        equal = isinstance(got, cupy.ndarray) and bool((got == want).all())
        ok &= equal
        mpx = image.size / 1e6
        print(f"| {name} | {t_whole:.4f} s | {t_tiled:.4f} s | {mpx / t_tiled:.0f} | {t_whole / t_tiled:.2f}x | {equal} |")
        report["cases"][name] = {"cupyx_s": t_whole, "gpu_tiler_s": t_tiled, "equal": equal}
    write_report(args.out, "gpu_filters.json", report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
