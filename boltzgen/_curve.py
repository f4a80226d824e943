"""Free-energy curves F(β) from ONE training of a β-conditioned sampler q(x | β)."""

from __future__ import annotations

import math
import time

import jax
import numpy as np
from tqdm.auto import tqdm

from boltzgen import estimators as est
from boltzgen._run import (
    OBSERVABLES,
    exact_observables,
    is_discrete,
    sample_log_weights,
    spin_observables,
)
from boltzgen.results import Result
from boltzgen.systems import AbstractSystem


def run_curve(
    system: AbstractSystem,
    betas,
    *,
    sampler="auto",
    sampler_options: dict | None = None,
    steps: int = 3000,
    batch_size: int = 1024,
    learning_rate: float = 1e-3,
    clip: float = 10.0,
    beta_anneal: float | str = "auto",
    n_samples: int = 16384,
    chunk_size: int = 4096,
    n_boot: int = 0,
    exact: bool = True,
    seed: int = 0,
    progress: bool = True,
    spec_text: str = "",
) -> Result:
    """Train one β-conditioned sampler over [min β, max β] and estimate ln Z at every β.

    Training minimises the mean over temperatures of the variational free energy
    E_{q(·|β)}[βE + ln q(·|β)] (objective ``"reinforce_beta_range"`` for spins); then, at each
    β of ``betas``, samples of q(·|β) give importance-sampling ln Z with its error and Kish ESS,
    the variational upper bound on βF, and (spins) the observables, beside the exact values
    where the system has them. The result's ``curve`` holds one array per quantity, indexed
    like ``betas``.

    Args:
        system: a spin system (the β-conditioned samplers are the autoregressive ones).
        betas: the inverse temperatures of the curve (≥ 2 distinct positive values).
        sampler: a sampler kind (``"auto"``, ``"pixelcnn"``, ``"made"``) or a β-conditioned
            sampler instance (with ``sample_and_log_prob(n, *, key, beta)``,
            ``log_prob(x, beta)`` and ``at(beta)``).
        sampler_options: hyper-parameters of the sampler kind (``beta_conditioned``,
            ``beta_min`` and ``beta_max`` are set here).
        steps: optimisation steps.
        batch_size: samples per step, split over 8 temperatures drawn per step.
        learning_rate: peak learning rate.
        clip: global gradient-norm clip.
        beta_anneal: fraction of the steps over which the whole β range ramps up from 0
            (``"auto"``: 0.3 for discrete systems).
        n_samples: samples of q per temperature.
        chunk_size: samples per device call.
        n_boot: bootstrap resamples for the importance-sampling error (0 = delta method only).
        exact: also compute exact ln Z and observables where the system has them.
        seed: the run's seed.
        progress: progress bars.
        spec_text: the TOML spec to store.

    Returns:
        A :class:`~boltzgen.results.Result` whose ``curve`` has ``beta``, ``log_z``,
        ``log_z_stderr``, ``variational_beta_f``, ``ess``, ``exact_log_z`` (NaN where
        unknown) and, for spins, every observable with ``_stderr`` and ``exact_`` variants.
    """
    from boltzgen.flows import AbstractSampler, default_sampler_kind, make_sampler
    from boltzgen.train import make_optimizer, train

    betas = np.asarray(betas, dtype=np.float64).reshape(-1)
    if betas.size < 2 or not np.all(np.isfinite(betas)) or np.any(betas <= 0):
        raise ValueError(f"betas must be >= 2 positive finite numbers, got {betas.tolist()!r}")
    lo, hi = float(betas.min()), float(betas.max())
    if not hi > lo:
        raise ValueError(f"betas must span a range, got {betas.tolist()!r}")
    discrete = is_discrete(system)
    if beta_anneal == "auto":
        beta_anneal = 0.3 if discrete else 0.0
    key = jax.random.key(seed)
    k_init, k_train, k_est = jax.random.split(key, 3)
    timings = {}

    t = time.perf_counter()
    if isinstance(sampler, AbstractSampler) or hasattr(sampler, "at"):
        q = sampler
    else:
        kind = default_sampler_kind(system) if sampler == "auto" else sampler
        opts = dict(sampler_options or {})
        opts.update(beta_conditioned=True, beta_min=lo, beta_max=hi)
        q = make_sampler(kind, system, key=k_init, **opts)
    state = train(
        q,
        system.energy,
        (lo, hi),
        key=k_train,
        steps=steps,
        batch_size=batch_size,
        optimizer=make_optimizer(learning_rate, steps, clip),
        objective="reinforce_beta_range",
        progress=progress,
        beta_anneal=float(beta_anneal),
    )
    q = state.sampler
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    rows: dict[str, list[float]] = {}

    def put(name, value):
        rows.setdefault(name, []).append(float(value))

    rng = np.random.default_rng(seed)
    for i, beta in enumerate(
        tqdm(betas, desc="curve", disable=not progress, unit="β", dynamic_ncols=True)
    ):
        beta = float(beta)
        smp = sample_log_weights(
            q.at(beta),
            system,
            beta,
            n_samples,
            key=jax.random.fold_in(k_est, i),
            chunk_size=min(chunk_size, n_samples),
        )
        imp = est.importance_log_z(smp["log_w"], rng=rng, n_boot=n_boot)
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
    timings["estimate"] = time.perf_counter() - t
    curve = {k: np.asarray(v) for k, v in rows.items()}

    params = [np.asarray(a) for a in jax.tree.leaves(_arrays(q))]
    return Result(
        beta=hi,
        system={"kind": system.kind, **system.params()},
        seed=seed,
        spec=spec_text,
        train_history={k: np.asarray(v) for k, v in state.history.items()},
        curve=curve,
        timings=timings,
        params=params,
        device=str(jax.devices()[0]),
    )


def _arrays(tree):
    import equinox as eqx

    return eqx.filter(tree, eqx.is_array)
