"""Peak memory of a filter over a zarr image 8x larger than the budget, into a zarr store.

gpu_tiler (map_tiles + save with a 128 MiB budget; also as an OME-Zarr pyramid) against plain dask
(map_overlap + to_zarr) in the same run, each in a fresh process, repeated; medians of peak RSS growth
and of wall time.

    .venv/bin/python benchmarks/memory.py [--size-gib 1] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SIGMA = 2.0
HALO = 8  # int(4 * SIGMA + 0.5): gaussian_filter's reach with truncate=4
BUDGET = "128MiB"


def make_input(path: Path, size_gib: float) -> None:
    import numpy as np
    import zarr

    side = int((size_gib * 2**30 / 4) ** 0.5) // 512 * 512
    if path.exists():
        z = zarr.open(str(path), mode="r")
        if z.shape == (side, side):
            return
        shutil.rmtree(path)
    z = zarr.create_array(str(path), shape=(side, side), chunks=(512, 512), dtype="float32")
    rng = np.random.default_rng(0)
    for i in range(0, side, 512):
        z[i : i + 512] = rng.random((512, side), dtype=np.float32)


def run_gpu_tiler(src: str, dst: str, ome: bool = False) -> dict:
    """map_tiles + save with the budget; with ``ome``, saved as an OME-Zarr pyramid (level 0 tile by
    tile, then every level from the last)."""
    import gpu_tiler as gt
    from _harness import PeakRSS

    def smooth(tile):
        return gt.backend_of(tile).ndimage.gaussian_filter(tile, SIGMA)

    image = gt.open(src)
    extra = {"format": "ome-zarr", "axes": "yx"} if ome else {}
    with gt.config(backend="numpy"), PeakRSS() as rss:
        result = gt.map_tiles(smooth, image, halo=HALO, budget=BUDGET)
        gt.save(result, dst, overwrite=True, **extra)
    plan = str(gt.plan_of(result))
    if ome:
        plan += f"; {gt.metadata_of(gt.open(dst)).levels} pyramid levels"
    return {"growth": rss.growth, "seconds": rss.seconds, "plan": plan}


def run_dask(src: str, dst: str) -> dict:
    import dask.array as da
    import scipy.ndimage as ndi
    from _harness import PeakRSS

    image = da.from_zarr(src)
    with PeakRSS() as rss:
        result = image.map_overlap(ndi.gaussian_filter, depth=HALO, boundary="reflect", sigma=SIGMA,
                                   dtype=image.dtype, meta=image._meta)
        result.to_zarr(dst, overwrite=True)
    return {"growth": rss.growth, "seconds": rss.seconds, "plan": f"dask chunks {image.chunksize}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=str(HERE / "out"))
    parser.add_argument("--one", choices=["gpu_tiler", "gpu_tiler_ome", "dask"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.workdir)
    src, dst = work / "memory-input.zarr", work / "memory-output.zarr"
    if args.one:
        if args.one == "dask":
            result = run_dask(str(src), str(dst))
        else:
            result = run_gpu_tiler(str(src), str(dst), ome=args.one == "gpu_tiler_ome")
        print(json.dumps(result))
        return 0

    from _harness import hardware, median, run_isolated, versions

    work.mkdir(parents=True, exist_ok=True)
    make_input(src, args.size_gib)
    import zarr

    nbytes = zarr.open(str(src), mode="r").nbytes
    runs = {"gpu_tiler": [], "gpu_tiler_ome": [], "dask": []}
    for _ in range(args.repeats):
        for name in runs:  # interleaved, so drift on the machine hits both alike
            runs[name].append(run_isolated(__file__, "--one", name, "--workdir", str(work)))
    shutil.rmtree(dst, ignore_errors=True)
    mib = 2**20
    budget = 128 * mib
    print(f"# memory benchmark: gaussian sigma={SIGMA} over a {nbytes / mib:.0f} MiB zarr image, budget {BUDGET}")
    print(f"# {hardware()}; {versions('numpy', 'scipy', 'dask', 'zarr')}")
    print(f"# gpu_tiler plan: {runs['gpu_tiler'][0]['plan']}")
    print(f"# gpu_tiler_ome (OME-Zarr with pyramid): {runs['gpu_tiler_ome'][0]['plan']}")
    print("| method | peak RSS growth (median) | / budget | wall time (median) | runs |")
    print("| --- | --- | --- | --- | --- |")
    for name, results in runs.items():
        growth = median([r["growth"] for r in results])
        secs = median([r["seconds"] for r in results])
        print(f"| {name} | {growth / mib:.0f} MiB | {growth / budget:.2f}x | {secs:.1f} s | {len(results)} |")
    ok = all(median([r["growth"] for r in runs[name]]) <= 2 * budget for name in ("gpu_tiler", "gpu_tiler_ome"))
    print(f"# gpu_tiler within 2x the budget: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
