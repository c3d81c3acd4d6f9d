"""Moments about a centre: their exponents, their sums over a tile, moving them to another centre, and
scikit-image's quantities made from them (normalized moments, the inertia tensor).

Central moments merge exactly in exact arithmetic: a tile's moments are taken about an *integer* centre
``c``, and moments about another centre ``c'`` follow from the binomial expansion of
``(x - c') = (x - c) + (c - c')``. Intensity variance merges the same way (Chan et al.'s parallel variance
is the one-variable case).
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np

ORDER = 3  #: scikit-image's moments* properties are up to order 3 along every axis
VALUE_EXPONENTS = ((0,), (1,), (2,))  #: a value's count, sum and sum of squares about its centre


@functools.lru_cache(maxsize=None)
def exponents(ndim: int, grid: bool) -> tuple[tuple[int, ...], ...]:
    """Every axis up to order 3 (``grid``, as scikit-image's ``moments*``) or total degree up to 2 (enough
    for the inertia tensor). Both sets are closed downwards, which the shift between centres needs."""
    if grid:
        return tuple(itertools.product(range(ORDER + 1), repeat=ndim))
    return tuple(p for p in itertools.product(range(3), repeat=ndim) if sum(p) <= 2)


@functools.lru_cache(maxsize=None)
def _shift_terms(exps):
    """For each exponent ``p``: the ``(index of j, binomial coefficient, p - j)`` for every ``j <= p``."""
    where = {p: e for e, p in enumerate(exps)}
    terms = []
    for p in exps:
        row = []
        for j in itertools.product(*(range(k + 1) for k in p)):
            coef = math.prod(math.comb(pk, jk) for pk, jk in zip(p, j))
            row.append((where[j], float(coef), tuple(pk - jk for pk, jk in zip(p, j))))
        terms.append(row)
    return tuple(terms)


def moment_sums(xp, index, rows, deltas, exps, weights=None, *, out):
    """Into ``out`` (rows, len(exps)): per row ``sum(weights * prod(deltas[a] ** p[a]))`` for every ``p``."""
    top = max(max(p) for p in exps)
    powers = []
    for d in deltas:
        per_axis = [None, d]
        for _ in range(2, top + 1):
            per_axis.append(per_axis[-1] * d)
        powers.append(per_axis)
    for e, p in enumerate(exps):
        term = weights
        for a, k in enumerate(p):
            if k:
                term = powers[a][k] if term is None else term * powers[a][k]
        out[:, e] = xp.bincount(index, minlength=rows) if term is None else xp.bincount(index, weights=term, minlength=rows)


def shift(mu, exps, d):
    """Moments about centres ``c`` (one row each, host) turned into moments about ``c - d``."""
    out = np.zeros_like(mu)
    for e, row in enumerate(_shift_terms(exps)):
        total = out[:, e]
        for j, coef, power in row:
            term = mu[:, j] * coef if coef != 1.0 else mu[:, j]
            for a, k in enumerate(power):
                if k:
                    term = term * d[:, a] ** k
            total += term
    return out


def scalar_power(base, exponent):
    """``base ** exponent`` one float64 scalar at a time, the form scikit-image uses (one region at a time).

    NumPy's vectorised ``power`` picks a SIMD loop by the CPU at run time (AVX-512 where there is one),
    which may differ from the scalar C ``pow`` in the last bit; NumPy's scalar power always calls ``pow``,
    so this result does not depend on the CPU, and equals scikit-image's bit for bit.
    """
    return np.array([b ** exponent for b in np.asarray(base, dtype=np.float64)], dtype=np.float64)


def normalized(mu, exps, ndim):
    """scikit-image's ``moments_normalized``: mu_p / mu_0 ** (|p| / ndim + 1); NaN where |p| < 2."""
    out = np.full_like(mu, np.nan)
    mu0 = mu[:, 0]
    denominators = {}
    for e, p in enumerate(exps):
        if sum(p) >= 2:
            power = sum(p) / ndim + 1
            if power not in denominators:
                denominators[power] = scalar_power(mu0, power)
            out[:, e] = mu[:, e] / denominators[power]
    return out


def as_grid(mu, ndim):
    """(rows, 4**ndim) in C order -> (rows, 4, ..., 4), the layout of scikit-image's moments."""
    return mu.reshape((mu.shape[0],) + (ORDER + 1,) * ndim)


def inertia_tensor(mu, exps, ndim):
    where = {p: e for e, p in enumerate(exps)}
    unit = np.eye(ndim, dtype=int)
    mu0 = mu[:, where[(0,) * ndim]]
    second = np.stack([mu[:, where[tuple(2 * unit[a])]] for a in range(ndim)], axis=1)
    tensor = np.zeros((mu.shape[0], ndim, ndim))
    for a in range(ndim):
        tensor[:, a, a] = (second.sum(axis=1) - second[:, a]) / mu0
    for a, b in itertools.combinations(range(ndim), 2):
        tensor[:, a, b] = tensor[:, b, a] = -mu[:, where[tuple(unit[a] + unit[b])]] / mu0
    return tensor
