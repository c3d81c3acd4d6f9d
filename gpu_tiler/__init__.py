"""gpu_tiler: process images larger than memory tile by tile, exactly, on GPUs or CPUs."""
from ._backends import chunk_backend as backend_of
from ._backends import get_backend, resolve_backend
from ._claim import OutputInUseError, claim_output
from ._cluster import cluster
from ._config import config, parse_budget
from ._devices import Device, devices
from ._engine import map_tiles
from ._registry import plan_of
from .filters import *  # noqa: F403 - every public filter, as gt.<name>
from .filters import __all__ as _filters_all
from . import filters
from ._io import InputChangedError, ResumeRefusedError, open, save
from ._margin import MarginReport, find_margin
from .labels import label, map_labels
from ._ome import ImageMetadata, metadata_of
from . import measure
from .measure import regionprops
from ._planning import TilePlan, plan_tiles
from . import transforms
from .transforms import affine_transform, deskew, map_coordinates, rotate, shift, zoom

__version__ = "0.1.0"

__all__ = sorted({
    "Device", "ImageMetadata", "InputChangedError", "MarginReport", "OutputInUseError", "ResumeRefusedError",
    "TilePlan", "__version__", "backend_of", "claim_output", "cluster", "config", "devices", "filters",
    "find_margin", "get_backend", "label", "map_labels", "map_tiles", "measure", "metadata_of", "open",
    "parse_budget", "plan_of", "plan_tiles", "regionprops", "resolve_backend", "save", *_filters_all,
    # geometric transforms
    "affine_transform", "deskew", "map_coordinates", "rotate", "shift", "transforms", "zoom",
})
