"""What a stage sees and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from boltzgen.estimators import Estimate


@dataclass(frozen=True)
class StageContext:
    """The state of a run after training and estimation, handed to every stage.

    Attributes:
        system: the system (exact potential: no training-only softening).
        beta: inverse temperature.
        sampler: the trained sampler q.
        samples: the estimation phase's samples of q (x, log_q, energy, log_w, ...).
        objective: the training objective.
        data: the objective's Monte Carlo samples of p (data objectives), else None.
        model: the trained model when it is not the sampler itself (an interpolant), else None.
        key: the stage's PRNG key.
        progress: show progress bars.
    """

    system: Any
    beta: float
    sampler: Any
    samples: dict
    objective: Any
    data: Any = None
    model: Any = None
    key: Any = None
    progress: bool = True


@dataclass(frozen=True)
class StageOutput:
    """Estimates, stored arrays and observables a stage adds to the result.

    Attributes:
        estimates: method → :class:`~boltzgen.estimators.Estimate`.
        refined: arrays for ``/refine`` (with scalars under ``"attrs"``), or empty.
        observables: method → {name: (value, stderr)}, or empty.
    """

    estimates: dict[str, Estimate] = field(default_factory=dict)
    refined: dict = field(default_factory=dict)
    observables: dict = field(default_factory=dict)


class AbstractStage:
    """A step after estimation that adds estimates: refinement, held-out data, FEAT paths.

    Concrete stages are frozen dataclasses with ``check(system, sampler, objective)`` (raise
    ``ValueError`` before training when the stage does not apply) and ``__call__(ctx)`` →
    :class:`StageOutput`.
    """

    #: The stage's name in the timings and in run specs.
    name: ClassVar[str] = ""

    def check(self, system, sampler, objective) -> None:
        """Raise ValueError when the stage does not apply."""

    def memory_bytes(self, system) -> int:
        """Bytes the stage's stored arrays need (for the memory check before a run)."""
        return 0

    def __call__(self, ctx: StageContext) -> StageOutput:
        """Run the stage."""
        raise NotImplementedError
