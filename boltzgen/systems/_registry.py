"""Registry of built-in systems: run-spec ``kind`` → constructor and parameter docs."""

from __future__ import annotations

from boltzgen._registry import Entry, resolve
from boltzgen.systems._analytic import Gaussian
from boltzgen.systems._base import AbstractSystem
from boltzgen.systems._coulomb import CoulombGas, HarmonicTrap

#: A registered system; ``build(**params)`` returns it.
SystemEntry = Entry


def _gaussian(dim, sigma, mean):
    return Gaussian.isotropic(dim, sigma, mean)


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
}


def make_system(kind: str, **params) -> AbstractSystem:
    """Build a registered system from its run-spec ``kind`` and parameters.

    Raises:
        ValueError: unknown kind or parameter (the message lists the valid ones), or a bad value.
    """
    entry, full = resolve("system", kind, SYSTEMS, params)
    return entry.build(**full)
