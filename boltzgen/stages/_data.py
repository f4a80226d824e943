r"""Stages that use the data objective's Monte Carlo samples of p: held-out estimates and FEAT.

:class:`HeldOutData`: the held-out samples of p give the lower bound E_p[u + ln q]
(``forward_bound_data``), reverse importance sampling (``reverse_importance_data``), BAR between
q and p (``bar_data``) and the energy / interatomic-distance W2 of q's samples against p.
:class:`FEAT`: escorted Jarzynski / controlled Crooks paths along the trained stochastic
interpolant, forward from its Gaussian source and backward from held-out samples of p.

Monte Carlo records are correlated along each chain: the standard errors of every estimate
built on them are multiplied by √G, G = records / energy ESS (``extra["stderr_inflation"]``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import ClassVar

import jax
import numpy as np

from boltzgen import _checks
from boltzgen import estimators as est
from boltzgen._estimation import log_q_and_energy, p_sample_estimates
from boltzgen.estimators import Cost
from boltzgen.stages._base import AbstractStage, StageContext, StageOutput


def _needs_data(objective, what: str) -> None:
    if not getattr(objective, "needs_data", False):
        raise ValueError(
            f"stage {what!r} uses the Monte Carlo samples of a data objective (flow_matching or "
            f"interpolant); objective {getattr(objective, 'name', objective)!r} has none"
        )


@dataclass(frozen=True)
class HeldOutData(AbstractStage):
    """Estimates from the held-out Monte Carlo samples of p, and sample-quality metrics."""

    name: ClassVar[str] = "holdout"

    def check(self, system, sampler, objective) -> None:
        """Needs a data objective with held-out samples."""
        _needs_data(objective, "holdout")
        if objective.data.n_holdout < 1:
            raise ValueError("stage 'holdout' needs data.n_holdout >= 1")

    def __call__(self, ctx: StageContext) -> StageOutput:
        """``forward_bound_data``, ``reverse_importance_data``, ``bar_data`` and W2 metrics."""
        data, samples = ctx.data, ctx.samples
        g = data.inefficiency()
        cost = Cost(n_energy_evals=float(data.n_energy_evals), wall_time=data.wall_time)
        extra = dict(
            acceptance_data=data.acceptance,
            energy_rhat_data=data.energy_rhat,  # split-R̂ of the chains' energy traces
            energy_ess_data=data.energy_ess,  # ESS of the recorded energies, all chains
        )
        names = {m: f"{m}_data" for m in ("forward_bound", "reverse_importance", "bar")}
        lq_e = log_q_and_energy(ctx.sampler, ctx.system, data.holdout)
        derived = p_sample_estimates(ctx.beta, lq_e, q_log_w=samples["log_w"], names=names)
        estimates = {
            m: replace(e, cost=cost, extra={**e.extra, **extra}).with_stderr_inflation(math.sqrt(g))
            for m, e in derived.items()
        }
        metrics = sample_metrics(
            samples["x"], samples["energy"], data.holdout, data.holdout_energy, samples["log_w"]
        )
        return StageOutput(estimates=estimates, observables={"samples": metrics})


def sample_metrics(q_x, q_energy, p_x, p_energy, log_w=None) -> dict[str, tuple[float, float]]:
    """Energy-W2 and interatomic-distance-W2 of q's samples against held-out samples of p.

    Returns ``{"energy_w2": (value, nan), "distance_w2": ..., and with ``log_w`` the same for
    the importance-reweighted samples ("energy_w2_reweighted", ...)}`` (no standard errors).
    """
    from boltzgen.estimators._metrics import distance_w2, energy_w2

    finite = np.isfinite(q_energy)
    out = {
        "energy_w2": (energy_w2(q_energy[finite], p_energy), math.nan),
        "distance_w2": (distance_w2(q_x[finite], p_x), math.nan),
    }
    if log_w is not None:
        w = np.asarray(est.normalised_weights(np.asarray(log_w, np.float64)))
        ok = finite & np.isfinite(w)  # the metrics normalise the weights themselves
        out["energy_w2_reweighted"] = (energy_w2(q_energy[ok], p_energy, weights_a=w[ok]), math.nan)
        out["distance_w2_reweighted"] = (distance_w2(q_x[ok], p_x, weights_a=w[ok]), math.nan)
    return out


@dataclass(frozen=True)
class FEAT(AbstractStage):
    r"""FEAT estimates of ln Z from escorted paths along the trained Gaussian → p interpolant.

    Forward paths start at exact draws of the normalised Gaussian source (ln Z_a = 0) and end at
    p; reverse paths start at held-out samples of p. ε(t) = ε₀ γ(t)², so ε s = −ε₀ γ η is finite
    at both ends. The weights are exact for the learned fields and any step count; the
    estimates are ``feat_forward``, ``feat_reverse``, ``feat_bar`` and the bounds
    ``feat_upper_bound`` (mean A_F, an upper bound on βF) and ``feat_lower_bound``.

    Attributes:
        paths: forward (and at most as many reverse) paths.
        steps: Euler–Maruyama steps per path.
        eps: ε₀ of the noise schedule ε(t) = ε₀ γ(t)² (0: deterministic paths).
    """

    name: ClassVar[str] = "feat"
    paths: int = 4096
    steps: int = 100
    eps: float = 1.0

    def __post_init__(self):
        _checks.integer("paths", self.paths, 1)
        _checks.integer("steps", self.steps, 1)
        _checks.number("eps", self.eps, low=0.0)

    def check(self, system, sampler, objective) -> None:
        """Needs the interpolant objective (its learned velocity and score drive the paths)."""
        if getattr(objective, "name", None) != "interpolant":
            raise ValueError(
                "stage 'feat' runs paths along a trained stochastic interpolant: it needs "
                f"objective 'interpolant', got {getattr(objective, 'name', objective)!r}"
            )

    def __call__(self, ctx: StageContext) -> StageOutput:
        """Forward paths from the source, reverse paths from held-out samples of p."""
        interp, beta, system = ctx.model, ctx.beta, ctx.system
        k_base, k_paths = jax.random.split(ctx.key)
        x0 = interp.sample_base(self.paths, key=k_base)
        holdout = ctx.data.holdout
        x1 = jax.numpy.asarray(holdout[: min(self.paths, int(holdout.shape[0]))], x0.dtype)
        out = self.run(
            interp,
            x0,
            x1,
            log_density_a=interp.base_log_prob,
            log_density_b=lambda x: -beta * system.energy(x),
            key=k_paths,
        )
        # The reverse paths start at the correlated Monte Carlo records.
        g = math.sqrt(ctx.data.inefficiency())
        inflated = ("feat_reverse", "feat_bar", "feat_lower_bound")
        out = {m: (e.with_stderr_inflation(g) if m in inflated else e) for m, e in out.items()}
        return StageOutput(estimates=out)

    def run(self, interp, x_a, x_b, *, log_density_a, log_density_b, key, log_z_a=0.0):
        """Forward paths from ``x_a``, reverse from ``x_b`` (if any); FEAT estimates with costs."""
        from boltzgen.mcmc import forward_paths, reverse_paths

        common = dict(
            log_density_a=log_density_a,
            log_density_b=log_density_b,
            n_steps=self.steps,
            eps=interp.eps_schedule(float(self.eps)),
            zero_com=interp.zero_com,
        )
        k_f, k_r = jax.random.split(key)
        t = time.perf_counter()
        fwd = forward_paths(interp.velocity, interp.score, x_a, key=k_f, **common)
        rev = None
        if x_b is not None and x_b.shape[0] > 0:
            rev = reverse_paths(interp.velocity, interp.score, x_b, key=k_r, **common)
        estimates = est.feat(
            np.asarray(fwd.log_w, np.float64),
            None if rev is None else np.asarray(rev.log_w, np.float64),
            log_z_a=log_z_a,
        )
        cost = Cost(wall_time=time.perf_counter() - t)
        extra = dict(
            n_paths_forward=int(x_a.shape[0]),
            n_paths_reverse=0 if rev is None else int(x_b.shape[0]),
            n_steps=self.steps,
            eps0=float(self.eps),
        )
        return {m: replace(e, cost=cost, extra={**e.extra, **extra}) for m, e in estimates.items()}


__all__ = ["FEAT", "HeldOutData", "sample_metrics"]
