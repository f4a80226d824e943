"""Tests of MCMC refinement of a sampler q towards p: AIS, SMC and neural MCMC (boltzgen.mcmc).

Closed-form Gaussian q's and targets with exact ln Z; statistical checks use 4σ tolerances from
the reported standard errors with fixed seeds.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_allclose, within_sigmas
from counting import Counter
from stat_theory import binomial_band, delta_method_coverage, sample_moments

from boltzgen.estimators import importance_stderr
from boltzgen.mcmc import RefineResult, neural_mcmc, refine_anneal
from boltzgen.mcmc.kernels import NMCMCState, nmcmc_init, nmcmc_step

D = 3
LOG_Z_STD = 0.5 * D * math.log(2 * math.pi)  # ln ∫ exp(-|x|²/2) dx in d = 3


def gaussian_q(mu, sigma, dim=D):
    """A normalised isotropic Gaussian q: (sample_q, log_q)."""

    def log_q(x):
        return (
            -0.5 * jnp.sum((x - mu) ** 2) / sigma**2
            - dim * math.log(sigma)
            - 0.5 * dim * math.log(2 * math.pi)
        )

    def sample_q(key, n):
        x = mu + sigma * jax.random.normal(key, (n, dim))
        return x, jax.vmap(log_q)(x)

    return sample_q, log_q


def std_normal_logp(x):
    return -0.5 * jnp.sum(x * x)


def counted_gaussian_q(mu, sigma, dim=D):
    """:func:`gaussian_q` with every evaluation of log q counted (sample_q's included)."""
    _, plain = gaussian_q(mu, sigma, dim)
    log_q = Counter(plain, 1)

    def sample_q(key, n):
        x = mu + sigma * jax.random.normal(key, (n, dim))
        return x, jax.vmap(log_q)(x)

    return sample_q, log_q, plain


# Two wells: p(x) ∝ a N(x; -m, s² I) + b N(x; +m, s² I) in d = 2, unnormalised with
# Z = (a + b) exactly (mixture of normalised densities).
WELL_A, WELL_B, WELL_M, WELL_S = 0.3, 0.7, 2.0, 0.5


def two_well_logp(x):
    def log_n(c):
        return (
            -0.5 * jnp.sum((x - c) ** 2) / WELL_S**2 - 2 * math.log(WELL_S) - math.log(2 * math.pi)
        )

    c = jnp.asarray([WELL_M, 0.0], x.dtype)
    return jnp.logaddexp(math.log(WELL_A) + log_n(-c), math.log(WELL_B) + log_n(c))


# --- AIS --------------------------------------------------------------------------------------


def test_perfect_q_gives_zero_variance_weights():
    # q = p up to the constant c: every increment is dλ·c, so w = c for every chain.
    sample_q, log_q, plain_log_q = counted_gaussian_q(0.0, 1.0)
    c = 1.7
    log_p = Counter(lambda x: plain_log_q(x) + c, 1)
    r = refine_anneal(
        jax.random.key(0),
        sample_q=sample_q,
        log_q=log_q,
        log_density=log_p,
        n_chains=64,
        n_steps=10,
        n_leapfrog=3,
        pilot_chains=0,
    )
    assert isinstance(r, RefineResult) and r.method == "ais"
    assert r.log_weights.dtype == np.float64 and r.positions.shape == (64, D)
    assert_allclose(r.log_weights, c, atol=1e-12)
    assert abs(r.log_z - c) < 1e-12 and r.log_z_stderr < 1e-12
    assert r.ess_before == pytest.approx(64.0) and r.ess_after == pytest.approx(64.0)
    assert r.diagnostics["log_q_mismatch"] == 0.0
    # The reported cost is the evaluations the functions really received (the post-move log q
    # is recovered from the move's log π_λ, so log q runs less often than log p).
    assert r.n_energy_evals == log_p.n > 0
    assert r.n_log_q_evals == log_q.n > 0
    assert r.wall_time > 0 and r.compile_time > 0


@pytest.mark.parametrize("kernel", ["hmc", "mala"])
def test_ais_mismatched_gaussian(kernel):
    sample_q, log_q = gaussian_q(1.5, 0.6)
    log_p = Counter(std_normal_logp, 1)
    r = refine_anneal(
        jax.random.key(1),
        sample_q=sample_q,
        log_q=log_q,
        log_density=log_p,
        n_chains=1024,
        n_steps=30,
        kernel=kernel,
    )
    assert r.diagnostics["n_traces"] == 1
    assert r.ess_after > 100 and r.ess_after > 2 * r.ess_before
    within_sigmas(r.log_z, LOG_Z_STD, r.log_z_stderr)
    acc = r.diagnostics["acceptance"]
    assert acc.shape == (30,) and 0.3 < acc[5:].mean() < 0.95
    # the pilot run's evaluations included
    assert r.n_energy_evals == log_p.n > 0
    # weighted samples have the target's mean
    wn = np.exp(r.log_weights - r.log_weights.max())
    wn /= wn.sum()
    for i in range(D):
        m = float(np.sum(wn * r.positions[:, i]))
        se = math.sqrt(float(np.sum(wn**2 * (r.positions[:, i] - m) ** 2)))
        within_sigmas(m, 0.0, se)


@pytest.mark.parametrize("kernel", ["hmc", "rwm"])
def test_reused_move_density_matches_fresh_evaluation(kernel):
    # log q after a move recovered as (log π_λ - λ log p)/(1 - λ) gives the same chains and
    # weights as re-evaluating log q, up to round-off.
    sample_q, log_q, _ = counted_gaussian_q(1.0, 0.7)
    kw = dict(
        sample_q=sample_q,
        log_q=log_q,
        log_density=std_normal_logp,
        n_chains=64,
        n_steps=12,
        kernel=kernel,
        n_leapfrog=3,
        step_size=np.full(12, 0.4),
    )
    a = refine_anneal(jax.random.key(11), reuse_move_density=True, **kw)
    n_a = log_q.n
    log_q.reset()
    b = refine_anneal(jax.random.key(11), reuse_move_density=False, **kw)
    assert_allclose(a.log_weights, b.log_weights, rtol=0, atol=1e-10)
    assert_allclose(a.positions, b.positions, rtol=0, atol=1e-10)
    # Counted: the reuse saves one log q per chain and step (64 × 12) and the cost says so.
    assert (a.n_log_q_evals, b.n_log_q_evals) == (n_a, log_q.n)
    assert log_q.n - n_a == 64 * 12


def _assert_coverage(log_z, stderr, m, log_w, n_groups):
    """Fraction of |ln Ẑ − ln 2π| ≤ stderr against the delta-method coverage of m weights.

    The target comes from the weights' sample moments (tests/stat_theory.py), the band is
    binomial over ``n_groups`` intervals. Returns (coverage, target).
    """
    coverage = np.mean(np.abs(log_z - math.log(2 * math.pi)) <= stderr)
    target = delta_method_coverage(m, *sample_moments(np.exp(log_w - log_w.max())))
    band = binomial_band(target, n_groups)
    assert abs(coverage - target) <= band, (coverage, target, band)
    return coverage, target


def _check_ais_coverage(seed):
    # 1000 independent groups of 128 chains in ONE run (fixed pilot step sizes, so groups are
    # independent); each group's ln Ẑ ± stderr. The 1σ delta-method interval covers the exact
    # value with probability 2Φ(1) − 1 − O(1/m), the O(1/m) term from the weights' moments
    # (stat_theory.py; plug-in moments of all 128 000 weights); band: 4 binomial σ.
    sample_q, log_q = gaussian_q(0.4, 1.3, dim=2)
    n_groups, m = 1000, 128
    r = refine_anneal(
        jax.random.key(seed),
        sample_q=sample_q,
        log_q=log_q,
        log_density=std_normal_logp,
        n_chains=n_groups * m,
        n_steps=5,
        n_leapfrog=2,
        schedule="linear",
        pilot_chains=256,
    )
    w = r.log_weights.reshape(n_groups, m)
    log_z = np.logaddexp.reduce(w, axis=1) - math.log(m)
    stderr = np.array([importance_stderr(row) for row in w])
    wn = np.exp(w - w.max(axis=1, keepdims=True))
    wn /= wn.sum(axis=1, keepdims=True)
    assert np.min(1.0 / np.sum(wn**2, axis=1)) > 60  # delta method in its regime
    return _assert_coverage(log_z, stderr, m, w, n_groups)


def test_ais_coverage_of_delta_method_interval():
    _check_ais_coverage(2)


# --- SMC --------------------------------------------------------------------------------------


def test_smc_resamples_and_estimates_two_wells():
    sample_q, log_q = gaussian_q(0.0, 2.5, dim=2)
    r = refine_anneal(
        jax.random.key(3),
        sample_q=sample_q,
        log_q=log_q,
        log_density=two_well_logp,
        n_chains=2048,
        n_steps=40,
        resample_threshold=0.5,
        n_replicas=16,
    )
    d = r.diagnostics
    assert r.method == "smc" and d["n_replicas"] == 16
    assert d["n_resample"] > 0 and d["n_resampled"].sum() == d["n_resample"]
    assert d["n_traces"] == 1  # 20 chunks, one compilation
    assert d["log_z_replicas"].shape == (16,)
    within_sigmas(r.log_z, math.log(WELL_A + WELL_B), r.log_z_stderr)
    assert r.ess_after > r.ess_before
    # mass in the right-hand well ≈ b/(a+b)
    wn = np.exp(r.log_weights - r.log_weights.max())
    wn /= wn.sum()
    frac = float(np.sum(wn * (r.positions[:, 0] > 0)))
    within_sigmas(frac, WELL_B / (WELL_A + WELL_B), math.sqrt(0.21 * np.sum(wn**2)) + 0.01)


def _check_smc_coverage(seed):
    # 500 independent groups of 16 replicas × 32 particles in ONE run (n_replicas = 8000); each
    # group's ln Ẑ = logmeanexp(ln Ẑ_r) and its replica delta-method stderr. With n = 16
    # replicas the O(1/n) coverage term is large: 2Φ(1) − 1 − (2φ(1)/16)(1 + κ/6 + ...) ≈ 0.65
    # for the near-normal Ẑ_r (stat_theory.py, plug-in moments of the 8000 Ẑ_r; the exact value
    # for normal Ẑ_r, P(|t₁₅| ≤ √(15/16)) = 0.652, agrees). Band: 4 binomial σ.
    sample_q, log_q = gaussian_q(0.6, 1.4, dim=2)
    n_groups, n_rep, m = 500, 16, 32
    r = refine_anneal(
        jax.random.key(seed),
        sample_q=sample_q,
        log_q=log_q,
        log_density=std_normal_logp,
        n_chains=n_groups * n_rep * m,
        n_steps=8,
        n_leapfrog=2,
        schedule="linear",
        resample_threshold=0.9,
        n_replicas=n_groups * n_rep,
        pilot_chains=256,
    )
    assert r.diagnostics["n_resample"] > n_groups * n_rep // 2  # most replicas resampled
    lz = r.diagnostics["log_z_replicas"].reshape(n_groups, n_rep)
    log_z = np.logaddexp.reduce(lz, axis=1) - math.log(n_rep)
    stderr = np.array([importance_stderr(row) for row in lz])
    return _assert_coverage(log_z, stderr, n_rep, lz, n_groups)


def test_smc_replica_error_bar_coverage():
    _check_smc_coverage(9)


def test_ais_two_wells_and_input_errors():
    sample_q, log_q = gaussian_q(0.0, 2.5, dim=2)
    kw = dict(sample_q=sample_q, log_q=log_q, log_density=two_well_logp)
    r = refine_anneal(jax.random.key(4), n_chains=1024, n_steps=40, **kw)
    within_sigmas(r.log_z, math.log(WELL_A + WELL_B), r.log_z_stderr)
    assert r.ess_after > r.ess_before and r.diagnostics["n_resample"] == 0
    with pytest.raises(ValueError, match="divide"):
        refine_anneal(jax.random.key(0), n_chains=100, resample_threshold=0.5, n_replicas=16, **kw)
    with pytest.raises(ValueError, match="resample_threshold"):
        refine_anneal(jax.random.key(0), resample_threshold=1.5, **kw)
    with pytest.raises(ValueError, match="kernel"):
        refine_anneal(jax.random.key(0), kernel="nuts", **kw)


# --- neural MCMC ------------------------------------------------------------------------------


def test_nmcmc_perfect_q_accepts_everything():
    sample_q, log_q, _ = counted_gaussian_q(0.0, 1.0)
    log_p = Counter(std_normal_logp, 1)
    r = neural_mcmc(
        jax.random.key(5),
        sample_q=sample_q,
        log_q=log_q,
        log_density=log_p,
        n_chains=64,
        n_steps=40,
        local_kernel=None,
    )
    d = r.diagnostics
    assert r.method == "nmcmc"
    np.testing.assert_array_equal(d["imh_accepted"], 1.0)
    np.testing.assert_array_equal(d["n_accept"], 40)
    assert d["proposal_log_weights"].shape == (40 * 64,)
    assert abs(r.log_z - LOG_Z_STD) < 1e-12
    assert r.n_energy_evals == log_p.n > 0 and r.n_log_q_evals == log_q.n > 0
    assert 0.7 < d["tau_int"] < 1.4  # independent draws: τ_int ≈ 1


def test_nmcmc_mismatched_gaussian():
    sample_q, log_q = gaussian_q(1.0, 2.0)
    m = 512
    r = neural_mcmc(
        jax.random.key(6),
        sample_q=sample_q,
        log_q=log_q,
        log_density=std_normal_logp,
        n_chains=m,
        n_steps=120,
        local_kernel="mala",
    )
    d = r.diagnostics
    assert 0.05 < d["imh_acceptance_mean"] < 0.9
    assert 0.4 < d["local_acceptance_mean"] < 0.8
    # step size frozen after burn-in
    assert np.all(d["step_sizes"][d["n_warmup"] + 1 :] == d["step_sizes"][-1])
    assert d["log_density_trace"].shape == (120, m) and np.isfinite(d["tau_int"])
    x = r.positions
    for i in range(D):
        within_sigmas(x[:, i].mean(), 0.0, math.sqrt(1.0 / m))
        within_sigmas(x[:, i].var(ddof=1), 1.0, math.sqrt(2.0 / (m - 1)))
    within_sigmas(r.log_z, LOG_Z_STD, r.log_z_stderr)
    # the cached log p - log q agrees with a fresh evaluation at the final states
    with jax.enable_x64(True):
        xf = jnp.asarray(x, jnp.float64)
        fresh = np.asarray(jax.vmap(std_normal_logp)(xf) - jax.vmap(log_q)(xf))
    assert_allclose(d["final_log_weights"], fresh, rtol=0, atol=1e-12)


@pytest.mark.parametrize("local_kernel", [None, "hmc"])
def test_nmcmc_state_keeps_dtype_and_shape_under_scan(local_kernel):
    sample_q, log_q = gaussian_q(0.5, 1.5)
    x0, lq0 = sample_q(jax.random.key(0), 8)
    state = nmcmc_init(x0, lq0, log_density=std_normal_logp, step_size=0.3)
    assert isinstance(state, NMCMCState) and state.step.dtype == jnp.int32

    def body(s, k):
        return nmcmc_step(
            k,
            s,
            sample_q=sample_q,
            log_q=log_q,
            log_density=std_normal_logp,
            local_kernel=local_kernel,
            n_leapfrog=2,
            adapt=True,
        )

    new, info = jax.lax.scan(body, state, jax.random.split(jax.random.key(1), 5))
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
    assert int(new.step) == 5 and info.proposal_log_weight.shape == (5, 8)


# --- a real flow --------------------------------------------------------------------------------


def _flow_case(flow, system, beta, **kw):
    def sample_q(key, n):
        return flow.sample_and_log_prob(n, key=key)

    def log_q(x):
        return flow.log_prob(x[None])[0]

    def log_density(x):
        return -beta * system.energy(x)

    return refine_anneal(
        jax.random.key(8), sample_q=sample_q, log_q=log_q, log_density=log_density, **kw
    )


def test_refine_from_untrained_realnvp_coulomb_pair():
    # An untrained RealNVP on the flattened labelled configuration (a normalised density on R⁴,
    # fine for the labelled ln Z; the registry's ordered-domain wrapper is not needed here).
    # MALA and no pilot keep compilation (the cost of this test) to two small programs.
    from boltzgen.flows import RealNVP
    from boltzgen.systems import CoulombGas

    system, beta = CoulombGas(2, 2), 2.0
    flow = RealNVP((2, 2), key=jax.random.key(7), n_layers=2, hidden=8, depth=1)
    r = _flow_case(flow, system, beta, n_chains=512, n_steps=40, kernel="mala", pilot_chains=0)
    assert r.positions.shape == (512, 2, 2) and r.ess_after > r.ess_before > 50
    assert r.diagnostics["log_q_mismatch"] < 1e-3
    within_sigmas(r.log_z, system.exact_log_z(beta), r.log_z_stderr)


@pytest.mark.slow
def test_refine_from_untrained_equivariant_flow_coulomb_pair():
    from boltzgen.flows import make_sampler
    from boltzgen.systems import CoulombGas

    system, beta = CoulombGas(2, 2), 2.0
    flow = make_sampler(
        "equivariant", system, key=jax.random.key(7), n_layers=2, hidden=8, gap=False, rotate=False
    )
    for threshold in (None, 0.7):
        r = _flow_case(flow, system, beta, n_chains=512, n_steps=40, resample_threshold=threshold)
        assert r.ess_after > 100
        within_sigmas(r.log_z, system.exact_log_z(beta), r.log_z_stderr)
