import numpy as np
import pytest
import scipy.ndimage as ndi

import gpu_tiler as gt


def test_find_margin_finds_the_true_halo_of_a_gaussian(tmp_path):
    image = np.random.default_rng(0).random((96, 80))
    report = gt.find_margin(ndi.gaussian_filter, image, range(0, 14), sigma=2.0, plot=tmp_path / "margin.png")
    assert report.margin == int(4.0 * 2.0 + 0.5)  # scipy's radius for truncate=4
    assert all(e > 0 for e in report.errors[: report.margin])
    assert all(e == 0 for e in report.errors[report.margin :])
    assert report.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "margin 8" in str(report)


def test_tolerance_accepts_a_smaller_margin():
    image = np.random.default_rng(1).random((64, 64))
    exact = gt.find_margin(ndi.gaussian_filter, image, range(0, 12), sigma=1.5)
    loose = gt.find_margin(ndi.gaussian_filter, image, range(0, 12), sigma=1.5, tolerance=1e-3)
    assert exact.margin == 6
    assert loose.margin < exact.margin
    assert max(loose.errors[loose.margin :]) <= 1e-3


def test_a_function_that_needs_more_than_tried_has_no_margin():
    image = np.random.default_rng(2).random((40, 40))
    report = gt.find_margin(ndi.uniform_filter, image, range(0, 3), size=11)
    assert report.margin is None and len(report.errors) == 3


def test_bad_margins_are_refused():
    with pytest.raises(ValueError, match="margins"):
        gt.find_margin(ndi.gaussian_filter, np.zeros((8, 8)), [3, 1], sigma=1)
