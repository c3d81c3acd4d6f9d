"""Connected-component labelling across tiles, identical to ``scipy.ndimage.label``.

``label(image, connectivity=1, structure=None, dtype=None)`` returns ``(labels, n)``: lazy labels
numbered exactly as SciPy numbers the whole image, and the number of objects. See ``_label`` for the
method (two passes over the tiles and a union-find merge of border pieces) and its costs.

``map_labels(func, image, halo, ...)`` runs a user's instance segmentation per tile with a halo and
stitches the tiles' labels by their overlap into one labelling, merged with the same union-find and
numbered the same way (see ``_stitch``; its per-window pass 1 and matching are ``_matching``).

Both run the same two passes (``_twopass``): where the local labels wait between them (in memory,
persisted on a cluster, or in a scratch store), running pass 1, handing its summaries to the merge,
and pass 2 through one local-labels interface whose ``task(index, lookup)`` maps one tile.
"""
from gpu_tiler.labels._label import label
from gpu_tiler.labels._merge import MERGERS, get_merger
from gpu_tiler.labels._stitch import map_labels

__all__ = ["MERGERS", "get_merger", "label", "map_labels"]
