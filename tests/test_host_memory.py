"""The glibc arena limit applied at import (gpu_tiler._execution.host_memory), observed in a fresh process:
malloc_info lists one <heap> per arena, so threads that allocate at the same time show how many there are."""
import os
import subprocess
import sys

import pytest

from gpu_tiler._execution import host_memory

pytestmark = pytest.mark.skipif(host_memory._glibc() is None, reason="the arena limit is glibc's")

# six threads allocate at once (a barrier keeps them alive together), then malloc_info counts the arenas
PROBE = r"""
import ctypes, os, sys, tempfile, threading
import numpy as np
import gpu_tiler
from gpu_tiler._execution import host_memory

barrier, keep = threading.Barrier(7), []
def work():
    keep.append(np.ones(1_000))  # 8 kB: far below glibc's mmap threshold (128 KiB), so from the thread's arena
    barrier.wait()
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads:
    t.start()
barrier.wait()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
path = os.path.join(tempfile.mkdtemp(), "info.xml")
f = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, f)
libc.fclose(f)
barrier.wait()
print(open(path).read().count("<heap nr="), host_memory.state)
"""


def arenas(**env):
    environ = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES",
                                                                 host_memory.ENV)}
    environ.update(env)
    done = subprocess.run([sys.executable, "-c", PROBE], env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, state = done.stdout.strip().split(" ", 1)
    return int(count), state


def test_importing_gpu_tiler_limits_the_arenas_to_two():
    count, state = arenas()
    assert state == "at most 2 malloc arenas"
    assert count <= 2


def test_the_limit_can_be_set_or_left_to_glibc():
    assert arenas(GPU_TILER_MALLOC_ARENAS="1") == (1, "at most 1 malloc arena")
    count, state = arenas(GPU_TILER_MALLOC_ARENAS="0")
    assert state.startswith("left to glibc")
    assert count > 2  # glibc's own default: an arena per allocating thread (up to 8 per core)


def test_a_limit_the_user_gave_glibc_is_kept():
    count, state = arenas(MALLOC_ARENA_MAX="3")
    assert state == "left to glibc (the user's MALLOC_ARENA_MAX / GLIBC_TUNABLES)"
    assert count <= 3


EARLY = r"""
import threading, sys
barrier, keep = threading.Barrier(int(sys.argv[1]) + 1), []
def work():
    keep.append(bytearray(1000))
    barrier.wait()
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(int(sys.argv[1]))]
for t in threads:
    t.start()
barrier.wait()
import gpu_tiler
from gpu_tiler._execution import host_memory
barrier.wait()
print(host_memory.state)
"""


@pytest.mark.parametrize("early, says", [
    (4, "no more malloc arenas: the 5 made before gpu_tiler was imported stay, and new threads share them "
        "(limit 2)"),
    (12, "not limited: glibc had made 13 arenas before gpu_tiler was imported and keeps its own limit; "
         "set MALLOC_ARENA_MAX=2 in the environment of the process"),
])
def test_arenas_made_before_the_import_are_reported_not_hidden(early, says):
    environ = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES",
                                                                 host_memory.ENV)}
    done = subprocess.run([sys.executable, "-c", EARLY, str(early)], env=environ, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    if os.cpu_count() * 8 < early + 1:  # glibc stops at 8 arenas per core: fewer were made
        pytest.skip("fewer cores than this case needs arenas")
    assert done.stdout.strip() == says


def test_workers_we_start_get_the_limit_in_their_environment():
    assert host_memory.worker_environment({}) == {"MALLOC_ARENA_MAX": "2"}
    assert host_memory.worker_environment({host_memory.ENV: "3"}) == {"MALLOC_ARENA_MAX": "3"}
    assert host_memory.worker_environment({host_memory.ENV: "0"}) == {}
    assert host_memory.worker_environment({"MALLOC_ARENA_MAX": "4"}) == {}  # theirs is inherited


@pytest.mark.parametrize("value", ["two", "-1", "1.5", str(2**32 + 2)])
def test_a_bad_setting_is_an_error_that_says_what_to_give(value):
    with pytest.raises(ValueError, match="GPU_TILER_MALLOC_ARENAS.*whole number.*or 0"):
        host_memory.wanted_arenas({host_memory.ENV: value})
