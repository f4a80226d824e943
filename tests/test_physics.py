"""End-to-end physics checks of the trained sampler against exact answers and identities."""

import math

import h5py
import numpy as np
import pytest
from conftest import make_q, within_sigmas

import boltzgen as bg
from boltzgen import estimators as est
from boltzgen.systems import CoulombGas, pair_distances
from boltzgen.train import Trainer

FAST = dict(
    estimation=bg.Estimation(n_samples=16384, chunk_size=8192, n_boot=50),
    progress=False,
    stages=(),
)
# A small sampler where only the pipeline, not the fit, is under test (compiles fast).
TINY_SAMPLER = dict(n_layers=2, hidden=8, gap=False, rotate=False)
# Enough for N ≤ 3 at β ≤ 5 (ESS ≳ 50 % of samples after 400 steps), and quick to compile.
SMALL_SAMPLER = dict(n_layers=4, hidden=16, gap=False, rotate=False)


@pytest.mark.parametrize("dim,beta", [(2, 2.0), pytest.param(3, 5.0, marks=pytest.mark.slow)])
def test_importance_log_z_matches_exact_pair_integral(dim, beta, tmp_path):
    system = CoulombGas(2, dim)
    nmcmc = bg.stages.NeuralMCMC(n_chains=128, n_steps=50, path_chains=128, path_steps=20)
    fast = FAST | dict(stages=(nmcmc,))
    r = bg.run(
        system, beta, make_q(system, "equivariant", seed=1, **SMALL_SAMPLER),
        trainer=Trainer(steps=400), reference=None, seed=1, **fast,
    )  # fmt: skip
    e = r.estimates["importance"]
    assert e.ess > 1000, e
    within_sigmas(e.log_z, system.exact_log_z(beta), e.log_z_stderr)
    # BAR between q and the neural-MCMC samples of p, and the refined estimate.
    for m in ("bar", "refined_nmcmc"):
        within_sigmas(r.estimates[m].log_z, system.exact_log_z(beta), r.estimates[m].log_z_stderr)
    # The lower bound on βF from the neural-MCMC samples of p sits KL(p‖q) above ln Z, and
    # 0 ≤ KL(p‖q) ≤ D₂(p‖q) = ln E_q[(p/q)²] = −ln(ESS/n) (Rényi divergences increase with the
    # order; the Kish ESS fraction of the 16 384 samples of q estimates e^{−D₂}): both sides.
    exact = system.exact_log_z(beta)
    f = r.estimates["forward_bound_refined"]
    assert f.log_z > exact - 4 * f.log_z_stderr
    assert f.log_z - exact < -math.log(e.extra["ess_fraction"]) + 4 * f.log_z_stderr
    # The variational bound is an upper bound on βF: never below exact beyond its error. Its gap
    # KL(q‖p) ≤ D₂(q‖p) has no usable estimate (it needs samples of p where q ≫ p; from samples
    # of q, ln Z + ln mean(e^{−w}) is dominated by near-collisions, hundreds of nats); on the
    # same samples it is below the importance estimate (Jensen).
    v = r.estimates["variational"]
    assert v.beta_f > -exact - 4 * v.beta_f_stderr
    assert v.log_z <= e.log_z
    # Annealed paths both ways: BAR on the path works within 4σ, −⟨A_F⟩ ≥ βF ≥ ⟨A_R⟩, and
    # 20 moves do not loosen the single-model bracket (in expectation they tighten it).
    within_sigmas(r.estimates["path_bar"].log_z, exact, r.estimates["path_bar"].log_z_stderr)
    up, lo = r.estimates["path_upper_bound"], r.estimates["path_lower_bound"]
    assert up.beta_f > -exact - 4 * up.beta_f_stderr
    assert lo.beta_f < -exact + 4 * lo.beta_f_stderr
    assert up.beta_f < v.beta_f + 4 * (up.beta_f_stderr + v.beta_f_stderr)
    assert lo.beta_f > f.beta_f - 4 * (lo.beta_f_stderr + f.beta_f_stderr)
    r.save(tmp_path / "r.h5")  # the paths' log-weights and settings reach /refine
    with h5py.File(tmp_path / "r.h5") as h5:
        g = h5["refine"]
        assert g["path_log_w_forward"].shape == (128,) and g["path_log_w_reverse"].shape == (128,)
        assert g["path_schedule"].shape == (21,) and g.attrs["path_n_steps"] == 20
        assert -np.mean(g["path_log_w_forward"][()]) == pytest.approx(up.beta_f)


@pytest.fixture(scope="module")
def trained_n3():
    system = CoulombGas(3, 2)
    return bg.run(
        system,
        2.0,
        make_q(system, "equivariant", **SMALL_SAMPLER),
        trainer=Trainer(steps=400),
        reference=None,
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
    # 2⟨Σ|x_i|²⟩ − ⟨V_C⟩ = dN/β for any N, β (virial theorem, κ = λ = 1: ⟨x·∇(βE)⟩ = dN,
    # and x·∇ gives 2Σ|x_i|² on the trap, −V_C on the Coulomb term).
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
        trainer=Trainer(steps=60, batch_size=128),
        reference=None,
        stages=(),
        estimation=bg.Estimation(n_samples=4096, chunk_size=4096, n_boot=20),
        progress=False,
    )
    a = bg.run(system, 2.0, make_q(system, "equivariant", seed=3, **TINY_SAMPLER), seed=3, **kw)
    b = bg.run(system, 2.0, make_q(system, "equivariant", seed=3, **TINY_SAMPLER), seed=3, **kw)
    c = bg.run(system, 2.0, make_q(system, "equivariant", seed=4, **TINY_SAMPLER), seed=4, **kw)
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
        trainer=Trainer(steps=10, batch_size=64),
        reference=None,
        stages=(),
        estimation=bg.Estimation(n_samples=512, chunk_size=512, n_boot=0),
        progress=False,
        seed=0,
    )
    a = bg.run(system, 2.0, make_q(system, "equivariant", **TINY_SAMPLER), **kw)
    q = make_q(system, "equivariant", **TINY_SAMPLER)
    b = bg.run(system, 2.0, q, indistinguishable=True, **kw)
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
        make_q(CoulombGas(2, 2), "magic")
    with pytest.raises(ValueError, match="objective 'reverse_kl' needs reparametrised"):
        bg.run(bg.systems.Ising(3), 1.0, objective=bg.train.ReverseKL(), progress=False)
    with pytest.raises(ValueError, match="reference 'ladder' needs system.kind = 'coulomb'"):
        bg.run(
            bg.systems.Gaussian.isotropic(2),
            1.0,
            reference=bg.references.CouplingLadder(),
            progress=False,
        )
