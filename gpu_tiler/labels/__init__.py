"""Connected-component labelling across tiles, identical to ``scipy.ndimage.label``.

``label(image, connectivity=1, structure=None, dtype=None)`` returns ``(labels, n)``: lazy labels
numbered exactly as SciPy numbers the whole image, and the number of objects. See ``_label`` for the
method (two passes over the tiles and a union-find merge of border pieces) and its costs.
"""
from ._label import label
from ._merge import MERGERS, get_merger

__all__ = ["MERGERS", "get_merger", "label"]
