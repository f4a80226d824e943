"""Coulomb gas in a harmonic trap, and the harmonic trap alone."""

from __future__ import annotations

import math
from typing import ClassVar

import jax.numpy as jnp
import numpy as np
from scipy import integrate

from boltzgen.systems._base import (
    AbstractParticleSystem,
    check_positive_float,
    check_positive_int,
)


def pair_distances(x):
    """Distances |x_i - x_j| for i < j of one configuration ``x`` of shape (N, d).

    Built from the i<j pairs only: the norm of the full N×N difference matrix has NaN
    gradients on its zero diagonal even when masked later.
    """
    n = x.shape[0]
    i, j = np.triu_indices(n, k=1)
    diff = x[i] - x[j]
    return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


def _unit_sphere_area(dim: int) -> float:
    """Surface area S_d of the unit sphere in R^d (S_1 = 2, S_2 = 2π, S_3 = 4π)."""
    return 2.0 * math.pi ** (dim / 2) / math.gamma(dim / 2)


def coulomb_pair_log_z(beta: float, dim: int, trap: float = 1.0, coupling: float = 1.0) -> float:
    """Exact ln Z of two charges in a harmonic trap, by 1-D quadrature (float64).

    With E = κ(|x_1|² + |x_2|²) + λ/|x_1 - x_2|, the centre of mass R = (x_1 + x_2)/2 and the
    separation r = x_1 - x_2 (unit Jacobian) decouple:

        Z = (π/(2βκ))^{d/2} · S_d · ∫_0^∞ r^{d-1} exp[-β(κr²/2 + λ/r)] dr.

    The integrand is shifted by its maximum before integrating, so large β is safe.
    """
    beta = check_positive_float("beta", beta)

    def f(r):  # minus the log of the radial integrand
        return beta * (trap * r * r / 2 + coupling / r) - (dim - 1) * math.log(r)

    # The maximiser solves βκ r - βλ/r² - (d-1)/r = 0, i.e. βκ r³ - (d-1) r - βλ = 0.
    roots = np.roots([beta * trap, 0.0, -(dim - 1), -beta * coupling])
    r_star = max(float(r.real) for r in roots if abs(r.imag) < 1e-9 and r.real > 0)
    f_star = f(r_star)
    width = 1.0 / math.sqrt(beta * trap + 2 * beta * coupling / r_star**3 + (dim - 1) / r_star**2)
    pieces = [0.0, max(r_star - 10 * width, 0.0), r_star, r_star + 10 * width, np.inf]
    total = 0.0
    for a, b in zip(pieces[:-1], pieces[1:], strict=True):
        if b <= a:
            continue
        val, _ = integrate.quad(
            lambda r: math.exp(-(f(r) - f_star)) if r > 0 else 0.0,
            a,
            b,
            epsabs=0.0,
            epsrel=1e-13,
            limit=200,
        )
        total += val
    return (
        (dim / 2) * math.log(math.pi / (2 * beta * trap))
        + math.log(_unit_sphere_area(dim))
        + math.log(total)
        - f_star
    )


class CoulombGas(AbstractParticleSystem):
    r"""Charges in a harmonic trap: E = λ Σ_{i<j} 1/|x_i - x_j| + κ Σ_i |x_i|².

    Dimensionless units of Bedanov & Peeters (PRB 49, 2667 (1994)) with κ = λ = 1 by default.
    The seed demo is d = 2, N = 6, β = 10. Exact ln Z is known for N = 1 (Gaussian) and N = 2
    (1-D quadrature, :func:`coulomb_pair_log_z`).

    Args:
        n_particles: number of charges N ≥ 1.
        dim: spatial dimension d ∈ {1, 2, 3}.
        trap: trap stiffness κ > 0.
        coupling: Coulomb coupling λ > 0.
    """

    kind: ClassVar[str] = "coulomb"
    #: A harmonic trap with internal forces: the centre of mass is exactly Gaussian,
    #: N(0, I/(2βκN)), independent of the relative coordinates.
    com_separable: ClassVar[bool] = True
    n_particles: int
    dim: int
    trap: float = 1.0
    coupling: float = 1.0

    def __check_init__(self):
        check_positive_int("n_particles", self.n_particles)
        if self.dim not in (1, 2, 3) or isinstance(self.dim, bool):
            raise ValueError(f"dim must be 1, 2 or 3, got {self.dim!r}")
        check_positive_float("trap", self.trap)
        check_positive_float("coupling", self.coupling)

    def _energy(self, x):
        trap = self.trap * jnp.sum(x * x)
        if self.n_particles < 2:
            return trap
        return trap + self.coupling * jnp.sum(1.0 / pair_distances(x))

    def coulomb_energy(self, x):
        """Interaction part V_C = Σ_{i<j} 1/|x_i - x_j| (without λ) of one configuration."""
        if self.n_particles < 2:
            return jnp.zeros((), x.dtype)
        return jnp.sum(1.0 / pair_distances(x))

    def exact_log_z(self, beta: float) -> float | None:
        """Exact ln Z for N = 1 and N = 2, None otherwise."""
        beta = check_positive_float("beta", beta)
        if self.n_particles == 1:
            return (self.dim / 2) * math.log(math.pi / (beta * self.trap))
        if self.n_particles == 2:
            return coulomb_pair_log_z(beta, self.dim, self.trap, self.coupling)
        return None

    def params(self) -> dict:
        """Run-spec parameters."""
        return dict(
            n_particles=self.n_particles, dim=self.dim, trap=self.trap, coupling=self.coupling
        )


class HarmonicTrap(AbstractParticleSystem):
    """N independent particles in an isotropic trap: E = κ Σ_i |x_i|².

    Exact ln Z = (dN/2) ln(π/(βκ)). The Monte Carlo reference anneals from it to the
    Coulomb gas.

    Args:
        n_particles: number of particles N ≥ 1.
        dim: spatial dimension d ≥ 1.
        trap: stiffness κ > 0.
    """

    kind: ClassVar[str] = "harmonic"
    #: A harmonic trap with internal forces: the centre of mass is exactly Gaussian,
    #: N(0, I/(2βκN)), independent of the relative coordinates.
    com_separable: ClassVar[bool] = True
    n_particles: int
    dim: int
    trap: float = 1.0

    def __check_init__(self):
        check_positive_int("n_particles", self.n_particles)
        check_positive_int("dim", self.dim)
        check_positive_float("trap", self.trap)

    def _energy(self, x):
        return self.trap * jnp.sum(x * x)

    def exact_log_z(self, beta: float) -> float:
        """(dN/2) ln(π/(βκ))."""
        beta = check_positive_float("beta", beta)
        return (self.dim * self.n_particles / 2) * math.log(math.pi / (beta * self.trap))

    def params(self) -> dict:
        """Run-spec parameters."""
        return dict(n_particles=self.n_particles, dim=self.dim, trap=self.trap)
