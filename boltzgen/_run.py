"""The top-level entry point: system → trained sampler → estimates → reference → Result."""

from __future__ import annotations

import inspect
import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from boltzgen import estimators as est
from boltzgen.results import Result
from boltzgen.systems import AbstractSystem, CoulombGas

REFERENCE_METHODS = ("ais", "none")


def resolve_reference(method: str, system: AbstractSystem) -> str:
    """Map ``"auto"`` to the system's default Monte Carlo reference and check the name."""
    if method == "auto":
        return "ais" if isinstance(system, CoulombGas) else "none"
    if method not in REFERENCE_METHODS:
        from boltzgen.config import SpecError

        raise SpecError(
            f"unknown reference.method {method!r}; valid: auto, {', '.join(REFERENCE_METHODS)}"
        )
    if method == "ais" and not isinstance(system, CoulombGas):
        from boltzgen.config import SpecError

        raise SpecError(
            f"reference.method 'ais' needs system.kind = 'coulomb', got {system.kind!r}; use 'none'"
        )
    return method


def reference_defaults(method: str) -> dict:
    """Keyword parameters (with defaults) of a reference method, as run-spec keys."""
    if method == "none":
        return {}
    from boltzgen.mcmc import coulomb_reference

    sig = inspect.signature(coulomb_reference)
    return {
        name: p.default
        for name, p in sig.parameters.items()
        if p.kind == p.KEYWORD_ONLY
        and name != "key"
        and p.default is not inspect.Parameter.empty
        and isinstance(p.default, int | float | str | bool)
        and name != "progress"
    }


def sample_log_weights(
    sampler,
    system: AbstractSystem,
    beta: float,
    n: int,
    *,
    key,
    chunk_size: int = 8192,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Draw ``n`` samples of q and return x, log q, E, log-weight w = −βE − log q (float64).

    Samples are drawn in float32 chunks (bounded memory); log q and E are then re-evaluated at
    those exact points in float64, so the log-weights carry no float32 round-off of the
    network's log-determinant or of the 1/r energy.
    """
    sample = eqx.filter_jit(lambda k, s: s.sample_and_log_prob(chunk_size, key=k)[0])

    with jax.enable_x64(True):
        evaluate = eqx.filter_jit(lambda s, x: (s.log_prob(x), jax.vmap(system.energy)(x)))

    xs, lqs, es = [], [], []
    n_chunks = math.ceil(n / chunk_size)
    for i in tqdm(
        range(n_chunks), desc="estimate", disable=not progress, unit="chunk", dynamic_ncols=True
    ):
        x = sample(jax.random.fold_in(key, i), sampler)
        with jax.enable_x64(True):
            lq, e = evaluate(sampler, jnp.asarray(x, jnp.float64))
            xs.append(np.asarray(x))
            lqs.append(np.asarray(lq, np.float64))
            es.append(np.asarray(e, np.float64))
    x = np.concatenate(xs)[:n]
    log_q = np.concatenate(lqs)[:n]
    energy = np.concatenate(es)[:n]
    log_w = -beta * energy - log_q
    return dict(x=x, log_q=log_q, energy=energy, log_w=log_w)


def estimate_all(samples: dict, *, seed: int = 0, n_boot: int = 200) -> dict[str, est.Estimate]:
    """The sampler-only estimates: importance sampling and the variational bound."""
    rng = np.random.default_rng(seed)
    return {
        "variational": est.variational_bound(samples["log_w"]),
        "importance": est.importance_log_z(samples["log_w"], rng=rng, n_boot=n_boot),
    }


def run_reference(method: str, system, beta: float, *, key, sampler=None, progress=True, **options):
    """Run the Monte Carlo reference; return (estimates, p-samples dict or None).

    For ``"ais"`` (Coulomb gas, from the harmonic trap) this gives ``/reference/ais`` and, when a
    trained ``sampler`` is given, the lower bound ``forward_bound`` = E_p[u + ln q] on βF from the
    AIS samples of p with their weights.
    """
    if method == "none":
        return {}, {}
    from boltzgen.mcmc import coulomb_reference

    ref = coulomb_reference(system, beta, key=key, progress=progress, **options)
    log_w = np.asarray(ref.log_weights, np.float64)
    # AIS log-weights estimate ln(Z/Z_0); the trap's exact ln Z_0 makes them absolute.
    e = est.importance_log_z(log_w + ref.log_z_reference, method="ais")
    e.extra.update(n_energy_evals=float(ref.n_energy_evals), wall_time=float(ref.wall_time))
    out = {"ais": e}
    derived = {}
    if sampler is not None:
        xp = np.asarray(ref.samples)
        with jax.enable_x64(True):
            lq = np.asarray(
                eqx.filter_jit(lambda s, x: s.log_prob(x))(sampler, jnp.asarray(xp, jnp.float64))
            )
            ep = np.asarray(jax.vmap(system.energy)(jnp.asarray(xp, jnp.float64)))
        derived["forward_bound"] = est.forward_bound(beta * ep + lq, log_w)
    return out, derived


def run(
    system: AbstractSystem,
    beta: float,
    *,
    sampler="auto",
    sampler_options: dict | None = None,
    steps: int = 2000,
    batch_size: int = 512,
    learning_rate: float = 1e-3,
    clip: float = 10.0,
    objective: str = "reverse_kl",
    n_samples: int = 65536,
    chunk_size: int = 8192,
    n_boot: int = 200,
    reference: str = "auto",
    reference_options: dict | None = None,
    indistinguishable: bool = False,
    seed: int = 0,
    checkpoint_path: str | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    progress: bool = True,
    spec_text: str = "",
) -> Result:
    """Train a sampler for ``system`` at inverse temperature ``beta`` and estimate its free energy.

    Phases: build the sampler, train it (reverse KL), draw ``n_samples`` with float64
    log-weights, estimate ln Z (importance sampling, variational upper bound on βF), run the
    Monte Carlo reference (AIS for the Coulomb gas) and the lower bound from its samples.

    Args:
        system: an ``AbstractSystem``.
        beta: inverse temperature β > 0.
        sampler: a sampler kind (``"auto"``, ``"equivariant"``, ``"realnvp"``) or an
            ``AbstractSampler`` instance to train.
        sampler_options: hyper-parameters of the sampler kind.
        steps: optimisation steps.
        batch_size: samples of q per step.
        learning_rate: peak learning rate (warm-up, then cosine decay).
        clip: global gradient-norm clip.
        objective: training objective (``"reverse_kl"``).
        n_samples: samples of q for the estimates.
        chunk_size: samples drawn per device call in the estimation phase.
        n_boot: bootstrap resamples for the importance-sampling error (0 = none).
        reference: ``"auto"``, ``"ais"`` or ``"none"``.
        reference_options: keyword arguments of the reference method.
        indistinguishable: subtract ln N! from every ln Z (identical particles).
        seed: the run's seed; the run is reproducible from it.
        checkpoint_path: training checkpoint file (atomically replaced), or None.
        checkpoint_every: checkpoint period in steps.
        resume: continue from ``checkpoint_path`` if it exists.
        progress: progress bars and phase messages.
        spec_text: the TOML spec to store in the results file.

    Returns:
        A :class:`~boltzgen.results.Result`.

    Example:
        >>> import boltzgen as bg
        >>> r = bg.run(bg.systems.CoulombGas(2, 2), 2.0, steps=200, n_samples=4096,
        ...            reference="none", progress=False)
        >>> abs(r.estimates["importance"].log_z - r.exact_log_z) < 0.05
        True
    """
    from boltzgen.flows import AbstractSampler, default_sampler_kind, make_sampler
    from boltzgen.train import make_optimizer, train

    if (
        isinstance(beta, bool)
        or not isinstance(beta, int | float)
        or not beta > 0
        or not math.isfinite(beta)
    ):
        raise ValueError(f"beta must be a positive finite number, got {beta!r}")
    beta = float(beta)
    reference = resolve_reference(reference, system)
    key = jax.random.key(seed)
    k_init, k_train, k_est, k_ref = jax.random.split(key, 4)
    timings = {}

    t = time.perf_counter()
    if isinstance(sampler, AbstractSampler):
        q = sampler
    else:
        kind = default_sampler_kind(system) if sampler == "auto" else sampler
        q = make_sampler(kind, system, key=k_init, **(sampler_options or {}))
    opt = make_optimizer(learning_rate, steps, clip)
    state = train(
        q,
        system.energy,
        beta,
        key=k_train,
        steps=steps,
        batch_size=batch_size,
        optimizer=opt,
        objective=objective,
        checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every,
        resume=resume,
        progress=progress,
    )
    q = state.sampler
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    samples = sample_log_weights(
        q, system, beta, n_samples, key=k_est, chunk_size=chunk_size, progress=progress
    )
    estimates = estimate_all(samples, seed=seed, n_boot=n_boot)
    samples["weights_normalised"] = est.normalised_weights(samples["log_w"])
    timings["estimate"] = time.perf_counter() - t

    t = time.perf_counter()
    ref_est, derived = run_reference(
        reference,
        system,
        beta,
        key=k_ref,
        sampler=q,
        progress=progress,
        **(reference_options or {}),
    )
    estimates.update(derived)
    if reference != "none":
        timings["reference"] = time.perf_counter() - t

    exact = system.exact_log_z(beta)
    if indistinguishable:
        shift = math.lgamma(getattr(system, "n_particles", 1) + 1)
        estimates = {m: _shift(e, -shift) for m, e in estimates.items()}
        ref_est = {m: _shift(e, -shift) for m, e in ref_est.items()}
        exact = None if exact is None else exact - shift

    import equinox as eqx

    params = [np.asarray(a) for a in jax.tree.leaves(eqx.filter(q, eqx.is_array))]
    return Result(
        beta=beta,
        system={"kind": system.kind, **system.params()},
        seed=seed,
        spec=spec_text,
        estimates=estimates,
        reference=ref_est,
        exact_log_z=exact,
        train_history={k: np.asarray(v) for k, v in state.history.items()},
        samples=samples,
        timings=timings,
        params=params,
        device=str(jax.devices()[0]),
    )


def _shift(e: est.Estimate, delta: float) -> est.Estimate:
    from dataclasses import replace

    return replace(
        e, log_z=e.log_z + delta, extra={**e.extra, "log_n_factorial_subtracted": -delta}
    )
