"""Free-energy estimators: pure float64 functions on arrays of log-weights.

Nothing here knows about systems or samplers: callers pass log-weights w = −u(x) − ln q(x)
(or works) and get :class:`Estimate` objects back.
"""

from boltzgen.estimators._estimate import KINDS, Estimate
from boltzgen.estimators._importance import (
    MIN_TRUSTED_ESS,
    bootstrap_log_z_stderr,
    forward_bound,
    importance_log_z,
    importance_stderr,
    kish_ess,
    logmeanexp,
    normalised_weights,
    variational_bound,
    weighted_mean,
)

__all__ = [
    "Estimate",
    "KINDS",
    "MIN_TRUSTED_ESS",
    "bootstrap_log_z_stderr",
    "forward_bound",
    "importance_log_z",
    "importance_stderr",
    "kish_ess",
    "logmeanexp",
    "normalised_weights",
    "variational_bound",
    "weighted_mean",
]
