import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_allclose
from scipy import integrate

from boltzgen.systems import CoulombGas, Gaussian, HarmonicTrap, coulomb_pair_log_z, make_system


def test_coulomb_energy_by_hand():
    x = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    # trap: 0 + 1 + 4; pairs: 1/1 + 1/2 + 1/sqrt(5)
    expected = 5.0 + 1.0 + 0.5 + 1 / math.sqrt(5)
    assert_allclose(CoulombGas(3, 2).energy(x), expected, rtol=1e-6)
    assert_allclose(
        CoulombGas(3, 2, trap=2.0, coupling=3.0).energy(x),
        10 + 3 * (1.5 + 1 / math.sqrt(5)),
        rtol=1e-6,
    )


def test_coulomb_ground_state_n6():
    # Ground state of 6 charges in the 2-D trap (Bedanov & Peeters units, κ = λ = 1):
    # E_0 = 16.8273381, shells (1, 5). Minimise from a ring guess.
    import scipy.optimize as so

    sys6 = CoulombGas(6, 2)
    with jax.enable_x64(True):
        f = jax.jit(lambda v: sys6.energy(v.reshape(6, 2)))
        g = jax.jit(jax.grad(lambda v: sys6.energy(v.reshape(6, 2))))
        ang = 2 * np.pi * np.arange(5) / 5
        x0 = np.concatenate([[[0.01, 0.02]], np.stack([np.cos(ang), np.sin(ang)], 1)]).ravel()
        res = so.minimize(
            lambda v: float(f(jnp.asarray(v))),
            x0,
            jac=lambda v: np.asarray(g(jnp.asarray(v))),
            method="BFGS",
            options={"gtol": 1e-10},
        )
    assert abs(res.fun - 16.8273381) < 1e-6


def test_energy_gradient_finite_near_collision():
    x = jnp.array([[0.0, 0.0], [1e-3, 0.0], [0.5, 0.5]])
    g = jax.grad(CoulombGas(3, 2).energy)(x)
    assert jnp.all(jnp.isfinite(g))


def test_energy_shape_error_names_shapes():
    with pytest.raises(
        ValueError, match=r"expects one configuration of shape \(6, 2\), got \(12,\)"
    ):
        CoulombGas(6, 2).energy(jnp.zeros(12))


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("beta", [0.5, 2.0, 5.0])
def test_pair_log_z_against_full_quadrature(dim, beta):
    # Independent check of the reduction to 1-D: integrate the N = 2 Boltzmann factor directly
    # in (centre of mass) × (relative coordinate) without the closed-form COM factor, d = 1 only
    # exactly in 2-D quadrature; for d > 1 compare against the radial form with a different
    # integration method (Gauss-Laguerre-free scipy dblquad over (R, r)).
    if dim == 1:
        # x1, x2 on a line: E = x1² + x2² + 1/|x1 - x2|; integrate over x1 > x2 and double.
        f = lambda x2, x1: (
            math.exp(-beta * (x1 * x1 + x2 * x2 + 1.0 / (x1 - x2))) if x1 > x2 else 0.0
        )
        val, _ = integrate.dblquad(
            f, -8, 8, lambda x1: -8, lambda x1: x1, epsabs=1e-12, epsrel=1e-10
        )
        expected = math.log(2 * val)
    else:
        # |R| radial × |r| radial with the explicit sphere areas.
        area = 2 * math.pi if dim == 2 else 4 * math.pi
        f = lambda r, R: (
            area**2
            * R ** (dim - 1)
            * r ** (dim - 1)
            * math.exp(-beta * (2 * R * R + r * r / 2 + 1 / r))
        )
        val, _ = integrate.dblquad(f, 0, 10, 1e-9, 20, epsabs=1e-14, epsrel=1e-10)
        expected = math.log(val)
    assert abs(coulomb_pair_log_z(beta, dim) - expected) < 1e-7


def test_exact_log_z_scaling_relation():
    # Z(β; κ, λ) = (λ/κ)^{dN/3} Z(β κ^{1/3} λ^{2/3}; 1, 1), N = 2, d = 2: x = s y with
    # s = (λ/κ)^{1/3} gives E(x; κ, λ) = κ^{1/3} λ^{2/3} E(y; 1, 1) and dx = s^{dN} dy.
    beta, kappa, lam, d, n = 1.7, 2.0, 0.5, 2, 2
    lhs = coulomb_pair_log_z(beta, d, kappa, lam)
    rhs = (d * n / 3) * math.log(lam / kappa) + coulomb_pair_log_z(
        beta * kappa ** (1 / 3) * lam ** (2 / 3), d
    )
    assert abs(lhs - rhs) < 1e-9


def test_one_particle_and_trap_exact():
    assert abs(CoulombGas(1, 3).exact_log_z(2.0) - 1.5 * math.log(math.pi / 2)) < 1e-14
    assert abs(HarmonicTrap(4, 2, trap=3.0).exact_log_z(0.5) - 4 * math.log(math.pi / 1.5)) < 1e-14
    assert CoulombGas(3, 2).exact_log_z(1.0) is None


def test_gaussian_exact_log_z_by_quadrature():
    cov = np.array([[1.0, 0.6], [0.6, 2.0]])
    g = Gaussian.correlated(cov, mean=[0.3, -1.0])
    beta = 1.7
    with jax.enable_x64(True):
        e = jax.jit(lambda a, b: g.energy(jnp.stack([a, b])))
        val, _ = integrate.dblquad(
            lambda b, a: math.exp(-beta * float(e(a, b))), -12, 12, -12, 12, epsrel=1e-10
        )
    assert abs(math.log(val) - g.exact_log_z(beta)) < 1e-7


@pytest.mark.parametrize(
    "kind,params,match",
    [
        ("nope", {}, "unknown system kind 'nope'"),
        ("coulomb", {"n_particles": 0}, "n_particles must be an integer >= 1, got 0"),
        ("coulomb", {"dim": 4}, "dim must be 1, 2 or 3, got 4"),
        ("coulomb", {"n_particles": 2.5}, "system.n_particles must be int, got 2.5"),
        ("coulomb", {"trap": -1.0}, "trap must be a positive number, got -1.0"),
        ("coulomb", {"colour": 1}, "unknown parameter.*colour.*valid: n_particles"),
        ("gaussian", {"sigma": 0}, "sigma must be a positive number"),
    ],
)
def test_bad_system_parameters(kind, params, match):
    with pytest.raises(ValueError, match=match):
        make_system(kind, **params)


def test_gaussian_bad_covariance():
    with pytest.raises(ValueError, match="positive definite"):
        Gaussian.correlated([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        Gaussian([0.0, 0.0], np.eye(3))
