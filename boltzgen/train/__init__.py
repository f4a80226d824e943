"""Training samplers: objectives and the driver (one jitted step, checkpoints, progress).

Energy-based objectives (reverse KL, REINFORCE) go through :func:`train`; data-based ones
(conditional flow matching of a CNF, stochastic-interpolant velocity and score) through
:func:`train_matching`, from Monte Carlo samples of p.
"""

from boltzgen.train._driver import (
    HISTORY_KEYS,
    TrainState,
    load_checkpoint,
    make_optimizer,
    make_step,
    save_checkpoint,
    train,
)
from boltzgen.train._matching import (
    MATCHING_HISTORY_KEYS,
    PAIRINGS,
    MatchingState,
    align_particles,
    flow_matching_loss,
    interpolant_loss,
    kabsch_rotations,
    make_matching_step,
    pair_batch,
    train_matching,
)
from boltzgen.train._objectives import (
    OBJECTIVES,
    reinforce_beta_range_loss,
    reinforce_loss,
    reverse_kl_loss,
)

__all__ = [
    "HISTORY_KEYS",
    "MATCHING_HISTORY_KEYS",
    "MatchingState",
    "PAIRINGS",
    "align_particles",
    "flow_matching_loss",
    "interpolant_loss",
    "kabsch_rotations",
    "make_matching_step",
    "pair_batch",
    "train_matching",
    "OBJECTIVES",
    "TrainState",
    "load_checkpoint",
    "make_optimizer",
    "make_step",
    "reinforce_beta_range_loss",
    "reinforce_loss",
    "reverse_kl_loss",
    "save_checkpoint",
    "train",
]
