"""Flow matching, stochastic interpolants and symmetry-aware pairings (data-driven training).

Closed forms used throughout: with x₀ ~ N(0, I), x₁ ~ N(μ, Σ) independent and z ~ N(0, I),
x_t = (1 − t)x₀ + t x₁ + γ_t z is Gaussian, N(tμ, Σ_t) with Σ_t = (1 − t)² I + t²Σ + γ_t² I,
and for any Y jointly Gaussian with x_t, E[Y | x_t = x] = E Y + Cov(Y, x_t) Σ_t⁻¹ (x − tμ).
Hence the marginal velocity b(t, x) = μ + ½ Σ̇_t Σ_t⁻¹ (x − tμ) and the score
s(t, x) = −Σ_t⁻¹ (x − tμ) (flow matching is the case γ ≡ 0).
"""

from __future__ import annotations

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_allclose, within_sigmas

from boltzgen.estimators import importance_log_z
from boltzgen.flows._cnf import CNF
from boltzgen.flows._interpolant import Interpolant
from boltzgen.mcmc._escorted import forward_paths
from boltzgen.train import Trainer
from boltzgen.train._matching import (
    align_particles,
    best_permutations,
    flow_matching_loss,
    kabsch_rotations,
    pair_batch,
)
from boltzgen.train._trainer import train_matching

# The 2-D Gaussian target N(μ, Σ) of the flow-matching tests.
MU2 = np.array([1.0, -0.5])
L2 = np.array([[0.6, 0.0], [0.3, 0.4]])
SIGMA2 = L2 @ L2.T

# The 1-D target N(μ, σ²) of the interpolant tests, and a = gamma_scale.
MU1, SIG1, GAMMA_A = 1.5, 0.5, 1.0


def gaussian_field(t, x, mu, sigma, a=0.0):
    """Exact marginal velocity and score, x of shape (..., d), for x₀ ~ N(0, I), x₁ ~ N(μ, Σ)."""
    d = len(mu)
    eye = np.eye(d)
    cov = (1 - t) ** 2 * eye + t**2 * sigma + a * t * (1 - t) * eye
    dcov = -2 * (1 - t) * eye + 2 * t * sigma + a * (1 - 2 * t) * eye
    r = np.linalg.solve(cov, (x - t * mu).T).T  # Σ_t⁻¹ (x − tμ)
    return mu + 0.5 * r @ dcov.T, -r, cov


def sample_target(n, *, seed):
    rng = np.random.default_rng(seed)
    return MU2 + rng.standard_normal((n, 2)) @ L2.T


@eqx.filter_jit
def _sample_cnf(cnf, key, n):
    return cnf.sample_and_log_prob(n, key=key)


# --------------------------------------------------------------------------------------------
# Flow matching on a 2-D Gaussian
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fm_gaussian():
    """A CNF trained by flow matching (independent pairing) on exact samples of N(μ, Σ)."""
    steps = 1000
    cnf = CNF((2,), key=jax.random.key(0), hidden=32, depth=2, n_steps=8)
    state = train_matching(
        cnf,
        sample_target(20_000, seed=0),
        key=jax.random.key(1),
        trainer=Trainer(steps=steps, batch_size=512, learning_rate=3e-2),
        progress=False,
        max_traces=1,
    )
    return state


def test_flow_matching_importance_log_z(fm_gaussian):
    """IS ln Z of the trained CNF agrees with the exact ln Z; its ESS fraction is high.

    u(x) = ½(x − μ)ᵀΣ⁻¹(x − μ), so ln Z = ½ ln det(2πΣ) exactly. ESS threshold: for
    log-normal weights of variance s² the Kish ESS fraction is e^{−s²}; requiring ≥ 0.8 means ln q
    is within ≈ 0.5 nats (RMS) of ln p. The untrained CNF (the base N(0, I)) has the exact ESS
    fraction 1/E_q[(p/q)²] = det Σ · det(2Σ⁻¹ − I)^{1/2} · exp(−½bᵀA⁻¹b + μᵀΣ⁻¹μ)
    (A = 2Σ⁻¹ − I, b = 2Σ⁻¹μ), far below it.
    """
    state = fm_gaussian
    cnf = state.model
    assert float(cnf.log_scale) == 0.0  # the base scale is frozen during flow matching
    assert state.history["n_nonfinite_grad"][-1] == 0
    x, log_q = _sample_cnf(cnf, jax.random.key(2), 4096)
    x = np.asarray(x, np.float64)
    sinv = np.linalg.inv(SIGMA2)
    dx = x - MU2
    u = 0.5 * np.einsum("ni,ij,nj->n", dx, sinv, dx)
    est = importance_log_z(-u - np.asarray(log_q, np.float64))
    exact = 0.5 * math.log(np.linalg.det(2 * np.pi * SIGMA2))
    within_sigmas(est.log_z, exact, est.log_z_stderr)

    a = 2 * sinv - np.eye(2)
    b = 2 * sinv @ MU2
    second = np.exp(0.5 * b @ np.linalg.solve(a, b) - MU2 @ sinv @ MU2)
    second /= np.linalg.det(SIGMA2) * math.sqrt(np.linalg.det(a))
    base_ess = 1.0 / second
    assert base_ess < 0.3, base_ess
    assert est.extra["ess_fraction"] >= 0.8, (est.extra["ess_fraction"], base_ess)


def n_parameters(module) -> int:
    """Trainable (inexact) array entries of ``module``."""
    return sum(int(np.size(a)) for a in jax.tree.leaves(eqx.filter(module, eqx.is_inexact_array)))


T_GRID = (np.arange(32) + 0.5) / 32  # midpoints: the t-average of the uniform training times


def integrated_error(fn, exact_fn, sample_x, *, n_x=256, seed):
    """∫₀¹ E_{ρ_t}|f̂(t, x) − f(t, x)|² dt on :data:`T_GRID` × n_x exact samples of ρ_t.

    Returns (estimate, its Monte Carlo standard error over the n_x · 32 points).
    """
    rng = np.random.default_rng(seed)
    t = np.repeat(T_GRID, n_x)
    x = np.concatenate([sample_x(tk, n_x, rng) for tk in T_GRID])
    got = np.asarray(_batched(fn, jnp.asarray(t, jnp.float32), jnp.asarray(x, jnp.float32)))
    sq = np.sum((got - exact_fn(t, x)) ** 2, axis=1).reshape(len(T_GRID), n_x)
    # The t-grid is fixed: the Monte Carlo error is that of the x-averages, √(Σ_t var_t/n_x)/32.
    se = math.sqrt(np.sum(sq.var(axis=1, ddof=1) / n_x)) / len(T_GRID)
    return float(sq.mean()), se


@eqx.filter_jit
def _batched(fn, t, x):
    return jax.vmap(fn)(t, x)


def _fm_sample_x(t, n, rng):
    _, _, cov = gaussian_field(t, np.zeros((1, 2)), MU2, SIGMA2)
    return t * MU2 + rng.standard_normal((n, 2)) @ np.linalg.cholesky(cov).T


def _fm_exact(t, x):
    return np.concatenate(
        [gaussian_field(tk, x[t == tk], MU2, SIGMA2)[0] for tk in np.unique(t)], axis=0
    )


def fm_conditional_variance(t):
    """tr Cov(x₁ − x₀ | x_t), averaged over x_t ~ ρ_t: E|x₁ − x₀|² − E|v*(t, x_t)|².

    E|x₁ − x₀|² = |μ|² + tr Σ + d; v* = μ + A_t (x − tμ) with A_t = ½ Σ̇_t Σ_t⁻¹, so
    E|v*|² = |μ|² + tr(A_t Σ_t A_tᵀ).
    """
    _, _, cov = gaussian_field(t, np.zeros((1, 2)), MU2, SIGMA2)
    dcov = -2 * (1 - t) * np.eye(2) + 2 * t * SIGMA2
    a = 0.5 * dcov @ np.linalg.inv(cov)
    return float(np.trace(SIGMA2) + 2 - np.trace(a @ cov @ a.T))


N_FM_DATA = 20_000  # training samples of the target


def test_flow_matching_field_matches_closed_form(fm_gaussian):
    """The trained field against the exact marginal velocity, integrated over t and x ~ ρ_t.

    Tolerance from regression theory: least squares with p parameters on N samples of a target
    with conditional variance σ² has expected excess risk p σ²/N (correctly specified model).
    The field has p = 1250 parameters and sees N = 20 000 samples of the target, the regression
    target x₁ − x₀ has conditional variance σ²(t) (closed form, mean ≈ 1.64), so an efficient
    fit reaches ∫ E|v̂ − v*|² dt ≈ p σ̄²/N ≈ 0.10: the trained field must be at least that close
    (up to 4 standard errors of the Monte Carlo integral). Fresh x0 per draw make the data
    budget larger than N, so this is the conservative (looser) end of the rate.
    """
    field = fm_gaussian.model.field
    err, se = integrated_error(field, _fm_exact, _fm_sample_x, seed=3)
    rate = n_parameters(field) * np.mean([fm_conditional_variance(t) for t in T_GRID]) / N_FM_DATA
    assert err <= rate + 4 * se, (err, se, rate)


class _ExactField(eqx.Module):
    """The exact marginal velocity of N(0, I) → N(μ, Σ), plus a constant shift δ."""

    shift: jax.Array

    def __call__(self, t, x):
        eye = jnp.eye(2)
        mu, sigma = jnp.asarray(MU2, x.dtype), jnp.asarray(SIGMA2, x.dtype)
        cov = (1 - t) ** 2 * eye + t**2 * sigma
        dcov = -2 * (1 - t) * eye + 2 * t * sigma
        # Explicit 2×2 inverse (adjugate / determinant): cheaper than a batched solve.
        adj = jnp.array([[cov[1, 1], -cov[0, 1]], [-cov[1, 0], cov[0, 0]]])
        r = adj @ (x - t * mu) / (cov[0, 0] * cov[1, 1] - cov[0, 1] * cov[1, 0])
        return mu + 0.5 * dcov @ r + self.shift


def test_flow_matching_loss_minimised_by_marginal_field():
    """L(v* + δ) − L(v*) = E|δ|² exactly (the cross term has mean zero): check it on a sample.

    Per-draw differences d_i = |δ|² + 2δ·(v* − u_i), u_i = x₁ − x₀: the loss difference must
    equal their mean (up to float32 rounding), that mean must equal |δ|² within 4 standard
    errors, and be positive by more than 4 standard errors.
    """
    n = 100_000
    rng = np.random.default_rng(4)
    x0 = jnp.asarray(rng.standard_normal((n, 2)), jnp.float32)
    x1 = jnp.asarray(sample_target(n, seed=5), jnp.float32)
    t = jnp.asarray(rng.uniform(size=n), jnp.float32)
    cnf = CNF((2,), key=jax.random.key(0), hidden=4, depth=1)
    delta = np.array([0.05, -0.03], np.float32)

    def loss(shift):
        c = eqx.tree_at(lambda m: m.field, cnf, _ExactField(jnp.asarray(shift)))
        return float(eqx.filter_jit(flow_matching_loss)(c, x0, x1, t))

    diff = loss(delta) - loss(np.zeros(2, np.float32))
    xt = (1 - t)[:, None] * x0 + t[:, None] * x1
    v = np.asarray(jax.vmap(_ExactField(jnp.zeros(2)))(t, xt), np.float64)
    d = np.sum(delta.astype(np.float64) ** 2) + 2 * (v - np.asarray(x1 - x0, np.float64)) @ delta
    se = np.std(d, ddof=1) / math.sqrt(n)
    assert abs(diff - np.mean(d)) < 0.01 * se
    within_sigmas(diff, float(np.sum(delta.astype(np.float64) ** 2)), se)
    assert diff > 4 * se


# --------------------------------------------------------------------------------------------
# Pairings
# --------------------------------------------------------------------------------------------


def _pair_distance_multisets(x):
    """Sorted inter-particle distances of each configuration (invariant under g), (M, N(N−1)/2)."""
    n = x.shape[1]
    i, j = np.triu_indices(n, 1)
    return np.sort(np.linalg.norm(x[:, i] - x[:, j], axis=-1), axis=1)


def test_ot_pairing_reduces_transport_cost():
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((128, 2))
    x1 = sample_target(128, seed=1)
    paired = pair_batch(x0, x1, pairing="ot")
    assert_allclose(np.sort(paired, axis=0), np.sort(x1, axis=0))  # a permutation of x1
    cost_ind = np.mean(np.sum((x0 - x1) ** 2, axis=1))
    cost_ot = np.mean(np.sum((x0 - paired) ** 2, axis=1))
    assert cost_ot < 0.8 * cost_ind, (cost_ot, cost_ind)


@pytest.mark.parametrize("n", [4, 7])  # brute force over N! and the Hungarian algorithm
def test_best_permutations_optimal(n):
    rng = np.random.default_rng(n)
    x0 = rng.standard_normal((5, n, 2))
    x1 = rng.standard_normal((5, n, 2))
    perm = best_permutations(x0, x1)
    for m in range(5):
        assert sorted(perm[m]) == list(range(n))
        cost = np.sum((x0[m] - x1[m][perm[m]]) ** 2)
        best = min(np.sum((x0[m] - x1[m][list(p)]) ** 2) for p in itertools.permutations(range(n)))
        assert_allclose(cost, best, rtol=1e-12)


def test_kabsch_proper_and_optimal():
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((50, 5, 2))
    # Partners: rotated copies (exact recovery), mirror images (the optimal orthogonal map is
    # a reflection: Kabsch must still return det = +1), and unrelated configurations.
    ang = rng.uniform(0, 2 * np.pi, 50)
    rot = np.stack(
        [np.stack([np.cos(ang), -np.sin(ang)], -1), np.stack([np.sin(ang), np.cos(ang)], -1)], 1
    )
    x1 = np.concatenate([np.einsum("mij,mnj->mni", rot, x0)[:20], x0[20:35] * [1, -1]])
    x1 = np.concatenate([x1, rng.standard_normal((15, 5, 2))])
    r = kabsch_rotations(x0, x1)
    assert_allclose(np.linalg.det(r), np.ones(50), rtol=1e-12)
    assert_allclose(r @ np.swapaxes(r, 1, 2), np.broadcast_to(np.eye(2), (50, 2, 2)), atol=1e-12)
    y = x1 @ np.swapaxes(r, 1, 2)
    assert_allclose(y[:20], x0[:20], atol=1e-10)
    cost = np.sum((x0 - y) ** 2, axis=(1, 2))
    grid = np.linspace(0, 2 * np.pi, 721)
    c, s = np.cos(grid), np.sin(grid)
    rots = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], 1)  # (G, 2, 2)
    brute = np.sum((x0[:, None] - np.einsum("gij,mnj->mgni", rots, x1)) ** 2, axis=(2, 3))
    assert np.all(cost <= brute.min(axis=1) + 1e-12)


def test_kabsch_three_dimensions():
    rng = np.random.default_rng(5)
    q, r = np.linalg.qr(rng.standard_normal((10, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[:, :, 0] *= np.sign(np.linalg.det(q))[:, None]  # proper rotations
    x0 = rng.standard_normal((10, 6, 3))
    x1 = np.einsum("mij,mnj->mni", q, x0)
    r = kabsch_rotations(x0, x1)
    assert_allclose(x1 @ np.swapaxes(r, 1, 2), x0, atol=1e-10)
    r = kabsch_rotations(x0, -x0)  # inversion: improper in 3-D, Kabsch stays proper
    assert_allclose(np.linalg.det(r), np.ones(10), rtol=1e-12)


@pytest.mark.parametrize("rotations", [False, True])
def test_alignment_is_a_symmetry_copy_and_never_worse(rotations):
    rng = np.random.default_rng(2)
    x0 = rng.standard_normal((64, 4, 2))
    x1 = rng.standard_normal((64, 4, 2))
    y = align_particles(x0, x1, rotations=rotations)
    # Same multiset of pair distances, hence the same energy for any invariant pair energy.
    assert_allclose(_pair_distance_multisets(y), _pair_distance_multisets(x1), rtol=1e-10)
    if not rotations:  # a pure relabelling: the same set of particle positions
        assert_allclose(np.sort(y, axis=1), np.sort(x1, axis=1))
    else:  # |x_i| is kept by rotations about the origin
        assert_allclose(
            np.sort(np.linalg.norm(y, axis=-1), 1), np.sort(np.linalg.norm(x1, axis=-1), 1)
        )
    before = np.sum((x0 - x1) ** 2, axis=(1, 2))
    after = np.sum((x0 - y) ** 2, axis=(1, 2))
    assert np.all(after <= before + 1e-12)
    assert np.mean(after) < 0.9 * np.mean(before)


def test_equivariant_ot_pairing():
    """Klein et al.: aligned copies of a permutation of x1, cheaper than plain OT."""
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((32, 3, 2))
    x1 = rng.standard_normal((32, 3, 2))
    y = pair_batch(x0, x1, pairing="equivariant_ot", rotations=True)
    # Each y_b is a relabelled, rotated copy of a distinct x1_c.
    key_y = _pair_distance_multisets(y)
    key_x = _pair_distance_multisets(x1)
    match = [int(np.argmin(np.abs(key_x - k).sum(axis=1))) for k in key_y]
    assert sorted(match) == list(range(32))
    assert_allclose(key_y, key_x[match], rtol=1e-10)
    cost = lambda a: np.mean(np.sum((x0 - a) ** 2, axis=(1, 2)))
    assert cost(y) <= cost(pair_batch(x0, x1, pairing="ot")) + 1e-12
    assert cost(y) <= cost(pair_batch(x0, x1, pairing="aligned", rotations=True)) + 1e-12


# --------------------------------------------------------------------------------------------
# Stochastic interpolants
# --------------------------------------------------------------------------------------------


def _data_1d(n, seed):
    return MU1 + SIG1 * np.random.default_rng(seed).standard_normal((n, 1))


@pytest.fixture(scope="module")
def interpolant_gaussian():
    steps = 1200
    interp = Interpolant((1,), key=jax.random.key(0), hidden=32, depth=2, gamma_scale=GAMMA_A)
    return train_matching(
        interp,
        _data_1d(20_000, 0),
        key=jax.random.key(1),
        trainer=Trainer(steps=steps, batch_size=512, learning_rate=1e-2),
        progress=False,
    )


def _field_errors(model, t, rng):
    """Relative RMS errors of b and s over x ~ ρ_t (exact N(tμ, Σ_t)), with their stderrs."""
    mu, sig = np.array([MU1]), np.array([[SIG1**2]])
    _, _, cov = gaussian_field(t, np.zeros((1, 1)), mu, sig, GAMMA_A)
    x = t * mu + math.sqrt(cov[0, 0]) * rng.standard_normal((512, 1))
    b, s, _ = gaussian_field(t, x, mu, sig, GAMMA_A)
    xj = jnp.asarray(x, jnp.float32)
    b_hat = np.asarray(jax.vmap(model.velocity, in_axes=(None, 0))(t, xj))
    s_hat = np.asarray(jax.vmap(model.score, in_axes=(None, 0))(t, xj))

    def rel(a, e):
        # ratio of means: delta-method standard error of sqrt(mean(d²)/mean(e²))
        d2, e2 = ((a - e) ** 2).ravel(), (e**2).ravel()
        r2 = d2.mean() / e2.mean()
        se_r2 = np.std(d2 / e2.mean() - r2 * e2 / e2.mean(), ddof=1) / math.sqrt(d2.size)
        return math.sqrt(r2), se_r2 / (2 * math.sqrt(r2))

    return rel(b_hat, b), rel(s_hat, s)


def _interp_coefficients(t):
    a = GAMMA_A
    gamma = np.sqrt(a * t * (1 - t))
    var_t = (1 - t) ** 2 + t**2 * SIG1**2 + gamma**2  # Σ_t of x_t = (1 − t)x₀ + t x₁ + γz
    return gamma, var_t


def _interp_sample_x(t, n, rng):
    _, var_t = _interp_coefficients(t)
    return t * MU1 + math.sqrt(var_t) * rng.standard_normal((n, 1))


def _interp_exact_b(t, x):
    _, var_t = _interp_coefficients(t)
    dvar = -2 * (1 - t) + 2 * t * SIG1**2 + GAMMA_A * (1 - 2 * t)
    return MU1 + 0.5 * dvar[:, None] / var_t[:, None] * (x - t[:, None] * MU1)


def _interp_exact_eta(t, x):
    gamma, var_t = _interp_coefficients(t)
    return (gamma / var_t)[:, None] * (x - t[:, None] * MU1)  # E[z | x_t] = γ(x − tμ)/Σ_t


N_INTERP_DATA = 20_000


def test_interpolant_fields_match_closed_form(interpolant_gaussian):
    """Trained b and η against the closed forms, integrated over t and x ~ ρ_t.

    Tolerances from regression theory as in :func:`test_flow_matching_field_matches_closed_form`
    (excess risk p σ̄²/N of least squares, N = 20 000 samples of the target): η's target z has
    conditional variance 1 − γ²/Σ_t; b's target m ± γ̇z has an infinite γ̇² at the ends, but the
    antithetic pair x_t^± cancels the γ̇z noise to first order (γ̇γ stays bounded), leaving that of
    m = x₁ − x₀: Var(m | x_t) = 1 + σ² − (σ²t − (1 − t))²/Σ_t. The score s = −η/γ is checked
    through η (dividing by γ → 0 at the ends would make its integral infinite).
    """
    model = interpolant_gaussian.model
    gamma, var_t = _interp_coefficients(T_GRID)
    var_eta = np.mean(1 - gamma**2 / var_t)
    var_m = np.mean(1 + SIG1**2 - (SIG1**2 * T_GRID - (1 - T_GRID)) ** 2 / var_t)
    for fn, exact, var, name in (
        (model.velocity, _interp_exact_b, var_m, "b"),
        (model.denoiser, _interp_exact_eta, var_eta, "eta"),
    ):
        err, se = integrated_error(fn, exact, _interp_sample_x, seed=7)
        module = model.b if name == "b" else model.eta
        rate = n_parameters(module) * var / N_INTERP_DATA
        assert err <= rate + 4 * se, (name, err, se, rate)


def test_interpolant_escort_and_score_are_finite_everywhere(interpolant_gaussian):
    model = interpolant_gaussian.model
    x = jnp.array([0.3], jnp.float32)
    for t in (0.0, 1.0):
        assert np.all(np.isfinite(np.asarray(model.score(t, x))))
        assert_allclose(model.escort(t, x, 0.5), np.zeros(1), atol=0.0)
    eps = model.eps_schedule(0.5)
    t = 0.3
    assert_allclose(model.escort(t, x, 0.5), eps(t) * model.score(t, x), rtol=1e-5)


def test_interpolant_as_cnf_and_escorted_paths(interpolant_gaussian):
    """The probability-flow CNF and the escorted SDE both give the exact ln Z of the target.

    Target ρ̃₁(x) = exp(−(x − μ)²/2σ²), ln Z₁ = ½ ln(2πσ²); the source is normalised.
    """
    model = interpolant_gaussian.model
    exact = 0.5 * math.log(2 * math.pi * SIG1**2)
    log_rho1 = lambda x: -0.5 * jnp.sum((x - MU1) ** 2) / SIG1**2

    cnf = model.as_cnf(n_steps=10)
    x, log_q = _sample_cnf(cnf, jax.random.key(3), 2048)
    log_w = jax.vmap(log_rho1)(x) - log_q
    est = importance_log_z(np.asarray(log_w, np.float64))
    within_sigmas(est.log_z, exact, est.log_z_stderr)
    assert est.extra["ess_fraction"] > 0.8

    res = forward_paths(
        model.velocity,
        model.score,
        model.sample_base(1024, key=jax.random.key(4)),
        log_density_a=model.base_log_prob,
        log_density_b=log_rho1,
        key=jax.random.key(5),
        n_steps=50,
        eps=model.eps_schedule(0.5),
    )
    est = importance_log_z(np.asarray(res.log_w, np.float64))
    within_sigmas(est.log_z, exact, est.log_z_stderr)


def test_interpolant_data_to_data_runs():
    """A → B with A = samples of N(0, 1): the same closed forms hold; short training improves b."""
    steps = 300
    interp = Interpolant((1,), key=jax.random.key(2), hidden=16, depth=2, source="data")
    data_a = np.random.default_rng(8).standard_normal((5000, 1))
    state = train_matching(
        interp,
        (data_a, _data_1d(5000, 9)),
        key=jax.random.key(3),
        trainer=Trainer(steps=steps, batch_size=128, learning_rate=3e-3),
        progress=False,
    )
    assert np.all(np.isfinite(state.history["loss"]))
    rng = np.random.default_rng(10)
    (err_init, _), _ = _field_errors(interp, 0.5, rng)
    (err_b, se_b), _ = _field_errors(state.model, 0.5, rng)
    assert err_init == pytest.approx(1.0)  # b ≡ 0 at initialisation
    assert err_b < err_init - 4 * se_b, (err_b, se_b)  # training reduced the error
    with pytest.raises(ValueError, match="Gaussian source"):
        state.model.as_cnf()


# --------------------------------------------------------------------------------------------
# Zero centre of mass particles
# --------------------------------------------------------------------------------------------


def test_zero_com_particles_flow_matching():
    """N = 3, d = 2 triangles: samples stay centred, the loss decreases (beyond 4 stderr)."""
    rng = np.random.default_rng(11)
    n = 4000
    ang = rng.uniform(0, 2 * np.pi, n)[:, None] + np.array([0, 2, 4]) * np.pi / 3
    x = np.stack([np.cos(ang), np.sin(ang)], -1) + 0.1 * rng.standard_normal((n, 3, 2))
    x += rng.standard_normal((n, 1, 2))  # a centre of mass to remove
    steps = 100
    cnf = CNF((3, 2), key=jax.random.key(0), hidden=16, depth=1, n_steps=6, zero_com=True)
    state = train_matching(
        cnf,
        x,
        key=jax.random.key(1),
        trainer=Trainer(steps=steps, batch_size=32, learning_rate=3e-3),
        pairing="equivariant_ot",
        rotations=True,
        progress=False,
    )
    loss = np.asarray(state.history["loss"])
    first, last = loss[:20], loss[-20:]
    se = math.sqrt(np.var(first, ddof=1) / 20 + np.var(last, ddof=1) / 20)
    assert first.mean() - last.mean() > 4 * se, (first.mean(), last.mean(), se)
    y, log_q = _sample_cnf(state.model, jax.random.key(2), 256)
    assert np.all(np.isfinite(np.asarray(log_q)))
    assert_allclose(np.asarray(y).mean(axis=1), np.zeros((256, 2)), atol=1e-5)


def test_train_matching_rejects_bad_input():
    cnf = CNF((2,), key=jax.random.key(0), hidden=4, depth=1)
    data = np.zeros((10, 2))
    with pytest.raises(ValueError, match="unknown pairing"):
        train_matching(cnf, data, key=jax.random.key(1), trainer=Trainer(steps=1), pairing="greedy")
    with pytest.raises(ValueError, match="needs particles"):
        train_matching(
            cnf, data, key=jax.random.key(1), trainer=Trainer(steps=1), pairing="aligned"
        )
    with pytest.raises(ValueError, match="one data array"):
        train_matching(cnf, (data, data), key=jax.random.key(1), trainer=Trainer(steps=1))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        train_matching(cnf, np.zeros((10, 3)), key=jax.random.key(1), trainer=Trainer(steps=1))
    interp = Interpolant((2,), key=jax.random.key(0), hidden=4, depth=1, source="data")
    with pytest.raises(ValueError, match="data_a, data_b"):
        train_matching(interp, data, key=jax.random.key(1), trainer=Trainer(steps=1))
