"""Monte Carlo: annealed importance sampling with blackjax HMC/MALA moves, and the reference ln Z.

Functional core: :func:`ais_init` / :func:`ais_step` (the caller owns the ``lax.scan``).
Entry points: :func:`ais` (two unnormalised log densities) and :func:`coulomb_reference` /
:func:`anneal_reference` (a system at β, from an exactly solvable reference system).
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
from boltzgen.mcmc._reference import ReferenceResult, anneal_reference, coulomb_reference

__all__ = [
    "AISChains",
    "AISInfo",
    "AISResult",
    "AISState",
    "ReferenceResult",
    "ais",
    "ais_init",
    "ais_step",
    "anneal_reference",
    "annealing_schedule",
    "coulomb_reference",
]
