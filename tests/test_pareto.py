"""The Pareto k̂ diagnostic of importance weights, against exact tail shapes.

Tolerances: the generalised-Pareto shape estimate has asymptotic standard deviation
(1 + k)/√n on n exceedances (the Fisher information of the shape); the checks allow 4 of them
(the weak prior of the fit adds a bias of 10 (0.5 − k)/(n + 10), included).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import genpareto

import boltzgen.estimators as est


@pytest.mark.parametrize("k", [0.2, 0.5, 1.0])
def test_gpd_fit_recovers_the_shape(k):
    n = 2000
    x = genpareto.rvs(k, scale=1.7, size=n, random_state=np.random.default_rng(11))
    k_hat, sigma = est.gpd_fit(x)
    bias = 10 * (0.5 - k) / (n + 10)
    assert abs(k_hat - k - bias) < 4 * (1 + k) / math.sqrt(n)
    assert abs(sigma / 1.7 - 1) < 0.2


@pytest.mark.parametrize("var_q, k", [(0.7, 0.3), (0.3, 0.7)])
def test_pareto_k_of_gaussian_importance_weights(var_q, k):
    # p = N(0, 1), q = N(0, var_q < 1): w = p/q ∝ exp(x²(1/var_q − 1)/2) has the tail
    # P(w > t) ~ t^(−1/k) with k = 1 − var_q.
    s = 100_000
    x = np.random.default_rng(5).normal(0.0, math.sqrt(var_q), s)
    log_w = -0.5 * x**2 + 0.5 * x**2 / var_q
    m = int(3 * math.sqrt(s))
    assert abs(est.pareto_k(log_w) - k) < 4 * (1 + k) / math.sqrt(m)


def test_high_k_flags_the_importance_estimate_and_best_avoids_it():
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, math.sqrt(0.15), 50_000)  # k = 0.85
    bad = est.importance_log_z(-0.5 * x**2 + 0.5 * x**2 / 0.15)
    assert "high_k" in bad.flags and not bad.trusted and bad.extra["pareto_k"] > 0.5
    assert "Pareto k̂" in bad.table_notes()[0]
    x = rng.normal(0.0, 1.5, 50_000)  # q wider than p: bounded weights, k < 0
    good = est.importance_log_z(-0.5 * x**2 + 0.5 * x**2 / 2.25)
    assert "high_k" not in good.flags and good.extra["pareto_k"] < 0.3
    # equal weights: nothing to fit
    assert math.isnan(est.pareto_k(np.zeros(1000)))
    assert est.pareto_k(np.full(10, -np.inf)) == math.inf
