"""Local clusters on the existing engines: dask-cuda on GPU nodes, dask.distributed elsewhere.

gpu_tiler's functions run on whatever dask.distributed client is active (one from
:func:`cluster`, dask-jobqueue, Kubernetes, or ``Client("tcp://scheduler:8786")``); this module only
starts a sensible local one.
"""
from __future__ import annotations

import os

from gpu_tiler._devices import (
    cuda_devices,
    cupy_problem,
    devices,
    host_device,
)
from gpu_tiler._execution.host_memory import worker_environment


class LocalTilerCluster:
    """A started local cluster and its client; use as a context manager (``with gt.cluster() as client``)."""

    def __init__(self, cluster, client, kind: str):
        self.cluster, self.client, self.kind = cluster, client, kind

    def __enter__(self):
        return self.client

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        self.client.close()
        self.cluster.close()

    def __repr__(self):
        return f"<gpu_tiler {self.kind} cluster: {len(self.client.scheduler_info()['workers'])} workers>"


def cluster(n_workers: int | None = None, *, threads_per_worker: int | None = None, gpus: bool | None = None,
            memory_budget=None, dashboard: bool = False) -> LocalTilerCluster:
    """Start a local cluster and a client connected to it (it becomes the active client).

    On a node where CUDA GPUs work and dask-cuda is installed (``gpus=None`` or True): a
    ``LocalCUDACluster`` with one worker per GPU, each with an RMM pool sized from that GPU's budget
    and CuPy allocating through it. Elsewhere (or ``gpus=False``): a ``LocalCluster`` of
    ``n_workers`` processes (default: one per CPU core) with ``threads_per_worker`` threads (default 1),
    each worker's memory limit the host budget split between them. ``gpus=True`` where no GPU works
    is an error, not a silent CPU cluster.
    """
    from distributed import Client

    problem = cupy_problem()
    if gpus and problem is not None:
        raise RuntimeError(f"gpus=True was asked for, but {problem}; use gpus=False for a CPU cluster")
    if gpus is not False and problem is None:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as exc:
            if gpus:
                raise RuntimeError("gpus=True needs dask-cuda: pip install 'gpu_tiler[cuda12]' (or [cuda13])") from exc
        else:
            gpus_here = cuda_devices(memory_budget)
            pool = min(d.budget_bytes for d in gpus_here) // 2**20 * 2**20
            local = LocalCUDACluster(
                n_workers=n_workers or len(gpus_here), rmm_pool_size=pool, rmm_allocator_external_lib_list=["cupy"],
                dashboard_address=":8787" if dashboard else None, env=worker_environment(),
            )
            return LocalTilerCluster(local, Client(local), "dask-cuda")
    from distributed import LocalCluster

    n_workers = n_workers or os.cpu_count() or 1
    budget = host_device(memory_budget).budget_bytes
    local = LocalCluster(
        n_workers=n_workers, threads_per_worker=threads_per_worker or 1, processes=True,
        memory_limit=max(budget // n_workers, 256 * 2**20), dashboard_address=":8787" if dashboard else None,
        env=worker_environment(),  # glibc's arenas limited from the worker's first thread on (host_memory)
    )
    return LocalTilerCluster(local, Client(local), "dask.distributed")


def describe_workers(client) -> list[str]:
    """One line per worker: its address and the devices and budgets it sees."""

    def report():
        return [str(d) for d in devices()]

    lines = []
    for address, seen in sorted(client.run(report).items()):
        lines.append(f"{address}: " + "; ".join(seen))
    return lines
