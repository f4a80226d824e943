"""Free-energy curves F(β) from ONE training of a β-conditioned sampler q(x | β)."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import numpy as np
from tqdm.auto import tqdm

from boltzgen import estimators as est
from boltzgen._estimation import (
    OBSERVABLES,
    Estimation,
    exact_observables,
    sample_log_weights,
    spin_observables,
)
from boltzgen._keys import RunKeys
from boltzgen._run import _Timer, training_fingerprint
from boltzgen.results import Result
from boltzgen.train import BetaRange, Trainer
from boltzgen.train._trainer import check_checkpoint


def check_betas(betas) -> np.ndarray:
    """The β grid of a curve as a float64 array; ValueError unless ≥ 2 distinct positive values."""
    try:
        b = np.asarray(betas, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"betas must be >= 2 positive finite numbers, got {betas!r}") from None
    if b.size < 2 or not np.all(np.isfinite(b)) or np.any(b <= 0):
        raise ValueError(f"betas must be >= 2 positive finite numbers, got {b.tolist()!r}")
    if not b.max() > b.min():
        raise ValueError(f"betas must span a range, got {b.tolist()!r}")
    return b


def run_curve(
    system,
    betas,
    sampler=None,
    objective: BetaRange = BetaRange(),
    *,
    trainer: Trainer = Trainer(),
    estimation: Estimation = Estimation(),
    exact: bool = True,
    seed: int = 0,
    checkpoint: str | None = None,
    resume: bool = False,
    progress: bool = True,
    spec_text: str = "",
) -> Result:
    """Train one β-conditioned sampler over [min β, max β] and estimate ln Z at every β.

    Training minimises the mean over temperatures of the variational free energy
    E_{q(·|β)}[βE + ln q(·|β)] (:class:`~boltzgen.train.BetaRange`); then, at each β of
    ``betas``, ``estimation.n_samples`` samples of q(·|β) give importance-sampling ln Z with its
    error and Kish ESS, the variational upper bound on βF, and (spins) the observables, beside
    the exact values where the system has them. The result's ``curve`` holds one array per
    quantity, indexed like ``betas``.

    Args:
        system: a spin system (the β-conditioned samplers are the autoregressive ones).
        betas: the inverse temperatures of the curve (≥ 2 distinct positive values).
        sampler: a β-conditioned sampler (``sample_and_log_prob(n, *, key, beta)``,
            ``log_prob(x, beta)``, ``at(beta)``), or None for the system's default family
            built with ``beta_conditioned`` over [min β, max β].
        objective: the β-range objective.
        trainer: the training loop's settings.
        estimation: samples per temperature, chunk size, bootstrap resamples.
        exact: also compute exact ln Z and observables where the system has them.
        seed: the run's seed.
        checkpoint: training checkpoint file, or None.
        resume: continue training from ``checkpoint`` if it exists.
        progress: progress bars.
        spec_text: the TOML spec to store.

    Returns:
        A :class:`~boltzgen.results.Result` whose ``curve`` has ``beta``, ``log_z``,
        ``log_z_stderr``, ``variational_beta_f``, ``ess``, ``exact_log_z`` (NaN where
        unknown) and, for spins, every observable with ``_stderr`` and ``exact_`` variants.
    """
    from boltzgen._run import default_sampler

    betas = check_betas(betas)
    lo, hi = float(betas.min()), float(betas.max())
    keys = RunKeys(seed)
    if sampler is None:
        sampler = default_sampler(
            system, key=keys.init, beta_conditioned=True, beta_min=lo, beta_max=hi
        )
    objective.check(system, sampler)
    fp = training_fingerprint(system, sampler, objective, trainer, (lo, hi), seed)
    if resume and checkpoint is not None:
        check_checkpoint(checkpoint, fingerprint=fp, steps=trainer.steps)
    timer = _Timer()
    with timer("train"):
        task = objective.prepare(sampler, system, (lo, hi))
        state = trainer.fit(
            objective,
            task,
            key=keys.train,
            checkpoint=checkpoint,
            resume=resume,
            fingerprint=fp,
            progress=progress,
        )
    q = state.model
    with timer("estimate"):
        curve = _curve_rows(q, system, betas, estimation, keys.estimate, seed, exact, progress)
    return Result(
        beta=hi,
        system={"kind": system.kind, **system.params()},
        seed=seed,
        spec=spec_text,
        train_history={k: np.asarray(v) for k, v in state.history.items()},
        curve=curve,
        timings=dict(timer),
        params=[np.asarray(a) for a in jax.tree.leaves(eqx.filter(q, eqx.is_array))],
        device=str(jax.devices()[0]),
    )


def _curve_rows(q, system, betas, estimation, key, seed, exact, progress) -> dict:
    rows: dict[str, list[float]] = {}

    def put(name, value):
        rows.setdefault(name, []).append(float(value))

    discrete = bool(getattr(system, "discrete", False))
    rng = np.random.default_rng(seed)
    for i, beta in enumerate(
        tqdm(betas, desc="curve", disable=not progress, unit="β", dynamic_ncols=True)
    ):
        beta = float(beta)
        smp = sample_log_weights(
            q.at(beta),
            system,
            beta,
            estimation.n_samples,
            key=jax.random.fold_in(key, i),
            chunk_size=min(estimation.chunk_size, estimation.n_samples),
        )
        imp = est.importance_log_z(smp["log_w"], rng=rng, n_boot=estimation.n_boot)
        var = est.variational_bound(smp["log_w"])
        put("beta", beta)
        put("log_z", imp.log_z)
        put("log_z_stderr", imp.log_z_stderr)
        put("ess", imp.ess)
        put("variational_beta_f", var.beta_f)
        put("variational_beta_f_stderr", var.beta_f_stderr)
        ex = system.exact_log_z(beta) if exact else None
        put("exact_log_z", math.nan if ex is None else ex)
        if discrete:
            obs = spin_observables(system.n_spins, beta, smp["x"], smp["energy"], smp["log_w"])
            exo = exact_observables(system, beta) if exact else {}
            for name in OBSERVABLES:
                value, err = obs.get(name, (math.nan, math.nan))
                put(name, value)
                put(f"{name}_stderr", err)
                put(f"exact_{name}", exo.get(name, math.nan))
    return {k: np.asarray(v) for k, v in rows.items()}
