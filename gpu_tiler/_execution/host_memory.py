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
- Arenas made before the import stay with their threads; once glibc has made more than 8 it has fixed its own
  limit and ignores ours (``state`` says so): in such processes (a dask.distributed worker imports gpu_tiler
  when its threads already run) set ``MALLOC_ARENA_MAX`` in the process's environment before it starts
  (for dask workers: ``distributed.nanny.pre-spawn-environ``).

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
_ARENA_TEST = 8  # glibc's arena_test on 64-bit: with more arenas than this it has fixed its own limit for good
_MOST = 2**31 - 1  # mallopt takes an int

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


def arenas_in_use(libc=None) -> int | None:
    """How many arenas glibc has made so far (``malloc_info`` lists one ``<heap>`` per arena), or None."""
    libc = libc if libc is not None else _glibc()
    if libc is None:
        return None
    buffer, size = ctypes.c_void_p(), ctypes.c_size_t()
    libc.open_memstream.restype = ctypes.c_void_p
    libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.free.argtypes = [ctypes.c_void_p]
    stream = libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
    if not stream:
        return None
    try:
        libc.malloc_info(0, stream)
    finally:
        libc.fclose(stream)
    try:
        return ctypes.string_at(buffer, size.value).count(b"<heap nr=")
    finally:
        libc.free(buffer)


def _users_limit(environ) -> bool:
    """Whether the user gave glibc an arena limit of their own (kept as it is)."""
    return "MALLOC_ARENA_MAX" in environ or "arena_max" in environ.get("GLIBC_TUNABLES", "")


def worker_environment(environ=os.environ) -> dict[str, str]:
    """What a worker process we start (``gpu_tiler.cluster``) gets in its environment so that glibc limits its
    arenas from its first thread on (a limit of the user's is inherited as it is)."""
    wanted = wanted_arenas(environ)
    if wanted == 0 or _users_limit(environ):
        return {}
    return {"MALLOC_ARENA_MAX": str(wanted)}


def wanted_arenas(environ=os.environ) -> int:
    """The arena limit asked for by ``GPU_TILER_MALLOC_ARENAS`` (0: leave glibc alone)."""
    text = environ.get(ENV, "").strip()
    if not text:
        return DEFAULT_ARENAS
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= _MOST:
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
    elif _users_limit(environ):
        state = "left to glibc (the user's MALLOC_ARENA_MAX / GLIBC_TUNABLES)"
    else:
        libc = _glibc()
        if libc is None:
            state = "not glibc: nothing to do"
        else:
            before = arenas_in_use(libc)
            if before is not None and before > _ARENA_TEST:
                state = (f"not limited: glibc had made {before} arenas before gpu_tiler was imported and keeps "
                         f"its own limit; set MALLOC_ARENA_MAX={wanted} in the environment of the process")
            elif libc.mallopt(_M_ARENA_MAX, ctypes.c_int(wanted)) != 1:
                state = "glibc refused the arena limit"
            elif before is not None and before > wanted:  # threads keep the arenas they have
                state = (f"no more malloc arenas: the {before} made before gpu_tiler was imported stay, and "
                         f"new threads share them (limit {wanted})")
            else:
                state = f"at most {wanted} malloc arena{'s' if wanted > 1 else ''}"
    return state
