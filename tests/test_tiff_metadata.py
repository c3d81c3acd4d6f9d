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


def test_imagej_hyperstack_is_written_to_ome_zarr_in_ngff_axis_order(tmp_path):
    stack = np.random.default_rng(2).integers(0, 4000, (2, 5, 3, 30, 20)).astype(np.uint16)
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, stack, imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "TZCYX", "spacing": 2.0, "unit": "um"})
    x = gt.open(path)
    assert gt.metadata_of(x).axes == tuple("tzcyx")
    out = gt.save(x, tmp_path / "hyper.ome.zarr", format="ome-zarr", pyramid_levels=1)
    again = gt.open(tmp_path / "hyper.ome.zarr")
    meta = gt.metadata_of(again)
    assert meta.axes == tuple("tczyx") and meta.scale == (1.0, 1.0, 2.0, 0.25, 0.25)
    np.testing.assert_array_equal(again.compute(), stack.transpose(0, 2, 1, 3, 4))
    np.testing.assert_array_equal(out.compute(), stack.transpose(0, 2, 1, 3, 4))


def test_rgb_is_written_channel_first(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 255, (24, 32, 3)).astype(np.uint8)
    path = tmp_path / "rgb.ome.tif"
    tifffile.imwrite(path, rgb, ome=True, photometric="rgb", metadata={"axes": "YXS"})
    gt.save(gt.open(path), tmp_path / "rgb.ome.zarr", format="ome-zarr", pyramid_levels=1)
    again = gt.open(tmp_path / "rgb.ome.zarr")
    assert gt.metadata_of(again).axes == ("c", "y", "x")
    np.testing.assert_array_equal(again.compute(), np.moveaxis(rgb, -1, 0))


def test_unreadable_or_unitless_metadata_opens_without_pixel_sizes(tmp_path):
    bad = tmp_path / "bad.ome.tif"
    tifffile.imwrite(bad, np.zeros((4, 6, 5), np.uint8), ome=True, metadata={"axes": "ZYX", "PhysicalSizeX": 0.5})
    with tifffile.TiffFile(bad, mode="r+") as tif:  # an empty PhysicalSizeX, as some writers leave it
        tif.pages[0].tags["ImageDescription"].overwrite(tif.ome_metadata.replace('PhysicalSizeX="0.5"',
                                                                                'PhysicalSizeX=""'))
    with pytest.warns(UserWarning, match="could not read axes and pixel sizes"):
        x = gt.open(bad)
    assert gt.metadata_of(x) is None and x.shape == (4, 6, 5)
    pixels = tmp_path / "pixels.tif"  # ImageJ's default unit: the resolution tags are not sizes
    tifffile.imwrite(pixels, np.zeros((3, 6, 5), np.uint8), imagej=True, resolution=(72.0, 72.0),
                     metadata={"axes": "ZYX", "unit": "pixel", "spacing": 1.0})
    meta = gt.metadata_of(gt.open(pixels))
    assert meta.scale == (1.0, 1.0, 1.0) and meta.units == (None, None, None)


def test_saving_in_ngff_order_keeps_the_plan_and_names_the_transposed_job(tmp_path, disk_full_after, monkeypatch):
    import json

    import gpu_tiler._io.sinks as io
    from gpu_tiler._io.sinks import MANIFEST, SaveError

    stack = np.random.default_rng(5).integers(0, 4000, (2, 4, 3, 40, 30)).astype(np.uint16)
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TZCYX"})
    smoothed = gt.gaussian(gt.open(path, chunks=(1, 4, 1, 20, 30)), 1.0, budget="256KiB")
    planned = gt.plan_of(smoothed).tiles_in_flight
    in_flight, original = [], io.run_bounded

    def recording(*args, **kwargs):
        in_flight.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(io, "run_bounded", recording)
    disk_full_after(0)
    with pytest.raises(SaveError):
        gt.save(smoothed, tmp_path / "out.ome.zarr", format="ome-zarr", pyramid_levels=1, resume=True)
    disk_full_after(None)
    assert in_flight[0] == planned  # the filter's plan, not a default, though the array was transposed
    job = json.loads((tmp_path / ".out.ome.zarr.partial" / "0" / MANIFEST).read_text())  # level 0
    assert job["array"].endswith("-transposed-0-2-1-3-4")
    out = gt.save(smoothed, tmp_path / "out.ome.zarr", format="ome-zarr", pyramid_levels=1, resume=True)
    np.testing.assert_array_equal(out.compute(), gt.gaussian(gt.open(path), 1.0).compute().transpose(0, 2, 1, 3, 4))
