"""Testing the device path without a GPU: the strict device stand-in and its ledger.

``backend="standin"`` runs every operation through the same code paths a GPU backend takes, with
arrays that refuse implicit conversion to NumPy (as CuPy's do), counted transfers and an allocator
ledger (live and peak device bytes, an optional device limit that raises ``OutOfMemoryError``)::

    import gpu_tiler as gt
    from gpu_tiler.testing import standin_device

    with standin_device(limit_bytes=64 * 2**20) as ledger:
        out = gt.gaussian(image, 2.0, backend="standin").compute()
    print(ledger.h2d_calls, ledger.d2h_calls, ledger.peak_bytes)
"""
from __future__ import annotations

import contextlib

from gpu_tiler._backends._standin import (
    LEDGER,
    STANDIN,
    DeviceArray,
    Ledger,
    OutOfMemoryError,
    StandInBackend,
)

__all__ = ["DeviceArray", "LEDGER", "Ledger", "OutOfMemoryError", "STANDIN", "StandInBackend", "standin_device"]


@contextlib.contextmanager
def standin_device(*, limit_bytes: int | None = None, total_bytes: int | None = None):
    """Zero the stand-in's counters and peak, optionally limit its memory, and yield its :class:`Ledger`.

    ``limit_bytes``: allocations that would take live device memory beyond it raise
    :class:`OutOfMemoryError`. ``total_bytes``: the device's size (what budgets are fractions of)."""
    saved = (LEDGER.limit_bytes, LEDGER.total_bytes)
    LEDGER.reset(limit_bytes=limit_bytes, total_bytes=total_bytes)
    try:
        yield LEDGER
    finally:
        LEDGER.limit_bytes, LEDGER.total_bytes = saved
