"""Training samplers: objectives and the driver (one jitted step, checkpoints, progress)."""

from boltzgen.train._driver import (
    HISTORY_KEYS,
    TrainState,
    load_checkpoint,
    make_optimizer,
    make_step,
    save_checkpoint,
    train,
)
from boltzgen.train._objectives import (
    OBJECTIVES,
    reinforce_beta_range_loss,
    reinforce_loss,
    reverse_kl_loss,
)

__all__ = [
    "HISTORY_KEYS",
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
