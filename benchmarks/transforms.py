"""A 3-D affine (rotation + shear) of a zarr volume 8x the memory budget, into a zarr store.

gpu_tiler.affine_transform (budget 8x smaller than the volume) against dask-image's
ndinterp.affine_transform (+ to_zarr) and SciPy in memory, each in a fresh process, same run: wall time
and peak RSS growth. The SciPy run also checks gpu_tiler's stored result against its own, bit for bit.

    .venv/bin/python benchmarks/transforms.py [--side 384] [--depth 256] [--order 1]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WORK = HERE / "_transforms_data"


def transform():
    import numpy as np

    t = np.deg2rad(20.0)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    shear = np.array([[1, 0, 0], [0.3, 1, 0], [0, 0, 1]])
    return rot @ shear, np.array([0.0, -40.0, 30.0])


def make_input(path: Path, shape) -> None:
    import numpy as np
    import zarr

    if path.exists():
        if zarr.open(str(path), mode="r").shape == tuple(shape):
            return
        shutil.rmtree(path)
    z = zarr.create_array(str(path), shape=shape, chunks=(64, 128, 128), dtype="float32")
    rng = np.random.default_rng(0)
    for i in range(0, shape[0], 64):
        z[i : i + 64] = rng.random((min(64, shape[0] - i), *shape[1:]), dtype=np.float32)


def worker(method: str, order: int, budget: int) -> dict:
    import dask
    import numpy as np
    import zarr
    from _harness import PeakRSS

    matrix, offset = transform()
    src = WORK / "input.zarr"
    out = WORK / f"out-{method}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    report = {"method": method}
    if method == "gpu_tiler":
        import gpu_tiler as gt

        with PeakRSS() as peak:
            result = gt.affine_transform(gt.open(str(src)), matrix, offset, order=order, budget=budget,
                                         backend="numpy")
            gt.save(result, str(out))
        report["plan"] = str(gt.plan_of(result))
    elif method == "dask-image":
        import dask.array as da
        from dask_image.ndinterp import affine_transform

        with PeakRSS() as peak:
            x = da.from_zarr(str(src))
            result = affine_transform(x, matrix, offset, order=order, output_chunks=(64, 128, 128))
            with dask.config.set(scheduler="threads"):
                result.to_zarr(str(out))
    else:
        import scipy.ndimage as ndi

        with PeakRSS() as peak:
            image = zarr.open(str(src), mode="r")[...]
            ref = ndi.affine_transform(image, matrix, offset, order=order)
        tiled = WORK / "out-gpu_tiler.zarr"
        if tiled.exists():
            report["gpu_tiler_bit_equal"] = bool(np.array_equal(zarr.open(str(tiled), mode="r")[...], ref))
        dask_out = WORK / "out-dask-image.zarr"
        if dask_out.exists():
            report["dask_image_max_abs_diff"] = float(np.abs(zarr.open(str(dask_out), mode="r")[...] - ref).max())
    report.update(seconds=peak.seconds, peak_mib=peak.growth / 2**20)
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=384)
    parser.add_argument("--depth", type=int, default=256)
    parser.add_argument("--order", type=int, default=1)
    parser.add_argument("--worker", default=None)
    parser.add_argument("--budget", type=int, default=0)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.order, args.budget)))
        return
    from _harness import hardware, run_isolated, versions

    shape = (args.depth, args.side, args.side)
    WORK.mkdir(exist_ok=True)
    make_input(WORK / "input.zarr", shape)
    volume = 4 * args.depth * args.side * args.side
    budget = volume // 8
    print(f"{hardware()}; {versions('numpy', 'scipy', 'dask', 'dask-image', 'zarr')}")
    print(f"volume {shape} float32 = {volume / 2**20:.0f} MiB, budget {budget / 2**20:.0f} MiB, order {args.order}")
    for method in ("gpu_tiler", "dask-image", "scipy"):
        r = run_isolated(__file__, "--worker", method, "--order", str(args.order), "--budget", str(budget),
                         "--side", str(args.side), "--depth", str(args.depth))
        print(json.dumps(r))


if __name__ == "__main__":
    main()
