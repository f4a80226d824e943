r"""Sample-quality metrics for particle systems: 1-D Wasserstein-2 distances (NumPy, float64).

For two distributions on R with quantile functions F_a⁻¹, F_b⁻¹ (left-continuous inverses of
the CDFs), the Wasserstein-2 distance is

    W2(a, b) = sqrt( ∫₀¹ (F_a⁻¹(u) − F_b⁻¹(u))² du ).

For weighted empirical distributions a = Σ_i w_i δ_{a_i} (Σ w_i = 1) the quantile function is
piecewise constant: with a sorted and cumulative weights c_k = Σ_{i≤k} w_(i), F_a⁻¹(u) = a_(k)
on (c_{k−1}, c_k]. The integral is computed exactly by merging the breakpoints of both
quantile functions: on each interval between consecutive merged breakpoints both are constant,
so W2² = Σ_intervals (length) · (difference)². This handles unequal sample sizes and importance
weights without resampling; for equal sizes and equal weights it reduces to the familiar
sqrt(mean((sort(a) − sort(b))²)).

The energy-W2 and interatomic-distance-W2 of the particle-sampler literature (Klein, Krämer &
Noé 2023; Akhound-Sadegh et al. 2024, iDEM; He et al. 2025's re-evaluation at equal budget) are
these 1-D distances between the energies, and between the pooled pairwise distances, of the
generated and the reference configurations.
"""

from __future__ import annotations

import numpy as np


def _as_1d(name, values):
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} has {int(np.sum(~np.isfinite(v)))} non-finite values")
    return v


def _normalised_weights(name, weights, n):
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (n,):
        raise ValueError(f"{name} must have {n} entries, got shape {np.shape(weights)}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{name} must be finite and >= 0")
    total = w.sum()
    if not total > 0:
        raise ValueError(f"{name} must have a positive sum")
    return w / total


def _quantile_steps(values, weights):
    """Sorted values of positive weight and their cumulative weights (last one exactly 1).

    Zero-weight values are dropped first: they are not part of the distribution (rounding the
    last cumulative weight to 1 would otherwise hand a sliver of mass to the largest value even
    when its weight is 0 — e.g. an overlapping-particle sample with E ≈ 1e11).
    """
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    order = np.argsort(values, kind="stable")
    v = values[order]
    c = np.cumsum(weights[order])
    c /= c[-1]
    c[-1] = 1.0
    return v, c


def wasserstein2_1d(a, b, weights_a=None, weights_b=None) -> float:
    r"""W2 = sqrt(∫₀¹ (F_a⁻¹(u) − F_b⁻¹(u))² du) between two weighted empirical distributions.

    Exact for piecewise-constant quantile functions (merged breakpoints, see the module
    docstring). Sizes may differ.

    Args:
        a: samples of the first distribution (any shape, flattened).
        b: samples of the second distribution (any shape, flattened).
        weights_a: optional non-negative weights of ``a`` (normalised here); None = uniform.
        weights_b: the same for ``b``.

    Returns:
        W2 as a float.
    """
    a = _as_1d("a", a)
    b = _as_1d("b", b)
    va, ca = _quantile_steps(a, _normalised_weights("weights_a", weights_a, a.size))
    vb, cb = _quantile_steps(b, _normalised_weights("weights_b", weights_b, b.size))
    grid = np.union1d(ca, cb)  # sorted breakpoints in (0, 1], last = 1
    lower = np.concatenate([[0.0], grid[:-1]])
    length = grid - lower
    keep = length > 0
    mid = 0.5 * (lower[keep] + grid[keep])
    # F⁻¹(u) = v_(k) for u in (c_{k−1}, c_k]: the first k with c_k ≥ u.
    qa = va[np.minimum(np.searchsorted(ca, mid, side="left"), va.size - 1)]
    qb = vb[np.minimum(np.searchsorted(cb, mid, side="left"), vb.size - 1)]
    return float(np.sqrt(np.sum(length[keep] * (qa - qb) ** 2)))


def energy_w2(e_a, e_b, weights_a=None, weights_b=None) -> float:
    r"""Energy-W2: the 1-D Wasserstein-2 distance between two empirical energy distributions.

    W2 = sqrt(∫₀¹ (F_a⁻¹(u) − F_b⁻¹(u))² du) with F_a, F_b the (weighted) empirical CDFs of the
    energies ``e_a`` and ``e_b`` (computed exactly, unequal sizes allowed).

    Args:
        e_a: energies of the first sample set, shape (n_a,).
        e_b: energies of the second (e.g. reference) set, shape (n_b,).
        weights_a: optional importance weights of ``e_a`` (normalised here).
        weights_b: optional weights of ``e_b``.

    Returns:
        W2 in the units of the energies.
    """
    return wasserstein2_1d(e_a, e_b, weights_a, weights_b)


def pairwise_distances(x, *, chunk: int = 4096) -> np.ndarray:
    r"""Interparticle distances r_ij = |x_i − x_j|, i < j, of each configuration.

    Args:
        x: configurations, shape (n, N, d) (or one configuration (N, d)).
        chunk: configurations processed at once (bounds the (chunk, P, d) temporary).

    Returns:
        float64 array of shape (n, N(N−1)/2) (or (N(N−1)/2,) for one configuration), pairs in
        ``np.triu_indices(N, 1)`` order.
    """
    x = np.asarray(x, dtype=np.float64)
    single = x.ndim == 2
    if single:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"pairwise_distances expects shape (n, N, d), got {x.shape}")
    i, j = np.triu_indices(x.shape[1], k=1)
    out = np.empty((x.shape[0], i.size))
    for s in range(0, x.shape[0], chunk):
        diff = x[s : s + chunk, i] - x[s : s + chunk, j]
        out[s : s + chunk] = np.sqrt(np.sum(diff * diff, axis=-1))
    return out[0] if single else out


def distance_w2(x_a, x_b, weights_a=None, weights_b=None) -> float:
    r"""Interatomic-distance W2: 1-D W2 between the pooled pairwise-distance distributions.

    Each configuration contributes its P = N(N−1)/2 distances r_ij (i < j); the distributions
    compared are the pooled distances of all configurations of each set, each distance of
    configuration n carrying weight w_n / P (uniform w_n = 1/n without weights). Then
    W2 = sqrt(∫₀¹ (F_a⁻¹(u) − F_b⁻¹(u))² du) as in :func:`energy_w2`.

    Args:
        x_a: configurations, shape (n_a, N, d).
        x_b: configurations, shape (n_b, N, d) (same N and d).
        weights_a: optional per-configuration importance weights of ``x_a``.
        weights_b: optional per-configuration weights of ``x_b``.

    Returns:
        W2 in units of length.
    """
    x_a = np.asarray(x_a, dtype=np.float64)
    x_b = np.asarray(x_b, dtype=np.float64)
    if x_a.ndim != 3 or x_b.ndim != 3 or x_a.shape[1:] != x_b.shape[1:]:
        raise ValueError(
            f"distance_w2 expects (n_a, N, d) and (n_b, N, d), got {x_a.shape} and {x_b.shape}"
        )
    da = pairwise_distances(x_a)
    db = pairwise_distances(x_b)
    wa = _expand_weights("weights_a", weights_a, da.shape)
    wb = _expand_weights("weights_b", weights_b, db.shape)
    return wasserstein2_1d(da, db, wa, wb)


def _expand_weights(name, weights, shape):
    if weights is None:
        return None
    w = _normalised_weights(name, weights, shape[0])
    return np.repeat(w / shape[1], shape[1])
