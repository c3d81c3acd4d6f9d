"""What a result was computed from: stored inputs with stamps that change when any chunk changes,
and functions identified by their code, not only by their name.

``resume=True`` continues a job only when it is provably the same job on the same data. A dask
name is not proof enough: dask names a stored input by its path, and an importable function by
its module and name, so a rewritten chunk or an edited function keeps the name. Here:

- Stored inputs enter the dask graph as :class:`StoredArray` (a zarr array, TIFF or ``.npy`` with
  the files that hold it). :func:`stamps_of` finds them in a graph and stamps each by the path,
  size and modification time (ns) of every file under it: chunk files, metadata, the TIFF or
  ``.npy`` file. Rewriting any chunk in place changes its mtime, hence the stamp. That is as cheap
  as a store allows (one ``stat`` per file, no pixel read); stores whose files cannot be listed
  (in memory, remote) stamp as ``None``: their changes cannot be detected and resume refuses them.
- :func:`function_token` hashes a function's bytecode, constants, defaults, closure values and
  the module-level values it reads (functions of its own module recursively), so an edited
  function gets a new token; when some part cannot be hashed deterministically it returns None
  and the result is marked as unverifiable (resume refuses it rather than guessing).
"""
from __future__ import annotations

import functools
import hashlib
import os
import types
from pathlib import Path

import numpy as np

__all__ = ["StoredArray", "UNVERIFIABLE", "function_token", "stamp_files", "stamps_of"]

#: marks the dask name of a result whose function could not be identified by its code
UNVERIFIABLE = "unverifiable"


class StoredArray:
    """A stored array (zarr, TIFF through zarr, memory-mapped ``.npy``) and the files that hold it.

    Dask reads it like the array it wraps; :func:`stamps_of` finds it in a graph."""

    def __init__(self, array, where: str, files: str | None, keep=None):
        self.array, self.where, self.files = array, where, files
        self.keep = keep  #: what must live as long as a graph reads the array (a scratch store's owner)
        self.shape, self.dtype, self.ndim = tuple(array.shape), np.dtype(array.dtype), len(array.shape)

    @property
    def chunks(self):
        return getattr(self.array, "chunks", None)

    def __getitem__(self, index):
        return self.array[index]

    def __len__(self):
        return self.shape[0]

    def stamp(self):
        return None if self.files is None else stamp_files(self.files)

    def __repr__(self):
        return f"<stored {self.where} {self.shape} {self.dtype}>"


def files_of_zarr(z) -> str | None:
    """The local folder holding a zarr array, or None for stores that are not local files."""
    store = getattr(z, "store", None)
    root = getattr(store, "root", None)
    if root is None:
        return None
    path = Path(root) / getattr(z, "path", "")
    return str(path) if path.exists() else None


def stamp_files(path) -> str | None:
    """A digest of the path, size and mtime (ns) of every file under ``path`` (or of the file)."""
    path = Path(path)
    digest = hashlib.blake2b(digest_size=16)
    count = 0
    if path.is_file():
        st = path.stat()
        digest.update(f"{st.st_size}\0{st.st_mtime_ns}".encode())
        count = 1
    elif path.is_dir():
        entries = []
        stack = [path]
        while stack:
            folder = stack.pop()
            with os.scandir(folder) as listing:
                for entry in listing:
                    if entry.is_dir(follow_symlinks=True):
                        stack.append(Path(entry.path))
                    else:
                        st = entry.stat(follow_symlinks=True)
                        entries.append((os.path.relpath(entry.path, path), st.st_size, st.st_mtime_ns))
        for rel, size, mtime in sorted(entries):
            digest.update(f"{rel}\0{size}\0{mtime}\n".encode())
        count = len(entries)
    else:
        return None
    return f"{count}:{digest.hexdigest()}"


def _stored_in(graph):
    layers = getattr(graph, "layers", None)
    if layers is not None:  # a HighLevelGraph: stored arrays sit in from_array's "original-" layers
        for name, layer in layers.items():
            if name.startswith("original-"):
                for value in layer.values():
                    if isinstance(value, StoredArray):
                        yield value
        return
    for value in dict(graph).values():
        if isinstance(value, StoredArray):
            yield value


def stamps_of(array) -> dict[str, str | None]:
    """``{where: stamp}`` for every stored input in ``array``'s graph (None: cannot be stamped)."""
    stamps = {}
    for stored in _stored_in(array.__dask_graph__()):
        if stored.where not in stamps:
            stamps[stored.where] = stored.stamp()
    return dict(sorted(stamps.items()))


def unverifiable_in(array) -> list[str]:
    """Names of the graph's layers whose function could not be identified by its code."""
    layers = getattr(array.__dask_graph__(), "layers", {})
    return sorted(name for name in layers if f"-{UNVERIFIABLE}-" in name)


# ---- functions ---------------------------------------------------------------------------------


class _Unhashable(Exception):
    pass


def _value(value):
    """A deterministic token of a plain value (raises _Unhashable when there is none)."""
    import dask.config
    from dask.base import tokenize

    try:
        with dask.config.set({"tokenize.ensure-deterministic": True}):
            return tokenize(value)
    except Exception as exc:  # dask raises RuntimeError for values it cannot hash deterministically
        raise _Unhashable(f"{type(value).__name__} value ({exc})") from exc


def _code(code: types.CodeType):
    consts = tuple(_code(c) if isinstance(c, types.CodeType) else ("const", _value(c)) for c in code.co_consts)
    return (code.co_code, consts, code.co_names, code.co_varnames, code.co_freevars, code.co_flags, code.co_argcount,
            code.co_kwonlyargcount)


def _names_read(code: types.CodeType):
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_read(const)
    return names


@functools.lru_cache(maxsize=None)
def _library_dirs() -> tuple[str, ...]:
    import sysconfig

    paths = sysconfig.get_paths()
    dirs = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs.add(str(Path(__file__).resolve().parent))  # gpu_tiler itself: identified by its version
    return tuple(os.path.realpath(d) + os.sep for d in dirs if d)


def _is_library(func) -> bool:
    """Installed code (the standard library, site-packages, gpu_tiler): named and versioned, its
    module-level values not followed (they include caches and registries that change as it runs)."""
    filename = os.path.realpath(func.__code__.co_filename)
    return filename.startswith(_library_dirs()) or func.__module__.split(".")[0] == "gpu_tiler"


def _identity(obj, home: str | None, seen: set):
    """What determines what ``obj`` computes, as a nested tuple of plain values."""
    if id(obj) in seen:
        return ("seen", getattr(obj, "__qualname__", type(obj).__name__))
    if isinstance(obj, types.ModuleType):
        return ("module", obj.__name__, getattr(obj, "__version__", None))
    if isinstance(obj, functools.partial):
        seen.add(id(obj))
        return ("partial", _identity(obj.func, home, seen), tuple(_identity(a, home, seen) for a in obj.args),
                tuple((k, _identity(v, home, seen)) for k, v in sorted(obj.keywords.items())))
    if isinstance(obj, types.MethodType):
        return ("method", _identity(obj.__func__, home, seen), _identity(obj.__self__, home, seen))
    if isinstance(obj, types.FunctionType):
        seen.add(id(obj))
        module = obj.__module__
        own = (home is None or module == home) and not _is_library(obj)
        parts = [module, obj.__qualname__, _code(obj.__code__),
                 tuple(_identity(d, home, seen) for d in (obj.__defaults__ or ())),
                 tuple((k, _identity(v, home, seen)) for k, v in sorted((obj.__kwdefaults__ or {}).items()))]
        for cell in obj.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell (a name not assigned yet)
                contents = None
            parts.append(_identity(contents, home, seen))
        if own:  # module-level values it reads; functions of other modules are named, not followed
            for name in sorted(_names_read(obj.__code__)):
                if name in obj.__globals__:
                    parts.append((name, _identity(obj.__globals__[name], module, seen)))
        return ("function", tuple(parts))
    if isinstance(obj, type) and home is not None and obj.__module__ == home:  # a class of the user's module
        seen.add(id(obj))
        return ("class", obj.__module__, obj.__qualname__,
                tuple((k, _identity(v, home, seen)) for k, v in sorted(vars(obj).items())
                      if isinstance(v, (types.FunctionType, staticmethod, classmethod, property))
                      or not k.startswith("__")))
    if isinstance(obj, (staticmethod, classmethod)):
        return ("descriptor", _identity(obj.__func__, home, seen))
    if isinstance(obj, property):
        return ("property", _identity(obj.fget, home, seen), _identity(obj.fset, home, seen))
    if isinstance(obj, (types.BuiltinFunctionType, np.ufunc, type)):
        return ("named", getattr(obj, "__module__", None), getattr(obj, "__qualname__", getattr(obj, "__name__", "?")))
    if callable(obj) and not isinstance(obj, (np.ndarray, np.generic)):
        call = getattr(type(obj), "__call__", None)
        if isinstance(call, types.FunctionType):  # an instance of a class with __call__: its code and its state
            seen.add(id(obj))
            return ("callable", _identity(call, None, seen), _value(obj))
    return ("value", _value(obj))


def function_token(func) -> str | None:
    """A token that changes when ``func``'s code, defaults, closure or module-level values change;
    None when some part of it cannot be hashed deterministically."""
    from dask.base import tokenize

    try:
        return tokenize(_identity(func, None, set()))
    except (_Unhashable, RecursionError):
        return None
