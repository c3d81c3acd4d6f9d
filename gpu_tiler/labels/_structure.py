"""The structuring element: checked once, at call time, and turned into neighbour offsets."""
from __future__ import annotations

import itertools
import numbers

import numpy as np
from scipy.ndimage import generate_binary_structure


def normalize_structure(ndim: int, connectivity=1, structure=None) -> np.ndarray:
    """The ``3**ndim`` boolean structuring element for ``connectivity`` or the given ``structure``.

    ``connectivity`` is 1..ndim as in ``scipy.ndimage.generate_binary_structure`` (1: faces only,
    ndim: faces, edges and corners). A ``structure`` replaces it; it must have shape ``(3,) * ndim``
    and be symmetric about its centre, as ``scipy.ndimage.label`` requires.
    """
    if structure is None:
        if (
            isinstance(connectivity, (bool, np.bool_))
            or not isinstance(connectivity, numbers.Integral)
            or not 1 <= int(connectivity) <= ndim
        ):
            allowed = "1" if ndim == 1 else f"1 (faces) to {ndim} (faces, edges and corners)"
            raise ValueError(
                f"connectivity must be an integer from {allowed} for a {ndim}-D image, not {connectivity!r}"
            )
        return generate_binary_structure(ndim, int(connectivity))
    array = np.asarray(structure.get() if hasattr(structure, "get") else structure)
    if array.shape != (3,) * ndim:
        raise ValueError(
            f"structure must have shape {(3,) * ndim} for a {ndim}-D image (one 3-long axis per image axis), "
            f"not {array.shape}"
        )
    if array.dtype.kind == "c":
        raise ValueError("structure must hold booleans or 0/1 values, not complex numbers")
    array = array != 0
    if not np.array_equal(array, array[(slice(None, None, -1),) * ndim]):
        raise ValueError(
            "structure must be symmetric about its centre (equal to itself flipped along every axis), "
            "as scipy.ndimage.label requires"
        )
    return array


def neighbour_offsets(structure: np.ndarray) -> list[tuple[int, ...]]:
    """Offsets (each component -1, 0 or 1) of the structure's neighbours, the centre excluded."""
    ndim = structure.ndim
    return [
        offset
        for offset in itertools.product((-1, 0, 1), repeat=ndim)
        if any(offset) and structure[tuple(o + 1 for o in offset)]
    ]


def connected_axes(structure: np.ndarray) -> tuple[int, ...]:
    """Axes along which the structure reaches a neighbour (only these need tile faces)."""
    offsets = neighbour_offsets(structure)
    return tuple(a for a in range(structure.ndim) if any(o[a] for o in offsets))


__all__ = ["connected_axes", "neighbour_offsets", "normalize_structure"]
