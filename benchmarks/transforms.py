"""A 3-D affine (rotation + shear) of a zarr volume 8x the memory budget, into a zarr store.

gpu_tiler.affine_transform (budget 8x smaller than the volume; and with a budget the volume's size, the
memory dask-image takes) against dask-image's
ndinterp.affine_transform (+ to_zarr) and SciPy in memory: each run in a fresh process, after a warm-up on
a tiny volume in that process (imports, thread pools and codecs are not the transform's memory), wall time
and peak RSS growth, medians of ``--repeats`` runs, the methods taking turns. Each method also runs with
``MALLOC_TRIM_THRESHOLD_=65536`` (what dask.distributed's nanny sets for its workers), and gpu_tiler also with
``GPU_TILER_MALLOC_ARENAS=0`` (glibc's own arenas, one per allocating thread, instead of the two gpu_tiler sets
at import): glibc keeps freed multi-MiB buffers (decoded chunks, windows) in its arenas, which RSS counts.
The SciPy run checks gpu_tiler's stored result against its own, bit for bit.

    .venv/bin/python benchmarks/transforms.py [--side 384] [--depth 256] [--order 1] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WORK = HERE / "_transforms_data"
CHUNKS = (64, 128, 128)
# "default": as each library comes (gpu_tiler limits glibc to two arenas at import, the others leave glibc alone)
ALLOCATORS = {"default": {}, "GPU_TILER_MALLOC_ARENAS=0": {"GPU_TILER_MALLOC_ARENAS": "0"},
              "MALLOC_TRIM_THRESHOLD_=65536": {"MALLOC_TRIM_THRESHOLD_": "65536"}}


def transform():
    import numpy as np

    t = np.deg2rad(20.0)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    shear = np.array([[1, 0, 0], [0.3, 1, 0], [0, 0, 1]])
    return rot @ shear, np.array([0.0, -40.0, 30.0])


def make_input(path: Path, shape, chunks=CHUNKS) -> None:
    import numpy as np
    import zarr

    if path.exists():
        if zarr.open(str(path), mode="r").shape == tuple(shape):
            return
        shutil.rmtree(path)
    z = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="float32")
    rng = np.random.default_rng(0)
    for i in range(0, shape[0], chunks[0]):
        z[i : i + chunks[0]] = rng.random((min(chunks[0], shape[0] - i), *shape[1:]), dtype=np.float32)


def run_method(method: str, src: Path, out: Path, order: int, budget: int, plan: list | None = None) -> None:
    import dask
    import zarr

    matrix, offset = transform()
    shutil.rmtree(out, ignore_errors=True)
    if method.startswith("gpu_tiler"):
        import gpu_tiler as gt

        budget = budget * (8 if method == "gpu_tiler-8x-budget" else 1)
        result = gt.affine_transform(gt.open(str(src)), matrix, offset, order=order, budget=budget, backend="numpy")
        gt.save(result, str(out))
        if plan is not None:
            plan.append(str(gt.plan_of(result)))
    elif method == "dask-image":
        import dask.array as da
        from dask_image.ndinterp import affine_transform

        x = da.from_zarr(str(src))
        result = affine_transform(x, matrix, offset, order=order, output_chunks=CHUNKS)
        with dask.config.set(scheduler="threads"):
            result.to_zarr(str(out))
    else:
        import scipy.ndimage as ndi

        image = zarr.open(str(src), mode="r")[...]
        return ndi.affine_transform(image, matrix, offset, order=order)


def worker(method: str, order: int, budget: int, check: bool) -> dict:
    import numpy as np
    import zarr
    from _harness import PeakRSS

    tiny = WORK / "warmup.zarr"
    make_input(tiny, (16, 32, 32), chunks=(8, 16, 16))
    run_method(method, tiny, WORK / f"warmup-{method}.zarr", order, budget)  # imports, pools, codecs
    out = WORK / f"out-{method}.zarr"
    plan = []
    with PeakRSS() as peak:
        ref = run_method(method, WORK / "input.zarr", out, order, budget, plan)
    report = {"method": method, "seconds": peak.seconds, "peak_mib": peak.growth / 2**20}
    if plan:
        report["plan"] = plan[0]
    if check and ref is not None:
        tiled = WORK / "out-gpu_tiler.zarr"
        if tiled.exists():
            report["gpu_tiler_bit_equal"] = bool(np.array_equal(zarr.open(str(tiled), mode="r")[...], ref))
        dask_out = WORK / "out-dask-image.zarr"
        if dask_out.exists():
            report["dask_image_max_abs_diff"] = float(np.abs(zarr.open(str(dask_out), mode="r")[...] - ref).max())
    return report


def run_fresh(args, method: str, env: dict, check: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--order", str(args.order), "--budget", str(args.budget),
           "--side", str(args.side), "--depth", str(args.depth)] + (["--check"] if check else [])
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **env})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=384)
    parser.add_argument("--depth", type=int, default=256)
    parser.add_argument("--order", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", default=None)
    parser.add_argument("--budget", type=int, default=0)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.order, args.budget, args.check)))
        return
    from _harness import hardware, versions

    shape = (args.depth, args.side, args.side)
    WORK.mkdir(exist_ok=True)
    make_input(WORK / "input.zarr", shape)
    volume = 4 * args.depth * args.side * args.side
    args.budget = volume // 8
    print(f"{hardware()}; {versions('numpy', 'scipy', 'dask', 'dask-image', 'zarr')}")
    print(f"volume {shape} float32 = {volume / 2**20:.0f} MiB in {'x'.join(map(str, CHUNKS))} chunks (zstd), "
          f"budget {args.budget / 2**20:.0f} MiB, order {args.order}, medians of {args.repeats} fresh processes")
    methods = ("gpu_tiler", "gpu_tiler-8x-budget", "dask-image", "scipy")
    runs = {(m, a): [] for m in methods for a in ALLOCATORS if m.startswith("gpu_tiler") or "GPU_TILER" not in a}
    for repeat in range(args.repeats):
        for allocator, env in ALLOCATORS.items():
            for method in methods:
                if (method, allocator) not in runs:
                    continue
                r = run_fresh(args, method, env, check=repeat == 0 and not env)
                runs[method, allocator].append(r)
                print(json.dumps({"allocator": allocator, **r}), flush=True)
    print("\nmedians:")
    for (method, allocator), rs in runs.items():
        seconds = statistics.median(r["seconds"] for r in rs)
        peak = statistics.median(r["peak_mib"] for r in rs)
        print(f"  {method:<20} {allocator:<30} {seconds:6.2f} s  peak RSS growth {peak:6.1f} MiB "
              f"({peak / (args.budget / 2**20):.1f}x the budget)")


if __name__ == "__main__":
    main()
