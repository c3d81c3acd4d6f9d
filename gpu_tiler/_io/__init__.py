"""I/O layer: lazy sources, streaming sinks, OME-Zarr metadata, output claims and input provenance."""
