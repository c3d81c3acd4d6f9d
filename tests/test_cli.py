"""The command line, driven in a subprocess as a user would."""
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr
from PIL import Image

import gpu_tiler as gt


def run(*args, cwd=None):
    env = dict(os.environ, GPU_TILER_BACKEND="numpy")
    return subprocess.run([sys.executable, "-m", "gpu_tiler", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.fixture
def image_path(tmp_path):
    image = np.random.default_rng(0).random((120, 90)).astype(np.float32)
    path = tmp_path / "in.zarr"
    gt.save(image, path)
    return path, image


def test_info_lists_devices_backends_versions_and_kernels():
    result = run("info")
    assert result.returncode == 0, result.stderr
    assert "device   cpu:0" in result.stdout
    assert "backends numpy: works" in result.stdout
    assert "numpy" in result.stdout and "kernels  OpenCL" in result.stdout


def test_info_on_an_image(image_path):
    path, image = image_path
    result = run("info", path)
    assert result.returncode == 0 and "shape (120, 90)" in result.stdout


def test_filter_writes_the_scipy_result_and_refuses_to_overwrite(image_path, tmp_path):
    path, image = image_path
    out = tmp_path / "g.zarr"
    result = run("filter", "gaussian", path, out, "--sigma", "2", "--mode", "nearest", "--memory-budget", "1MiB")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    np.testing.assert_array_equal(zarr.open(str(out), mode="r")[:], ndi.gaussian_filter(image, 2, mode="nearest"))
    again = run("filter", "gaussian", path, out, "--sigma", "3")
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "--overwrite" in again.stderr
    replaced = run("filter", "median", path, out, "--size", "3", "--overwrite", "--quiet")
    assert replaced.returncode == 0 and replaced.stdout == ""
    np.testing.assert_array_equal(zarr.open(str(out), mode="r")[:], ndi.median_filter(image, 3))


def test_threshold_by_otsu(image_path, tmp_path):
    path, image = image_path
    import skimage.filters

    result = run("filter", "threshold", path, tmp_path / "mask.zarr", "--value", "otsu")
    assert result.returncode == 0, result.stderr
    mask = zarr.open(str(tmp_path / "mask.zarr"), mode="r")[:]
    np.testing.assert_array_equal(mask, image > skimage.filters.threshold_otsu(image))


@pytest.mark.parametrize(
    "args, message",
    [
        (["filter", "gaussian", "missing.zarr", "o.zarr", "--sigma", "1"], "does not exist"),
        (["filter", "gaussian", "{in}", "o.zarr"], "needs --sigma"),
        (["filter", "gaussian", "{in}", "o.zarr", "--sigma", "-1"], "sigma"),
        (["filter", "median", "{in}", "o.zarr", "--sigma", "1"], "does not take --sigma"),
        (["filter", "gaussian", "{in}", "o.zarr", "--sigma", "1", "--memory-budget", "lots"], "'lots'"),
        (["margin", "--function", "nope"], "module:function"),
    ],
)
def test_bad_paths_and_parameters_give_one_line_and_exit_2(image_path, tmp_path, args, message):
    path, _ = image_path
    result = run(*[a.replace("{in}", str(path)) for a in args], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("gpu-tiler: error:") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_argparse_usage_errors_exit_2():
    assert run("filter", "sharpen", "a", "b").returncode == 2
    assert run().returncode == 2


def test_debug_shows_the_traceback(tmp_path):
    result = run("filter", "gaussian", tmp_path / "missing.zarr", tmp_path / "o.zarr", "--sigma", "1", "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_margin_finds_the_gaussian_halo_and_plots(tmp_path):
    result = run("margin", "--function", "gaussian", "--param", "sigma=2", "--max-margin", "12",
                 "-o", tmp_path / "m.png")
    assert result.returncode == 0, result.stderr
    assert "margin 8" in result.stdout
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_preview_is_a_png_of_the_right_size(image_path, tmp_path):
    path, image = image_path
    labels = tmp_path / "labels.npy"
    np.save(labels, ndi.label(image > 0.7)[0])
    result = run("preview", path, "--labels", labels, "--max-size", "60", "-o", tmp_path / "p.png")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "p.png") as picture:
        assert picture.format == "PNG" and picture.size == (45, 60)  # every 2nd pixel of 90 x 120


def test_ome_zarr_output_and_info_on_it(image_path, tmp_path):
    path, image = image_path
    out = tmp_path / "g.ome.zarr"
    result = run("filter", "gaussian", path, out, "--sigma", "1", "--format", "ome-zarr", "--pyramid", "2")
    assert result.returncode == 0, result.stderr
    info = run("info", out)
    assert info.returncode == 0 and "axes yx" in info.stdout and "2 level(s)" in info.stdout
    np.testing.assert_array_equal(gt.open(out).compute(), ndi.gaussian_filter(image, 1))


def test_label_then_measure(image_path, tmp_path):
    path, image = image_path
    mask = tmp_path / "mask.zarr"
    assert run("filter", "threshold", path, mask, "--value", "0.8").returncode == 0
    result = run("label", mask, tmp_path / "labels.zarr", "--connectivity", "2")
    assert result.returncode == 0, result.stderr
    expected, count = ndi.label(image > 0.8, structure=np.ones((3, 3)))
    assert f"found {count} objects" in result.stdout
    np.testing.assert_array_equal(zarr.open(str(tmp_path / "labels.zarr"), mode="r")[:], expected)
    table = tmp_path / "table.csv"
    measured = run("measure", tmp_path / "labels.zarr", "--intensity", path, "-o", table)
    assert measured.returncode == 0, measured.stderr
    import pandas as pd

    frame = pd.read_csv(table)
    assert len(frame) == count and {"label", "area", "intensity_mean"} <= set(frame.columns)
    assert run("measure", tmp_path / "labels.zarr", "-o", table).returncode == 2  # exists: refused


def test_demo_runs_small_and_shows_what_it_made(tmp_path):
    result = run("demo", "--size", "512", "-o", tmp_path / "demo")
    assert result.returncode == 0, result.stderr
    for made in ("smoothed.zarr", "labels.zarr", "nuclei.csv", "preview.png"):
        assert (tmp_path / "demo" / made).exists()
    assert "equals SciPy" in result.stdout and "labels equal scipy.ndimage.label" in result.stdout
