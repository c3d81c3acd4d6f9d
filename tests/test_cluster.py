"""gt.cluster() and the CLI's --cluster: local clusters our functions run on."""
import os

import numpy as np
import pytest
import scipy.ndimage as ndi

import gpu_tiler as gt

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")


@pytest.fixture
def image():
    from gpu_tiler.data import nuclei

    return nuclei((128, 120), chunks=64, seed=8).compute()


def test_cluster_starts_a_cpu_cluster_that_our_functions_use(image):
    with gt.cluster(2, gpus=False) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        from gpu_tiler._execution.bounded import active_client

        assert active_client() is client
        out = gt.gaussian(gt.open(image, chunks=64), 2.0).compute()
        if "MALLOC_ARENA_MAX" not in os.environ and "GPU_TILER_MALLOC_ARENAS" not in os.environ:
            # the workers' glibc limits its arenas from their first thread on (an import there would be too late)
            assert set(client.run(lambda: os.environ.get("MALLOC_ARENA_MAX")).values()) == {"2"}
    np.testing.assert_array_equal(out, ndi.gaussian_filter(image, 2.0))


def test_asking_for_gpus_without_one_is_an_error():
    from gpu_tiler._backends import cupy_problem

    if cupy_problem() is None:
        pytest.skip("a GPU works here")
    with pytest.raises(RuntimeError, match="gpus=True"):
        gt.cluster(gpus=True)


def test_info_cluster_lists_workers_with_their_devices():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "gpu_tiler", "info", "--cluster", "2"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    workers = [line for line in result.stdout.splitlines() if line.startswith("worker")]
    assert len(workers) == 2 and all("cpu:0" in line and "budget" in line for line in workers)
