"""End-to-end physics checks of the trained sampler against exact answers and identities."""

import math

import numpy as np
import pytest
from conftest import within_sigmas

import boltzgen as bg
from boltzgen import estimators as est
from boltzgen.systems import CoulombGas, pair_distances

FAST = dict(
    batch_size=256, n_samples=16384, chunk_size=8192, n_boot=50, progress=False, refine="none"
)
# A small sampler where only the pipeline, not the fit, is under test (compiles fast).
TINY_SAMPLER = dict(n_layers=2, hidden=8, gap=False, rotate=False)
# Enough for N ≤ 3 at β ≤ 5 (ESS ≳ 50 % of samples after 400 steps), and quick to compile.
SMALL_SAMPLER = dict(n_layers=4, hidden=16, gap=False, rotate=False)


@pytest.mark.parametrize("dim,beta", [(2, 2.0), pytest.param(3, 5.0, marks=pytest.mark.slow)])
def test_importance_log_z_matches_exact_pair_integral(dim, beta):
    system = CoulombGas(2, dim)
    fast = FAST | dict(refine="nmcmc", refine_options=dict(n_chains=128, n_steps=50))
    r = bg.run(
        system, beta, sampler_options=SMALL_SAMPLER, steps=400, reference="none", seed=1, **fast
    )
    e = r.estimates["importance"]
    assert e.ess > 1000, e
    within_sigmas(e.log_z, system.exact_log_z(beta), e.log_z_stderr)
    # BAR between q and the neural-MCMC samples of p, and the refined estimate.
    for m in ("bar", "refined_nmcmc"):
        within_sigmas(r.estimates[m].log_z, system.exact_log_z(beta), r.estimates[m].log_z_stderr)
    assert r.estimates["forward_bound_refined"].log_z > system.exact_log_z(beta) - 4 * (
        r.estimates["forward_bound_refined"].log_z_stderr
    )
    # The variational bound is an upper bound on βF: never below exact beyond its error.
    v = r.estimates["variational"]
    assert v.beta_f > -system.exact_log_z(beta) - 4 * v.beta_f_stderr


@pytest.fixture(scope="module")
def trained_n3():
    return bg.run(
        CoulombGas(3, 2),
        2.0,
        sampler_options=SMALL_SAMPLER,
        steps=400,
        reference="none",
        seed=0,
        **FAST,
    )


def _observable(x):
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(x)
    trap = jnp.sum(x * x, axis=(1, 2))
    vc = jax.vmap(lambda c: jnp.sum(1.0 / pair_distances(c)))(x)
    com = jnp.mean(x, axis=1)
    return (
        np.asarray(trap, np.float64),
        np.asarray(vc, np.float64),
        np.asarray(jnp.sum(com * com, 1), np.float64),
    )


def test_virial_identity_reweighted(trained_n3):
    # 2⟨Σ|x_i|²⟩ − ⟨V_C⟩ = dN/β (PHYSICS.md), for any N, β.
    s = trained_n3.samples
    trap, vc, _ = _observable(s["x"])
    mean, err = est.weighted_mean(2 * trap - vc, s["log_w"])
    within_sigmas(mean, 2 * 3 / 2.0, err)


def test_centre_of_mass_identity_reweighted(trained_n3):
    # R = (1/N) Σ x_i ~ N(0, 1/(2Nβ) I_d), so ⟨|R|²⟩ = d/(2Nβ).
    s = trained_n3.samples
    _, _, r2 = _observable(s["x"])
    mean, err = est.weighted_mean(r2, s["log_w"])
    within_sigmas(mean, 2 / (2 * 3 * 2.0), err)


@pytest.mark.slow
def test_same_seed_same_estimates_different_seed_agrees(tmp_path):
    system = CoulombGas(2, 2)
    kw = dict(
        sampler_options=TINY_SAMPLER,
        steps=60,
        reference="none",
        refine="none",
        batch_size=128,
        n_samples=4096,
        chunk_size=4096,
        n_boot=20,
        progress=False,
    )
    a = bg.run(system, 2.0, seed=3, **kw)
    b = bg.run(system, 2.0, seed=3, **kw)
    c = bg.run(system, 2.0, seed=4, **kw)
    a.save(tmp_path / "a.h5")
    b.save(tmp_path / "b.h5")
    ra, rb = bg.Result.load(tmp_path / "a.h5"), bg.Result.load(tmp_path / "b.h5")
    for m in ra.estimates:
        for attr in ("log_z", "log_z_stderr", "n_samples"):
            assert getattr(ra.estimates[m], attr) == getattr(rb.estimates[m], attr), (m, attr)
    ea, ec = a.estimates["importance"], c.estimates["importance"]
    assert ea.log_z != ec.log_z
    within_sigmas(ea.log_z, ec.log_z, math.hypot(ea.log_z_stderr, ec.log_z_stderr))


@pytest.mark.slow
def test_indistinguishable_flag_subtracts_log_n_factorial():
    system = CoulombGas(2, 2)
    kw = dict(
        sampler_options=TINY_SAMPLER,
        steps=10,
        reference="none",
        refine="none",
        batch_size=64,
        n_samples=512,
        chunk_size=512,
        n_boot=0,
        progress=False,
        seed=0,
    )
    a = bg.run(system, 2.0, **kw)
    b = bg.run(system, 2.0, indistinguishable=True, **kw)
    assert (
        abs((a.estimates["importance"].log_z - b.estimates["importance"].log_z) - math.log(2))
        < 1e-12
    )
    assert abs((a.exact_log_z - b.exact_log_z) - math.log(2)) < 1e-12


def test_bad_python_inputs():
    with pytest.raises(ValueError, match="beta must be a positive finite number, got -1"):
        bg.run(CoulombGas(2, 2), -1.0)
    with pytest.raises(ValueError, match="n_particles must be an integer >= 1, got 0"):
        CoulombGas(0, 2)
    with pytest.raises(ValueError, match="unknown sampler kind|unknown sampler"):
        bg.run(CoulombGas(2, 2), 1.0, sampler="magic", progress=False)
