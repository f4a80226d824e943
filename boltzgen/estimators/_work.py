"""Two-state work estimators: Jarzynski (both directions), second-law bounds, and BAR together.

Conventions as in :mod:`boltzgen.estimators._bar`: W_F = u_B − u_A on A-samples,
W_R = u_A − u_B on B-samples, Δf = f_B − f_A, and every ``log_z`` is ln(Z_B/Z_A) = −Δf. The works
may be equilibrium perturbation works or nonequilibrium path works (AIS, escorted/controlled
paths): the same identities ⟨e^{−W_F}⟩_A = e^{−Δf} = 1/⟨e^{−W_R}⟩_B hold.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from boltzgen.estimators._bar import as_works, bar
from boltzgen.estimators._estimate import Estimate
from boltzgen.estimators._estimate import fields_from_diagnostics as _fields
from boltzgen.estimators._importance import (
    MIN_TRUSTED_ESS,
    importance_stderr,
    kish_ess,
    variational_bound,
)


def _exp_average(works: np.ndarray, n_nan: int) -> tuple[float, float, float, dict]:
    """Return ln mean e^{−W}, its delta-method stderr, the Kish ESS of e^{−W}, and extras."""
    v = -works  # log-weights; −inf where a work is +inf (zero weight)
    ess = kish_ess(v)
    log_mean = float(logsumexp(v) - math.log(v.size)) if np.any(np.isfinite(v)) else -math.inf
    extra = {
        "n_nonfinite": int(np.isneginf(v).sum()),  # NaN or +inf works (zero weight)
        "n_zero_weight": int(np.isneginf(v).sum()) - n_nan,
        "ess_fraction": ess / v.size,
        "low_ess": int(ess < MIN_TRUSTED_ESS),
    }
    return log_mean, importance_stderr(v), ess, extra


def jarzynski(work_forward, *, method: str = "jarzynski_forward") -> Estimate:
    """Forward Jarzynski / exponential averaging: ln(Z_B/Z_A) = ln ⟨e^{−W_F}⟩_A.

    ln Ẑ = logmeanexp(−W_F) = logsumexp(−W_F,i) − ln n_F. Consistent; biased low in expectation
    (Jensen), badly so when A rarely visits where B lives. The standard error is the delta
    method √(Σ ṽ² − 1/n) with ṽ_i = e^{−W_F,i}/Σ e^{−W_F} (optimistic for heavy tails), ``ess``
    the Kish ESS (Σ e^{−W_F})²/Σ e^{−2W_F}. With A = q and B = the target, W_F = −w and this is
    :func:`importance_log_z`.

    Args:
        work_forward: W_F = u_B(x) − u_A(x), x ~ A. +inf is a zero weight; NaN counts as +inf
            (``extra["n_nonfinite"]``); −inf raises ValueError.
        method: the estimate's name.
    """
    wf, n_nan = as_works(work_forward, "work_forward")
    log_mean, stderr, ess, extra = _exp_average(wf, n_nan)
    return Estimate(method, log_mean, stderr, "estimate", int(wf.size), ess, **_fields(extra))


def jarzynski_reverse(work_reverse, *, method: str = "jarzynski_reverse") -> Estimate:
    """Reverse Jarzynski: ln(Z_B/Z_A) = −ln ⟨e^{−W_R}⟩_B.

    ln Ẑ = −logmeanexp(−W_R). Consistent; biased high in expectation. Standard error and ESS as
    in :func:`jarzynski`, on the weights e^{−W_R}. With A = q, W_R = w at p-samples and this is
    :func:`reverse_importance_log_z` (whose ``ess`` is the forward ESS instead).

    Args:
        work_reverse: W_R = u_A(x) − u_B(x), x ~ B. +inf is a zero weight; NaN counts as +inf;
            −inf raises ValueError.
        method: the estimate's name.
    """
    wr, n_nan = as_works(work_reverse, "work_reverse")
    log_mean, stderr, ess, extra = _exp_average(wr, n_nan)
    return Estimate(method, -log_mean, stderr, "estimate", int(wr.size), ess, **_fields(extra))


def _lower_bound(works: np.ndarray, method: str) -> Estimate:
    """Lower bound mean(W_R) on ln(Z_B/Z_A); with any non-finite work, the trivial +∞."""
    n_bad = int((~np.isfinite(works)).sum())
    if n_bad:
        # A +inf (or NaN) reverse work makes ⟨W_R⟩ infinite: only the trivial bound is left.
        return Estimate(
            method, math.inf, math.inf, "lower_bound", int(works.size), math.nan, n_nonfinite=n_bad
        )
    stderr = float(np.std(works, ddof=1) / math.sqrt(works.size)) if works.size > 1 else math.inf
    return Estimate(method, float(np.mean(works)), stderr, "lower_bound", int(works.size), math.nan)


def work_bounds(
    work_forward,
    work_reverse,
    *,
    method_upper: str = "work_upper_bound",
    method_lower: str = "work_lower_bound",
) -> tuple[Estimate, Estimate]:
    """Second-law bracket ⟨W_F⟩_A ≥ Δf ≥ −⟨W_R⟩_B, i.e. −⟨W_F⟩ ≤ ln(Z_B/Z_A) ≤ ⟨W_R⟩.

    ``upper``: kind ``upper_bound`` (on Δf), ``log_z`` = −mean(W_F) (a lower bound on
    ln(Z_B/Z_A)), stderr std(W_F)/√n_F. ``lower``: kind ``lower_bound``, ``log_z`` = mean(W_R),
    stderr std(W_R)/√n_R. The gaps are KL divergences (equilibrium works:
    ⟨W_F⟩ − Δf = KL(A‖B), Δf + ⟨W_R⟩ = KL(B‖A)). With A = q these are exactly
    :func:`variational_bound` (W_F = −w at q-samples) and :func:`forward_bound` (W_R = w at
    p-samples). Non-finite works (+inf, or NaN) are counted in ``n_nonfinite``: the upper
    bound is then that of the forward process restricted to its finite-work paths (as in
    :func:`variational_bound`, rigorous), the lower bound the trivial one (ln Z_B/Z_A ≤ +∞).

    Args:
        work_forward: W_F at samples of A.
        work_reverse: W_R at samples of B.
        method_upper: name of the upper bound (on Δf).
        method_lower: name of the lower bound (on Δf).

    Returns:
        (upper, lower) as Estimates.
    """
    wf, _ = as_works(work_forward, "work_forward")
    wr, _ = as_works(work_reverse, "work_reverse")
    upper = variational_bound(-wf, method=method_upper)
    lower = _lower_bound(wr, method_lower)
    return upper, lower


def two_state(
    work_forward,
    work_reverse,
    *,
    rng: np.random.Generator | None = None,
    n_boot: int = 0,
    prefix: str = "",
) -> dict[str, Estimate]:
    """Every two-state estimate from one set of forward and reverse works.

    Returns a dict (key = each Estimate's ``method``) with ``{prefix}jarzynski_forward``
    (logmeanexp(−W_F)), ``{prefix}jarzynski_reverse`` (−logmeanexp(−W_R)), ``{prefix}bar``
    (:func:`bar`, bootstrap with ``n_boot > 0``), ``{prefix}work_upper_bound`` (−mean W_F) and
    ``{prefix}work_lower_bound`` (mean W_R); all ``log_z`` are ln(Z_B/Z_A).

    Args:
        work_forward: W_F = u_B − u_A at samples of A.
        work_reverse: W_R = u_A − u_B at samples of B.
        rng: NumPy generator for BAR's bootstrap.
        n_boot: number of bootstrap resamples for BAR (0 = none).
        prefix: prepended to every key and method name (e.g. ``"feat_"``).
    """
    upper, lower = work_bounds(
        work_forward,
        work_reverse,
        method_upper=f"{prefix}work_upper_bound",
        method_lower=f"{prefix}work_lower_bound",
    )
    out = [
        jarzynski(work_forward, method=f"{prefix}jarzynski_forward"),
        jarzynski_reverse(work_reverse, method=f"{prefix}jarzynski_reverse"),
        bar(work_forward, work_reverse, method=f"{prefix}bar", rng=rng, n_boot=n_boot),
        upper,
        lower,
    ]
    return {e.method: e for e in out}


def crooks_check(
    work_forward, work_reverse, delta_f: float, *, bins: int = 20, min_count: int = 10
):
    """Diagnostic of the Crooks relation ln[P_F(W)/P_R(−W)] = W − Δf (slope 1 in W).

    Histograms W_F and −W_R on common bins spanning the range where both have samples, keeps
    bins with at least ``min_count`` counts in each, and fits y_b = ln(c_F,b/n_F) − ln(c_R,b/n_R)
    = a·W_b + b by weighted least squares (Var y_b ≈ 1/c_F,b + 1/c_R,b, W_b the bin centre).
    For correct works a ≈ 1 and b ≈ −Δf; a slope far from 1 points at wrong works (sign,
    missing log-det or path term) or non-equilibrium start states.

    Args:
        work_forward: W_F = u_B − u_A at samples of A (non-finite values are left out).
        work_reverse: W_R = u_A − u_B at samples of B.
        delta_f: Δf = f_B − f_A to test against (e.g. ``-bar(...).log_z``).
        bins: number of histogram bins over the common range.
        min_count: minimum count per direction for a bin to enter the fit.

    Returns:
        dict with ``slope``, ``slope_stderr``, ``intercept``, ``intercept_stderr``,
        ``chi2_per_dof`` of y_b − (W_b − Δf) with the given Δf (≈ 1 when the relation holds,
        binning errors aside), and ``n_bins`` used (NaNs if fewer than 3 bins qualify).
    """
    wf, _ = as_works(work_forward, "work_forward")
    wr, _ = as_works(work_reverse, "work_reverse")
    a, b = wf[np.isfinite(wf)], -wr[np.isfinite(wr)]
    out = dict.fromkeys(
        ("slope", "slope_stderr", "intercept", "intercept_stderr", "chi2_per_dof"), math.nan
    )
    out["n_bins"] = 0
    if a.size == 0 or b.size == 0:
        return out
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if not hi > lo:
        return out
    edges = np.linspace(lo, hi, bins + 1)
    c_f, _ = np.histogram(a, edges)
    c_r, _ = np.histogram(b, edges)
    keep = (c_f >= min_count) & (c_r >= min_count)
    if keep.sum() < 3:
        return out
    x = 0.5 * (edges[:-1] + edges[1:])[keep]
    y = np.log(c_f[keep] / wf.size) - np.log(c_r[keep] / wr.size)
    var = 1.0 / c_f[keep] + 1.0 / c_r[keep]
    design = np.stack([x, np.ones_like(x)], axis=1)
    wt = 1.0 / var
    cov = np.linalg.inv(design.T @ (wt[:, None] * design))
    coef = cov @ (design.T @ (wt * y))
    resid = y - (x - delta_f)
    out.update(
        slope=float(coef[0]),
        slope_stderr=float(math.sqrt(cov[0, 0])),
        intercept=float(coef[1]),
        intercept_stderr=float(math.sqrt(cov[1, 1])),
        chi2_per_dof=float(np.sum(resid**2 * wt) / keep.sum()),
        n_bins=int(keep.sum()),
    )
    return out
