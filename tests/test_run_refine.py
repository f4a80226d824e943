"""The estimator suite on real systems: exact N = 2 Coulomb samples, the coupling-ladder Monte
Carlo reference, and the ``[refine]`` phase of a run (config, estimates, results file)."""

import math

import jax
import numpy as np
import pytest
from conftest import within_sigmas
from counting import Counter

import boltzgen as bg
from boltzgen import estimators as est
from boltzgen.config import SpecError, load_spec
from boltzgen.mcmc import coupling_ladder
from boltzgen.results import Result
from boltzgen.systems import CoulombGas, Gaussian


def exact_coulomb_pair_samples(rng, n, beta, dim, trap=1.0, coupling=1.0):
    """Exact samples of two charges in a trap: Gaussian centre of mass, radial inverse CDF.

    E = κ(|x_1|² + |x_2|²) + λ/r = 2κ|R|² + κr²/2 + λ/r with R = (x_1 + x_2)/2, r = x_1 − x_2, so
    R ~ N(0, 1/(4βκ) I) and |r| has density ∝ r^{d−1} exp(−β(κr²/2 + λ/r)), direction uniform.
    The radial inverse CDF is tabulated on a fine grid (interpolation error ≪ the test's σ).
    """
    grid = np.linspace(1e-4, 12.0 / math.sqrt(beta * trap) + 3.0, 400_001)
    log_f = (dim - 1) * np.log(grid) - beta * (trap * grid**2 / 2 + coupling / grid)
    f = np.exp(log_f - log_f.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(grid))])
    r = np.interp(rng.uniform(size=n) * cdf[-1], cdf, grid)
    u = rng.normal(size=(n, dim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    rel = r[:, None] * u
    com = rng.normal(size=(n, dim)) / math.sqrt(4 * beta * trap)
    return np.stack([com + rel / 2, com - rel / 2], axis=1)


def test_estimators_on_exact_coulomb_pair_samples():
    """q = an isotropic Gaussian; p-samples exact: BAR and IS within errors of the exact ln Z,
    and the variational and lower bounds bracket it.

    Reverse IS is not checked here: q stays finite at r → 0 where p vanishes like e^{−βλ/r}, so
    E_p[(q e^{u})²] diverges and its delta-method error is meaningless (it came out 5σ off with
    ESS ≈ 70 %): only BAR and forward IS are safe with this q.
    """
    rng = np.random.default_rng(7)
    beta, dim, n = 2.0, 2, 40_000
    system = CoulombGas(2, dim)
    exact = system.exact_log_z(beta)
    s = 0.6  # q = N(0, s² I) on R^4: mismatched (no repulsion) but overlapping

    def log_q(x):
        x = x.reshape(len(x), -1)
        return -0.5 * np.sum(x * x, 1) / s**2 - 0.5 * x.shape[1] * math.log(2 * math.pi * s**2)

    def energy(x):
        r = np.linalg.norm(x[:, 0] - x[:, 1], axis=1)
        return np.sum(x * x, axis=(1, 2)) + 1.0 / r

    xq = rng.normal(size=(n, 2, dim)) * s
    xp = exact_coulomb_pair_samples(rng, n, beta, dim)
    w_q = -beta * energy(xq) - log_q(xq)
    w_p = -beta * energy(xp) - log_q(xp)

    is_ = est.importance_log_z(w_q)
    bar = est.bar(-w_q, w_p)
    assert is_.ess > 1000
    for e in (is_, bar):
        within_sigmas(e.log_z, exact, e.log_z_stderr)
    upper, lower = est.variational_bound(w_q), est.forward_bound(-w_p)
    assert upper.log_z < exact - 3 * upper.log_z_stderr  # βF_var > βF: a strict bound here
    assert lower.log_z > exact + 3 * lower.log_z_stderr
    assert bar.log_z_stderr < is_.log_z_stderr


def test_exact_coulomb_pair_sampler_matches_virial():
    """The test's own sampler: 2⟨Σ|x|²⟩ − ⟨V_C⟩ = dN/β (virial identity)."""
    rng = np.random.default_rng(3)
    beta, dim = 3.0, 3
    x = exact_coulomb_pair_samples(rng, 200_000, beta, dim)
    v = 2 * np.sum(x * x, axis=(1, 2)) - 1.0 / np.linalg.norm(x[:, 0] - x[:, 1], axis=1)
    within_sigmas(v.mean(), dim * 2 / beta, v.std() / math.sqrt(v.size))


def test_coupling_ladder_matches_exact_pair(monkeypatch):
    import boltzgen.mcmc._ladder as ladder_module

    # The ladder evaluates the Coulomb energy through pair_distances (and the trap term in
    # closed form beside it): count the configurations it really receives.
    pairs = Counter(ladder_module.pair_distances, 2)
    monkeypatch.setattr(ladder_module, "pair_distances", pairs)
    system = CoulombGas(2, 2)
    beta = 2.0
    r = coupling_ladder(
        system, beta, key=jax.random.key(1), n_states=6, n_chains=64, n_warmup=200, n_records=40
    )
    exact = system.exact_log_z(beta)
    within_sigmas(r.log_z_bar, exact, r.log_z_bar_stderr)
    within_sigmas(r.log_z_mbar, exact, r.log_z_mbar_stderr)
    assert r.target_samples.shape[1:] == (64, 2, 2)
    assert r.n_energy_evals == pairs.n > 0  # HMC moves, burn-in weights and records
    with pytest.raises(ValueError, match="n_states"):
        coupling_ladder(system, beta, key=jax.random.key(0), n_states=1)


def test_refine_spec_section():
    from boltzgen.references import CouplingLadder
    from boltzgen.stages import SMC, NeuralMCMC

    spec = load_spec(None, ["refine.method=smc", "refine.n_steps=7"])
    (smc,) = spec.stages
    assert isinstance(smc, SMC) and smc.n_steps == 7 and smc.resample_threshold == 0.5
    assert isinstance(load_spec(None).stages[0], NeuralMCMC)
    ladder = load_spec(None, ["reference.method=ladder"]).reference
    assert isinstance(ladder, CouplingLadder) and ladder.n_states > 1
    # Parameters whose default is None ("auto") are settable from a spec.
    spec = load_spec(None, ["refine.target_accept=0.7", "refine.n_warmup=10"])
    assert spec.stages[0].target_accept == 0.7 and spec.stages[0].n_warmup == 10
    assert (
        load_spec(None, ["refine.method=ais", "refine.pilot_chains=0"]).stages[0].pilot_chains == 0
    )
    for bad, msg in [
        (["refine.method=hmc"], "unknown refine.method 'hmc'"),
        (["refine.method=ais", "refine.n_stepz=3"], "unknown key refine.n_stepz"),
        (["refine.method=nmcmc", "refine.n_steps=1.5"], "refine.n_steps must be an integer"),
        (["refine.method=none", "refine.n_steps=5"], "unknown key refine.n_steps for method"),
        (["refine.n_chains=0"], "refine.n_chains must be an integer >= 1, got 0"),
        (["refine.target_accept=1.5"], r"refine.target_accept must be in \(0, 1\)"),
        (["refine.local_kernel=hmcc"], "refine.local_kernel must be"),
        (["reference.n_chains=0"], "reference.n_chains must be an integer >= 1"),
        (["reference.method=ladder", "reference.n_states=1"], "reference.n_states must be"),
        (["reference.method=ti"], "reference 'ti' needs a spin system"),
    ]:
        with pytest.raises(SpecError, match=msg):
            load_spec(None, bad)


SMALL_RUN = dict(
    trainer=bg.train.Trainer(steps=150, batch_size=128),
    estimation=bg.Estimation(n_samples=4096, n_boot=0),
    progress=False,
)


@pytest.mark.parametrize(
    "stage",
    [
        pytest.param(bg.stages.SMC(n_chains=512, n_steps=20), marks=pytest.mark.slow),
        bg.stages.NeuralMCMC(n_chains=128, n_steps=40, path_chains=0),  # paths: test_physics
    ],
)
def test_run_with_refinement_on_a_gaussian(tmp_path, stage):
    """A mismatched, briefly trained flow on a correlated Gaussian: the refined ln Z (and BAR
    with nmcmc) within errors of the exact value; written to /estimates and /refine."""
    system = Gaussian.correlated([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
    beta = 1.5
    r = bg.run(system, beta, stages=(stage,), reference=None, **SMALL_RUN)
    exact = system.exact_log_z(beta)
    method = stage.method
    e = r.estimates[f"refined_{method}"]
    within_sigmas(e.log_z, exact, e.log_z_stderr)
    assert e.cost.n_energy_evals > 0 and math.isfinite(e.extra["ess_before"])
    if method == "nmcmc":
        within_sigmas(r.estimates["bar"].log_z, exact, r.estimates["bar"].log_z_stderr)
        assert r.estimates["forward_bound_refined"].kind == "lower_bound"
    path = tmp_path / "r.h5"
    r.save(path)
    back = Result.load(path)
    assert list(back.estimates) == list(r.estimates)
    assert back.estimates[e.method] == e
    assert back.refined["attrs"]["method"] == method
    assert back.refined["x"].shape[1:] == (3,)
    assert f"refined_{method}" in back.table()


@pytest.mark.parametrize(
    "state_a, state_b",
    [
        (dict(beta=2.0, coupling=0.5), dict(beta=2.0, coupling=1.0)),  # two couplings λ
        (dict(beta=2.0, coupling=1.0), dict(beta=3.0, coupling=1.0)),  # two temperatures
    ],
)
def test_two_state_works_on_exact_coulomb_pairs(state_a, state_b):
    """ΔF between two N = 2 Coulomb gases from forward and reverse works on exact samples:
    Jarzynski both ways, BAR and the second-law bracket against the exact quadrature."""
    rng = np.random.default_rng(11)
    dim, n = 2, 20_000

    def u(x, beta, coupling):
        r = np.linalg.norm(x[:, 0] - x[:, 1], axis=1)
        return beta * (np.sum(x * x, axis=(1, 2)) + coupling / r)

    xa = exact_coulomb_pair_samples(rng, n, state_a["beta"], dim, coupling=state_a["coupling"])
    xb = exact_coulomb_pair_samples(rng, n, state_b["beta"], dim, coupling=state_b["coupling"])
    w_f = u(xa, **state_b) - u(xa, **state_a)
    w_r = u(xb, **state_a) - u(xb, **state_b)
    exact = CoulombGas(2, dim, coupling=state_b["coupling"]).exact_log_z(
        state_b["beta"]
    ) - CoulombGas(2, dim, coupling=state_a["coupling"]).exact_log_z(state_a["beta"])
    out = est.two_state(w_f, w_r)
    for m in ("jarzynski_forward", "jarzynski_reverse", "bar"):
        within_sigmas(out[m].log_z, exact, out[m].log_z_stderr)
    upper, lower = out["work_upper_bound"], out["work_lower_bound"]
    assert upper.log_z < exact < lower.log_z  # −⟨W_F⟩ ≤ ln(Z_B/Z_A) ≤ ⟨W_R⟩
    assert out["bar"].log_z_stderr <= min(
        out["jarzynski_forward"].log_z_stderr, out["jarzynski_reverse"].log_z_stderr
    )


@pytest.mark.slow
def test_ais_from_a_poor_flow_agrees_with_monte_carlo_reference_n6():
    """refine_anneal from an UNTRAINED equivariant flow on Coulomb N = 6, β = 10 agrees with
    the foundation's reference (AIS from the harmonic trap) within errors."""
    from boltzgen.flows import make_sampler
    from boltzgen.references import TrapAIS
    from boltzgen.stages import AIS, StageContext

    system, beta = CoulombGas(6, 2), 10.0
    q = make_sampler("equivariant", system, key=jax.random.key(0))
    ctx = StageContext(
        system, beta, q, {"log_w": np.zeros(2)}, None, key=jax.random.key(1), progress=False
    )
    refined = AIS(n_chains=512, n_steps=400)(ctx).estimates
    ref, _ = TrapAIS()(system, beta, key=jax.random.key(2), progress=False)
    a, b = refined["refined_ais"], ref["ais"]
    assert a.extra["ess_before"] < 5  # a poor q: plain importance sampling is hopeless
    within_sigmas(a.log_z - b.log_z, 0.0, math.hypot(a.log_z_stderr, b.log_z_stderr))


def test_bar_flags_states_without_overlap():
    """q that misses p: the asymptotic BAR error is meaningless and the estimate is flagged;
    well-overlapping states are not."""
    rng = np.random.default_rng(5)
    # A = N(0, 1), B = N(12, 1) in 1-D, both normalised: exact Δf = 0.
    xa, xb = rng.normal(size=2000), 12.0 + rng.normal(size=2000)

    def du(x):  # u_B − u_A
        return 0.5 * (x - 12.0) ** 2 - 0.5 * x**2

    poor = est.bar(du(xa), -du(xb))
    assert "low_overlap" in poor.flags and poor.extra["overlap"] < est.MIN_TRUSTED_OVERLAP
    xb = 0.5 + rng.normal(size=2000)

    def du_close(x):
        return 0.5 * (x - 0.5) ** 2 - 0.5 * x**2

    good = est.bar(du_close(xa), -du_close(xb))
    assert not good.flags
    within_sigmas(good.log_z, 0.0, good.log_z_stderr)
    r = Result(beta=1.0, system={"kind": "gaussian"}, estimates={"bar": poor, "b2": good})
    assert r.best() is good  # the flagged estimate is passed over
    assert "overlap" in r.table()
