"""The one training loop: jitted chunks of steps (``lax.scan``), history, progress, checkpoints.

:class:`Trainer` trains any objective's :class:`~boltzgen.train.Task`: the step (loss,
gradient with non-finite entries zeroed and counted, optimiser update) is traced once and run
``chunk`` steps at a time inside one jitted ``lax.scan``; the per-step history comes back to the
host once per chunk, where the progress bar, the history and the checkpoints live (outside the
jitted region). Step t uses the key ``fold_in(key, t)``, so a run resumed from a checkpoint
continues exactly as the uninterrupted run would, whatever the chunking.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from boltzgen import _checks

#: Scalars every step records, beside the objective's own ``info_keys``.
LOOP_KEYS = ("loss", "grad_norm", "n_nonfinite_grad")

#: The largest number of steps: the step index inside a chunk is an int32.
MAX_STEPS = 2**31 - 1


def make_optimizer(
    learning_rate: float = 1e-3, steps: int = 1000, clip: float = 10.0, warmup: int = 100
) -> optax.GradientTransformation:
    """Adam with global-norm clipping and a warm-up + cosine-decay learning rate.

    Clipping matters: reverse KL on a 1/r potential diverges without it (one near-collision
    sample gives an arbitrarily large gradient).
    """
    warmup = max(0, min(warmup, steps // 10))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=learning_rate / 10 if warmup else learning_rate,
        peak_value=learning_rate,
        warmup_steps=warmup,
        decay_steps=max(steps, warmup + 1),
        end_value=learning_rate / 20,
    )
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(schedule))


@dataclass
class TrainState:
    """What a resumed run needs: the model, the optimiser state, the step, the history."""

    model: eqx.Module
    opt_state: optax.OptState
    step: int = 0
    history: dict = field(default_factory=dict)

    @property
    def sampler(self):
        """The trained model (alias kept for energy objectives, where it is the sampler)."""
        return self.model


@dataclass(frozen=True)
class Trainer:
    """The training loop's settings: steps, batch, optimiser, checkpoints, chunking.

    The optimiser is Adam with global-norm clipping at ``clip`` and a learning rate that warms up
    over ``min(warmup, steps // 10)`` steps to ``learning_rate``, then decays by a cosine to
    ``learning_rate / 20`` (:func:`make_optimizer`).

    Attributes:
        steps: optimisation steps (in all, including those before a resume; at most
            :data:`MAX_STEPS`).
        batch_size: samples (or pairs) per step.
        learning_rate: peak learning rate.
        clip: global gradient-norm clip.
        warmup: warm-up steps of the learning rate.
        checkpoint_every: checkpoint period in steps (when a checkpoint path is given).
        chunk: steps per jitted ``lax.scan`` chunk (the history and the progress bar are
            updated between chunks).
    """

    steps: int = 1500
    batch_size: int = 256
    learning_rate: float = 2e-3
    clip: float = 10.0
    warmup: int = 100
    checkpoint_every: int = 500
    chunk: int = 25

    def __post_init__(self):
        _checks.integer("steps", self.steps, 0, maximum=MAX_STEPS)
        _checks.integer("batch_size", self.batch_size, 1)
        _checks.positive("learning_rate", self.learning_rate)
        _checks.positive("clip", self.clip)
        _checks.integer("warmup", self.warmup, 0)
        _checks.integer("checkpoint_every", self.checkpoint_every, 1)
        _checks.integer("chunk", self.chunk, 1)

    def memory_bytes(self, system) -> int:
        """Bytes of one batch of configurations in float32 (a lower bound on training memory)."""
        return self.batch_size * 4 * int(np.prod(system.event_shape))

    def optimizer(self) -> optax.GradientTransformation:
        """The optax transformation of these settings."""
        return make_optimizer(self.learning_rate, self.steps, self.clip, self.warmup)

    def fit(
        self,
        objective,
        task,
        *,
        key,
        checkpoint: str | os.PathLike | None = None,
        resume: bool = False,
        fingerprint: str = "",
        progress: bool = True,
        max_traces: int | None = None,
    ) -> TrainState:
        """Train ``task.model`` on ``objective``; return the final :class:`TrainState`.

        Args:
            objective: the objective whose ``loss`` is minimised.
            task: what to train (from the objective's ``prepare``).
            key: PRNG key of the training phase; step t uses ``fold_in(key, t)``.
            checkpoint: checkpoint file (written atomically every ``checkpoint_every`` steps
                and at the end), or None.
            resume: continue from ``checkpoint`` if it exists.
            fingerprint: identifies the run the checkpoint belongs to; resuming from a
                checkpoint with another fingerprint is an error.
            progress: show a progress bar.
            max_traces: make a retrace of the chunk beyond this number an error (tests).

        Raises:
            ValueError: a checkpoint of another run, sampler or optimiser, or one with more
                steps than ``steps``.
        """
        optimizer = self.optimizer()
        spec = objective.trainable(task.model)
        keys = ("loss", *objective.info_keys, "grad_norm", "n_nonfinite_grad")
        state = TrainState(task.model, optimizer.init(eqx.filter(task.model, spec)))
        state.history = {k: [] for k in (*keys, "wall_time", "n_energy_evals")}
        if resume and checkpoint is not None and os.path.exists(checkpoint):
            check_checkpoint(checkpoint, fingerprint=fingerprint, steps=self.steps)
            state = load_checkpoint(checkpoint, state, fingerprint=fingerprint)
        run_chunk = _chunk_fn(objective, task, optimizer, spec, self, keys, max_traces)
        per_step = objective.energy_evals_per_step(self.batch_size)
        t0 = time.perf_counter() - (
            state.history["wall_time"][-1] if state.history["wall_time"] else 0.0
        )
        bar = tqdm(
            total=self.steps,
            initial=state.step,
            desc=f"train ({objective.name})" if objective.name else "train",
            mininterval=0.5,
            disable=not progress,
            unit="step",
            dynamic_ncols=True,
        )
        next_save = (state.step // self.checkpoint_every + 1) * self.checkpoint_every
        try:
            while state.step < self.steps:
                start = state.step
                n = min(self.chunk, self.steps - start)
                idx = np.arange(start, start + self.chunk)
                sched = objective.schedule(idx, self.steps)
                model, opt_state, info = run_chunk(
                    state.model,
                    state.opt_state,
                    task.inputs,
                    jnp.asarray(idx, jnp.int32),
                    jnp.arange(self.chunk) < n,
                    sched,
                    key,
                )
                info = jax.device_get(info)
                now = time.perf_counter() - t0
                t_prev = state.history["wall_time"][-1] if state.history["wall_time"] else 0.0
                state.model, state.opt_state = model, opt_state
                state.step += n
                for k in keys:
                    state.history[k].extend(float(v) for v in np.asarray(info[k])[:n])
                evals = state.history.setdefault("n_energy_evals", [])
                evals.extend([float(per_step)] * (len(state.history["loss"]) - len(evals)))
                # Wall time is measured per chunk and spread evenly over its steps.
                state.history["wall_time"].extend(
                    t_prev + (now - t_prev) * (i + 1) / n for i in range(n)
                )
                bar.set_postfix(_postfix(info, n))
                bar.update(n)
                if checkpoint is not None and (state.step >= next_save or state.step == self.steps):
                    save_checkpoint(checkpoint, state, fingerprint=fingerprint)
                    next_save = (state.step // self.checkpoint_every + 1) * self.checkpoint_every
        finally:
            bar.close()
        return state


def _postfix(info, n) -> dict:
    out = {"loss": f"{float(info['loss'][n - 1]):.4g}"}
    if "ess_fraction" in info:
        out["ess"] = f"{float(info['ess_fraction'][n - 1]):.2f}"
    bad = int(np.sum(np.asarray(info.get("n_nonfinite", np.zeros(1)))[:n]))
    if bad:
        out["non-finite"] = bad
    return out


def _chunk_fn(objective, task, optimizer, spec, trainer: Trainer, keys, max_traces):
    """The jitted chunk: ``lax.scan`` of the step over ``trainer.chunk`` step indices.

    Steps past the end (``active`` false) leave the state unchanged, so every chunk has the
    same length and the chunk is traced once.
    """
    static = {"task": task}
    batch_size = trainer.batch_size

    def step(model, opt_state, inputs, t, sched, key):
        params, rest = eqx.partition(model, spec)

        def f(p):
            return objective.loss(
                eqx.combine(p, rest),
                inputs,
                sched,
                jax.random.fold_in(key, t),
                batch_size,
                static["task"],
            )

        (loss, info), grads = jax.value_and_grad(f, has_aux=True)(params)
        n_bad = sum(jnp.sum(~jnp.isfinite(g)) for g in jax.tree.leaves(grads))
        grads = jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        info = dict(
            loss=loss,
            grad_norm=optax.tree.norm(grads),
            n_nonfinite_grad=jnp.asarray(n_bad, jnp.int32),
            **info,
        )
        return eqx.combine(params, rest), opt_state, info

    def chunk(model, opt_state, inputs, idx, active, sched, key):
        # The scan carries arrays only: the model's static parts (activations, shapes) stay out.
        arrays, static_model = eqx.partition(model, eqx.is_array)

        def body(carry, xs):
            t, on, s = xs

            def run(c):
                m2, o2, info = step(eqx.combine(c[0], static_model), c[1], inputs, t, s, key)
                return (eqx.filter(m2, eqx.is_array), o2), info

            def skip(c):
                return c, jax.tree.map(jnp.zeros_like, info_shape)

            return jax.lax.cond(on, run, skip, carry)

        info_shape = jax.eval_shape(
            lambda: step(model, opt_state, inputs, idx[0], _first(sched), key)[2]
        )
        (arrays, opt_state), info = jax.lax.scan(body, (arrays, opt_state), (idx, active, sched))
        return eqx.combine(arrays, static_model), opt_state, {k: info[k] for k in keys}

    if max_traces is not None:
        chunk = eqx.debug.assert_max_traces(chunk, max_traces=max_traces)
    return eqx.filter_jit(chunk)


def _first(tree):
    return jax.tree.map(lambda a: a[0], tree)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def fingerprint_of(*parts) -> str:
    """A short hash of the reprs of ``parts`` (spec, sampler type, objective, trainer)."""
    return hashlib.sha256("\n".join(map(repr, parts)).encode()).hexdigest()[:16]


def save_checkpoint(path: str | os.PathLike, state: TrainState, *, fingerprint: str = "") -> None:
    """Write ``state`` to ``path`` atomically (temporary file, flush, fsync, ``os.replace``)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    leaves = jax.tree.leaves(eqx.filter((state.model, state.opt_state), eqx.is_array))
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["step"] = state.step
            f.attrs["fingerprint"] = fingerprint
            g = f.create_group("leaves")
            for i, leaf in enumerate(leaves):
                g.create_dataset(f"{i:05d}", data=np.asarray(leaf))
            h = f.create_group("history")
            for k, v in state.history.items():
                h.create_dataset(k, data=np.asarray(v, dtype=np.float64))
            f.flush()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_checkpoint(path: str | os.PathLike, *, fingerprint: str, steps: int) -> int:
    """Check a checkpoint before any work: readable, this run's, not beyond ``steps``.

    Returns its step (0 when there is no file).

    Raises:
        ValueError: unreadable, another run's fingerprint, or more steps than ``steps``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return 0
    if os.path.isdir(path):
        raise ValueError(f"checkpoint {path!r} is a directory, not a checkpoint file")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"cannot read checkpoint {path!r}: {err}") from None
    with f:
        if "leaves" not in f or "step" not in f.attrs:
            raise ValueError(f"{path!r} is not a boltzgen checkpoint")
        if fingerprint and str(f.attrs.get("fingerprint", "")) != fingerprint:
            raise ValueError(
                f"checkpoint {path!r} belongs to another run (spec, sampler or objective "
                "changed); delete it or drop --resume"
            )
        step = int(f.attrs["step"])
    if step > steps:
        raise ValueError(
            f"checkpoint {path!r} is at step {step}, beyond train.steps = {steps}; raise "
            "train.steps or start afresh"
        )
    return step


def load_checkpoint(
    path: str | os.PathLike, template: TrainState, *, fingerprint: str | None = None
) -> TrainState:
    """Read a checkpoint written by :func:`save_checkpoint` into the structure of ``template``.

    Raises:
        ValueError: unreadable file, another run's fingerprint (when ``fingerprint`` is given
            and non-empty), or arrays that do not fit the template.
    """
    path = os.fspath(path)
    arrays, static = eqx.partition((template.model, template.opt_state), eqx.is_array)
    leaves, treedef = jax.tree.flatten(arrays)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"cannot read checkpoint {path!r}: {err}") from None
    with f:
        if "leaves" not in f or "step" not in f.attrs:
            raise ValueError(f"{path!r} is not a boltzgen checkpoint")
        stored_fp = str(f.attrs.get("fingerprint", ""))
        if fingerprint and stored_fp != fingerprint:
            raise ValueError(
                f"checkpoint {path!r} belongs to another run (spec, sampler or objective "
                "changed); delete it or drop --resume"
            )
        stored = f["leaves"]
        if len(stored) != len(leaves):
            raise ValueError(
                f"checkpoint {path!r} has {len(stored)} arrays, the sampler needs "
                f"{len(leaves)}: was it written for another sampler or optimiser?"
            )
        new = []
        for i, leaf in enumerate(leaves):
            a = stored[f"{i:05d}"][()]
            if a.shape != leaf.shape:
                raise ValueError(
                    f"checkpoint {path!r}: array {i} has shape {a.shape}, expected {leaf.shape}"
                )
            new.append(jnp.asarray(a, dtype=leaf.dtype))
        step = int(f.attrs["step"])
        history = {k: list(f["history"][k][()]) for k in f["history"]}
    model, opt_state = eqx.combine(jax.tree.unflatten(treedef, new), static)
    return TrainState(model, opt_state, step, {k: history.get(k, []) for k in template.history})


# --------------------------------------------------------------------------------------------
# Functional shortcuts through the same loop
# --------------------------------------------------------------------------------------------


def train(
    sampler,
    energy_fn,
    beta,
    *,
    key,
    objective=None,
    trainer: Trainer | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    max_traces: int | None = None,
) -> TrainState:
    """Train ``sampler`` towards p ∝ exp(−β E) with an energy objective (default reverse KL).

    A shortcut for ``trainer.fit(objective, objective.energy_task(sampler, energy_fn, beta))``.

    Args:
        sampler: the initial sampler.
        energy_fn: E(x) on one configuration.
        beta: inverse temperature (for :class:`~boltzgen.train.BetaRange`: (β_min, β_max)).
        key: PRNG key of the training phase.
        objective: an energy objective; default :class:`~boltzgen.train.ReverseKL`.
        trainer: the loop's settings; default ``Trainer()``.
        checkpoint: checkpoint file, or None.
        resume: continue from ``checkpoint`` if it exists.
        progress: show a progress bar.
        max_traces: make a retrace beyond this number an error (tests).
    """
    from boltzgen.train._objectives import BetaRange, ReverseKL, Task

    objective = ReverseKL() if objective is None else objective
    trainer = Trainer() if trainer is None else trainer
    if isinstance(objective, BetaRange):
        task = Task(sampler, {"beta": jnp.asarray(beta, jnp.float32)}, energy=energy_fn)
    else:
        task = objective.energy_task(sampler, energy_fn, beta)
    return trainer.fit(
        objective,
        task,
        key=key,
        checkpoint=checkpoint,
        resume=resume,
        progress=progress,
        max_traces=max_traces,
    )


def train_matching(
    model,
    data,
    *,
    key,
    trainer: Trainer | None = None,
    pairing: str = "independent",
    rotations: bool = False,
    progress: bool = True,
    max_traces: int | None = None,
) -> TrainState:
    r"""Fit a CNF by flow matching, or an Interpolant, to samples; no energy needed.

    The objective follows the model: a CNF is trained by conditional flow matching from its
    (frozen) Gaussian base to ``data``; an Interpolant by L_b + L_η, from its Gaussian source
    (``data`` one array) or from samples of A (``source="data"``, ``data = (data_a, data_b)``).
    A shortcut through :meth:`Trainer.fit` with an explicit pairing.

    Args:
        model: a :class:`~boltzgen.flows.CNF` or :class:`~boltzgen.flows.Interpolant`.
        data: samples (n, *event_shape) of the target, or ``(data_a, data_b)`` for A → B.
        key: PRNG key of the training phase.
        trainer: the loop's settings; default ``Trainer()``.
        pairing: one of :data:`boltzgen.train.PAIRINGS`.
        rotations: align by proper rotations too (``"aligned"``, ``"equivariant_ot"``).
        progress: show a progress bar.
        max_traces: make a retrace beyond this number an error (tests).
    """
    from boltzgen.flows import CNF, Interpolant
    from boltzgen.train._matching import PAIRINGS, as_data, pair_batch
    from boltzgen.train._objectives import FlowMatching, Task
    from boltzgen.train._objectives import Interpolant as InterpolantObjective

    _checks.choice("pairing", pairing, PAIRINGS)
    if pairing in ("aligned", "equivariant_ot") and len(model.event_shape) != 2:
        raise ValueError(f"pairing {pairing!r} needs particles, event shape (N, d)")
    pair = None
    if pairing != "independent":

        def pair(x0, x1):
            return pair_batch(np.asarray(x0), np.asarray(x1), pairing=pairing, rotations=rotations)

    if isinstance(model, CNF):
        if isinstance(data, tuple | list):
            raise ValueError("a CNF is trained from its Gaussian base: pass one data array")
        objective, inputs = FlowMatching(), {"data": as_data(model, data, "data")}
    elif isinstance(model, Interpolant):
        if model.gamma_scale <= 0:
            raise ValueError("an interpolant needs gamma_scale > 0 to learn the denoiser η")
        objective = InterpolantObjective()
        if model.source == "data":
            if not (isinstance(data, tuple | list) and len(data) == 2):
                raise ValueError("source='data' needs data = (data_a, data_b)")
            inputs = {
                "data_a": as_data(model, data[0], "data_a"),
                "data": as_data(model, data[1], "data_b"),
            }
        else:
            if isinstance(data, tuple | list):
                raise ValueError("source='gaussian' needs one data array (the target samples)")
            inputs = {"data": as_data(model, data, "data")}
    else:
        raise TypeError(f"model must be a CNF or an Interpolant, got {type(model).__name__}")
    trainer = Trainer() if trainer is None else trainer
    task = Task(model=model, inputs=inputs, pair=pair)
    return trainer.fit(objective, task, key=key, progress=progress, max_traces=max_traces)


__all__ = [
    "TrainState",
    "Trainer",
    "check_checkpoint",
    "fingerprint_of",
    "load_checkpoint",
    "make_optimizer",
    "save_checkpoint",
    "train",
    "train_matching",
]
