"""DW4 and Lennard-Jones particle systems: symmetries, gradients, known minima, registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_allclose
from scipy import optimize
from scipy.spatial.transform import Rotation

from boltzgen.systems import (
    KLEIN_SIGMA,
    LJ13_GLOBAL_MINIMUM,
    SYSTEMS,
    DoubleWellParticles,
    LennardJones,
    lj_energy_no_tether,
    make_system,
)


def _random_config(rng, n, d, scale):
    return rng.normal(size=(n, d)) * scale


def _rotation(rng, d):
    if d == 3:
        return Rotation.random(random_state=rng).as_matrix()
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))  # orthogonal, possibly a reflection (also a symmetry)


CASES = [
    (DoubleWellParticles(), 2.0),
    (DoubleWellParticles(n_particles=5, dim=3, a=0.3, tau=2.0), 2.0),
    (LennardJones(tether=0.0), 1.0),
    (LennardJones(n_particles=7, dim=2, tether=0.0, sigma=KLEIN_SIGMA), 1.0),
]


@pytest.mark.parametrize("system,scale", CASES, ids=lambda c: getattr(c, "kind", ""))
def test_invariances(system, scale):
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        n, d = system.event_shape
        energy = jax.jit(system.energy)
        for _ in range(3):
            x = _random_config(rng, n, d, scale)
            e = float(energy(jnp.asarray(x)))
            assert np.isfinite(e)
            perm = rng.permutation(n)
            assert_allclose(energy(jnp.asarray(x[perm])), e, rtol=1e-12, atol=1e-12)
            rot = _rotation(rng, d)
            shift = rng.normal(size=(1, d)) * 5
            moved = x @ rot.T + shift
            assert_allclose(energy(jnp.asarray(moved)), e, rtol=1e-10, atol=1e-10)
    assert system.permutation_symmetric


def test_tether_breaks_nothing_but_scale():
    """The tether is translation, rotation and permutation invariant too; it adds (k/2)Σ|x−x̄|²."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        lj = LennardJones(tether=1.5)
        x = jnp.asarray(_random_config(rng, 13, 3, 1.0))
        centred = x - x.mean(axis=0, keepdims=True)
        want = lj.energy_no_tether(x) + 0.75 * jnp.sum(centred**2)
        assert_allclose(lj.energy(x), want, rtol=1e-12)
        assert_allclose(lj.energy(x + 3.0), lj.energy(x), rtol=1e-12)
        rot = jnp.asarray(Rotation.random(random_state=rng).as_matrix())
        assert_allclose(lj.energy(x @ rot.T), lj.energy(x), rtol=1e-10)
        assert_allclose(lj.energy(x[::-1]), lj.energy(x), rtol=1e-12)
        assert_allclose(lj_energy_no_tether(x), lj.energy_no_tether(x), rtol=1e-12)


@pytest.mark.parametrize(
    "system",
    [
        DoubleWellParticles(),
        LennardJones(),
        LennardJones(n_particles=13, soften=0.8),
        DoubleWellParticles(n_particles=3, dim=1),
    ],
    ids=["dw4", "lj13", "lj13_soft", "dw3_1d"],
)
def test_finite_gradients(system):
    rng = np.random.default_rng(3)
    n, d = system.event_shape
    x = jnp.asarray(_random_config(rng, n, d, 1.5), dtype=jnp.float32)
    grads = jax.jit(jax.vmap(jax.grad(system.energy)))(jnp.stack([x, 0.5 * x, 2 * x]))
    assert grads.shape == (3, n, d)
    assert bool(jnp.all(jnp.isfinite(grads)))


def test_soften_is_linear_core_and_exact_outside():
    lj = LennardJones(n_particles=2, dim=3, tether=0.0)
    soft = LennardJones(n_particles=2, dim=3, tether=0.0, soften=0.9)
    r = jnp.array([0.1, 0.5, 0.89, 0.9, 1.0, 1.5])
    v, vs = lj.pair_energy(r), soft.pair_energy(r)
    assert_allclose(vs[3:], v[3:], rtol=1e-6)
    assert bool(jnp.all(vs[:3] < v[:3]))  # finite, below the exact repulsive core
    slope = jax.grad(lj.pair_energy)(0.9)
    assert_allclose(vs[:3], v[3] + slope * (r[:3] - 0.9), rtol=1e-5)
    assert bool(jnp.isfinite(jax.grad(soft.pair_energy)(0.0)))
    assert "soften" not in lj.params() and soft.params()["soften"] == 0.9


def test_lj_pair_minimum():
    with jax.enable_x64(True):
        for sigma, eps in [(1.0, 1.0), (KLEIN_SIGMA, 1.0), (0.7, 2.5)]:
            lj = LennardJones(n_particles=2, dim=3, epsilon=eps, sigma=sigma, tether=0.0)
            rm = 2 ** (1 / 6) * sigma
            x = jnp.array([[0.0, 0.0, 0.0], [rm, 0.0, 0.0]])
            energy = jax.jit(lj.energy)
            assert_allclose(energy(x), -eps, rtol=1e-12)
            assert_allclose(jax.jit(jax.grad(lj.energy))(x), np.zeros((2, 3)), atol=1e-10)
            for dr in (-0.01, 0.01):
                assert float(energy(x + jnp.array([[0.0] * 3, [dr, 0.0, 0.0]]))) > -eps
        assert_allclose(
            LennardJones(2, 3, sigma=KLEIN_SIGMA, tether=0.0).pair_energy(1.0), -1.0, rtol=1e-12
        )


def _icosahedron(radius):
    phi = (1 + 5**0.5) / 2
    v = []
    for s1 in (-1, 1):
        for s2 in (-1, 1):
            v += [(0, s1, s2 * phi), (s1, s2 * phi, 0), (s2 * phi, 0, s1)]
    v = np.array(v, dtype=float)
    v *= radius / np.linalg.norm(v[0])
    return np.vstack([np.zeros((1, 3)), v])


def _relax(system, x0):
    """L-BFGS local minimisation of ``system.energy`` from ``x0`` (N, d) in float64."""
    shape = x0.shape
    fun = jax.jit(jax.value_and_grad(lambda f: system.energy(f.reshape(shape))))

    def f(flat):
        e, g = fun(jnp.asarray(flat))
        return float(e), np.asarray(g, dtype=float)

    return optimize.minimize(f, x0.ravel(), jac=True, method="L-BFGS-B", tol=1e-14)


def test_lj13_global_minimum():
    with jax.enable_x64(True):
        lj = LennardJones(n_particles=13, dim=3, tether=0.0)
        x0 = _icosahedron(1.1) + 0.02 * np.random.default_rng(4).normal(size=(13, 3))
        res = _relax(lj, x0)
        assert abs(res.fun - LJ13_GLOBAL_MINIMUM) < 1e-5, res.fun
        # The tethered system at the same geometry adds exactly (1/2)Σ|x − x̄|².
        x = jnp.asarray(res.x.reshape(13, 3))
        tethered = LennardJones(tether=1.0)
        centred = x - x.mean(axis=0, keepdims=True)
        assert_allclose(tethered.energy(x), res.fun + 0.5 * jnp.sum(centred**2), rtol=1e-10)


def _mackay55(nn):
    """The 55-atom Mackay icosahedron with nearest-neighbour distance ≈ ``nn``."""
    ico = _icosahedron(1.0)[1:]  # 12 vertices, circumradius 1
    d = np.linalg.norm(ico[:, None] - ico[None], axis=-1)
    edge = d[d > 0].min()
    pairs = [(i, j) for i in range(12) for j in range(i + 1, 12) if d[i, j] < edge * 1.01]
    assert len(pairs) == 30
    shell2 = np.vstack([2 * ico, [ico[i] + ico[j] for i, j in pairs]])  # vertices + edge midpoints
    x = np.vstack([np.zeros((1, 3)), ico, shell2])  # 1 + 12 + 42 = 55
    return x * nn / edge


def test_lj55_global_minimum():
    """L-BFGS from the Mackay icosahedron reaches the tabulated LJ55 minimum −279.248470 ε."""
    from boltzgen.systems import LJ55_GLOBAL_MINIMUM

    with jax.enable_x64(True):
        lj = LennardJones(n_particles=55, dim=3, tether=0.0)
        x0 = _mackay55(2 ** (1 / 6)) + 0.01 * np.random.default_rng(5).normal(size=(55, 3))
        res = _relax(lj, x0)
        assert abs(res.fun - LJ55_GLOBAL_MINIMUM) < 1e-5, res.fun


def test_dw4_pair_energy_closed_form():
    with jax.enable_x64(True):
        a, b, c, d0, tau = 0.3, -4.0, 0.9, 4.0, 2.0
        dw = DoubleWellParticles(n_particles=2, dim=2, a=a, b=b, c=c, d0=d0, tau=tau)
        r = np.array([0.5, 3.0, 4.0, 4.0 + np.sqrt(2 / 0.9), 6.5])
        xs = np.zeros((len(r), 2, 2)) + np.array([0.2, -0.1])
        xs[:, 1, 0] += r
        s = r - d0
        got = jax.jit(jax.vmap(dw.energy))(jnp.asarray(xs))
        assert_allclose(got, (a * s + b * s**2 + c * s**4) / tau, rtol=1e-12)
        # Standard DW4: pair minima at r = 4 ± sqrt(-b/(2c)), depth -b²/(4c).
        std = DoubleWellParticles(n_particles=2)
        r_min = 4.0 + np.sqrt(4.0 / 1.8)
        x = jnp.array([[0.0, 0.0], [r_min, 0.0]])
        assert_allclose(std.energy(x), -16.0 / 3.6, rtol=1e-12)
        assert_allclose(jax.grad(std.energy)(x), np.zeros((2, 2)), atol=1e-10)
        # N = 4: the sum over the six i<j pairs (bgflow / Köhler et al. convention).
        rng = np.random.default_rng(5)
        x4 = jnp.asarray(rng.normal(size=(4, 2)) * 3)
        dw4 = DoubleWellParticles()
        x4np = np.asarray(x4)
        want = 0.0
        for i in range(4):
            for j in range(i + 1, 4):
                s = np.linalg.norm(x4np[i] - x4np[j]) - 4.0
                want += -4.0 * s**2 + 0.9 * s**4
        assert_allclose(dw4.energy(x4), want, rtol=1e-12)


def test_registry_round_trip():
    lj = make_system("lennard_jones", n_particles=13, dim=3)
    assert isinstance(lj, LennardJones) and lj.kind == "lennard_jones"
    assert lj.event_shape == (13, 3) and lj.soften is None and lj.tether == 1.0
    assert make_system("lennard_jones", **lj.params()) == lj
    dw = make_system("double_well")
    assert isinstance(dw, DoubleWellParticles) and dw.kind == "double_well"
    assert dw.event_shape == (4, 2)
    assert dw.params() == SYSTEMS["double_well"].defaults()
    assert make_system("double_well", **dw.params()) == dw
    assert set(lj.params()) == set(SYSTEMS["lennard_jones"].params)


@pytest.mark.parametrize(
    "kind,params,match",
    [
        ("lennard_jones", {"n_particles": 1}, "n_particles"),
        ("lennard_jones", {"dim": 4}, "dim"),
        ("lennard_jones", {"epsilon": -1.0}, "epsilon"),
        ("lennard_jones", {"sigma": 0.0}, "sigma"),
        ("lennard_jones", {"tether": -0.5}, "tether"),
        ("lennard_jones", {"soften": 0.5}, "soften"),
        ("lennard_jones", {"sigma": "1"}, "sigma"),
        ("double_well", {"c": 0.0}, "c"),
        ("double_well", {"d0": -4.0}, "d0"),
        ("double_well", {"tau": 0}, "tau"),
        ("double_well", {"a": float("nan")}, "a"),
        ("double_well", {"n_particles": True}, "n_particles"),
    ],
)
def test_bad_values(kind, params, match):
    with pytest.raises(ValueError, match=match):
        make_system(kind, **params)


def test_bad_values_direct_and_shape():
    with pytest.raises(ValueError, match="soften"):
        LennardJones(soften=-1.0)
    with pytest.raises(ValueError, match="shape"):
        LennardJones().energy(jnp.zeros((12, 3)))
    with pytest.raises(ValueError, match="shape"):
        LennardJones().energy_no_tether(jnp.zeros((13, 2)))


def test_run_refuses_translation_invariant_systems_without_zero_com():
    """Z diverges without a centre-of-mass treatment: run() says so instead of a number."""
    import boltzgen as bg

    with pytest.raises(ValueError, match="translation-invariant"):
        bg.run(DoubleWellParticles(), 1.0, _realnvp_on(DoubleWellParticles()), progress=False)


def _realnvp_on(system):
    from boltzgen.flows import RealNVP

    return RealNVP(tuple(system.event_shape), key=jax.random.key(0), n_layers=2, hidden=8)


def test_cli_refuses_translation_invariant_systems_with_exit_2(tmp_path):
    from boltzgen.cli import main

    out = tmp_path / "x.h5"
    args = ["run", "--quiet", "--out", str(out), "--set", 'system.kind="lennard_jones"']
    assert main([*args, "--set", 'sampler.kind="equivariant"']) == 2
    assert not out.exists()


def dw_pair_log_z(system: DoubleWellParticles, beta: float) -> float:
    """Exact ln Z of TWO double-well particles on the zero-COM subspace (orthonormal coords).

    The subspace coordinate u = (x_1 − x_2)/√2 ∈ R^d is orthonormal and r = √2|u|, so
    Z = S_d ∫_0^∞ u^{d−1} exp(−βv(√2 u)) du (S_1 = 2, S_2 = 2π, S_3 = 4π).
    """
    from scipy.integrate import quad

    d = system.dim
    area = {1: 2.0, 2: 2.0 * np.pi, 3: 4.0 * np.pi}[d]

    def f(u):
        return area * u ** (d - 1) * np.exp(-beta * float(system.pair_energy(np.sqrt(2.0) * u)))

    wells = [(system.d0 - 1.5) / np.sqrt(2.0), (system.d0 + 1.5) / np.sqrt(2.0)]
    z, _ = quad(f, 0.0, 20.0, limit=200, points=wells)
    return float(np.log(z))


def test_centred_trap_exact_log_z_and_reference_ais():
    """AIS from a centred trap to two DW particles reproduces the exact subspace integral."""
    import math

    from boltzgen.mcmc import particle_reference
    from boltzgen.systems import CentredTrap

    trap = CentredTrap(3, 2, 0.7)
    # On the subspace: 4 orthonormal coordinates of variance 1/(2βκ) each.
    assert trap.exact_log_z(2.0) == pytest.approx(2.0 * math.log(math.pi / 1.4), rel=1e-14)
    y = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, -2.0]])
    assert float(trap.energy(jnp.asarray(y + 5.0))) == pytest.approx(0.7 * np.sum(y * y))
    system = DoubleWellParticles(n_particles=2, dim=2)
    ref = particle_reference(system, 1.0, key=jax.random.key(0), n_chains=256, n_steps=400)
    exact = dw_pair_log_z(system, 1.0)
    assert abs(ref.log_z - exact) < 4 * ref.log_z_stderr, (ref.log_z, ref.log_z_stderr, exact)
    assert np.max(np.abs(np.mean(ref.samples, axis=1))) < 1e-10  # centred


@pytest.mark.slow
def test_run_zero_com_cnf_on_two_double_well_particles():
    """End to end: a zero-COM CNF's importance-sampling ln Z is the exact subspace integral."""
    import boltzgen as bg

    system = DoubleWellParticles(n_particles=2, dim=2)
    opts = dict(hidden=16, depth=1, n_steps=8, base_scale=2.0)
    from conftest import make_q

    r = bg.run(
        system,
        1.0,
        make_q(system, "cnf", **opts),
        trainer=bg.train.Trainer(steps=60, batch_size=64),
        estimation=bg.Estimation(n_samples=2048),
        stages=(),
        reference=None,
        progress=False,
    )
    e = r.estimates["importance"]
    exact = dw_pair_log_z(system, 1.0)
    assert e.ess > 100
    assert abs(e.log_z - exact) < 4 * e.log_z_stderr, (e.log_z, e.log_z_stderr, exact)
    assert r.estimates["variational"].log_z <= exact  # a lower bound on ln Z


def test_run_softened_core_is_training_only():
    """A softened LJ core trains the sampler; the estimates use the exact potential."""
    import boltzgen as bg

    system = LennardJones(n_particles=3, dim=2, sigma=KLEIN_SIGMA, soften=0.9)
    exact = LennardJones(n_particles=3, dim=2, sigma=KLEIN_SIGMA)
    from conftest import make_q

    r = bg.run(
        system,
        1.0,
        make_q(system, "cnf", hidden=8, depth=1, n_steps=4),
        trainer=bg.train.Trainer(steps=2, batch_size=16),
        estimation=bg.Estimation(n_samples=64),
        stages=(),
        reference=None,
        progress=False,
    )
    e = np.asarray(jax.vmap(exact.energy)(jnp.asarray(r.samples["x"], jnp.float32)))
    soft = np.asarray(jax.vmap(system.energy)(jnp.asarray(r.samples["x"], jnp.float32)))
    assert_allclose(r.samples["energy"], e, rtol=1e-4, atol=1e-4)
    assert np.any(np.abs(soft - e) > 1.0)  # some samples sit inside the softened core
    assert r.system["soften"] == 0.9
