"""Stages after estimation: refinement towards p, held-out Monte Carlo data, FEAT paths.

Each stage is a frozen dataclass with ``check(system, sampler, objective)`` (raises before
training when it does not apply) and ``__call__(ctx)`` → :class:`StageOutput`:

* :class:`NeuralMCMC`, :class:`AIS`, :class:`SMC` — MCMC refinement of q's samples with exact
  weights (``refined_<method>``, ``forward_bound_refined``; neural MCMC also BAR between q and p);
* :class:`HeldOutData` — estimates from a data objective's held-out samples of p;
* :class:`FEAT` — escorted paths along a trained stochastic interpolant.
"""

from boltzgen.stages._base import AbstractStage, StageContext, StageOutput
from boltzgen.stages._data import FEAT, HeldOutData, sample_metrics
from boltzgen.stages._refine import AIS, REFINERS, SMC, NeuralMCMC


def default_stages(objective) -> tuple[AbstractStage, ...]:
    """The stages a run has by default after ``objective``'s training.

    Every run refines by neural MCMC; a data objective with held-out samples adds
    :class:`HeldOutData`, the interpolant objective adds :class:`FEAT`.
    """
    stages: list[AbstractStage] = []
    if getattr(objective, "needs_data", False) and objective.data.n_holdout > 0:
        stages.append(HeldOutData())
    if getattr(objective, "name", "") == "interpolant":
        stages.append(FEAT())
    stages.append(NeuralMCMC())
    return tuple(stages)


__all__ = [
    "AIS",
    "AbstractStage",
    "FEAT",
    "HeldOutData",
    "NeuralMCMC",
    "REFINERS",
    "SMC",
    "StageContext",
    "StageOutput",
    "default_stages",
    "sample_metrics",
]
