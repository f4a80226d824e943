"""Registry of built-in systems: run-spec ``kind`` → constructor and parameter docs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from boltzgen.systems._analytic import Gaussian
from boltzgen.systems._base import AbstractSystem
from boltzgen.systems._coulomb import CoulombGas, HarmonicTrap


@dataclass(frozen=True)
class SystemEntry:
    """A registered system: how to build it from run-spec keys, and what the keys mean."""

    kind: str
    summary: str
    params: dict[str, tuple[type | tuple[type, ...], Any, str]]  # name -> (types, default, doc)
    build: Any

    def defaults(self) -> dict[str, Any]:
        """Default value of every parameter (``REQUIRED`` for required ones)."""
        return {k: v[1] for k, v in self.params.items()}


REQUIRED = object()


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
    if kind not in SYSTEMS:
        raise ValueError(f"unknown system kind {kind!r}; valid kinds: {', '.join(SYSTEMS)}")
    entry = SYSTEMS[kind]
    unknown = set(params) - set(entry.params)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(sorted(unknown))} for system {kind!r}; "
            f"valid: {', '.join(entry.params)}"
        )
    full = entry.defaults() | params
    for name, (types, _, _) in entry.params.items():
        value = full[name]
        if isinstance(value, bool) or not isinstance(value, types):
            want = (
                types.__name__
                if isinstance(types, type)
                else " or ".join(t.__name__ for t in types)
            )
            raise ValueError(f"system.{name} must be {want}, got {value!r}")
    return entry.build(**full)
