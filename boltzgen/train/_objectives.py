r"""Training objectives as strategy objects: what a sampler is trained to minimise, and from what.

Every objective is a frozen dataclass holding its configuration, with

* ``check(system, sampler)`` — raise ``ValueError`` (one line, naming the value) before any work
  when the objective does not suit the system or the sampler;
* ``prepare(sampler, system, beta, *, key, init_key, progress)`` → :class:`Task` — everything
  the one training loop (:class:`boltzgen.train.Trainer`) needs: the model to train, the arrays
  the jitted step reads (β, Monte Carlo data), the energy, the minibatch pairing; data
  objectives draw their Monte Carlo samples of p here (from ``key``; ``init_key`` seeds a model
  the objective builds itself, e.g. an interpolant);
* ``loss(model, inputs, step_inputs, key, batch_size, task)`` → (loss, info) — pure and
  jit-able (``task`` supplies the static parts: energy, pairing); ``info`` holds the scalars
  recorded per step in the history;
* ``finish(model, task)`` → the trained sampler q with exact log q.

Energy-based objectives (:class:`ReverseKL`, :class:`Reinforce`, :class:`BetaRange`) sample q
and evaluate u = βE; data-based ones (:class:`FlowMatching`, :class:`Interpolant`) regress a
vector field on Monte Carlo samples of p (their :class:`~boltzgen.train.HMCData`) and evaluate no
energy while training.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from boltzgen import _checks
from boltzgen.train import _losses
from boltzgen.train._data import HMCData, MonteCarloData


@dataclass(frozen=True)
class Task:
    """What the training loop trains: built by an objective's ``prepare``.

    Attributes:
        model: the module whose inexact-array leaves are trained (see ``trainable``).
        inputs: arrays read by the jitted step (β, data), a pytree.
        energy: E(x) on one configuration, or None for data objectives.
        data: the Monte Carlo samples of p of a data objective, else None.
        wrapper: turns the trained model into the sampler q (e.g. back into its centre-of-mass
            split, or an interpolant into its probability-flow CNF), else None.
        pair: host function (x0, x1) → partners of x0 for data objectives, else None.
        beta: β of the run, when a later training phase needs it (:class:`FineTuned`).
    """

    model: Any
    inputs: Any
    energy: Any = None
    data: MonteCarloData | None = None
    wrapper: Any = None
    pair: Any = None
    beta: Any = None


def _kish_fraction(log_w):
    w = log_w - jnp.max(log_w)
    e = jnp.exp(w)
    return jnp.sum(e) ** 2 / jnp.sum(e * e) / log_w.shape[0]


class AbstractObjective:
    """Base of the objectives (see the module docstring for the protocol)."""

    #: The objective's name in run specs (``[train] objective``) and checkpoints.
    name: ClassVar[str] = ""
    #: Per-step scalars the objective's ``loss`` reports (besides ``loss`` itself).
    info_keys: ClassVar[tuple[str, ...]] = ()
    #: True for objectives trained on Monte Carlo samples of p.
    needs_data: ClassVar[bool] = False

    def check(self, system, sampler) -> None:
        """Raise ValueError when the objective does not suit ``system`` or ``sampler``."""

    def energy_evals_per_step(self, batch_size: int) -> int:
        """Energy evaluations of one training step of ``batch_size`` (0: data only)."""
        return 0

    def trainable(self, model):
        """Filter spec of the trained leaves: every inexact array (override to freeze some)."""
        return jax.tree.map(eqx.is_inexact_array, model)

    def schedule(self, steps: np.ndarray, total: int) -> dict:
        """Per-step host-computed inputs of the steps ``steps`` (e.g. a β ramp); default none."""
        return {}

    def finish(self, model, task: Task):
        """The trained sampler q from the trained model."""
        return model if task.wrapper is None else task.wrapper(model)

    def fit(self, trainer, task: Task, *, key, **fit):
        """Train ``task`` with ``trainer``; return (final TrainState, trained sampler q).

        ``fit`` are :meth:`boltzgen.train.Trainer.fit`'s keywords (checkpoint, resume,
        fingerprint, progress, max_traces). Objectives of several phases override this.
        """
        state = trainer.fit(self, task, key=key, **fit)
        return state, self.finish(state.model, task)


# --------------------------------------------------------------------------------------------
# Energy-based objectives
# --------------------------------------------------------------------------------------------


def _check_anneal(value) -> None:
    _checks.number("beta_anneal", value, low=0.0, high=1.0, high_open=True)


class _EnergyObjective(AbstractObjective):
    """Shared parts of the objectives that sample q and evaluate u = βE(x)."""

    info_keys: ClassVar[tuple[str, ...]] = ("ess_fraction", "n_nonfinite")
    beta_anneal: float

    def energy_evals_per_step(self, batch_size: int) -> int:
        """One energy evaluation per configuration of the batch of q."""
        return int(batch_size)

    def prepare(self, sampler, system, beta, *, key=None, init_key=None, progress=True) -> Task:
        """A task that trains ``sampler`` on ``system.energy`` at ``beta``."""
        return self.energy_task(sampler, system.energy, beta)

    def energy_task(self, sampler, energy_fn, beta) -> Task:
        """A task that trains ``sampler`` on the energy ``energy_fn`` at ``beta``."""
        return Task(
            model=sampler, inputs={"beta": jnp.asarray(beta, jnp.float32)}, energy=energy_fn
        )

    def schedule(self, steps: np.ndarray, total: int) -> dict:
        """β ramp: β_t = β · min(1, (t + 1) / (f · steps)), f = ``beta_anneal`` (0 = off)."""
        ramp = self.beta_anneal * total
        if ramp >= 1:
            fac = np.array([min(1.0, (int(s) + 1) / ramp) for s in steps], np.float32)
        else:
            fac = np.ones(len(steps), np.float32)
        return {"beta_factor": fac}

    def _loss_fn(self):
        raise NotImplementedError

    def loss(self, model, inputs, step_inputs, key, batch_size: int, task: Task):
        """The objective's loss and its per-step info (ESS fraction, non-finite samples)."""
        beta = inputs["beta"] * step_inputs["beta_factor"]
        loss, aux = self._loss_fn()(model, task.energy, beta, key=key, batch_size=batch_size)
        info = dict(ess_fraction=_kish_fraction(aux["log_w"]), n_nonfinite=aux["n_nonfinite"])
        return loss, info


@dataclass(frozen=True)
class ReverseKL(_EnergyObjective):
    r"""Reverse KL: minimise the variational free energy E_q[u + ln q] = βF + KL(q‖p) ≥ βF.

    Reparametrised gradient (x = f_θ(z)); for continuous samplers.

    Attributes:
        beta_anneal: fraction f of the steps over which β ramps up linearly from 0
            (β_t = β · min(1, (t + 1)/(f · steps)); 0 = off).
        path_gradient: differentiate ln q only through the sample x (drop the zero-mean score
            term; one more inverse pass per step). See ``_losses.reverse_kl_loss``.
    """

    name: ClassVar[str] = "reverse_kl"
    beta_anneal: float = 0.0
    path_gradient: bool = False

    def __post_init__(self):
        _check_anneal(self.beta_anneal)
        _checks.boolean("path_gradient", self.path_gradient)

    def check(self, system, sampler) -> None:
        """Continuous systems only (a discrete sample cannot be reparametrised)."""
        if getattr(system, "discrete", False):
            raise ValueError(
                f"objective 'reverse_kl' needs reparametrised samples; {system.kind!r} is a "
                "discrete spin system: use 'reinforce'"
            )

    def _loss_fn(self):
        if self.path_gradient:
            return functools.partial(_losses.reverse_kl_loss, path_gradient=True)
        return _losses.reverse_kl_loss


@dataclass(frozen=True)
class Reinforce(_EnergyObjective):
    r"""E_q[u + ln q] ≥ βF with the score-function gradient and a leave-one-out baseline.

    For discrete samplers (spins). The default ramps β up over the first 30 % of the steps,
    which keeps a spin model from freezing into one ordered state early.

    Attributes:
        beta_anneal: fraction of the steps of the linear β ramp (0 = off).
    """

    name: ClassVar[str] = "reinforce"
    beta_anneal: float = 0.3

    def __post_init__(self):
        _check_anneal(self.beta_anneal)

    def _loss_fn(self):
        return _losses.reinforce_loss


@dataclass(frozen=True)
class BetaRange(_EnergyObjective):
    r"""REINFORCE for a β-conditioned sampler q(x | β) over [β_min, β_max] (free-energy curves).

    Each step draws ``groups`` temperatures (stratified uniform in the range) and minimises the
    mean of E_{q(·|β)}[βE + ln q(·|β)], each term an upper bound on βF(β).

    Attributes:
        beta_anneal: fraction of the steps over which the whole range ramps up from 0.
    """

    name: ClassVar[str] = "beta_range"
    beta_anneal: float = 0.3

    def __post_init__(self):
        _check_anneal(self.beta_anneal)

    def check(self, system, sampler) -> None:
        """The sampler must be β-conditioned."""
        if not getattr(sampler, "beta_conditioned", False) and not hasattr(sampler, "at"):
            raise ValueError(
                "objective 'beta_range' trains a beta-conditioned sampler (sampler."
                "beta_conditioned = true)"
            )

    def prepare(self, sampler, system, beta, *, key=None, init_key=None, progress=True) -> Task:
        """``beta`` is the range (β_min, β_max)."""
        lo, hi = (float(b) for b in beta)
        return Task(
            model=sampler, inputs={"beta": jnp.asarray([lo, hi], jnp.float32)}, energy=system.energy
        )

    def _loss_fn(self):
        return _losses.reinforce_beta_range_loss


# --------------------------------------------------------------------------------------------
# Data-based objectives
# --------------------------------------------------------------------------------------------

PAIRING_CHOICES = ("auto", "independent", "ot", "aligned", "equivariant_ot")


def default_pairing(system) -> tuple[str, bool]:
    """The default (pairing, rotations) of matching for ``system``.

    Particle relabelling + rotation alignment for rotation-invariant particles in d ≥ 2,
    relabelling only in d = 1, mini-batch OT otherwise.
    """
    shape = tuple(system.event_shape)
    if len(shape) == 2 and getattr(system, "permutation_symmetric", False):
        return "aligned", shape[1] >= 2
    return "ot", False


class _DataObjective(AbstractObjective):
    """Shared parts of the objectives trained on Monte Carlo samples of p."""

    needs_data: ClassVar[bool] = True
    info_keys: ClassVar[tuple[str, ...]] = ("loss_b", "loss_eta", "n_nonfinite")
    data: HMCData
    pairing: str

    def _check_common(self, system) -> None:
        self.data.check(system)
        if getattr(system, "discrete", False):
            raise ValueError(
                f"objective {self.name!r} trains a continuous flow from Monte Carlo samples; "
                f"{system.kind!r} is a discrete spin system"
            )
        pairing, _ = self.resolved_pairing(system)
        if pairing in ("aligned", "equivariant_ot") and len(tuple(system.event_shape)) != 2:
            raise ValueError(f"pairing {pairing!r} needs particles, event shape (N, d)")

    def resolved_pairing(self, system) -> tuple[str, bool]:
        """(pairing, rotations) for ``system``: the system's default for ``"auto"``."""
        pairing, rotations = default_pairing(system)
        return (pairing if self.pairing == "auto" else self.pairing), rotations

    def _pair_fn(self, system):
        from boltzgen.train._matching import pair_batch

        pairing, rotations = self.resolved_pairing(system)
        if pairing == "independent":
            return None

        def pair(x0, x1):
            return pair_batch(np.asarray(x0), np.asarray(x1), pairing=pairing, rotations=rotations)

        return pair

    def _draw(self, model, inputs, key, batch_size, t_min, pair):
        """One minibatch on device: x0 (base or data A), x1 (paired data), z, t."""
        from boltzgen.train._matching import draw_batch

        x0, x1, z, t = draw_batch(
            model, inputs.get("data_a"), inputs["data"], key, batch_size, t_min
        )
        if pair is not None:
            # The pairings are assignment problems: batch OT and N > 6 relabellings need the
            # Hungarian algorithm, which has no JAX implementation, so every pairing runs in
            # NumPy/SciPy on the host, called from inside the jitted chunk (one code path, the
            # numbers of earlier versions). The N ≤ 6 relabelling search without OT could move
            # to the device; it is not the bottleneck on CPU. The partners depend only on this
            # batch, so the callback is pure.
            x1 = jax.pure_callback(pair, jax.ShapeDtypeStruct(x1.shape, x1.dtype), x0, x1)
        return x0, x1, z, t


def _com_split(sampler):
    from boltzgen.flows import CentreOfMassSplit

    return sampler if isinstance(sampler, CentreOfMassSplit) else None


def _as_data(model, x, name):
    from boltzgen.train._matching import as_data

    return as_data(model, x, name)


@dataclass(frozen=True)
class FlowMatching(_DataObjective):
    r"""Conditional flow matching of a CNF on Monte Carlo samples of p.

    L(v) = E |v(t, x_t) − (x₁ − x₀)|², x_t = (1 − t)x₀ + t x₁, x₀ ~ the CNF's Gaussian base,
    x₁ ~ data (paired by ``pairing``), t ~ U(0, 1). The base scale is frozen (the target
    assumes that base). For a :class:`~boltzgen.flows.CentreOfMassSplit` sampler the inner
    zero-COM CNF is trained on centred data and the centre-of-mass scale is set to its
    maximum-likelihood value on the data.

    Attributes:
        data: how the Monte Carlo samples of p are made.
        pairing: coupling of base and data draws in a minibatch: ``"auto"`` (aligned particles
            with rotations in d ≥ 2, relabelling only in d = 1, mini-batch OT otherwise),
            ``"independent"``, ``"ot"``, ``"aligned"`` or ``"equivariant_ot"``.
    """

    name: ClassVar[str] = "flow_matching"
    data: HMCData = field(default_factory=HMCData)
    pairing: str = "auto"

    def __post_init__(self):
        _checks.choice("pairing", self.pairing, PAIRING_CHOICES)

    def check(self, system, sampler) -> None:
        """A particle system and a CNF sampler (or the zero-COM CNF of a COM split)."""
        from boltzgen.flows import CNF

        self._check_common(system)
        split = _com_split(sampler)
        inner = split.inner if split is not None else sampler
        if not isinstance(inner, CNF):
            raise ValueError(
                f"objective {self.name!r} trains a continuous flow: use sampler.kind = 'cnf', "
                f"got {type(sampler).__name__}"
            )

    def trainable(self, model):
        """Every inexact array except the CNF's base scale (frozen)."""
        spec = jax.tree.map(eqx.is_inexact_array, model)
        return eqx.tree_at(lambda m: m.log_scale, spec, replace=False)

    def prepare(self, sampler, system, beta, *, key, init_key=None, progress=True) -> Task:
        """Draw the Monte Carlo data; the task trains the (inner) CNF from its base."""
        data = self.data.sample(system, beta, key=key, progress=progress)
        return self.data_task(sampler, system, data)

    def data_task(self, sampler, system, data: MonteCarloData) -> Task:
        """The task for given Monte Carlo ``data`` (no sampling)."""
        split = _com_split(sampler)
        x = data.train
        wrapper = None
        if split is not None:  # the exact Gaussian of the centre of mass: its MLE scale
            com = x.mean(axis=-2)
            s = math.sqrt(float(np.mean(com**2)))
            split = eqx.tree_at(lambda q: q.log_com_scale, split, jnp.log(jnp.float32(s)))
            x = x - com[:, None, :]
            wrapper = _Rewrap(split)
        model = split.inner if split is not None else sampler
        inputs = {"data": _as_data(model, x, "data")}
        pair = self._pair_fn(system)
        return Task(model=model, inputs=inputs, data=data, wrapper=wrapper, pair=pair)

    def loss(self, model, inputs, step_inputs, key, batch_size: int, task: Task):
        """Flow-matching loss on one paired minibatch."""
        from boltzgen.train._matching import flow_matching_loss

        x0, x1, _, t = self._draw(model, inputs, key, batch_size, 0.0, task.pair)
        loss = flow_matching_loss(model, x0, x1, t)
        nan = jnp.full((), jnp.nan, loss.dtype)
        return loss, dict(loss_b=nan, loss_eta=nan, n_nonfinite=jnp.zeros((), jnp.int32))


@dataclass(frozen=True)
class _Rewrap:
    """Put a trained inner model back into its centre-of-mass split."""

    split: Any

    def __call__(self, model):
        return eqx.tree_at(lambda q: q.inner, self.split, model)


@dataclass(frozen=True)
class Interpolant(_DataObjective):
    r"""Stochastic interpolant from a Gaussian (or from samples of A) to samples of p.

    x_t = α_t x₀ + β_t x₁ + γ_t z with γ_t = √(a t(1 − t)), a = ``gamma_scale``; learns the
    velocity b by L_b = E[½|b̂|² − (α̇x₀ + β̇x₁ + γ̇z)·b̂] and the denoiser η by
    L_η = E[½|η̂|² − z·η̂] (antithetic in z). q is the probability-flow ODE of b with exact
    log q; the trained interpolant also drives FEAT paths (:class:`boltzgen.stages.FEAT`).
    The fields take their architecture from these attributes (the config layer copies the
    ``[sampler]`` keys of the same names); the base scale, the zero-COM setting, the ODE steps
    and solver come from the CNF sampler.

    Attributes:
        data: how the Monte Carlo samples of p are made.
        pairing: coupling of source and data draws (see :class:`FlowMatching`).
        gamma_scale: a > 0 of γ_t.
        hidden: width of the field MLPs.
        depth: hidden layers per MLP.
        field: particle field kind (``"rbf"``, ``"mlp"``, ``"env"``, ``"egnn"``).
        n_rbf: radial basis functions of the particle fields.
        r_max: largest radial-basis centre.
    """

    name: ClassVar[str] = "interpolant"
    data: HMCData = field(default_factory=HMCData)
    pairing: str = "auto"
    gamma_scale: float = 1.0
    hidden: int = 64
    depth: int = 2
    field: str = "rbf"
    n_rbf: int = 32
    r_max: float = 8.0

    def __post_init__(self):
        _checks.choice("pairing", self.pairing, PAIRING_CHOICES)
        _checks.positive("gamma_scale", self.gamma_scale)
        _checks.integer("hidden", self.hidden, 1)
        _checks.integer("depth", self.depth, 1)
        _checks.integer("n_rbf", self.n_rbf, 1)
        _checks.positive("r_max", self.r_max)

    def check(self, system, sampler) -> None:
        """A particle system and a plain CNF sampler (no centre-of-mass split)."""
        from boltzgen.flows import CNF

        self._check_common(system)
        if _com_split(sampler) is not None:
            raise ValueError(
                "objective 'interpolant' works in the full space or with a translation-"
                "invariant system; set sampler.zero_com = false"
            )
        if not isinstance(sampler, CNF):
            raise ValueError(
                f"objective 'interpolant' trains a continuous flow: use sampler.kind = 'cnf', "
                f"got {type(sampler).__name__}"
            )

    def build(self, shape, *, key, source="gaussian", base_scale=1.0, zero_com=False):
        """A fresh :class:`~boltzgen.flows.Interpolant` with this objective's fields."""
        from boltzgen.flows import Interpolant as Model

        return Model(
            shape,
            key=key,
            hidden=self.hidden,
            depth=self.depth,
            field=self.field,
            n_rbf=self.n_rbf,
            r_max=self.r_max,
            gamma_scale=self.gamma_scale,
            source=source,
            base_scale=base_scale,
            zero_com=zero_com,
        )

    def prepare(self, sampler, system, beta, *, key, init_key, progress=True) -> Task:
        """Draw the Monte Carlo data (from ``key``); the task trains a Gaussian → p interpolant.

        The interpolant's weights come from ``init_key``.
        """
        data = self.data.sample(system, beta, key=key, progress=progress)
        return self.data_task(sampler, system, data, key=init_key)

    def data_task(self, sampler, system, data: MonteCarloData, *, key) -> Task:
        """The task for given Monte Carlo ``data``: a fresh interpolant (weights from ``key``)."""
        model = self.build(
            sampler.event_shape,
            key=key,
            base_scale=float(jnp.exp(sampler.log_scale)),
            zero_com=sampler.zero_com,
        )
        cnf = _AsCNF(n_steps=sampler.n_steps, solver=sampler.solver)
        inputs = {"data": _as_data(model, data.train, "data")}
        pair = self._pair_fn(system)
        return Task(model=model, inputs=inputs, data=data, wrapper=cnf, pair=pair)

    def pair_task(self, model, system, data_a, data_b) -> Task:
        """A data → data task (``model.source == "data"``): samples of A and of B."""
        inputs = {
            "data_a": _as_data(model, data_a, "data_a"),
            "data": _as_data(model, data_b, "data_b"),
        }
        return Task(model=model, inputs=inputs, pair=self._pair_fn(system))

    def loss(self, model, inputs, step_inputs, key, batch_size: int, task: Task):
        """L_b + L_η on one paired minibatch."""
        from boltzgen.train._matching import interpolant_loss

        x0, x1, z, t = self._draw(model, inputs, key, batch_size, 1e-3, task.pair)
        loss, (lb, le) = interpolant_loss(model, x0, x1, z, t)
        return loss, dict(loss_b=lb, loss_eta=le, n_nonfinite=jnp.zeros((), jnp.int32))


@dataclass(frozen=True)
class _AsCNF:
    """The probability-flow CNF of a trained interpolant."""

    n_steps: int
    solver: str

    def __call__(self, model):
        return model.as_cnf(n_steps=self.n_steps, solver=self.solver)


@dataclass(frozen=True)
class MaximumLikelihood(AbstractObjective):
    r"""Forward KL on Monte Carlo samples of p, optionally mixed with reverse KL.

    With w = ``reverse_weight``, the loss of one step is

        L(θ) = (1 − w) · mean_{x ∈ data batch}[−ln q_θ(x)] + w · mean_{x ~ q_θ}[u(x) + ln q_θ(x)],

    the first term KL(p‖q) + H(p) (maximum likelihood: mass-covering), the second
    KL(q‖p) + βF (reverse KL, reparametrised: mode-seeking but exact in the energy). w = 0 is
    pure maximum likelihood and evaluates no energy while training; 0 < w < 1 is the mixture
    Boltzmann generators combine. Any sampler with an exact, differentiable ln q (coupling
    flows; a CNF works but each step solves its ODE backwards).

    Attributes:
        data: how the Monte Carlo samples of p are made (their held-out part gives the lower
            bound and BAR in the run, as for the other data objectives).
        reverse_weight: w ∈ [0, 1).
    """

    name: ClassVar[str] = "maximum_likelihood"
    needs_data: ClassVar[bool] = True
    info_keys: ClassVar[tuple[str, ...]] = ("nll", "ess_fraction", "n_nonfinite")
    data: HMCData = field(default_factory=HMCData)
    reverse_weight: float = 0.0

    def __post_init__(self):
        _checks.number("reverse_weight", self.reverse_weight, low=0.0, high=1.0, high_open=True)

    def check(self, system, sampler) -> None:
        """A continuous particle system (the Monte Carlo data) and a sampler with log_prob."""
        self.data.check(system)
        if getattr(system, "discrete", False):
            raise ValueError(
                f"objective {self.name!r} trains a continuous flow; {system.kind!r} is discrete"
            )

    def energy_evals_per_step(self, batch_size: int) -> int:
        """A batch of q's energies when the reverse-KL part is on, else none."""
        return int(batch_size) if self.reverse_weight > 0 else 0

    def prepare(self, sampler, system, beta, *, key, init_key=None, progress=True) -> Task:
        """Draw the Monte Carlo data; the task trains ``sampler`` on them (and on the energy)."""
        data = self.data.sample(system, beta, key=key, progress=progress)
        return self.data_task(sampler, system, beta, data)

    def data_task(self, sampler, system, beta, data: MonteCarloData) -> Task:
        """The task for given Monte Carlo ``data`` (no sampling)."""
        from boltzgen.flows._nn import param_dtype

        x = jnp.asarray(data.train, dtype=param_dtype(sampler))
        inputs = {"data": x, "beta": jnp.asarray(beta, jnp.float32)}
        return Task(model=sampler, inputs=inputs, energy=system.energy, data=data)

    def loss(self, model, inputs, step_inputs, key, batch_size: int, task: Task):
        """The mixed loss on one data minibatch and (w > 0) one batch of q."""
        k_data, k_q = jax.random.split(key)
        data = inputs["data"]
        idx = jax.random.randint(k_data, (batch_size,), 0, data.shape[0])
        log_q = model.log_prob(data[idx])
        ok = jnp.isfinite(log_q)
        nll = -jnp.sum(jnp.where(ok, log_q, 0.0)) / jnp.maximum(jnp.sum(ok), 1)
        w = self.reverse_weight
        if w > 0:
            rkl, aux = _losses.reverse_kl_loss(
                model, task.energy, inputs["beta"], key=k_q, batch_size=batch_size
            )
            loss = (1 - w) * nll + w * rkl
            ess, bad = _kish_fraction(aux["log_w"]), aux["n_nonfinite"]
        else:
            loss = nll
            ess = jnp.full((), jnp.nan, nll.dtype)
            bad = jnp.zeros((), jnp.int32)
        bad = bad + jnp.sum(~ok).astype(jnp.int32)
        return loss, dict(nll=nll, ess_fraction=ess, n_nonfinite=bad)


@dataclass(frozen=True)
class FineTuned(AbstractObjective):
    r"""Two training phases: a data objective, then reverse-KL fine-tuning on the energy.

    Phase 1 trains the sampler by ``base`` (e.g. :class:`FlowMatching` on Monte Carlo samples
    of p: cheap, simulation-free, mass-covering) with the run's trainer; phase 2 continues from
    the trained q by :class:`ReverseKL` for ``steps`` steps at peak learning rate
    ``learning_rate`` with ``batch_size`` samples of q per step (0: the run's batch size; the
    run's clip and chunking; a warm-up of a tenth of the steps), which moves q towards p
    where the data objective left it short: the variational bound E_q[u + ln q] =
    βF + KL(q‖p) can only be lowered by reducing KL(q‖p). The Monte Carlo data (and their
    held-out part, for the lower bound and BAR) are phase 1's. Phase 2 trains on the energy
    of the system phase 1 was prepared with (for data objectives: the exact potential).

    The training history is phase 1's followed by phase 2's (``phase`` = 0 or 1 per step; keys
    one phase does not record are NaN there; ``wall_time`` runs on across the phases). With a
    checkpoint file ``F``, phase 2 checkpoints to ``F.finetune``.

    Attributes:
        base: the first phase's objective (one that ``needs_data``).
        steps: fine-tuning steps (≥ 1).
        learning_rate: fine-tuning peak learning rate.
        batch_size: samples of q per fine-tuning step; 0 (default) takes the run's batch size.
            Each step integrates the ODE with its exact divergence and back-propagates
            through it, so its cost grows with the batch (and, for pair fields, with N²): a
            larger system affords fewer samples per step.
    """

    name: ClassVar[str] = "fine_tuned"
    base: AbstractObjective = field(default_factory=lambda: FlowMatching())
    steps: int = 300
    learning_rate: float = 3e-4
    batch_size: int = 0

    def __post_init__(self):
        if not isinstance(self.base, AbstractObjective) or isinstance(self.base, FineTuned):
            raise ValueError(f"FineTuned.base must be a data objective, got {self.base!r}")
        if not self.base.needs_data:
            raise ValueError(
                f"FineTuned.base must be a data objective (flow_matching, interpolant, "
                f"maximum_likelihood); {self.base.name!r} already trains on the energy"
            )
        _checks.integer("finetune_steps", self.steps, 1)
        _checks.positive("finetune_learning_rate", self.learning_rate)
        _checks.integer("finetune_batch_size", self.batch_size, 0)

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        """True: phase 1 trains on Monte Carlo samples of p."""
        return True

    @property
    def data(self) -> HMCData:
        """Phase 1's Monte Carlo data settings."""
        return self.base.data

    @property
    def info_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        """The per-step scalars of both phases."""
        keys = dict.fromkeys((*self.base.info_keys, *ReverseKL.info_keys))
        return tuple(keys)

    def check(self, system, sampler) -> None:
        """Both phases' checks."""
        self.base.check(system, sampler)
        ReverseKL().check(system, sampler)

    def prepare(self, sampler, system, beta, *, key, init_key=None, progress=True) -> Task:
        """Phase 1's task, carrying the energy and β phase 2 needs."""
        task = self.base.prepare(
            sampler, system, beta, key=key, init_key=init_key, progress=progress
        )
        return dataclasses.replace(task, energy=system.energy, beta=float(beta))

    def loss(self, model, inputs, step_inputs, key, batch_size: int, task: Task):
        """Phase 1's loss (the trainer runs phase 1 through this objective's ``base``)."""
        return self.base.loss(model, inputs, step_inputs, key, batch_size, task)

    def fit(self, trainer, task: Task, *, key, **fit):
        """Phase 1 by ``base`` with ``trainer``, then reverse KL for ``steps`` steps."""
        state, q = self.base.fit(trainer, task, key=key, **fit)
        finetune = ReverseKL()
        ft_task = finetune.energy_task(q, task.energy, task.beta)
        ft_trainer = dataclasses.replace(
            trainer,
            steps=self.steps,
            learning_rate=self.learning_rate,
            warmup=max(self.steps // 10, 1),
            batch_size=self.batch_size or trainer.batch_size,
        )
        fit = dict(fit)
        if fit.get("checkpoint") is not None:
            fit["checkpoint"] = os.fspath(fit["checkpoint"]) + ".finetune"
        fit["fingerprint"] = fit.get("fingerprint", "") + ":finetune"
        state2 = ft_trainer.fit(finetune, ft_task, key=jax.random.fold_in(key, 1), **fit)
        state2.history = _joined_history(state.history, state2.history)
        return state2, finetune.finish(state2.model, ft_task)


def _joined_history(first: dict, second: dict) -> dict:
    """Two phases' histories end to end, with a ``phase`` key; missing keys are NaN."""
    n1, n2 = len(first.get("wall_time", [])), len(second.get("wall_time", []))
    t1 = first["wall_time"][-1] if n1 else 0.0
    out = {}
    for k in dict.fromkeys((*first, *second)):
        a = list(first.get(k, [math.nan] * n1))
        b = list(second.get(k, [math.nan] * n2))
        if k == "wall_time":
            b = [t1 + t for t in b]
        out[k] = a + b
    out["phase"] = [0.0] * n1 + [1.0] * n2
    return out


def _is_cnf(sampler) -> bool:
    from boltzgen.flows import CNF

    split = _com_split(sampler)
    return isinstance(split.inner if split is not None else sampler, CNF)


def default_objective(system, sampler=None, *, sampler_kind: str | None = None):
    """The default objective of ``system`` for ``sampler`` (or a sampler of ``sampler_kind``).

    :class:`Reinforce` for discrete (spin) systems. For particles in a harmonic trap
    (``system.com_separable``) trained by a CNF — the default sampler there, used when neither
    ``sampler`` nor ``sampler_kind`` is given — :class:`FineTuned` flow matching on Monte Carlo
    samples of p (8192, none held out) followed by reverse KL. :class:`ReverseKL` otherwise
    (e.g. for a coupling flow given by the user).
    """
    if getattr(system, "discrete", False):
        return Reinforce()
    if getattr(system, "com_separable", False):
        if sampler is not None:
            cnf = _is_cnf(sampler)
        else:
            cnf = sampler_kind is None or sampler_kind == "cnf"
        if cnf:
            # The HMC data only train q: no held-out part, so no estimate rests on them (their
            # chains need not equilibrate shell isomers; importance weights, neural MCMC and the
            # annealed paths are exact whatever q the data gave).
            return FineTuned(FlowMatching(data=HMCData(n_holdout=0)))
    return ReverseKL()


#: Objectives by their run-spec name (the config layer's look-up).
OBJECTIVE_CLASSES: dict[str, type[AbstractObjective]] = {
    c.name: c
    for c in (ReverseKL, Reinforce, BetaRange, FlowMatching, Interpolant, MaximumLikelihood)
}

__all__ = [
    "AbstractObjective",
    "BetaRange",
    "FineTuned",
    "FlowMatching",
    "Interpolant",
    "MaximumLikelihood",
    "OBJECTIVE_CLASSES",
    "Reinforce",
    "ReverseKL",
    "Task",
    "default_objective",
    "default_pairing",
]
