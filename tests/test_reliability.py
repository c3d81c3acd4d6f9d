"""Long jobs that survive: resumable saves, out-of-memory splits, corrupt input, unwritable output."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

import gpu_tiler as gt
from gpu_tiler._io.sinks import DONE_LOG, MANIFEST, SaveError
from gpu_tiler._io.sources import ChunkReadError


@pytest.fixture
def image():
    return np.random.default_rng(5).random((96, 80)).astype(np.float32)


def fails_above(limit):
    """A Gaussian that raises MemoryError on windows larger than ``limit`` voxels (an injected OOM)."""

    def smooth(tile):
        if tile.size > limit:
            raise MemoryError(f"injected: {tile.size} voxels")
        return ndi.gaussian_filter(tile, 2.0)

    return smooth


def test_out_of_memory_splits_the_tile_and_the_result_is_unchanged(image):
    out = gt.map_tiles(fails_above(40 * 40), image, halo=8, tile_shape=(48, 80), tiles_in_flight=1,
                       name="oom-split-test")
    with pytest.warns(ResourceWarning, match="ran out of memory") as caught:
        got = out.compute(scheduler="synchronous")
    assert len([w for w in caught if issubclass(w.category, ResourceWarning)]) == 1  # one warning per job
    np.testing.assert_array_equal(got, ndi.gaussian_filter(image, 2.0))


def test_out_of_memory_split_works_for_fused_filter_chains(image):
    import gpu_tiler.filters as F
    from gpu_tiler._engine import chain as _chain

    calls = []
    original = _chain.run_step

    def flaky(step, backend, tile, border):
        calls.append(tile.size)
        if tile.size > 30 * 30:
            raise MemoryError("injected")
        return original(step, backend, tile, border)

    _chain.run_step = flaky
    try:
        chain = F.gaussian(F.median(image, 3, mode="nearest"), 1.5, mode="constant", cval=0.5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            got = chain.compute(scheduler="synchronous")
    finally:
        _chain.run_step = original
    expected = ndi.gaussian_filter(ndi.median_filter(image, 3, mode="nearest"), 1.5, mode="constant", cval=0.5)
    np.testing.assert_array_equal(got, expected)
    assert max(calls) > 30 * 30 and min(calls) <= 30 * 30


def test_a_one_voxel_tile_that_does_not_fit_is_a_clear_error():
    out = gt.map_tiles(fails_above(0), np.zeros((4, 4)), halo=1, tile_shape=(2, 2), name="oom-hopeless")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises(MemoryError, match="one voxel"):
            out.compute(scheduler="synchronous")


def test_corrupt_input_chunk_names_the_chunk_and_path_and_commits_nothing(tmp_path, image):
    source = tmp_path / "in.zarr"
    gt.save(gt.open(image, chunks=(32, 40)), source)
    z = zarr.open_array(str(source), mode="r")
    chunk_files = sorted(p for p in (source / "c").rglob("*") if p.is_file())
    chunk_files[1].write_bytes(b"this is not a zstd frame")
    index = tuple(int(p) for p in chunk_files[1].relative_to(source / "c").parts)
    assert z.chunks != image.shape
    with pytest.raises(ChunkReadError, match=rf"chunk \({index[0]}, {index[1]}\) of '.*in.zarr'"):
        gt.save(gt.gaussian(gt.open(source), 1.0), tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()
    assert not (tmp_path / ".out.zarr.partial").exists()


def test_output_under_a_file_is_a_clear_error(tmp_path, image):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(SaveError, match="choose a folder you can write to"):
        gt.save(image, tmp_path / "a-file" / "out.zarr")


def test_unwritable_output_is_a_clear_error(tmp_path, image):
    if os.geteuid() == 0:
        pytest.skip("running as root: permissions do not stop writes")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(SaveError, match="choose a folder you can write to"):
            gt.save(image, folder / "out.zarr")
    finally:
        folder.chmod(0o700)


def test_a_failed_write_keeps_finished_tiles_and_resumes(tmp_path, image, disk_full_after):
    target = tmp_path / "out.zarr"
    smoothed = gt.gaussian(image, 2.0, budget="64KiB")
    disk_full_after(3)
    with pytest.raises(SaveError, match="No space left on device.*resume=True"):
        gt.save(smoothed, target, tiles_in_flight=1)
    disk_full_after(None)
    partial = tmp_path / ".out.zarr.partial"
    assert not target.exists() and partial.is_dir()
    assert len((partial / DONE_LOG).read_text().splitlines()) == 3
    out = gt.save(smoothed, target, resume=True)
    np.testing.assert_array_equal(out.compute(), ndi.gaussian_filter(image, 2.0))
    assert not partial.exists() and not (target / MANIFEST).exists()


def test_resume_with_changed_parameters_is_refused(tmp_path, image):
    target = tmp_path / "out.zarr"
    partial = tmp_path / ".out.zarr.partial"

    def fail_late(tile):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        gt.save(gt.map_tiles(fail_late, image, tile_shape=(32, 32)), target, resume=True)
    assert (partial / MANIFEST).is_file()
    job = json.loads((partial / MANIFEST).read_text())
    with pytest.raises(ValueError, match="different job .*operations.*start over"):
        gt.save(gt.gaussian(image, 3.0), target, resume=True)
    assert json.loads((partial / MANIFEST).read_text()) == job  # the earlier partial is left as it was
    out = gt.save(gt.gaussian(image, 3.0), target)  # without resume: starts over
    np.testing.assert_array_equal(out.compute(), ndi.gaussian_filter(image, 3.0))


JOB = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import numpy as np, scipy.ndimage as ndi
    import gpu_tiler as gt

    source, target = sys.argv[1], sys.argv[2]

    def slow_gaussian(tile):
        # where to log and how slow are read at run time, so both runs are the same job
        with open(os.environ["CALLS_LOG"], "a") as fh:
            fh.write(f"{tile.shape}\\n")
        time.sleep(float(os.environ["TILE_DELAY"]))
        return ndi.gaussian_filter(tile, 2.0)

    image = gt.open(source)
    result = gt.map_tiles(slow_gaussian, image, halo=8, tile_shape=(16, 80), tiles_in_flight=1)
    gt.save(result, target, resume=True)
    print("done")
    """
)


def test_a_killed_save_resumes_without_recomputing_finished_tiles(tmp_path, image):
    source = tmp_path / "in.zarr"
    gt.save(image, source)
    script = tmp_path / "job.py"
    script.write_text(JOB)
    log = tmp_path / "calls.log"
    partial = tmp_path / ".out.zarr.partial"
    env = dict(os.environ, GPU_TILER_BACKEND="numpy", CALLS_LOG=str(log), TILE_DELAY="0.4")
    job = subprocess.Popen([sys.executable, str(script), source, tmp_path / "out.zarr"], env=env)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until some, not all, of the 6 tiles are written
        done_log = partial / DONE_LOG
        if done_log.is_file() and len(done_log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    finished = len((partial / DONE_LOG).read_text().splitlines())
    assert 2 <= finished < 6 and not (tmp_path / "out.zarr").exists()
    log.write_text("")
    env["TILE_DELAY"] = "0"
    resumed = subprocess.run([sys.executable, str(script), source, tmp_path / "out.zarr"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert len(log.read_text().splitlines()) == 6 - finished  # finished tiles were not computed again
    uninterrupted = gt.save(gt.map_tiles(lambda t: ndi.gaussian_filter(t, 2.0), image, halo=8, tile_shape=(16, 80)),
                            tmp_path / "reference.zarr")
    np.testing.assert_array_equal(gt.open(tmp_path / "out.zarr").compute(), uninterrupted.compute())
    assert not partial.exists()
