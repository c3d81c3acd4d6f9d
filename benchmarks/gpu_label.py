"""label on a GPU: tiled labelling of device-resident masks against cupyx on the whole image.

Anchors measured in the same run: ``cupyx.scipy.ndimage.label`` on the whole image (data already on
the device) and ``scipy.ndimage.label`` on the host. gpu_tiler labels a dask array of CuPy chunks
(device-resident: labelling, merge and relabelling on the device, result in CuPy chunks); its result
is checked equal to cupyx's. The CUDA union-find merger alone is timed on 10^6 equivalence pairs
(the issue's target: under 5 ms) and checked equal to the NumPy merger. Median of repeats after a
warm-up; prints ``skipped: <reason>`` and exits 0 where no CUDA GPU works.

    python benchmarks/gpu_label.py [--out DIR] [--side 8192] [--repeats 5]
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
    import numpy as np
    import scipy.ndimage as ndi

    import gpu_tiler as gt
    import cupy
    import cupyx.scipy.ndimage as cndi

    from gpu_tiler.labels import label
    from gpu_tiler.labels._merge import get_merger

    device = gpu_name()
    cases = [
        (f"{args.side}^2", (args.side, args.side), (args.side // 4, args.side // 4), 4.0),  # chunks; tiles planned
        ("512^3", (512, 512, 512), (256, 256, 256), 2.0),
    ]
    report = {"gpu": device, "host": hardware(), "cases": {}, "merger": {}}
    ok = True
    print(f"# label on {device}; host {hardware()}; medians of {args.repeats} after a warm-up")
    print("| image (chunks) | method | median s | Mpx/s | speed vs cupyx whole image |")
    print("| --- | --- | --- | --- | --- |")
    for name, shape, tiles, sigma in cases:
        rng = cupy.random.default_rng(0)
        smooth = cndi.gaussian_filter(rng.random(shape, dtype=cupy.float32), sigma)
        mask = smooth > cupy.median(smooth)
        del smooth
        host_mask = mask.get()
        chunked = gt.open(mask, chunks=tiles)  # CuPy chunks: device-resident

        def tiled():
            labels, _ = label(chunked, 1, backend="cupy")
            return labels.compute(scheduler="threads")

        want, n_want = cndi.label(mask)
        got, n = label(chunked, 1, backend="cupy")
        got = got.compute()
        exact = isinstance(got, cupy.ndarray) and n == int(n_want) and bool((got == want).all())
        ok &= exact
        del got, want
        results = {
            "scipy whole image (CPU)": timed(lambda: ndi.label(host_mask), max(1, args.repeats // 2), lambda: None)[0],
            "cupyx whole image (GPU, on device)": timed(lambda: cndi.label(mask), args.repeats, cuda_sync)[0],
            "gpu_tiler cupy (on device)": timed(tiled, args.repeats, cuda_sync)[0],
        }
        anchor = results["cupyx whole image (GPU, on device)"]
        for method, secs in results.items():
            print(f"| {name} ({'x'.join(map(str, tiles))}) | {method} | {secs:.4f} | {mask.size / 1e6 / secs:.0f} | "
                  f"{anchor / secs:.2f}x |")
        print(f"| {name} | gpu_tiler equals cupyx (labels, numbering, count) | {exact} | | |")
        report["cases"][name] = {"seconds": results, "exact": exact}
        cupy.get_default_memory_pool().free_all_blocks()

    host_rng = np.random.default_rng(0)
    n_nodes = 1_500_000
    first = host_rng.integers(0, n_nodes, 10**6)
    second = np.clip(first + host_rng.integers(-5, 6, first.size), 0, n_nodes - 1)
    d_first, d_second = cupy.asarray(first), cupy.asarray(second)
    merger = get_merger("cuda")
    secs = timed(lambda: merger.roots(d_first, d_second, n_nodes), args.repeats, cuda_sync)[0]
    same = bool(np.array_equal(merger.roots(d_first, d_second, n_nodes).get(),
                               get_merger("numpy").roots(first, second, n_nodes)))
    ok &= same
    print(f"# CUDA union-find merger, 10^6 pairs over {n_nodes} nodes: {secs * 1e3:.2f} ms median; equals NumPy: {same}")
    report["merger"] = {"seconds": secs, "equal": same}
    write_report(args.out, "gpu_label.json", report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
