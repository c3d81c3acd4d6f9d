"""Global numbering: merge border pieces into objects and number objects as SciPy does.

Pieces are the local labels of all tiles, with ids ``piece_offsets[tile] + local`` (tiles in raster
order). Sorting pieces stably by their order keys (see ``_tiles``) puts them in the raster order of
their first voxels, so a piece's *rank* in that sort orders it among all pieces. The union-find runs
over the ranks of border pieces only (those in some equivalence pair), so the smallest node of each
component is the piece holding the object's first voxel: the object's **head**. Heads numbered
1, 2, ... in rank order are exactly ``scipy.ndimage.label``'s numbers; every other piece takes its
head's number. Everything here is array code on the backend's module (NumPy or CuPy).
"""
from __future__ import annotations

import numpy as np

from gpu_tiler._backends import get_backend, to_numpy


def _stable_argsort(xp, keys):
    if xp is np:
        return np.argsort(keys, kind="stable")
    return xp.argsort(keys)  # CuPy's argsort is a stable radix sort


def number_pieces(xp, order_keys, first, second, merger):
    """The global label of every piece and the number of objects.

    ``order_keys``: int64 per piece (index = piece id - 1); ``first``/``second``: piece ids that touch;
    ``merger``: a union-find from ``_merge``. Returns ``(label_of_piece, n_objects)``, labels int64.
    """
    n_pieces = int(order_keys.size)
    if n_pieces == 0:
        return xp.zeros(0, dtype=np.int64), 0
    order = _stable_argsort(xp, order_keys)
    rank = xp.empty(n_pieces, dtype=np.int64)
    rank[order] = xp.arange(n_pieces, dtype=np.int64)
    head = xp.ones(n_pieces, dtype=bool)
    if first.size:
        rank_a, rank_b = rank[first - 1], rank[second - 1]
        nodes = xp.unique(xp.concatenate([rank_a, rank_b]))  # border pieces' ranks, ascending
        node_a = xp.searchsorted(nodes, rank_a)
        node_b = xp.searchsorted(nodes, rank_b)
        roots = _roots_on(xp, merger, node_a, node_b, int(nodes.size))
        head[nodes] = roots == xp.arange(nodes.size, dtype=roots.dtype)
    number_by_rank = xp.cumsum(head, dtype=np.int64)
    n_objects = int(number_by_rank[-1])
    if first.size:
        number_by_rank[nodes] = number_by_rank[nodes[roots]]
    return number_by_rank[rank], n_objects


def _roots_on(xp, merger, first, second, n_nodes):
    """Run ``merger`` on ``xp`` arrays, moving them only when the merger lives on the other side."""
    if merger.on_device == (xp is not np):
        return merger.roots(first, second, n_nodes)
    if merger.on_device:  # host arrays, a merger on the GPU
        gpu = get_backend("cupy")
        return gpu.to_host(merger.roots(gpu.to_backend(first), gpu.to_backend(second), n_nodes))
    # device arrays and a host merger, asked for explicitly: a round trip through the host
    return xp.asarray(merger.roots(to_numpy(first), to_numpy(second), n_nodes))


__all__ = ["number_pieces"]
