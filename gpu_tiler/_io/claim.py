"""Exclusive claims on outputs: one job writes one output at a time.

A claim is an OS-level lock (``flock`` on POSIX, ``msvcrt.locking`` on Windows) on a hidden file
beside the output, ``.<name>.lock``, held by the process that orchestrates the job (on a dask
cluster: the client). The kernel drops it when that process ends however it ends (a crash, SIGKILL,
a lost node's file handles closed), so a claim is never stale and ``resume=True`` works right after
a killed job. The lock file carries who holds it (pid, host, start time, the job) so the job that
is turned away can say whom it waits for.

The holder removes the lock file when it releases it. A process that locked a file and then finds
that the path no longer names that file (the holder removed it between our open and our lock)
tries again on the new file, so two processes can never both believe they hold one claim.

Within one process a claim is reentrant for the thread that holds it (the command line claims the
output before labelling, ``save`` claims it again); another thread of the same process is refused
like another process is.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
from pathlib import Path

__all__ = ["OutputInUseError", "claim_output", "lock_path"]


class OutputInUseError(RuntimeError):
    """Another job (another process, or another thread of this one) is writing the same output."""


#: resolved lock path -> [file descriptor, owning thread id, depth]; entries live exactly as long
#: as the claim, so nothing here outlives a job or needs evicting
_held: dict[str, list] = {}
_held_lock = threading.Lock()


def lock_path(output) -> Path:
    """The lock file that guards ``output``: ``.<name>.lock`` in the output's (resolved) folder."""
    target = Path(os.path.abspath(os.fspath(output)))
    parent = Path(os.path.realpath(target.parent))
    return parent / f".{target.name}.lock"


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

    _OWNER_AT = 1  # the locked byte stays empty; the owner record follows it
else:
    import fcntl

    def _try_lock(fd) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

    _OWNER_AT = 0


def _same_file(fd, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def _read_owner(fd) -> dict:
    try:
        raw = os.pread(fd, 4096, _OWNER_AT) if hasattr(os, "pread") else b""
        return json.loads(raw.decode() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    if not owner:
        return "another process (it has only just started: its details are not written yet)"
    text = f"process {owner.get('pid', '?')} on {owner.get('host', '?')}, started {owner.get('started', '?')}"
    if owner.get("job"):
        text += f", job {owner['job']}"
    return text


def _write_owner(fd, job: str | None) -> None:
    owner = {
        "pid": os.getpid(), "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "job": job,
    }
    data = json.dumps(owner).encode()
    os.ftruncate(fd, _OWNER_AT)
    os.lseek(fd, _OWNER_AT, os.SEEK_SET)
    os.write(fd, data)


def _acquire(path: Path, output, wait, job):
    """Lock ``path`` for this process; raise :class:`OutputInUseError` when another job holds it."""
    deadline = None if wait is True else time.monotonic() + (float(wait) if wait else 0.0)
    pause = 0.05
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if _try_lock(fd):
                if _same_file(fd, path):  # not removed by a holder that released it meanwhile
                    _write_owner(fd, job)
                    return fd
                _unlock(fd)
                os.close(fd)
                continue
            owner = _read_owner(fd)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if deadline is not None and time.monotonic() >= deadline:
            waited = f" (waited {float(wait):g} s)" if wait else ""
            raise OutputInUseError(
                f"'{output}' is being written by {_describe(owner)}{waited}; wait for that job to finish, choose "
                f"another output, or queue behind it (wait=True in save, --wait on the command line)"
            )
        time.sleep(pause)
        pause = min(1.0, pause * 1.5)


def _release(path: Path, fd) -> None:
    try:
        if _same_file(fd, path):
            os.unlink(path)  # while still locked: a waiter that locks it next sees it is gone and retries
    except OSError:
        pass
    finally:
        try:
            _unlock(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def claim_output(output, *, wait=False, job: str | None = None):
    """Hold the exclusive claim on ``output`` for the duration of the ``with`` block.

    ``wait``: False (refuse at once when another job holds it), True (queue behind it) or a number
    of seconds to wait before refusing. ``job`` names the job for the messages of those refused.
    Raises :class:`OutputInUseError` naming the holder (pid, host, start time, job) and what to do.
    The claim is reentrant for the thread that holds it."""
    path = lock_path(output)
    key = str(path)
    me = threading.get_ident()
    with _held_lock:
        entry = _held.get(key)
        if entry is not None and entry[1] == me:
            entry[2] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield path
        finally:
            with _held_lock:
                _held[key][2] -= 1
        return
    with _held_lock:
        if key in _held:  # another thread of this process
            raise OutputInUseError(
                f"'{output}' is being written by another thread of this process (pid {os.getpid()}); wait for that "
                f"save to finish or choose another output"
            )
        _held[key] = [None, me, 1]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path, output, wait, job)
    except BaseException:
        with _held_lock:
            _held.pop(key, None)
        raise
    with _held_lock:
        _held[key][0] = fd
    try:
        yield path
    finally:
        with _held_lock:
            _held.pop(key, None)
        _release(path, fd)
