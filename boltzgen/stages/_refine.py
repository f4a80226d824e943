r"""Refinement stages: MCMC from the trained q towards p with exact weights.

:class:`NeuralMCMC` (independent Metropolis–Hastings with q as the proposal, alternated with
local MALA/HMC moves), :class:`AIS` and :class:`SMC` (annealing along q^{1-λ} p^λ). Each gives
``refined_<method>`` and, from its samples of p, the lower bound ``forward_bound_refined``;
neural MCMC's equilibrium samples also give reverse importance sampling and BAR between q and
p with the estimation phase's works.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import jax
import numpy as np

from boltzgen import _checks
from boltzgen._estimation import log_q_and_energy, p_sample_estimates, spin_observables
from boltzgen.stages._base import AbstractStage, StageContext, StageOutput


def _discrete(system) -> bool:
    return bool(getattr(system, "discrete", False))


def _densities(ctx: StageContext) -> dict:
    """``sample_q``, ``log_q`` (one configuration) and ``log_density`` = −βE of a stage's run."""
    sampler, system, beta = ctx.sampler, ctx.system, ctx.beta
    return dict(
        sample_q=lambda k, n: sampler.sample_and_log_prob(n, key=k),
        log_q=lambda x: sampler.log_prob(x[None])[0],
        log_density=lambda x: -beta * system.energy(x),
    )


class _Refiner(AbstractStage):
    """Shared parts: run the Monte Carlo function, convert its result, derive estimates."""

    method: ClassVar[str] = ""
    #: Whether the final samples are equilibrium samples of p (equal weights).
    equilibrium: ClassVar[bool] = False

    def _options(self, system) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def _function(self):
        raise NotImplementedError

    def memory_bytes(self, system) -> int:
        """Bytes of the refined samples and per-step diagnostics (float64)."""
        return 8 * self.n_chains * (int(np.prod(system.event_shape)) + 4 + 2 * self.n_steps)

    def __call__(self, ctx: StageContext) -> StageOutput:
        """Refine, and return ``refined_<method>`` with the estimates from its samples of p."""
        sampler, system, beta = ctx.sampler, ctx.system, ctx.beta
        res = self._function()(
            ctx.key,
            **_densities(ctx),
            progress=ctx.progress,
            **self._options(system),
        )
        estimate, attrs = res.to_estimate(f"refined_{self.method}")
        x_p = res.positions
        log_w_p = None if self.equilibrium else res.log_weights
        lq_e = log_q_and_energy(sampler, system, x_p)
        estimates = {estimate.method: estimate}
        estimates.update(
            p_sample_estimates(
                beta,
                lq_e,
                log_w_p,
                q_log_w=ctx.samples["log_w"],
                names={"forward_bound": "forward_bound_refined"},
            )
        )
        refined = {
            "x": np.asarray(res.positions),
            "log_w": np.asarray(res.log_weights, np.float64),
            **{k: np.asarray(v) for k, v in res.diagnostics.items() if np.ndim(v) > 0},
            "attrs": dict(method=self.method, **attrs),
        }
        observables = {}
        if _discrete(system) and self.equilibrium:
            observables[estimate.method] = spin_observables(
                system.n_spins, beta, refined["x"], lq_e[1]
            )
        return StageOutput(estimates, refined, observables)


LOCAL_KERNELS = ("auto", "mala", "hmc", "none")


@dataclass(frozen=True)
class NeuralMCMC(_Refiner):
    r"""Neural MCMC: ``n_chains`` independent IMH chains with proposal q, plus local moves on p.

    Its ln Z (``refined_nmcmc``) is importance sampling on the IMH proposals (iid samples of q);
    the final chain states are equilibrium samples of p, which give the lower bound
    E_p[u + ln q] (``forward_bound_refined``), reverse importance sampling and BAR between q and
    p. See :func:`boltzgen.mcmc.neural_mcmc`.

    Attributes:
        n_chains: independent chains.
        n_steps: steps per chain (burn-in included).
        local_kernel: ``"mala"``, ``"hmc"``, ``"none"`` (pure IMH) or ``"auto"`` (MALA for
            continuous systems, none for discrete ones).
        n_local: local moves after each IMH step.
        step_size: initial local step size (None: half the smallest per-coordinate std of x_0).
        n_leapfrog: leapfrog steps per HMC move.
        target_accept: local target acceptance (None: 0.57 MALA, 0.65 HMC).
        adapt_rate: gain of the step-size update.
        n_warmup: steps with step-size adaptation (None: n_steps / 4).
        recompute_log_q: re-evaluate log q at every proposal.
        precision: ``"float64"`` or ``"float32"``.
        path_chains: annealed paths each way for the two-sided path bounds
            (:func:`boltzgen.mcmc.annealed_paths`): AIS paths from q to p, and the same
            protocol reversed from the chains' final states (at most ``n_chains`` of them).
            None: 256 for a continuous system, none for a discrete one; 0: none.
        path_steps: moves per annealed path.
        path_kernel: the paths' moves: ``"hmc"`` (``n_leapfrog`` leapfrog steps), ``"mala"``,
            ``"rwm"`` (random-walk Metropolis: ln q and ln p values only, no gradients) or
            ``"auto"``: HMC for a sampler with a cheap ∇ ln q (coupling flows), RWM otherwise
            (a CNF, whose ∇ ln q is a backpropagation through its ODE solve).
    """

    name: ClassVar[str] = "refine"
    method: ClassVar[str] = "nmcmc"
    equilibrium: ClassVar[bool] = True
    n_chains: int = 256
    n_steps: int = 200
    local_kernel: Literal["auto", "mala", "hmc", "none"] = "auto"
    n_local: int = 1
    step_size: float | None = None
    n_leapfrog: int = 5
    target_accept: float | None = None
    adapt_rate: float = 1.0
    n_warmup: int | None = None
    recompute_log_q: bool = False
    precision: Literal["float64", "float32"] = "float64"
    path_chains: int | None = None
    path_steps: int = 100
    path_kernel: Literal["auto", "hmc", "mala", "rwm"] = "auto"

    def __post_init__(self):
        _checks.integer("n_chains", self.n_chains, 1)
        _checks.integer("n_steps", self.n_steps, 1)
        _checks.choice("local_kernel", self.local_kernel, LOCAL_KERNELS)
        _checks.integer("n_local", self.n_local, 0)
        _checks.positive("step_size", self.step_size, optional=True)
        _checks.integer("n_leapfrog", self.n_leapfrog, 1)
        _checks.number(
            "target_accept",
            self.target_accept,
            low=0,
            high=1,
            low_open=True,
            high_open=True,
            optional=True,
        )
        _checks.positive("adapt_rate", self.adapt_rate)
        _checks.integer("n_warmup", self.n_warmup, 0, optional=True)
        if self.n_warmup is not None and self.n_warmup > self.n_steps:
            raise ValueError(f"n_warmup must be <= n_steps = {self.n_steps}, got {self.n_warmup}")
        _checks.boolean("recompute_log_q", self.recompute_log_q)
        _checks.choice("precision", self.precision, ("float64", "float32"))
        _checks.integer("path_chains", self.path_chains, 0, optional=True)
        if self.path_chains == 1:
            raise ValueError("path_chains must be 0 (no paths) or >= 2, got 1")
        _checks.integer("path_steps", self.path_steps, 1)
        _checks.choice("path_kernel", self.path_kernel, ("auto", "hmc", "mala", "rwm"))

    def check(self, system, sampler, objective) -> None:
        """A discrete system has no gradient: its local kernel must be ``none`` (or auto)."""
        if _discrete(system) and self.local_kernel in ("mala", "hmc"):
            raise ValueError(
                f"refine.local_kernel {self.local_kernel!r} needs gradients; {system.kind!r} is "
                "discrete: use 'none'"
            )
        if _discrete(system) and self.path_chains:
            raise ValueError(
                f"refine.path_chains = {self.path_chains}: annealed paths need gradients; "
                f"{system.kind!r} is discrete: use 0"
            )
        if self.n_paths(system, sampler) and self.n_chains < 2:
            raise ValueError(
                f"refine.n_chains = {self.n_chains}: the annealed paths need >= 2 reverse "
                "starting points (or path_chains = 0)"
            )

    def n_paths(self, system, sampler=None) -> int:
        """The number of forward annealed paths this stage runs (0: none)."""
        if self.path_chains is None:
            return 0 if _discrete(system) else 256
        return int(self.path_chains)

    def resolved_path_kernel(self, sampler) -> str:
        """The paths' move kernel for ``sampler`` (``"auto"`` resolved)."""
        if self.path_kernel != "auto":
            return self.path_kernel
        return "hmc" if getattr(sampler, "cheap_log_prob_grad", True) else "rwm"

    def memory_bytes(self, system) -> int:
        """The chains' arrays plus the paths' log-weights."""
        return super().memory_bytes(system) + 16 * (self.n_paths(system) + self.n_chains)

    def __call__(self, ctx: StageContext) -> StageOutput:
        """Refine; then, unless disabled, the two-sided annealed path bounds (``path_*``)."""
        out = super().__call__(ctx)
        n_paths = self.n_paths(ctx.system, ctx.sampler)
        if not n_paths:
            return out
        from boltzgen.estimators import Cost, feat
        from boltzgen.mcmc import annealed_paths

        res = annealed_paths(
            jax.random.fold_in(ctx.key, 7),
            **_densities(ctx),
            p_positions=out.refined["x"],
            n_chains=n_paths,
            n_steps=self.path_steps,
            kernel=self.resolved_path_kernel(ctx.sampler),
            n_leapfrog=self.n_leapfrog,
            precision=self.precision,
            progress="paths" if ctx.progress else False,
        )
        cost = Cost(
            n_energy_evals=float(res.n_energy_evals),
            n_log_q_evals=float(res.n_log_q_evals),
            wall_time=float(res.wall_time),
        )
        note = f"{res.n_steps}-step annealed paths ({self.resolved_path_kernel(ctx.sampler)}), "
        note += f"{res.log_w_forward.size} + "
        note += f"{res.log_w_reverse.size}"
        paths = feat(res.log_w_forward, res.log_w_reverse, prefix="path")
        estimates = {
            k: dataclasses.replace(e, cost=cost, notes=(*e.notes, note)) for k, e in paths.items()
        }
        refined = dict(out.refined)
        refined.update(
            path_log_w_forward=res.log_w_forward,
            path_log_w_reverse=res.log_w_reverse,
            path_schedule=res.schedule,
            path_step_sizes=res.step_sizes,
            path_acceptance_forward=res.acceptance_forward,
            path_acceptance_reverse=res.acceptance_reverse,
        )
        refined["attrs"] = {
            **refined["attrs"],
            "path_n_steps": res.n_steps,
            "path_kernel": self.resolved_path_kernel(ctx.sampler),
            "path_n_energy_evals": res.n_energy_evals,
            "path_n_log_q_evals": res.n_log_q_evals,
            "path_wall_time": res.wall_time,
        }
        return StageOutput({**out.estimates, **estimates}, refined, out.observables)

    def _options(self, system) -> dict:
        out = super()._options(system)
        out.pop("path_chains")
        out.pop("path_steps")
        out.pop("path_kernel")
        kernel = out["local_kernel"]
        if kernel == "auto":
            kernel = "none" if _discrete(system) else "mala"
        out["local_kernel"] = None if kernel == "none" else kernel
        return out

    def _function(self):
        from boltzgen.mcmc import neural_mcmc

        return neural_mcmc


@dataclass(frozen=True)
class _Anneal(_Refiner):
    """AIS / SMC from q to p (:func:`boltzgen.mcmc.refine_anneal`).

    Attributes:
        n_chains: chains (particles).
        n_steps: annealing steps (= MCMC moves).
        schedule: ``"power"`` (λ_k = (k/K)^power) or ``"linear"``.
        power: exponent of the power schedule.
        kernel: ``"hmc"`` or ``"mala"``.
        n_leapfrog: leapfrog steps per HMC move.
        step_size: initial step size (None: half the smallest per-coordinate std of q's samples).
        target_accept: target acceptance of the step-size adaptation (None: the kernel's).
        adapt_rate: gain of the step-size update.
        pilot_chains: chains of the pilot run that fixes the step sizes (None: max(64, M/8);
            0: adapt online in the main run).
        reuse_move_density: recover log q from the move's density (None: in float64).
        precision: ``"float64"`` or ``"float32"``.
    """

    name: ClassVar[str] = "refine"
    n_chains: int = 1024
    n_steps: int = 100
    schedule: Literal["power", "linear"] = "power"
    power: float = 2.0
    kernel: Literal["hmc", "mala"] = "hmc"
    n_leapfrog: int = 5
    step_size: float | None = None
    target_accept: float | None = None
    adapt_rate: float = 1.0
    pilot_chains: int | None = None
    reuse_move_density: bool | None = None
    precision: Literal["float64", "float32"] = "float64"

    def __post_init__(self):
        _checks.hmc_settings(self)
        _checks.choice("schedule", self.schedule, ("power", "linear"))

    def check(self, system, sampler, objective) -> None:
        """Continuous systems only (the moves are HMC/MALA)."""
        if _discrete(system):
            raise ValueError(
                f"refine.method {self.method!r} moves by HMC/MALA and needs a continuous system; "
                f"{system.kind!r} is discrete: use 'nmcmc' or 'none'"
            )

    def _function(self):
        from boltzgen.mcmc import refine_anneal

        return refine_anneal


@dataclass(frozen=True)
class AIS(_Anneal):
    """Annealed importance sampling from q to p; exact weights for any schedule.

    Attributes: those of the annealing settings (``n_chains``, ``n_steps``, ``schedule``,
    ``power``, ``kernel``, ``n_leapfrog``, ``step_size``, ``target_accept``, ``adapt_rate``,
    ``pilot_chains``, ``reuse_move_density``, ``precision``; see :class:`SMC`).
    """

    method: ClassVar[str] = "ais"

    def _options(self, system) -> dict:
        return {**super()._options(system), "resample_threshold": None}


@dataclass(frozen=True)
class SMC(_Anneal):
    """Sequential Monte Carlo from q to p: AIS with resampling in independent replicas.

    Attributes (besides the annealing settings of :class:`AIS`):
        resample_threshold: resample a replica when its ESS fraction falls below this.
        n_replicas: independent replica populations (None: the function's default).
    """

    method: ClassVar[str] = "smc"
    resample_threshold: float = 0.5
    n_replicas: int | None = None

    def __post_init__(self):
        super().__post_init__()
        _checks.number("resample_threshold", self.resample_threshold, low=0, high=1, low_open=True)
        _checks.integer("n_replicas", self.n_replicas, 1, optional=True)


#: Refinement stages by their run-spec name (``[refine] method``).
REFINERS = {"nmcmc": NeuralMCMC, "ais": AIS, "smc": SMC}

__all__ = ["AIS", "NeuralMCMC", "REFINERS", "SMC"]
