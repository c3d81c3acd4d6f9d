"""Kernel sources (``gpu_tiler/kernels``), and their host C
builds: compiled by the system C compiler into a cached shared library, loaded with ctypes."""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
from importlib import resources
from pathlib import Path


@functools.lru_cache(maxsize=None)
def kernel_dir() -> Path:
    """The folder holding the kernel sources (``.h`` shared by CUDA, OpenCL and C): ``gpu_tiler/kernels``, in a
    checkout and in an installed wheel alike."""
    folder = Path(str(resources.files("gpu_tiler") / "kernels"))
    if not folder.is_dir():
        raise FileNotFoundError(f"gpu_tiler's kernel sources are missing ({folder} does not exist); reinstall gpu_tiler")
    return folder


@functools.lru_cache(maxsize=None)
def read_kernel(name: str) -> str:
    """The text of one kernel source file, read once."""
    path = kernel_dir() / name
    if not path.is_file():
        known = ", ".join(sorted(p.name for p in kernel_dir().iterdir()))
        raise FileNotFoundError(f"no kernel source '{name}' in {kernel_dir()} (there are: {known})")
    return path.read_text()


# ----------------------------------------------------------------------------- host C target

#: Flags of every host build (with the defines of one build). No -march=native: a cache shared by machines
#: of different CPUs (a home directory on NFS) must hold code that runs on all of them.
HOST_FLAGS = (
    "-std=c11", "-O2", "-shared", "-fPIC", "-pthread", "-fvisibility=hidden", "-D_POSIX_C_SOURCE=200809L",
    "-DGPU_TILER_HOST_C",
)
_HOST_LOCK = threading.Lock()


class HostBuildError(RuntimeError):
    """The host C target cannot be built here (no C compiler, or it rejected the source)."""


def host_compiler() -> list[str]:
    """The C compiler command: ``GPU_TILER_CC``, else ``CC``, else the first of cc, gcc, clang on PATH."""
    for variable in ("GPU_TILER_CC", "CC"):
        command = shlex.split(os.environ.get(variable, ""))
        if command:
            if shutil.which(command[0]) is None:
                raise HostBuildError(f"{variable}={os.environ[variable]!r} names no program on PATH")
            return command
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    raise HostBuildError(
        "no C compiler found (cc, gcc or clang on PATH): install one (e.g. apt install gcc) or name it in GPU_TILER_CC"
    )


@functools.lru_cache(maxsize=None)
def _compiler_identity(command: tuple[str, ...]) -> str:
    """The compiler's resolved path and first ``--version`` line: a new compiler is a new cache entry."""
    try:
        done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise HostBuildError(f"the C compiler {command[0]!r} does not run: {exc}") from exc
    first = (done.stdout or done.stderr).strip().splitlines()[:1]
    return f"{os.path.realpath(shutil.which(command[0]) or command[0])} {first[0] if first else ''}"


def kernel_cache_dir() -> Path:
    """Where host builds are cached: ``GPU_TILER_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/gpu_tiler/kernels``
    (``~/.cache/gpu_tiler/kernels``); a per-user folder under the temporary directory when that is not writable."""
    chosen = os.environ.get("GPU_TILER_KERNEL_CACHE")
    if chosen:
        candidates = [Path(chosen)]
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        candidates = [Path(base) / "gpu_tiler" / "kernels"]
    candidates.append(Path(tempfile.gettempdir()) / f"gpu_tiler-kernels-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK | os.X_OK):
            return folder
    raise HostBuildError(f"no writable folder for compiled kernels (tried {', '.join(map(str, candidates))}); "
                         f"set GPU_TILER_KERNEL_CACHE")


def host_library_key(source: str | Path, defines: tuple[str, ...] = ()) -> str:
    """The cache key of one host build: every kernel source and header, the compiler, the flags, the machine."""
    digest = hashlib.sha256()
    for path in sorted(kernel_dir().iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    command = tuple(host_compiler())
    digest.update((kernel_dir() / source).read_bytes())  # a source outside kernel_dir (an absolute path) too
    for part in (str(source), *command, _compiler_identity(command), *HOST_FLAGS, *defines, platform.machine()):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:32]


def build_host_library(source: str | Path, defines: tuple[str, ...] = ()) -> Path:
    """Compile ``kernels/<source>`` (or the C file at an absolute path, which may include the kernel headers)
    for the host CPU into a shared library and return its path.

    The library is cached under :func:`kernel_cache_dir` by :func:`host_library_key`, so it is built once
    per source, compiler and flags. It is compiled to a temporary file in the cache folder and renamed
    into place (``os.replace``, atomic): concurrent processes may both build, but none ever loads a
    half-written library.
    """
    command = host_compiler()
    key = host_library_key(source, defines)
    folder = kernel_cache_dir()
    target = folder / f"{Path(source).stem}-{key}.so"
    if target.is_file():
        return target
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.stem}-", suffix=".tmp")
    os.close(fd)
    try:
        argv = [*command, *HOST_FLAGS, *defines, "-I", str(kernel_dir()), str(kernel_dir() / source), "-o", temporary]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            raise HostBuildError(f"the C compiler {command[0]!r} did not run: {exc}") from exc
        if done.returncode != 0:
            raise HostBuildError(
                f"{command[0]} could not build {source} for this CPU (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-1500:]}"
            )
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


@functools.lru_cache(maxsize=None)
def load_host_library(source: str | Path, defines: tuple[str, ...] = ()) -> ctypes.CDLL:
    """The host build of ``kernels/<source>`` (built or taken from the cache), loaded once per process."""
    with _HOST_LOCK:
        return ctypes.CDLL(str(build_host_library(source, defines)))
