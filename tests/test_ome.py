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


# ---- independent oracles: every store we write validates and reads back the same ---------------

ome_zarr_models = pytest.importorskip("ome_zarr_models", reason="ome-zarr-models (the NGFF validator) is not installed")
from ome_zarr.writer import write_labels  # noqa: E402
from ome_zarr_models import v04 as models04, v05 as models05  # noqa: E402

OMERO = {"channels": [{"label": name, "color": color, "active": True,
                       "window": {"min": 0, "max": 65535, "start": 0, "end": 4000}}
                      for name, color in (("DAPI", "0000FF"), ("GFP", "00FF00"))]}


def ngff_version(path):
    return "0.5" if zarr.open_group(str(path), mode="r", use_consolidated=False).metadata.zarr_format == 3 else "0.4"


def assert_valid(path, labels=()):
    """The image at ``path`` and its label images pass the NGFF validator (ome-zarr-models) and the
    JSON schemas ngff-zarr bundles (when installed); the hierarchy has one zarr format throughout;
    ome-zarr-py's Reader finds the image and exactly ``labels``."""
    version = ngff_version(path)
    models = models05 if version == "0.5" else models04
    group = zarr.open_group(str(path), mode="r")
    models.Image.from_zarr(group)
    other = (".zgroup", ".zattrs", ".zarray") if version == "0.5" else ("zarr.json",)
    stray = [str(p) for p in path.rglob("*") if p.name in other]
    assert not stray, f"NGFF {version} hierarchy with metadata of the other zarr format: {stray}"
    schema = _ngff_zarr_validate()
    if schema is not None:
        schema(dict(group.attrs), version=version, model="image")
    if labels:
        labels_group = zarr.open_group(str(path / "labels"), mode="r")
        models.Labels.from_zarr(labels_group)
        attrs = dict(labels_group.attrs)
        listed = (attrs["ome"] if version == "0.5" else attrs)["labels"]
        assert sorted(listed) == sorted(labels)
        for name in labels:
            label_group = zarr.open_group(str(path / "labels" / name), mode="r")
            models.ImageLabel.from_zarr(label_group)
            if schema is not None:
                schema(dict(label_group.attrs), version=version, model="label")
    nodes = reference_nodes(path)
    found = sorted(str(n.zarr.path).rstrip("/").split("/")[-1] for n in nodes
                   if any(type(s).__name__ == "Label" for s in n.specs))
    assert found == sorted(labels)


def _ngff_zarr_validate():
    try:
        import jsonschema  # noqa: F401
        from ngff_zarr import validate
    except ImportError:
        return None
    return validate


def level_scales(path):
    """Each level's pixel sizes, read from the attributes here (the dataset's scale times the multiscale's)."""
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    entry = (attrs["ome"] if "ome" in attrs else attrs)["multiscales"][0]
    outer = [t["scale"] for t in entry.get("coordinateTransformations", []) if t["type"] == "scale"]
    outer = outer[0] if outer else [1.0] * len(entry["axes"])
    return [tuple(float(s * o) for s, o in zip(t["scale"], outer))
            for d in entry["datasets"] for t in d["coordinateTransformations"] if t["type"] == "scale"]


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_item1_images_and_labels_validate_and_v3_arrays_name_their_dimensions(tmp_path, volume, zarr_format):
    path = tmp_path / "img.ome.zarr"
    gt.save(gt.open(volume, chunks=(6, 128, 128)), path, format="ome-zarr", zarr_format=zarr_format, axes="zyx",
            scale=(2.0, 0.325, 0.325), units="um")
    labels, _ = gt.label(gt.open(path) > 3500)
    gt.save(labels, path / "labels" / "bright", format="ome-zarr", kind="labels")
    assert_valid(path, labels=["bright"])
    for level in ("0", "1"):
        array = zarr.open_array(str(path / level), mode="r")
        if zarr_format == 3:
            assert array.metadata.dimension_names == ("z", "y", "x")
        else:  # NGFF 0.4 expects nested chunk folders
            assert array.metadata.dimension_separator == "/"
    full = gt.open(path)
    np.testing.assert_array_equal(full.compute(), volume)
    assert gt.metadata_of(full).scale == (2.0, 0.325, 0.325)


def test_item2_labels_follow_a_04_image_and_keep_its_label_groups(tmp_path, volume):
    path = tmp_path / "ref.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_image(volume, group, axes="zyx", fmt=FormatV04(), scale_factors=[2])
    cells = (volume > 3000).astype(np.uint8)
    write_labels(cells, group, name="cells", axes="zyx", fmt=FormatV04(), scale_factors=[2])
    labels, _ = gt.label(gt.open(path) > 3500)
    gt.save(labels, path / "labels" / "nuclei", format="ome-zarr", kind="labels")  # the README's call
    assert not (path / "labels" / "zarr.json").exists() and not (path / "labels" / "nuclei" / "zarr.json").exists()
    assert_valid(path, labels=["cells", "nuclei"])
    np.testing.assert_array_equal(gt.open(path / "labels" / "nuclei").compute(), labels.compute())
    with pytest.raises(ValueError, match=r"NGFF 0.4 on zarr v2.*leave zarr_format out"):
        gt.save(labels, path / "labels" / "other", format="ome-zarr", kind="labels", zarr_format=3)
    assert not (path / "labels" / "other").exists()


def test_item2_the_command_line_labels_into_a_04_image_and_makes_04_stores(tmp_path, volume, capsys):
    from gpu_tiler.cli import main

    image, mask = tmp_path / "img.ome.zarr", tmp_path / "mask.ome.zarr"
    assert main(["filter", "gaussian", _zarr(tmp_path, volume), str(image), "--sigma", "1", "--ngff", "0.4",
                 "--quiet"]) == 0
    assert ngff_version(image) == "0.4"
    gt.save(gt.open(image) > 2000, mask, format="ome-zarr", zarr_format=2)
    assert main(["label", str(mask), str(image / "labels" / "nuclei"), "--format", "ome-zarr", "--quiet"]) == 0
    assert main(["label", str(mask), str(image / "labels" / "again"), "--ngff", "0.4", "--quiet"]) == 0
    assert_valid(image, labels=["nuclei", "again"])
    assert main(["label", str(mask), str(image / "labels" / "bad"), "--ngff", "0.5", "--quiet"]) == 2
    assert "leave --ngff out" in capsys.readouterr().err
    assert not (image / "labels" / "bad").exists()


def _zarr(tmp_path, array):
    path = tmp_path / "plain.zarr"
    zarr.create_array(str(path), shape=array.shape, chunks=(6, 128, 128), dtype=array.dtype)[:] = array
    return str(path)


def test_item3_label_pyramids_have_the_image_levels_at_the_image_scales(tmp_path):
    image = np.random.default_rng(4).integers(0, 4000, (300, 260)).astype(np.uint16)
    path = tmp_path / "img.ome.zarr"
    gt.save(image, path, format="ome-zarr", axes="yx", scale=(0.5, 0.25), units="um", pyramid_levels=4)
    labels, _ = gt.label(gt.open(path) > 3000)
    gt.save(labels, path / "labels" / "bright", format="ome-zarr", kind="labels")  # 300 px alone would give 2 levels
    assert level_scales(path / "labels" / "bright") == level_scales(path)
    assert len(level_scales(path)) == 4
    stored = zarr.open_group(str(path / "labels" / "bright"), mode="r")
    np.testing.assert_array_equal(stored["3"][:], labels.compute()[::8, ::8][:37, :32])
    assert_valid(path, labels=["bright"])
    with pytest.raises(ValueError, match="label images have their image's levels"):
        gt.save(labels, path / "labels" / "two", format="ome-zarr", kind="labels", pyramid_levels=2)
    with pytest.raises(ValueError, match="differ from the image's"):
        gt.save(labels, path / "labels" / "coarse", format="ome-zarr", kind="labels", scale=(1.0, 1.0))


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_item4_labels_added_to_a_consolidated_ngff_zarr_store_are_seen(tmp_path, volume, version):
    nz = pytest.importorskip("ngff_zarr", reason="ngff-zarr is not installed")
    path = tmp_path / "nz.ome.zarr"
    ngff_image = nz.to_ngff_image(volume, dims=["z", "y", "x"], scale={"z": 2.0, "y": 0.5, "x": 0.5},
                                  translation={"z": 0.0, "y": 10.0, "x": 5.0})
    nz.to_ngff_zarr(str(path), nz.to_multiscales(ngff_image, scale_factors=[2]), version=version)
    assert (path / ".zmetadata").exists() if version == "0.4" else "consolidated_metadata" in (
        path / "zarr.json").read_text()
    x = gt.open(path)
    assert gt.metadata_of(x).translation == (0.0, 10.0, 5.0)
    labels, _ = gt.label(gt.gaussian(x, 1.0) > 3000)
    gt.save(labels, path / "labels" / "bright", format="ome-zarr", kind="labels")
    assert "labels" in zarr.open_group(str(path), mode="r")  # through the consolidated metadata
    assert_valid(path, labels=["bright"])
    back = nz.from_ngff_zarr(str(path), validate=True)
    assert back.images[0].data.shape == volume.shape


def test_item5_thin_axes_stop_at_one_voxel(tmp_path):
    stack = np.random.default_rng(5).integers(0, 4000, (3, 600, 520)).astype(np.uint16)
    path = tmp_path / "thin.ome.zarr"
    gt.save(gt.open(stack, chunks=(3, 256, 256)), path, format="ome-zarr", axes="zyx", scale=(2.0, 0.5, 0.5))
    group = zarr.open_group(str(path), mode="r")
    assert [group[str(i)].shape for i in range(3)] == [(3, 600, 520), (1, 300, 260), (1, 150, 130)]
    assert level_scales(path) == [(2.0, 0.5, 0.5), (4.0, 1.0, 1.0), (4.0, 2.0, 2.0)]
    top = group["2"][:]
    assert top.min() > 0 and top.max() < 4000  # means of real voxels, no empty level
    assert_valid(path)
    with pytest.raises(ValueError, match="can be halved only 1 time"):
        gt.save(np.zeros((3, 2), np.uint8), tmp_path / "tiny.ome.zarr", format="ome-zarr", pyramid_levels=3)


def test_item6_float_labels_and_one_axis_images_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"kind='labels' needs integer label values.*float32.*astype"):
        gt.save(np.zeros((8, 8), np.float32), tmp_path / "f.ome.zarr", format="ome-zarr", kind="labels")
    with pytest.raises(ValueError, match="kind='labels' needs integer"):
        gt.save(np.zeros((8, 8), bool), tmp_path / "b.ome.zarr", format="ome-zarr", kind="labels")
    with pytest.raises(ValueError, match=r"2 to 5 axes; this one has 1.*format='zarr'"):
        gt.save(np.arange(10), tmp_path / "line.ome.zarr", format="ome-zarr")
    with pytest.raises(ValueError, match="2 or 3 space axes"):
        gt.save(np.zeros((2, 3)), tmp_path / "tc.ome.zarr", format="ome-zarr", axes="tc")
    assert not list(tmp_path.iterdir())
    gt.save(np.arange(10), tmp_path / "line.zarr")  # plain zarr takes any shape


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_item7_omero_is_attached_where_the_version_keeps_it_and_carried_through(tmp_path, zarr_format):
    image = np.random.default_rng(6).integers(0, 4000, (2, 64, 48)).astype(np.uint16)
    path = tmp_path / "c.ome.zarr"
    gt.save(image, path, format="ome-zarr", zarr_format=zarr_format, axes="cyx", attrs={"omero": OMERO, "lab": "x"})
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    home = attrs["ome"] if zarr_format == 3 else attrs
    assert home["omero"] == OMERO and "multiscales" in home and attrs["lab"] == "x"
    assert_valid(path)
    again = tmp_path / "d.ome.zarr"
    gt.save(image, again, format="ome-zarr", zarr_format=zarr_format, axes="cyx", attrs={"ome": {"omero": OMERO}})
    home = dict(zarr.open_group(str(again), mode="r").attrs)
    home = home["ome"] if zarr_format == 3 else home
    assert home["omero"] == OMERO and "multiscales" in home
    smoothed = tmp_path / "s.ome.zarr"
    gt.save(gt.gaussian(gt.open(path), 1.0), smoothed, format="ome-zarr")
    node = reference_nodes(smoothed)[0]
    assert node.metadata["channel_names"] == ["DAPI", "GFP"]  # ome-zarr-py's reading of omero's channel labels
    assert_valid(smoothed)
    one = tmp_path / "one.ome.zarr"
    gt.save(gt.open(path)[1], one, format="ome-zarr", zarr_format=zarr_format)  # one channel: its own omero entry
    one_attrs = dict(zarr.open_group(str(one), mode="r").attrs)
    assert (one_attrs["ome"] if zarr_format == 3 else one_attrs)["omero"]["channels"] == OMERO["channels"][1:]
    with pytest.raises(ValueError, match="save writes itself"):
        gt.save(image, tmp_path / "e.ome.zarr", format="ome-zarr", attrs={"ome": {"multiscales": []}})


def _handmade_04(path, array, datasets, outer=None):
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    for i, a in enumerate(array):
        zarr.create_array(str(path / str(i)), shape=a.shape, chunks=a.shape, dtype=a.dtype, zarr_format=2)[:] = a
    entry = {"version": "0.4", "axes": [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"],
             "datasets": [{"path": str(i), "coordinateTransformations": t} for i, t in enumerate(datasets)]}
    if outer:
        entry["coordinateTransformations"] = outer
    group.attrs.update({"multiscales": [entry]})


def test_item8_translations_compose_as_the_spec_says(tmp_path):
    data = [np.zeros((4, 8, 8), np.uint8)]
    # the multiscale's own scale applies after the dataset's translation: p = 2 * (1 * i + 5) for y
    _handmade_04(tmp_path / "outer.ome.zarr", data,
                 [[{"type": "scale", "scale": [1, 1, 1]}, {"type": "translation", "translation": [10, 5, 0]}]],
                 outer=[{"type": "scale", "scale": [1, 2, 2]}])
    meta = gt.metadata_of(gt.open(tmp_path / "outer.ome.zarr"))
    assert meta.scale == (1.0, 2.0, 2.0) and meta.translation == (10.0, 10.0, 0.0)
    models04.Image.from_zarr(zarr.open_group(str(tmp_path / "outer.ome.zarr"), mode="r"))  # a valid input
    # scale [1, 2, 2] then translation [10, 5, 0] at a level: the translation is physical, added after
    _handmade_04(tmp_path / "level.ome.zarr", data + [np.zeros((4, 4, 4), np.uint8)],
                 [[{"type": "scale", "scale": [1, 1, 1]}],
                  [{"type": "scale", "scale": [1, 2, 2]}, {"type": "translation", "translation": [10, 5, 0]}]],
                 outer=[{"type": "scale", "scale": [3, 1, 1]}, {"type": "translation", "translation": [1, 1, 1]}])
    meta = gt.metadata_of(gt.open(tmp_path / "level.ome.zarr", level=1))
    assert meta.scale == (3.0, 2.0, 2.0) and meta.translation == (31.0, 6.0, 1.0)
    saved = tmp_path / "saved.ome.zarr"
    gt.save(gt.open(tmp_path / "outer.ome.zarr"), saved, format="ome-zarr", pyramid_levels=1)
    assert gt.metadata_of(gt.open(saved)).translation == (10.0, 10.0, 0.0)


def test_item9_a_label_of_one_channel_keeps_the_pixel_sizes_and_small_ngff_details(tmp_path):
    image = np.random.default_rng(7).integers(0, 4000, (2, 5, 60, 52)).astype(np.uint16)
    path = tmp_path / "czyx.ome.zarr"
    gt.save(gt.open(image, chunks=(1, 5, 32, 32)), path, format="ome-zarr", zarr_format=2, axes="czyx",
            scale=(1.0, 2.0, 0.5, 0.5), units="um", attrs={"omero": OMERO}, pyramid_levels=2)
    channel = gt.open(path)[1]
    assert gt.metadata_of(channel).scale == (2.0, 0.5, 0.5)
    labels, _ = gt.label(channel > 2000)
    colors = [{"label-value": 0, "rgba": [0, 0, 0, 0]}, {"label-value": 1, "rgba": [255, 0, 0, 255]}]
    properties = [{"label-value": 0, "class": "background"}, {"label-value": 1, "class": "nucleus"}]
    gt.save(labels, path / "labels" / "gfp", format="ome-zarr", kind="labels",
            attrs={"image-label": {"colors": colors, "properties": properties}})
    label_attrs = dict(zarr.open_group(str(path / "labels" / "gfp"), mode="r").attrs)
    assert label_attrs["image-label"]["colors"] == colors and label_attrs["image-label"]["properties"] == properties
    assert label_attrs["image-label"]["source"] == {"image": "../../"}
    assert level_scales(path / "labels" / "gfp") == [s[1:] for s in level_scales(path)]
    label_node = [n for n in reference_nodes(path) if "gfp" in str(n.zarr.path)][0]
    assert label_node.metadata["coordinateTransformations"][0][0]["scale"] == [2.0, 0.5, 0.5]
    assert_valid(path, labels=["gfp"])
    assert zarr.open_array(str(path / "0"), mode="r").metadata.dimension_separator == "/"
    with pytest.raises(ValueError, match="distinct integer 'label-value'"):
        gt.save(labels, path / "labels" / "bad", format="ome-zarr", kind="labels",
                attrs={"image-label": {"colors": [{"rgba": [1, 2, 3, 4]}]}})
    timed = tmp_path / "t.ome.zarr"
    gt.save(np.zeros((3, 16, 16), np.uint8), timed, format="ome-zarr", axes="tyx", scale=(30.0, 0.5, 0.5),
            units={"t": "s", "y": "um", "x": "um"})
    assert gt.metadata_of(gt.open(timed)).units == ("second", "micrometer", "micrometer")
    assert_valid(timed)
    with pytest.raises(ValueError, match="'fortnight' is not a time unit"):
        gt.save(np.zeros((3, 16, 16), np.uint8), tmp_path / "u.ome.zarr", format="ome-zarr", axes="tyx",
                units={"t": "fortnight"})


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_stores_written_by_ome_zarr_py_and_ngff_zarr_open_filter_and_save_back_valid(tmp_path, volume, version):
    fmt, zarr_format = (FormatV04(), 2) if version == "0.4" else (FormatV05(), 3)
    source = tmp_path / "ref.ome.zarr"
    group = zarr.open_group(str(source), mode="w", zarr_format=zarr_format)
    write_image(volume[None].repeat(2, axis=0), group, axes="czyx", fmt=fmt, scale_factors=[2],
                scale={"z": 2.0, "y": 0.5, "x": 0.5}, axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"},
                omero=OMERO)
    smoothed = tmp_path / "smoothed.ome.zarr"
    gt.save(gt.gaussian(gt.open(source), 1.0), smoothed, format="ome-zarr", zarr_format=zarr_format)
    assert_valid(smoothed)
    meta = gt.metadata_of(gt.open(smoothed))
    assert meta.scale == (1.0, 2.0, 0.5, 0.5) and meta.omero["channels"][1]["label"] == "GFP"
    nz = pytest.importorskip("ngff_zarr", reason="ngff-zarr is not installed")
    read = nz.from_ngff_zarr(str(smoothed), validate=True)
    assert read.images[0].data.shape == (2, *volume.shape) and read.images[0].scale["y"] == 0.5
    np.testing.assert_allclose(np.asarray(read.images[0].data), gt.open(smoothed).compute())


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_the_napari_example_writes_a_valid_image_with_labels_at_its_scale(tmp_path, ngff):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "view_in_napari", Path(__file__).resolve().parents[1] / "examples" / "view_in_napari.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    path, count = example.write_demo(tmp_path, ngff, size=600)
    assert count > 0 and ngff_version(path) == ngff
    assert_valid(path, labels=["nuclei"])
    assert level_scales(path / "labels" / "nuclei") == level_scales(path)
    assert level_scales(path)[0] == (0.325, 0.325)
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    assert (attrs["ome"] if ngff == "0.5" else attrs)["multiscales"][0]["name"] == f"nuclei-{ngff}"
    pytest.importorskip("napari_ome_zarr", reason="napari-ome-zarr is not installed (optional)")
    layers = example.napari_layers(path)
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    assert all(tuple(layer.scale) == (0.325, 0.325) for layer in layers)
