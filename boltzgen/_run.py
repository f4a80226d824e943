"""The top-level entry point: system → trained sampler → estimates → reference → Result."""

from __future__ import annotations

import dataclasses
import inspect
import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from boltzgen import estimators as est
from boltzgen._data import (
    DATA_OBJECTIVES,
    check_data_options,
    check_data_sampler,
    feat_estimates,
    inefficiency,
    inflate,
    sample_metrics,
    train_on_data,
    training_data,
)
from boltzgen.results import Result
from boltzgen.systems import AbstractSystem, CoulombGas

REFERENCE_METHODS = ("ais", "ladder", "ti", "beta_ais", "none")
#: Monte Carlo references of continuous (Coulomb) and of spin systems.
_COULOMB_REFERENCES = ("ais", "ladder")
_SPIN_REFERENCES = ("ti", "beta_ais")
REFINE_METHODS = ("none", "ais", "smc", "nmcmc")
#: Arguments of a Monte Carlo function that a run spec does not set (the run supplies them).
_NOT_SPEC_KEYS = {"key", "progress", "precision", "sample_q", "log_q", "log_density"}


def _spec_kwargs(fn) -> dict:
    """Keyword-only parameters of ``fn`` with plain scalar defaults: the spec keys it accepts."""
    sig = inspect.signature(fn)
    return {
        name: p.default
        for name, p in sig.parameters.items()
        if p.kind == p.KEYWORD_ONLY
        and name not in _NOT_SPEC_KEYS
        and p.default is not inspect.Parameter.empty
        and isinstance(p.default, int | float | str | bool)
    }


def _spec_error(msg: str):
    from boltzgen.config import SpecError

    return SpecError(msg)


def resolve_reference(method: str, system: AbstractSystem) -> str:
    """Map ``"auto"`` to the system's default Monte Carlo reference and check the name.

    Coulomb gas: ``"ais"`` (from the harmonic trap) or ``"ladder"`` (BAR/MBAR over couplings);
    spin systems: ``"ti"`` (thermodynamic integration over β from 0) or ``"beta_ais"``
    (annealed importance sampling over β); translation-invariant particles (DW4, Lennard-Jones):
    ``"ais"`` (from a centred harmonic trap, on the zero-centre-of-mass subspace). ``"auto"`` is
    ``"ais"`` for those and the Coulomb gas, ``"none"`` otherwise (spin systems print their
    exact ln Z where known).
    """
    particles = _has_particle_reference(system)
    if method == "auto":
        return "ais" if isinstance(system, CoulombGas) or particles else "none"
    if method == "ais" and particles:
        return method
    if method not in REFERENCE_METHODS:
        raise _spec_error(
            f"unknown reference.method {method!r}; valid: auto, {', '.join(REFERENCE_METHODS)}"
        )
    if method in _COULOMB_REFERENCES and not isinstance(system, CoulombGas):
        raise _spec_error(
            f"reference.method {method!r} needs system.kind = 'coulomb', got {system.kind!r}; "
            f"use {' or '.join(repr(m) for m in _SPIN_REFERENCES) if is_discrete(system) else ''}"
            f"{' or ' if is_discrete(system) else ''}'none'"
        )
    if method in _SPIN_REFERENCES and not is_discrete(system):
        raise _spec_error(
            f"reference.method {method!r} needs a spin system, got {system.kind!r}; use "
            "'ais', 'ladder' or 'none'"
        )
    return method


def _has_particle_reference(system) -> bool:
    """True for translation-invariant particle systems with an AIS reference (DW4, LJ)."""
    return bool(getattr(system, "translation_invariant", False)) and hasattr(
        system, "reference_trap"
    )


def _reference_function(method: str, system=None):
    from boltzgen.mcmc import (
        beta_annealing,
        coulomb_reference,
        coupling_ladder,
        particle_reference,
        thermodynamic_integration,
    )

    if method == "ais" and system is not None and _has_particle_reference(system):
        return particle_reference

    return {
        "ais": coulomb_reference,
        "ladder": coupling_ladder,
        "ti": thermodynamic_integration,
        "beta_ais": beta_annealing,
    }[method]


def reference_defaults(method: str) -> dict:
    """Keyword parameters (with defaults) of a reference method, as run-spec keys."""
    if method == "none":
        return {}
    return _spec_kwargs(_reference_function(method))


def resolve_refine(method: str) -> str:
    """Check a ``refine.method`` name."""
    if method not in REFINE_METHODS:
        raise _spec_error(f"unknown refine.method {method!r}; valid: {', '.join(REFINE_METHODS)}")
    return method


def _refine_function(method: str):
    """(function, fixed keyword arguments) of a refinement method."""
    from boltzgen.mcmc import neural_mcmc, refine_anneal

    return {
        "ais": (refine_anneal, {"resample_threshold": None}),
        "smc": (refine_anneal, {"resample_threshold": 0.5}),
        "nmcmc": (neural_mcmc, {}),
    }[method]


def is_discrete(system) -> bool:
    """True for spin systems (a discrete state space: no gradients, no Jacobians)."""
    return bool(getattr(system, "discrete", False))


def refine_defaults(method: str, system=None) -> dict:
    """Keyword parameters (with defaults) of a refinement method, as run-spec keys.

    For a discrete ``system`` neural MCMC has no gradient-based local move: its default
    ``local_kernel`` is ``"none"`` (pure independent Metropolis–Hastings).
    """
    if method == "none":
        return {}
    fn, fixed = _refine_function(method)
    out = _spec_kwargs(fn)
    out.pop("resample_threshold", None)
    out.update({k: v for k, v in fixed.items() if v is not None})
    if method == "nmcmc" and system is not None and is_discrete(system):
        out["local_kernel"] = "none"
    return out


def check_refine(method: str, options: dict, system) -> None:
    """Raise a spec error when a refinement method or option does not suit ``system``."""
    if not is_discrete(system):
        return
    if method in ("ais", "smc"):
        raise _spec_error(
            f"refine.method {method!r} moves by HMC/MALA and needs a continuous system; "
            f"{system.kind!r} is discrete: use 'nmcmc' or 'none'"
        )
    kernel = options.get("local_kernel", "none")
    if method == "nmcmc" and kernel not in ("none", None):
        raise _spec_error(
            f"refine.local_kernel {kernel!r} needs gradients; {system.kind!r} is discrete: "
            "use 'none'"
        )


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
    sample = eqx.filter_jit(lambda k, s: s.sample(chunk_size, key=k))

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


#: Observables of spin systems, as stored under ``/observables`` (per system, not per site).
OBSERVABLES = ("energy", "entropy", "abs_magnetisation", "susceptibility", "heat_capacity")


def spin_observables(
    n_spins: int, beta: float, x, energy, log_w=None
) -> dict[str, tuple[float, float]]:
    """Thermodynamic observables of a spin system with standard errors, from samples.

    With ``log_w`` (samples of q, w = −βE − ln q) these are self-normalised importance-sampling
    estimates of p-averages (neural importance sampling); without, equal-weight samples of p
    (e.g. the final states of independent neural-MCMC chains).

    ⟨E⟩; ⟨|m|⟩ with m = Σ s_i / N; susceptibility χ = N β (⟨m²⟩ − ⟨|m|⟩²); heat capacity
    C = β² (⟨E²⟩ − ⟨E⟩²) (k_B = 1); and, with weights, the entropy S = ln Z + β⟨E⟩. The variance
    observables are estimated as ⟨(f − f̄)²⟩ at the estimated mean f̄, whose error does not
    enter to first order.

    Returns:
        name → (value, standard error).
    """
    e = np.asarray(energy, np.float64).reshape(-1)
    m = np.abs(np.asarray(x, np.float64).reshape(e.size, -1).mean(axis=1))
    out = {"energy": est.weighted_mean(e, log_w)}
    if log_w is not None:
        out["entropy"] = est.importance_entropy(log_w, beta * e)
    out["abs_magnetisation"] = est.weighted_mean(m, log_w)
    chi = est.weighted_mean((m - out["abs_magnetisation"][0]) ** 2, log_w)
    out["susceptibility"] = (n_spins * beta * chi[0], n_spins * beta * chi[1])
    c = est.weighted_mean((e - out["energy"][0]) ** 2, log_w)
    out["heat_capacity"] = (beta**2 * c[0], beta**2 * c[1])
    return out


def exact_observables(system, beta: float) -> dict[str, float]:
    """Exact observables of a spin system where known (Kaufman / transfer matrix / enumeration)."""
    from boltzgen.systems import _ising_exact as ex

    try:
        if system.n_spins <= 20:
            d = ex.enumerate_thermo(system, beta)
        elif hasattr(system, "L"):
            d = ex.ising_exact_thermo(system, beta)
        else:
            return {}
    except (ValueError, NotImplementedError):
        return {}
    if d is None:
        return {}
    return {k: float(d[k]) for k in OBSERVABLES if k in d and d[k] is not None}


def estimate_all(samples: dict, *, seed: int = 0, n_boot: int = 200) -> dict[str, est.Estimate]:
    """The sampler-only estimates: importance sampling and the variational bound."""
    rng = np.random.default_rng(seed)
    return {
        "variational": est.variational_bound(samples["log_w"]),
        "importance": est.importance_log_z(samples["log_w"], rng=rng, n_boot=n_boot),
    }


def _log_q_and_energy(sampler, system, x, chunk_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Return ln q(x) and E(x) of a batch of configurations, evaluated in float64.

    Evaluated in chunks of at most ``chunk_size`` configurations (bounded memory: the exact
    trace of a many-body CNF field holds N·d tangents per configuration).
    """
    x = np.asarray(x)
    lqs, es = [], []
    with jax.enable_x64(True):
        evaluate = eqx.filter_jit(lambda s, y: (s.log_prob(y), jax.vmap(system.energy)(y)))
        for i in range(0, len(x), chunk_size):
            lq, e = evaluate(sampler, jnp.asarray(x[i : i + chunk_size], jnp.float64))
            lqs.append(np.asarray(lq, np.float64))
            es.append(np.asarray(e, np.float64))
    if not lqs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(lqs), np.concatenate(es)


def _p_sample_estimates(
    sampler, system, beta, x, log_w_p=None, *, q_log_w=None, names=None, log_q_energy=None
):
    """Estimates that need samples of p: lower bound, reverse IS and BAR between q and p.

    The lower bound works with weighted samples; reverse importance sampling and BAR need
    equilibrium (equal-weight) samples of p.

    Args:
        sampler: the trained sampler q.
        system: the system (its energy).
        beta: β.
        x: samples of p (equilibrium, or weighted by ``log_w_p``).
        log_w_p: log-weights of weighted samples of p, or None for equilibrium samples.
        q_log_w: log-weights w = −u − ln q of independent samples of q (the estimation phase);
            with equilibrium samples of p they give BAR with works W_F = −w, W_R = w(x_p).
        names: method names of ``forward_bound``, ``reverse_importance`` and ``bar`` (default:
            those names).
        log_q_energy: (ln q(x), E(x)) in float64 if already computed (else evaluated here).
    """
    names = {m: m for m in ("forward_bound", "reverse_importance", "bar")} | (names or {})
    if log_q_energy is None:
        log_q_energy = _log_q_and_energy(sampler, system, x)
    lq, e = log_q_energy
    w_p = -beta * e - lq  # −u − ln q at the p-samples
    m = names
    out = {m["forward_bound"]: est.forward_bound(-w_p, log_w_p, method=m["forward_bound"])}
    if log_w_p is None:
        out[m["reverse_importance"]] = est.reverse_importance_log_z(
            w_p, method=m["reverse_importance"]
        )
        if q_log_w is not None:
            out[m["bar"]] = est.bar(-np.asarray(q_log_w), w_p, method=m["bar"])
    return out


def run_reference(
    method: str, system, beta: float, *, key, sampler=None, q_log_w=None, progress=True, **options
):
    """Run the Monte Carlo reference; return (reference estimates, derived estimates).

    ``"ais"`` (Coulomb gas from the harmonic trap; translation-invariant particles from a
    centred trap) gives ``/reference/ais``; ``"ladder"`` gives
    ``/reference/ladder_bar`` and ``/reference/ladder_mbar`` (BAR / MBAR along the coupling
    ladder). With a trained ``sampler`` the reference's samples of p also give the lower bound
    ``forward_bound`` = E_p[u + ln q] on βF, and — from the ladder's equilibrium samples — reverse
    importance sampling and BAR between q and p (``reverse_importance_reference``,
    ``bar_reference``, with the works of ``q_log_w``).
    """
    if method == "none":
        return {}, {}
    fn = _reference_function(method, system)
    ref = fn(system, beta, key=key, progress=progress, **options)
    if method in _SPIN_REFERENCES:
        extra = dict(
            n_sweeps=float(ref.n_sweeps),
            n_site_updates=float(ref.n_site_updates),
            wall_time=float(ref.wall_time),
        )
        if method == "ti":
            extra.update(
                quadrature_error=float(ref.quadrature_error),
                quadrature_error_noise=float(ref.quadrature_error_noise),
                n_betas=int(np.size(ref.betas)),
            )
            n, ess = int(ref.n_chains), math.nan
        else:
            n, ess = int(ref.n_chains), float(ref.ess)
            extra["low_ess"] = int(ess < est.MIN_TRUSTED_ESS)
        e = est.Estimate(
            method, float(ref.log_z), float(ref.log_z_stderr), "estimate", n, ess, extra
        )
        return {method: e}, {}
    cost = dict(n_energy_evals=float(ref.n_energy_evals), wall_time=float(ref.wall_time))
    if method == "ais":
        log_w = np.asarray(ref.log_weights, np.float64)
        # AIS log-weights estimate ln(Z/Z_0); the trap's exact ln Z_0 makes them absolute.
        e = est.importance_log_z(log_w + ref.log_z_reference, method="ais")
        e.extra.update(cost)
        out = {"ais": e}
        x_p, log_w_p = np.asarray(ref.samples), log_w
    else:
        n = int(sum(ref.trap_energy[::s, k].size for k, s in enumerate(ref.strides)))
        extra = dict(cost, max_stride=int(ref.strides.max()), n_states=int(ref.lambdas.size))
        out = {
            "ladder_bar": est.Estimate(
                "ladder_bar", ref.log_z_bar, ref.log_z_bar_stderr, "estimate", n, extra=extra
            ),
            "ladder_mbar": est.Estimate(
                "ladder_mbar", ref.log_z_mbar, ref.log_z_mbar_stderr, "estimate", n, extra=extra
            ),
        }
        x_p, log_w_p = ref.target_samples.reshape(-1, *system.event_shape), None
    derived = {}
    if sampler is not None:
        names = {"reverse_importance": "reverse_importance_reference", "bar": "bar_reference"}
        derived = _p_sample_estimates(
            sampler, system, beta, x_p, log_w_p, q_log_w=q_log_w, names=names
        )
    return out, derived


def run_refinement(
    method: str, sampler, system, beta: float, *, key, q_log_w=None, progress=True, **options
) -> tuple[dict[str, est.Estimate], dict]:
    """Refine samples of the trained ``sampler`` towards p by MCMC, keeping exact weights.

    ``"ais"`` / ``"smc"``: annealing from q to p (:func:`boltzgen.mcmc.refine_anneal`, SMC with
    resampling); ``"nmcmc"``: independent Metropolis–Hastings with q as the proposal mixed with
    local moves (:func:`boltzgen.mcmc.neural_mcmc`).

    Returns:
        (estimates, data): ``refined_<method>`` (ln Z with its error, ESS before/after and cost
        in ``extra``) plus the estimates that need samples of p (``forward_bound_refined``, and
        for ``nmcmc`` also ``reverse_importance`` and ``bar`` with the works of ``q_log_w``);
        ``data`` holds the refined samples and per-step diagnostics for ``/refine``.
    """
    if method == "none":
        return {}, {}
    check_refine(method, options, system)
    fn, fixed = _refine_function(method)
    options = {**{k: v for k, v in fixed.items() if v is not None or k not in options}, **options}
    if method == "nmcmc":
        default = "none" if is_discrete(system) else "mala"
        if options.get("local_kernel", default) == "none":
            options["local_kernel"] = None

    def sample_q(k, n):
        return sampler.sample_and_log_prob(n, key=k)

    def log_q(x):
        return sampler.log_prob(x[None])[0]

    def log_density(x):
        return -beta * system.energy(x)

    res = fn(
        key, sample_q=sample_q, log_q=log_q, log_density=log_density, progress=progress, **options
    )
    name = f"refined_{method}"
    scalars = {k: float(v) for k, v in res.diagnostics.items() if np.ndim(v) == 0}
    extra = dict(
        ess_before=float(res.ess_before),
        n_energy_evals=float(res.n_energy_evals),
        n_log_q_evals=float(res.n_log_q_evals),
        wall_time=float(res.wall_time),
        **scalars,
    )
    n_used, ess = int(res.n_samples), float(res.ess_after)
    if method == "nmcmc":
        # Its ln Z is importance sampling on the IMH proposals (iid samples of q): report their
        # number and Kish ESS, not the equal weights of the final chain states.
        n_used = int(np.size(res.diagnostics["proposal_log_weights"]))
        ess = float(res.diagnostics["proposal_ess"])
    extra["low_ess"] = int(ess < est.MIN_TRUSTED_ESS)
    ref_est = est.Estimate(
        name, float(res.log_z), float(res.log_z_stderr), "estimate", n_used, ess, extra
    )
    out = {name: ref_est}
    if method == "nmcmc":  # equilibrium samples of p: equal weights
        x_p, log_w_p = res.positions, None
    else:
        x_p, log_w_p = res.positions, res.log_weights
    derived = _p_sample_estimates(
        sampler,
        system,
        beta,
        x_p,
        log_w_p,
        q_log_w=q_log_w,
        names={"forward_bound": "forward_bound_refined"},
    )
    out.update(derived)
    data = {
        "x": np.asarray(res.positions),
        "log_w": np.asarray(res.log_weights, np.float64),
        **{k: np.asarray(v) for k, v in res.diagnostics.items() if np.ndim(v) > 0},
        "attrs": dict(method=method, **extra),
    }
    return out, data


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
    objective: str = "auto",
    beta_anneal: float | str = "auto",
    n_samples: int = 65536,
    chunk_size: int = 8192,
    n_boot: int = 200,
    reference: str = "auto",
    reference_options: dict | None = None,
    refine: str = "nmcmc",
    refine_options: dict | None = None,
    data_options: dict | None = None,
    matching_options: dict | None = None,
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
    log-weights, estimate ln Z (importance sampling, variational upper bound on βF), optionally
    refine samples of q towards p by MCMC with exact weights (AIS, SMC or neural MCMC; the
    refined ln Z, and with equilibrium samples of p also BAR between q and p), then run the Monte
    Carlo reference (AIS or a BAR/MBAR coupling ladder for the Coulomb gas) and the lower bound
    from its samples.

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
        objective: training objective: ``"auto"`` (``"reinforce"`` for discrete systems,
            ``"reverse_kl"`` otherwise), ``"reverse_kl"``, ``"reinforce"``, or — from Monte
            Carlo samples of p, for a ``"cnf"`` sampler — ``"flow_matching"`` (conditional
            flow matching) or ``"interpolant"`` (stochastic interpolant: velocity and score,
            adding the FEAT path estimates ``feat_*``). Data-based runs also report
            ``forward_bound_data``, ``reverse_importance_data`` and ``bar_data`` from held-out
            samples, and energy/distance W2 of q's samples in ``observables["samples"]``.
        beta_anneal: fraction of the steps over which β ramps up linearly from 0; ``"auto"``
            = 0.3 for discrete systems (keeps a spin model from freezing into one ordered state
            early), 0 otherwise.
        n_samples: samples of q for the estimates.
        chunk_size: samples drawn per device call in the estimation phase.
        n_boot: bootstrap resamples for the importance-sampling error (0 = none).
        reference: ``"auto"``, ``"ais"``, ``"ladder"`` or ``"none"``.
        reference_options: keyword arguments of the reference method.
        refine: ``"nmcmc"`` (default: neural MCMC, whose equilibrium samples of p give BAR
            between q and p), ``"ais"``, ``"smc"`` or ``"none"`` (see :func:`run_refinement`).
        refine_options: keyword arguments of the refinement method.
        data_options: the Monte Carlo training data of a data-based objective
            (:data:`boltzgen._data.DATA_DEFAULTS`: ``n_samples``, ``n_holdout``, ``n_chains``,
            ``kernel``, ``n_leapfrog``, ``n_warmup``, ``thin``).
        matching_options: ``pairing``, ``gamma_scale``, ``feat_paths``, ``feat_steps``,
            ``feat_eps`` (:data:`boltzgen._data.MATCHING_DEFAULTS`).
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
    refine = resolve_refine(refine)
    discrete = is_discrete(system)
    check_refine(refine, refine_options or {}, system)
    if objective == "auto":
        objective = "reinforce" if discrete else "reverse_kl"
    if objective in DATA_OBJECTIVES:
        if discrete:
            raise ValueError(
                f"train.objective {objective!r} trains a continuous flow from Monte Carlo "
                f"samples; {system.kind!r} is a discrete spin system"
            )
        check_data_options(data_options, matching_options)
    if beta_anneal == "auto":
        beta_anneal = 0.3 if discrete else 0.0
    key = jax.random.key(seed)
    k_init, k_train, k_est, k_ref = jax.random.split(key, 4)
    k_refine = jax.random.fold_in(key, 101)  # added later: the other keys stay as they were
    timings = {}

    t = time.perf_counter()
    if isinstance(sampler, AbstractSampler):
        q = sampler
    else:
        kind = default_sampler_kind(system) if sampler == "auto" else sampler
        q = make_sampler(kind, system, key=k_init, **(sampler_options or {}))
    if getattr(system, "translation_invariant", False) and not getattr(q, "zero_com", False):
        raise ValueError(
            f"system {system.kind!r} is translation-invariant, so its Z over all coordinates "
            "diverges; it needs a zero-centre-of-mass sampler (sampler 'cnf', zero_com = true), "
            "and ln Z is then the integral over the subspace Σ_i x_i = 0"
        )
    if objective in DATA_OBJECTIVES:
        check_data_sampler(objective, q, system)
    if getattr(q, "beta_conditioned", False):
        raise ValueError(
            "a beta_conditioned sampler is trained over a range of β: use run_curve (the CLI: "
            "ensemble.betas = [...]), or beta_conditioned = false for one β"
        )
    opt = make_optimizer(learning_rate, steps, clip)
    train_energy = system.energy
    system_record = {"kind": system.kind, **system.params()}
    if getattr(system, "soften", None) is not None:
        # A softened core is for training only: data, estimates and references use the exact
        # potential (the run's /system still records the softening used in training).
        system = dataclasses.replace(system, soften=None)
    data, interp = None, None
    if objective in DATA_OBJECTIVES:
        k_data = jax.random.fold_in(key, 202)
        data = training_data(system, beta, key=k_data, progress=progress, **(data_options or {}))
        timings["data"] = time.perf_counter() - t
        t = time.perf_counter()
        q, interp, history = train_on_data(
            objective,
            q,
            system,
            data["train"],
            key=k_train,
            steps=steps,
            batch_size=batch_size,
            optimizer=opt,
            sampler_options=sampler_options or {},
            matching_options=matching_options,
            progress=progress,
        )
    else:
        state = train(
            q,
            train_energy,
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
            beta_anneal=float(beta_anneal),
        )
        q, history = state.sampler, state.history
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    samples = sample_log_weights(
        q, system, beta, n_samples, key=k_est, chunk_size=chunk_size, progress=progress
    )
    estimates = estimate_all(samples, seed=seed, n_boot=n_boot)
    samples["weights_normalised"] = est.normalised_weights(samples["log_w"])
    timings["estimate"] = time.perf_counter() - t
    observables = {}
    if data is not None:
        g = inefficiency(data)  # the held-out records are correlated along each chain
        cost = dict(
            n_energy_evals_data=float(data["n_energy_evals"]),
            wall_time_data=data["wall_time"],
            acceptance_data=data["acceptance"],
            energy_rhat_data=data["energy_rhat"],  # split-R̂ of the chains' energy traces
            energy_ess_data=data["energy_ess"],  # ESS of the recorded energies, all chains
        )
        if len(data["holdout"]):
            names = {m: f"{m}_data" for m in ("forward_bound", "reverse_importance", "bar")}
            derived = _p_sample_estimates(
                q, system, beta, data["holdout"], q_log_w=samples["log_w"], names=names
            )
            for e in derived.values():
                e.extra.update(cost)
            estimates.update(inflate(derived, g))
            observables["samples"] = sample_metrics(
                samples["x"],
                samples["energy"],
                data["holdout"],
                data["holdout_energy"],
                log_w=samples["log_w"],
            )
        if interp is not None:
            t = time.perf_counter()
            feat = feat_estimates(
                interp,
                system,
                beta,
                data["holdout"],
                key=jax.random.fold_in(key, 303),
                matching_options=matching_options,
            )
            # The reverse paths start at the correlated Monte Carlo records.
            estimates.update(inflate(feat, g, ("feat_reverse", "feat_bar", "feat_lower_bound")))
            timings["feat"] = time.perf_counter() - t

    refined = {}
    if refine != "none":
        t = time.perf_counter()
        derived, refined = run_refinement(
            refine,
            q,
            system,
            beta,
            key=k_refine,
            q_log_w=samples["log_w"],
            progress=progress,
            **(refine_options or {}),
        )
        estimates.update(derived)
        timings["refine"] = time.perf_counter() - t

    t = time.perf_counter()
    ref_est, derived = run_reference(
        reference,
        system,
        beta,
        key=k_ref,
        sampler=q,
        q_log_w=samples["log_w"],
        progress=progress,
        **(reference_options or {}),
    )
    estimates.update(derived)
    if reference != "none":
        timings["reference"] = time.perf_counter() - t

    if discrete:
        n_spins = system.n_spins
        observables["importance"] = spin_observables(
            n_spins, beta, samples["x"], samples["energy"], samples["log_w"]
        )
        if refine == "nmcmc":
            _, e_p = _log_q_and_energy(q, system, refined["x"])
            observables["refined_nmcmc"] = spin_observables(n_spins, beta, refined["x"], e_p)
        exact_obs = exact_observables(system, beta)
        if exact_obs:
            observables["exact"] = {k: (v, 0.0) for k, v in exact_obs.items()}

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
        system=system_record,
        seed=seed,
        spec=spec_text,
        estimates=estimates,
        reference=ref_est,
        exact_log_z=exact,
        train_history={k: np.asarray(v) for k, v in history.items()},
        samples=samples,
        refined=refined,
        observables=observables,
        timings=timings,
        params=params,
        device=str(jax.devices()[0]),
    )


def _shift(e: est.Estimate, delta: float) -> est.Estimate:
    from dataclasses import replace

    return replace(
        e, log_z=e.log_z + delta, extra={**e.extra, "log_n_factorial_subtracted": -delta}
    )
