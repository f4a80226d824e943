import math

import numpy as np
import pytest
from conftest import within_sigmas

from boltzgen import estimators as est


def gaussian_case(rng, n, dim=3, s_q=1.3, s_p=1.0, beta=1.0):
    """q = N(0, s_q² I); target E = |x|²/(2 s_p²) at β. Returns log-weights, exact ln Z, KLs."""
    x = rng.normal(size=(n, dim)) * s_q
    log_q = -0.5 * np.sum(x * x, 1) / s_q**2 - 0.5 * dim * math.log(2 * math.pi * s_q**2)
    u = beta * 0.5 * np.sum(x * x, 1) / s_p**2
    var_p = s_p**2 / beta
    log_z = 0.5 * dim * math.log(2 * math.pi * var_p)
    r = s_q**2 / var_p
    kl_qp = 0.5 * dim * (r - 1 - math.log(r))  # KL(q‖p) between isotropic Gaussians
    kl_pq = 0.5 * dim * (1 / r - 1 + math.log(r))
    return -u - log_q, log_z, kl_qp, kl_pq, var_p


def test_perfect_sampler_gives_zero_variance():
    rng = np.random.default_rng(1)
    log_w, log_z, *_ = gaussian_case(rng, 1000, s_q=1.0, s_p=1.0)
    e = est.importance_log_z(log_w)
    assert abs(e.log_z - log_z) < 1e-12
    assert e.log_z_stderr < 1e-6
    assert abs(e.ess - 1000) < 1e-6
    v = est.variational_bound(log_w)
    assert abs(v.beta_f + log_z) < 1e-12 and v.log_z_stderr < 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("s_q", [0.8, 1.3])
def test_importance_within_errors_of_exact(seed, s_q):
    rng = np.random.default_rng(seed)
    log_w, log_z, *_ = gaussian_case(rng, 20000, s_q=s_q, beta=2.0)
    e = est.importance_log_z(log_w, rng=rng, n_boot=100)
    assert e.ess > 1000
    within_sigmas(e.log_z, log_z, e.log_z_stderr)
    # bootstrap and delta method agree to within their own noise (~10 % at 100 resamples)
    assert 0.6 < e.extra["log_z_stderr_bootstrap"] / e.log_z_stderr < 1.6


def test_variational_bound_equals_beta_f_plus_kl():
    rng = np.random.default_rng(3)
    log_w, log_z, kl_qp, _, _ = gaussian_case(rng, 50000, s_q=1.5)
    v = est.variational_bound(log_w)
    assert v.kind == "upper_bound"
    within_sigmas(v.beta_f, -log_z + kl_qp, v.beta_f_stderr)
    assert v.beta_f > -log_z  # KL = 0.37 is ≫ the stderr 0.005


def test_forward_bound_equals_beta_f_minus_kl():
    rng = np.random.default_rng(4)
    dim, s_q, beta = 3, 1.5, 1.0
    _, log_z, _, kl_pq, var_p = gaussian_case(rng, 10, dim=dim, s_q=s_q, beta=beta)
    xp = rng.normal(size=(50000, dim)) * math.sqrt(var_p)  # exact samples of p
    log_q = -0.5 * np.sum(xp * xp, 1) / s_q**2 - 0.5 * dim * math.log(2 * math.pi * s_q**2)
    u = beta * 0.5 * np.sum(xp * xp, 1)
    f = est.forward_bound(u + log_q)
    assert f.kind == "lower_bound"
    within_sigmas(f.beta_f, -log_z - kl_pq, f.beta_f_stderr)


def test_weighted_forward_bound_uses_weights():
    # Weighted samples of p (from q by importance weights) give the same lower bound.
    rng = np.random.default_rng(5)
    dim, s_q = 2, 1.4
    x = rng.normal(size=(200000, dim)) * s_q
    log_q = -0.5 * np.sum(x * x, 1) / s_q**2 - 0.5 * dim * math.log(2 * math.pi * s_q**2)
    u = 0.5 * np.sum(x * x, 1)
    log_z = 0.5 * dim * math.log(2 * math.pi)
    r = s_q**2
    kl_pq = 0.5 * dim * (1 / r - 1 + math.log(r))
    f = est.forward_bound(u + log_q, -u - log_q)
    assert f.ess < 200000
    within_sigmas(f.beta_f, -log_z - kl_pq, f.beta_f_stderr)


def test_ess_and_stderr_formulas():
    w = np.log(np.array([1.0, 1.0, 2.0, 4.0]))
    wn = np.array([1, 1, 2, 4]) / 8
    assert abs(est.kish_ess(w) - 1 / np.sum(wn**2)) < 1e-12
    assert abs(est.importance_stderr(w) - math.sqrt(np.sum(wn**2) - 0.25)) < 1e-12
    assert abs(est.logmeanexp(w) - math.log(2.0)) < 1e-12


def test_nonfinite_weights_counted_not_dropped():
    w = np.array([0.0, 0.0, np.nan, -np.inf])
    e = est.importance_log_z(w)
    # NaN and -inf are zero weight but still count in M = 4
    assert abs(e.log_z - math.log(2 / 4)) < 1e-12
    assert e.n_nonfinite == 2 and e.extra["n_zero_weight"] == 1
    assert e.n_samples == 4 and "nonfinite" in e.flags  # 2 of 4 > 1 %
    v = est.variational_bound(w)
    # the bound of q restricted to the finite half: mean_F(w) + ln q̂(F) = 0 + ln(1/2)
    assert v.n_nonfinite == 2 and abs(v.log_z - math.log(0.5)) < 1e-12
    with pytest.raises(ValueError, match=r"\+inf"):
        est.importance_log_z(np.array([0.0, np.inf]))
    with pytest.raises(ValueError, match="empty"):
        est.importance_log_z(np.array([]))


def test_low_ess_flag():
    w = np.array([0.0] + [-50.0] * 999)
    assert "low_ess" in est.importance_log_z(w).flags


def test_estimate_attrs_round_trip():
    e = est.Estimate(
        "importance", -3.2, 0.01, "estimate", 100, 55.5, n_nonfinite=3,
        cost=est.Cost(n_energy_evals=10.0, wall_time=1.5), flags={"low_ess"},
        notes=("bootstrap ±0.01",), extra={"ess_fraction": 0.5},
    )  # fmt: skip
    back = est.Estimate.from_attrs(e.to_attrs())
    assert back == e
    assert e.beta_f == 3.2 and not e.trusted and "ESS<100" in e.table_notes()[0]
    # An estimate is immutable, its extra dict included.
    with pytest.raises(TypeError):
        e.extra["x"] = 1
    with pytest.raises(ValueError, match="unknown estimate flag"):
        est.Estimate("x", 0.0, 0.0, flags={"bad"})
    # Schema 3 files stored flags as 0/1 attributes and cost among the extras.
    old = dict(
        method="m",
        log_z=1.0,
        log_z_stderr=0.1,
        kind="estimate",
        n_samples=500,
        ess=2.0,
        low_ess=1,
        n_nonfinite=2,
        n_energy_evals=7.0,
        wall_time=0.5,
        other=3,
    )
    o = est.Estimate.from_attrs(old)
    assert o.flags == {"low_ess"} and o.n_nonfinite == 2 and o.cost.n_energy_evals == 7.0
    assert dict(o.extra) == {"other": 3}
    with pytest.raises(ValueError, match="kind must be one of"):
        est.Estimate("x", 0.0, 0.0, "upper")


def test_weighted_mean():
    rng = np.random.default_rng(6)
    f = rng.normal(size=1000)
    m, s = est.weighted_mean(f)
    assert abs(m - f.mean()) < 1e-12 and abs(s - f.std(ddof=1) / math.sqrt(1000)) < 1e-12
    m2, _ = est.weighted_mean(f, np.zeros(1000))
    assert abs(m2 - f.mean()) < 1e-12


def test_forward_bound_with_q_zero_at_a_p_sample_is_the_trivial_bound():
    """ln q = −∞ at a sample of p makes E_p[u + ln q] = −∞: βF ≥ −∞ is all that is left."""
    f = est.forward_bound(np.array([1.0, 2.0, -np.inf]))
    assert f.kind == "lower_bound" and f.beta_f == -math.inf and f.n_nonfinite == 1
