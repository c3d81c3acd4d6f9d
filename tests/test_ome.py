"""OME-Zarr in and out: read by the reference reader, NGFF 0.4 and 0.5 inputs, pyramids, physical units."""
import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

import gpu_tiler as gt

ome_zarr = pytest.importorskip("ome_zarr", reason="ome-zarr (the reference reader) is not installed")
from ome_zarr.format import FormatV04, FormatV05  # noqa: E402
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Reader  # noqa: E402
from ome_zarr.writer import write_image  # noqa: E402



def reference_nodes(path):
    return list(Reader(parse_url(str(path)))())


@pytest.fixture
def volume():
    return np.random.default_rng(0).integers(0, 4000, (12, 300, 260)).astype(np.uint16)


@pytest.mark.parametrize("zarr_format, version", [(3, "0.5"), (2, "0.4")])
def test_our_ome_zarr_is_read_by_the_reference_reader(tmp_path, volume, zarr_format, version):
    image_path = tmp_path / "cells.ome.zarr"
    gt.save(gt.open(volume, chunks=(6, 128, 128)), image_path, format="ome-zarr", zarr_format=zarr_format,
            axes="zyx", scale=(2.0, 0.325, 0.325), units="um")
    labels = ndi.label(volume > 3500)[0].astype(np.uint32)
    gt.save(labels, image_path / "labels" / "bright", format="ome-zarr", kind="labels", zarr_format=zarr_format,
            axes="zyx", scale=(2.0, 0.325, 0.325), units="um")
    image_node, labels_group, label_node = reference_nodes(image_path)[:3]
    assert [a["name"] for a in image_node.metadata["axes"]] == ["z", "y", "x"]
    assert all(a.get("unit") == "micrometer" for a in image_node.metadata["axes"])
    transforms = image_node.metadata["coordinateTransformations"]
    assert transforms[0][0]["scale"] == [2.0, 0.325, 0.325]
    assert transforms[1][0]["scale"] == [4.0, 0.65, 0.65]
    assert [d.shape for d in image_node.data] == [(12, 300, 260), (6, 150, 130)]
    np.testing.assert_array_equal(np.asarray(image_node.data[0]), volume)
    assert "labels" in str(labels_group.zarr.path)
    assert any(type(s).__name__ == "Label" for s in label_node.specs)
    np.testing.assert_array_equal(np.asarray(label_node.data[0]), labels)
    assert zarr.open_group(str(image_path), mode="r").metadata.zarr_format == zarr_format
    attrs = dict(zarr.open_group(str(image_path), mode="r").attrs)
    assert (attrs["ome"]["version"] if version == "0.5" else attrs["multiscales"][0]["version"]) == version


@pytest.mark.parametrize("fmt, zarr_format", [(FormatV04(), 2), (FormatV05(), 3)])
def test_ngff_inputs_written_by_the_reference_library_open_with_metadata(tmp_path, volume, fmt, zarr_format):
    path = tmp_path / "ref.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    write_image(volume, group, axes="zyx", fmt=fmt, scale_factors=[2], scale={"z": 2.0, "y": 0.5, "x": 0.5},
                axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"})
    full = gt.open(path)
    meta = gt.metadata_of(full)
    assert full.shape == volume.shape and meta.axes == ("z", "y", "x")
    assert meta.scale == (2.0, 0.5, 0.5) and meta.units == ("micrometer",) * 3 and meta.levels == 2
    np.testing.assert_array_equal(full.compute(), volume)
    half = gt.open(path, level=1)
    assert half.shape == (12, 150, 130) and gt.metadata_of(half).scale == (2.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="levels 0..1"):
        gt.open(path, level=5)


def test_pyramid_levels_equal_a_whole_image_downsampling(tmp_path):
    image = np.random.default_rng(1).random((2, 333, 301)).astype(np.float32)
    gt.save(gt.open(image, chunks=(1, 100, 64)), tmp_path / "p.ome.zarr", format="ome-zarr", axes="cyx",
            pyramid_levels=3)
    group = zarr.open_group(str(tmp_path / "p.ome.zarr"), mode="r")
    expected = image
    for level in (1, 2):
        h, w = expected.shape[1] // 2, expected.shape[2] // 2
        expected = expected[:, : 2 * h, : 2 * w].reshape(2, h, 2, w, 2).astype(np.float64).mean(axis=(2, 4)).astype(
            np.float32)
        np.testing.assert_array_equal(group[str(level)][:], expected)
    labels = np.random.default_rng(2).integers(0, 50, (301, 222)).astype(np.int32)
    gt.save(labels, tmp_path / "l.ome.zarr", format="ome-zarr", kind="labels", pyramid_levels=2)
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "l.ome.zarr"), mode="r")["1"][:],
                                  labels[:300:2, :222:2])


def test_axes_and_physical_units_steer_the_filters(tmp_path):
    image = np.random.default_rng(3).random((2, 3, 10, 40, 36)).astype(np.float32)
    path = tmp_path / "tczyx.ome.zarr"
    gt.save(gt.open(image, chunks=(1, 1, 5, 20, 18)), path, format="ome-zarr", axes="tczyx",
            scale=(1.0, 1.0, 2.0, 0.5, 0.5), units="um", pyramid_levels=1)
    x = gt.open(path)
    smoothed = gt.gaussian(x, 1.0)  # space axes only
    np.testing.assert_array_equal(smoothed.compute(), ndi.gaussian_filter(image, (0, 0, 1.0, 1.0, 1.0)))
    physical = gt.gaussian(x, 1.0, units="um")  # 1 um = 0.5 z-pixels, 2 y/x-pixels
    np.testing.assert_array_equal(physical.compute(), gt.gaussian(x, (0, 0, 0.5, 2.0, 2.0)).compute())
    np.testing.assert_array_equal(gt.median(x, 3).compute(), ndi.median_filter(image, (1, 1, 3, 3, 3)))
    nm = gt.gaussian(x, 1000.0, units="nm")
    np.testing.assert_array_equal(nm.compute(), physical.compute())
    assert gt.metadata_of(physical).axes == tuple("tczyx")  # carried through operations
    gt.save(physical, tmp_path / "smoothed.ome.zarr", format="ome-zarr", pyramid_levels=1)
    again = gt.metadata_of(gt.open(tmp_path / "smoothed.ome.zarr"))
    assert again.axes == tuple("tczyx") and again.scale == (1.0, 1.0, 2.0, 0.5, 0.5)


def test_physical_units_need_pixel_sizes():
    with pytest.raises(ValueError, match="needs an image with pixel sizes"):
        gt.gaussian(np.zeros((8, 8), np.float32), 1.0, units="um")
    with pytest.raises(ValueError, match="'furlong' is not a length unit"):
        gt.save(np.zeros((4, 4)), "/tmp/never.ome.zarr", format="ome-zarr", units="furlong")
