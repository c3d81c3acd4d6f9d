"""Tools layer: helpers built on the operations (margin finder, previews)."""
