"""gpu_tiler: process images larger than memory tile by tile, exactly, on GPUs or CPUs."""
from ._backends import chunk_backend as backend_of
from ._backends import get_backend, resolve_backend
from ._config import config, parse_budget
from ._devices import Device, devices
from ._engine import map_tiles, plan_of
from ._io import open, save
from ._planning import TilePlan, plan_tiles

__version__ = "0.1.0"

__all__ = [
    "Device",
    "TilePlan",
    "__version__",
    "backend_of",
    "config",
    "devices",
    "get_backend",
    "map_tiles",
    "open",
    "parse_budget",
    "plan_of",
    "plan_tiles",
    "resolve_backend",
    "save",
]
