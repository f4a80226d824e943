"""Multistate Bennett acceptance ratio (MBAR, Shirts & Chodera, JCP 129, 124105 (2008)), float64.

K states with reduced energies u_k; N pooled samples, n_k of them drawn from state k (ordered
by state of origin, though the estimator does not need the order). f_k = −ln Z_k, gauge f_0 = 0.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from boltzgen.estimators._estimate import Estimate


def _validate(u_kn, n_k) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(u_kn, dtype=np.float64)
    n = np.asarray(n_k)
    if u.ndim != 2:
        raise ValueError(f"u_kn: expected shape (K, N), got {u.shape}")
    if n.ndim != 1 or n.shape[0] != u.shape[0]:
        raise ValueError(
            f"n_k: expected shape ({u.shape[0]},) to match u_kn of shape {u.shape}, got {n.shape}"
        )
    if not np.all(np.isfinite(n)) or np.any(n < 0) or np.any(n != np.round(n)):
        raise ValueError(f"n_k: expected non-negative integer counts, got {n}")
    n = n.astype(np.int64)
    if n.sum() != u.shape[1]:
        raise ValueError(f"n_k: counts sum to {n.sum()}, but u_kn has N = {u.shape[1]} samples")
    if n.sum() == 0:
        raise ValueError("u_kn: need at least one sample, got N = 0")
    if np.any(np.isnan(u)) or np.any(np.isneginf(u)):
        raise ValueError("u_kn: NaN or −inf reduced energy (+inf is allowed: zero weight)")
    return u, n


def _log_denominator(u_s: np.ndarray, log_n_s: np.ndarray, f_s: np.ndarray) -> np.ndarray:
    """The log-denominator ln Σ_k n_k e^{f_k − u_kn} over the sampled states, shape (N,)."""
    return logsumexp((log_n_s + f_s)[:, None] - u_s, axis=0)


def _solve(u_s: np.ndarray, n_s: np.ndarray, tol: float, max_iter: int) -> np.ndarray:
    """Free energies of the sampled states (gauge f_0 = 0), self-consistent then Newton.

    Minimises the convex objective (Zhu; Shirts & Chodera)
        L(f) = Σ_n ln Σ_k n_k e^{f_k − u_kn} − Σ_k n_k f_k,
    whose gradient n_i(Σ_n W_ni − 1) vanishes exactly at the MBAR equations, with Hessian
        H_ij = δ_ij n_i Σ_n W_ni − n_i n_j Σ_n W_ni W_nj.
    """
    k = u_s.shape[0]
    log_n = np.log(n_s.astype(np.float64))
    f = np.zeros(k)
    if k == 1:
        return f

    def weights(f):
        log_d = _log_denominator(u_s, log_n, f)
        return np.exp(f[:, None] - u_s - log_d), log_d  # (K, N): W_nk transposed

    def objective(log_d, f):
        return float(np.sum(log_d) - np.dot(n_s, f))

    # A few self-consistent iterations: f_i ← −ln Σ_n e^{−u_in − ln D_n} (a robust start).
    for _ in range(min(10, max_iter)):
        log_d = _log_denominator(u_s, log_n, f)
        f = -logsumexp(-u_s - log_d, axis=1)
        f = f - f[0]

    residual = math.inf
    for _ in range(max_iter):
        w, log_d = weights(f)
        col = w.sum(axis=1)
        residual = float(np.max(np.abs(col - 1.0)))
        if residual <= tol:
            return f
        grad = n_s * (col - 1.0)
        nw = n_s[:, None] * w
        hess = np.diag(n_s * col) - nw @ nw.T
        # Gauge f_0 = 0: Newton on the other K − 1 (the reduced Hessian is positive definite).
        try:
            step = np.zeros(k)
            step[1:] = -np.linalg.solve(hess[1:, 1:], grad[1:])
        except np.linalg.LinAlgError:
            step = np.zeros(k)
            step[1:] = -np.linalg.lstsq(hess[1:, 1:], grad[1:], rcond=None)[0]
        obj = objective(log_d, f)
        t = 1.0
        for _ in range(60):
            f_new = f + t * step
            obj_new = objective(_log_denominator(u_s, log_n, f_new), f_new)
            if obj_new <= obj + 1e-13 * max(1.0, abs(obj)):
                break
            t *= 0.5
        else:
            break  # no decrease possible: at the floor of rounding
        if np.max(np.abs(t * step)) <= 1e-15 * max(1.0, float(np.max(np.abs(f)))):
            f = f_new
            w, _ = weights(f)
            residual = float(np.max(np.abs(w.sum(axis=1) - 1.0)))
            break
        f = f_new
    if residual <= max(tol, 1e-10):
        return f
    raise RuntimeError(
        f"mbar: not converged, max_k |Σ_n W_nk − 1| = {residual:.3g} > {max(tol, 1e-10):.1g} "
        f"(poor overlap between states or inconsistent energies?)"
    )


def mbar(u_kn, n_k, *, tol: float = 1e-12, max_iter: int = 10000) -> tuple[np.ndarray, np.ndarray]:
    """MBAR free energies f_k = −ln(Z_k/Z_0) and their asymptotic covariance.

    Solves the self-consistent equations (in log space)

        f_i = −ln Σ_n e^{−u_in} / Σ_k n_k e^{f_k − u_kn},   f_0 = 0,

    with a few self-consistent iterations followed by damped Newton on the convex MBAR objective
    L(f) = Σ_n ln Σ_k n_k e^{f_k − u_kn} − Σ_k n_k f_k, to max_k |Σ_n W_nk − 1| ≤ ``tol``.
    States with n_k = 0 are allowed: their f_k follows from the same formula after the sampled
    ones are solved.

    The covariance is Θ = Wᵀ(I − W diag(n) Wᵀ)⁺ W (Shirts & Chodera 2008, eq. D6), with
    W_nk = e^{f_k − u_kn} / Σ_j n_j e^{f_j − u_jn}, computed through the thin SVD W = U S Vᵀ as
    Θ = V S (I − S Vᵀ diag(n) V S)⁺ S Vᵀ (pseudo-inverse with relative cut 1e-10). Θ is
    gauge-dependent; the standard error of a difference is gauge-free:

        σ(f_j − f_i) = √(Θ_ii + Θ_jj − 2 Θ_ij).

    Args:
        u_kn: shape (K, N), u_kn[k, n] = reduced energy of pooled sample n in state k
            (+inf allowed; NaN and −inf raise ValueError).
        n_k: shape (K,), number of samples drawn from each state; Σ n_k = N.
        tol: convergence tolerance on max_k |Σ_n W_nk − 1|.
        max_iter: maximum Newton iterations.

    Returns:
        (f_k, cov): f_k of shape (K,) with f_0 = 0, cov = Θ of shape (K, K).

    Raises:
        ValueError: bad shapes or values (the message names ``u_kn`` or ``n_k``).
        RuntimeError: not converged (the message gives the residual).
    """
    u, n = _validate(u_kn, n_k)
    sampled = n > 0
    u_s, n_s = u[sampled], n[sampled].astype(np.float64)
    log_n_s = np.log(n_s)
    f_s = _solve(u_s, n_s, tol, max_iter)
    log_d = _log_denominator(u_s, log_n_s, f_s)
    if np.any(~np.isfinite(log_d)):
        raise ValueError("u_kn: a sample has u = +inf in every sampled state")
    # All states (sampled or not) from the same formula; exact for the sampled ones at the root.
    f = -logsumexp(-u - log_d, axis=1)
    f = f - f[0]
    w = np.exp(f[:, None] - u - log_d[None, :]).T  # W_nk, shape (N, K)
    _, s, vt = np.linalg.svd(w, full_matrices=False)
    v = vt.T
    sv = v * s  # V S
    inner = np.eye(len(s)) - sv.T @ (n[:, None] * sv)
    theta = sv @ np.linalg.pinv(inner, rcond=1e-10, hermitian=True) @ sv.T
    return f, theta


def mbar_estimate(u_kn, n_k, i: int, j: int, *, method: str = "mbar") -> Estimate:
    """MBAR estimate of ln(Z_j/Z_i) = f_i − f_j with σ = √(Θ_ii + Θ_jj − 2Θ_ij).

    See :func:`mbar`. ``n_samples`` = N (all pooled samples), ``ess`` = NaN; ``extra`` holds
    ``n_states``, ``n_i`` and ``n_j`` (samples drawn from states i and j).

    Args:
        u_kn: shape (K, N) reduced energies of all pooled samples in every state.
        n_k: shape (K,) samples per state.
        i: reference state (A).
        j: target state (B).
        method: the estimate's name.
    """
    f, theta = mbar(u_kn, n_k)
    k = f.size
    for name, idx in (("i", i), ("j", j)):
        if not -k <= idx < k:
            raise ValueError(f"{name}: state index {idx} out of range for K = {k}")
    var = theta[i, i] + theta[j, j] - 2.0 * theta[i, j]
    n = np.asarray(n_k)
    return Estimate(
        method,
        float(f[i] - f[j]),
        math.sqrt(max(float(var), 0.0)),
        "estimate",
        int(n.sum()),
        math.nan,
        extra={"n_states": int(k), "n_i": int(n[i]), "n_j": int(n[j])},
    )
