"""OME-TIFF and ImageJ TIFF inputs: their axes and pixel sizes travel with the array, as OME-Zarr's do."""
import numpy as np
import pytest
import scipy.ndimage as ndi
import tifffile

import gpu_tiler as gt


@pytest.fixture
def stack():
    return np.random.default_rng(7).integers(0, 4000, (3, 6, 40, 36)).astype(np.uint16)


def test_ome_tiff_axes_pixel_sizes_and_time_step(tmp_path, stack):
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(path, stack, ome=True, metadata={
        "axes": "TZYX", "PhysicalSizeX": 0.325, "PhysicalSizeY": 0.325, "PhysicalSizeZ": 2.0,
        "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm", "PhysicalSizeZUnit": "µm",
        "TimeIncrement": 30, "TimeIncrementUnit": "s",
    })
    x = gt.open(path)
    meta = gt.metadata_of(x)
    assert meta.axes == tuple("tzyx") and meta.types == ("time", "space", "space", "space")
    assert meta.scale == (30.0, 2.0, 0.325, 0.325)
    assert meta.units == ("second", "micrometer", "micrometer", "micrometer")
    np.testing.assert_array_equal(x.compute(), stack)
    # a scalar sigma smooths space only; physical sigmas use the pixel sizes (1.3 um = 0.65 z, 4 y/x pixels)
    np.testing.assert_array_equal(gt.gaussian(x, 1.0).compute(), ndi.gaussian_filter(stack, (0, 1.0, 1.0, 1.0)))
    np.testing.assert_array_equal(gt.gaussian(x, 1.3, units="um").compute(),
                                  gt.gaussian(x, (0, 0.65, 4.0, 4.0)).compute())
    gt.save(x, tmp_path / "stack.ome.zarr", format="ome-zarr", pyramid_levels=1)  # carried into OME-Zarr
    again = gt.metadata_of(gt.open(tmp_path / "stack.ome.zarr"))
    assert again.axes == meta.axes and again.scale == meta.scale and again.units == meta.units


def test_imagej_tiff_resolution_spacing_and_frame_interval(tmp_path, stack):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"axes": "TZYX", "spacing": 1.5, "unit": "micron", "finterval": 10})
    meta = gt.metadata_of(gt.open(path))
    assert meta.axes == tuple("tzyx")
    assert meta.scale == (10.0, 1.5, 0.5, 0.5)
    assert meta.units == ("second", "micrometer", "micrometer", "micrometer")


def test_channels_and_rgb_samples_are_channel_axes(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (4, 20, 30, 3)).astype(np.uint8)
    path = tmp_path / "rgb.ome.tif"
    tifffile.imwrite(path, rgb, ome=True, photometric="rgb", metadata={"axes": "ZYXS"})
    meta = gt.metadata_of(gt.open(path))
    assert meta.axes == ("z", "y", "x", "c") and meta.types[-1] == "channel"
    assert meta.units == (None,) * 4 and meta.scale == (1.0,) * 4  # no physical sizes written
    with pytest.raises(ValueError, match="pixel sizes have no unit"):
        gt.gaussian(gt.open(path), 1.0, units="um")


def test_plain_tiff_has_no_metadata(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((8, 9), np.uint8))
    assert gt.metadata_of(gt.open(path)) is None
