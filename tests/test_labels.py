"""label() against scipy.ndimage.label on the whole image: exact arrays, exact numbering, exact counts."""
import gc
import itertools
import math
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi

import gpu_tiler as gt
from gpu_tiler._kernels import kernel_dir
from gpu_tiler.labels import label
from gpu_tiler.labels._merge import (
    CUnionFind,
    get_merger,
    kernel_source,
    merger_problem,
)


def expected(image, connectivity=1, structure=None):
    if structure is None:
        structure = ndi.generate_binary_structure(image.ndim, connectivity)
    return ndi.label(image, structure)


def check(image, chunks, connectivity=1, structure=None, **kwargs):
    """label() on ``image`` cut into tiles that are ``chunks`` equals SciPy on the whole image; returns
    the labels."""
    want, n_want = expected(image, connectivity, structure)
    kwargs.setdefault("tile_shape", "chunks")
    labels, n = label(da.from_array(image, chunks=chunks), connectivity, structure, **kwargs)
    assert labels.chunks == da.from_array(image, chunks=chunks).chunks or kwargs["tile_shape"] != "chunks"
    assert isinstance(labels, da.Array) and isinstance(n, int)
    got = labels.compute()
    assert n == n_want
    assert got.dtype == (kwargs.get("dtype") or np.int32)
    np.testing.assert_array_equal(got, want)
    return got


def blobs(shape, sigma=2.0, fraction=0.5, seed=0):
    noise = np.random.default_rng(seed).random(shape, dtype=np.float32)
    smooth = ndi.gaussian_filter(noise, sigma)
    return smooth > np.quantile(smooth, 1 - fraction)


def spiral(side):
    """One 1-voxel-wide square spiral (a single object crossing every tile many times)."""
    image = np.zeros((side, side), dtype=bool)
    top, left, bottom, right = 0, 0, side - 1, side - 1
    while top <= bottom and left <= right:
        image[top, left : right + 1] = True
        image[top : bottom + 1, right] = True
        if bottom - top >= 2:
            image[bottom, left : right + 1] = True
        if right - left >= 2 and bottom - top >= 4:
            image[top + 2 : bottom + 1, left] = True
            image[top + 2, left : right - 1] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    return image


# ---- exactness across shapes, chunkings and connectivities (NumPy and, where a GPU works, CuPy) ----

CASES = [
    # shape, chunks
    ((37, 53), (5, 7)),  # uneven last chunks
    ((40, 40), (40, 40)),  # one chunk
    ((9, 11), (1, 1)),  # size-1 chunks: every voxel its own tile
    ((31, 29), ((3, 10, 1, 17), (12, 1, 16))),  # irregular chunks
    ((200,), (7,)),  # 1-D
    ((200,), (1,)),  # 1-D, size-1 chunks
    ((13, 14, 15), (4, 5, 6)),  # 3-D
    ((7, 6, 5, 6), (3, 2, 4, 3)),  # 4-D
]


@pytest.mark.parametrize("shape, chunks", CASES)
def test_random_masks_equal_scipy_for_every_connectivity(shape, chunks, backend_name):
    rng = np.random.default_rng(math.prod(shape))
    for connectivity in range(1, len(shape) + 1):
        for fraction in (0.35, 0.6):
            image = rng.random(shape) < fraction
            check(image, chunks, connectivity, backend=backend_name)


@pytest.mark.parametrize("connectivity", [1, 2])
@pytest.mark.parametrize("scratch", ["memory", "disk"])
def test_blobs_2d_equal_scipy(connectivity, scratch, backend_name):
    image = blobs((300, 280), sigma=3.0, fraction=0.45)
    check(image, (64, 48), connectivity, backend=backend_name, scratch=scratch)


def test_blobs_3d_full_connectivity_with_scratch_on_disk(tmp_path):
    image = blobs((40, 50, 45), sigma=1.5, fraction=0.4, seed=3)
    check(image, (16, 16, 16), 3, scratch=tmp_path)
    check(image, (16, 16, 16), 1, scratch="disk")


def test_planned_tiles_follow_the_budget_and_the_chunk_edges():
    image = blobs((300, 280), sigma=2.0, seed=8)
    want, n_want = expected(image, 2)
    source = da.from_array(image, chunks=(50, 40))
    labels, n = label(source, 2, budget="256KiB")  # default tiles: planned from the budget
    assert math.prod(labels.numblocks) > 4
    assert all(c % 50 == 0 for c in labels.chunks[0][:-1]) and all(c % 40 == 0 for c in labels.chunks[1][:-1])
    assert n == n_want
    np.testing.assert_array_equal(labels.compute(), want)
    shaped, n_shaped = label(source, 2, tile_shape=(64, 70))
    assert shaped.chunks[0][0] == 64 and shaped.chunks[1][0] == 70 and n_shaped == n_want
    np.testing.assert_array_equal(shaped.compute(), want)
    with pytest.raises(ValueError, match="tile_shape must be None, 'chunks' or a length >= 1"):
        label(source, tile_shape=(0, 5))


@pytest.mark.parametrize("how", ["numpy chunks", "persisted", "lazy pipeline"])
def test_tiles_made_of_several_chunks_of_any_source(how, monkeypatch):
    # tiles of in-memory chunks are assembled inside the labelling task; chunks that are tasks
    # (a lazy pipeline) go through a rechunk; both equal SciPy, with uneven chunks inside tiles
    from gpu_tiler.labels import _label as label_module

    image = blobs((90, 77), sigma=1.5, seed=12)
    want, n_want = expected(image, 2)
    source = da.from_array(image, chunks=((20, 25, 25, 20), (30, 30, 17)))
    if how == "persisted":
        source = source.persist()
    elif how == "lazy pipeline":
        source = source.map_blocks(np.logical_not, dtype=bool).map_blocks(np.logical_not, dtype=bool)
    assembled = []
    original = label_module._tile_sources
    monkeypatch.setattr(label_module, "_tile_sources", lambda *a: assembled.append(original(*a)) or assembled[-1])
    labels, n = label(source, 2, tile_shape=(45, 60))  # tiles of 2x2 and 2x1 chunks
    assert labels.chunks == ((45, 45), (60, 17)) and n == n_want
    assert (assembled[0] is None) == (how == "lazy pipeline")
    np.testing.assert_array_equal(labels.compute(), want)


def test_spiral_is_one_object_through_every_tile():
    image = spiral(64)
    assert expected(image)[1] == 1
    check(image, (5, 7), 1)
    check(image, (16, 16), 2)


def test_checkerboard_connects_only_diagonally_across_tile_corners():
    image = (np.indices((24, 30)).sum(axis=0) % 2).astype(np.uint8)
    got = check(image, (4, 5), 2)  # every white voxel touches the next only at a corner
    assert got.max() == 1
    check(image, (4, 5), 1)  # no two white voxels share a face: each is its own object
    cube = (np.indices((8, 9, 10)).sum(axis=0) % 2).astype(bool)
    check(cube, (3, 3, 3), 3)
    check(cube, (3, 3, 3), 2)


def test_a_diagonal_through_tile_corners_only():
    image = np.eye(12, dtype=bool)  # crosses from tile to tile exactly at the corners of 3x3 tiles
    assert check(image, (3, 3), 2).max() == 1
    assert check(image, (3, 3), 1).max() == 12
    anti = np.fliplr(np.eye(12, dtype=bool))
    assert check(anti, (3, 3), 2).max() == 1
    hyper = np.zeros((6,) * 4, dtype=bool)
    hyper[tuple(np.arange(6) for _ in range(4))] = True
    assert check(hyper, (2, 2, 2, 2), 4).max() == 1
    assert check(hyper, (2, 2, 2, 2), 3).max() == 6


def test_full_and_empty_images():
    assert check(np.ones((20, 30), dtype=bool), (6, 7)).max() == 1
    assert check(np.zeros((20, 30), dtype=bool), (6, 7)).max() == 0
    labels, n = label(da.zeros((0, 5), chunks=(1, 5)))
    assert n == 0 and labels.shape == (0, 5)


def test_custom_structure():
    # connects along rows and along one diagonal only (symmetric about the centre)
    structure = np.array([[0, 0, 1], [1, 1, 1], [1, 0, 0]], dtype=bool)
    image = np.random.default_rng(5).random((45, 38)) < 0.5
    check(image, (7, 6), structure=structure)
    structure3 = np.zeros((3, 3, 3), dtype=bool)
    structure3[1, 1, :] = structure3[:, 1, 1] = True
    structure3[0, 0, 0] = structure3[2, 2, 2] = True
    check(np.random.default_rng(6).random((12, 13, 11)) < 0.5, (5, 4, 3), structure=structure3)


def test_nonzero_values_of_any_dtype_are_foreground():
    image = np.random.default_rng(2).integers(-2, 3, (30, 31)).astype(np.float32)
    check(image, (8, 9), 2)
    check(image.astype(np.int16), (8, 9), 1)


def test_numpy_input_and_requested_dtype():
    image = blobs((70, 90), fraction=0.5)
    want, n_want = expected(image)
    labels, n = label(image, dtype="int64")
    assert labels.dtype == np.int64 and n == n_want
    np.testing.assert_array_equal(labels.compute(), want)
    with pytest.raises(ValueError, match="dtype uint8 cannot hold"):
        label(np.random.default_rng(0).random((100, 100)) < 0.25, dtype=np.uint8)


def test_labels_computed_again_persisted_sliced_or_in_parallel_stay_equal_to_scipy():
    # pass 2 maps the tiles kept in memory in place, once: later and concurrent computations of
    # the same result (whole, persisted, sliced, from several threads) must not map them again
    image = blobs((120, 90), fraction=0.45)
    want, _ = expected(image)
    labels, _ = label(da.from_array(image, chunks=(30, 45)), tile_shape="chunks", scratch="memory")
    np.testing.assert_array_equal(labels.compute(), want)
    np.testing.assert_array_equal(labels.compute(), want)
    np.testing.assert_array_equal(labels[20:70, 40:].compute(), want[20:70, 40:])
    np.testing.assert_array_equal(labels.persist().compute(), want)
    fresh, _ = label(da.from_array(image, chunks=(30, 45)), tile_shape="chunks", scratch="memory")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: fresh.compute(scheduler="threads"), range(4)))
    for got in results:
        np.testing.assert_array_equal(got, want)


def test_tile_labels_pickle_with_their_mapping_state():
    from gpu_tiler._backends import get_backend
    from gpu_tiler.labels._label import _TileLabels

    numpy = get_backend("numpy")
    tile = _TileLabels(np.array([[0, 1], [2, 1]], dtype=np.int32))
    lut = np.array([0, 7, 5], dtype=np.int32)
    copy = pickle.loads(pickle.dumps(tile))  # as a cluster would send it before pass 2
    np.testing.assert_array_equal(tile.to_global(lut, backend=numpy, to_host=True), [[0, 7], [5, 7]])
    np.testing.assert_array_equal(tile.to_global(lut, backend=numpy, to_host=True), [[0, 7], [5, 7]])
    mapped = pickle.loads(pickle.dumps(tile))  # a mapped tile stays mapped, and read-only
    assert not mapped.array.flags.writeable
    np.testing.assert_array_equal(mapped.to_global(lut, backend=numpy, to_host=True), [[0, 7], [5, 7]])
    np.testing.assert_array_equal(copy.to_global(lut, backend=numpy, to_host=True), [[0, 7], [5, 7]])
    wide = _TileLabels(np.array([0, 2, 1], dtype=np.int32))  # another dtype: mapped into a new array
    np.testing.assert_array_equal(wide.to_global(lut.astype(np.int64), backend=numpy, to_host=True), [0, 5, 7])
    np.testing.assert_array_equal(wide.array, [0, 2, 1])


@pytest.mark.parametrize("thread", ["main", "worker"])
def test_an_interrupted_mapping_resumes_where_it_stopped(monkeypatch, thread):
    # Ctrl-C lands after a C call returns: the third slab is mapped, then the interrupt arrives
    # (main thread); a worker thread's mapping interrupted between slabs resumes from its progress
    from gpu_tiler._backends import get_backend
    from gpu_tiler.labels import _label as label_module

    numpy = get_backend("numpy")
    local = np.arange(40, dtype=np.int32) % 4
    lut = np.array([0, 3, 1, 2], dtype=np.int32)
    tile = label_module._TileLabels(local.copy())
    monkeypatch.setattr(label_module, "_TAKE_SLAB", 8)
    original, calls = np.take, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        result = original(*args, **kwargs) if thread == "main" or calls["n"] != 3 else None
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(np, "take", interrupted)
    if thread == "main":
        with pytest.raises(KeyboardInterrupt):
            tile.to_global(lut, backend=numpy, to_host=True)
    else:
        with ThreadPoolExecutor(1) as pool, pytest.raises(KeyboardInterrupt):
            pool.submit(tile.to_global, lut, backend=numpy, to_host=True).result()
    assert tile.mapped == 16 and not tile.is_global
    sent = pickle.loads(pickle.dumps(tile))  # a half-mapped tile moved to another worker
    np.testing.assert_array_equal(tile.to_global(lut, backend=numpy, to_host=True), lut[local])
    np.testing.assert_array_equal(sent.to_global(lut, backend=numpy, to_host=True), lut[local])


def test_a_slab_cut_short_while_copied_in_is_copied_again():
    from gpu_tiler._backends import get_backend
    from gpu_tiler.labels._label import _TileLabels

    local = np.arange(12, dtype=np.int32) % 3
    lut = np.array([0, 2, 1], dtype=np.int32)
    tile = _TileLabels(local.copy())
    tile.mapped, tile.pending = 4, (4, lut[local[4:8]])  # interrupted while slab 4:8 was copied in
    tile.array[4:6] = lut[local[4:6]]  # half of it made it
    tile.array[:4] = lut[local[:4]]
    np.testing.assert_array_equal(tile.to_global(lut, backend=get_backend("numpy"), to_host=True), lut[local])


def test_blocks_handed_out_cannot_corrupt_the_result():
    image = blobs((60, 50), fraction=0.5, seed=3)
    want, _ = expected(image)
    labels, _ = label(da.from_array(image, chunks=(30, 50)), tile_shape="chunks")
    blocks = dask.compute(*labels.to_delayed().ravel())
    with pytest.raises(ValueError, match="read-only"):
        blocks[0][...] = 0
    np.testing.assert_array_equal(labels.compute(), want)
    assert labels.compute().flags.writeable  # compute() gives the caller its own array


def skip_unless_builds(merger):
    """Skip, saying why, where the kernel merger ``merger`` cannot build here (an OpenCL runtime that cannot
    compile for this CPU, no C compiler): the other kernel merger still runs the same kernel source."""
    problem = merger_problem(merger)
    if problem is not None:
        pytest.skip(f"the {merger!r} merger cannot run here: {problem}")


@pytest.mark.parametrize("merger", ["opencl", "c"])
def test_kernel_merger_in_label_equals_scipy(merger):
    skip_unless_builds(merger)
    check(blobs((120, 130), sigma=2.0), (16, 20), 2, merger=merger)


# ---- bad input: a ValueError naming the parameter, at call time ----


@pytest.mark.parametrize("connectivity", [0, 3, -1, 1.5, True, "1"])
def test_bad_connectivity(connectivity):
    with pytest.raises(ValueError, match="connectivity must be an integer from 1"):
        label(np.ones((4, 4)), connectivity=connectivity)


def test_bad_structure_and_input():
    with pytest.raises(ValueError, match=r"structure must have shape \(3, 3\)"):
        label(np.ones((4, 4)), structure=np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="structure must be symmetric"):
        label(np.ones((4, 4)), structure=np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="image has the complex dtype"):
        label(np.ones((4, 4), dtype=np.complex64))
    with pytest.raises(ValueError, match="dtype must be an integer type"):
        label(np.ones((4, 4)), dtype=np.float32)
    with pytest.raises(ValueError, match="scratch must be one of"):
        label(np.ones((4, 4)), scratch="ram")
    with pytest.raises(ValueError, match="merger 'cuda' needs the CuPy backend"):
        label(np.ones((4, 4)), merger="cuda", backend="numpy")


# ---- the union-find mergers ----


def reference_roots(first, second, n_nodes):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(first.size), (first, second)), shape=(n_nodes, n_nodes))
    _, component = connected_components(graph, directed=False)
    smallest = np.full(component.max() + 1, n_nodes)
    np.minimum.at(smallest, component, np.arange(n_nodes))
    return smallest[component]


def random_pairs(n_nodes, n_pairs, seed, local=True):
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n_nodes, n_pairs)
    second = np.clip(first + rng.integers(-5, 6, n_pairs), 0, n_nodes - 1) if local else rng.integers(0, n_nodes, n_pairs)
    return first, second


@pytest.mark.parametrize("local", [True, False])
def test_numpy_merger_gives_each_component_its_smallest_node(local):
    first, second = random_pairs(20_000, 15_000, 1, local)
    np.testing.assert_array_equal(get_merger("numpy").roots(first, second, 20_000), reference_roots(first, second, 20_000))
    assert get_merger("numpy").roots(np.zeros(0, int), np.zeros(0, int), 3).tolist() == [0, 1, 2]


@pytest.mark.parametrize("merger", ["opencl", "c", "c-8-threads"])
@pytest.mark.parametrize("local", [True, False])
def test_kernel_merger_equals_numpy_merger(local, merger):
    skip_unless_builds(merger.split("-")[0])
    merge = CUnionFind(threads=8) if merger == "c-8-threads" else get_merger(merger)  # 8 threads contend on 2 cores too
    for seed, (n_nodes, n_pairs) in enumerate([(50_000, 40_000), (1000, 5000), (7, 3)]):
        first, second = random_pairs(n_nodes, n_pairs, seed, local)
        want = get_merger("numpy").roots(first, second, n_nodes)
        np.testing.assert_array_equal(merge.roots(first, second, n_nodes), want)
    assert merge.roots(np.zeros(0, int), np.zeros(0, int), 3).tolist() == [0, 1, 2]


def test_c_merger_index_widths_and_bounds():
    skip_unless_builds("c")
    first, second = random_pairs(3000, 2000, 5, local=False)
    want = reference_roots(first, second, 3000)
    from gpu_tiler.labels import _merge

    for bits in (32, 64):  # the int64 build runs for 2**31 nodes and more; exercised here on a small input
        hook, compress = _merge._c_functions(bits)
        dtype = np.int32 if bits == 32 else np.int64
        parent = np.arange(3000, dtype=dtype)
        a, b = first.astype(dtype), second.astype(dtype)
        changed = np.zeros(1, np.int32)
        CUnionFind()._run(
            hook=lambda: hook(4, parent.ctypes.data, a.ctypes.data, b.ctypes.data, a.size, changed.ctypes.data),
            compress=lambda: compress(4, parent.ctypes.data, parent.size),
            read_changed=lambda: bool(changed[0]),
            clear_changed=lambda: changed.fill(0),
        )
        np.testing.assert_array_equal(parent, want)
    with pytest.raises(ValueError, match=r"pairs name nodes outside 0..9"):
        get_merger("c").roots(np.array([0, 10]), np.array([1, 2]), 10)
    with pytest.raises(ValueError, match="threads must be 1..256"):
        CUnionFind(threads=0)


def test_auto_merger_falls_back_with_one_warning_and_opencl_asked_for_is_a_clear_error(monkeypatch):
    from gpu_tiler._backends import NUMPY
    from gpu_tiler.labels import _merge

    broken = "RuntimeError: clBuildProgram failed: BUILD_PROGRAM_FAILURE error: unknown target CPU 'generic'"
    monkeypatch.setattr(_merge, "opencl_problem", lambda: broken)
    monkeypatch.setattr(_merge, "_WARNED", set())
    with pytest.warns(RuntimeWarning, match="merger='auto': the OpenCL runtime cannot run the union-find here .*unknown target CPU") as seen:
        chosen = _merge.merger_for(NUMPY, "auto")
        again = _merge.merger_for(NUMPY, "auto")
    assert len([w for w in seen if "merger='auto'" in str(w.message)]) == 1  # once per cause, not per call
    assert chosen is again and chosen.name == ("c" if merger_problem("c") is None else "numpy")
    with pytest.raises(RuntimeError, match="merger 'opencl' was asked for.*unknown target CPU.*upgrade pyopencl.*merger='c'"):
        _merge.merger_for(NUMPY, "opencl")
    assert _merge.merger_for(NUMPY, None).name == "numpy"  # the default stays the backend's own

    monkeypatch.setattr(_merge, "opencl_problem", lambda: "RuntimeError: pyopencl is not installed; install gpu_tiler[opencl]")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an optional extra that is absent is no fault: no warning
        assert _merge.merger_for(NUMPY, "auto").name in ("c", "numpy")
    with pytest.raises(RuntimeError, match=r"install it with pip install 'gpu_tiler\[opencl\]'"):
        _merge.merger_for(NUMPY, "opencl")
    with pytest.raises(ValueError, match="merger 'nope' is not one of 'numpy', 'cuda', 'opencl', 'c', 'auto'"):
        _merge.merger_for(NUMPY, "nope")


@pytest.mark.slow
def test_a_broken_opencl_runtime_does_not_break_auto(tmp_path):
    """A real OpenCL build failure (PoCL told to pass a build option it rejects), in a fresh process:
    merger='auto' labels exactly with one warning, merger='opencl' fails saying what to do."""
    pytest.importorskip("pyopencl", reason="pyopencl not installed (gpu_tiler[opencl])")
    code = (
        "import warnings, numpy as np, scipy.ndimage as ndi\n"
        "from gpu_tiler.labels import label\n"
        "from gpu_tiler.labels._merge import opencl_problem\n"
        "print('PROBLEM', opencl_problem())\n"
        "image = np.random.default_rng(3).random((90, 70)) > 0.6\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    labels, n = label(image, tile_shape=(20, 20), merger='auto')\n"
        "    label(image, tile_shape=(30, 30), merger='auto')\n"
        "want, n_want = ndi.label(image)\n"
        "assert n == n_want and np.array_equal(np.asarray(labels), want)\n"
        "print('WARNINGS', sum(\"merger='auto'\" in str(w.message) for w in seen))\n"
        "try:\n"
        "    label(image, merger='opencl')\n"
        "except RuntimeError as exc:\n"
        "    print('ERROR', exc)\n"
    )
    env = dict(os.environ, POCL_EXTRA_BUILD_FLAGS="-mcpu=gpu-tiler-test", POCL_KERNEL_CACHE="0")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    if "PROBLEM None" in done.stdout:
        pytest.skip("the OpenCL platform here is not PoCL (POCL_EXTRA_BUILD_FLAGS had no effect)")
    assert "WARNINGS 1" in done.stdout, done.stdout
    assert "ERROR merger 'opencl' was asked for, but OpenCL cannot run" in done.stdout, done.stdout
    assert "merger='c'" in done.stdout


@pytest.mark.gpu
def test_cuda_merger_equals_numpy_merger(gpu):
    import cupy

    for seed, local in enumerate([True, False]):
        first, second = random_pairs(100_000, 80_000, seed, local)
        want = get_merger("numpy").roots(first, second, 100_000)
        got = get_merger("cuda").roots(cupy.asarray(first), cupy.asarray(second), 100_000)
        assert isinstance(got, cupy.ndarray)
        np.testing.assert_array_equal(cupy.asnumpy(got), want)


def _nvcc():
    found = shutil.which("nvcc")
    if found is None and Path("/usr/local/cuda/bin/nvcc").exists():
        found = "/usr/local/cuda/bin/nvcc"
    return found


@pytest.mark.parametrize("bits", [32, 64])
def test_union_find_kernel_compiles_as_cuda(tmp_path, bits):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    source = tmp_path / f"union_find_i{bits}.cu"
    source.write_text(kernel_source(bits))
    obj = tmp_path / f"union_find_i{bits}.o"
    result = subprocess.run([nvcc, "-I", str(kernel_dir()), "-c", str(source), "-o", str(obj)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True).stdout if shutil.which("nm") else ""
    if symbols:
        assert f"gpu_tiler_uf_hook_pairs_i{bits}" in symbols and f"gpu_tiler_uf_compress_i{bits}" in symbols


def test_union_find_kernel_is_found_beside_the_portability_header():
    assert (kernel_dir() / "union_find.h").is_file()
    assert '#include "portability.h"' in kernel_source(64)


# ---- out of core, distributed ----


def test_out_of_core_to_zarr_under_a_small_budget(tmp_path):
    image = blobs((192, 160), sigma=2.0, fraction=0.5, seed=9)
    gt.save(da.from_array(image, chunks=(32, 32)), tmp_path / "mask.zarr")
    source = gt.open(tmp_path / "mask.zarr")
    scratch_parent = tmp_path / "scratch"
    scratch_parent.mkdir()
    # local labels (192*160*4 = 120 KiB) do not fit a 64 KiB budget: pass 1 streams them to disk
    labels, n = label(source, connectivity=2, budget="64KiB", scratch=scratch_parent)
    assert len(os.listdir(scratch_parent)) == 1
    gt.save(labels, tmp_path / "labels.zarr", budget="64KiB")
    want, n_want = expected(image, 2)
    assert n == n_want
    np.testing.assert_array_equal(np.asarray(gt.open(tmp_path / "labels.zarr")), want)
    del labels
    gc.collect()
    assert os.listdir(scratch_parent) == []  # the scratch store goes with the last graph using it


def test_auto_scratch_goes_to_disk_only_when_local_labels_exceed_the_budget(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    image = da.from_array(blobs((64, 64)), chunks=16)
    in_memory, n = label(image, budget="1GiB")
    assert list(tmp_path.iterdir()) == []
    on_disk, n_disk = label(image, budget="8KiB")  # 64*64*4 bytes of local labels > 8 KiB
    assert [p.name.startswith("gpu_tiler-labels-") for p in tmp_path.iterdir()] == [True]
    assert n == n_disk
    np.testing.assert_array_equal(in_memory.compute(), on_disk.compute())


@pytest.mark.gpu
def test_device_resident_chunks_stay_on_the_device(gpu):
    import cupy

    image = blobs((200, 230), sigma=2.0)
    want, n_want = expected(image, 2)
    labels, n = label(gt.open(cupy.asarray(image), chunks=(64, 50)), 2)
    got = labels.compute()
    assert isinstance(got, cupy.ndarray) and n == n_want
    np.testing.assert_array_equal(cupy.asnumpy(got), want)


def test_two_worker_distributed_cluster_gives_the_same_result():
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    image = blobs((150, 170), sigma=2.0, seed=4)
    want, n_want = expected(image, 2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster):
            labels, n = label(da.from_array(image, chunks=(40, 30)), 2, tile_shape="chunks")
            got = labels.compute()
            np.testing.assert_array_equal(labels.compute(), got)  # tiles mapped in place on the workers, once
            on_disk, n_disk = label(da.from_array(image, chunks=(40, 30)), 2, tile_shape="chunks", scratch="disk")
            got_disk = on_disk.compute()
    assert n == n_want == n_disk
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_disk, want)


def test_numbering_is_raster_order_of_first_voxels_for_many_tilings():
    image = blobs((60, 70), sigma=1.5, fraction=0.5, seed=11)
    want, _ = expected(image, 2)
    for chunks in itertools.islice(itertools.product([3, 8, 60], [2, 9, 70]), None):
        got, _ = label(da.from_array(image, chunks=chunks), 2, tile_shape="chunks")
        np.testing.assert_array_equal(got.compute(), want)


def test_saving_labels_resumes_after_a_failed_write(tmp_path, disk_full_after):
    # the labels are named by their input and parameters, so a later label() of the same image is the
    # same job for save(resume=True): finished tiles are kept, only the others are written
    from gpu_tiler._io.sinks import DONE_LOG, SaveError

    image = blobs((96, 80), fraction=0.5, seed=5)
    want, n_want = expected(image)
    source = tmp_path / "mask.zarr"
    gt.save(da.from_array(image, chunks=(24, 40)), source)
    target = tmp_path / "labels.zarr"
    labels, n = label(gt.open(source), tile_shape="chunks")
    disk_full_after(2)
    with pytest.raises(SaveError, match="No space left on device"):
        gt.save(labels, target, tiles_in_flight=1)
    disk_full_after(None)
    assert len((tmp_path / ".labels.zarr.partial" / DONE_LOG).read_text().splitlines()) == 2
    again, n_again = label(gt.open(source), tile_shape="chunks")
    assert again.name != labels.name and n_again == n == n_want  # each result holds its own tiles
    out = gt.save(again, target, resume=True)
    np.testing.assert_array_equal(out.compute(), want)
    other, _ = label(gt.open(source), 2, tile_shape="chunks")  # another connectivity: another job
    disk_full_after(0)
    with pytest.raises(SaveError):
        gt.save(other, tmp_path / "other.zarr")
    disk_full_after(None)
    with pytest.raises(ValueError, match="different job"):
        gt.save(labels, tmp_path / "other.zarr", resume=True)


def test_two_labellings_of_an_array_changed_in_between_stay_apart():
    import zarr

    image = blobs((40, 50), fraction=0.5, seed=21)
    store = zarr.create_array(store={}, shape=image.shape, chunks=(20, 25), dtype=bool)
    store[...] = image
    source = gt.open(store)
    before, _ = label(source, tile_shape="chunks")
    store[...] = ~image  # same dask name for the input, other voxels
    after, _ = label(gt.open(store), tile_shape="chunks")
    got_before, got_after = dask.compute(before, after)
    np.testing.assert_array_equal(got_before, expected(image)[0])
    np.testing.assert_array_equal(got_after, expected(~image)[0])
