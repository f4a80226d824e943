"""Zero-centre-of-mass HMC/MALA for particle systems, and the 1-D Wasserstein-2 metrics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_allclose, within_sigmas
from counting import counting_system

from boltzgen.estimators._metrics import (
    distance_w2,
    energy_w2,
    pairwise_distances,
    wasserstein2_1d,
)
from boltzgen.mcmc._particles import (
    hmc_step,
    init_state,
    mcmc_at_budget,
    particle_mcmc,
    trace_ess,
)
from boltzgen.systems._particles import DoubleWellParticles


class PairSprings:
    """u = (k/2) Σ_{i<j} |x_i − x_j|² = (kN/2) Σ_i |x_i − x̄|²: translation invariant.

    On the zero-COM subspace an isotropic Gaussian of precision βkN per orthonormal
    coordinate, so E Σ_i|x_i|² = (N − 1)d/(βkN).
    """

    translation_invariant = True

    def __init__(self, n_particles=5, dim=3, k=1.0):
        self.n_particles, self.dim, self.k = n_particles, dim, k

    @property
    def event_shape(self):
        return (self.n_particles, self.dim)

    def energy(self, x):
        i, j = np.triu_indices(self.n_particles, 1)
        diff = x[i] - x[j]
        return 0.5 * self.k * jnp.sum(diff * diff)


class Trap:
    """u = (k/2) Σ|x_i|², not translation invariant: E Σ|x|² = Nd/(βk)."""

    translation_invariant = False

    def __init__(self, n_particles=3, dim=2, k=2.0):
        self.n_particles, self.dim, self.k = n_particles, dim, k

    @property
    def event_shape(self):
        return (self.n_particles, self.dim)

    def energy(self, x):
        return 0.5 * self.k * jnp.sum(x * x)


def _sq_norm_mean(res):
    s = np.sum(res.samples.astype(np.float64) ** 2, axis=(2, 3))  # (n_kept, n_chains)
    ess = trace_ess(s)
    return s.mean(), s.std() / math.sqrt(ess), ess


@pytest.mark.parametrize("kernel", ["hmc", "mala"])
def test_zero_com_gaussian(kernel):
    system, energy = counting_system(PairSprings(5, 3, k=1.0))
    beta = 2.0
    n, d = system.event_shape
    res = particle_mcmc(
        system,
        beta,
        key=jax.random.key(1),
        n_chains=64,
        n_steps=600,
        n_warmup=200,
        thin=3,
        kernel=kernel,
        n_leapfrog=5 if kernel == "hmc" else None,
    )
    assert res.zero_com
    assert res.samples.shape == (200, 64, n, d)
    # COM exactly zero (to float32 rounding of the re-centring).
    assert np.max(np.abs(res.samples.mean(axis=2))) < 1e-5
    mean, se, ess = _sq_norm_mean(res)
    assert ess > 500
    within_sigmas(mean, (n - 1) * d / (beta * system.k * n), se)
    # E(x) = (kN/2)|x|² on the subspace, consistent with the recorded energies.
    assert_allclose(res.energies.mean(), 0.5 * system.k * n * mean, rtol=1e-4)
    target = 0.65 if kernel == "hmc" else 0.574
    assert abs(res.acceptance - target) < 0.1
    assert res.n_nonfinite == 0
    assert res.n_energy_evals == energy.n > 0  # the evaluations the chains really made
    assert np.isfinite(res.energy_ess) and res.energy_tau >= 0.5
    assert abs(res.energy_rhat - 1.0) < 0.02


def test_plain_hmc_without_com_constraint():
    system, beta = Trap(3, 2, k=2.0), 1.5
    res = particle_mcmc(
        system, beta, key=jax.random.key(2), n_chains=64, n_steps=400, n_warmup=200, thin=2
    )
    assert not res.zero_com
    mean, se, _ = _sq_norm_mean(res)
    within_sigmas(mean, 3 * 2 / (beta * 2.0), se)
    # COM is free here: it fluctuates with variance d/(βkN) per chain.
    assert np.std(res.samples.mean(axis=2)) > 0.1


def test_step_inside_lax_scan_keeps_dtype_and_subspace():
    system = PairSprings(4, 2)

    def potential(x):
        return system.energy(x)

    x0 = jax.random.normal(jax.random.key(3), (4, 2)) + 3.0
    s0 = init_state(x0, potential, zero_com=True)
    assert_allclose(jnp.sum(s0.position, axis=0), np.zeros(2), atol=1e-6)
    assert_allclose(jnp.sum(s0.grad, axis=0), np.zeros(2), atol=1e-5)

    def body(s, k):
        s, info = hmc_step(k, s, potential, jnp.float32(0.3), n_leapfrog=3, zero_com=True)
        return s, info.acceptance_rate

    s1, acc = jax.lax.scan(body, s0, jax.random.split(jax.random.key(4), 50))
    assert s1.position.dtype == s0.position.dtype and s1.potential.dtype == s0.potential.dtype
    assert_allclose(jnp.sum(s1.position, axis=0), np.zeros(2), atol=1e-5)
    assert np.all((np.asarray(acc) >= 0) & (np.asarray(acc) <= 1))


def test_nonfinite_proposals_are_rejected():
    # A potential that is +inf past |x| > 1: chains never leave the ball and never get NaN.
    class Wall(PairSprings):
        def energy(self, x):
            r2 = jnp.sum(x * x)
            return jnp.where(r2 < 1.0, r2, jnp.inf)

    system = Wall(3, 2)
    res = particle_mcmc(
        system,
        1.0,
        key=jax.random.key(5),
        n_chains=16,
        n_steps=100,
        n_warmup=0,
        step_size=0.5,
        init=np.zeros((3, 2)) + 0.01 * np.arange(6).reshape(3, 2),
    )
    assert np.all(np.isfinite(res.samples)) and np.all(np.isfinite(res.energies))
    assert np.all(np.sum(res.samples**2, axis=(2, 3)) < 1.0)
    assert res.n_nonfinite > 0


def test_dw4_at_beta_one():
    system = DoubleWellParticles()
    res = particle_mcmc(
        system, 1.0, key=jax.random.key(6), n_chains=32, n_steps=400, n_warmup=200, thin=4
    )
    assert np.all(np.isfinite(res.samples)) and np.all(np.isfinite(res.energies))
    assert np.max(np.abs(res.samples.mean(axis=2))) < 1e-4
    # Six pair terms, each ≥ min v = −b²/(4c) ≈ −4.44: E ≥ −26.7; typical thermal energies
    # lie well below 0 at β = 1.
    assert res.energies.min() > 6 * (-(4.0**2) / (4 * 0.9))
    assert -26.7 < res.energies.mean() < -10.0
    assert 0.5 < res.acceptance < 0.8
    # A few divergent trajectories (quartic walls overflow float32) are rejected, not kept.
    assert res.n_nonfinite < 0.01 * 32 * 400
    # Pair distances sit near the wells d0 ± 1.49, never collapsed.
    r = pairwise_distances(res.flat_samples)
    assert r.min() > 0.5


def test_mcmc_at_budget_respects_budget():
    system, energy = counting_system(DoubleWellParticles())
    budget = 20_000
    out = mcmc_at_budget(system, 1.0, budget, key=jax.random.key(7), n_samples=16, n_leapfrog=5)
    assert out.samples.shape == (16, 4, 2) and out.energies.shape == (16,)
    assert np.all(np.isfinite(out.energies))
    # The budget is spent (to the last whole HMC move of all chains) and not exceeded, counting
    # the evaluations really made.
    assert out.n_energy_evals == energy.n
    assert budget - 16 * 5 < energy.n <= budget
    assert out.n_warmup + out.n_steps == (budget - 16) // (16 * 5)
    # fewer chains, several thinned samples per chain
    energy.reset()
    out2 = mcmc_at_budget(
        system, 1.0, budget, key=jax.random.key(8), n_samples=16, n_chains=4, n_leapfrog=5
    )
    assert out2.samples.shape == (16, 4, 2)
    assert out2.n_energy_evals == energy.n <= budget
    assert out2.thin * 4 == out2.n_steps and out2.mcmc.samples.shape[:2] == (4, 4)
    with pytest.raises(ValueError, match="too few"):
        mcmc_at_budget(system, 1.0, 100, key=jax.random.key(9), n_samples=32)


# ---------------------------------------------------------------- metrics


def _brute_w2(a, b):
    return math.sqrt(np.mean((np.sort(a) - np.sort(b)) ** 2))


def test_w2_matches_sorted_formula_for_equal_sizes():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=257), rng.standard_t(3, size=257)
    assert_allclose(energy_w2(a, b), _brute_w2(a, b), rtol=1e-12)
    assert energy_w2(a, a) == 0.0
    assert energy_w2(a, rng.permutation(a)) == 0.0
    assert_allclose(energy_w2(a, b), energy_w2(b, a), rtol=1e-12)
    # a shift by c moves every quantile by c
    assert_allclose(energy_w2(a, a + 0.7), 0.7, rtol=1e-12)


def test_w2_unequal_sizes_and_weights():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=30), rng.normal(size=45)
    # Unequal sizes: repeating each sample of a 3× and of b 2× gives 90 vs 90.
    assert_allclose(energy_w2(a, b), _brute_w2(np.repeat(a, 3), np.repeat(b, 2)), rtol=1e-10)
    # Integer weights = duplicated samples.
    counts = rng.integers(0, 4, size=30)
    counts[0] = 1
    assert_allclose(
        energy_w2(a, b, weights_a=counts),
        energy_w2(np.repeat(a, counts), b),
        rtol=1e-10,
    )
    # Scale of the weights does not matter.
    assert_allclose(
        energy_w2(a, b, weights_a=counts), energy_w2(a, b, weights_a=7.5 * counts), rtol=1e-12
    )
    w_b = rng.uniform(size=45)
    assert_allclose(
        wasserstein2_1d(a, b, weights_b=w_b), wasserstein2_1d(b, a, weights_a=w_b), rtol=1e-12
    )
    with pytest.raises(ValueError):
        energy_w2(a, b, weights_a=-np.ones(30))
    with pytest.raises(ValueError):
        energy_w2(np.array([np.nan]), b)


def normal_order_statistics(n, grid=4001, lim=9.0):
    """Means and variances of the order statistics Z_(1) < … < Z_(n) of n standard normals.

    By quadrature of their densities n C(n−1, k−1) Φ^{k−1} (1 − Φ)^{n−k} φ on a fine grid.
    """
    from scipy.special import gammaln, log_ndtr

    x = np.linspace(-lim, lim, grid)
    k = np.arange(1, n + 1)[:, None]
    log_c = math.log(n) + gammaln(n) - gammaln(k) - gammaln(n - k + 1)
    f = np.exp(log_c + (k - 1) * log_ndtr(x) + (n - k) * log_ndtr(-x) - 0.5 * x * x)
    f /= math.sqrt(2 * math.pi)
    dx = x[1] - x[0]
    mean = np.trapezoid(f * x, dx=dx, axis=1)
    return mean, np.trapezoid(f * x * x, dx=dx, axis=1) - mean**2


def expected_w2_squared(n_a, m_a, s_a, n_b, m_b, s_b):
    """E[W2²] between independent samples of N(m_a, s_a²) (size n_a) and N(m_b, s_b²) (n_b).

    W2² = ∫₀¹ (a_(i(u)) − b_(j(u)))² du with i(u) = ⌈n_a u⌉, j(u) = ⌈n_b u⌉ on the pieces between
    the merged breakpoints; each piece contributes its length times s_a² Var Z_(i) +
    s_b² Var Z_(j) + (m_a + s_a E Z_(i) − m_b − s_b E Z_(j))². For n_a = n_b = n this is
    (m_a − m_b)² + (s_a − s_b)² + 2 s_a s_b V̄_n, V̄_n the mean order-statistic variance: the
    exact W2² plus sampling noise.
    """
    mu_a, var_a = normal_order_statistics(n_a)
    mu_b, var_b = normal_order_statistics(n_b)
    cuts = np.union1d(np.arange(1, n_a + 1) / n_a, np.arange(1, n_b + 1) / n_b)
    length = np.diff(np.concatenate([[0.0], cuts]))
    mid = cuts - 0.5 * length
    i, j = np.ceil(mid * n_a).astype(int) - 1, np.ceil(mid * n_b).astype(int) - 1
    term = s_a**2 * var_a[i] + s_b**2 * var_b[j] + (m_a + s_a * mu_a[i] - m_b - s_b * mu_b[j]) ** 2
    return float(np.sum(length * term))


def _check_w2_gaussians(seed, reps=300, n_a=200, n_b=300):
    # The mean of W2² over independent replicate pairs against its exact expectation, within 4
    # standard errors (from the replicates): two samples of ONE Gaussian (W2 is pure sampling
    # noise, ≈ 0.16 here), then a shifted and wider one (W2 → √((μ₁ − μ₂)² + (σ₁ − σ₂)²)).
    rng = np.random.default_rng(seed)
    for (m_a, s_a), (m_b, s_b) in (((0.3, 1.0), (0.3, 1.0)), ((0.3, 1.0), (-0.5, 1.5))):
        vals = np.array(
            [
                energy_w2(rng.normal(m_a, s_a, n_a), rng.normal(m_b, s_b, n_b)) ** 2
                for _ in range(reps)
            ]
        )
        want = expected_w2_squared(n_a, m_a, s_a, n_b, m_b, s_b)
        within_sigmas(vals.mean(), want, vals.std(ddof=1) / math.sqrt(reps))


def test_w2_gaussians():
    _check_w2_gaussians(2)
    # The piecewise expectation reduces to the closed form for equal sizes.
    _, var = normal_order_statistics(200)
    closed = (0.3 + 0.5) ** 2 + (1.0 - 1.5) ** 2 + 2 * 1.0 * 1.5 * var.mean()
    assert_allclose(expected_w2_squared(200, 0.3, 1.0, 200, -0.5, 1.5), closed, rtol=1e-10)


def test_distance_w2():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 4, 3))
    r = pairwise_distances(x)
    assert r.shape == (50, 6)
    assert_allclose(r[7, 1], np.linalg.norm(x[7, 0] - x[7, 2]), rtol=1e-12)
    assert_allclose(pairwise_distances(x[7]), r[7], rtol=1e-12)
    assert distance_w2(x, x) == 0.0
    # Rigid motions and permutations leave distances unchanged.
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    assert distance_w2(x, x[:, ::-1] @ q.T + 5.0) < 1e-12
    # Scaling by s scales every distance: W2 = |s − 1| · sqrt(E r²).
    assert_allclose(distance_w2(x, 2.0 * x), math.sqrt(np.mean(r**2)), rtol=1e-10)
    y = rng.normal(size=(20, 4, 3))
    w = rng.integers(1, 3, size=50)
    assert_allclose(distance_w2(x, y, weights_a=w), distance_w2(np.repeat(x, w, 0), y), rtol=1e-10)


def test_x64_chains_run_in_float64():
    from boltzgen.systems import DoubleWellParticles

    r = particle_mcmc(
        DoubleWellParticles(),
        1.0,
        key=jax.random.key(0),
        n_chains=4,
        n_steps=10,
        n_warmup=5,
        precision="float64",
    )
    assert r.samples.dtype == np.float64 and r.energies.dtype == np.float64
    assert np.all(np.isfinite(r.energies))


def test_w2_ignores_zero_weight_outliers():
    """A zero-weight value, however large, carries no mass (regression: 1053.7 instead of 0)."""
    from boltzgen.estimators import wasserstein2_1d

    a = np.concatenate([np.linspace(0.0, 1.0, 10), [1e11]])
    w = np.concatenate([np.full(10, 0.1), [0.0]])
    assert wasserstein2_1d(a, np.linspace(0.0, 1.0, 10), weights_a=w) < 1e-12
