"""Filters: gpu_tiler tiled vs SciPy on the whole image vs dask-image, same run, medians.

    .venv/bin/python benchmarks/filters.py [--repeats 5] [--quick]

Cases: Gaussian sigma 5 on 4096^2 float32 and on a 256^3 float32 volume (gpu_tiler with the default
budget; dask-image with 1024^2 / 128^3 chunks and its own overlap); gaussian_laplace sigma 2 (a
neighbourhood operation) and binary_erosion with 5 iterations (morphology) on 4096^2; a 3-operation chain
(median 3 -> Gaussian 2 -> white top-hat 5) fused into one pass vs the same three passes unfused vs
SciPy one after another. Every gpu_tiler result is checked equal to SciPy's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))



def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller images, for a smoke run")
    args = parser.parse_args()

    import dask.array as da
    import numpy as np
    import scipy.ndimage as ndi

    import gpu_tiler as gt
    from _harness import hardware, timed, versions

    try:
        import dask_image.ndfilters as dfilters
        import dask_image.ndmorph as dmorph
    except ImportError:
        dfilters = dmorph = None

    side, cube = (1024, 64) if args.quick else (4096, 256)
    rng = np.random.default_rng(0)
    image2 = rng.random((side, side), dtype=np.float32)
    image3 = rng.random((cube, cube, cube), dtype=np.float32)
    rows = []
    ok = True

    def case(label, whole_fn, tiled_fn, dask_image_fn=None, reps=args.repeats):
        nonlocal ok
        t_whole, expected = timed(whole_fn, reps)
        t_tiled, got = timed(tiled_fn, reps)
        equal = np.array_equal(got, expected)
        ok = ok and equal
        line = {"case": label, "scipy": t_whole, "gpu_tiler": t_tiled, "equal": equal}
        if dask_image_fn is not None:
            t_di, di = timed(dask_image_fn, max(1, reps // 2))
            line["dask-image"] = t_di
            line["dask-image max error"] = float(np.abs(di.astype(np.float64) - expected).max())
        rows.append(line)

    x2 = da.from_array(image2, chunks=image2.shape)
    x3 = da.from_array(image3, chunks=image3.shape)
    case(
        f"gaussian sigma 5, {side}^2 float32",
        lambda: ndi.gaussian_filter(image2, 5),
        lambda: gt.gaussian(x2, 5).compute(),
        (lambda: dfilters.gaussian_filter(da.from_array(image2, chunks=side // 4), 5).compute()) if dfilters else None,
    )
    case(
        f"gaussian sigma 5, {cube}^3 float32",
        lambda: ndi.gaussian_filter(image3, 5),
        lambda: gt.gaussian(x3, 5).compute(),
        (lambda: dfilters.gaussian_filter(da.from_array(image3, chunks=cube // 2), 5).compute()) if dfilters else None,
    )

    # a neighbourhood operation and a morphology operation (dask-image: its own overlap, quarter chunks)
    case(
        f"gaussian_laplace sigma 2, {side}^2 float32",
        lambda: ndi.gaussian_laplace(image2, 2),
        lambda: gt.gaussian_laplace(x2, 2).compute(),
        (lambda: dfilters.gaussian_laplace(da.from_array(image2, chunks=side // 4), 2).compute()) if dfilters else None,
    )
    mask2 = image2 > 0.5
    m2 = da.from_array(mask2, chunks=mask2.shape)
    case(
        f"binary_erosion 3x3 cross x5 iterations, {side}^2 bool",
        lambda: ndi.binary_erosion(mask2, iterations=5),
        lambda: gt.binary_erosion(m2, iterations=5).compute(),
        (lambda: dmorph.binary_erosion(da.from_array(mask2, chunks=side // 4), iterations=5).compute())
        if dmorph else None,
    )

    def sequential():
        return ndi.white_tophat(ndi.gaussian_filter(ndi.median_filter(image2, 3), 2), 5)

    def chain(fuse):
        return lambda: gt.white_tophat(gt.gaussian(gt.median(x2, 3, fuse=fuse), 2, fuse=fuse), 5, fuse=fuse).compute()

    reps = max(1, args.repeats // 2)
    t_seq, expected = timed(sequential, reps)
    t_fused, fused = timed(chain(True), reps)
    t_apart, apart = timed(chain(False), reps)
    ok = ok and np.array_equal(fused, expected) and np.array_equal(apart, expected)
    plan = gt.plan_of(gt.gaussian(x2, 5))

    # Out of core, as users run a chain: zarr in, zarr out; unfused means a store per stage.
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="gpu_tiler-filters-"))
    try:
        stored = gt.save(gt.open(image2, chunks=512), work / "in.zarr")
        budget = "256MiB"

        def stored_fused():
            return gt.save(gt.white_tophat(gt.gaussian(gt.median(stored, 3, budget=budget), 2, budget=budget), 5,
                                           budget=budget), work / "fused.zarr", overwrite=True)

        def stored_stages():
            a = gt.save(gt.median(stored, 3, budget=budget), work / "a.zarr", overwrite=True)
            b = gt.save(gt.gaussian(a, 2, budget=budget), work / "b.zarr", overwrite=True)
            return gt.save(gt.white_tophat(b, 5, budget=budget), work / "c.zarr", overwrite=True)

        t_zf, zf = timed(stored_fused, reps)
        t_zs, zs = timed(stored_stages, reps)
        ok = ok and np.array_equal(zf.compute(), expected) and np.array_equal(zs.compute(), expected)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"# filters benchmark; {hardware()}; {versions('numpy', 'scipy', 'dask', 'dask-image')}")
    print(f"# gpu_tiler default budget; plan for the 2-D Gaussian: {plan}")
    print("| case | SciPy whole image | gpu_tiler tiled | speed-up vs SciPy | dask-image | gpu_tiler vs dask-image | dask-image max error | gpu_tiler == SciPy |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        di = r.get("dask-image")
        tiled = r["gpu_tiler"]
        di_time = f"{di:.3f} s" if di else "n/a"
        di_ratio = f"{di / tiled:.2f}x" if di else "n/a"
        di_error = f"{r['dask-image max error']:.3g}" if di else "n/a"
        print(f"| {r['case']} | {r['scipy']:.3f} s | {tiled:.3f} s | {r['scipy'] / tiled:.2f}x | "
              f"{di_time} | {di_ratio} | {di_error} | {r['equal']} |")
    print()
    print(f"| chain median 3 -> gaussian 2 -> white top-hat 5, {side}^2 float32 | time | vs SciPy sequential |")
    print("| --- | --- | --- |")
    print(f"| SciPy, one after another on the whole image | {t_seq:.3f} s | 1.00x |")
    print(f"| gpu_tiler unfused (3 tiled passes) | {t_apart:.3f} s | {t_seq / t_apart:.2f}x |")
    print(f"| gpu_tiler fused (1 tiled pass) | {t_fused:.3f} s | {t_seq / t_fused:.2f}x |")
    print(f"| zarr in/out, 256 MiB budget: a store per stage (3 reads, 3 writes) | {t_zs:.3f} s | {t_seq / t_zs:.2f}x |")
    print(f"| zarr in/out, 256 MiB budget: fused (1 read, 1 write) | {t_zf:.3f} s | {t_seq / t_zf:.2f}x |")
    print(f"# every gpu_tiler result equals SciPy's bit for bit: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
