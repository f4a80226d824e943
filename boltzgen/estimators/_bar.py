"""Bennett acceptance ratio (BAR) between two states from forward and reverse works (float64).

Conventions (docs/estimators.md): reduced energies u_A, u_B; forward works on A-samples
W_F = u_B(x) − u_A(x), reverse works on B-samples W_R = u_A(x) − u_B(x);
Δf = f_B − f_A = −ln(Z_B/Z_A). Every :class:`Estimate` carries ``log_z`` = ln(Z_B/Z_A) = −Δf.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, log_expit, logsumexp

from boltzgen.estimators._estimate import Estimate
from boltzgen.estimators._estimate import fields_from_diagnostics as _fields

#: Below this two-state overlap a BAR error bar is flagged (pymbar's threshold for "poor").
MIN_TRUSTED_OVERLAP = 0.03


def as_works(works, name: str) -> tuple[np.ndarray, int]:
    """Validate a 1-D array of works: float64 copy with NaN → +inf, and the NaN count.

    +inf is a legitimate work (the end-state energy overflowed: that sample has zero weight in
    every exponential average); NaN is counted and treated as +inf; −inf (infinite weight) is
    rejected, as is an empty array. ``name`` is used in the error message.
    """
    w = np.asarray(works, dtype=np.float64).reshape(-1)
    if w.size == 0:
        raise ValueError(f"{name}: need at least one work value, got an empty array")
    if np.any(np.isneginf(w)):
        raise ValueError(
            f"{name}: {int(np.isneginf(w).sum())} work value(s) are −inf (infinite weight: the "
            "start state's energy or log-density is +inf at its own sample)"
        )
    nan = np.isnan(w)
    return np.where(nan, np.inf, w), int(nan.sum())


def _bar_root(wf: np.ndarray, wr: np.ndarray, tol: float) -> float:
    """Solve Bennett's equation for Δf with a bracketed root-finder (Brent), in log space.

    h(Δf) = logsumexp_i ln σ(Δf − M − W_F,i) − logsumexp_j ln σ(M − W_R,j − Δf), σ = expit,
    is strictly increasing in Δf (−∞ at −∞, +∞ at +∞ when both sets hold a finite work), and
    its root is Bennett's Σ_i 1/(1 + e^{M + W_F,i − Δf}) = Σ_j 1/(1 + e^{−M + W_R,j + Δf}).
    Nothing overflows for any finite works.
    """
    m = math.log(wf.size / wr.size)
    fin_f, fin_r = wf[np.isfinite(wf)], wr[np.isfinite(wr)]

    def h(df: float) -> float:
        return float(logsumexp(log_expit(df - m - fin_f)) - logsumexp(log_expit(m - fin_r - df)))

    # A bracket from the works: both ends move outwards until h changes sign (it must).
    pooled = np.concatenate([fin_f, -fin_r])
    lo, hi = float(pooled.min()) - abs(m) - 1.0, float(pooled.max()) + abs(m) + 1.0
    step = hi - lo
    for _ in range(200):
        if h(lo) < 0.0:
            break
        lo -= step
        step *= 2.0
    step = hi - lo
    for _ in range(200):
        if h(hi) > 0.0:
            break
        hi += step
        step *= 2.0
    h_lo, h_hi = h(lo), h(hi)
    if h_lo == 0.0:
        return lo
    if h_hi == 0.0:
        return hi
    if not (h_lo < 0.0 < h_hi):
        raise RuntimeError(f"BAR: could not bracket the root (h({lo}) = {h_lo}, h({hi}) = {h_hi})")
    # Absolute tolerance: the bracket can be astronomically wide (one overlapping-particle sample
    # with W ≈ 1e16), and a tolerance scaled by it would stop Brent far from the root.
    return float(brentq(h, lo, hi, xtol=tol, rtol=4 * np.finfo(float).eps, maxiter=1000))


def _bar_variance(wf: np.ndarray, wr: np.ndarray, delta_f: float) -> tuple[float, float]:
    """Asymptotic variance of Δf (Shirts et al. 2003) and the two-state overlap.

    σ² = (1/N)[⟨σ(a)σ(−a)⟩⁻¹ − N/n_F − N/n_R], a = M + W − Δf over the pooled set
    {W_F} ∪ {−W_R}, N = n_F + n_R, using 1/(2 + 2cosh a) = σ(a)σ(−a). The overlap
    N²/(n_F n_R)·⟨σ(a)σ(−a)⟩ ∈ [0, 1] is MBAR's scalar overlap for two states (1 = identical).
    """
    n_f, n_r = wf.size, wr.size
    n = n_f + n_r
    m = math.log(n_f / n_r)
    a = m + np.concatenate([wf, -wr]) - delta_f  # ±inf where a work is +inf
    mean = float(np.mean(expit(a) * expit(-a)))
    overlap = n * n / (n_f * n_r) * mean
    if mean <= 0.0:
        return math.inf, overlap
    var = (1.0 / mean - n / n_f - n / n_r) / n
    return max(var, 0.0), overlap


def bar_delta_f(work_forward, work_reverse, *, tol: float = 1e-12) -> tuple[float, float]:
    """Bennett acceptance ratio Δf = f_B − f_A and its asymptotic standard error.

    Solves, with M = ln(n_F/n_R),

        Σ_i 1/(1 + e^{M + W_F,i − Δf}) = Σ_j 1/(1 + e^{−M + W_R,j + Δf}),

    by Brent's method on a bracket built from the works (log-space sums: no overflow for
    |W| ~ 1e4 or more), and returns σ = √((1/N)[⟨1/(2 + 2cosh(M + W − Δf))⟩⁻¹ − N/n_F − N/n_R])
    with the average over the pooled set {W_F} ∪ {−W_R} (Shirts, Bair, Hooker, Pande, PRL 91,
    140601 (2003); pymbar's ``uncertainty_method="MBAR"``).

    Args:
        work_forward: W_F = u_B(x) − u_A(x) at samples x of A (+inf allowed, NaN → +inf).
        work_reverse: W_R = u_A(x) − u_B(x) at samples x of B (+inf allowed, NaN → +inf).
        tol: absolute tolerance on Δf (relative when |Δf| > 1).

    Returns:
        (Δf, stderr). Δf = +inf (−inf) when every forward (reverse) work is +inf.
    """
    wf, _ = as_works(work_forward, "work_forward")
    wr, _ = as_works(work_reverse, "work_reverse")
    delta_f, stderr, _ = _bar(wf, wr, tol)
    return delta_f, stderr


def _bar(wf: np.ndarray, wr: np.ndarray, tol: float) -> tuple[float, float, float]:
    """(Δf, stderr, overlap) on validated works."""
    any_f, any_r = bool(np.any(np.isfinite(wf))), bool(np.any(np.isfinite(wr)))
    if not any_f and not any_r:
        return math.nan, math.inf, 0.0
    if not any_f:  # no A-sample has finite weight in B: Z_B/Z_A estimated as 0
        return math.inf, math.inf, 0.0
    if not any_r:
        return -math.inf, math.inf, 0.0
    delta_f = _bar_root(wf, wr, tol)
    var, overlap = _bar_variance(wf, wr, delta_f)
    return delta_f, math.sqrt(var), overlap


def bar(
    work_forward,
    work_reverse,
    *,
    method: str = "bar",
    rng: np.random.Generator | None = None,
    n_boot: int = 0,
    tol: float = 1e-12,
) -> Estimate:
    """Bennett acceptance ratio estimate of ln(Z_B/Z_A) = −Δf from forward and reverse works.

    Δf solves Σ_i 1/(1 + e^{M + W_F,i − Δf}) = Σ_j 1/(1 + e^{−M + W_R,j + Δf}), M = ln(n_F/n_R)
    (see :func:`bar_delta_f`); the minimum-variance estimator that uses both directions. With
    A = the normalised sampler q (u_A = −ln q) and B the target: W_F = −w on q-samples,
    W_R = w on p-samples (w = −u − ln q) and ``log_z`` is ln Z of the target.

    Returns an ``estimate`` with ``log_z`` = −Δf, the asymptotic standard error
    σ² = (1/N)[⟨1/(2 + 2cosh(M + W − Δf))⟩⁻¹ − N/n_F − N/n_R], ``n_samples`` = n_F + n_R and
    ``ess`` = NaN (BAR has no single weight vector; use ``extra["overlap"]``). ``extra``:
    ``n_forward``, ``n_reverse``, ``n_nonfinite_forward``/``n_nonfinite_reverse`` (NaN works,
    treated as +inf), ``n_inf_forward``/``n_inf_reverse`` (all +inf works, NaN included),
    ``overlap`` = N²/(n_F n_R)·⟨σ(a)σ(−a)⟩ ∈ [0, 1] (MBAR's scalar overlap of the two states:
    1 = identical, ≲ 0.03 = poor, trust the error bar less), ``low_overlap`` = 1 when
    overlap < :data:`MIN_TRUSTED_OVERLAP` (the asymptotic error is then not to be trusted), and
    with ``n_boot > 0``
    ``log_z_stderr_bootstrap`` (forward and reverse works resampled separately).

    Args:
        work_forward: W_F = u_B(x) − u_A(x), x ~ A. +inf is a legitimate zero-weight work.
        work_reverse: W_R = u_A(x) − u_B(x), x ~ B.
        method: the estimate's name.
        rng: NumPy generator for the bootstrap.
        n_boot: number of bootstrap resamples (0 = none).
        tol: absolute tolerance on Δf (relative when |Δf| > 1).

    Raises:
        ValueError: an empty work array or a −inf work (the message names the argument).
    """
    wf, nan_f = as_works(work_forward, "work_forward")
    wr, nan_r = as_works(work_reverse, "work_reverse")
    delta_f, stderr, overlap = _bar(wf, wr, tol)
    extra = {
        "n_forward": int(wf.size),
        "n_reverse": int(wr.size),
        "n_nonfinite_forward": int(np.isinf(wf).sum()),  # NaN or +inf (zero weight)
        "n_nonfinite_reverse": int(np.isinf(wr).sum()),
        "n_nan_forward": nan_f,
        "n_nan_reverse": nan_r,
        "overlap": overlap,
        "low_overlap": int(not overlap >= MIN_TRUSTED_OVERLAP),
    }
    if n_boot > 0:
        if rng is None:
            raise ValueError("bar: n_boot > 0 needs an rng (np.random.default_rng(seed))")
        vals = np.empty(n_boot)
        for b in range(n_boot):
            bf = wf[rng.integers(0, wf.size, wf.size)]
            br = wr[rng.integers(0, wr.size, wr.size)]
            vals[b] = _bar(bf, br, tol)[0]
        extra["log_z_stderr_bootstrap"] = float(np.std(vals, ddof=1)) if n_boot > 1 else math.nan
    return Estimate(
        method, -delta_f, stderr, "estimate", int(wf.size + wr.size), math.nan, **_fields(extra)
    )
