"""Energy functions: Coulomb gas, Ising and pairwise spins, analytic systems with exact ln Z."""

from boltzgen.systems._analytic import Gaussian
from boltzgen.systems._base import AbstractParticleSystem, AbstractSystem
from boltzgen.systems._coulomb import CoulombGas, HarmonicTrap, coulomb_pair_log_z, pair_distances
from boltzgen.systems._enumerate import all_states, enumerate_energies, enumerate_log_z
from boltzgen.systems._ising import (
    BETA_C,
    AbstractSpinSystem,
    EdwardsAnderson,
    Ising,
    PairwiseSpins,
    SherringtonKirkpatrick,
)
from boltzgen.systems._ising_exact import (
    enumerate_thermo,
    ising_exact_log_z,
    ising_exact_method,
    ising_exact_thermo,
    kaufman_log_z,
    kaufman_log_z_mp,
    transfer_matrix_log_z,
)
from boltzgen.systems._particles import (
    KLEIN_SIGMA,
    LJ13_GLOBAL_MINIMUM,
    LJ55_GLOBAL_MINIMUM,
    CentredTrap,
    DoubleWellParticles,
    LennardJones,
    lj_energy_no_tether,
)
from boltzgen.systems._registry import SYSTEMS, make_system

__all__ = [
    "AbstractSystem",
    "AbstractParticleSystem",
    "CoulombGas",
    "HarmonicTrap",
    "CentredTrap",
    "Gaussian",
    "coulomb_pair_log_z",
    "pair_distances",
    "AbstractSpinSystem",
    "Ising",
    "PairwiseSpins",
    "SherringtonKirkpatrick",
    "EdwardsAnderson",
    "BETA_C",
    "all_states",
    "enumerate_energies",
    "enumerate_log_z",
    "kaufman_log_z",
    "kaufman_log_z_mp",
    "transfer_matrix_log_z",
    "ising_exact_log_z",
    "ising_exact_method",
    "ising_exact_thermo",
    "enumerate_thermo",
    "DoubleWellParticles",
    "LennardJones",
    "lj_energy_no_tether",
    "LJ13_GLOBAL_MINIMUM",
    "LJ55_GLOBAL_MINIMUM",
    "KLEIN_SIGMA",
    "SYSTEMS",
    "make_system",
]
