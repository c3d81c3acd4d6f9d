"""The host's C heap: how many glibc malloc arenas the process may use.

glibc gives every thread that allocates its own arena (up to 8 per core). A buffer freed in one arena
is reused only by threads of that arena, and an arena gives memory back to the system only from its top,
so a process whose threads take turns decoding chunks and filtering tiles (dask's workers, zarr's codec
threads) keeps freed multi-MiB buffers in many arenas at once: the resident size grows well past what is
live. On the nuclei pipeline out of core (16384², 64 MiB budget) the regionprops stage peaked at 124-132 MiB
above the interpreter with glibc's defaults and at 71-82 MiB with two arenas, live data being about 50 MiB
(``benchmarks/RESULTS.md``). So gpu_tiler limits the arenas when it is imported, before the threads that
read and compute exist (a thread keeps the arena it first allocated in):

- ``GPU_TILER_MALLOC_ARENAS``: the most arenas (default 2); ``0`` leaves glibc's setting alone.
- A limit the user set for glibc (``MALLOC_ARENA_MAX``, or ``glibc.malloc.arena_max`` in
  ``GLIBC_TUNABLES``) is left as it is.
- Elsewhere than glibc (macOS, Windows, musl) nothing is done.

Python objects of up to 512 bytes come from Python's own allocator and NumPy allocates with the GIL held,
so fewer arenas cost our threads no waiting in practice (same wall time in the benchmark).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "GPU_TILER_MALLOC_ARENAS"
DEFAULT_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)

#: what was done at import, in words (for users and tests)
state = "not applied"


def _glibc():
    """The process's glibc, or None when the C library is another one."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt  # noqa: B018 - present in every glibc
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no handle for the process itself
        return None
    return libc


def wanted_arenas(environ=os.environ) -> int:
    """The arena limit asked for by ``GPU_TILER_MALLOC_ARENAS`` (0: leave glibc alone)."""
    text = environ.get(ENV, "").strip()
    if not text:
        return DEFAULT_ARENAS
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(
            f"{ENV}={text!r}: give the most glibc malloc arenas as a whole number (default {DEFAULT_ARENAS}), "
            f"or 0 to leave glibc's setting alone"
        )
    return value


def limit_arenas(environ=os.environ) -> str:
    """Apply the arena limit (once per process is enough; calling again is harmless) and say what was done."""
    global state
    wanted = wanted_arenas(environ)
    if wanted == 0:
        state = f"left to glibc ({ENV}=0)"
    elif "MALLOC_ARENA_MAX" in environ or "arena_max" in environ.get("GLIBC_TUNABLES", ""):
        state = "left to glibc (the user's MALLOC_ARENA_MAX / GLIBC_TUNABLES)"
    else:
        libc = _glibc()
        if libc is None:
            state = "not glibc: nothing to do"
        elif libc.mallopt(_M_ARENA_MAX, ctypes.c_int(wanted)) == 1:
            state = f"at most {wanted} malloc arena{'s' if wanted > 1 else ''}"
        else:
            state = "glibc refused the arena limit"
    return state
