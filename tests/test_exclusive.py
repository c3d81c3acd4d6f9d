"""Never a wrong result with exit 0: one job per output, and resume only of the same job on the same data.

Real processes race for one output; inputs and functions change between a killed run and its resume,
or while a job reads them. Every case ends refused (a clear error, exit 1 for a failure) or exact,
never with a mixed output and a success code.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

import gpu_tiler as gt
from gpu_tiler._io.claim import lock_path
from gpu_tiler._io.sinks import DONE_LOG, MANIFEST, SaveError

ENV = dict(os.environ, GPU_TILER_BACKEND="numpy")


def cli(*args, wait=True):
    command = [sys.executable, "-m", "gpu_tiler", *map(str, args)]
    if not wait:
        return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)


def owner_written(output, timeout=60.0):
    """Wait until a process holds ``output``'s claim and has written who it is; return that record."""
    lock = lock_path(output)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            text = lock.read_text()
            if text:
                return json.loads(text)
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"nobody claimed {output} within {timeout} s")


HOLD = textwrap.dedent(
    """
    import sys, time
    import gpu_tiler as gt
    with gt.claim_output(sys.argv[1], job="holder"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


# ---- the claim itself ------------------------------------------------------------------------


def test_a_claim_names_its_holder_and_is_gone_when_released(tmp_path):
    out = tmp_path / "out.zarr"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out), "30"], stdout=subprocess.PIPE, text=True)
    try:
        owner = owner_written(out)
        assert owner["pid"] == holder.pid and owner["job"] == "holder"
        with pytest.raises(gt.OutputInUseError, match=rf"process {holder.pid} on .* job holder.*--wait"):
            with gt.claim_output(out):
                pass
        with pytest.raises(gt.OutputInUseError, match=r"waited 0.3 s"):
            with gt.claim_output(out, wait=0.3):
                pass
    finally:
        holder.kill()
        holder.wait()
    with gt.claim_output(out, job="me") as lock:  # SIGKILL released it at once: no stale claim
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()  # nothing left beside the output


def test_a_claim_is_reentrant_in_its_thread_and_refused_in_another(tmp_path):
    out = tmp_path / "out.zarr"
    errors = []

    def other_thread():
        try:
            with gt.claim_output(out):
                pass
        except gt.OutputInUseError as exc:
            errors.append(str(exc))

    with gt.claim_output(out):
        with gt.claim_output(out):  # the command line claims, then save claims again
            pass
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert lock_path(out).exists()
    assert len(errors) == 1 and "another thread of this process" in errors[0]
    assert not lock_path(out).exists()


def test_wait_queues_behind_the_holder(tmp_path, image):
    out = tmp_path / "out.zarr"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out), "1.5"], stdout=subprocess.PIPE, text=True)
    owner_written(out)
    started = time.time()
    gt.save(gt.gaussian(image, 2.0), out, wait=True)
    assert time.time() - started > 0.5 and holder.wait() == 0
    np.testing.assert_array_equal(gt.open(out).compute(), ndi.gaussian_filter(image, 2.0))


@pytest.fixture
def image():
    return np.random.default_rng(7).random((96, 80)).astype(np.float32)


# ---- two jobs into one output ----------------------------------------------------------------

JOB = textwrap.dedent(
    """
    import os, sys, time
    import scipy.ndimage as ndi
    import gpu_tiler as gt

    source, target, sigma = sys.argv[1], sys.argv[2], float(sys.argv[3])

    def slow_gaussian(tile, sigma):
        time.sleep(float(os.environ.get("TILE_DELAY", "0")))
        return ndi.gaussian_filter(tile, sigma)

    image = gt.open(source)
    result = gt.map_tiles(slow_gaussian, image, halo=int(4 * sigma + 0.5), tile_shape=(16, 80), tiles_in_flight=1,
                          sigma=sigma)
    try:
        gt.save(result, target, resume="--resume" in sys.argv)
    except gt.OutputInUseError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    print("done")
    """
)


@pytest.fixture
def job(tmp_path, image):
    source = tmp_path / "in.zarr"
    gt.save(image, source)
    script = tmp_path / "job.py"
    script.write_text(JOB)

    def start(target, sigma, delay="0.3", *extra):
        env = dict(ENV, TILE_DELAY=delay)
        return subprocess.Popen([sys.executable, str(script), str(source), str(target), str(sigma), *extra], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    return start


@pytest.mark.parametrize("round_", range(2))
def test_two_different_jobs_started_together_one_completes_exactly_the_other_fails(tmp_path, image, job, round_):
    target = tmp_path / "race.zarr"
    jobs = {3.0: job(target, 3.0), 6.0: job(target, 6.0)}
    results = {sigma: (p.wait(timeout=300), *p.communicate()) for sigma, p in jobs.items()}
    winners = [sigma for sigma, (code, _, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    loser = 6.0 if winners[0] == 3.0 else 3.0
    code, _, err = results[loser]
    assert code == 1 and "is being written by process" in err and "race.zarr" in err, err
    np.testing.assert_array_equal(gt.open(target).compute(), ndi.gaussian_filter(image, winners[0]))
    assert not (tmp_path / ".race.zarr.partial").exists() and not lock_path(target).exists()


def test_identical_jobs_and_resume_while_another_writes_are_refused(tmp_path, image, job):
    target = tmp_path / "out.zarr"
    first = job(target, 3.0, "1.5")  # long enough for two more jobs to start and be refused
    owner_written(target)
    for extra in ((), ("--resume",)):
        second = job(target, 3.0, "0", *extra)
        code, err = second.wait(timeout=300), second.communicate()[1]
        assert code == 1 and f"process {first.pid}" in err, err
    assert first.wait(timeout=300) == 0
    np.testing.assert_array_equal(gt.open(target).compute(), ndi.gaussian_filter(image, 3.0))


def test_sigkill_of_the_holder_then_resume_succeeds_at_once(tmp_path, image, job):
    target = tmp_path / "out.zarr"
    partial = tmp_path / ".out.zarr.partial"
    first = job(target, 2.0, "0.4", "--resume")
    deadline = time.time() + 120
    while time.time() < deadline and not ((partial / DONE_LOG).is_file() and (partial / DONE_LOG).read_text()):
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert lock_path(target).exists()  # left behind by the kill, but no longer locked
    resumed = job(target, 2.0, "0", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1]
    np.testing.assert_array_equal(gt.open(target).compute(), ndi.gaussian_filter(image, 2.0))


def test_cli_second_job_fails_at_once_with_exit_1_and_wait_queues(tmp_path, image):
    source, target = tmp_path / "in.zarr", tmp_path / "out.zarr"
    gt.save(image, source)
    with gt.claim_output(target, job="holder"):  # this test process is the other job
        for command in (("filter", "gaussian", source, target, "--sigma", "3"), ("label", source, target)):
            refused = cli(*command)
            assert refused.returncode == 1, refused.stderr
            assert f"process {os.getpid()}" in refused.stderr and "job holder" in refused.stderr
            assert "--wait" in refused.stderr and "found" not in refused.stdout  # refused before labelling
        waiting = cli("filter", "gaussian", source, target, "--sigma", "3", "--wait", wait=False)
        time.sleep(3)
        assert waiting.poll() is None  # queued behind the holder
    assert waiting.wait(timeout=300) == 0, waiting.communicate()[1]
    np.testing.assert_array_equal(gt.open(target).compute(), ndi.gaussian_filter(image, 3.0))


def test_cli_identical_jobs_at_once_exactly_one_writes(tmp_path):
    image = np.random.default_rng(3).random((1024, 1024)).astype(np.float32)
    source, target = tmp_path / "in.zarr", tmp_path / "race.zarr"
    gt.save(image, source)
    args = ("filter", "gaussian", source, target, "--sigma", "3", "--memory-budget", "2MiB")
    jobs = [cli(*args, wait=False) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in jobs]
    codes = sorted(code for code, _, _ in results)
    # the loser either found the output claimed (exit 1) or, if it came after the end, finished (exit 2)
    assert codes[0] == 0 and codes[1] in (1, 2), results
    loser = [err for code, _, err in results if code != 0][0]
    assert "is being written by process" in loser or "exists" in loser, loser
    np.testing.assert_array_equal(gt.open(target).compute(), ndi.gaussian_filter(image, 3.0))


def test_two_label_images_into_one_image_at_once_both_are_listed(tmp_path):
    image = (np.random.default_rng(2).random((64, 64)) > 0.6).astype(np.uint8)
    parent = tmp_path / "img.ome.zarr"
    gt.save(image, parent, format="ome-zarr", axes="yx")
    script = textwrap.dedent(
        """
        import sys
        import gpu_tiler as gt
        from gpu_tiler._io import sinks as _io
        original = _io._add_label_name

        def slow(*args):  # widen the read-modify-write window of the labels list
            import time
            time.sleep(0.5)
            return original(*args)

        _io._add_label_name = slow
        labels, n = gt.label(gt.open(sys.argv[1]))
        gt.save(labels, sys.argv[2], format="ome-zarr", kind="labels", axes="yx")
        """
    )
    jobs = [subprocess.Popen([sys.executable, "-c", script, str(parent), str(parent / "labels" / name)], env=ENV,
                             stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    assert [p.wait(timeout=300) for p in jobs] == [0, 0], [p.communicate()[1] for p in jobs]
    listed = dict(zarr.open_group(str(parent / "labels"), mode="r").attrs)["ome"]["labels"]
    assert sorted(listed) == ["a", "b"]


# ---- resume after the input or the function changed ------------------------------------------


def rewrite_one_chunk(path, values):
    """Rewrite chunk (0, 0) of a zarr array in place: same shape, dtype and metadata file."""
    z = zarr.open_array(str(path), mode="r+")
    z[: z.chunks[0], : z.chunks[1]] = values[: z.chunks[0], : z.chunks[1]]


def rewriting_on_first_call(source, values, then):
    """``then`` on each tile, rewriting a chunk of ``source`` (another program) before the first call."""
    calls = []

    def tile_function(tile):
        if not calls:
            rewrite_one_chunk(source, values)
        calls.append(1)
        return then(tile)

    return tile_function


def interrupted(save, disk_full_after, after=2):
    """Run ``save`` until its tile writes fail as a full disk would, leaving a partial store."""
    disk_full_after(after)
    with pytest.raises(SaveError):
        save()
    disk_full_after(None)


def test_filter_resume_after_an_input_chunk_changed_is_refused(tmp_path, image, disk_full_after):
    source, target = tmp_path / "in.zarr", tmp_path / "out.zarr"
    zarr.create_array(str(source), shape=image.shape, chunks=(32, 40), dtype=image.dtype)[:] = image
    interrupted(lambda: gt.save(gt.gaussian(gt.open(source), 2.0, budget="64KiB"), target, resume=True),
                disk_full_after)
    changed = image * 10
    rewrite_one_chunk(source, changed)
    with pytest.raises(gt.ResumeRefusedError, match=r"input '.*in.zarr' changed since that run"):
        gt.save(gt.gaussian(gt.open(source), 2.0, budget="64KiB"), target, resume=True)
    assert not target.exists()
    new = image.copy()
    new[:32, :40] = changed[:32, :40]
    out = gt.save(gt.gaussian(gt.open(source), 2.0, budget="64KiB"), target)  # starting over is exact
    np.testing.assert_array_equal(out.compute(), ndi.gaussian_filter(new, 2.0))


def test_label_resume_after_the_mask_changed_is_refused(tmp_path, disk_full_after):
    mask = np.zeros((64, 64), np.uint8)
    mask[5:20, 8:12] = 1
    mask[40:44, 30:60] = 1
    source, target = tmp_path / "mask.zarr", tmp_path / "lab.zarr"
    zarr.create_array(str(source), shape=mask.shape, chunks=(16, 16), dtype=mask.dtype)[:] = mask
    labels, n = gt.label(gt.open(source), tile_shape=(16, 16))
    interrupted(lambda: gt.save(labels, target, resume=True), disk_full_after)
    z = zarr.open_array(str(source), mode="r+")
    z[:] = mask.T  # the same shape, dtype and number of objects
    labels, n2 = gt.label(gt.open(source), tile_shape=(16, 16))
    assert n2 == n == 2
    with pytest.raises(gt.ResumeRefusedError, match="mask.zarr' changed since that run"):
        gt.save(labels, target, resume=True)
    out = gt.save(labels, target)
    np.testing.assert_array_equal(out.compute(), ndi.label(mask.T)[0])


def test_label_resume_of_the_same_mask_is_exact(tmp_path, disk_full_after):
    mask = (np.random.default_rng(4).random((64, 64)) > 0.55).astype(np.uint8)
    source, target = tmp_path / "mask.zarr", tmp_path / "lab.zarr"
    zarr.create_array(str(source), shape=mask.shape, chunks=(16, 16), dtype=mask.dtype)[:] = mask
    interrupted(lambda: gt.save(gt.label(gt.open(source), tile_shape=(16, 16))[0], target, resume=True),
                disk_full_after)
    out = gt.save(gt.label(gt.open(source), tile_shape=(16, 16))[0], target, resume=True)
    np.testing.assert_array_equal(out.compute(), ndi.label(mask)[0])


def test_ome_zarr_pyramid_resume_after_an_input_chunk_changed_is_refused(tmp_path, image, disk_full_after):
    source, target = tmp_path / "in.zarr", tmp_path / "out.ome.zarr"
    zarr.create_array(str(source), shape=image.shape, chunks=(32, 40), dtype=image.dtype)[:] = image

    def save(resume=True):
        return gt.save(gt.gaussian(gt.open(source), 1.0, budget="64KiB"), target, format="ome-zarr",
                       pyramid_levels=2, axes="yx", resume=resume)

    interrupted(save, disk_full_after)
    rewrite_one_chunk(source, image + 1)
    with pytest.raises(gt.ResumeRefusedError, match="changed since that run"):
        save()
    new = image.copy()
    new[:32, :40] += 1
    np.testing.assert_array_equal(save(resume=False).compute(), ndi.gaussian_filter(new, 1.0))


def test_an_input_that_changes_during_the_save_is_an_error_and_nothing_is_written(tmp_path, image):
    source, target = tmp_path / "in.zarr", tmp_path / "out.zarr"
    zarr.create_array(str(source), shape=image.shape, chunks=(32, 40), dtype=image.dtype)[:] = image
    meddling = rewriting_on_first_call(source, image * 2, lambda tile: tile)
    result = gt.map_tiles(meddling, gt.open(source), tile_shape=(32, 40), tiles_in_flight=1)
    with pytest.raises(gt.InputChangedError, match="in.zarr' changed while"):
        gt.save(result, target, resume=True)
    assert not target.exists() and not (tmp_path / ".out.zarr.partial").exists()


def test_a_mask_that_changes_while_it_is_labelled_is_an_error(tmp_path):
    mask = (np.random.default_rng(4).random((64, 64)) > 0.55).astype(np.uint8)
    source = tmp_path / "mask.zarr"
    zarr.create_array(str(source), shape=mask.shape, chunks=(16, 16), dtype=mask.dtype)[:] = mask
    meddling = rewriting_on_first_call(source, 1 - mask, lambda tile: tile)
    with pytest.raises(gt.InputChangedError, match="while it was being labelled"):
        gt.label(gt.map_tiles(meddling, gt.open(source), tile_shape=(16, 16)), tile_shape=(16, 16))


MODULE = textwrap.dedent(
    """
    import scipy.ndimage as ndi

    SIGMA = {sigma}

    def smooth(tile):
        return ndi.gaussian_filter(tile, {inline})

    def smooth_via_constant(tile):
        return ndi.gaussian_filter(tile, SIGMA)
    """
)

IMPORTING_JOB = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[3])
    import gpu_tiler as gt
    import mymodule

    func = getattr(mymodule, sys.argv[4])
    gt.save(gt.map_tiles(func, gt.open(sys.argv[1]), halo=12, tile_shape=(16, 80), tiles_in_flight=1), sys.argv[2],
            resume=True)
    """
)


@pytest.mark.parametrize("func, edit", [("smooth", {"inline": "3.0"}), ("smooth_via_constant", {"sigma": "3.0"})])
def test_resume_after_an_importable_function_was_edited_is_refused(tmp_path, image, func, edit):
    source, target, partial = tmp_path / "in.zarr", tmp_path / "out.zarr", tmp_path / ".out.zarr.partial"
    gt.save(image, source)
    (tmp_path / "mymodule.py").write_text(MODULE.format(**{"sigma": "2.0", "inline": "2.0"}))
    (tmp_path / "job.py").write_text(IMPORTING_JOB)
    run = [sys.executable, str(tmp_path / "job.py"), str(source), str(target), str(tmp_path), func]
    # an interrupted run: the first tiles are written, then the job dies before the rest
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(
        """
        import os
        from gpu_tiler._io import sinks as _io
        writer = _io._TileWriter.__call__
        def dying(self, index, block):
            if index[0] >= 2:
                os._exit(9)
            return writer(self, index, block)
        _io._TileWriter.__call__ = dying
        """
    ))
    env = dict(ENV, PYTHONPATH=str(tmp_path))
    assert subprocess.run(run, env=env, timeout=300).returncode == 9
    assert (partial / DONE_LOG).read_text().strip()
    (tmp_path / "sitecustomize.py").unlink()
    (tmp_path / "mymodule.py").write_text(MODULE.format(**{"sigma": "2.0", "inline": "2.0", **edit}))
    for cached in (tmp_path / "__pycache__").glob("mymodule*"):
        cached.unlink()
    resumed = subprocess.run(run, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode != 0 and "a function's code differ" in resumed.stderr, resumed.stderr
    assert not target.exists()


def test_resume_of_a_function_whose_closure_cannot_be_hashed_is_refused(tmp_path, image, disk_full_after):
    lock = threading.Lock()  # cannot be pickled, so cannot be proven unchanged

    def guarded(tile):
        with lock:
            return ndi.gaussian_filter(tile, 2.0)

    target = tmp_path / "out.zarr"
    result = gt.map_tiles(guarded, image, halo=8, tile_shape=(16, 80))
    interrupted(lambda: gt.save(result, target, resume=True), disk_full_after)
    with pytest.raises(gt.ResumeRefusedError, match="cannot be identified by its code"):
        gt.save(gt.map_tiles(guarded, image, halo=8, tile_shape=(16, 80)), target, resume=True)
    out = gt.save(result, target)  # a fresh save of it works
    np.testing.assert_array_equal(out.compute(), ndi.gaussian_filter(image, 2.0))


def test_a_manifest_records_inputs_functions_and_versions(tmp_path, image, disk_full_after):
    source, target = tmp_path / "in.zarr", tmp_path / "out.zarr"
    gt.save(image, source)
    interrupted(lambda: gt.save(gt.gaussian(gt.open(source), 2.0, budget="64KiB"), target, resume=True),
                disk_full_after)
    job = json.loads((tmp_path / ".out.zarr.partial" / MANIFEST).read_text())
    assert list(job["inputs"]) == [str(source)] and job["inputs"][str(source)].split(":")[0].isdigit()
    assert job["versions"]["numpy"] == np.__version__ and job["unverifiable"] == []


def test_an_image_that_changes_while_map_labels_segments_it_is_an_error(tmp_path):
    image = (np.random.default_rng(4).random((64, 64)) > 0.55).astype(np.uint8)
    source = tmp_path / "img.zarr"
    zarr.create_array(str(source), shape=image.shape, chunks=(16, 16), dtype=image.dtype)[:] = image
    segment = rewriting_on_first_call(source, 1 - image, lambda window: ndi.label(window)[0])
    with pytest.raises(gt.InputChangedError, match="while it was being segmented"):
        gt.map_labels(segment, gt.open(source), halo=2, tile_shape=(16, 16))
