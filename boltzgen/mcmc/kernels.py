"""The functional core of :mod:`boltzgen.mcmc`: pure ``init`` / ``step`` kernels and schedules.

Each kernel is ``init(...) -> State`` and ``step(key, state, ...) -> (State, Info)``; the caller
owns the loop (``jax.lax.scan``). The entry points of :mod:`boltzgen.mcmc` (``ais``,
``refine_anneal``, ``neural_mcmc``, ``sample_spins``, ...) are built from these.

* annealed importance sampling: :func:`ais_init`, :func:`ais_step` (:class:`AISState`,
  :class:`AISInfo`, :class:`AISChains`), :func:`annealing_schedule`;
* refinement by SMC: :class:`RefineState`, :class:`RefineInfo`;
* neural MCMC: :func:`nmcmc_init`, :func:`nmcmc_step` (:class:`NMCMCState`,
  :class:`NMCMCInfo`), :func:`integrated_autocorrelation_time`;
* escorted paths: :func:`time_grid`;
* spins: :func:`spin_init`, :func:`spin_step`, :func:`checkerboard_step`,
  :func:`swendsen_wang_step`, :func:`single_spin_step` (:class:`SpinState`, :class:`SpinInfo`),
  :func:`random_spins`, :func:`lattice_colouring`, :data:`SPIN_KERNELS`, :func:`critical_beta`,
  :func:`beta_schedule`, :func:`clenshaw_curtis`.
"""

from boltzgen.mcmc._ais import AISChains, AISInfo, AISState, ais_init, ais_step, annealing_schedule
from boltzgen.mcmc._escorted import time_grid
from boltzgen.mcmc._nmcmc import (
    NMCMCInfo,
    NMCMCState,
    integrated_autocorrelation_time,
    nmcmc_init,
    nmcmc_step,
)
from boltzgen.mcmc._refine import RefineInfo, RefineState
from boltzgen.mcmc._spins import (
    SPIN_KERNELS,
    SpinInfo,
    SpinState,
    beta_schedule,
    checkerboard_step,
    clenshaw_curtis,
    critical_beta,
    lattice_colouring,
    random_spins,
    single_spin_step,
    spin_init,
    spin_step,
    swendsen_wang_step,
)

__all__ = [
    "AISChains",
    "AISInfo",
    "AISState",
    "NMCMCInfo",
    "NMCMCState",
    "RefineInfo",
    "RefineState",
    "SPIN_KERNELS",
    "SpinInfo",
    "SpinState",
    "ais_init",
    "ais_step",
    "annealing_schedule",
    "beta_schedule",
    "checkerboard_step",
    "clenshaw_curtis",
    "critical_beta",
    "integrated_autocorrelation_time",
    "lattice_colouring",
    "nmcmc_init",
    "nmcmc_step",
    "random_spins",
    "single_spin_step",
    "spin_init",
    "spin_step",
    "swendsen_wang_step",
    "time_grid",
]
