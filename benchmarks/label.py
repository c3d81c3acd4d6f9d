"""Connected-component labelling: gpu_tiler.label against the anchors, same run, same masks.

Masks are random blobs (uniform noise, Gaussian-smoothed, thresholded at its median). For each size,
every method labels the same mask (same seed) with face connectivity, each method in a fresh
interpreter (so no method inherits another's heap: on small VMs page faults and allocator state
otherwise move timings by 50%); timings are medians of ``--repeats`` runs after one warm-up run.
gpu_tiler's result is checked equal to SciPy's (labels and numbering).

- scipy:        ``scipy.ndimage.label`` on the whole image in memory (the anchor);
- cc3d:         ``cc3d.connected_components`` on the whole image (connected-components-3d);
- gpu_tiler:    ``gpu_tiler.labels.label`` on the chunked image, computed into a NumPy array;
- tilewise-ccl: ``tilewise_ccl.label_array`` with the same tiles, 2 threads (numbered in tile order);
- scipy on our tiles: ``scipy.ndimage.label`` on the tiles gpu_tiler plans, 2 threads, labelling
  alone (no tile assembly, merge, relabelling or final copy): the floor for SciPy-based tiling here;
- dask-image:   ``dask_image.ndmeasure.label`` on the chunked image; slow, so it runs once, on the
  smallest size only, without a warm-up (what is reported is what was measured, nothing extrapolated).

The merger alone is timed on 10^6 equivalence pairs (chains over 1.5*10^6 nodes, as tile borders
give) for each union-find implementation available here. ``--out-of-core`` labels a generated
``SIDE^3`` zarr mask (``--ooc-side``, default 1024) under ``--ooc-budget`` and saves the labels to
zarr, reporting time and peak RSS.

    python benchmarks/label.py [--repeats 5] [--rounds 1] [--skip-dask-image] [--out-of-core [--ooc-side 1024]]

``--rounds N`` measures every method N times, methods interleaved within a round, and reports each
method's median over the rounds, with the range of gpu_tiler's ratios (the 2-core VM's second core
comes and goes; SciPy uses one core, so noise moves the ratios, not SciPy's time).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

CASES = [
    # name, shape, chunks, smoothing sigma
    ("2048^2", (2048, 2048), (256, 256), 4.0),
    ("4096^2", (4096, 4096), (512, 512), 4.0),
    ("256x512x512", (256, 512, 512), (128, 128, 128), 2.0),
]


def blobs(shape, sigma, seed=0):
    import scipy.ndimage as ndi

    smooth = ndi.gaussian_filter(np.random.default_rng(seed).random(shape, dtype=np.float32), sigma)
    return smooth > np.median(smooth)


def median_time(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` runs of ``fn`` after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def label_methods(mask, chunks):
    import cc3d
    import dask.array as da
    import scipy.ndimage as ndi

    from gpu_tiler.labels import label

    structure = ndi.generate_binary_structure(mask.ndim, 1)
    chunked = da.from_array(mask, chunks=chunks)
    methods = {
        "scipy (whole image)": lambda: ndi.label(mask, structure),
        "cc3d (whole image)": lambda: cc3d.connected_components(mask, connectivity=4 if mask.ndim == 2 else 6),
        "gpu_tiler": lambda: label(chunked, 1)[0].compute(),
    }
    methods["scipy on our tiles, 2 threads (labelling alone)"] = _labelling_alone(mask, chunked, structure)
    try:
        from tilewise_ccl import label_array

        methods["tilewise-ccl (2 threads)"] = lambda: label_array(
            mask, tile_shape=chunks, connectivity=1, max_threads=2
        ).compute()
    except ImportError:
        pass
    return methods


def _labelling_alone(mask, chunked, structure):
    """SciPy labelling the tiles gpu_tiler plans, on 2 threads, and nothing else (no tile assembly,
    merge, relabelling or final copy): the floor of any tile-parallel method built on SciPy here."""
    import itertools
    from concurrent.futures import ThreadPoolExecutor

    import scipy.ndimage as ndi

    from gpu_tiler.labels import label

    tiles, pool = [], ThreadPoolExecutor(2)

    def run():
        if not tiles:  # prepared on the first (warm-up) call, so other methods' workers never label
            chunks = label(chunked, 1)[0].chunks
            bounds = [np.cumsum((0,) + c) for c in chunks]
            tiles.extend(
                np.ascontiguousarray(mask[tuple(slice(b[i], b[i + 1]) for b, i in zip(bounds, index))])
                for index in itertools.product(*(range(len(c)) for c in chunks))
            )
        return list(pool.map(lambda tile: ndi.label(tile, structure), tiles))

    return run


def check_exact(mask, chunks) -> bool:
    import dask.array as da
    import scipy.ndimage as ndi

    from gpu_tiler.labels import label

    want, n_want = ndi.label(mask)
    got, n = label(da.from_array(mask, chunks=chunks), 1)
    return n == n_want and np.array_equal(got.compute(), want)


def dask_image_once(mask, chunks) -> float | None:
    try:
        import dask.array as da
        from dask_image.ndmeasure import label as di_label
    except ImportError:
        return None
    t0 = time.perf_counter()
    labels, n = di_label(da.from_array(mask, chunks=chunks))
    labels.compute()
    return time.perf_counter() - t0


def merger_pairs(n_pairs=10**6, n_nodes=1_500_000, seed=0):
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n_nodes, n_pairs)
    second = np.clip(first + rng.integers(-5, 6, n_pairs), 0, n_nodes - 1)
    return first, second, n_nodes


def time_mergers(repeats):
    from gpu_tiler._backends import cupy_problem
    from gpu_tiler.labels._merge import get_merger, opencl_problem

    first, second, n_nodes = merger_pairs()
    want = get_merger("numpy").roots(first, second, n_nodes)
    results = {}
    runs = {"numpy": lambda: get_merger("numpy").roots(first, second, n_nodes)}
    if opencl_problem() is None:
        runs["opencl"] = lambda: get_merger("opencl").roots(first, second, n_nodes)
    if cupy_problem() is None:
        import cupy

        d_first, d_second = cupy.asarray(first), cupy.asarray(second)

        def cuda():
            out = get_merger("cuda").roots(d_first, d_second, n_nodes)
            cupy.cuda.Stream.null.synchronize()
            return out

        runs["cuda (on device)"] = cuda
    for name, fn in runs.items():
        out = fn()
        same = np.array_equal(out.get() if hasattr(out, "get") else out, want)
        results[name] = (median_time(fn, repeats), same)
    return results


def worker(case_name: str, method: str, repeats: int) -> dict:
    """One method on one case, in this (fresh) interpreter: median seconds (and exactness for ours)."""
    name, shape, chunks, sigma = next(c for c in CASES if c[0] == case_name)
    mask = blobs(shape, sigma)
    if method == "dask-image":
        return {"seconds": dask_image_once(mask, chunks)}
    fn = label_methods(mask, chunks).get(method)
    if fn is None:
        return {"seconds": None}
    out = {"seconds": median_time(fn, repeats)}
    if method == "gpu_tiler":
        out["exact"] = check_exact(mask, chunks)
    return out


def procedural_blobs(block, block_info=None):
    """A smooth random-looking field, computed from global coordinates (chunk-independent)."""
    loc = block_info[None]["array-location"]
    axes = np.ogrid[tuple(slice(a, b) for a, b in loc)]
    field = np.zeros(block.shape, dtype=np.float32)
    rng = np.random.default_rng(42)
    for _ in range(4):
        freq = rng.uniform(0.15, 0.45, len(axes))
        phase = rng.uniform(0, 2 * np.pi, len(axes))
        term = np.ones((1,) * len(axes), dtype=np.float32)
        for a, f, p in zip(axes, freq, phase):
            term = term * np.sin(a.astype(np.float32) * np.float32(f) + np.float32(p))
        field += term
    return field > 0.6


def out_of_core(side, chunk, budget, workdir: Path, verify=False):
    import dask.array as da

    import gpu_tiler as gt
    from _harness import PeakRSS
    from gpu_tiler.labels import label

    workdir.mkdir(parents=True, exist_ok=True)
    mask_path, labels_path = workdir / f"mask-{side}.zarr", workdir / f"labels-{side}.zarr"
    if not mask_path.exists():
        template = da.zeros((side,) * 3, dtype=bool, chunks=(chunk,) * 3)
        t0 = time.perf_counter()
        gt.save(template.map_blocks(procedural_blobs, dtype=bool), mask_path, budget=budget)
        print(f"# generated {mask_path} in {time.perf_counter() - t0:.0f} s")
    shutil.rmtree(labels_path, ignore_errors=True)
    source = gt.open(mask_path)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        labels, n = label(source, 1, budget=budget, scratch=workdir)
        pass1 = time.perf_counter() - t0
        gt.save(labels, labels_path, budget=budget)
    verified = None
    if verify:
        import scipy.ndimage as ndi

        want, n_want = ndi.label(np.asarray(source))
        verified = n == n_want and np.array_equal(np.asarray(gt.open(labels_path)), want)
        print(f"# out-of-core result equals scipy on the whole image: {verified}")
    return {
        "side": side, "chunk": chunk, "budget": budget, "objects": n, "seconds": rss.seconds, "verified": verified,
        "pass1_and_merge_seconds": pass1, "peak_rss_growth_gib": rss.growth / 2**30,
        "mvox_per_s": side**3 / 1e6 / rss.seconds, "labels_dtype": str(labels.dtype),
    }


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":  # one method in a fresh interpreter
        print(json.dumps(worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every method this many times, interleaved; report the median round")
    parser.add_argument("--skip-dask-image", action="store_true")
    parser.add_argument("--skip-mergers", action="store_true")
    parser.add_argument("--only", help="run only the case with this name (e.g. 4096^2)")
    parser.add_argument("--out-of-core", action="store_true")
    parser.add_argument("--ooc-side", type=int, default=1024)
    parser.add_argument("--ooc-chunk", type=int, default=256)
    parser.add_argument("--ooc-budget", default="2GiB")
    parser.add_argument("--ooc-verify", action="store_true", help="compare with scipy on the whole image (needs RAM)")
    parser.add_argument("--workdir", default=str(Path(__file__).resolve().parent / "out" / "label"))
    parser.add_argument("--out", default=None, help="also write the figures as JSON into this folder")
    args = parser.parse_args()

    from _harness import hardware, run_isolated, versions

    report = {"hardware": hardware(), "cases": {}, "mergers": {}, "out_of_core": None}
    print(f"# label benchmark on {hardware()}")
    print(f"# {versions('numpy', 'scipy', 'dask', 'connected-components-3d', 'dask-image', 'tilewise-ccl', 'pyopencl')}")
    print(f"# medians of {args.repeats} runs after a warm-up, each method in a fresh interpreter, median of "
          f"{args.rounds} interleaved round(s); face connectivity; random-blob masks")
    print()
    print("| image (chunks) | method | median s | Mpx/s | speed vs scipy | gpu_tiler speed vs this |")
    print("| --- | --- | --- | --- | --- | --- |")
    methods = ["scipy (whole image)", "cc3d (whole image)", "gpu_tiler", "tilewise-ccl (2 threads)",
               "scipy on our tiles, 2 threads (labelling alone)"]
    for index, (name, shape, chunks, sigma) in enumerate(CASES):
        if args.only and name != args.only:
            continue
        rounds, exact = [], False
        runs = [(m, m) for m in methods]
        for round_index in range(args.rounds):  # methods interleaved, so a noisy spell hits them all
            measured_round = {}
            with_dask_image = index == 0 and round_index == 0 and not args.skip_dask_image and not args.only
            for shown, method in runs + ([("dask-image (1 run, no warm-up)", "dask-image")] if with_dask_image else []):
                measured = run_isolated(__file__, "--worker", name, method, str(args.repeats))
                if measured["seconds"] is not None:
                    measured_round[shown] = measured["seconds"]
                exact = measured.get("exact", exact)
            rounds.append(measured_round)
        results = {m: float(np.median([r[m] for r in rounds if m in r])) for m in rounds[0]}
        anchor, ours = results["scipy (whole image)"], results["gpu_tiler"]
        mpx = math.prod(shape) / 1e6
        label_text = f"{name} ({'x'.join(map(str, chunks))})"
        for method, secs in results.items():
            print(f"| {label_text} | {method} | {secs:.3f} | {mpx / secs:.0f} | {anchor / secs:.2f}x | "
                  f"{secs / ours:.1f}x |")
        if args.rounds > 1:
            spread = [r["scipy (whole image)"] / r["gpu_tiler"] for r in rounds]
            text = f"{min(spread):.2f}x-{max(spread):.2f}x"
            tile = "tilewise-ccl (2 threads)"
            if all(tile in r for r in rounds):
                vs = [r[tile] / r["gpu_tiler"] for r in rounds]
                text += f" SciPy, {min(vs):.1f}x-{max(vs):.1f}x tilewise-ccl"
            print(f"| {label_text} | gpu_tiler, range over {args.rounds} rounds | {text} | | | |")
        print(f"| {label_text} | gpu_tiler equals scipy (labels, numbering, count) | {exact} | | | |")
        report["cases"][name] = {"chunks": chunks, "seconds": results, "exact": exact, "rounds": rounds}
        if not exact:
            print("ERROR: gpu_tiler differs from scipy", file=sys.stderr)
    if not args.skip_mergers:
        print()
        print("| merger, 10^6 pairs over 1.5*10^6 nodes | median ms | equals numpy |")
        print("| --- | --- | --- |")
        for name, (secs, same) in time_mergers(args.repeats).items():
            print(f"| {name} | {secs * 1e3:.1f} | {same} |")
            report["mergers"][name] = {"seconds": secs, "equal": same}
    if args.out_of_core:
        ooc = out_of_core(args.ooc_side, args.ooc_chunk, args.ooc_budget, Path(args.workdir), args.ooc_verify)
        report["out_of_core"] = ooc
        print()
        print("| out of core | objects | total s | pass 1 + merge s | Mvox/s | peak RSS growth | budget |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        print(f"| {ooc['side']}^3 zarr mask ({ooc['chunk']}^3 chunks) -> zarr labels ({ooc['labels_dtype']}) | "
              f"{ooc['objects']} | {ooc['seconds']:.0f} | {ooc['pass1_and_merge_seconds']:.0f} | "
              f"{ooc['mvox_per_s']:.0f} | {ooc['peak_rss_growth_gib']:.2f} GiB | {ooc['budget']} |")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        Path(args.out, "label.json").write_text(json.dumps(report, indent=1, default=str))
    exact_all = all(c["exact"] for c in report["cases"].values())
    mergers_ok = all(m["equal"] for m in report["mergers"].values())
    ooc_ok = report["out_of_core"] is None or report["out_of_core"]["verified"] is not False
    return 0 if exact_all and mergers_ok and ooc_ok else 1


if __name__ == "__main__":
    sys.exit(main())
