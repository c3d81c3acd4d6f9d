"""Look at a gpu_tiler result in napari: an OME-Zarr image with its label overlay and pyramid.

    python examples/view_in_napari.py [OUT_DIR]

Writes a small OME-Zarr image with a ``labels/nuclei`` group (generated, smoothed, labelled tile by
tile), then opens it with napari's OME-Zarr reader when napari is installed
(``pip install "gpu_tiler[napari]"``). Without napari it prints the command to view it later.
"""
from __future__ import annotations

import sys
from pathlib import Path

import gpu_tiler as gt
from gpu_tiler.data import nuclei


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "napari-demo") / "nuclei.ome.zarr"
    image = nuclei((2048, 2048), chunks=512, seed=5)
    smoothed = gt.gaussian(image, 1.5)
    gt.save(smoothed, out, overwrite=True, format="ome-zarr", axes="yx", scale=(0.325, 0.325), units="um")
    labels, count = gt.label(gt.threshold(gt.open(out), "otsu"))
    gt.save(labels, out / "labels" / "nuclei", overwrite=True, format="ome-zarr", kind="labels", axes="yx",
            scale=(0.325, 0.325), units="um")
    print(f"wrote {out} with {count} labelled nuclei in labels/nuclei")
    try:
        import napari
    except ImportError:
        print(f"napari is not installed; to look later: pip install 'gpu_tiler[napari]' && napari --plugin "
              f"napari-ome-zarr {out}")
        return 0
    viewer = napari.Viewer()
    viewer.open(str(out), plugin="napari-ome-zarr")  # the image pyramid and its label layer
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
