"""The top-level entry point: system → trained sampler → estimates → stages → reference → Result.

Every varying choice is a strategy object (in the manner of ``diffrax.diffeqsolve``): the
sampler, the objective (:mod:`boltzgen.train`), the :class:`~boltzgen.train.Trainer`, the
:class:`Estimation`, the stages (:mod:`boltzgen.stages`) and the reference
(:mod:`boltzgen.references`). Defaults are instances; every piece is checked against the system
and the sampler before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import contextmanager

import equinox as eqx
import jax
import numpy as np

from boltzgen import _checks
from boltzgen._estimation import Estimation, exact_observables, spin_observables
from boltzgen._keys import RunKeys
from boltzgen.references import AbstractReference, default_reference
from boltzgen.results import Result
from boltzgen.stages import StageContext, default_stages
from boltzgen.train import Trainer, default_objective, fingerprint_of
from boltzgen.train._trainer import check_checkpoint

#: Refuse a run whose stored arrays would need more than this many bytes (checked up front).
MAX_BYTES = 8 * 2**30


class _Timer(dict):
    @contextmanager
    def __call__(self, name):
        t = time.perf_counter()
        yield
        self[name] = self.get(name, 0.0) + time.perf_counter() - t


def default_sampler(system, *, key, **hyper):
    """The system's default sampler family, built with ``hyper`` (see ``boltzgen samplers``)."""
    from boltzgen.flows import default_sampler_kind, make_sampler

    return make_sampler(default_sampler_kind(system), system, key=key, **hyper)


def check_pipeline(system, sampler, objective, trainer, estimation, stages, reference) -> None:
    """Raise ValueError (one line, naming the piece) if any piece does not fit, before any work.

    Checks: a translation-invariant system needs a zero-centre-of-mass sampler; a
    β-conditioned sampler belongs to :func:`boltzgen.run_curve`; each piece's ``check``; and
    the memory (:func:`check_memory`).
    """
    if getattr(system, "translation_invariant", False) and not getattr(sampler, "zero_com", False):
        raise ValueError(
            f"system {system.kind!r} is translation-invariant, so its Z over all coordinates "
            "diverges; it needs a zero-centre-of-mass sampler (sampler 'cnf', zero_com = true), "
            "and ln Z is then the integral over the subspace Σ_i x_i = 0"
        )
    if getattr(sampler, "beta_conditioned", False):
        raise ValueError(
            "a beta_conditioned sampler is trained over a range of β: use run_curve (the CLI: "
            "ensemble.betas = [...]), or beta_conditioned = false for one β"
        )
    objective.check(system, sampler)
    for stage in stages:
        stage.check(system, sampler, objective)
    if reference is not None:
        reference.check(system)
    check_memory(system, objective, trainer, estimation, stages, reference)


def check_memory(system, objective, trainer, estimation, stages, reference) -> None:
    """Raise ValueError (one line) if the stored arrays or one training batch need too much.

    The stored samples of every piece, and one training batch of configurations, are each
    refused above :data:`MAX_BYTES`. Needs no sampler, so it can run before one is built.
    """
    pieces = [estimation, *stages] + ([reference] if reference is not None else [])
    if objective.needs_data:
        pieces.append(objective.data)
    need = sum(p.memory_bytes(system) for p in pieces)
    if need > MAX_BYTES:
        raise ValueError(
            f"the requested sizes need ≈ {need / 2**30:.1f} GiB of stored samples (more than "
            f"{MAX_BYTES / 2**30:.0f} GiB): reduce estimate.n_samples or the chain counts"
        )
    batch = trainer.memory_bytes(system)
    if batch > MAX_BYTES:
        raise ValueError(
            f"train.batch_size = {trainer.batch_size} needs ≈ {batch / 2**30:.1f} GiB for one "
            f"batch of configurations (more than {MAX_BYTES / 2**30:.0f} GiB): reduce it"
        )


def training_fingerprint(system, sampler, objective, trainer, beta, seed) -> str:
    """What a checkpoint must match to be resumed.

    The system, the sampler's structure, the objective, the optimiser settings (all but the
    number of steps), β and the seed.
    """
    loop = dataclasses.replace(trainer, steps=0, checkpoint_every=1, chunk=1)
    return fingerprint_of(
        system.kind, system.params(), jax.tree.structure(sampler), objective, loop, beta, seed
    )


def run(
    system,
    beta: float,
    sampler=None,
    objective=None,
    *,
    trainer: Trainer = Trainer(),
    estimation: Estimation = Estimation(),
    stages=None,
    reference: AbstractReference | None | str = "auto",
    indistinguishable: bool = False,
    seed: int = 0,
    checkpoint: str | None = None,
    resume: bool = False,
    progress: bool = True,
    spec_text: str = "",
) -> Result:
    """Train a sampler for ``system`` at ``beta`` and estimate its free energy with bounds.

    Phases: build the sampler (default: the system's family), train it on ``objective``
    (default :class:`~boltzgen.train.ReverseKL`, :class:`~boltzgen.train.Reinforce` for spins)
    with ``trainer``, draw ``estimation.n_samples`` samples with float64 log-weights
    (importance sampling, variational upper bound on βF), run the ``stages`` (default: neural
    MCMC refinement, plus held-out data and FEAT for data objectives), then the Monte Carlo
    ``reference`` and the bounds from its samples of p.

    Args:
        system: an ``AbstractSystem``.
        beta: inverse temperature β > 0.
        sampler: an ``AbstractSampler`` to train, or None for the system's default.
        objective: a training objective (:mod:`boltzgen.train`), or None for the default.
        trainer: the training loop's settings.
        estimation: the estimation phase's settings.
        stages: stages after estimation (:mod:`boltzgen.stages`); None for
            :func:`~boltzgen.stages.default_stages`.
        reference: a reference (:mod:`boltzgen.references`), ``"auto"`` for the system's
            default, or None for none.
        indistinguishable: subtract ln N! from every ln Z (identical particles).
        seed: the run's seed (key streams: :mod:`boltzgen._keys`).
        checkpoint: training checkpoint file, or None.
        resume: continue training from ``checkpoint`` if it exists (it must belong to this run).
        progress: progress bars.
        spec_text: the TOML spec to store in the results file.

    Example:
        >>> import boltzgen as bg
        >>> r = bg.run(bg.systems.CoulombGas(2, 2), 2.0, trainer=bg.train.Trainer(steps=200),
        ...            estimation=bg.Estimation(n_samples=4096), reference=None, stages=(),
        ...            progress=False)
        >>> abs(r.estimates["importance"].log_z - r.exact_log_z) < 0.05
        True
    """
    beta = _checks.beta(beta)
    keys = RunKeys(seed)
    q = default_sampler(system, key=keys.init) if sampler is None else sampler
    objective = default_objective(system, q) if objective is None else objective
    stages = default_stages(objective) if stages is None else tuple(stages)
    reference = default_reference(system) if reference == "auto" else reference
    check_pipeline(system, q, objective, trainer, estimation, stages, reference)
    exact_system, timer = _unsoftened(system), _Timer()
    fp = training_fingerprint(system, q, objective, trainer, beta, seed)
    if resume and checkpoint is not None:  # before any work (Monte Carlo data included)
        check_checkpoint(checkpoint, fingerprint=fp, steps=trainer.steps)
    task, state, q_trained = _train(
        q, system, exact_system, beta, objective, trainer, keys, timer,
        checkpoint=checkpoint, resume=resume, fingerprint=fp, progress=progress,
    )  # fmt: skip
    with timer("estimate"):
        samples, estimates = estimation(
            q_trained, exact_system, beta, key=keys.estimate, seed=seed, progress=progress
        )
    model = state.model if q_trained is not state.model else None
    ctx = StageContext(exact_system, beta, q_trained, samples, objective, task.data, model,
                       progress=progress)  # fmt: skip
    evals = {
        "data": float(task.data.n_energy_evals) if task.data is not None else 0.0,
        "train": float(np.sum(state.history.get("n_energy_evals", []))),
        "estimate": float(np.size(samples["log_w"])),
    }
    refined, observables = _run_stages(ctx, stages, keys, timer, estimates, evals)
    ref_est = {}
    if reference is not None:
        with timer("reference"):
            ref_est, derived = reference(
                exact_system, beta, key=keys.reference, sampler=q_trained,
                q_log_w=samples["log_w"], progress=progress,
            )  # fmt: skip
        estimates.update(derived)
        evals["reference"] = _energy_evals(ref_est)
    parts = dict(estimates=estimates, reference=ref_est, samples=samples, refined=refined,
                 observables=observables, energy_evals=evals)  # fmt: skip
    return _result(system, beta, seed, spec_text, indistinguishable, state, timer, q_trained,
                   **parts)  # fmt: skip


def _train(q, system, exact_system, beta, objective, trainer, keys, timer, **fit):
    """Prepare the objective's task (Monte Carlo data for data objectives) and train it."""
    with timer("data" if objective.needs_data else "train"):
        task = objective.prepare(
            q,
            exact_system if objective.needs_data else system,  # data: the exact potential
            beta,
            key=keys.stream("data"),
            init_key=jax.random.fold_in(keys.train, 1),
            progress=fit["progress"],
        )
    with timer("train"):
        state, q_trained = objective.fit(trainer, task, key=keys.train, **fit)
    return task, state, q_trained


def _energy_evals(estimates: dict) -> float:
    """Energy evaluations behind ``estimates``, each distinct cost counted once.

    Several estimates of one computation (the path_* family) share one cost.
    """
    costs = {dataclasses.astuple(e.cost) for e in estimates.values() if e.cost.n_energy_evals}
    return float(sum(c[0] for c in costs))


def _run_stages(ctx, stages, keys, timer, estimates, evals=None) -> tuple[dict, dict]:
    """Run the stages in order; their estimates go into ``estimates``.

    The energy evaluations each stage's estimates record go into ``evals[stage.name]`` (when
    given). Returns ``(refined, observables)`` (spin observables of q's samples first).
    """
    refined, observables = {}, {}
    system = ctx.system
    if getattr(system, "discrete", False):
        s = ctx.samples
        observables["importance"] = spin_observables(
            system.n_spins, ctx.beta, s["x"], s["energy"], s["log_w"]
        )
    for stage in stages:
        with timer(stage.name):
            key = keys.stream("feat" if stage.name == "feat" else "refine")
            out = stage(dataclasses.replace(ctx, key=key))
        estimates.update(out.estimates)
        if evals is not None:
            evals[stage.name] = evals.get(stage.name, 0.0) + _energy_evals(out.estimates)
        refined.update(out.refined)
        observables.update(out.observables)
    return refined, observables


def _unsoftened(system):
    """The system with its exact potential: a softened core is for training only."""
    if getattr(system, "soften", None) is not None:
        return dataclasses.replace(system, soften=None)
    return system


def _result(
    system, beta, seed, spec_text, indistinguishable, state, timer, q, *, estimates, reference,
    samples, refined, observables, energy_evals=None,
) -> Result:  # fmt: skip
    exact = system.exact_log_z(beta)
    if getattr(system, "discrete", False):
        exact_obs = exact_observables(system, beta)
        if exact_obs:
            observables["exact"] = {k: (v, 0.0) for k, v in exact_obs.items()}
    if indistinguishable:
        shift = math.lgamma(getattr(system, "n_particles", 1) + 1)
        note = f"ln N! = {shift:.4g} subtracted"
        estimates = {m: e.shifted(-shift, note) for m, e in estimates.items()}
        reference = {m: e.shifted(-shift, note) for m, e in reference.items()}
        exact = None if exact is None else exact - shift
    return Result(
        beta=beta,
        system={"kind": system.kind, **system.params()},
        seed=seed,
        spec=spec_text,
        estimates=estimates,
        reference=reference,
        exact_log_z=exact,
        train_history={k: np.asarray(v) for k, v in state.history.items()},
        samples=samples,
        refined=refined,
        observables=observables,
        timings=dict(timer),
        energy_evals=dict(energy_evals or {}),
        params=[np.asarray(a) for a in jax.tree.leaves(eqx.filter(q, eqx.is_array))],
        device=str(jax.devices()[0]),
    )
