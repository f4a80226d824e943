r"""Exact ln Z of the square-lattice Ising model from its size and couplings (no system objects).

* :func:`kaufman_log_z` — Kaufman's (1949) closed form for the m×n torus at h = 0, in the
  log-space form of Beale (PRL 76, 78 (1996)); any size, O(n) work. :func:`kaufman_log_z_mp` is
  the same formula in mpmath at arbitrary precision, the check on the float64 path.
* :func:`_transfer_log_z` — the row-to-row transfer matrix (2^L × 2^L, applied as a Kronecker
  product), any K_h, K_v, βh, periodic or open, L ≤ ``MAX_TRANSFER_WIDTH``.
* :func:`lattice_method` — which of the two applies to an L×L lattice.

The system-level API (:func:`~boltzgen.systems.ising_exact_log_z` and friends) is
:mod:`boltzgen.systems._ising_exact`; :class:`~boltzgen.systems.Ising` uses this module
directly for its ``exact_log_z``. Conventions: E(s) = −J_h Σ_horizontal s_i s_j
− J_v Σ_vertical s_i s_j − h Σ_i s_i with each bond counted once (on an L = 2 torus each pair is
joined by two bonds and both count, exactly as in ``Ising._energy``); reduced couplings
K_h = βJ_h, K_v = βJ_v; all in float64.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from boltzgen.systems._enumerate import all_states

#: Widest lattice (spins per row) for :func:`~boltzgen.systems.transfer_matrix_log_z`:
#: 2^12 × 2^12 float64.
MAX_TRANSFER_WIDTH = 12

#: Range of |K| in which the float64 Kaufman formula neither overflows nor underflows
#: (K = 0 exactly is also accepted). Outside it use :func:`kaufman_log_z_mp`.
KAUFMAN_K_RANGE = (1e-100, 150.0)

# Transfer-matrix work is done on blocks of at most this many float64 entries (32 MB).
_TM_BLOCK = 1 << 22

# Widest row for which the transfer-matrix value path runs in NumPy (faster than compiling).
_TM_NUMPY_WIDTH = 10

_LN_HALF = math.log(0.5)


# --------------------------------------------------------------------------------------------
# Input checks and the antiferromagnetic gauge
# --------------------------------------------------------------------------------------------


def _check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 2:
        raise ValueError(f"{name} must be an integer ≥ 2, got {value!r}")
    return int(value)


def _check_finite(name: str, value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return out


def _kaufman_problem(n_rows: int, n_cols: int, k_h: float, k_v: float) -> str | None:
    """Why the float64 Kaufman formula does not apply to these couplings, or None if it does."""
    if k_h < 0 and k_v != 0 and n_cols % 2:
        return (
            f"K_h = {k_h} < 0 on a torus with an odd number of columns ({n_cols}) is frustrated; "
            "the ferromagnetic gauge needs an even width"
        )
    if k_v < 0 and k_h != 0 and n_rows % 2:
        return (
            f"K_v = {k_v} < 0 on a torus with an odd number of rows ({n_rows}) is frustrated; "
            "the ferromagnetic gauge needs an even height"
        )
    lo, hi = KAUFMAN_K_RANGE
    for name, k in (("K_h", k_h), ("K_v", k_v)):
        if k != 0 and not lo <= abs(k) <= hi:
            return (
                f"|{name}| = {abs(k)} is outside the float64 range [{lo}, {hi}] of the Kaufman "
                "formula; use kaufman_log_z_mp"
            )
    return None


# --------------------------------------------------------------------------------------------
# Kaufman's formula, float64 (NumPy for values, jax.numpy for exact derivatives)
# --------------------------------------------------------------------------------------------


def _stop_gradient(xp, x):
    return jax.lax.stop_gradient(x) if xp is jnp else x


def _log_2cosh(xp, x):
    """ln(2 cosh x) = |x| + ln(1 + e^{−2|x|}), no overflow."""
    ax = xp.abs(x)
    return ax + xp.log1p(xp.exp(-2.0 * ax))


def _log_2sinh_pos(xp, x):
    """ln(2 sinh x) = x + ln(1 − e^{−2x}) for x > 0, no overflow, accurate for small x."""
    return x + xp.log(-xp.expm1(-2.0 * x))


def _ring_log_z(xp, n_chains: int, length: int, k):
    """n_chains independent periodic chains of ``length`` spins with coupling K ≠ 0.

    ln Z = n_chains · ln[(2 cosh K)^length + (2 sinh K)^length] (the two eigenvalues of the 2×2
    transfer matrix; the second is negative for K < 0 and odd length).
    """
    lc = length * _log_2cosh(xp, k)
    ls = length * _log_2sinh_pos(xp, xp.abs(k))
    sign = xp.where(k < 0, (-1.0) ** length, 1.0)
    return n_chains * (lc + xp.log1p(sign * xp.exp(ls - lc)))


def _kaufman_core(xp, m: int, n: int, k_h, k_v):
    r"""Beale's log-space Kaufman formula for K_h, K_v > 0 (NumPy or jnp float64 scalars).

    See :func:`kaufman_log_z` for the formula. The k = 0 factor 2 sinh(m γ_0 / 2) of Z_4 is kept
    as a signed number (not a log-magnitude) when |m γ_0 / 2| < 1, so that ln Z stays smooth and
    differentiable through γ_0 = 0 (the finite-size critical point, where Z_4 = 0).
    """
    # K_v* with tanh K_v* = e^{−2K_v}:  K_v* = ½[ln(1 + e^{−2K_v}) − ln(1 − e^{−2K_v})].
    dual = 0.5 * (xp.log1p(xp.exp(-2.0 * k_v)) - xp.log(-xp.expm1(-2.0 * k_v)))
    log_2sinh_2kv = _log_2sinh_pos(xp, 2.0 * k_v)
    # sinh 2K_v* · sinh 2K_h = sinh 2K_h / sinh 2K_v  (since sinh 2K sinh 2K* = 1).
    sinh_prod = xp.exp(_log_2sinh_pos(xp, 2.0 * k_h) - log_2sinh_2kv)
    y = dual - k_h  # γ_0 = 2(K_h − K_v*) = −2y
    k = np.arange(1, 2 * n)
    sin2 = np.sin(0.5 * np.pi * k / n) ** 2
    # cosh γ_k − 1 = 2 sinh²(K_v* − K_h) + 2 sinh 2K_v* sinh 2K_h sin²(πk / 2n)  (all ≥ 0).
    d = 2.0 * xp.sinh(y) ** 2 + 2.0 * sinh_prod * sin2
    gamma = xp.log1p(d + xp.sqrt(d) * xp.sqrt(d + 2.0))  # arccosh(1 + d), k = 1 … 2n − 1
    x = 0.5 * m * gamma
    x_odd = x[0::2]  # k = 1, 3, …, 2n − 1  (n values)
    x_even = x[1::2]  # k = 2, 4, …, 2n − 2  (n − 1 values)
    x0 = -m * y  # m γ_0 / 2, signed: < 0 above the (finite-size) critical temperature

    l1 = xp.sum(_log_2cosh(xp, x_odd))
    l2 = xp.sum(_log_2sinh_pos(xp, x_odd))
    l3 = _log_2cosh(xp, x0) + xp.sum(_log_2cosh(xp, x_even))
    l4_rest = xp.sum(_log_2sinh_pos(xp, x_even))
    # Z_1 ≥ Z_2 > 0 and Z_3 ≥ |Z_4|, so the largest term is Z_1 or Z_3.
    top = _stop_gradient(xp, xp.maximum(l1, l3))
    small = xp.abs(x0) < 1.0
    x0_small = xp.where(small, x0, 0.0)
    x0_big = xp.where(small, 1.0, x0)
    z4_small = 2.0 * xp.sinh(x0_small) * xp.exp(l4_rest - top)
    z4_big = xp.sign(x0_big) * xp.exp(_log_2sinh_pos(xp, xp.abs(x0_big)) + l4_rest - top)
    z4 = xp.where(small, z4_small, z4_big)  # Z_4 / e^top, with the sign of γ_0
    total = xp.exp(l1 - top) + xp.exp(l2 - top) + xp.exp(l3 - top) + z4
    return _LN_HALF + 0.5 * m * n * log_2sinh_2kv + top + xp.log(total)


def _kaufman(xp, n_rows: int, n_cols: int, k_h, k_v, zero_h: bool, zero_v: bool):
    """Torus ln Z for (possibly traced) couplings; which ones are zero is decided statically."""
    if zero_h and zero_v:
        return n_rows * n_cols * math.log(2.0) + 0.0 * (k_h + k_v)
    if zero_v:  # independent horizontal rings: n_rows of them, n_cols spins each
        return _ring_log_z(xp, n_rows, n_cols, k_h)
    if zero_h:
        return _ring_log_z(xp, n_cols, n_rows, k_v)
    # Gauge: flipping every other column maps K_h → −K_h (n_cols even), likewise rows and K_v.
    return _kaufman_core(xp, n_rows, n_cols, xp.abs(k_h), xp.abs(k_v))


_kaufman_jit = jax.jit(functools.partial(_kaufman, jnp), static_argnums=(0, 1, 4, 5))


def kaufman_log_z(n_rows: int, n_cols: int, k_h: float, k_v: float) -> float:
    r"""Exact ln Z of the zero-field Ising model on an n_rows × n_cols torus (Kaufman 1949).

    E(s) = −J_h Σ_horizontal s s' − J_v Σ_vertical s s' with periodic boundaries both ways and
    reduced couplings K_h = βJ_h (bonds within a row), K_v = βJ_v (bonds between rows). With
    m = n_rows, n = n_cols, the dual coupling tanh K_v* = e^{−2K_v}, and for k = 0 … 2n − 1

        cosh γ_k = cosh 2K_v* cosh 2K_h − sinh 2K_v* sinh 2K_h cos(πk / n),   γ_k > 0 (k ≥ 1),
        γ_0 = 2(K_h − K_v*)   (signed; = 2K + ln tanh K when isotropic),

    the partition function is

        Z = ½ (2 sinh 2K_v)^{mn/2} (Z_1 + Z_2 + Z_3 + Z_4),
        Z_1 = Π_{k odd} 2 cosh(m γ_k / 2),   Z_2 = Π_{k odd} 2 sinh(m γ_k / 2),
        Z_3 = Π_{k even} 2 cosh(m γ_k / 2),  Z_4 = Π_{k even} 2 sinh(m γ_k / 2).

    Following Beale, each Z_i is carried as a log-magnitude ln|Z_i| = Σ_k ln|2 cosh or sinh(…)|
    plus a sign, and ln(Z_1 + Z_2 + Z_3 + Z_4) is a signed log-sum-exp, so nothing overflows for
    any lattice size. Z_1, Z_2, Z_3 > 0 always; Z_4 carries the sign of its k = 0 factor,
    sinh(m γ_0 / 2), which is negative for K_h < K_v* (above the critical temperature, γ_0 < 0).
    Dropping that sign (taking γ_0 = arccosh(…) ≥ 0) adds 2|Z_4| and makes ln Z too large above
    T_c by up to ln 2 (for L = 4 at β = 0.2 by 0.674). cosh γ_k − 1 is evaluated as
    2 sinh²(K_v* − K_h) + 2 sinh 2K_v* sinh 2K_h sin²(πk / 2n) to avoid cancellation near T_c.

    Antiferromagnetic couplings are mapped to ferromagnetic ones by the gauge s → −s on every
    other column (K_h → −K_h, needs n_cols even) or row (K_v → −K_v, needs n_rows even); a zero
    coupling leaves independent periodic chains, ln Z = (#chains) ln[(2 cosh K)^ℓ + (2 sinh K)^ℓ].

    Args:
        n_rows: number of rows m ≥ 2 (the transfer direction).
        n_cols: number of spins per row n ≥ 2.
        k_h: reduced horizontal coupling K_h = βJ_h.
        k_v: reduced vertical coupling K_v = βJ_v.

    Returns:
        ln Z as a Python float (float64).

    Raises:
        ValueError: for sizes < 2, non-finite couplings, a negative coupling along an odd
            dimension (frustrated: use :func:`~boltzgen.systems.transfer_matrix_log_z` or
            enumeration), or 0 < |K| outside ``KAUFMAN_K_RANGE``.

    Example:
        >>> from boltzgen.systems import BETA_C
        >>> round(kaufman_log_z(512, 512, BETA_C, BETA_C) / 512**2, 5)  # Onsager: 0.929695…
        0.9297
    """
    m, n = _check_size("n_rows", n_rows), _check_size("n_cols", n_cols)
    k_h, k_v = _check_finite("k_h", k_h), _check_finite("k_v", k_v)
    problem = _kaufman_problem(m, n, k_h, k_v)
    if problem is not None:
        raise ValueError(problem)
    return float(_kaufman(np, m, n, np.float64(k_h), np.float64(k_v), k_h == 0, k_v == 0))


def kaufman_log_z_mp(n_rows: int, n_cols: int, k_h: float, k_v: float, dps: int = 50):
    r"""Kaufman's ln Z (see :func:`kaufman_log_z`) evaluated directly in mpmath at ``dps`` digits.

    Z_1 … Z_4 are formed as plain products (mpmath's exponent range does not overflow), with
    γ_0 = 2(K_h − K_v*) signed and γ_k = arccosh(cosh 2K_v* cosh 2K_h − sinh 2K_v* sinh 2K_h
    cos(πk/n)) for k ≥ 1. The float couplings are converted exactly, so the difference from
    :func:`kaufman_log_z` is the float64 path's rounding error only. Needs ``mpmath`` (the
    ``dev`` extra).

    Args:
        n_rows: number of rows m ≥ 2.
        n_cols: number of spins per row n ≥ 2.
        k_h: reduced horizontal coupling K_h = βJ_h.
        k_v: reduced vertical coupling K_v = βJ_v.
        dps: decimal digits of working precision.

    Returns:
        ln Z as an ``mpmath.mpf`` (convert with ``float`` for float64).

    Raises:
        ValueError: for a negative coupling along an odd dimension (frustrated).
    """
    import mpmath as mp

    m, n = _check_size("n_rows", n_rows), _check_size("n_cols", n_cols)
    k_h, k_v = _check_finite("k_h", k_h), _check_finite("k_v", k_v)
    problem = _kaufman_problem(m, n, k_h, k_v)
    if problem is not None and "frustrated" in problem:
        raise ValueError(problem)
    with mp.workdps(dps):
        kh, kv = mp.mpf(k_h), mp.mpf(k_v)
        if kh == 0 or kv == 0:
            if kh == 0 and kv == 0:
                return m * n * mp.log(2)
            chains, length, k = (m, n, kh) if kv == 0 else (n, m, kv)
            return chains * mp.log((2 * mp.cosh(k)) ** length + (2 * mp.sinh(k)) ** length)
        kh, kv = abs(kh), abs(kv)
        a = -mp.log(mp.tanh(kv))  # 2K_v*
        b = 2 * kh
        ca, sa, cb, sb = mp.cosh(a), mp.sinh(a), mp.cosh(b), mp.sinh(b)
        z = [mp.mpf(1)] * 4
        for k in range(2 * n):
            g = b - a if k == 0 else mp.acosh(ca * cb - sa * sb * mp.cos(mp.pi * k / n))
            x = m * g / 2
            i = 0 if k % 2 else 2
            z[i] *= 2 * mp.cosh(x)
            z[i + 1] *= 2 * mp.sinh(x)
        return (
            mp.log(mp.mpf(1) / 2)
            + mp.mpf(m * n) / 2 * mp.log(2 * mp.sinh(2 * kv))
            + mp.log(mp.fsum(z))
        )


# --------------------------------------------------------------------------------------------
# Transfer matrix
# --------------------------------------------------------------------------------------------


def _row_terms(n_cols: int, periodic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Σ_c s_c s_{c+1} and Σ_c s_c of every row state, in the order of :func:`all_states`."""
    s = all_states(n_cols)
    if periodic:  # for n_cols = 2 this counts the pair twice, as Ising._energy does
        bonds = np.sum(s * np.roll(s, -1, axis=1), axis=1)
    else:
        bonds = np.sum(s[:, :-1] * s[:, 1:], axis=1)
    return bonds, np.sum(s, axis=1)


def _apply_vertical(xp, x, a, c, n_cols: int):
    """Multiply (2^n, k) by B = ⊗_c [[a, c], [c, a]] (the vertical bonds), one site at a time."""
    k = x.shape[1]
    for site in range(n_cols):
        x = x.reshape(2**site, 2, -1)
        x0, x1 = x[:, 0], x[:, 1]
        x = xp.stack([a * x0 + c * x1, c * x0 + a * x1], axis=1)
    return x.reshape(2**n_cols, k)


def _fori_loop(lower, upper, body, init):
    """``jax.lax.fori_loop`` for the NumPy path."""
    carry = init
    for i in range(lower, upper):
        carry = body(i, carry)
    return carry


def _transfer_block(xp, n_rows, n_cols, periodic, block, start, k_h, k_v, b_h):
    """The log of one block's share of Z (NumPy, or traced jnp couplings with static sizes)."""
    bonds, mag = _row_terms(n_cols, periodic)
    fori_loop = jax.lax.fori_loop if xp is jnp else _fori_loop
    # Row weights w(σ) = exp(K_h Σ σ_c σ_{c+1} + βh Σ σ_c), scaled by a constant.
    lw = k_h * bonds + b_h * mag
    lw_top = _stop_gradient(xp, xp.max(lw))
    w = xp.exp(lw - lw_top)[:, None]
    # B(σ, σ') = Π_c exp(K_v σ_c σ'_c) = e^{n|K_v|} ⊗_c [[a, c], [c, a]].
    kv_abs = _stop_gradient(xp, xp.abs(k_v))
    a, c = xp.exp(k_v - kv_abs), xp.exp(-k_v - kv_abs)
    step_log = lw_top + n_cols * kv_abs

    def body(_, carry):
        x, log_scale = carry
        x = w * _apply_vertical(xp, x, a, c, n_cols)
        s = _stop_gradient(xp, xp.max(x))  # every entry is positive: no cancellation anywhere
        return x / s, log_scale + xp.log(s) + step_log

    if periodic:  # columns start … start + block − 1 of (D B)^m: their diagonal sums to tr
        cols = start + xp.arange(block)
        x = (xp.arange(2**n_cols)[:, None] == cols[None, :]).astype(xp.float64)
        x, log_scale = fori_loop(0, n_rows, body, (x, xp.zeros((), xp.float64)))
        return log_scale + xp.log(xp.sum(x[cols, xp.arange(block)]))
    # open: Z = 1ᵀ D (B D)^{m−1} 1
    x, log_scale = fori_loop(0, n_rows - 1, body, (w, lw_top))
    return log_scale + xp.log(xp.sum(x))


_transfer_block_jit = jax.jit(functools.partial(_transfer_block, jnp), static_argnums=(0, 1, 2, 3))


def _transfer_log_z_any(xp, n_rows: int, n_cols: int, periodic: bool, k_h, k_v, b_h):
    """Transfer-matrix ln Z of an n_rows × n_cols lattice (NumPy, or jnp under jit)."""
    dim = 2**n_cols
    block = dim if not periodic else min(dim, max(1, _TM_BLOCK // dim))
    if xp is jnp:
        run = _transfer_block_jit
        starts = [jnp.int32(i) for i in range(0, dim if periodic else 1, block)]
    else:
        run = functools.partial(_transfer_block, np)
        starts = list(range(0, dim if periodic else 1, block))
    parts = [run(n_rows, n_cols, periodic, block, i, k_h, k_v, b_h) for i in starts]
    if len(parts) == 1:
        return parts[0]
    return jax.nn.logsumexp(jnp.stack(parts)) if xp is jnp else np.logaddexp.reduce(parts)


def _transfer_log_z(
    n_rows: int, n_cols: int, k_h: float, k_v: float, b_h: float = 0.0, boundary="periodic"
) -> float:
    """Transfer-matrix ln Z of an n_rows × n_cols lattice (reduced couplings, βh = b_h).

    NumPy for n_cols ≤ ``_TM_NUMPY_WIDTH`` (no compilation), jit-compiled JAX beyond.
    """
    if n_cols > MAX_TRANSFER_WIDTH:
        raise ValueError(
            f"transfer matrix for L = {n_cols} spins per row is 2^{n_cols} × 2^{n_cols}; "
            f"L ≤ {MAX_TRANSFER_WIDTH} only"
        )
    periodic = boundary == "periodic"
    if n_cols <= _TM_NUMPY_WIDTH:
        args = (np.float64(k_h), np.float64(k_v), np.float64(b_h))
        return float(_transfer_log_z_any(np, n_rows, n_cols, periodic, *args))
    with jax.enable_x64(True):
        args = (jnp.float64(k_h), jnp.float64(k_v), jnp.float64(b_h))
        return float(_transfer_log_z_any(jnp, n_rows, n_cols, periodic, *args))


def lattice_method(
    L: int, beta: float, Jh: float, Jv: float, h: float, boundary: str
) -> str | None:
    """The exact route for an L×L Ising lattice at a finite ``beta``, or None.

    ``"kaufman"`` for a torus (``boundary == "periodic"``) at h = 0 whose couplings
    K = βJ the float64 formula handles (:func:`_kaufman_problem`), else ``"transfer_matrix"``
    for L ≤ ``MAX_TRANSFER_WIDTH``, else None.
    """
    if boundary == "periodic" and h == 0.0 and _kaufman_problem(L, L, beta * Jh, beta * Jv) is None:
        return "kaufman"
    if L <= MAX_TRANSFER_WIDTH:
        return "transfer_matrix"
    return None


__all__ = [
    "KAUFMAN_K_RANGE",
    "MAX_TRANSFER_WIDTH",
    "kaufman_log_z",
    "kaufman_log_z_mp",
    "lattice_method",
]
