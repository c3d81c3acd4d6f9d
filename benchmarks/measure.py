"""regionprops and ndmeasure: gpu_tiler across tiles vs scikit-image's regionprops_table and SciPy's
measurements on the whole image, and dask-image's ndmeasure, same run.

    .venv/bin/python benchmarks/measure.py [--repeats 5] [--chunks 1024] [--quick] [--dask-image-labels 16]

Labels: a thresholded synthetic nuclei image (``gpu_tiler.data.nuclei``, 4096^2 uint16) labelled with
``scipy.ndimage.label`` (about 10^4 objects). Cases: shape properties only; with the uint16 intensity
(mean, min, max); and second/third-order moments with intensity statistics. gpu_tiler reads the
images as dask arrays in ``--chunks``-sized tiles (NumPy, and CuPy too where a CUDA GPU works);
scikit-image gets the whole arrays. Times are medians of ``--repeats`` runs after one warm-up.
Every table is checked against scikit-image's: integer columns and extrema bit for bit, float
columns (sums added in another order) to 1e-9 of the property's magnitude (its largest
absolute value over all its columns); the local-configuration case (perimeter, perimeter_crofton,
euler_number counted per label with a halo) and the crop case (solidity, eccentricity, orientation,
area_filled, intensity_median measured by scikit-image's own code on each region's crop) must be
bit-identical in every column.

ndmeasure: ``gt.ndmeasure.<f>(image, labels, index)`` vs ``scipy.ndimage.<f>`` on the whole arrays
with ``index`` = every label, and vs ``dask_image.ndmeasure.<f>`` on the same dask arrays. dask-image
makes one pass over the whole image per label in ``index`` (its ``labeled_comprehension`` builds
``labels == i`` for each), so it gets the first ``--dask-image-labels`` labels, and gpu_tiler is timed
on the same short index too for the ratio.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))



def compare(got, want):
    """(equal, worst relative error of the float columns) of a DataFrame against a regionprops_table dict."""
    import numpy as np

    if list(got.columns) != list(want):
        return False, float("nan")
    equal, worst = True, 0.0
    magnitude = {}  # per property over all its columns: a central moment can be a cancellation to ~0
    for column, expected in want.items():
        name = column.split("-")[0]
        magnitude[name] = max(magnitude.get(name, 0.0), float(np.nanmax(np.abs(expected), initial=0.0)))
    for column, expected in want.items():
        values = got[column].to_numpy()
        if values.dtype != expected.dtype:
            return False, float("nan")
        exact = np.issubdtype(expected.dtype, np.integer) or column.split("-")[0] in (
            "area", "area_bbox", "intensity_min", "intensity_max"
        )
        if exact:
            equal = equal and np.array_equal(values, expected)
            continue
        scale = magnitude[column.split("-")[0]] or 1.0
        error = np.abs(values - expected) / scale
        worst = max(worst, float(np.nanmax(error, initial=0.0)))
        equal = equal and bool(np.all((error <= 1e-9) | (np.isnan(values) & np.isnan(expected))))
    return equal, worst


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=1024, help="tile side for gpu_tiler (default 1024)")
    parser.add_argument("--quick", action="store_true", help="a 1024^2 image, for a smoke run")
    parser.add_argument("--dask-image-labels", type=int, default=16,
                        help="labels in dask-image's index (it passes over the image once per label)")
    args = parser.parse_args()

    import dask.array as da
    import numpy as np
    import scipy.ndimage as ndi
    from skimage.measure import regionprops_table

    from gpu_tiler._backends import cupy_problem
    from gpu_tiler.data import nuclei
    from gpu_tiler.measure import regionprops
    from _harness import hardware, timed, versions

    side = 1024 if args.quick else 4096
    image = nuclei((side, side), radius=8.0, density=2.0, seed=0, dtype=np.uint16, chunks=1024).compute()
    labels, count = ndi.label(image > 500)
    labels = labels.astype(np.int32)
    tiled_labels = da.from_array(labels, chunks=args.chunks)
    tiled_image = da.from_array(image, chunks=args.chunks)
    backends = ["numpy"] + (["cupy"] if cupy_problem() is None else [])

    cases = [
        ("shape: label, area, centroid, bbox", ["label", "area", "centroid", "bbox"], False),
        ("+ uint16 intensity: mean, min, max",
         ["label", "area", "centroid", "bbox", "intensity_mean", "intensity_min", "intensity_max"], True),
        ("moments: inertia_tensor_eigvals, moments_central, intensity_std, centroid_weighted",
         ["label", "inertia_tensor_eigvals", "moments_central", "intensity_std", "centroid_weighted"], True),
        ("local configurations: perimeter, perimeter_crofton, euler_number",
         ["label", "perimeter", "perimeter_crofton", "euler_number"], False),
        ("crops: solidity, eccentricity, orientation, area_filled, intensity_median",
         ["label", "solidity", "eccentricity", "orientation", "area_filled", "intensity_median"], True),
    ]
    rows, ok = [], True
    for title, properties, with_intensity in cases:
        whole_intensity = image if with_intensity else None
        t_whole, want = timed(lambda: regionprops_table(labels, whole_intensity, properties=properties), args.repeats)
        row = {"case": title, "scikit-image": t_whole}
        for backend in backends:
            tiled_intensity = tiled_image if with_intensity else None
            t_tiled, got = timed(
                lambda: regionprops(tiled_labels, tiled_intensity, properties, backend=backend), args.repeats
            )
            equal, worst = compare(got, want)
            if title.startswith(("crops", "local")):  # scikit-image's code or codes and coefficients: every bit
                equal = equal and all(
                    np.array_equal(got[c].to_numpy(), want[c], equal_nan=True) for c in want)
            ok = ok and equal
            row[backend] = (t_tiled, equal, worst)
        rows.append(row)

    print(f"# regionprops benchmark; {hardware()}; "
          f"{versions('numpy', 'scipy', 'scikit-image', 'dask', 'pandas', 'cupy-cuda12x', 'cupy-cuda13x')}")
    print(f"# labels: {side}^2 int32, {count} objects ({(labels > 0).mean():.1%} foreground), gpu_tiler tiles "
          f"{args.chunks}^2; median of {args.repeats} runs after a warm-up; backends: {', '.join(backends)}")
    header = "| case | scikit-image whole image |"
    rule = "| --- | --- |"
    for backend in backends:
        header += f" gpu_tiler {backend} | speed-up | equal (max float error) |"
        rule += " --- | --- | --- |"
    print(header)
    print(rule)
    for row in rows:
        line = f"| {row['case']} | {row['scikit-image']:.3f} s |"
        for backend in backends:
            t_tiled, equal, worst = row[backend]
            line += f" {t_tiled:.3f} s | {row['scikit-image'] / t_tiled:.1f}x | {equal} ({worst:.1e}) |"
        print(line)
    print(f"# every gpu_tiler table equals scikit-image's (integers exactly, floats to 1e-9 of the property): {ok}")
    ok = ndmeasure_cases(args, labels, count, image, tiled_labels, tiled_image, timed) and ok
    return 0 if ok else 1


def ndmeasure_cases(args, labels, count, image, tiled_labels, tiled_image, timed):
    """gt.ndmeasure vs SciPy (every label) and dask-image (a short index), same arrays, same run."""
    import warnings

    import dask
    import dask_image.ndmeasure as dim
    import numpy as np
    import scipy.ndimage as ndi

    from gpu_tiler import ndmeasure

    every = np.arange(1, count + 1)
    short = every[: args.dask_image_labels]
    exact = {"minimum", "maximum", "median", "extrema", "sum_labels", "mean", "center_of_mass"}  # uint16 image
    print()
    print(f"# ndmeasure on the same {image.shape[0]}^2 uint16 image and labels; SciPy and gpu_tiler with index = all "
          f"{count} labels; dask-image and gpu_tiler with index = the first {short.size} labels; medians of "
          f"{args.repeats} runs after a warm-up")
    print("| function | SciPy whole image (all labels) | gpu_tiler (all labels) | vs SciPy | equal to SciPy | "
          "dask-image (short index) | gpu_tiler (short index) | vs dask-image |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    ok = True
    for name in ("sum_labels", "mean", "variance", "standard_deviation", "minimum", "maximum", "median",
                 "extrema", "center_of_mass"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_scipy, want = timed(lambda: getattr(ndi, name)(image, labels, every), args.repeats)
            t_ours, got = timed(lambda: getattr(ndmeasure, name)(tiled_image, tiled_labels, every), args.repeats)
            t_dask, from_dask = timed(
                lambda: dask.compute(getattr(dim, name)(tiled_image, tiled_labels, short))[0], args.repeats)
            t_short, ours_short = timed(
                lambda: getattr(ndmeasure, name)(tiled_image, tiled_labels, short), args.repeats)
        if name == "extrema":  # tied extrema: SciPy picks by an unstable sort, gpu_tiler the first in C order
            equal = _extrema_ok(got, want, image, labels, every)
            equal = equal and _extrema_ok(ours_short, getattr(ndi, name)(image, labels, short), image, labels, short)
        else:
            equal = _same(got, want, name in exact)
            equal = equal and _same(ours_short, getattr(ndi, name)(image, labels, short), name in exact)
        ok = ok and equal
        print(f"| {name} | {t_scipy:.3f} s | {t_ours:.3f} s | {t_scipy / t_ours:.1f}x | {equal} | {t_dask:.3f} s | "
              f"{t_short:.3f} s | {t_dask / t_short:.1f}x |")
    print(f"# every gpu_tiler ndmeasure result equals SciPy's (integer-valued sums exactly; variances to 1e-12): {ok}")
    return ok


def _extrema_ok(got, want, image, labels, index):
    """Values as SciPy's; each position a voxel of its label holding that value."""
    import numpy as np

    if not (np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])):
        return False
    for values, positions in ((got[0], got[2]), (got[1], got[3])):
        at = tuple(np.array(positions).T)
        if not (np.array_equal(image[at], values) and np.array_equal(labels[at], index)):
            return False
    return True


def _same(got, want, exact):
    import numpy as np

    if isinstance(want, (list, tuple)):
        return len(got) == len(want) and all(_same(g, w, exact) for g, w in zip(got, want))
    if exact:
        return np.array_equal(got, want, equal_nan=True)
    return bool(np.allclose(got, want, rtol=1e-12, atol=0, equal_nan=True))


if __name__ == "__main__":
    sys.exit(main())
