"""The GPU contract, checked on the device stand-in (every machine) with exact counts, not timings.

(1) each tile's window crosses host->device once and its core device->host once (a fused chain: once
for the whole chain; label: pass 1 and pass 2 each once per tile, the merge's arrays apart);
(2) peak live device bytes stay within the budget the plan used, on images 8x that budget;
(3) an out-of-memory tile is split and retried with the same result (tests/test_standin.py);
(4) no implicit host conversion anywhere: the stand-in raises, so every passing test proves it.
"""
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.measure

import gpu_tiler as gt
from gpu_tiler._backends import to_numpy
from gpu_tiler.testing import STANDIN, DeviceArray, standin_device

BUDGET = 512 * 1024  # bytes; every image below is 8x this or more
SHAPE = (1024, 1024)


@pytest.fixture
def image():
    return np.random.default_rng(0).random(SHAPE).astype(np.float32)  # 4 MiB: 8x the budget


@pytest.fixture
def mask():
    return ndi.gaussian_filter(np.random.default_rng(1).random(SHAPE), 4) > 0.5


@pytest.fixture
def on_standin():
    with standin_device() as ledger, gt.config(backend="standin"):
        yield ledger


def tiles(array) -> int:
    return int(np.prod(array.numblocks))


def test_a_filter_moves_each_window_over_once_and_each_core_back_once(image, on_standin):
    out = gt.gaussian(da.from_array(image, chunks=256), 2.0, budget=BUDGET)
    plan = gt.plan_of(out)
    got = out.compute()
    n = tiles(out)
    assert n > 8 and on_standin.h2d_calls == n and on_standin.d2h_calls == n
    assert on_standin.d2h_bytes == image.nbytes  # the cores, exactly the image
    assert on_standin.peak_bytes <= plan.budget_bytes == BUDGET
    np.testing.assert_array_equal(got, ndi.gaussian_filter(image, 2.0))


def test_a_fused_chain_crosses_once_for_the_whole_chain(image, on_standin):
    chain = gt.subtract_background(gt.gaussian(gt.median(da.from_array(image, chunks=256), 3, budget=BUDGET), 1.0,
                                               budget=BUDGET), 3, budget=BUDGET)
    got = chain.compute()
    n = tiles(chain)
    assert on_standin.h2d_calls == n and on_standin.d2h_calls == n
    assert on_standin.peak_bytes <= gt.plan_of(chain).budget_bytes
    expected = gt.subtract_background(gt.gaussian(gt.median(image, 3), 1.0), 3).compute(scheduler="synchronous")
    np.testing.assert_array_equal(got, to_numpy(expected))


def test_device_resident_chunks_stay_on_the_device(image, on_standin):
    on_device = da.from_array(image, chunks=256).map_blocks(STANDIN.to_backend, meta=STANDIN.meta(image.dtype, 2))
    on_device = on_device.persist()
    moved_in = on_standin.h2d_calls
    out = gt.gaussian(on_device, 2.0, budget=BUDGET).compute()
    assert isinstance(out, DeviceArray)
    assert on_standin.h2d_calls == moved_in and on_standin.d2h_calls == 0  # windows assembled on the device
    np.testing.assert_array_equal(STANDIN.to_host(out), ndi.gaussian_filter(image, 2.0))


def test_label_moves_each_tile_once_per_pass_and_stays_in_budget(mask, on_standin):
    labels, n = gt.label(da.from_array(mask, chunks=256), budget=BUDGET)
    k = tiles(labels)
    merge_moves = 2  # the border pairs back to the NumPy merger on the host, its roots over (1)
    assert on_standin.h2d_calls == k + 1 and on_standin.d2h_calls == k + merge_moves
    before = on_standin.snapshot()
    got = labels.compute()
    assert on_standin.h2d_calls - before["h2d_calls"] == k and on_standin.d2h_calls - before["d2h_calls"] == k
    assert on_standin.peak_bytes <= BUDGET
    want, n_want = ndi.label(mask)
    assert n == n_want
    np.testing.assert_array_equal(got, want)


def test_map_labels_keeps_only_tiles_in_flight_on_the_device(on_standin):
    smooth = ndi.gaussian_filter(np.random.default_rng(2).random(SHAPE), 4)

    def segment(window):
        return gt.backend_of(window).ndimage.label(window > 0.5)[0]

    labels, n = gt.map_labels(segment, da.from_array(smooth, chunks=256), halo=8, budget=BUDGET)
    k = tiles(labels)
    # pass 1: each window over, its local labels and its packed overlap data back; the merge apart
    assert on_standin.h2d_calls <= k + 2 and on_standin.d2h_calls <= 2 * k + 2
    assert on_standin.peak_bytes <= BUDGET
    before = on_standin.snapshot()
    got = labels.compute()
    assert on_standin.h2d_calls - before["h2d_calls"] == k and on_standin.d2h_calls - before["d2h_calls"] == k
    with gt.config(backend="numpy"):  # the same labelling as on the host, bit for bit
        want, n_want = gt.map_labels(lambda w: ndi.label(w > 0.5)[0], da.from_array(smooth, chunks=256), halo=8,
                                     budget=BUDGET)
    assert n == n_want
    np.testing.assert_array_equal(got, want.compute())


def test_every_transfer_is_explicit_in_a_whole_pipeline(image, on_standin):
    # threshold (Otsu from tile histograms), label, measure: any implicit conversion would raise
    x = da.from_array(image, chunks=256)
    smooth = gt.gaussian(x, 3.0, budget=BUDGET)
    level = gt.threshold_otsu(smooth)
    labels, n = gt.label(gt.threshold(smooth, level), budget=BUDGET)
    table = gt.regionprops(labels, x, properties=["label", "area", "intensity_mean"])
    whole = ndi.gaussian_filter(image, 3.0)
    want = skimage.measure.regionprops_table(ndi.label(whole > level)[0], image,
                                             properties=["label", "area", "intensity_mean"])
    assert n == len(want["label"]) == len(table)
    np.testing.assert_array_equal(table["area"].to_numpy(), want["area"])


def on_backend(image, chunks, backend_name):
    """Chunks where the backend keeps them: host NumPy, or device arrays (stand-in, CuPy)."""
    from gpu_tiler._backends import get_backend

    x = da.from_array(image, chunks=chunks)
    if backend_name == "numpy":
        return x
    backend = get_backend(backend_name)
    return x.map_blocks(backend.to_backend, meta=backend.meta(x.dtype, x.ndim))


def test_save_and_an_ome_zarr_pyramid_of_device_chunks(tmp_path, backend_name):
    image = np.random.default_rng(4).random((70, 90)).astype(np.float32)
    x = on_backend(image, (32, 40), backend_name)
    np.testing.assert_array_equal(gt.save(x, tmp_path / "a.zarr").compute(), image)
    gt.save(gt.gaussian(x, 1.0), tmp_path / "b.ome.zarr", format="ome-zarr", axes="yx", pyramid_levels=3)
    level1 = gt.open(tmp_path / "b.ome.zarr", level=1).compute()
    smoothed = ndi.gaussian_filter(image, 1.0)
    np.testing.assert_array_equal(gt.open(tmp_path / "b.ome.zarr").compute(), smoothed)
    np.testing.assert_allclose(level1, smoothed[:70, :90].reshape(35, 2, 45, 2).mean(axis=(1, 3)), rtol=1e-6)


def test_preview_and_find_margin_of_device_chunks(tmp_path, backend_name):
    image = np.random.default_rng(5).random((64, 64)).astype(np.float32)
    x = on_backend(image, 32, backend_name)
    from gpu_tiler._tools.preview import preview

    path = preview(x, tmp_path / "p.png", labels=gt.label(gt.threshold(x, 0.5))[0])
    assert path.stat().st_size > 0

    def smooth(tile):
        return gt.backend_of(tile).ndimage.gaussian_filter(tile, 2.0)

    report = gt.find_margin(smooth, x, margins=range(0, 12, 2))
    assert report.margin == 8  # scipy's radius for sigma 2: int(4 * 2 + 0.5)


def test_the_command_line_runs_the_device_path(tmp_path):
    import subprocess
    import sys

    image = np.random.default_rng(6).random((96, 80)).astype(np.float32)
    gt.save(image, tmp_path / "in.zarr")
    for args in (("filter", "gaussian", tmp_path / "in.zarr", tmp_path / "g.zarr", "--sigma", "2"),
                 ("filter", "threshold", tmp_path / "g.zarr", tmp_path / "m.zarr", "--value", "0.5"),
                 ("label", tmp_path / "m.zarr", tmp_path / "l.zarr")):
        done = subprocess.run([sys.executable, "-m", "gpu_tiler", *map(str, args), "--backend", "standin",
                               "--memory-budget", "64KiB"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    smooth = ndi.gaussian_filter(image, 2.0)
    np.testing.assert_array_equal(gt.open(tmp_path / "g.zarr").compute(), smooth)
    np.testing.assert_array_equal(gt.open(tmp_path / "l.zarr").compute(), ndi.label(smooth > 0.5)[0])
