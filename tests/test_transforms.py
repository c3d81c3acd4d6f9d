"""Geometric transforms out of core against scipy.ndimage on the whole image.

Orders 0 and 1: bit for bit, every mode, 2-D and 3-D, awkward chunkings (uneven, size 1), every backend.
Orders 2-5 with prefilter: within 1e-12 of the image's range (the spline_halo bound), tiles smaller than
the prefilter's halo so the tile-wise coefficients are really tested.
"""
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

import gpu_tiler as gt
from gpu_tiler import transforms as T
from gpu_tiler._backends import to_numpy

MODES = T.MODES


def _rotation(deg, scale=1.0):
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) * scale


def _run(result, backend_name):
    return to_numpy(result.compute())


@pytest.fixture(scope="module")
def img2():
    return np.random.default_rng(5).random((31, 23)).astype(np.float32) * 100


@pytest.mark.parametrize("order", [0, 1])
def test_affine_2d_low_orders_bit_exact_every_mode(img2, order, backend_name):
    x = da.from_array(img2, chunks=((7, 1, 13, 10), (5, 1, 17)))  # uneven, size 1
    matrix = _rotation(31, 1.13)
    for mode in MODES:
        ref = ndi.affine_transform(img2, matrix, offset=(-6.5, 9.25), output_shape=(35, 27), order=order, mode=mode,
                                   cval=-3.5)
        out = T.affine_transform(x, matrix, offset=(-6.5, 9.25), output_shape=(35, 27), order=order, mode=mode,
                                 cval=-3.5, tile_shape=(8, 5), backend=backend_name)
        np.testing.assert_array_equal(_run(out, backend_name), ref, err_msg=mode)


@pytest.mark.parametrize("order", [0, 1])
def test_affine_3d_shear_rotation_bit_exact(order, backend_name):
    img = np.random.default_rng(2).integers(0, 4000, (13, 17, 11)).astype(np.uint16)
    x = da.from_array(img, chunks=(4, (1, 9, 7), 5))
    rot = np.eye(3)
    rot[1:, 1:] = _rotation(17)
    matrix = rot @ np.array([[1, 0, 0], [0.4, 1, 0], [0, -0.2, 1]])
    homogeneous = np.eye(4)
    homogeneous[:3, :3] = matrix
    homogeneous[:3, 3] = (1.5, -4.0, 2.25)
    for mode in ("constant", "nearest", "reflect", "grid-wrap", "wrap", "mirror", "grid-constant"):
        ref = ndi.affine_transform(img, homogeneous, output_shape=(14, 19, 12), order=order, mode=mode, cval=7)
        out = T.affine_transform(x, homogeneous, output_shape=(14, 19, 12), order=order, mode=mode, cval=7,
                                 tile_shape=(5, 6, 4), backend=backend_name)
        np.testing.assert_array_equal(_run(out, backend_name), ref, err_msg=mode)


@pytest.mark.parametrize("order", [0, 1])
def test_zoom_shift_rotate_bit_exact(img2, order, backend_name):
    x = da.from_array(img2, chunks=(6, (1, 11, 11)))
    for mode in MODES:
        kw = dict(order=order, mode=mode, cval=2.0)
        pairs = [
            (ndi.zoom(img2, (1.7, 0.6), **kw), T.zoom(x, (1.7, 0.6), tile_shape=(9, 4), backend=backend_name, **kw)),
            (ndi.shift(img2, (-3.3, 40.6), **kw), T.shift(x, (-3.3, 40.6), tile_shape=(7, 6), backend=backend_name, **kw)),
            (ndi.rotate(img2, 33, **kw), T.rotate(x, 33, tile_shape=(9, 7), backend=backend_name, **kw)),
            (ndi.affine_transform(img2, [0.7, 1.9], offset=(3, -2), **kw),
             T.affine_transform(x, [0.7, 1.9], offset=(3, -2), tile_shape=(5, 9), backend=backend_name, **kw)),
        ]
        for ref, out in pairs:
            np.testing.assert_array_equal(_run(out, backend_name), ref, err_msg=mode)
    with pytest.warns(UserWarning):
        ref = ndi.zoom(img2, 2.3, order=order, mode="constant", grid_mode=True)
        out = T.zoom(x, 2.3, order=order, mode="constant", grid_mode=True, tile_shape=(16, 16), backend=backend_name)
    np.testing.assert_array_equal(_run(out, backend_name), ref)


def test_rotate_3d_planes_bit_exact(backend_name):
    img = np.random.default_rng(3).random((6, 19, 15))
    x = da.from_array(img, chunks=(1, 8, 8))
    for axes in ((1, 2), (0, 2)):
        ref = ndi.rotate(img, -21, axes=axes, order=1, mode="nearest")
        out = T.rotate(x, -21, axes=axes, order=1, mode="nearest", tile_shape=(3, 7, 6), backend=backend_name)
        np.testing.assert_array_equal(_run(out, backend_name), ref)


@pytest.mark.parametrize("order", [0, 1])
def test_map_coordinates_lazy_bit_exact(img2, order, backend_name):
    rng = np.random.default_rng(9)
    coords = np.stack([rng.uniform(-12, 43, (17, 14)), rng.uniform(-9, 32, (17, 14))])
    lazy = da.from_array(coords, chunks=(1, (5, 1, 11), 7))
    x = da.from_array(img2, chunks=(10, 9))
    for mode in MODES:
        ref = ndi.map_coordinates(img2, coords, order=order, mode=mode, cval=1.5)
        out = T.map_coordinates(x, lazy, order=order, mode=mode, cval=1.5, backend=backend_name)
        np.testing.assert_array_equal(_run(out, backend_name), ref, err_msg=mode)


@pytest.fixture(scope="module")
def big2():
    return np.random.default_rng(11).random((150, 130)) * 1000


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_spline_orders_within_bound(big2, order):
    """Tile-wise spline coefficients (halo from the poles) agree with SciPy's global ones."""
    x = da.from_array(big2, chunks=(41, 37))
    scale = np.ptp(big2)
    matrix = _rotation(12, 0.97)
    worst = 0.0
    for mode in MODES:
        ref = ndi.affine_transform(big2, matrix, offset=(4.5, -7.0), order=order, mode=mode, cval=3.0)
        out = T.affine_transform(x, matrix, offset=(4.5, -7.0), order=order, mode=mode, cval=3.0,
                                 tile_shape=(24, 32), backend="numpy").compute()
        err = np.abs(out - ref).max() / scale
        assert err <= 1e-12, (mode, err)
        worst = max(worst, err)
    ref = ndi.zoom(big2, 1.3, order=order, mode="mirror")
    out = T.zoom(x, 1.3, order=order, mode="mirror", tile_shape=(40, 40), backend="numpy").compute()
    assert np.abs(out - ref).max() / scale <= 1e-12


def test_spline_order_3_on_standin_and_without_prefilter(big2, backend_name):
    x = da.from_array(big2, chunks=(50, 50))
    ref = ndi.shift(big2, (2.5, -30.25), order=3, mode="reflect")
    out = _run(T.shift(x, (2.5, -30.25), order=3, mode="reflect", tile_shape=(30, 30), backend=backend_name),
               backend_name)
    assert np.abs(out - ref).max() <= 1e-12 * np.ptp(big2)
    ref = ndi.shift(big2, (2.5, -30.25), order=3, mode="reflect", prefilter=False)
    out = _run(T.shift(x, (2.5, -30.25), order=3, mode="reflect", prefilter=False, tile_shape=(30, 30),
                       backend=backend_name), backend_name)
    assert np.abs(out - ref).max() <= 1e-12 * np.ptp(big2)


def test_spline_halo_from_poles():
    halos = {order: T.spline_halo(order) for order in range(6)}
    assert halos[0] == halos[1] == 0
    assert halos[2] < halos[3] < halos[4] < halos[5]
    for order in range(2, 6):  # the bound it promises holds at the halo and not one sample sooner
        z = max(abs(p) for p in T.SPLINE_POLES[order])
        gain = np.prod([(1 - p) * (1 - 1 / p) for p in T.SPLINE_POLES[order]])
        assert gain * z ** halos[order] / (1 - z) ** 2 <= 2.0**-53 < gain * z ** (halos[order] - 1) / (1 - z) ** 2


def test_deskew_is_the_shear_with_its_output_shape():
    img = np.random.default_rng(4).random((9, 12, 7)).astype(np.float32)
    out = T.deskew(img, angle=31.8, step=0.4, pixel_size=0.1, backend="numpy")
    shear = 0.4 * np.cos(np.deg2rad(31.8)) / 0.1
    extra = int(np.ceil(shear * 8))
    assert out.shape == (9, 12 + extra, 7)
    matrix = np.eye(3)
    matrix[1, 0] = -shear
    ref = ndi.affine_transform(img, matrix, output_shape=out.shape, order=1)
    np.testing.assert_array_equal(out.compute(), ref)
    # slice z is displaced by z * shear: a bright line in every slice lands on one deskewed line
    assert T.deskew(img, angle=150, step=0.4, pixel_size=0.1).shape == (9, 12 + extra, 7)


def test_planning_fits_the_budget_and_map_regions_is_general():
    img = np.random.default_rng(0).random((64, 64, 64)).astype(np.float32)
    rot = np.eye(3)
    rot[:2, :2] = _rotation(25)
    out = T.affine_transform(da.from_array(img, chunks=32), rot, order=1, budget="2MiB", backend="numpy")
    plan = gt.plan_of(out)
    assert plan.peak_bytes <= 2 * 2**20 and plan.n_tiles > 1
    np.testing.assert_array_equal(out.compute(), ndi.affine_transform(img, rot, order=1))
    # the engine mechanism itself: a flip whose source window is the mirrored box
    from gpu_tiler._engine.regions import map_regions

    flipped = map_regions(lambda w, out_box, src_box: w[::-1], img[:, 0, 0].copy(),
                          lambda box: ((64 - box[0][1], 64 - box[0][0]),), output_shape=(64,), tile_shape=(10,))
    np.testing.assert_array_equal(flipped.compute(), img[::-1, 0, 0])
    padded = map_regions(lambda w, out_box, src_box: w[:1] * 0 + w[0], np.arange(5.0),
                         lambda box: ((box[0][0] - 3, box[0][1] - 3),), output_shape=(5,), tile_shape=(1,),
                         mode="reflect")
    np.testing.assert_array_equal(padded.compute(), np.pad(np.arange(5.0), 3, mode="symmetric")[:5])


def test_bad_input_names_the_parameter():
    x = np.zeros((8, 8))
    with pytest.raises(ValueError, match="order"):
        T.affine_transform(x, np.eye(2), order=6)
    with pytest.raises(ValueError, match="mode"):
        T.shift(x, 1, mode="edge")
    with pytest.raises(ValueError, match="rows"):
        T.affine_transform(x, np.eye(3)[:, :2])
    with pytest.raises(ValueError, match="bottom row"):
        T.affine_transform(x, np.ones((3, 3)))
    with pytest.raises(TypeError, match="dtype"):
        T.zoom(x, 2, output=np.zeros((16, 16)))
    with pytest.raises(TypeError, match="complex"):
        T.shift(x.astype(complex), 1)
    with pytest.raises(ValueError, match="coordinates"):
        T.map_coordinates(x, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="budget"):
        T.affine_transform(x, np.eye(2), budget=100)


@pytest.fixture(scope="module")
def stored3(tmp_path_factory):
    """A stored (zarr) 3-D image with uneven chunks: windows are read straight from the store."""
    import zarr

    img = np.random.default_rng(8).random((21, 26, 19)).astype(np.float32) * 50
    path = tmp_path_factory.mktemp("stored") / "img.zarr"
    z = zarr.create_array(str(path), shape=img.shape, chunks=(8, 7, 10), dtype="float32")
    z[...] = img
    return img, str(path)


def test_stored_source_read_by_region_bit_exact(stored3):
    """Windows of a stored input come from sub-boxes of its chunks (one chunk each, none whole here), written
    into the window; every mode, mirrored reach included, equals SciPy bit for bit."""
    from gpu_tiler._engine.regions import _Reads

    img, path = stored3
    x = gt.open(path)
    assert _Reads(x).stored is not None and _Reads(x).chunked
    rot = np.eye(3)
    rot[1:, 1:] = _rotation(-23)
    matrix = rot @ np.array([[1, 0, 0], [0.25, 1, 0], [0, 0, 1]])
    for order, modes in ((1, MODES), (0, ("constant", "wrap", "reflect"))):
        for mode in modes:
            ref = ndi.affine_transform(img, matrix, offset=(0.5, -3.25, 4.0), order=order, mode=mode, cval=-1.0)
            out = T.affine_transform(x, matrix, offset=(0.5, -3.25, 4.0), order=order, mode=mode, cval=-1.0,
                                     tile_shape=(11, 10, 7), backend="numpy")
            np.testing.assert_array_equal(out.compute(), ref, err_msg=f"{order} {mode}")
    # SciPy's pre-pad for prefiltered 'nearest'/'grid-constant' is read as the mode extends the stored image
    for mode in ("nearest", "grid-constant"):
        ref = ndi.shift(img, (2.5, -4.75, 1.25), order=3, mode=mode, cval=2.0)
        out = T.shift(x, (2.5, -4.75, 1.25), order=3, mode=mode, cval=2.0, tile_shape=(11, 13, 10), backend="numpy")
        assert np.abs(out.compute() - ref).max() <= 1e-12 * np.ptp(img), mode
    coords = da.from_array(np.stack([g * 1.1 - 1 for g in np.indices((9, 11, 7), dtype=np.float64)]), chunks=(3, 4, 5, 3))
    ref = ndi.map_coordinates(img, coords.compute(), order=1, mode="wrap")
    np.testing.assert_array_equal(T.map_coordinates(x, coords, order=1, mode="wrap", backend="numpy").compute(), ref)


def test_stored_windows_read_sub_boxes_of_chunks(stored3):
    from gpu_tiler._engine.regions import _stored_reads, region_indices
    from gpu_tiler._planning.halo import axis_pieces

    img, path = stored3
    bounds = [np.array([0, 8, 16, 21]), np.array([0, 7, 14, 21, 26]), np.array([0, 10, 19])]
    region = ((-2, 12), (5, 17), (3, 19))  # reaches past the start: mirrored pieces
    per_axis = [axis_pieces(region_indices(n, lo, hi, "reflect"), b) for n, (lo, hi), b in zip(img.shape, region, bounds)]
    window = np.empty(tuple(hi - lo for lo, hi in region), np.float32)
    for box, parts in _stored_reads(per_axis, bounds):
        chunk = [int(np.searchsorted(b, s.start, side="right") - 1) for s, b in zip(box, bounds)]
        assert all(b[c] <= s.start and s.stop <= b[c + 1] for s, b, c in zip(box, bounds, chunk))  # inside one chunk
        block = img[box]
        for dst, src in parts:
            window[dst] = block[src]
    expected = np.pad(img, ((2, 0), (0, 0), (0, 0)), mode="symmetric")[0:14, 5:17, 3:19]
    np.testing.assert_array_equal(window, expected)


def test_plan_counts_chunk_reads_and_reads_one_at_a_time(stored3):
    """A stored input's chunks are decoded whole: the plan counts one read (stored + decoded chunk) next
    to the tiles in flight, and reads run in that many slots."""
    from gpu_tiler._engine import regions as R

    img, path = stored3
    x = gt.open(path)
    chunk_bytes = 8 * 7 * 10 * 4
    reads = R._Reads(x)
    whole = 21 * 26 * 19 * 4  # every chunk decoded once
    assert reads.costs(((0, 21), (0, 26), (0, 19)), 21 * 26 * 19) == (0, 2 * chunk_bytes, whole)  # into the window
    assert reads.costs(((-3, 21), (0, 26), (0, 19)), 24 * 26 * 19)[1] == 3 * chunk_bytes  # mirrored: copied out
    graph_x = da.from_array(img, chunks=(8, 7, 10)).map_blocks(lambda b: b + 0)
    assert R._Reads(graph_x).costs(((0, 9), (0, 8), (0, 3)), 9 * 8 * 3)[0] == 16 * 14 * 10 * 4  # whole chunks held
    out = T.affine_transform(x, np.eye(3), order=1, budget=40_000, backend="numpy")
    plan = gt.plan_of(out)
    assert plan.peak_bytes <= 40_000 and plan.n_tiles > 1
    np.testing.assert_array_equal(out.compute(), img)


def test_memory_mapped_npy_is_read_by_region(tmp_path):
    img = np.random.default_rng(1).random((30, 40)).astype(np.float32)
    np.save(tmp_path / "a.npy", img)
    x = gt.open(str(tmp_path / "a.npy"))
    for mode in ("constant", "mirror"):
        out = T.rotate(x, 17, order=1, mode=mode, tile_shape=(9, 11), backend="numpy").compute()
        np.testing.assert_array_equal(out, ndi.rotate(img, 17, order=1, mode=mode), err_msg=mode)
