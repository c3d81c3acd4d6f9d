"""gpu_tiler: process images larger than memory tile by tile, exactly, on GPUs or CPUs."""
from gpu_tiler._backends import chunk_backend as backend_of
from gpu_tiler._backends import get_backend, resolve_backend
from gpu_tiler._io.claim import OutputInUseError, claim_output
from gpu_tiler._execution.cluster import cluster
from gpu_tiler._config import config, parse_budget
from gpu_tiler._devices import Device, devices
from gpu_tiler._engine.tiles import map_tiles
from gpu_tiler._engine.materialise import explain
from gpu_tiler._registry import plan_of
from gpu_tiler.filters import *  # noqa: F403 - every public filter, as gt.<name>
from gpu_tiler.filters import __all__ as _filters_all
from gpu_tiler import filters
from gpu_tiler._execution import host_memory as _host_memory
from gpu_tiler._io.sources import InputChangedError, open
from gpu_tiler._io.sinks import ResumeRefusedError, save
from gpu_tiler._tools.margin import MarginReport, find_margin
from gpu_tiler.labels import label, map_labels
from gpu_tiler._io.ome import ImageMetadata
from gpu_tiler._registry import metadata_of
from gpu_tiler import measure
from gpu_tiler.measure import regionprops
from gpu_tiler import ndmeasure  # dask-image's ndmeasure names (gt.ndmeasure.median, not gt.median: a filter)
from gpu_tiler._planning.plan import TilePlan, plan_tiles
from gpu_tiler import transforms
from gpu_tiler.transforms import (
    affine_transform,
    deskew,
    map_coordinates,
    rotate,
    shift,
    zoom,
)

# before any thread of ours, dask's or zarr's allocates: freed tiles are then reused across threads instead of
# kept in one glibc arena per thread (GPU_TILER_MALLOC_ARENAS; docs/pipelines.md, "Host memory")
_host_memory.limit_arenas()

__version__ = "0.1.0"

__all__ = sorted({
    "Device", "ImageMetadata", "InputChangedError", "MarginReport", "OutputInUseError", "ResumeRefusedError",
    "TilePlan", "__version__", "backend_of", "claim_output", "cluster", "config", "devices", "explain", "filters",
    "find_margin", "get_backend", "label", "map_labels", "map_tiles", "measure", "metadata_of", "ndmeasure", "open",
    "parse_budget", "plan_of", "plan_tiles", "regionprops", "resolve_backend", "save", *_filters_all,
    # geometric transforms
    "affine_transform", "deskew", "map_coordinates", "rotate", "shift", "transforms", "zoom",
})
