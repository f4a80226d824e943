"""Training samplers: objectives as strategy objects and the one training loop.

Objectives (:class:`ReverseKL`, :class:`Reinforce`, :class:`BetaRange`, :class:`FlowMatching`,
:class:`Interpolant`) say what is minimised and prepare a :class:`Task`; :class:`Trainer` runs
every task through one loop (jitted ``lax.scan`` chunks, history, progress, checkpoints).
The loss functions and the minibatch pairings are exported for direct use.
"""

from boltzgen.train._data import HMCData, MonteCarloData, inefficiency
from boltzgen.train._losses import (
    reinforce_beta_range_loss,
    reinforce_loss,
    reverse_kl_loss,
)
from boltzgen.train._matching import (
    PAIRINGS,
    align_particles,
    flow_matching_loss,
    interpolant_loss,
    kabsch_rotations,
    pair_batch,
)
from boltzgen.train._objectives import (
    OBJECTIVE_CLASSES,
    AbstractObjective,
    BetaRange,
    FineTuned,
    FlowMatching,
    Interpolant,
    MaximumLikelihood,
    Reinforce,
    ReverseKL,
    Task,
    default_objective,
    default_pairing,
)
from boltzgen.train._trainer import (
    Trainer,
    TrainState,
    fingerprint_of,
    load_checkpoint,
    make_optimizer,
    save_checkpoint,
    train,
    train_matching,
)

__all__ = [
    "AbstractObjective",
    "BetaRange",
    "FineTuned",
    "FlowMatching",
    "HMCData",
    "Interpolant",
    "MonteCarloData",
    "MaximumLikelihood",
    "OBJECTIVE_CLASSES",
    "PAIRINGS",
    "Reinforce",
    "ReverseKL",
    "Task",
    "TrainState",
    "Trainer",
    "align_particles",
    "default_objective",
    "default_pairing",
    "fingerprint_of",
    "flow_matching_loss",
    "inefficiency",
    "interpolant_loss",
    "kabsch_rotations",
    "load_checkpoint",
    "make_optimizer",
    "pair_batch",
    "reinforce_beta_range_loss",
    "reinforce_loss",
    "reverse_kl_loss",
    "save_checkpoint",
    "train",
    "train_matching",
]
