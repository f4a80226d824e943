"""Monte Carlo: annealed importance sampling with blackjax HMC/MALA moves, and the reference ln Z.

Functional core: :func:`ais_init` / :func:`ais_step` (the caller owns the ``lax.scan``).
Entry points: :func:`ais` (two unnormalised log densities) and :func:`coulomb_reference` /
:func:`anneal_reference` (a system at β, from an exactly solvable reference system);
:func:`particle_reference` for translation-invariant particles (DW4, Lennard-Jones), on the
zero-centre-of-mass subspace.

Refinement of a normalised sampler q towards p with exact weights: :func:`refine_anneal` (AIS
or SMC along q^{1-λ} p^λ) and :func:`neural_mcmc` (independent MH with proposal q plus local
moves; pure kernels :func:`nmcmc_init` / :func:`nmcmc_step`), both returning a
:class:`RefineResult`.

Particles (DW4, Lennard-Jones, Coulomb): :func:`particle_mcmc` (zero-centre-of-mass HMC/MALA
with dual-averaging step size) and :func:`mcmc_at_budget` (tuned MCMC given a budget of energy
evaluations, the baseline learned samplers are compared with).

Escorted Jarzynski / controlled Crooks paths along a learned transport (FEAT):
:func:`forward_paths` / :func:`reverse_paths` give the path log-weights A_F, A_R for
:func:`boltzgen.estimators.feat`.

Monte Carlo baseline without a flow: :func:`coupling_ladder` (BAR / MBAR along a ladder of
Coulomb couplings from the free trap, HMC in every state), returning a :class:`LadderResult`.

Spin systems (Ising, SK, Edwards–Anderson): lattice kernels :func:`checkerboard_step`,
:func:`swendsen_wang_step`, :func:`single_spin_step` (State/Info :class:`SpinState` /
:class:`SpinInfo`), :func:`sample_spins` and :func:`spin_observables`, and ln Z by
:func:`thermodynamic_integration` or :func:`beta_annealing` (a :class:`SpinFreeEnergy`).

Layout by concept (private modules): ``_moves`` (the blackjax HMC/MALA move, the step-size
rules, the zero-centre-of-mass particle move), ``_scan`` (chunked, ahead-of-time compiled
scans with a progress bar), ``_checks`` (argument checks), ``_diagnostics`` (τ_int, ESS, R̂);
the samplers ``_ais``, ``_refine``, ``_nmcmc``, ``_reference``, ``_ladder``, ``_particles``,
``_escorted``; spins in ``_spin_kernels``, ``_spin_sampling``, ``_spin_observables`` and
``_spin_free_energy`` (``_spins`` re-exports them).
"""

from boltzgen.mcmc._ais import (
    AISChains,
    AISInfo,
    AISResult,
    AISState,
    ais,
    ais_init,
    ais_step,
    annealing_schedule,
)
from boltzgen.mcmc._escorted import PathResult, forward_paths, reverse_paths, time_grid
from boltzgen.mcmc._ladder import LadderResult, coupling_ladder
from boltzgen.mcmc._nmcmc import (
    NMCMCInfo,
    NMCMCState,
    integrated_autocorrelation_time,
    neural_mcmc,
    nmcmc_init,
    nmcmc_step,
)
from boltzgen.mcmc._particles import (
    BudgetResult,
    ParticleMCMCResult,
    mcmc_at_budget,
    particle_mcmc,
)
from boltzgen.mcmc._reference import (
    ReferenceResult,
    anneal_reference,
    coulomb_reference,
    particle_reference,
)
from boltzgen.mcmc._refine import RefineInfo, RefineResult, RefineState, refine_anneal
from boltzgen.mcmc._spin_free_energy import (
    SpinFreeEnergy,
    beta_annealing,
    beta_schedule,
    clenshaw_curtis,
    thermodynamic_integration,
)
from boltzgen.mcmc._spin_kernels import (
    SPIN_KERNELS,
    SpinInfo,
    SpinState,
    checkerboard_step,
    critical_beta,
    lattice_colouring,
    random_spins,
    single_spin_step,
    spin_init,
    spin_step,
    swendsen_wang_step,
)
from boltzgen.mcmc._spin_observables import SpinObservables, spin_observables
from boltzgen.mcmc._spin_sampling import SpinChains, sample_spins

__all__ = [
    "AISChains",
    "AISInfo",
    "AISResult",
    "AISState",
    "BudgetResult",
    "LadderResult",
    "ParticleMCMCResult",
    "PathResult",
    "NMCMCInfo",
    "NMCMCState",
    "RefineInfo",
    "RefineResult",
    "RefineState",
    "ReferenceResult",
    "ais",
    "ais_init",
    "ais_step",
    "anneal_reference",
    "annealing_schedule",
    "coulomb_reference",
    "particle_reference",
    "coupling_ladder",
    "forward_paths",
    "reverse_paths",
    "time_grid",
    "integrated_autocorrelation_time",
    "mcmc_at_budget",
    "neural_mcmc",
    "particle_mcmc",
    "nmcmc_init",
    "nmcmc_step",
    "refine_anneal",
    "SPIN_KERNELS",
    "SpinChains",
    "SpinFreeEnergy",
    "SpinInfo",
    "SpinObservables",
    "SpinState",
    "beta_annealing",
    "beta_schedule",
    "checkerboard_step",
    "clenshaw_curtis",
    "critical_beta",
    "lattice_colouring",
    "random_spins",
    "sample_spins",
    "single_spin_step",
    "spin_init",
    "spin_observables",
    "spin_step",
    "swendsen_wang_step",
    "thermodynamic_integration",
]
