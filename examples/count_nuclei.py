"""The lecture's counting exercise, done right: how many nuclei are in a large image?

A synthetic fluorescence image (``gpu_tiler.data.nuclei``) is written to a zarr store, then its
nuclei (voxels brighter than a threshold, connected by faces) are counted four ways:

1. **whole image**: ``scipy.ndimage.label`` on the whole thresholded image: the reference, when the
   image fits in memory (skipped with a note when it does not);
2. **naive per tile**: each tile labelled on its own and the counts summed: every nucleus cut by a
   tile border is counted once per tile it touches, so this overcounts;
3. **gpu_tiler.label** on the thresholded image: tiles labelled and merged across their borders,
   exactly scipy's count without the whole image in memory;
4. **gpu_tiler.map_labels** with a per-tile "threshold + label" function, the way you would run
   your own segmentation (a watershed, StarDist, Cellpose): tiles with a halo, pieces stitched by
   their overlap.

Ours must be within 0.5 % of the whole-image count (label is exact); the exit status says so.

    python examples/count_nuclei.py [--size 8192] [--tile 1024] [--halo 64] [--threshold 0.3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

import gpu_tiler as gt
from gpu_tiler.data import nuclei
from gpu_tiler.labels import map_labels

#: ours may differ from the whole-image count by at most this fraction
TOLERANCE = 0.005


def threshold_and_label(tile, level):
    """A user's per-tile segmentation: threshold, then connected components (NumPy or CuPy tiles)."""
    return gt.backend_of(tile).ndimage.label(tile > level)[0]


def _count_tile(block, level):
    return np.full((1,) * block.ndim, ndi.label(np.asarray(block) > level)[1], dtype=np.int64)


def naive_count(image, level) -> int:
    """Label every tile on its own and add up the counts (the lecture's first attempt)."""
    counts = image.map_blocks(_count_tile, level, chunks=(1,) * image.ndim, dtype=np.int64)
    return int(counts.sum().compute())


def _timed(func, *args, **kwargs):
    start = time.perf_counter()
    out = func(*args, **kwargs)
    return out, time.perf_counter() - start


def _whole_fits(shape) -> bool:
    """The image, its mask and its int32 labels (9 bytes a voxel) in half the free host memory."""
    return int(np.prod(shape)) * 9 < gt.devices()[0].free_bytes // 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8192, help="image side in pixels (default 8192)")
    parser.add_argument("--tile", type=int, default=1024, help="tile side for the naive count and gpu_tiler")
    parser.add_argument("--halo", type=int, default=64, help="map_labels halo (wider than a nucleus cluster)")
    parser.add_argument("--threshold", type=float, default=0.3, help="foreground above this intensity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", default=None, help="zarr store for the image (default: a temporary one)")
    parser.add_argument("--no-whole", action="store_true", help="skip the whole-image count")
    args = parser.parse_args(argv)
    shape, tile, level = (args.size, args.size), (args.tile, args.tile), args.threshold

    with tempfile.TemporaryDirectory(prefix="count-nuclei-") as tmp:
        store = Path(args.store) if args.store else Path(tmp) / "nuclei.zarr"
        started = time.perf_counter()
        source = nuclei(shape, chunks=args.tile, seed=args.seed)
        _, took = _timed(gt.save, source, store, overwrite=True)
        image = gt.open(store)
        n_tiles = int(np.prod(image.numblocks))
        print(f"nuclei image {args.size}x{args.size} {image.dtype} ({image.nbytes / 2**20:.0f} MiB) in {store.name}, "
              f"{n_tiles} tiles of {args.tile}x{args.tile}, foreground > {level}  [generated in {took:.1f} s]")

        rows = []
        whole = None
        if not args.no_whole and _whole_fits(shape):
            (_, whole), took = _timed(lambda: ndi.label(image.compute() > level))
            rows.append(("whole image (scipy.ndimage.label)", whole, took))
        else:
            print("whole image: skipped (--no-whole, or it does not fit in half the free memory)")
        naive, took = _timed(naive_count, image, level)
        rows.append((f"naive per-tile count ({n_tiles} tiles)", naive, took))
        (_, n_label), took = _timed(gt.label, gt.threshold(image, level), tile_shape=tile)
        rows.append(("gpu_tiler.label", n_label, took))
        (_, n_map), took = _timed(map_labels, threshold_and_label, image, args.halo, tile_shape=tile, level=level)
        rows.append((f"gpu_tiler.map_labels (halo {args.halo})", n_map, took))

    reference = whole if whole is not None else n_label
    for name, count, took in rows:
        diff = count - reference
        print(f"  {name:<40} {count:>9}   {diff:+7d} ({100 * diff / max(reference, 1):+6.2f} %)   [{took:5.1f} s]")
    print(f"  (differences against the {'whole-image' if whole is not None else 'gpu_tiler.label'} count; "
          f"total {time.perf_counter() - started:.1f} s)")
    ok = all(abs(n - reference) <= TOLERANCE * reference for n in (n_label, n_map))
    if naive > reference:
        print(f"the naive count is {naive - reference} too high: nuclei cut by tile borders are counted once per tile")
    print("gpu_tiler: within 0.5 % of the whole-image count" if ok else "gpu_tiler: MORE THAN 0.5 % OFF")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
