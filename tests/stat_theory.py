"""Theory for the statistical tests: expected coverage of delta-method intervals, binomial bands.

The coverage tests check that ln X̄ ± SE covers ln E[X] as often as theory says. For the
delta-method interval of importance sampling, SE = σ̂ / (√n X̄) with σ̂² = (1/n) Σ (X_i − X̄)²
(:func:`boltzgen.estimators.importance_stderr`), the two-sided coverage of ±1 SE is not exactly
2Φ(1) − 1 at finite n: by the Edgeworth expansion of the studentised statistic
z = √n X̄ ln(X̄/μ) / σ̂ (cumulants κ₁ = k₁₁/√n, κ₂ = 1 + k₂₂/n, κ₃ = k₃₁/√n, κ₄ = k₄₁/n with
k₁₁ = (c − γ)/2, k₂₂ = (12 + 7γ² − 6cγ − 2c²)/4, k₃₁ = 3c − 2γ, k₄₁ = 2(3 + 6γ² − 9cγ + 4c² − κ),
c = σ/μ, γ the skewness and κ the excess kurtosis of X),

    P(|z| ≤ 1) = 2Φ(1) − 1 − (2φ(1)/n) (1 + κ/6 + cγ/3 − 13c²/24) + O(n⁻²).

For c = 0 this is Hall's (1992, §2.6) expansion of the studentised mean (1 + κ/6); the symbolic
derivation is benchmarks/derive_coverage.py. The expansion needs κ/n ≪ 1: with heavy-tailed
weights (κ of order n or larger) the error bar is itself too noisy and the interval under-covers
by far more than this term. Checked against simulation (benchmarks/flakiness.txt: pooled
coverage of 400 000 replicates 0.6797 ± 0.0007 and 0.6787 ± 0.0008 against 0.6788 predicted).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom, norm

NOMINAL_1SIGMA = 2.0 * norm.cdf(1.0) - 1.0  # 0.6827


def standardised_moments(raw_moments) -> tuple[float, float, float]:
    """(c, γ, κ): coefficient of variation, skewness, excess kurtosis from E[X^k], k = 1..4."""
    m1, m2, m3, m4 = (float(m) for m in raw_moments)
    var = m2 - m1 * m1
    c3 = m3 - 3 * m1 * m2 + 2 * m1**3
    c4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1**4
    return math.sqrt(var) / m1, c3 / var**1.5, c4 / var**2 - 3.0


def sample_moments(x) -> tuple[float, float, float]:
    """(c, γ, κ) of a sample (plug-in), for weights whose distribution has no closed form."""
    x = np.asarray(x, np.float64).reshape(-1)
    return standardised_moments([np.mean(x**k) for k in (1, 2, 3, 4)])


def delta_method_coverage(n: int, c: float, skewness: float, excess_kurtosis: float) -> float:
    """Coverage of ln X̄ ± 1 SE (delta method, σ̂ with 1/n) at sample size n, to O(1/n)."""
    g, k = skewness, excess_kurtosis
    return NOMINAL_1SIGMA - 2 * norm.pdf(1.0) / n * (1 + k / 6 + c * g / 3 - 13 * c * c / 24)


def binomial_band(p: float, n_replicates: int, n_sigma: float = 4.0) -> float:
    """Half-width n_sigma · √(p(1 − p)/R) of the band for a covered fraction of R replicates."""
    return n_sigma * math.sqrt(p * (1 - p) / n_replicates)


def coverage_failure_rate(p_true: float, target: float, n_replicates: int, band: float) -> float:
    """P(|K/R − target| > band) for K ~ Binomial(R, p_true): a coverage test's false alarms."""
    lo = math.ceil((target - band) * n_replicates - 1e-9)  # pass iff lo ≤ K ≤ hi
    hi = math.floor((target + band) * n_replicates + 1e-9)
    return float(binom.cdf(lo - 1, n_replicates, p_true) + binom.sf(hi, n_replicates, p_true))


def gaussian_kl(mu_a, s_a, mu_b, s_b, dim: int) -> float:
    """KL(N(μ_a, s_a² I) ‖ N(μ_b, s_b² I)) in ``dim`` dimensions (μ as vectors or scalars)."""
    d2 = float(np.sum((np.asarray(mu_a, float) - np.asarray(mu_b, float)) ** 2))
    return dim * math.log(s_b / s_a) + (dim * s_a**2 + d2) / (2 * s_b**2) - dim / 2
