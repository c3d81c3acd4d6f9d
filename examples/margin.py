"""The lecture's exercise (b): how large must the margin be?

Runs a function tiled with growing margins and compares each result with the function on the whole
image: for a Gaussian the error vanishes exactly at scipy's kernel radius, int(4 * sigma + 0.5); for
your own function (here a difference of two Gaussians followed by a 5x5 maximum) the margin finder
measures what you would otherwise guess. Writes one PNG plot per function.

    python examples/margin.py [--out margin-plots] [--size 256]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import scipy.ndimage as ndi

import gpu_tiler as gt
from gpu_tiler.data import nuclei


def my_function(tile):
    """A user's own neighbourhood function: blob enhancement, then a local maximum."""
    xp_ndi = gt.backend_of(tile).ndimage
    band = xp_ndi.gaussian_filter(tile, 1.0) - xp_ndi.gaussian_filter(tile, 3.0)
    return xp_ndi.maximum_filter(band, size=5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="margin-plots")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args(argv)
    sample = nuclei((args.size, args.size), chunks=args.size, seed=4).compute()
    out = Path(args.out)

    gauss = gt.find_margin(ndi.gaussian_filter, sample, range(0, 16), sigma=2.5, plot=out / "gaussian.png")
    print(f"gaussian_filter(sigma=2.5): {gauss}")
    print(f"  scipy's radius int(4 * 2.5 + 0.5) = {int(4 * 2.5 + 0.5)}; found {gauss.margin}")
    own = gt.find_margin(my_function, sample, range(0, 24), plot=out / "my_function.png")
    print(f"my_function: {own}")
    print(f"  reach by construction: 12 (Gaussian sigma 3) + 2 (5x5 maximum) = 14; found {own.margin}")
    print(f"plots: {gauss.plot}, {own.plot}")
    return 0 if gauss.margin == 10 and own.margin is not None else 1


if __name__ == "__main__":
    sys.exit(main())
