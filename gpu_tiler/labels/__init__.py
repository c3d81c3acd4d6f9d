"""Connected-component labelling across tiles, identical to ``scipy.ndimage.label``.

``label(image, connectivity=1, structure=None, dtype=None)`` returns ``(labels, n)``: lazy labels
numbered exactly as SciPy numbers the whole image, and the number of objects. See ``_label`` for the
method (two passes over the tiles and a union-find merge of border pieces) and its costs.

``map_labels(func, image, halo, ...)`` runs a user's instance segmentation per tile with a halo and
stitches the tiles' labels by their overlap into one labelling, merged with the same union-find and
numbered the same way (see ``_stitch``).
"""
from ._label import label
from ._merge import MERGERS, get_merger
from ._stitch import map_labels

__all__ = ["MERGERS", "get_merger", "label", "map_labels"]
