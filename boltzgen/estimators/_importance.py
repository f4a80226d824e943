"""Importance sampling, bounds and effective sample sizes on arrays of log-weights (float64).

Conventions: reduced energy u(x) = βE(x), Z = ∫ e^{-u(x)} dx, and the log-weight of a model
sample w(x) = -u(x) - ln q(x), so that E_q[e^w] = Z.
Every function here takes plain arrays and returns float64 NumPy values; nothing knows about
systems or samplers.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from boltzgen.estimators._estimate import Estimate
from boltzgen.estimators._estimate import fields_from_diagnostics as _fields
from boltzgen.estimators._pareto import MAX_TRUSTED_PARETO_K, pareto_k

#: Below this Kish ESS an importance-sampling error bar is flagged as untrustworthy.
MIN_TRUSTED_ESS = 100.0


def _as_log_weights(log_w) -> tuple[np.ndarray, int]:
    """Return float64 log-weights with NaN replaced by -inf (zero weight), and the NaN count.

    A sample whose energy overflowed to +inf has weight exactly zero (w = -inf) and still
    counts in M. A NaN log-weight (a numerical failure) is counted, reported, and given zero
    weight: never silently dropped from M.
    """
    w = np.asarray(log_w, dtype=np.float64).reshape(-1)
    if w.size == 0:
        raise ValueError("need at least one log-weight, got an empty array")
    nan = np.isnan(w)
    if np.any(w == np.inf):
        raise ValueError("a log-weight is +inf: log q(x) = -inf at a sample drawn from q")
    return np.where(nan, -np.inf, w), int(nan.sum())


def logmeanexp(log_w) -> float:
    """ln( (1/M) Σ_i e^{w_i} ), stable in float64."""
    w = np.asarray(log_w, dtype=np.float64).reshape(-1)
    return float(logsumexp(w) - math.log(w.size))


def normalised_weights(log_w) -> np.ndarray:
    """Self-normalised weights w̃_i = e^{w_i} / Σ_j e^{w_j} (float64, sums to one)."""
    w, _ = _as_log_weights(log_w)
    if not np.any(np.isfinite(w)):
        return np.full(w.shape, np.nan)
    e = np.exp(w - np.max(w))
    return e / np.sum(e)


def kish_ess(log_w) -> float:
    """Kish effective sample size ESS = (Σ e^{w})² / Σ e^{2w} = 1 / Σ w̃²."""
    wn = normalised_weights(log_w)
    if np.any(np.isnan(wn)):
        return 0.0
    return float(1.0 / np.sum(wn * wn))


def importance_stderr(log_w) -> float:
    """Delta-method standard error of ln Ẑ: √(Σ w̃² − 1/M) = √(1/ESS − 1/M).

    This is (sample std of e^w)/(√M · mean e^w) with the 1/M normalisation. Optimistic when the
    weights are heavy-tailed: report ESS beside it.
    """
    w, _ = _as_log_weights(log_w)
    wn = normalised_weights(w)
    if np.any(np.isnan(wn)):
        return math.inf
    # Σ w̃² − 1/M = Σ (w̃ − 1/M)², the second form exact zero for equal weights.
    return float(math.sqrt(np.sum((wn - 1.0 / w.size) ** 2)))


def bootstrap_log_z_stderr(log_w, *, rng: np.random.Generator, n_boot: int = 200) -> float:
    """Bootstrap standard error of ln Ẑ = logmeanexp(w) over ``n_boot`` resamples."""
    w, _ = _as_log_weights(log_w)
    m = w.size
    shift = np.max(w)
    if not np.isfinite(shift):
        return math.inf
    e = np.exp(w - shift)
    # Resample in blocks so that memory stays O(block · M).
    block = max(1, min(n_boot, 2**24 // m))
    vals = []
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        idx = rng.integers(0, m, size=(b, m))
        vals.append(np.log(e[idx].mean(axis=1)))
    vals = np.concatenate(vals)
    return float(np.std(vals, ddof=1)) if n_boot > 1 else math.nan


def importance_log_z(
    log_w,
    *,
    method: str = "importance",
    rng: np.random.Generator | None = None,
    n_boot: int = 0,
) -> Estimate:
    """Importance-sampling estimate ln Ẑ = logsumexp(w) − ln M from samples of q.

    Consistent, with E[ln Ẑ] ≤ ln Z (so its βF is an upper bound in expectation, tightening
    with M). The standard error is the delta method (:func:`importance_stderr`); with
    ``n_boot > 0`` a bootstrap standard error is added to ``extra["log_z_stderr_bootstrap"]``.
    ``extra["low_ess"] = 1`` flags ESS < :data:`MIN_TRUSTED_ESS`, where neither error bar is
    to be trusted. ``extra["pareto_k"]`` is the tail shape k̂ of the weights
    (:func:`~boltzgen.estimators.pareto_k`); the ``high_k`` flag marks k̂ > 0.5, where the
    weights' variance is infinite and the error bar invalid whatever the ESS.

    Args:
        log_w: log-weights w_i = −u(x_i) − ln q(x_i), x_i ~ q. A NaN or −inf (u = NaN or +inf:
            zero target density) is a zero weight, kept in M, and counted in ``n_nonfinite``
            (``extra["n_zero_weight"]`` counts the −inf ones).
        method: the estimate's name.
        rng: NumPy generator for the bootstrap.
        n_boot: number of bootstrap resamples (0 = none).
    """
    w, n_nan = _as_log_weights(log_w)
    ess = kish_ess(w)
    k = pareto_k(w)
    extra = {
        "n_nonfinite": int(np.sum(np.isneginf(w))),  # NaN or −inf: zero weight, kept in M
        "n_zero_weight": int(np.sum(np.isneginf(w))) - n_nan,
        "low_ess": int(ess < MIN_TRUSTED_ESS),
        "ess_fraction": ess / w.size,
        "pareto_k": k,
        "high_k": int(k > MAX_TRUSTED_PARETO_K),
    }
    if n_boot > 0:
        if rng is None:
            raise ValueError(
                "importance_log_z: n_boot > 0 needs an rng (np.random.default_rng(seed))"
            )
        extra["log_z_stderr_bootstrap"] = bootstrap_log_z_stderr(w, rng=rng, n_boot=n_boot)
    log_z = float(logsumexp(w) - math.log(w.size)) if np.any(np.isfinite(w)) else -math.inf
    return Estimate(
        method, log_z, importance_stderr(w), "estimate", int(w.size), ess, **_fields(extra)
    )


def variational_bound(log_w, *, method: str = "variational") -> Estimate:
    """Variational (reverse-KL) bound: βF ≤ E_q[u + ln q] = −E_q[w] = βF + KL(q‖p).

    Returned as an ``upper_bound`` on βF (so ``log_z`` = mean(w) is a lower bound on ln Z),
    with standard error std(w)/√M.

    With non-finite weights (an energy NaN or +inf: zero target density; a numerical failure of
    ln q) KL(q‖p) is infinite and so is this bound. What is returned then is the bound of the
    sampler q' = q restricted to the finite-weight set F (drawn by rejecting the other samples;
    ln q' = ln q − ln q(F)): βF ≤ E_{q'}[u + ln q'] = mean_F(−w) − ln q̂(F), with q̂(F) the
    finite share (its delta-method variance added). It is rigorous, counts the non-finite
    samples in ``n_nonfinite`` and says so in a note.
    """
    w = np.asarray(log_w, dtype=np.float64).reshape(-1)
    if w.size == 0:
        raise ValueError("need at least one log-weight, got an empty array")
    finite = np.isfinite(w)
    wf = w[finite]
    if wf.size == 0:
        return Estimate(
            method,
            -math.inf,
            math.inf,
            "upper_bound",
            int(w.size),
            math.nan,
            n_nonfinite=int(w.size),
        )
    var = float(np.var(wf, ddof=1) / wf.size) if wf.size > 1 else math.inf
    n_bad = int((~finite).sum())
    share = wf.size / w.size
    notes = ()
    if n_bad:
        # ln Z ≥ mean_F(w) + ln q(F); Var ln q̂(F) ≈ (1 − s)/(s M) for the binomial share s.
        var += (1.0 - share) / (share * w.size)
        notes = (f"bound of q restricted to finite energies ({share:.3g} of q)",)
    return Estimate(
        method,
        float(np.mean(wf)) + math.log(share),
        math.sqrt(var),
        "upper_bound",
        int(w.size),
        math.nan,
        n_nonfinite=n_bad,
        notes=notes,
    )


def weighted_mean(values, log_w=None) -> tuple[float, float]:
    """Self-normalised mean Σ w̃_i f_i and its delta-method standard error.

    With ``log_w=None`` the samples are unweighted (standard error std/√M). Otherwise
    Var ≈ Σ w̃_i² (f_i − f̄)², the ratio-estimator variance.
    """
    f = np.asarray(values, dtype=np.float64).reshape(-1)
    if log_w is None:
        return float(f.mean()), float(f.std(ddof=1) / math.sqrt(f.size))
    wn = normalised_weights(log_w)
    if wn.shape != f.shape:
        raise ValueError(f"values and log_w must have the same length, got {f.size} and {wn.size}")
    keep = wn > 0
    mean = float(np.sum(wn[keep] * f[keep]))
    var = float(np.sum(wn[keep] ** 2 * (f[keep] - mean) ** 2))
    return mean, math.sqrt(var)


def importance_entropy(log_w, u) -> tuple[float, float]:
    """Entropy S = ln Z + ⟨u⟩_p (in units of k_B; u = βE) from weighted samples of q.

    ln Ẑ = ln mean(e^w) and ⟨u⟩ = Σ w̃_i u_i share the weights, so their errors are correlated;
    the standard error comes from the summed influence functions (delta method):
    ψ_i = (r_i − 1) + r_i (u_i − ⟨u⟩) with r_i = e^{w_i}/mean(e^w), Var S ≈ Σ ψ_i² / M².
    """
    w, _ = _as_log_weights(log_w)
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    if u.shape != w.shape:
        raise ValueError(f"u and log_w must have the same length, got {u.size} and {w.size}")
    keep = np.isfinite(w)
    r = np.zeros_like(w)
    r[keep] = np.exp(w[keep] - logmeanexp(w))
    mean_u = float(np.sum(r[keep] * u[keep]) / w.size)
    psi = (r - 1.0) + np.where(keep, r * (np.where(keep, u, 0.0) - mean_u), 0.0)
    return logmeanexp(w) + mean_u, float(np.sqrt(np.sum(psi**2)) / w.size)


def forward_bound(
    reduced_energy_plus_log_q, log_w_p=None, *, method: str = "forward_bound"
) -> Estimate:
    """Lower bound on βF from samples of p: E_p[u + ln q] = βF − KL(p‖q) ≤ βF.

    Args:
        reduced_energy_plus_log_q: u(x_j) + ln q(x_j) at samples x_j of p (e.g. Monte Carlo).
        log_w_p: optional log-weights of those samples when they are weighted samples of p
            (e.g. annealed importance sampling); None for exact or equilibrium samples.
        method: the estimate's name.

    Returns an ``lower_bound`` Estimate on βF, i.e. ``log_z`` = −E_p[u + ln q] ≥ ln Z in
    expectation. ``ess`` is the Kish ESS of the p-sample weights (M if unweighted).
    """
    a = np.asarray(reduced_energy_plus_log_q, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError("need at least one sample of p, got an empty array")
    n_nonfinite = int((~np.isfinite(a)).sum())
    if n_nonfinite:
        # q = 0 (or a numerical failure) at a sample of p: the only rigorous statement left is
        # the trivial bound βF ≥ −∞. (Replacing the value by +∞ would claim βF ≥ +∞.)
        return Estimate(
            method,
            math.inf,
            math.inf,
            "lower_bound",
            int(a.size),
            float(a.size) if log_w_p is None else kish_ess(log_w_p),
            n_nonfinite=n_nonfinite,
        )
    mean, err = weighted_mean(a, log_w_p)
    ess = float(a.size) if log_w_p is None else kish_ess(log_w_p)
    return Estimate(method, -mean, err, "lower_bound", int(a.size), ess, n_nonfinite=n_nonfinite)


def forward_ess(log_w_at_p_samples) -> float:
    """Forward effective sample size from samples of p (FAB, Midgley et al. 2023).

    With x_j ~ p and w_j = −u(x_j) − ln q(x_j) (the importance log-weight evaluated at p-samples),

        ESS_fwd = M / ( mean_j e^{w_j − c} · mean_j e^{−(w_j − c)} ),

    computed in log space as ln(ESS_fwd/M) = −[logmeanexp(w) + logmeanexp(−w)] (independent of
    the shift c). Since E_p[e^{w}]·E_p[e^{−w}] = E_p[p/q] = E_q[(p/q)²], it estimates the same
    M / E_q[(p/q)²] as the Kish ESS of q-samples, but from samples of p, so it sees modes that q
    misses. Equals M for a perfect q (w constant) and 0 when q vanishes at a p-sample
    (w = +inf). NaN log-weights are left out of both means (the caller reports them).

    Args:
        log_w_at_p_samples: w_j = −u(x_j) − ln q(x_j) at samples x_j of p.

    Returns:
        ESS_fwd as an absolute count in [0, M] (M = number of non-NaN samples).
    """
    w = np.asarray(log_w_at_p_samples, dtype=np.float64).reshape(-1)
    w = w[~np.isnan(w)]
    if w.size == 0:
        raise ValueError("log_w_at_p_samples: need at least one non-NaN log-weight")
    if np.any(np.isposinf(w)) or np.any(np.isneginf(w)):
        return 0.0
    log_frac = -(logmeanexp(w) + logmeanexp(-w))
    # Jensen: mean(e^a)·mean(e^−a) ≥ 1, so log_frac ≤ 0 up to rounding.
    return float(w.size * math.exp(min(log_frac, 0.0)))


def reverse_importance_log_z(
    log_w,
    *,
    method: str = "reverse_importance",
    rng: np.random.Generator | None = None,
    n_boot: int = 0,
) -> Estimate:
    """Reverse importance sampling from samples of p: 1/Z = E_p[q e^{u}] = E_p[e^{−w}].

    ln Ẑ = −logmeanexp(−w) = −[logsumexp(−w_j) − ln M], with x_j ~ p (equilibrium, e.g. Monte
    Carlo) and w_j = −u(x_j) − ln q(x_j). Consistent; E[ln(1/Ẑ)] ≤ ln(1/Z) by Jensen, so ln Ẑ is
    biased high (the other way from :func:`importance_log_z`). It is Jarzynski's estimator on
    reverse works W_R = w with state A = q.

    The standard error is the delta method on the weights e^{−w}: √(Σ ṽ² − 1/M) with
    ṽ_j = e^{−w_j}/Σ e^{−w}; with ``n_boot > 0`` a bootstrap one is added to
    ``extra["log_z_stderr_bootstrap"]``. ``ess`` is the forward ESS (:func:`forward_ess`) and
    ``extra["ess_fraction"]`` = ESS/M; ``extra["kish_ess"]`` is the Kish ESS of the weights
    e^{−w} (the effective count behind this estimator's error bar). ``extra["low_ess"] = 1`` flags
    forward ESS < :data:`MIN_TRUSTED_ESS`.

    Args:
        log_w: w_j = −u(x_j) − ln q(x_j) at samples x_j of p. +inf (q = 0 at a p-sample) is a
            legitimate zero weight e^{−w} = 0; NaN is given zero weight (kept in M); both are
            counted in ``n_nonfinite``; −inf (u = +inf at a p-sample) is rejected.
        method: the estimate's name.
        rng: NumPy generator for the bootstrap.
        n_boot: number of bootstrap resamples (0 = none).
    """
    w = np.asarray(log_w, dtype=np.float64).reshape(-1)
    if w.size == 0:
        raise ValueError("log_w: need at least one log-weight, got an empty array")
    if np.any(np.isneginf(w)):
        raise ValueError("log_w: a log-weight at a p-sample is −inf (u = +inf at a sample of p)")
    n_nan = int(np.isnan(w).sum())
    v = np.where(np.isnan(w), -np.inf, -w)  # log of the reverse weights e^{−w}
    ess_fwd = forward_ess(w) if n_nan < w.size else 0.0
    k = pareto_k(v)
    extra = {
        "n_nonfinite": int(np.sum(np.isneginf(v))),  # NaN or +inf: zero weight, kept in M
        "n_zero_weight": int(np.sum(np.isneginf(v))) - n_nan,
        "ess_fraction": ess_fwd / w.size,
        "kish_ess": kish_ess(v),
        "low_ess": int(ess_fwd < MIN_TRUSTED_ESS),
        "pareto_k": k,
        "high_k": int(k > MAX_TRUSTED_PARETO_K),
    }
    if n_boot > 0:
        if rng is None:
            raise ValueError("reverse_importance_log_z: n_boot > 0 needs an rng")
        extra["log_z_stderr_bootstrap"] = bootstrap_log_z_stderr(v, rng=rng, n_boot=n_boot)
    log_z = -float(logsumexp(v) - math.log(v.size)) if np.any(np.isfinite(v)) else math.inf
    return Estimate(
        method, log_z, importance_stderr(v), "estimate", int(w.size), ess_fwd, **_fields(extra)
    )
