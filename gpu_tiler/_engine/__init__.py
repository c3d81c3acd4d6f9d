"""Engine layer: map_tiles and map_regions (windows assembled from source chunks), fused filter chains,
intermediates computed once."""
