"""Registry of built-in systems: run-spec ``kind`` → constructor and parameter docs."""

from __future__ import annotations

from boltzgen._registry import Entry, resolve
from boltzgen.systems._analytic import Gaussian
from boltzgen.systems._base import AbstractSystem
from boltzgen.systems._coulomb import CoulombGas, HarmonicTrap
from boltzgen.systems._ising import EdwardsAnderson, Ising, SherringtonKirkpatrick
from boltzgen.systems._particles import DoubleWellParticles, LennardJones

#: A registered system; ``build(**params)`` returns it.
SystemEntry = Entry


def _gaussian(dim, sigma, mean):
    return Gaussian.isotropic(dim, sigma, mean)


def _ising(L, J, h, boundary, Jh, Jv):
    return Ising(L, J, h, boundary, Jh=None if Jh == "J" else Jh, Jv=None if Jv == "J" else Jv)


def _sk(n_spins, seed, J):
    return SherringtonKirkpatrick(n_spins, seed=seed, J=J)


def _ea(L, seed, boundary):
    return EdwardsAnderson(L, seed=seed, boundary=boundary)


SYSTEMS: dict[str, SystemEntry] = {
    "coulomb": SystemEntry(
        "coulomb",
        "Coulomb gas in a harmonic trap, E = λ Σ 1/|x_i-x_j| + κ Σ |x_i|² (exact ln Z for N ≤ 2)",
        {
            "n_particles": (int, 6, "number of charges N >= 1"),
            "dim": (int, 2, "spatial dimension d in {1, 2, 3}"),
            "trap": ((int, float), 1.0, "trap stiffness κ > 0"),
            "coupling": ((int, float), 1.0, "Coulomb coupling λ > 0"),
        },
        CoulombGas,
    ),
    "harmonic": SystemEntry(
        "harmonic",
        "independent particles in a harmonic trap, E = κ Σ |x_i|² (exact ln Z)",
        {
            "n_particles": (int, 6, "number of particles N >= 1"),
            "dim": (int, 2, "spatial dimension d >= 1"),
            "trap": ((int, float), 1.0, "trap stiffness κ > 0"),
        },
        HarmonicTrap,
    ),
    "gaussian": SystemEntry(
        "gaussian",
        "isotropic Gaussian E = |x - μ|²/(2σ²) (exact ln Z)",
        {
            "dim": (int, 4, "dimension >= 1"),
            "sigma": ((int, float), 1.0, "standard deviation σ > 0 at β = 1"),
            "mean": ((int, float), 0.0, "every component of the mean μ"),
        },
        _gaussian,
    ),
    "ising": SystemEntry(
        "ising",
        "Ising model on an L×L square lattice, E = −Jh Σ_h s s − Jv Σ_v s s − h Σ s "
        "(exact ln Z: Kaufman on the torus, transfer matrix, enumeration)",
        {
            "L": (int, 8, "linear size L >= 2 (states are L×L arrays of ±1)"),
            "J": ((int, float), 1.0, "coupling of both directions (J > 0 ferromagnetic)"),
            "h": ((int, float), 0.0, "uniform field"),
            "boundary": (str, "periodic", "'periodic' (torus) or 'open'"),
            "Jh": ((int, float, str), "J", "horizontal coupling when it differs from J"),
            "Jv": ((int, float, str), "J", "vertical coupling when it differs from J"),
        },
        _ising,
    ),
    "sk": SystemEntry(
        "sk",
        "Sherrington–Kirkpatrick spin glass, J_ij ~ N(0, J²/N) from a fixed seed "
        "(exact ln Z by enumeration for N <= 20)",
        {
            "n_spins": (int, 20, "number of spins N >= 2"),
            "seed": (int, 0, "seed of the couplings (NumPy default_rng)"),
            "J": ((int, float), 1.0, "coupling scale"),
        },
        _sk,
    ),
    "edwards_anderson": SystemEntry(
        "edwards_anderson",
        "±J Edwards–Anderson spin glass on an L×L lattice from a fixed seed "
        "(exact ln Z by enumeration for L×L <= 20)",
        {
            "L": (int, 4, "linear size L >= 2"),
            "seed": (int, 0, "seed of the couplings (NumPy default_rng)"),
            "boundary": (str, "periodic", "'periodic' or 'open'"),
        },
        _ea,
    ),
    "double_well": SystemEntry(
        "double_well",
        "DW4 double-well pair potential, E = (1/τ) Σ_{i<j} a(r−d0) + b(r−d0)² + c(r−d0)⁴ "
        "(Köhler et al. 2020; Klein et al. 2023)",
        {
            "n_particles": (int, 4, "number of particles N >= 2"),
            "dim": (int, 2, "spatial dimension d in {1, 2, 3}"),
            "a": ((int, float), 0.0, "linear coefficient"),
            "b": ((int, float), -4.0, "quadratic coefficient"),
            "c": ((int, float), 0.9, "quartic coefficient c > 0"),
            "d0": ((int, float), 4.0, "offset distance d0 > 0"),
            "tau": ((int, float), 1.0, "scale τ > 0 dividing the energy"),
        },
        DoubleWellParticles,
    ),
    "lennard_jones": SystemEntry(
        "lennard_jones",
        "Lennard-Jones cluster, E = 4ε Σ_{i<j} [(σ/r)^12 − (σ/r)^6] + (k/2) Σ |x_i − x̄|² "
        "(LJ13/LJ55 of Klein et al. 2023 use σ = 2^(-1/6), k = 1)",
        {
            "n_particles": (int, 13, "number of particles N >= 2"),
            "dim": (int, 3, "spatial dimension d in {1, 2, 3}"),
            "epsilon": ((int, float), 1.0, "well depth ε > 0"),
            "sigma": ((int, float), 1.0, "length scale σ > 0 (pair minimum at 2^(1/6) σ)"),
            "tether": ((int, float), 1.0, "spring k >= 0 to the centre of mass (0: bare LJ)"),
        },
        LennardJones,
    ),
}


def make_system(kind: str, **params) -> AbstractSystem:
    """Build a registered system from its run-spec ``kind`` and parameters.

    Raises:
        ValueError: unknown kind or parameter (the message lists the valid ones), or a bad value.
    """
    entry, full = resolve("system", kind, SYSTEMS, params)
    return entry.build(**full)
