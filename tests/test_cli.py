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
    assert "memory   host allocator: " in result.stdout  # what import did to glibc's arenas, in words


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
        (["filter", "--quiet", "median", "{in}", "o.zarr", "--size", "3"], "--quiet goes after the filter's name"),
        (["filter", "gaussian", "{in}", "o.zarr", "--sigma", "1", "--mode", "nearest,wrap,reflect"], "3 modes"),
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
    chosen = tmp_path / "perimeters.csv"
    assert run("measure", tmp_path / "labels.zarr", "-o", chosen, "--properties", "label,perimeter").returncode == 0
    import skimage.measure

    want = skimage.measure.regionprops_table(expected, properties=("label", "perimeter"))
    frame = pd.read_csv(chosen)
    assert list(frame.columns) == ["label", "perimeter"]
    np.testing.assert_array_equal(frame["label"], want["label"])
    np.testing.assert_allclose(frame["perimeter"], want["perimeter"], rtol=1e-15)


def test_demo_runs_small_and_shows_what_it_made(tmp_path):
    result = run("demo", "--size", "512", "-o", tmp_path / "demo")
    assert result.returncode == 0, result.stderr
    for made in ("smoothed.zarr", "labels.zarr", "nuclei.csv", "preview.png"):
        assert (tmp_path / "demo" / made).exists()
    assert "equals SciPy" in result.stdout and "labels equal scipy.ndimage.label" in result.stdout


# ---- filter options derived from gpu_tiler.filters ----------------------------------------------

import inspect  # noqa: E402

from gpu_tiler import cli  # noqa: E402


def _ops(parser):
    """The ``gpu-tiler filter OP`` subparsers, by name."""
    top = next(a for a in parser._actions if isinstance(a, cli.argparse._SubParsersAction))
    filter_parser = top.choices["filter"]
    return next(a for a in filter_parser._actions if isinstance(a, cli.argparse._SubParsersAction)).choices


def _options(parser):
    return {s for a in parser._actions for s in a.option_strings}


def test_every_public_filter_is_an_op_with_its_parameters():
    ops = _ops(cli.build_parser())
    methods = list(gt.filters.THRESHOLD_METHODS.values())
    public = {n for n in gt.filters.__all__ if not any(getattr(gt.filters, n) is m for m in methods)}
    needs_array = {n for n in public  # weights or a function: nothing a command line can give
                   if any(p.default is p.empty and p.name in cli.NOT_OPTIONS
                          for p in inspect.signature(getattr(gt.filters, n)).parameters.values())}
    assert {"convolve", "generic_filter"} <= needs_array
    assert set(ops) == public - needs_array and "threshold_otsu" not in ops  # a method gives a number
    for name, op in ops.items():
        params = list(inspect.signature(getattr(gt.filters, name)).parameters)[1:]
        expected = {"--" + p.replace("_", "-") for p in params if p not in cli.NOT_OPTIONS}
        assert expected <= _options(op), name
        assert not {"--budget", "--fuse", "--no-fuse", "--footprint", "--structure"} & _options(op)
    assert {"--sigma", "--order", "--mode", "--cval", "--truncate", "--radius", "--units"} <= _options(ops["gaussian"])
    assert {"--value-or-method", "--value"} <= _options(ops["threshold"])
    assert ops["gaussian"].get_default("required") == ("sigma",)
    assert ops["difference_of_gaussians"].get_default("required") == ("sigma_low",)
    assert ops["median"].get_default("required") == ()


def test_op_help_is_the_functions_docstring_and_signature():
    result = run("filter", "gaussian", "--help")
    assert result.returncode == 0, result.stderr
    first_line = inspect.getdoc(gt.gaussian).splitlines()[0]
    assert first_line in result.stdout
    text = " ".join(result.stdout.split())
    assert "--sigma VALUE" in text and "(required)" in text and "(default: 4.0)" in text and "--size" not in text
    listing = run("filter", "--help")
    assert listing.returncode == 0 and all(name in listing.stdout for name in _ops(cli.build_parser()))


def sharpen(image, amount, mode="reflect", *, passes=1, clip=False, budget=None):
    """Add ``amount`` times the image to itself (a stand-in for a filter added to gpu_tiler.filters).

    Parameters
    ----------
    image : array
        The image.
    amount : float
        How much of the image to add back.
    passes : int
        How many times to add it.
    """
    if amount < 0:
        raise ValueError(f"amount={amount!r} must be >= 0")
    sharpen.called = {"amount": amount, "mode": mode, "passes": passes, "clip": clip}

    def tile(block):
        if clip and (block < 0).any():
            raise ValueError("a tile went wrong")  # raised while computing, not while checking
        return block * (1 + amount * passes)

    return gt.map_tiles(tile, image)


@pytest.fixture
def with_sharpen(monkeypatch):
    monkeypatch.setattr(gt.filters, "sharpen", sharpen, raising=False)
    monkeypatch.setattr(gt.filters, "__all__", [*gt.filters.__all__, "sharpen"])


def test_a_filter_added_to_filters_is_on_the_command_line(with_sharpen, image_path, tmp_path, capsys):
    op = _ops(cli.build_parser())["sharpen"]
    help_text = op.format_help()
    assert "How much of the image to add back" in help_text and "How many times to add it" in help_text
    assert {"--amount", "--mode", "--passes", "--clip"} <= _options(op) and "--budget" not in _options(op)
    path, image = image_path
    out = tmp_path / "s.zarr"
    code = cli.main(["filter", "sharpen", str(path), str(out), "--amount", "0.5", "--passes", "2", "--mode",
                     "nearest", "--backend", "numpy", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert sharpen.called == {"amount": 0.5, "mode": "nearest", "passes": 2, "clip": False}
    np.testing.assert_allclose(zarr.open(str(out), mode="r")[:], image * 2.0)
    assert cli.main(["filter", "sharpen", str(path), str(tmp_path / "t.zarr")]) == 2
    assert "sharpen needs --amount" in capsys.readouterr().err


def test_a_value_error_while_computing_exits_1_and_a_bad_parameter_exits_2(with_sharpen, tmp_path, capsys):
    path = tmp_path / "in.zarr"
    gt.save(np.linspace(-1, 1, 64 * 64).reshape(64, 64), path)
    failed = cli.main(["filter", "sharpen", str(path), str(tmp_path / "a.zarr"), "--amount", "1", "--clip"])
    err = capsys.readouterr().err
    assert failed == 1 and err.startswith("gpu-tiler: failed (ValueError): ") and "a tile went wrong" in err
    refused = cli.main(["filter", "sharpen", str(path), str(tmp_path / "b.zarr"), "--amount", "-1"])
    err = capsys.readouterr().err
    assert refused == 2 and err.startswith("gpu-tiler: error: amount=-1 must be >= 0")


def test_a_value_error_in_your_function_exits_1(tmp_path):
    (tmp_path / "mine.py").write_text("def broken(tile, **kwargs):\n    raise ValueError('broken on purpose')\n")
    result = run("margin", "--function", "mine:broken", "--max-margin", "2", "-o", tmp_path / "m.png", cwd=tmp_path)
    assert result.returncode == 1 and "failed (ValueError): broken on purpose" in result.stderr
    misnamed = run("margin", "--param", "sigma=2", "--param", "sigm=1", "-o", tmp_path / "m.png", cwd=tmp_path)
    assert misnamed.returncode == 2 and "sigm" in misnamed.stderr


def test_exit_codes_say_whose_problem_it_is():
    assert cli.exit_code(ValueError("bad sigma"), computing=False) == 2
    assert cli.exit_code(ValueError("inside a tile"), computing=True) == 1
    assert cli.exit_code(gt.ResumeRefusedError("another job"), computing=True) == 2
    assert cli.exit_code(FileExistsError("exists"), computing=True) == 2
    assert cli.exit_code(gt.OutputInUseError("held"), computing=False) == 1
    assert cli.exit_code(gt.InputChangedError("rewritten"), computing=False) == 1


def test_info_says_a_kernel_runs_only_when_it_ran(monkeypatch):
    for line in cli.kernel_report():
        assert "compiles" not in line
        assert "kernel runs" in line or "not available" in line, line
    reference = cli.get_merger("numpy")

    class Wrong:
        name = "opencl"

        def roots(self, first, second, n_nodes):
            return np.arange(n_nodes)

    class Broken:
        name = "cuda"

        def roots(self, first, second, n_nodes):
            raise RuntimeError("no device")

    fakes = {"numpy": reference, "opencl": Wrong(), "cuda": Broken()}
    monkeypatch.setattr(cli, "get_merger", fakes.__getitem__)
    monkeypatch.setattr(cli, "cupy_problem", lambda: None)
    monkeypatch.setattr(cli, "_where", lambda name: "")
    lines = cli.kernel_report()
    assert "OpenCL: the union-find kernel ran but gave roots [0, 1, 2, 3, 4, 5], not [0, 0, 0, 3, 3, 5]" in lines
    assert "CUDA: not available (RuntimeError: no device)" in lines


def test_segment_computes_the_gaussian_once_and_lists_one_pass_per_step(tmp_path):
    import pandas as pd
    import skimage.filters
    import skimage.measure

    from gpu_tiler.data import nuclei

    image = nuclei((256, 192), chunks=64, seed=2, dtype=np.uint16).compute()
    gt.save(gt.open(image, chunks=64), tmp_path / "in.zarr")
    out = tmp_path / "t.csv"
    result = run("segment", tmp_path / "in.zarr", "-o", out, "--sigma", "2", "--memory-budget", "4MiB")
    assert result.returncode == 0, result.stderr
    smoothed = ndi.gaussian_filter(image, 2.0)
    labels = ndi.label(smoothed > skimage.filters.threshold_otsu(smoothed))[0]
    want = skimage.measure.regionprops_table(labels, image, properties=["label", "area", "centroid", "intensity_mean"])
    got = pd.read_csv(out)
    assert list(got.columns) == list(want)
    for column in want:  # the CSV keeps floats to 15-17 digits: integers exact, floats to the last digit
        np.testing.assert_allclose(got[column].to_numpy(), want[column], rtol=1e-15)
    passes = [line for line in result.stdout.splitlines() if line.startswith("pass ")]
    assert [p.split(" (")[1].split(":")[0] for p in passes] == ["threshold", "label", "regionprops"]
    assert "gaussian (reads" in passes[0] and "the kept gaussian" in passes[1]  # computed in pass 1 only
    assert "kept in memory" in result.stdout
