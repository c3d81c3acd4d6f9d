"""regionprops: gpu_tiler across tiles vs scikit-image's regionprops_table on the whole image, same run.

    .venv/bin/python benchmarks/measure.py [--repeats 5] [--chunks 1024] [--quick]

Labels: a thresholded synthetic nuclei image (``gpu_tiler.data.nuclei``, 4096^2 uint16) labelled with
``scipy.ndimage.label`` (about 10^4 objects). Cases: shape properties only; with the uint16 intensity
(mean, min, max); and second/third-order moments with intensity statistics. gpu_tiler reads the
images as dask arrays in ``--chunks``-sized tiles (NumPy, and CuPy too where a CUDA GPU works);
scikit-image gets the whole arrays. Times are medians of ``--repeats`` runs after one warm-up.
Every table is checked against scikit-image's: integer columns and extrema bit for bit, float
columns (sums added in another order) to 1e-9 of the property's magnitude (its largest
absolute value over all its columns).
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
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
