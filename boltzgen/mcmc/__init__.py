"""Monte Carlo: annealed importance sampling with blackjax HMC/MALA moves, and the reference ln Z.

This namespace holds the entry points and their result types; the functional core (pure
``init`` / ``step`` kernels with State and Info, and the schedules) is
:mod:`boltzgen.mcmc.kernels`. Entry points: :func:`ais` (two unnormalised log densities) and
:func:`coulomb_reference` / :func:`anneal_reference` (a system at β, from an exactly solvable
reference system);
:func:`particle_reference` for translation-invariant particles (DW4, Lennard-Jones), on the
zero-centre-of-mass subspace.

Refinement of a normalised sampler q towards p with exact weights: :func:`refine_anneal` (AIS
or SMC along q^{1-λ} p^λ) and :func:`neural_mcmc` (independent MH with proposal q plus local
moves), both returning a
:class:`RefineResult`; :func:`annealed_paths` runs AIS paths from q to p and the same protocol
reversed from samples of p, for two-sided path bounds (an :class:`AnnealedPaths`).

Particles (DW4, Lennard-Jones, Coulomb): :func:`particle_mcmc` (zero-centre-of-mass HMC/MALA
with dual-averaging step size) and :func:`mcmc_at_budget` (tuned MCMC given a budget of energy
evaluations, the baseline learned samplers are compared with).

Escorted Jarzynski / controlled Crooks paths along a learned transport (FEAT):
:func:`forward_paths` / :func:`reverse_paths` give the path log-weights A_F, A_R for
:func:`boltzgen.estimators.feat`.

Monte Carlo baseline without a flow: :func:`coupling_ladder` (BAR / MBAR along a ladder of
Coulomb couplings from the free trap, HMC in every state), returning a :class:`LadderResult`.

Spin systems (Ising, SK, Edwards–Anderson): :func:`sample_spins` and :func:`spin_observables`
(lattice kernels in :mod:`boltzgen.mcmc.kernels`), and ln Z by
:func:`thermodynamic_integration` or :func:`beta_annealing` (a :class:`SpinFreeEnergy`).

Layout by concept (private modules): ``_moves`` (the blackjax HMC/MALA move, the step-size
rules, the zero-centre-of-mass particle move), ``_scan`` (chunked, ahead-of-time compiled
scans with a progress bar), ``_checks`` (argument checks), ``_diagnostics`` (τ_int, ESS, R̂);
the samplers ``_ais``, ``_refine``, ``_nmcmc``, ``_reference``, ``_ladder``, ``_particles``,
``_escorted``; spins in ``_spin_kernels``, ``_spin_sampling``, ``_spin_observables`` and
``_spin_free_energy`` (``_spins`` re-exports them).
"""

from boltzgen.mcmc import kernels
from boltzgen.mcmc._ais import AISResult, ais
from boltzgen.mcmc._escorted import PathResult, forward_paths, reverse_paths
from boltzgen.mcmc._ladder import LadderResult, coupling_ladder
from boltzgen.mcmc._nmcmc import neural_mcmc
from boltzgen.mcmc._particles import (
    BudgetResult,
    ParticleMCMCResult,
    mcmc_at_budget,
    particle_mcmc,
)
from boltzgen.mcmc._paths import AnnealedPaths, annealed_paths
from boltzgen.mcmc._reference import (
    ReferenceResult,
    anneal_reference,
    coulomb_reference,
    particle_reference,
)
from boltzgen.mcmc._refine import RefineResult, refine_anneal
from boltzgen.mcmc._spins import (
    SpinChains,
    SpinFreeEnergy,
    SpinObservables,
    beta_annealing,
    sample_spins,
    spin_observables,
    thermodynamic_integration,
)

__all__ = [
    "AISResult",
    "AnnealedPaths",
    "BudgetResult",
    "LadderResult",
    "ParticleMCMCResult",
    "PathResult",
    "ReferenceResult",
    "RefineResult",
    "SpinChains",
    "SpinFreeEnergy",
    "SpinObservables",
    "ais",
    "anneal_reference",
    "annealed_paths",
    "beta_annealing",
    "coulomb_reference",
    "coupling_ladder",
    "forward_paths",
    "kernels",
    "mcmc_at_budget",
    "neural_mcmc",
    "particle_mcmc",
    "particle_reference",
    "refine_anneal",
    "reverse_paths",
    "sample_spins",
    "spin_observables",
    "thermodynamic_integration",
]
