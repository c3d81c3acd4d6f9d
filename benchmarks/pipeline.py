"""The lecture's nuclei workflow end to end: Gaussian, global Otsu threshold, label, measure.

    .venv/bin/python benchmarks/pipeline.py [--side 8192] [--repeats 3] [--out-of-core 16384 --budget 64MiB]

The image is a generated uint16 nuclei image stored as zarr (1024² chunks). Each method runs in a fresh
interpreter (wall time and peak RSS of that process; medians of ``--repeats`` runs, all methods
interleaved so that a busy neighbour on a shared machine slows them alike):

- ``gpu_tiler``: written the natural way, ``x = gt.open(path); g = gt.gaussian(x, 2); m = gt.threshold(g,
  "otsu"); labels, n = gt.label(m); gt.regionprops(labels, x, properties=[label, area, centroid,
  intensity_mean]).to_csv(...)``; reported with the passes it ran (``PassLog``) and the source chunks each
  stage read (every read of the input's chunks counted);
- ``scipy``: the same on the whole image in memory with SciPy + scikit-image (load included);
- ``dask-image``: ``ndfilters.gaussian_filter``, Otsu from a dask histogram, ``ndmeasure.label``,
  ``ndmeasure.area``/``mean``/``center_of_mass``, stopped after ``--dask-image-limit`` seconds;
- ``gpu_tiler (user function)`` and ``scipy (float32)``: the Gaussian as a user's function
  (``map_tiles`` of ``ndi.gaussian_filter(tile.astype(float32), 2)``, counting its calls: each tile once).

Results are compared in the same run: the label, area and centroid columns must equal scikit-image's,
the intensity means agree to the last bits (sums in another order).

With ``--out-of-core SIDE`` gpu_tiler also runs on a SIDE² image with ``--budget`` (8x smaller than the
image or more): the Gaussian goes to a scratch store in the pass that computes it; SciPy runs on it too.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROPERTIES = ["label", "area", "centroid", "intensity_mean"]


def make_input(path, side):
    import numpy as np

    import gpu_tiler as gt
    from gpu_tiler.data import nuclei

    if not os.path.exists(path):
        gt.save(nuclei((side, side), chunks=1024, seed=1, dtype=np.uint16), path)


class _Reads:
    """Counts reads of stored chunks (gt.open's chunk reader) of ``path`` (the input) and of anything else
    (a kept intermediate's scratch store), and samples the process's RSS (its peak per stage)."""

    def __init__(self, path):
        from gpu_tiler._io import sources

        self.count, self.other, self.lock, original = 0, 0, threading.Lock(), sources._ChunkReader.__call__
        here = os.path.realpath(path)

        def counted(reader, *args, **kwargs):
            with self.lock:
                if os.path.realpath(reader.where) == here:
                    self.count += 1
                else:
                    self.other += 1
            return original(reader, *args, **kwargs)

        sources._ChunkReader.__call__ = counted
        self.peak, self.running = 0, True
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while self.running:
            with open("/proc/self/statm") as f:
                self.peak = max(self.peak, int(f.read().split()[1]) * page)
            time.sleep(0.005)


def run_gpu_tiler(path, out, budget, user_function=False):
    import collections
    import math

    import scipy.ndimage as ndi

    import gpu_tiler as gt
    from gpu_tiler._execution.bounded import PassLog

    reads, calls, stages = _Reads(path), collections.Counter(), {}

    def gaussian(tile):  # the Gaussian as a user's function, so its executions can be counted
        calls["tiles"] += 1
        return ndi.gaussian_filter(tile.astype("float32"), 2.0)

    def stage(name, before):
        stages[name] = {"seconds": time.perf_counter() - before[0], "source_reads": reads.count - before[1],
                        "kept_reads": reads.other - before[2], "peak_rss": reads.peak}
        reads.peak = 0
        return time.perf_counter(), reads.count, reads.other

    with (gt.config(memory_budget=budget) if budget else gt.config()), PassLog() as log:
        x = gt.open(path)
        chunks = math.prod(x.numblocks)
        reads.peak = 0
        mark = time.perf_counter(), reads.count, reads.other
        g = gt.map_tiles(gaussian, x, halo=8, dtype="float32") if user_function else gt.gaussian(x, 2)
        mask = gt.threshold(g, "otsu")
        mark = stage("gaussian + threshold", mark)
        labels, n = gt.label(mask)
        mark = stage("label", mark)
        table = gt.regionprops(labels, x, properties=PROPERTIES)
        table.to_csv(out, index=False)
        stage("regionprops + csv", mark)
    result = {"objects": int(n), "source_chunks": chunks, "stages": stages, "passes": len(log.passes)}
    if user_function:
        result["gaussian_tile_runs"], result["tiles"] = calls["tiles"], int(math.prod(g.numblocks))
    return result


def run_scipy(path, out, float32=False):
    import numpy as np
    import pandas as pd
    import scipy.ndimage as ndi
    import skimage.filters
    import skimage.measure
    import zarr

    x = zarr.open_array(path, mode="r")[:]
    g = ndi.gaussian_filter(x.astype(np.float32) if float32 else x, 2.0)
    labels, n = ndi.label(g > skimage.filters.threshold_otsu(g))
    pd.DataFrame(skimage.measure.regionprops_table(labels, x, properties=PROPERTIES)).to_csv(out, index=False)
    return {"objects": int(n)}


def run_dask_image(path, out):
    import dask.array as da
    import numpy as np
    import pandas as pd
    import skimage.filters
    from dask_image import ndfilters, ndmeasure

    x = da.from_zarr(path)
    g = ndfilters.gaussian_filter(x, 2.0)
    low, high = (int(v) for v in da.compute(g.min(), g.max()))
    counts, _ = da.histogram(g, bins=high - low + 1, range=(low - 0.5, high + 0.5))  # one bin per value
    level = skimage.filters.threshold_otsu(hist=(counts.compute(), np.arange(low, high + 1)))
    labels, n = ndmeasure.label(g > level)
    n = int(n.compute())
    index = np.arange(1, n + 1)
    area = ndmeasure.area(x, labels, index).compute()
    mean = ndmeasure.mean(x, labels, index).compute()
    centre = np.asarray(ndmeasure.center_of_mass(da.ones_like(x), labels, index).compute())
    pd.DataFrame({"label": index, "area": area, "centroid-0": centre[:, 0], "centroid-1": centre[:, 1],
                  "intensity_mean": mean}).to_csv(out, index=False)
    return {"objects": n}


METHODS = {
    "gpu_tiler": lambda path, out, budget: run_gpu_tiler(path, out, budget),
    "scipy": lambda path, out, budget: run_scipy(path, out),
    "dask-image": lambda path, out, budget: run_dask_image(path, out),
    "gpu_tiler (user function)": lambda path, out, budget: run_gpu_tiler(path, out, budget, user_function=True),
    "scipy (float32)": lambda path, out, budget: run_scipy(path, out, float32=True),
}


def child(method, path, out, budget):
    import resource

    import dask_image.ndfilters  # noqa: F401 - every method pays the same imports before the clock starts
    import dask_image.ndmeasure  # noqa: F401
    import pandas  # noqa: F401
    import scipy.ndimage  # noqa: F401
    import skimage.filters  # noqa: F401
    import skimage.measure  # noqa: F401
    import zarr.codecs  # noqa: F401

    import gpu_tiler  # noqa: F401

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start, cpu = time.perf_counter(), _cpu_seconds()
    result = METHODS[method](path, out, budget)
    result["seconds"] = time.perf_counter() - start
    result["cpu_seconds"] = _cpu_seconds() - cpu
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["baseline_rss"] = baseline
    print(json.dumps(result))


def _cpu_seconds():
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_once(method, path, budget, limit, keep, env=None):
    out = os.path.join(keep, f"{method.replace(' ', '_')}.csv")
    try:
        done = subprocess.run([sys.executable, __file__, "--child", method, path, out, budget or ""],
                              capture_output=True, text=True, timeout=limit, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["csv"] = out
    return result


def summarise(runs):
    """The run with the median time, its seconds and RSS replaced by the medians over all runs."""
    if any(r is None for r in runs):
        return None
    middle = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    summary = dict(middle)
    for key in ("seconds", "cpu_seconds", "peak_rss", "baseline_rss"):
        summary[key] = statistics.median(r[key] for r in runs)
    summary["all_seconds"] = sorted(r["seconds"] for r in runs)
    summary["all_stages"] = [r["stages"] for r in runs if "stages" in r]
    summary["all_baselines"] = [r["baseline_rss"] for r in runs if "stages" in r]
    return summary


def compare(csv, reference):
    """``"equal"`` when label, area and centroids equal the reference's and intensity means agree; else why not."""
    import numpy as np
    import pandas as pd

    got, want = pd.read_csv(csv), pd.read_csv(reference)
    if len(got) != len(want):
        return f"{len(got)} objects, not {len(want)}"
    for column in want.columns:
        if column not in got:
            return f"no {column}"
        if column == "intensity_mean":
            if not np.allclose(got[column], want[column], rtol=1e-12, atol=0):
                return "intensity means differ"
        elif not np.array_equal(got[column].to_numpy(), want[column].to_numpy()):
            return f"{column} differs"
    return "equal"


def table(results, anchor_name, reference_csv):
    anchor = results[anchor_name]["seconds"]
    print("| method | wall (median) | runs | vs " + anchor_name + " | CPU time (median) | peak RSS | above the "
          "interpreter | objects | result vs scikit-image |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for method, r in results.items():
        if r is None:
            print(f"| {method} | stopped after the limit | | | | | | | |")
            continue
        same = compare(r["csv"], reference_csv) if method != anchor_name else "(the reference)"
        runs = ", ".join(f"{s:.2f}" for s in r["all_seconds"])
        print(f"| {method} | {r['seconds']:.2f} s | {runs} | {anchor / r['seconds']:.2f}x | {r['cpu_seconds']:.2f} s | "
              f"{r['peak_rss'] / 2**20:.0f} MiB | {(r['peak_rss'] - r['baseline_rss']) / 2**20:.0f} MiB | "
              f"{r['objects']} | {same} |")


def stages(r):
    print(f"\n{r['passes']} passes; per stage (the image has {r['source_chunks']} chunks; RSS before the clock "
          f"started {r['baseline_rss'] / 2**20:.0f} MiB):")
    for name, s in r["stages"].items():
        print(f"- {name}: {s['seconds']:.2f} s, {s['source_reads']} source chunk reads "
              f"({s['source_reads'] / r['source_chunks']:.2f} x the image), {s['kept_reads']} reads of kept "
              f"intermediates, peak RSS {s['peak_rss'] / 2**20:.0f} MiB")
    if "budget" in r:
        from gpu_tiler import parse_budget

        budget = parse_budget(r["budget"])
        for name in r["stages"]:
            above = [run[name]["peak_rss"] - base for run, base in zip(r["all_stages"], r["all_baselines"])]
            print(f"- {name}, peak above the interpreter in every run: "
                  + ", ".join(f"{a / 2**20:.0f} MiB ({a / budget:.2f}x the budget)" for a in above))
    if "gaussian_tile_runs" in r:
        print(f"- the user's Gaussian ran {r['gaussian_tile_runs']} times for {r['tiles']} tiles")


def main():
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] or None)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-of-core", type=int, default=0, metavar="SIDE")
    parser.add_argument("--budget", default="64MiB")
    parser.add_argument("--out-of-core-repeats", type=int, default=3)
    parser.add_argument("--glibc-default", action="store_true",
                        help="out of core, also run gpu_tiler with GPU_TILER_MALLOC_ARENAS=0 (glibc's own arenas)")
    parser.add_argument("--dask-image-limit", type=float, default=120)
    parser.add_argument("--skip-dask-image", action="store_true")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "gpu_tiler-pipeline-bench"))
    args = parser.parse_args()
    sys.path.insert(0, HERE)
    from _harness import hardware, versions

    print(f"hardware: {hardware()}")
    print(f"versions: {versions('gpu_tiler', 'numpy', 'scipy', 'scikit-image', 'dask', 'zarr', 'dask-image')}")
    os.makedirs(args.data, exist_ok=True)
    path = os.path.join(args.data, f"nuclei-{args.side}.zarr")
    make_input(path, args.side)
    keep = tempfile.mkdtemp(prefix="gpu_tiler-pipeline-")
    interleaved = ["scipy", "gpu_tiler", "scipy (float32)", "gpu_tiler (user function)"]
    runs = {m: [] for m in interleaved}
    for _ in range(args.repeats):
        for method in interleaved:
            runs[method].append(run_once(method, path, None, None, keep))
    results = {m: summarise(r) for m, r in runs.items()}
    if not args.skip_dask_image:
        results["dask-image"] = summarise([run_once("dask-image", path, None, args.dask_image_limit, keep)])
    limit = f"stopped after {args.dask_image_limit:.0f} s" if not args.skip_dask_image else "not run"
    print(f"\n{args.side}^2 uint16 nuclei, 1024^2 chunks, default budget; medians of {args.repeats} runs (dask-image: "
          f"one, {limit}), each in a fresh process; CPU time: user + system of the process\n")
    natural = {m: results[m] for m in ("scipy", "gpu_tiler", "dask-image") if m in results}
    table(natural, "scipy", results["scipy"]["csv"])
    stages(results["gpu_tiler"])
    print("\nthe Gaussian as a user's function (float32 out):\n")
    table({m: results[m] for m in ("scipy (float32)", "gpu_tiler (user function)")}, "scipy (float32)",
          results["scipy (float32)"]["csv"])
    stages(results["gpu_tiler (user function)"])
    if args.out_of_core:
        big = os.path.join(args.data, f"nuclei-{args.out_of_core}.zarr")
        make_input(big, args.out_of_core)
        image = args.out_of_core**2 * 2
        print(f"\nout of core: {args.out_of_core}^2 uint16 ({image / 2**20:.0f} MiB, its Gaussian the same), "
              f"budget {args.budget}; one run each\n")
        print(f"(gpu_tiler: medians of {args.out_of_core_repeats} runs; SciPy: one run)\n")
        reference = summarise([run_once("scipy", big, None, None, keep)])
        variants = {"gpu_tiler": {}}
        if args.glibc_default:
            variants["gpu_tiler, glibc's own arenas (GPU_TILER_MALLOC_ARENAS=0)"] = {"GPU_TILER_MALLOC_ARENAS": "0"}
        runs = {name: [] for name in variants}
        for _ in range(args.out_of_core_repeats):
            for name, env in variants.items():
                runs[name].append(run_once("gpu_tiler", big, args.budget, None, keep, env))
        ours = {name: dict(summarise(r), budget=args.budget) for name, r in runs.items()}
        table({"scipy": reference, **ours}, "scipy", reference["csv"])
        for name, r in ours.items():
            print(f"\n{name}:")
            stages(r)


if __name__ == "__main__":
    main()
