"""Particle benchmarks of Klein, Krämer & Noé (arXiv 2306.15030): DW4 and LJ clusters.

Both are the systems of the equivariant-flow / flow-matching literature (Köhler, Klein & Noé,
ICML 2020, arXiv 2006.02425; Klein, Krämer & Noé, NeurIPS 2023, arXiv 2306.15030) as
implemented in ``bgflow`` (``MultiDoubleWellPotential``, ``LennardJonesPotential``). Every
pairwise sum runs over the unordered pairs i < j only (:func:`pair_distances`), so gradients
are finite at every configuration with distinct particles.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax.numpy as jnp

from boltzgen.systems._base import (
    AbstractParticleSystem,
    check_positive_float,
    check_positive_int,
)
from boltzgen.systems._coulomb import pair_distances

#: Global minimum of the 13-atom Lennard-Jones cluster (icosahedron), in units of ε, no tether
#: (Wales & Doye, J. Phys. Chem. A 101, 5111 (1997); Cambridge Cluster Database).
LJ13_GLOBAL_MINIMUM = -44.326801
#: Global minimum of the 55-atom Lennard-Jones cluster (Mackay icosahedron), units of ε.
LJ55_GLOBAL_MINIMUM = -279.248470
#: σ of the reference data of Klein et al.: bgflow writes V = ε[(r_m/r)^12 − 2(r_m/r)^6] with
#: r_m = 1, i.e. σ = r_m 2^{-1/6}.
KLEIN_SIGMA = 2.0 ** (-1.0 / 6.0)


def _check_finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_dim(value) -> int:
    dim = check_positive_int("dim", value)
    if dim > 3:
        raise ValueError(f"dim must be 1, 2 or 3, got {value!r}")
    return dim


class CentredTrap(AbstractParticleSystem):
    r"""Particles tied to their centre of mass: E = κ Σ_i |x_i − x̄|² (translation-invariant).

    The exactly solvable reference for translation-invariant systems. On the zero-centre-of-mass
    subspace (Lebesgue measure in orthonormal coordinates, the convention of every
    translation-invariant system here) p is the isotropic Gaussian of variance 1/(2βκ) per
    coordinate, so

        ln Z = ((N − 1)d/2) ln(π/(βκ)),

    and exact samples are x = P ζ, ζ ~ N(0, I/(2βκ)), P the centring projection.

    Args:
        n_particles: number of particles N ≥ 2.
        dim: spatial dimension d ≥ 1.
        trap: stiffness κ > 0.
    """

    kind: ClassVar[str] = "centred_trap"
    translation_invariant: ClassVar[bool] = True
    n_particles: int
    dim: int
    trap: float = 1.0

    def __check_init__(self):
        check_positive_int("n_particles", self.n_particles, minimum=2)
        check_positive_int("dim", self.dim)
        check_positive_float("trap", self.trap)

    def _energy(self, x):
        y = x - jnp.mean(x, axis=0, keepdims=True)
        return self.trap * jnp.sum(y * y)

    def exact_log_z(self, beta: float) -> float:
        """((N − 1)d/2) ln(π/(βκ)) on the zero-centre-of-mass subspace."""
        beta = check_positive_float("beta", beta)
        k = (self.n_particles - 1) * self.dim
        return (k / 2) * math.log(math.pi / (beta * self.trap))

    def params(self) -> dict:
        """Run-spec parameters."""
        return dict(n_particles=self.n_particles, dim=self.dim, trap=self.trap)


class DoubleWellParticles(AbstractParticleSystem):
    r"""DW4: particles with a double-well pair potential in the distance.

    .. math::

        E(x) = \frac{1}{2\tau} \sum_{i \ne j} v(r_{ij})
             = \frac{1}{\tau} \sum_{i<j} v(r_{ij}),\qquad
        v(r) = a (r - d_0) + b (r - d_0)^2 + c (r - d_0)^4,

    with r_ij = |x_i − x_j|. The standard DW4 set is N = 4, d = 2, a = 0, b = −4, c = 0.9,
    d_0 = 4, τ = 1 (Köhler et al. 2020, eq. in Sec. 6; Klein et al. 2023, App. A). The paper's
    1/(2τ) multiplies a sum over ORDERED pairs i ≠ j; bgflow sums 0.9 (r−4)^4 − 4 (r−4)^2 over
    i < j without a ½, and the two agree. This class follows that convention, so energies match
    the published DW4 data at τ = 1. Each pair has minima at r = d_0 ± √(−b/(2c)) ≈ 4 ± 1.49
    when a = 0 and b < 0.

    The energy is invariant under permutations, rotations, reflections and translations. It
    has no confining term: ∫ exp(−βE) dx over R^{Nd} diverges along the centre of mass, so
    samplers work in the centre-of-mass-free subspace.

    Args:
        n_particles: number of particles N ≥ 2.
        dim: spatial dimension d ∈ {1, 2, 3}.
        a: linear coefficient.
        b: quadratic coefficient.
        c: quartic coefficient (> 0 so the pair energy is bounded below).
        d0: offset distance d_0 > 0.
        tau: temperature-like scale τ > 0 dividing the energy.
    """

    kind: ClassVar[str] = "double_well"
    #: E is invariant under a common translation, so ∫ e^{−βE} dx diverges: a free energy needs
    #: the centre of mass removed (a zero-COM sampler on the (N−1)d-dimensional subspace).
    translation_invariant: ClassVar[bool] = True
    n_particles: int = 4
    dim: int = 2
    a: float = 0.0
    b: float = -4.0
    c: float = 0.9
    d0: float = 4.0
    tau: float = 1.0

    def __check_init__(self):
        check_positive_int("n_particles", self.n_particles, minimum=2)
        _check_dim(self.dim)
        _check_finite("a", self.a)
        _check_finite("b", self.b)
        check_positive_float("c", self.c)
        check_positive_float("d0", self.d0)
        check_positive_float("tau", self.tau)

    def reference_trap(self, beta: float) -> CentredTrap:
        """The Monte Carlo reference's starting point: a :class:`CentredTrap` of about p's size.

        κ = 0.1 β⁻¹ τ: per-coordinate variance 5 at β = 1, close to DW4's (pair distances near
        d_0 ± 1.5 put Σ_i|x_i − x̄|² ≈ 30 over 6 coordinates).
        """
        return CentredTrap(self.n_particles, self.dim, 0.1 * self.tau / beta)

    def pair_energy(self, r):
        """v(r)/τ for distances ``r`` (any shape): the energy of one pair at distance r."""
        s = r - self.d0
        s2 = s * s
        return (self.a * s + self.b * s2 + self.c * s2 * s2) / self.tau

    def _energy(self, x):
        return jnp.sum(self.pair_energy(pair_distances(x)))

    def params(self) -> dict:
        """Run-spec parameters."""
        return dict(
            n_particles=self.n_particles,
            dim=self.dim,
            a=self.a,
            b=self.b,
            c=self.c,
            d0=self.d0,
            tau=self.tau,
        )


class LennardJones(AbstractParticleSystem):
    r"""Lennard-Jones cluster (LJ13, LJ55) with a harmonic tether to the centre of mass.

    .. math::

        E(x) = 4\varepsilon \sum_{i<j} \left[(\sigma/r_{ij})^{12} - (\sigma/r_{ij})^{6}\right]
             + \frac{k}{2} \sum_i |x_i - \bar x|^2,\qquad \bar x = \frac{1}{N}\sum_i x_i,

    with k = ``tether``. The pair term has its minimum −ε at r = 2^{1/6}σ. The tether is the
    "oscillator" of Köhler et al. 2020 / Klein et al. 2023 (bgflow ``LennardJonesPotential``,
    ``oscillator=True, oscillator_scale=1``): it keeps the cluster from evaporating and leaves
    the energy translation invariant, so it does not make ∫ exp(−βE) dx finite along the
    centre of mass; samplers work in the centre-of-mass-free subspace. Setting ``tether=0``
    gives the bare cluster, whose LJ13 global minimum is −44.326801 ε
    (:data:`LJ13_GLOBAL_MINIMUM`); :meth:`energy_no_tether` evaluates it on any instance.

    Units: Klein et al.'s data use r_m = 2^{1/6}σ = 1, i.e. ``sigma = KLEIN_SIGMA`` = 2^{-1/6};
    the default σ = 1 here is the textbook unit. The tether term depends on that choice.

    ``soften`` (training only) replaces each pair term below the radius r_s = ``soften`` by its
    tangent at r_s, V(r_s) + V'(r_s)(r − r_s), so the core is linear and finite; it changes the
    target distribution, so estimators (free energies, importance weights, reference MCMC)
    must NEVER use a softened system. It defaults to None (the exact potential) and is not a
    registry parameter.

    Args:
        n_particles: number of particles N ≥ 2.
        dim: spatial dimension d ∈ {1, 2, 3}.
        epsilon: well depth ε > 0.
        sigma: length scale σ > 0 (pair minimum at 2^{1/6}σ).
        tether: spring constant k ≥ 0 of the tether to the centre of mass.
        soften: None, or the radius r_s > 0 below which the pair term is linearised.
    """

    kind: ClassVar[str] = "lennard_jones"
    #: E is invariant under a common translation, so ∫ e^{−βE} dx diverges: a free energy needs
    #: the centre of mass removed (a zero-COM sampler on the (N−1)d-dimensional subspace).
    translation_invariant: ClassVar[bool] = True
    n_particles: int = 13
    dim: int = 3
    epsilon: float = 1.0
    sigma: float = 1.0
    tether: float = 1.0
    soften: float | None = None

    def __check_init__(self):
        check_positive_int("n_particles", self.n_particles, minimum=2)
        _check_dim(self.dim)
        check_positive_float("epsilon", self.epsilon)
        check_positive_float("sigma", self.sigma)
        if _check_finite("tether", self.tether) < 0:
            raise ValueError(f"tether must be >= 0, got {self.tether!r}")
        if self.soften is not None:
            check_positive_float("soften", self.soften)

    def reference_trap(self, beta: float) -> CentredTrap:
        """The Monte Carlo reference's starting point: a :class:`CentredTrap` of about p's size.

        A cluster at nearest-neighbour distance ≈ 2^{1/6}σ has Σ_i |x_i − x̄|² ≈ 0.9 N σ²
        (LJ13 at β = 1); κ is chosen to give that mean: κ = (N − 1)d / (2β · 0.9 N σ²).
        """
        n, d = self.n_particles, self.dim
        return CentredTrap(n, d, (n - 1) * d / (2.0 * beta * 0.9 * n * self.sigma**2))

    def _lj(self, r):
        s6 = (self.sigma / r) ** 6
        return 4.0 * self.epsilon * (s6 * s6 - s6)

    def pair_energy(self, r):
        """LJ pair term V(r) = 4ε[(σ/r)^12 − (σ/r)^6], linearised below ``soften`` if set."""
        if self.soften is None:
            return self._lj(r)
        rs = self.soften
        s6 = (self.sigma / rs) ** 6
        slope = -24.0 * self.epsilon * (2.0 * s6 * s6 - s6) / rs  # V'(r_s)
        return self._lj(jnp.maximum(r, rs)) + slope * jnp.minimum(r - rs, 0.0)

    def energy_no_tether(self, x):
        """Σ_{i<j} V(r_ij) of one configuration of shape (N, d), without the tether."""
        if tuple(x.shape) != tuple(self.event_shape):
            raise ValueError(
                f"LennardJones.energy_no_tether expects shape {self.event_shape}, "
                f"got {tuple(x.shape)}"
            )
        return jnp.sum(self.pair_energy(pair_distances(x)))

    def tether_energy(self, x):
        """(k/2) Σ_i |x_i − x̄|² of one configuration of shape (N, d)."""
        centred = x - jnp.mean(x, axis=0, keepdims=True)
        return 0.5 * self.tether * jnp.sum(centred * centred)

    def _energy(self, x):
        e = jnp.sum(self.pair_energy(pair_distances(x)))
        if self.tether == 0:
            return e
        return e + self.tether_energy(x)

    def params(self) -> dict:
        """Run-spec parameters (``soften`` only when set: it is a training-only option)."""
        p = dict(
            n_particles=self.n_particles,
            dim=self.dim,
            epsilon=self.epsilon,
            sigma=self.sigma,
            tether=self.tether,
        )
        if self.soften is not None:
            p["soften"] = self.soften
        return p


def lj_energy_no_tether(x, epsilon: float = 1.0, sigma: float = 1.0):
    """4ε Σ_{i<j} [(σ/r_ij)^12 − (σ/r_ij)^6] of one configuration ``x`` of shape (N, d)."""
    return LennardJones(x.shape[0], x.shape[1], epsilon, sigma, tether=0.0).energy(x)
