"""Tests of the spin-system Monte Carlo baselines (boltzgen.mcmc._spins).

Exact references come from enumerating all 2^N states (4×4 Ising, SK with N = 12). Statistical
checks use fixed seeds and 4σ tolerances from the reported standard errors (TI: statistical ⊕
quadrature error); the invariance test uses a χ² quantile.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import within_sigmas

from boltzgen.mcmc import (
    beta_annealing,
    sample_spins,
    spin_observables,
    thermodynamic_integration,
)
from boltzgen.mcmc.kernels import (
    SpinState,
    beta_schedule,
    checkerboard_step,
    clenshaw_curtis,
    critical_beta,
    lattice_colouring,
    random_spins,
    single_spin_step,
    spin_init,
    swendsen_wang_step,
)
from boltzgen.systems import (
    BETA_C,
    Ising,
    PairwiseSpins,
    SherringtonKirkpatrick,
    all_states,
    enumerate_energies,
    enumerate_log_z,
)

ISING4 = Ising(4)
SK12 = SherringtonKirkpatrick(12, seed=3)


def exact_averages(system, beta):
    """Exact ⟨E⟩ and ⟨|m|⟩ by enumeration."""
    e = enumerate_energies(system)
    a = -beta * e
    p = np.exp(a - a.max())
    p /= p.sum()
    m = np.abs(all_states(system.n_spins).mean(axis=1))
    return float(p @ e), float(p @ m)


# --- kernels against enumeration ---------------------------------------------------------------

KERNEL_CASES = [
    ("checkerboard", ISING4, (0.3, BETA_C, 0.6)),
    ("swendsen_wang", ISING4, (0.3, BETA_C, 0.6)),
    ("checkerboard", Ising(4, Jh=1.0, Jv=0.5, h=0.3, boundary="open"), (0.6,)),
    ("checkerboard", Ising(3), (0.5,)),  # odd L on the torus: 3-colouring
    ("single_spin", SK12, (1.0,)),
]


@pytest.mark.parametrize(("kernel", "system", "betas"), KERNEL_CASES)
def test_kernel_averages_match_enumeration(kernel, system, betas):
    for i, beta in enumerate(betas):
        chains = sample_spins(
            system, beta, key=jax.random.key(10 + i), n_chains=64, n_sweeps=800, kernel=kernel
        )
        assert chains.kernel == kernel
        obs = spin_observables(system, chains, beta)
        e_ex, m_ex = exact_averages(system, beta)
        within_sigmas(obs.energy, e_ex, obs.energy_stderr)
        within_sigmas(obs.abs_magnetisation, m_ex, obs.abs_magnetisation_stderr)


def test_observables_of_iid_samples_and_chain_arrays():
    # exact samples from enumeration: C = β² Var(E) and χ against their exact values
    system, beta = ISING4, 0.3
    e = enumerate_energies(system)
    p = np.exp(-beta * (e - e.min()))
    p /= p.sum()
    rng = np.random.default_rng(0)
    idx = rng.choice(p.size, size=20000, p=p)
    states = all_states(system.n_spins)
    x = states[idx].reshape(-1, 4, 4)
    obs = spin_observables(system, x, beta)
    m = states.mean(axis=1)
    c_ex = beta**2 * (p @ e**2 - (p @ e) ** 2)
    chi_ex = system.n_spins * beta * (p @ m**2 - (p @ np.abs(m)) ** 2)
    within_sigmas(obs.specific_heat, c_ex, obs.specific_heat_stderr)
    within_sigmas(obs.susceptibility, chi_ex, obs.susceptibility_stderr)
    within_sigmas(obs.energy, p @ e, obs.energy_stderr)
    # the same samples as (T, n_chains, L, L) chains give the same averages
    obs2 = spin_observables(system, x.reshape(500, 40, 4, 4), beta)
    assert math.isclose(obs2.energy, obs.energy, rel_tol=1e-12)
    assert obs.specific_heat_per_site == pytest.approx(obs.specific_heat / 16)


def _exact_samples(system, beta, n, seed):
    e = enumerate_energies(system)
    p = np.exp(-beta * (e - e.min()))
    p /= p.sum()
    idx = np.random.default_rng(seed).choice(p.size, size=n, p=p)
    return all_states(system.n_spins)[idx].reshape(n, *system.event_shape), p


def _state_index(x):
    bits = (np.asarray(x).reshape(x.shape[0], -1) > 0).astype(np.int64)
    return bits @ (1 << np.arange(bits.shape[1]))


@pytest.mark.parametrize(
    ("step", "system", "beta"),
    [
        (checkerboard_step, Ising(2, Jh=1.0, Jv=0.7, h=0.4), 0.8),
        (checkerboard_step, Ising(3, h=-0.2, boundary="open"), 0.5),
        (swendsen_wang_step, Ising(3, Jh=1.0, Jv=0.5), 0.6),
        (partial(checkerboard_step, rule="heat_bath"), Ising(3, h=0.3), 0.7),
        (single_spin_step, SherringtonKirkpatrick(5, seed=1), 1.5),
    ],
)
def test_one_sweep_leaves_boltzmann_invariant(step, system, beta):
    """Exact samples of p, one sweep each: the histogram must still follow p (χ² test)."""
    n = 40000
    x, p = _exact_samples(system, beta, n, seed=1)
    state = spin_init(system, jnp.asarray(x, jnp.float32))
    new, _ = jax.jit(lambda s, k: step(system, s, beta, key=k))(state, jax.random.key(2))
    counts = np.bincount(_state_index(new.spins), minlength=p.size)
    keep = p * n >= 5
    obs, expected = list(counts[keep]), list(p[keep] * n)
    if p[~keep].sum() * n >= 5:  # pool the rare states into one bin
        obs.append(counts[~keep].sum())
        expected.append(p[~keep].sum() * n)
    obs, expected = np.array(obs), np.array(expected)
    stat = float(np.sum((obs - expected) ** 2 / expected))
    dof = obs.size - 1
    assert stat < scipy.stats.chi2.ppf(1 - 1e-4, dof), f"χ² = {stat:.1f} with {dof} dof"
    # the energy carried in the state is E of the new spins
    np.testing.assert_allclose(
        np.asarray(new.energy), np.asarray(jax.vmap(system.energy)(new.spins)), atol=1e-5
    )


# --- free energies ----------------------------------------------------------------------------


@pytest.mark.parametrize(("system", "beta"), [(ISING4, BETA_C), (ISING4, 0.6), (SK12, 1.0)])
def test_thermodynamic_integration_matches_enumeration(system, beta):
    # kernel="auto" picks checkerboard for L < CLUSTER_MIN_L: exercise Swendsen–Wang above β_c
    kernel = "swendsen_wang" if isinstance(system, Ising) and beta > BETA_C else "auto"
    r = thermodynamic_integration(
        system, beta, key=jax.random.key(3), n_betas=16, n_chains=32, n_sweeps=400, kernel=kernel
    )
    exact = enumerate_log_z(system, beta)
    within_sigmas(r.log_z, exact, r.log_z_error)
    assert r.method == "thermodynamic_integration"
    assert r.betas[0] == 0.0 and math.isclose(r.betas[-1], beta)
    assert r.mean_energy[0] == 0.0
    assert r.quadrature_error >= 0 and np.isfinite(r.quadrature_error_noise)
    assert r.n_site_updates == r.n_sweeps * system.n_spins
    assert r.wall_time > 0 and r.beta_f == -r.log_z
    if isinstance(system, Ising) and beta > BETA_C:
        assert np.any(np.isclose(r.betas, BETA_C, rtol=0, atol=1e-12)), "split at β_c"
        assert set(r.kernels[1:]) == {"swendsen_wang"}


@pytest.mark.parametrize(("system", "beta"), [(ISING4, BETA_C), (ISING4, 0.6), (SK12, 1.0)])
def test_beta_annealing_matches_enumeration(system, beta):
    r = beta_annealing(system, beta, key=jax.random.key(4), n_chains=256, n_steps=200)
    within_sigmas(r.log_z, enumerate_log_z(system, beta), r.log_z_stderr)
    assert r.method == "beta_annealing" and 1 <= r.ess <= 256
    assert r.log_weights.dtype == np.float64 and r.log_weights.shape == (256,)
    assert r.n_sweeps == 200 * 256 and r.quadrature_error == 0.0


def test_clenshaw_curtis_and_critical_beta():
    x, w = clenshaw_curtis(8, 0.0, 2.0)
    assert x[0] == 0.0 and x[-1] == 2.0
    np.testing.assert_allclose(w @ x**7, 2.0**8 / 8, rtol=1e-12)
    np.testing.assert_allclose(w @ np.exp(x), math.expm1(2.0), rtol=1e-9)
    assert math.isclose(critical_beta(Ising(4)), BETA_C, rel_tol=1e-12)
    assert math.isclose(critical_beta(Ising(4, J=2.0)), BETA_C / 2, rel_tol=1e-12)
    bc = critical_beta(Ising(4, Jh=1.0, Jv=0.5))
    assert math.isclose(math.sinh(2 * bc) * math.sinh(bc), 1.0, rel_tol=1e-12)
    assert critical_beta(Ising(4, h=0.1)) is None and critical_beta(SK12) is None


# --- conformance --------------------------------------------------------------------------------

CONFORMANCE = [
    (checkerboard_step, Ising(4, h=0.2)),
    (checkerboard_step, Ising(5)),
    (swendsen_wang_step, Ising(4, boundary="open")),
    (single_spin_step, SK12),
]


@pytest.mark.parametrize(("step", "system"), CONFORMANCE)
def test_kernel_in_scan_keeps_dtype_shape_and_does_not_retrace(step, system):
    n_traces = [0]

    @jax.jit
    def run(state, beta, key):
        n_traces[0] += 1

        def body(st, k):
            return step(system, st, beta, key=k)

        return jax.lax.scan(body, state, jax.random.split(key, 5))

    state = spin_init(system, random_spins(system, 8, key=jax.random.key(0)))
    out, info = run(state, jnp.linspace(0.1, 0.8, 8, dtype=jnp.float32), jax.random.key(1))
    jax.tree.map(lambda a, b: (a.shape, a.dtype) == (b.shape, b.dtype) or pytest.fail(), out, state)
    assert isinstance(out, SpinState)
    assert out.spins.dtype == jnp.float32 and out.step.dtype == jnp.int32 and int(out.step) == 5
    assert set(np.unique(np.asarray(out.spins))) <= {-1.0, 1.0}
    assert info.energy.shape == (5, 8) and info.magnetisation.shape == (5, 8)
    # other β values (one per chain) reuse the trace
    run(out, jnp.linspace(0.2, 0.9, 8, dtype=jnp.float32), jax.random.key(2))
    assert n_traces[0] == 1


@pytest.mark.parametrize(
    ("L", "boundary"), [(3, "periodic"), (5, "periodic"), (4, "periodic"), (5, "open")]
)
def test_lattice_colouring_is_proper(L, boundary):
    c = lattice_colouring(L, boundary)
    assert c.max() + 1 <= (2 if boundary == "open" or L % 2 == 0 else 4)
    right = np.roll(c, -1, axis=1)
    down = np.roll(c, -1, axis=0)
    if boundary == "open":
        assert np.all(c[:, :-1] != right[:, :-1]) and np.all(c[:-1] != down[:-1])
    else:
        assert np.all(c != right) and np.all(c != down)


# --- clear errors -------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    key = jax.random.key(0)
    s = random_spins(ISING4, 2, key=key)
    st = spin_init(ISING4, s)
    with pytest.raises(ValueError, match="h = 0.5"):
        swendsen_wang_step(Ising(4, h=0.5), st, 0.3, key=key)
    with pytest.raises(ValueError, match="Jh = -1.0"):
        swendsen_wang_step(Ising(4, J=-1.0), st, 0.3, key=key)
    with pytest.raises(ValueError, match="PairwiseSpins"):
        single_spin_step(ISING4, st, 0.3, key=key)
    with pytest.raises(ValueError, match="Ising"):
        checkerboard_step(SK12, st, 0.3, key=key)
    with pytest.raises(ValueError, match=r"\(n_chains, 4, 4\), got \(2, 16\)"):
        spin_init(ISING4, s.reshape(2, 16))
    with pytest.raises(ValueError, match="'wolff'"):
        sample_spins(ISING4, 0.3, key=key, kernel="wolff")
    with pytest.raises(ValueError, match="beta must be .* got -1.0"):
        thermodynamic_integration(ISING4, -1.0, key=key)
    with pytest.raises(ValueError, match="beta must be .* got nan"):
        beta_annealing(ISING4, float("nan"), key=key)
    with pytest.raises(ValueError, match="n_chains must be an integer >= 2, got 1"):
        thermodynamic_integration(ISING4, 0.3, key=key, n_chains=1)
    with pytest.raises(ValueError, match="n_sweeps must be an integer >= 1, got 0"):
        sample_spins(ISING4, 0.3, key=key, n_sweeps=0)
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        beta_schedule(1.0, 10, "cosine")
    with pytest.raises(ValueError, match="exactly 0 to exactly"):
        beta_schedule(1.0, 10, np.array([0.0, 0.5, 0.9]))
    with pytest.raises(ValueError, match="system must be an Ising or PairwiseSpins"):
        thermodynamic_integration("ising", 0.3, key=key)
    with pytest.raises(ValueError, match="kernel='swendsen_wang'|h = 0.3"):
        thermodynamic_integration(Ising(4, h=0.3), 0.3, key=key, kernel="swendsen_wang")
    # a custom pairwise system works with the single-spin kernel
    PairwiseSpins(np.array([[0.0, 1.0], [1.0, 0.0]]))
