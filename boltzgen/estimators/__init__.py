"""Free-energy estimators: pure float64 functions on arrays of log-weights.

Nothing here knows about systems or samplers: callers pass log-weights w = −u(x) − ln q(x)
(or works) and get :class:`Estimate` objects back. Two-state estimators (BAR, Jarzynski, the
second-law bounds), FEAT path estimators (:func:`feat`, on escorted-Jarzynski path weights) and
MBAR return ln(Z_B/Z_A) = −Δf; see docs/estimators.md.
"""

from boltzgen.estimators._bar import MIN_TRUSTED_OVERLAP, bar, bar_delta_f
from boltzgen.estimators._estimate import (
    FLAGS,
    KINDS,
    MAX_TRUSTED_NONFINITE_SHARE,
    Cost,
    Estimate,
)
from boltzgen.estimators._feat import FEAT_METHODS, feat
from boltzgen.estimators._importance import (
    MIN_TRUSTED_ESS,
    bootstrap_log_z_stderr,
    forward_bound,
    forward_ess,
    importance_entropy,
    importance_log_z,
    importance_stderr,
    kish_ess,
    logmeanexp,
    normalised_weights,
    reverse_importance_log_z,
    variational_bound,
    weighted_mean,
)
from boltzgen.estimators._mbar import mbar, mbar_estimate
from boltzgen.estimators._metrics import (
    distance_w2,
    energy_w2,
    pairwise_distances,
    wasserstein2_1d,
)
from boltzgen.estimators._pareto import MAX_TRUSTED_PARETO_K, gpd_fit, pareto_k
from boltzgen.estimators._work import (
    crooks_check,
    jarzynski,
    jarzynski_reverse,
    two_state,
    work_bounds,
)

__all__ = [
    "gpd_fit",
    "pareto_k",
    "Cost",
    "Estimate",
    "FLAGS",
    "FEAT_METHODS",
    "KINDS",
    "MAX_TRUSTED_NONFINITE_SHARE",
    "MAX_TRUSTED_PARETO_K",
    "MIN_TRUSTED_ESS",
    "MIN_TRUSTED_OVERLAP",
    "bar",
    "bar_delta_f",
    "bootstrap_log_z_stderr",
    "crooks_check",
    "distance_w2",
    "energy_w2",
    "feat",
    "forward_bound",
    "forward_ess",
    "importance_entropy",
    "importance_log_z",
    "importance_stderr",
    "jarzynski",
    "jarzynski_reverse",
    "kish_ess",
    "logmeanexp",
    "mbar",
    "mbar_estimate",
    "normalised_weights",
    "pairwise_distances",
    "reverse_importance_log_z",
    "two_state",
    "variational_bound",
    "wasserstein2_1d",
    "weighted_mean",
    "work_bounds",
]
