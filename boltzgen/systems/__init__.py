"""Energy functions: the Coulomb gas, analytic test systems with exact ln Z, a registry."""

from boltzgen.systems._analytic import Gaussian
from boltzgen.systems._base import AbstractParticleSystem, AbstractSystem
from boltzgen.systems._coulomb import CoulombGas, HarmonicTrap, coulomb_pair_log_z, pair_distances
from boltzgen.systems._registry import SYSTEMS, make_system

__all__ = [
    "AbstractSystem",
    "AbstractParticleSystem",
    "CoulombGas",
    "HarmonicTrap",
    "Gaussian",
    "coulomb_pair_log_z",
    "pair_distances",
    "SYSTEMS",
    "make_system",
]
