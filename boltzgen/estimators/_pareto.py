"""Pareto-smoothed importance sampling diagnostic: the tail shape k̂ of the importance weights.

Importance sampling with weights w_i = p(x_i)/q(x_i) has a finite variance only if the weights'
tail is light enough. Fitting a generalised Pareto distribution (GPD) to the largest weights
estimates the tail shape k: the weights have finite moments of order < 1/k. With k̂ > 0.5 the
variance is infinite (the central limit theorem, and with it every delta-method error bar, no
longer applies); with k̂ > 0.7 the estimate itself is unreliable at any practical sample size
(Vehtari, Simpson, Gelman, Yao & Gabry, "Pareto smoothed importance sampling", 2015/2024). The
Kish ESS cannot see this: it is computed from the same heavy-tailed weights.

The fit is the profile-likelihood / empirical-Bayes estimate of Zhang & Stephens (2009) on the
M = min(S/5, 3√S) largest weights, with the weakly informative prior of Vehtari et al. that
shrinks k̂ towards 0.5 by 10 pseudo-observations (documented in docs/estimators.md).
"""

from __future__ import annotations

import math

import numpy as np

#: Above this k̂ an importance-type estimate is flagged ``high_k``: the weights' variance is
#: infinite, so no delta-method or bootstrap error bar is valid (above 0.7 the estimate itself
#: is unreliable at practical sample sizes).
MAX_TRUSTED_PARETO_K = 0.5


def gpd_fit(exceedances) -> tuple[float, float]:
    """Shape k and scale σ of a generalised Pareto fit to positive exceedances (Zhang–Stephens).

    F(x) = 1 − (1 + k x/σ)^(−1/k). The estimate is a posterior mean over a grid of
    θ = −k/σ values weighted by their profile likelihood; then k is shrunk towards 0.5 with the
    weight of 10 observations (the prior of Vehtari et al.).

    Args:
        exceedances: x_i > 0, at least 5 of them.

    Returns:
        ``(k, sigma)``.
    """
    x = np.sort(np.asarray(exceedances, dtype=np.float64).reshape(-1))
    n = x.size
    if n < 5:
        raise ValueError(f"gpd_fit needs at least 5 exceedances, got {n}")
    if not np.all(np.isfinite(x)) or x[0] < 0:
        raise ValueError("gpd_fit: exceedances must be finite and >= 0")
    m = 30 + int(math.sqrt(n))
    quartile = x[max(int(n / 4 + 0.5) - 1, 0)]
    if quartile <= 0:
        quartile = np.min(x[x > 0]) if np.any(x > 0) else 1.0
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))) / (3.0 * quartile)
    # For each θ (= −k/σ) the maximum-likelihood shape is k(θ) = mean ln(1 − θ x), and the
    # profile log-likelihood n [ln(−θ/k(θ)) − k(θ) − 1].
    k_theta = np.mean(np.log1p(-theta[:, None] * x[None, :]), axis=1)
    log_lik = n * (np.log(-theta / k_theta) - k_theta - 1.0)
    w = np.exp(log_lik - np.max(log_lik))
    w /= np.sum(w)
    theta_hat = float(np.sum(w * theta))
    k = float(np.mean(np.log1p(-theta_hat * x)))
    sigma = -k / theta_hat if theta_hat != 0 else float(np.mean(x))
    k = (n * k + 10 * 0.5) / (n + 10)
    return k, sigma


def pareto_k(log_w) -> float:
    """Pareto k̂ of the importance weights e^{w} (NaN when there are too few to fit).

    The tail is the M = min(S/5, 3√S) largest of the S finite weights, the threshold the next
    one; weights are shifted by their maximum (k̂ does not depend on the scale). Returns NaN
    when fewer than 5 tail weights exceed the threshold (S too small or all weights equal),
    and +inf when no weight is finite.

    Args:
        log_w: log importance weights (NaN / −inf are zero weights and are left out).
    """
    w = np.asarray(log_w, dtype=np.float64).reshape(-1)
    w = w[np.isfinite(w)]
    s = w.size
    if s == 0:
        return math.inf
    m = int(min(0.2 * s, 3.0 * math.sqrt(s)))
    if m < 5:
        return math.nan
    w = np.sort(w)
    tail = w[-m:]
    cut = w[-m - 1]
    exc = np.exp(tail - tail[-1]) - np.exp(cut - tail[-1])
    exc = exc[exc > 0]
    if exc.size < 5:
        return math.nan
    return gpd_fit(exc)[0]
