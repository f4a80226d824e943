"""Spin systems through the whole pipeline: run(), observables, curves, specs, results files."""

import math

import jax
import numpy as np
import pytest
from conftest import within_sigmas
from spin_models import MeanField

import boltzgen as bg
from boltzgen import estimators as est
from boltzgen.config import SpecError, load_spec
from boltzgen.systems import SherringtonKirkpatrick, all_states, enumerate_energies


def _exact(system, beta):
    """ln Z, ⟨E⟩, S, ⟨|m|⟩, χ, C by enumeration, independently of boltzgen's exact module."""
    e = enumerate_energies(system)
    s = all_states(system.n_spins)
    a = -beta * e
    lz = a.max() + math.log(np.exp(a - a.max()).sum())
    p = np.exp(a - lz)
    m = np.abs(s.mean(axis=1))
    mean_e, mean_m = p @ e, p @ m
    return dict(
        log_z=lz,
        energy=mean_e,
        entropy=lz + beta * mean_e,
        abs_magnetisation=mean_m,
        susceptibility=system.n_spins * beta * (p @ m**2 - mean_m**2),
        heat_capacity=beta**2 * (p @ e**2 - mean_e**2),
    )


@pytest.fixture(scope="module")
def sk_run():
    system = SherringtonKirkpatrick(10, seed=0)
    q = MeanField(system.event_shape, key=jax.random.key(0))
    r = bg.run(
        system,
        0.7,
        q,
        trainer=bg.train.Trainer(steps=150, batch_size=256, learning_rate=5e-2),
        estimation=bg.Estimation(n_samples=16384, n_boot=0),
        stages=(bg.stages.NeuralMCMC(n_chains=512, n_steps=40),),
        progress=False,
    )
    return system, r


def test_spin_run_matches_enumeration(sk_run):
    system, r = sk_run
    ex = _exact(system, 0.7)
    imp = r.estimates["importance"]
    within_sigmas(imp.log_z, ex["log_z"], imp.log_z_stderr)
    assert r.exact_log_z == pytest.approx(ex["log_z"], rel=1e-12)
    assert r.estimates["variational"].beta_f > -ex["log_z"]  # an upper bound on βF
    for method in ("importance", "refined_nmcmc"):
        for name, (value, err) in r.observables[method].items():
            within_sigmas(value, ex[name], err)
    for name, (value, _) in r.observables["exact"].items():
        assert value == pytest.approx(ex[name], rel=1e-9, abs=1e-9), name


def test_spin_results_round_trip(sk_run, tmp_path):
    _, r = sk_run
    r.save(tmp_path / "r.h5")
    back = bg.Result.load(tmp_path / "r.h5")
    assert back.observables == r.observables
    assert "abs_magnetisation" in back.table()


def test_importance_entropy_against_exact_uniform_q():
    """q uniform on 2^N states: S = ln Z + β⟨E⟩ within 4σ of the enumerated entropy."""
    system = SherringtonKirkpatrick(8, seed=2)
    beta = 0.8
    ex = _exact(system, beta)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 2**8, size=20000)
    e = enumerate_energies(system)[idx]
    log_w = -beta * e + 8 * math.log(2.0)
    s, se = est.importance_entropy(log_w, beta * e)
    within_sigmas(s, ex["entropy"], se)


def test_run_curve_meanfield_matches_enumeration(tmp_path):
    system = SherringtonKirkpatrick(8, seed=1)
    q = MeanField(system.event_shape, key=jax.random.key(0))
    betas = [0.2, 0.6, 1.0]
    r = bg.run_curve(
        system,
        betas,
        q,
        trainer=bg.train.Trainer(steps=100, batch_size=256, learning_rate=5e-2),
        estimation=bg.Estimation(n_samples=8192, n_boot=0),
        progress=False,
    )
    c = r.curve
    for i, b in enumerate(betas):
        within_sigmas(c["log_z"][i], _exact(system, b)["log_z"], c["log_z_stderr"][i])
        assert c["exact_log_z"][i] == pytest.approx(_exact(system, b)["log_z"], rel=1e-12)
        assert c["variational_beta_f"][i] > -c["exact_log_z"][i]
    r.save(tmp_path / "c.h5")
    back = bg.Result.load(tmp_path / "c.h5")
    np.testing.assert_array_equal(back.curve["log_z"], c["log_z"])
    assert "exact ln Z" in back.table()
    from boltzgen.report import plot_curve

    plot_curve(back, str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_run_curve_rejects_bad_betas():
    system = SherringtonKirkpatrick(4)
    with pytest.raises(ValueError, match="betas"):
        bg.run_curve(system, [0.5], progress=False)
    with pytest.raises(ValueError, match="betas"):
        bg.run_curve(system, [0.5, -1.0], progress=False)


def test_spin_specs_validate():
    spec = load_spec(None, ['system.kind="ising"', "system.L=4", "ensemble.beta=0.4"])
    assert spec.objective == bg.train.Reinforce()
    assert spec.stages == (bg.stages.NeuralMCMC(),) and spec.reference is None
    with pytest.raises(SpecError, match="refine.method 'smc'"):
        load_spec(None, ['system.kind="ising"', 'refine.method="smc"'])
    with pytest.raises(SpecError, match="local_kernel 'mala'"):
        load_spec(None, ['system.kind="sk"', 'refine.local_kernel="mala"'])
    with pytest.raises(SpecError, match="beta_anneal"):
        load_spec(None, ['system.kind="ising"', "train.beta_anneal=1.5"])
    with pytest.raises(SpecError, match="L must be an integer >= 2"):
        load_spec(None, ['system.kind="ising"', "system.L=1"])


def test_cli_ising_run_and_curve_write_files(tmp_path, capsys):
    """`boltzgen run` on an Ising spec (one β and a β curve), then `boltzgen report`."""
    from boltzgen.cli import main

    tiny = [
        "--quiet",
        "--set", 'system.kind="ising"', "--set", "system.L=3",
        "--set", "sampler.channels=4", "--set", "sampler.depth=2",
        "--set", "train.steps=30", "--set", "train.batch_size=64",
        "--set", "estimate.n_samples=2048", "--set", "estimate.n_boot=0",
    ]  # fmt: skip
    one = tmp_path / "one.h5"
    args = ["run", "--out", str(one), *tiny, "--set", "ensemble.beta=0.4"]
    assert main([*args, "--set", "refine.n_chains=64", "--set", "refine.n_steps=10"]) == 0
    out = capsys.readouterr().out
    assert "per site: βF/N" in out and "abs_magnetisation" in out
    curve = tmp_path / "curve.h5"
    assert main(["run", "--out", str(curve), *tiny, "--set", "ensemble.betas=[0.2, 0.5]"]) == 0
    assert "exact ln Z" in capsys.readouterr().out
    assert main(["report", str(curve), "--plot", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").exists()
    bad = ["run", "--out", str(tmp_path / "bad.h5"), *tiny, "--set", "ensemble.betas=[0.2]"]
    assert main(bad) == 2
    assert not (tmp_path / "bad.h5").exists()


def test_spin_references_wired_and_validated():
    system = SherringtonKirkpatrick(8, seed=4)
    q = MeanField(system.event_shape, key=jax.random.key(0))
    r = bg.run(
        system, 0.8, q, trainer=bg.train.Trainer(steps=0),
        estimation=bg.Estimation(n_samples=1024, n_boot=0), stages=(),
        reference=bg.references.BetaAIS(n_chains=256, n_steps=100), progress=False,
    )  # fmt: skip
    ref = r.reference["beta_ais"]
    within_sigmas(ref.log_z, _exact(system, 0.8)["log_z"], ref.log_z_stderr)
    assert ref.cost.n_sweeps > 0 and "sweeps" in r.table()
    spec = load_spec(None, ['system.kind="ising"', 'reference.method="ti"'])
    assert spec.reference.n_betas > 0
    with pytest.raises(SpecError, match="needs system.kind = 'coulomb'"):
        load_spec(None, ['system.kind="ising"', 'reference.method="ais"'])
    with pytest.raises(SpecError, match="needs a spin system"):
        load_spec(None, ['reference.method="ti"'])


@pytest.mark.parametrize(
    "system, beta, sampler",
    [
        (bg.systems.Ising(4), bg.systems.BETA_C, "pixelcnn"),
        (SherringtonKirkpatrick(12, seed=5), 1.0, "made"),
    ],
    ids=["ising4x4-pixelcnn", "sk12-made"],
)
def test_autoregressive_nis_and_nmcmc_match_enumeration(system, beta, sampler):
    """The issue's checks: NIS ln Z within 4σ of enumeration, NMCMC observables within errors."""
    from boltzgen.flows import make_sampler

    q = make_sampler(sampler, system, key=bg._keys.RunKeys(0).init)
    r = bg.run(
        system, beta, q, trainer=bg.train.Trainer(steps=300, batch_size=256),
        estimation=bg.Estimation(n_samples=16384, n_boot=0),
        stages=(bg.stages.NeuralMCMC(n_chains=1024, n_steps=40),), progress=False,
    )  # fmt: skip
    ex = _exact(system, beta)
    imp = r.estimates["importance"]
    within_sigmas(imp.log_z, ex["log_z"], imp.log_z_stderr)
    assert imp.ess > 1000  # a trained q, not a lucky untrained one
    for method in ("importance", "refined_nmcmc"):
        for name, (value, err) in r.observables[method].items():
            within_sigmas(value, ex[name], err)


def test_beta_conditioned_sampler_needs_a_curve():
    with pytest.raises(SpecError, match="beta_conditioned = true needs ensemble.betas"):
        load_spec(None, ['system.kind="ising"', "sampler.beta_conditioned=true"])
    from boltzgen.flows import make_sampler

    system = bg.systems.Ising(3)
    q = make_sampler(
        "made", system, key=jax.random.key(0), beta_conditioned=True, beta_min=0.2, beta_max=0.5
    )
    with pytest.raises(ValueError, match="run_curve"):
        bg.run(system, 0.4, q, trainer=bg.train.Trainer(steps=1), progress=False)
