"""Finding kernel sources: ``kernels/`` in a source checkout, ``gpu_tiler/kernels`` in a wheel."""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path


@functools.lru_cache(maxsize=None)
def kernel_dir() -> Path:
    """The folder holding the kernel sources (``.h``, ``.cu``/``.cl`` shared sources)."""
    packaged = resources.files("gpu_tiler") / "kernels"
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parent.parent / "kernels"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        "gpu_tiler's kernel sources are missing: neither gpu_tiler/kernels (installed wheel) nor "
        f"{checkout} (source checkout) exists; reinstall gpu_tiler"
    )


@functools.lru_cache(maxsize=None)
def read_kernel(name: str) -> str:
    """The text of one kernel source file, read once."""
    path = kernel_dir() / name
    if not path.is_file():
        known = ", ".join(sorted(p.name for p in kernel_dir().iterdir()))
        raise FileNotFoundError(f"no kernel source '{name}' in {kernel_dir()} (there are: {known})")
    return path.read_text()
