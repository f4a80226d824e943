"""FEAT estimators (arXiv 2504.11516): ln Z from escorted / controlled path log-weights.

The path log-weights A_F (forward, from samples of a) and A_R (reverse, from samples of b) of
:mod:`boltzgen.mcmc._escorted` satisfy E[e^{A_F}] = Z_b/Z_a and E[e^{A_R}] = Z_a/Z_b. They are
nonequilibrium works W_F = −A_F and W_R = −A_R, so every FEAT estimator is a two-state work
estimator of :mod:`boltzgen.estimators._work` / :mod:`boltzgen.estimators._bar` (escorted
Jarzynski, controlled Crooks → BAR), shifted by the known ln Z_a so that ``log_z`` is the
absolute ln Z_b.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from boltzgen.estimators._bar import as_works, bar
from boltzgen.estimators._estimate import Estimate
from boltzgen.estimators._importance import variational_bound
from boltzgen.estimators._work import jarzynski, jarzynski_reverse, work_bounds

__all__ = ["FEAT_METHODS", "feat"]

#: Method names (= dict keys) returned by :func:`feat`, in order.
FEAT_METHODS = (
    "feat_forward",
    "feat_reverse",
    "feat_bar",
    "feat_upper_bound",
    "feat_lower_bound",
)


def _works(log_w, name: str) -> np.ndarray:
    """Works −A (float64, 1-D); NaN passes through (counted downstream), +inf A is refused."""
    a = np.asarray(log_w, dtype=np.float64).reshape(-1)
    if np.any(np.isposinf(a)):
        raise ValueError(
            f"{name}: {int(np.isposinf(a).sum())} log-weight(s) are +inf (infinite weight)"
        )
    return -a


def _shift(e: Estimate, log_z_a: float) -> Estimate:
    """The estimate of ln(Z_b/Z_a) turned into one of ln Z_b = ln Z_a + ln(Z_b/Z_a)."""
    return dataclasses.replace(e, log_z=e.log_z + log_z_a, extra={**e.extra, "log_z_a": log_z_a})


def feat(
    log_w_forward,
    log_w_reverse=None,
    *,
    log_z_a: float = 0.0,
    rng=None,
    n_boot: int = 0,
    prefix: str = "feat",
) -> dict[str, Estimate]:
    """FEAT free-energy estimates of ln Z_b from forward (and reverse) path log-weights.

    With works W_F = −A_F, W_R = −A_R (so that nothing is duplicated from the work
    estimators), and every ``log_z`` = ln Z_a + ln(Z_b/Z_a):

    * ``feat_forward``: ln Z_a + logmeanexp(A_F) (escorted Jarzynski, :func:`jarzynski`),
      an estimate biased low;
    * ``feat_reverse``: ln Z_a − logmeanexp(A_R) (:func:`jarzynski_reverse`), biased high;
    * ``feat_bar``: BAR on the pair (controlled Crooks, :func:`bar`), minimum variance;
    * ``feat_upper_bound``: ln Z_a + mean(A_F), kind ``upper_bound`` (on βF = −ln Z_b, i.e. a
      LOWER bound on ln Z_b), stderr std(A_F)/√n_F (:func:`work_bounds`' ``upper``);
    * ``feat_lower_bound``: ln Z_a − mean(A_R), kind ``lower_bound`` (on βF, an UPPER bound on
      ln Z_b), stderr std(A_R)/√n_R.

    So mean(A_F) ≤ ln(Z_b/Z_a) ≤ −mean(A_R) up to sampling error; the gaps are the KL
    divergences between the forward and reverse path measures. Without ``log_w_reverse`` only
    ``feat_forward`` and ``feat_upper_bound`` are returned.

    Args:
        log_w_forward: A_F at forward paths started from samples of ρ_a (−inf allowed: zero
            weight; NaN counted and treated as −inf; +inf raises ValueError).
        log_w_reverse: A_R at reverse paths started from samples of ρ_b, or None.
        log_z_a: the known ln Z_a of the start density (0 for a normalised base such as
            N(0, I); 0 also gives the relative ln(Z_b/Z_a)). Stored in ``extra["log_z_a"]``.
        rng: NumPy generator for BAR's bootstrap.
        n_boot: bootstrap resamples for BAR (0 = none).
        prefix: the method names' prefix in place of ``feat`` (the annealed paths of
            :class:`~boltzgen.stages.NeuralMCMC` use ``path``: ``path_bar``, ...).

    Returns:
        dict method name → :class:`Estimate` (names in :data:`FEAT_METHODS`, with ``prefix``).

    Raises:
        ValueError: empty arrays or a +inf log-weight (the message names the work argument).
    """
    log_z_a = float(log_z_a)
    work_f = _works(log_w_forward, "log_w_forward")
    out = [jarzynski(work_f, method="feat_forward")]
    if log_w_reverse is None:
        wf, _ = as_works(work_f, "log_w_forward")
        out.append(variational_bound(-wf, method="feat_upper_bound"))
    else:
        work_r = _works(log_w_reverse, "log_w_reverse")
        upper, lower = work_bounds(
            work_f, work_r, method_upper="feat_upper_bound", method_lower="feat_lower_bound"
        )
        out += [
            jarzynski_reverse(work_r, method="feat_reverse"),
            bar(work_f, work_r, method="feat_bar", rng=rng, n_boot=n_boot),
            upper,
            lower,
        ]
    out.sort(key=lambda e: FEAT_METHODS.index(e.method))
    out = [_shift(e, log_z_a) for e in out]
    if prefix != "feat":
        out = [dataclasses.replace(e, method=prefix + e.method[4:]) for e in out]
    return {e.method: e for e in out}
