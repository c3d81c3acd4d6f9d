"""Exceptions that are also the type SciPy raises for the same bad argument.

Our messages name the parameter, the value and what is allowed; the classes derive from the
``ValueError`` we have always raised and from the type ``scipy.ndimage`` raises in the same case
(``RuntimeError`` for a sequence of the wrong length, an unknown boundary mode, a filter size or
rank outside the footprint; ``TypeError`` for a non-whole size), so code written against SciPy's
exceptions keeps working.
"""
from __future__ import annotations


class ParameterRuntimeError(ValueError, RuntimeError):
    """A bad argument that ``scipy.ndimage`` refuses with ``RuntimeError``."""


class ParameterTypeError(ValueError, TypeError):
    """A bad argument that ``scipy.ndimage`` refuses with ``TypeError``."""


__all__ = ["ParameterRuntimeError", "ParameterTypeError"]
