"""Look at a gpu_tiler result in napari: an OME-Zarr image with its label overlay and pyramid.

    python examples/view_in_napari.py [OUT_DIR] [--ngff 0.4|0.5] [--no-gui]

Writes a small OME-Zarr image (NGFF 0.5 on zarr v3 by default, 0.4 on zarr v2 with ``--ngff 0.4``)
with a ``labels/nuclei`` group (generated, smoothed, labelled tile by tile). The labels are saved
into the image without naming axes or pixel sizes: they follow the image's NGFF version, levels and
pixel sizes. Then, when napari is installed (``pip install "gpu_tiler[napari]"``), napari's
OME-Zarr reader opens it: in a window, or with ``--no-gui`` (or without a display) headless, printing
the layers napari made with their pixel sizes, so the overlay can be checked without a screen.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import gpu_tiler as gt
from gpu_tiler.data import nuclei


def write_demo(out_dir: Path, ngff: str, size: int = 2048) -> tuple[Path, int]:
    """The demo image and its labels in ``out_dir``; returns (the image's path, the number of nuclei)."""
    out = out_dir / f"nuclei-{ngff}.ome.zarr"
    image = nuclei((size, size), chunks=512, seed=5)
    smoothed = gt.gaussian(image, 1.5)
    gt.save(smoothed, out, overwrite=True, format="ome-zarr", zarr_format=2 if ngff == "0.4" else 3, axes="yx",
            scale=(0.325, 0.325), units="um")
    labels, count = gt.label(gt.threshold(gt.open(out), "otsu"))  # carries the image's axes and pixel sizes
    gt.save(labels, out / "labels" / "nuclei", overwrite=True, format="ome-zarr", kind="labels")
    return out, count


def napari_layers(path: Path):
    """The layers napari makes of ``path`` with the napari-ome-zarr reader (no window needed)."""
    from napari.layers import Layer
    from napari_ome_zarr import napari_get_reader

    reader = napari_get_reader(str(path))
    if reader is None:
        raise SystemExit(f"napari-ome-zarr does not read {path}")
    return [Layer.create(*layer_data) for layer_data in reader(str(path))]


def describe(layer) -> str:
    levels = len(layer.data) if getattr(layer, "multiscale", False) else 1
    shape = layer.data[0].shape if levels > 1 else layer.data.shape
    return (f"{layer.name}: {type(layer).__name__}, shape {tuple(shape)}, {levels} level(s), "
            f"scale {tuple(float(s) for s in layer.scale)}, translate {tuple(float(t) for t in layer.translate)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="napari-demo")
    parser.add_argument("--ngff", choices=["0.4", "0.5"], default="0.5", help="OME-Zarr version to write")
    parser.add_argument("--no-gui", action="store_true", help="print napari's layers instead of opening a window")
    parser.add_argument("--size", type=int, default=2048, help="side of the generated image")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out, count = write_demo(Path(args.out_dir), args.ngff, args.size)
    print(f"wrote {out} (NGFF {args.ngff}) with {count} labelled nuclei in labels/nuclei")
    try:
        import napari
    except ImportError:
        print(f"napari is not installed; to look later: pip install 'gpu_tiler[napari]' && napari --plugin "
              f"napari-ome-zarr {out}")
        return 0
    headless = args.no_gui or not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                                   or sys.platform in ("darwin", "win32"))
    if headless:
        for layer in napari_layers(out):
            print(describe(layer))
        return 0
    viewer = napari.Viewer()
    viewer.open(str(out), plugin="napari-ome-zarr")  # the image pyramid and its label layer
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
