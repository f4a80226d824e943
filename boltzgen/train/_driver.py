"""The training driver: one jitted step, a Python loop outside it, checkpoints, progress."""

from __future__ import annotations

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

from boltzgen.train._objectives import OBJECTIVES

HISTORY_KEYS = ("loss", "grad_norm", "ess_fraction", "n_nonfinite", "wall_time")


@dataclass
class TrainState:
    """What a resumed run needs: the sampler, the optimiser state, the step, the history."""

    sampler: eqx.Module
    opt_state: optax.OptState
    step: int = 0
    history: dict = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})


def make_optimizer(
    learning_rate: float = 1e-3, steps: int = 1000, clip: float = 10.0, warmup: int = 100
) -> optax.GradientTransformation:
    """Adam with global-norm clipping and a warm-up + cosine-decay learning rate.

    Clipping matters: reverse KL on a 1/r potential diverges without it (ENGINEERING.md).
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


def _kish_fraction(log_w):
    w = log_w - jnp.max(log_w)
    e = jnp.exp(w)
    return jnp.sum(e) ** 2 / jnp.sum(e * e) / log_w.shape[0]


def make_step(
    optimizer: optax.GradientTransformation,
    energy_fn,
    batch_size: int,
    objective="reverse_kl",
    *,
    max_traces: int | None = None,
):
    """Build the jitted step ``step(sampler, opt_state, beta, key) -> (sampler, opt_state, info)``.

    The whole step (sampling, loss, gradient, update) is one ``eqx.filter_jit`` region; β is
    an array argument, so a temperature change does not recompile. ``max_traces`` makes a
    retrace beyond that number an error (used by the tests).
    """
    loss_fn = OBJECTIVES[objective]

    def step(sampler, opt_state, beta, key):
        params, static = eqx.partition(sampler, eqx.is_inexact_array)

        def f(p):
            return loss_fn(eqx.combine(p, static), energy_fn, beta, key=key, batch_size=batch_size)

        (loss, aux), grads = jax.value_and_grad(f, has_aux=True)(params)
        grads = jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        info = dict(
            loss=loss,
            grad_norm=optax.tree.norm(grads),
            ess_fraction=_kish_fraction(aux["log_w"]),
            n_nonfinite=aux["n_nonfinite"],
        )
        return eqx.combine(params, static), opt_state, info

    if max_traces is not None:
        step = eqx.debug.assert_max_traces(step, max_traces=max_traces)
    return eqx.filter_jit(step)


def train(
    sampler,
    energy_fn,
    beta: float,
    *,
    key,
    steps: int = 2000,
    batch_size: int = 512,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    objective: str = "reverse_kl",
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    progress: bool = True,
    beta_anneal: float = 0.0,
) -> TrainState:
    """Train ``sampler`` towards p ∝ exp(−β E) and return the final :class:`TrainState`.

    The key of step t is ``fold_in(key, t)``, so a run resumed from a checkpoint continues
    exactly as the uninterrupted run would.

    Args:
        sampler: the initial ``AbstractSampler``.
        energy_fn: E(x) on one configuration (e.g. ``system.energy``).
        beta: inverse temperature β > 0.
        key: PRNG key of the training phase.
        steps: total number of optimisation steps (including those done before a resume).
        batch_size: samples per step.
        optimizer: an optax transformation; default :func:`make_optimizer`.
        learning_rate: peak learning rate of the default optimiser.
        objective: a key of ``OBJECTIVES`` (``"reverse_kl"``).
        checkpoint_path: where to write checkpoints (atomically replaced), or None.
        checkpoint_every: checkpoint period in steps.
        resume: load ``checkpoint_path`` if it exists and continue from its step.
        progress: show a progress bar.
        beta_anneal: fraction f of the steps over which β ramps linearly up from 0,
            β_t = β · min(1, (t + 1) / (f · steps)) (0 = off). Annealing keeps a spin model from
            collapsing onto one ordered state early (VAN anneals too); the last (1 − f) of the
            steps train at the target β.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    if optimizer is None:
        optimizer = make_optimizer(learning_rate, steps)
    params = eqx.filter(sampler, eqx.is_inexact_array)
    state = TrainState(sampler, optimizer.init(params))
    if resume and checkpoint_path is not None and os.path.exists(checkpoint_path):
        state = load_checkpoint(checkpoint_path, state)
    step_fn = make_step(optimizer, energy_fn, batch_size, objective)
    if not 0.0 <= beta_anneal < 1.0:
        raise ValueError(f"beta_anneal must be in [0, 1), got {beta_anneal!r}")
    beta_arr = jnp.asarray(beta, jnp.float32)
    ramp = beta_anneal * steps
    t0 = time.perf_counter() - (
        state.history["wall_time"][-1] if state.history["wall_time"] else 0.0
    )
    bar = tqdm(
        total=steps,
        initial=state.step,
        desc="train",
        mininterval=0.5,
        disable=not progress,
        unit="step",
        dynamic_ncols=True,
    )
    while state.step < steps:
        beta_t = beta_arr * min(1.0, (state.step + 1) / ramp) if ramp >= 1 else beta_arr
        sampler, opt_state, info = step_fn(
            state.sampler, state.opt_state, beta_t, jax.random.fold_in(key, state.step)
        )
        info = jax.device_get(info)
        state.sampler, state.opt_state = sampler, opt_state
        state.step += 1
        for k in HISTORY_KEYS[:-1]:
            state.history[k].append(float(info[k]))
        state.history["wall_time"].append(time.perf_counter() - t0)
        if state.step % 10 == 0 or state.step == steps:
            bar.set_postfix(loss=f"{info['loss']:.4g}", ess=f"{info['ess_fraction']:.2f}")
        bar.update(1)
        if checkpoint_path is not None and (
            state.step % checkpoint_every == 0 or state.step == steps
        ):
            save_checkpoint(checkpoint_path, state)
    bar.close()
    return state


def save_checkpoint(path: str | os.PathLike, state: TrainState) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, flush, ``os.replace``)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    leaves = jax.tree.leaves(eqx.filter((state.sampler, state.opt_state), eqx.is_array))
    with h5py.File(tmp, "w") as f:
        f.attrs["step"] = state.step
        g = f.create_group("leaves")
        for i, leaf in enumerate(leaves):
            g.create_dataset(f"{i:05d}", data=np.asarray(leaf))
        h = f.create_group("history")
        for k, v in state.history.items():
            h.create_dataset(k, data=np.asarray(v, dtype=np.float64))
        f.flush()
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, template: TrainState) -> TrainState:
    """Read a checkpoint written by :func:`save_checkpoint` into the structure of ``template``."""
    arrays, static = eqx.partition((template.sampler, template.opt_state), eqx.is_array)
    leaves, treedef = jax.tree.flatten(arrays)
    with h5py.File(path, "r") as f:
        stored = f["leaves"]
        if len(stored) != len(leaves):
            raise ValueError(
                f"checkpoint {os.fspath(path)!r} has {len(stored)} arrays, the sampler needs "
                f"{len(leaves)}: was it written for another sampler or optimiser?"
            )
        new = []
        for i, leaf in enumerate(leaves):
            a = stored[f"{i:05d}"][()]
            if a.shape != leaf.shape:
                raise ValueError(
                    f"checkpoint {os.fspath(path)!r}: array {i} has shape {a.shape}, "
                    f"expected {leaf.shape}"
                )
            new.append(jnp.asarray(a, dtype=leaf.dtype))
        step = int(f.attrs["step"])
        history = {k: list(f["history"][k][()]) for k in f["history"]}
    sampler, opt_state = eqx.combine(jax.tree.unflatten(treedef, new), static)
    return TrainState(sampler, opt_state, step, history)
