"""Elementwise coupling transforms as pure functions on parameters: affine and RQS.

Written by hand: flowjax has both, but its coupling flows need a 1-D event and could not be
composed with the (N, d) particle layouts here, so the coupling layers call these directly.

Every transform maps a scalar x with an unconstrained parameter vector θ (last axis) to
(y, ln|dy/dx|), elementwise over leading axes. Zero parameters give the identity.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

TRANSFORMS = ("affine", "spline")

_MIN_BIN = 1e-3
_MIN_DERIV = 1e-3
# softplus(z + _DERIV_SHIFT) + _MIN_DERIV = 1 at z = 0, so zero parameters give unit slopes.
_DERIV_SHIFT = math.log(math.expm1(1.0 - _MIN_DERIV))


def n_params(transform: str, n_bins: int) -> int:
    """Number of unconstrained parameters per transformed scalar."""
    if transform == "affine":
        return 2
    if transform == "spline":
        return 3 * n_bins - 1
    raise ValueError(f"unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")


def affine(x, params, *, clamp: float, inverse: bool = False):
    """Affine map y = x·e^s + t with a soft-clamped log-scale s = c·tanh(s_raw/c).

    Args:
        x: inputs, shape (...).
        params: (..., 2) holding (s_raw, t).
        clamp: c > 0, bound on |s| (keeps reverse-KL training stable).
        inverse: apply x = (y - t)·e^{-s} instead.

    Returns:
        (y, ln|dy/dx|) for the direction applied, each of shape (...).
    """
    s = clamp * jnp.tanh(params[..., 0] / clamp)
    t = params[..., 1]
    if inverse:
        return (x - t) * jnp.exp(-s), -s
    return x * jnp.exp(s) + t, s


def _spline_knots(params, interval: float, n_bins: int):
    w_raw = params[..., :n_bins]
    h_raw = params[..., n_bins : 2 * n_bins]
    d_raw = params[..., 2 * n_bins :]

    def knots(raw):
        frac = _MIN_BIN + (1.0 - _MIN_BIN * n_bins) * jax.nn.softmax(raw, axis=-1)
        cum = jnp.cumsum(frac, axis=-1)
        cum = jnp.concatenate([jnp.zeros_like(cum[..., :1]), cum], axis=-1)
        k = -interval + 2.0 * interval * cum
        # pin the end knots exactly to ±B so the tails join continuously
        k = k.at[..., 0].set(-interval).at[..., -1].set(interval)
        return k

    kx, ky = knots(w_raw), knots(h_raw)
    inner = _MIN_DERIV + jax.nn.softplus(d_raw + _DERIV_SHIFT)
    ones = jnp.ones_like(inner[..., :1])
    deriv = jnp.concatenate([ones, inner, ones], axis=-1)  # unit slope at ±B: linear tails
    return kx, ky, deriv


def _gather(a, k):
    return jnp.take_along_axis(a, k[..., None], axis=-1)[..., 0]


def rational_quadratic_spline(x, params, *, interval: float, n_bins: int, inverse: bool = False):
    r"""Monotone rational-quadratic spline (Durkan et al. 2019), identity outside [-B, B].

    With knots (x_k, y_k), bin widths w_k, heights h_k, slopes δ_k, s_k = h_k/w_k and
    ξ = (x - x_k)/w_k ∈ [0, 1]:

        y = y_k + h_k [s_k ξ² + δ_k ξ(1-ξ)] / [s_k + (δ_{k+1} + δ_k - 2s_k) ξ(1-ξ)],
        dy/dx = s_k² [δ_{k+1} ξ² + 2 s_k ξ(1-ξ) + δ_k (1-ξ)²] / [s_k + (δ_{k+1}+δ_k-2s_k) ξ(1-ξ)]².

    The end slopes are 1, so the map continues as the identity (linear tails) outside [-B, B].
    The inverse solves the quadratic a ξ² + b ξ + c = 0 in its stable form ξ = 2c/(-b - √(b²-4ac)).

    Args:
        x: inputs, shape (...).
        params: (..., 3K - 1) unconstrained widths (K), heights (K), interior slopes (K - 1).
        interval: B, half-width of the spline's domain.
        n_bins: K.
        inverse: apply the inverse map.

    Returns:
        (y, ln|dy/dx|) for the direction applied (ln|dx/dy| for the inverse), shape (...).
    """
    kx, ky, deriv = _spline_knots(params, interval, n_bins)
    inside = (x > -interval) & (x < interval)
    xc = jnp.clip(x, -interval, interval)
    knots_in = ky if inverse else kx
    # bin index: number of interior knots ≤ x, in [0, K-1]
    k = jnp.sum(xc[..., None] >= knots_in[..., 1:-1], axis=-1)
    x_k, x_k1 = _gather(kx, k), _gather(kx, k + 1)
    y_k, y_k1 = _gather(ky, k), _gather(ky, k + 1)
    d_k, d_k1 = _gather(deriv, k), _gather(deriv, k + 1)
    w = x_k1 - x_k
    h = y_k1 - y_k
    s = h / w
    if not inverse:
        xi = (xc - x_k) / w
        t = xi * (1.0 - xi)
        denom = s + (d_k1 + d_k - 2.0 * s) * t
        y = y_k + h * (s * xi * xi + d_k * t) / denom
        dydx = s * s * (d_k1 * xi * xi + 2.0 * s * t + d_k * (1.0 - xi) ** 2) / (denom * denom)
        logdet = jnp.log(dydx)
        return jnp.where(inside, y, x), jnp.where(inside, logdet, 0.0)
    dy = xc - y_k
    g = d_k1 + d_k - 2.0 * s
    a = h * (s - d_k) + dy * g
    b = h * d_k - dy * g
    c = -s * dy
    disc = jnp.maximum(b * b - 4.0 * a * c, 0.0)
    xi = (2.0 * c) / (-b - jnp.sqrt(disc))
    xi = jnp.clip(xi, 0.0, 1.0)
    xout = x_k + xi * w
    t = xi * (1.0 - xi)
    denom = s + g * t
    dydx = s * s * (d_k1 * xi * xi + 2.0 * s * t + d_k * (1.0 - xi) ** 2) / (denom * denom)
    logdet = -jnp.log(dydx)
    return jnp.where(inside, xout, x), jnp.where(inside, logdet, 0.0)


def apply_transform(
    transform: str,
    x,
    params,
    *,
    inverse: bool,
    clamp: float,
    interval: float,
    n_bins: int,
):
    """Dispatch to :func:`affine` or :func:`rational_quadratic_spline` (static ``transform``)."""
    if transform == "affine":
        return affine(x, params, clamp=clamp, inverse=inverse)
    return rational_quadratic_spline(x, params, interval=interval, n_bins=n_bins, inverse=inverse)


__all__ = ["TRANSFORMS", "affine", "apply_transform", "n_params", "rational_quadratic_spline"]
