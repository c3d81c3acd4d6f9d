"""Throughput with 1 and 2 dask.distributed worker processes (and the threaded scheduler) on this
machine, for a filter chain and a label chain, each saved into a zarr store.

    .venv/bin/python benchmarks/cluster_scaling.py [--side 4096] [--repeats 3]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np

    import gpu_tiler as gt
    from _harness import hardware, median, versions
    from gpu_tiler.data import nuclei

    work = Path(tempfile.mkdtemp(prefix="gpu_tiler-dist-"))
    try:
        source = gt.save(nuclei((args.side, args.side), chunks=512, seed=2), work / "in.zarr")
        mpx = args.side * args.side / 1e6

        def filter_chain(out):
            return gt.save(gt.gaussian(gt.median(source, 3), 2.0, budget="256MiB"), out, overwrite=True)

        def label_chain(out):
            labels, _ = gt.label(gt.threshold(source, 0.5))
            return gt.save(labels, out, overwrite=True)

        rows, reference = [], {}
        for setting in ("threads", 1, 2):
            handle = None if setting == "threads" else gt.cluster(setting, gpus=False)
            try:
                for name, job in (("filter chain (median 3 -> gaussian 2)", filter_chain),
                                  ("label chain (threshold -> label)", label_chain)):
                    times = []
                    for r in range(args.repeats + 1):
                        t0 = time.perf_counter()
                        result = job(work / "out.zarr").compute()
                        if r:
                            times.append(time.perf_counter() - t0)
                    same = reference.setdefault(name, result)
                    rows.append((name, setting, median(times), np.array_equal(same, result)))
            finally:
                if handle is not None:
                    handle.close()
        print(f"# distributed benchmark, {args.side}^2 nuclei image; {hardware()}; "
              f"{versions('dask', 'distributed', 'zarr')}")
        print("| job | scheduler | median s | Mpx/s | same result as threads |")
        print("| --- | --- | --- | --- | --- |")
        for name, setting, secs, same in rows:
            label = "threaded (1 process)" if setting == "threads" else f"LocalCluster, {setting} worker process(es)"
            print(f"| {name} | {label} | {secs:.2f} | {mpx / secs:.1f} | {same} |")
        return 0 if all(r[3] for r in rows) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
