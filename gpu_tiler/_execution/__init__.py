"""Execution layer: run tiles with a bounded number in flight, locally or on a dask.distributed cluster."""
