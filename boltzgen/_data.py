r"""Data-based training inside :func:`boltzgen.run`: MC samples of p, matching, FEAT, W2.

Flow matching or a stochastic interpolant, FEAT path estimates and sample-quality metrics.

The pipeline of DESIGN.md with its data branch: Monte Carlo samples of p (``mcmc/``) train the
sampler (``train/``: conditional flow matching of a CNF, or the velocity and score of a
stochastic interpolant); a held-out part of the same samples gives the estimates that need
samples of p (lower bound E_p[u + ln q], reverse importance sampling, BAR between q and p) and
the reverse FEAT paths; the trained interpolant gives the forward FEAT paths from its Gaussian
source. Every number carries its cost (energy evaluations, wall time).
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import numpy as np

from boltzgen import estimators as est

#: Objectives of :func:`boltzgen.run` that train from Monte Carlo samples of p.
DATA_OBJECTIVES = ("flow_matching", "interpolant")

#: Keys of ``data_options`` (the ``[data]`` spec section) with their defaults.
DATA_DEFAULTS = {
    "n_samples": 8192,  # training samples of p
    "n_holdout": 4096,  # held-out samples of p (lower bound, reverse IS, BAR, reverse FEAT)
    "n_chains": 256,
    "kernel": "hmc",
    "n_leapfrog": 10,
    "n_warmup": 1000,
    "thin": 20,
}

#: Keys of ``matching_options`` with their defaults.
MATCHING_DEFAULTS = {
    "pairing": "auto",  # aligned (particles, with rotations) | ot | independent | equivariant_ot
    "gamma_scale": 1.0,  # interpolant: γ_t = √(a t(1 − t))
    "feat_paths": 4096,  # forward (and at most as many reverse) escorted paths
    "feat_steps": 100,  # Euler–Maruyama steps per path
    "feat_eps": 1.0,  # ε(t) = ε₀ γ(t)²
}


def _options(given: dict | None, defaults: dict, what: str) -> dict:
    given = dict(given or {})
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(
            f"unknown {what} option {sorted(unknown)[0]!r}; valid: {', '.join(defaults)}"
        )
    return {**defaults, **given}


def check_data_options(data_options: dict | None, matching_options: dict | None) -> None:
    """Raise ValueError naming the first unknown or bad key of the two option dicts."""
    d = _options(data_options, DATA_DEFAULTS, "data")
    m = _options(matching_options, MATCHING_DEFAULTS, "matching")
    for k in ("n_samples", "n_chains", "n_leapfrog", "thin", "feat_paths", "feat_steps"):
        v = d.get(k, m.get(k))
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{k} must be a positive integer, got {v!r}")
    for k in ("n_holdout", "n_warmup"):
        if isinstance(d[k], bool) or not isinstance(d[k], int) or d[k] < 0:
            raise ValueError(f"{k} must be an integer >= 0, got {d[k]!r}")
    if d["kernel"] not in ("hmc", "mala"):
        raise ValueError(f"data kernel must be 'hmc' or 'mala', got {d['kernel']!r}")
    from boltzgen.train import PAIRINGS

    if m["pairing"] not in ("auto", *PAIRINGS):
        raise ValueError(f"unknown pairing {m['pairing']!r}; valid: auto, {', '.join(PAIRINGS)}")
    for k in ("gamma_scale", "feat_eps"):
        v = m[k]
        if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
            raise ValueError(f"{k} must be a number >= 0, got {v!r}")
    if not m["gamma_scale"] > 0:
        raise ValueError("gamma_scale must be > 0 (the interpolant learns a score)")


def check_data_sampler(objective: str, sampler, system) -> None:
    """Raise ValueError unless ``objective`` can train ``sampler`` on Monte Carlo data.

    Data-based objectives train a CNF (or the zero-COM CNF of a
    :class:`~boltzgen.flows.CentreOfMassSplit`) on particle systems, whose Monte Carlo data come
    from :func:`boltzgen.mcmc._particles.particle_mcmc`.
    """
    from boltzgen.flows import CNF, CentreOfMassSplit

    shape = tuple(system.event_shape)
    if len(shape) != 2:
        raise ValueError(
            f"train.objective {objective!r} needs a particle system (configurations (N, d)) for "
            f"its Monte Carlo data; {system.kind!r} has event shape {shape}"
        )
    inner = sampler.inner if isinstance(sampler, CentreOfMassSplit) else sampler
    if not isinstance(inner, CNF):
        raise ValueError(
            f"train.objective {objective!r} trains a continuous flow: use sampler.kind = 'cnf', "
            f"got {type(sampler).__name__}"
        )
    if objective == "interpolant" and isinstance(sampler, CentreOfMassSplit):
        raise ValueError(
            "train.objective 'interpolant' works in the full space or with a translation-"
            "invariant system; set sampler.zero_com = false"
        )


def training_data(system, beta: float, *, key, progress: bool = True, **options) -> dict:
    r"""Equilibrium samples of p by tuned HMC/MALA chains, split into training and held-out sets.

    ``n_chains`` chains (zero centre of mass for translation-invariant systems) adapt their step
    size for ``n_warmup`` moves, then record every ``thin``-th state until n_samples + n_holdout
    states are recorded; the records are shuffled (chains and times mixed) and split.

    Returns:
        dict with ``train`` and ``holdout`` arrays (n, *event_shape) and their energies,
        ``n_energy_evals``, ``wall_time``, ``acceptance``, ``step_size``, ``energy_ess``,
        ``energy_rhat``.
    """
    from boltzgen.mcmc._particles import particle_mcmc

    o = _options(options, DATA_DEFAULTS, "data")
    n_total = o["n_samples"] + o["n_holdout"]
    per_chain = math.ceil(n_total / o["n_chains"])
    k_run, k_perm = jax.random.split(key)
    res = particle_mcmc(
        system,
        beta,
        key=k_run,
        n_chains=o["n_chains"],
        n_steps=per_chain * o["thin"],
        kernel=o["kernel"],
        n_leapfrog=o["n_leapfrog"] if o["kernel"] == "hmc" else None,
        n_warmup=o["n_warmup"],
        thin=o["thin"],
        progress="mcmc data" if progress else False,
    )
    shape = tuple(system.event_shape)
    x = np.asarray(res.flat_samples).reshape(-1, *shape)
    e = np.asarray(res.flat_energies)
    perm = np.asarray(jax.random.permutation(k_perm, x.shape[0]))[:n_total]
    x, e = x[perm], e[perm]
    n = o["n_samples"]
    return dict(
        train=x[:n],
        train_energy=e[:n],
        holdout=x[n:],
        holdout_energy=e[n:],
        n_records=int(res.flat_energies.size),
        n_energy_evals=int(res.n_energy_evals),
        wall_time=float(res.wall_time),
        acceptance=float(res.acceptance),
        step_size=float(res.step_size),
        energy_ess=float(res.energy_ess),
        energy_rhat=float(res.energy_rhat),
    )


def default_pairing(system) -> tuple[str, bool]:
    """The default (pairing, rotations) of flow matching for ``system``.

    Particle relabelling + rotation alignment for rotation-invariant particles in d ≥ 2,
    relabelling only in d = 1, mini-batch OT otherwise.
    """
    shape = tuple(system.event_shape)
    if len(shape) == 2 and getattr(system, "permutation_symmetric", False):
        return "aligned", shape[1] >= 2
    return "ot", False


def _pairing(system, m: dict) -> tuple[str, bool]:
    """(pairing, rotations): ``m["pairing"]``, or the system's default for ``"auto"``."""
    pairing, rotations = default_pairing(system)
    return (pairing if m["pairing"] == "auto" else m["pairing"]), rotations


def _interpolant(shape, *, key, sampler_options: dict | None, m: dict, **kw):
    """An :class:`~boltzgen.flows.Interpolant` with the CNF field options of ``sampler_options``."""
    from boltzgen.flows import Interpolant

    o = dict(sampler_options or {})
    return Interpolant(
        shape,
        key=key,
        hidden=int(o.get("hidden", 64)),
        depth=int(o.get("depth", 2)),
        field=str(o.get("field", "rbf")),
        n_rbf=int(o.get("n_rbf", 32)),
        r_max=float(o.get("r_max", 8.0)),
        gamma_scale=float(m["gamma_scale"]),
        **kw,
    )


def inefficiency(*data: dict) -> float:
    """G = records / ESS of the energy trace (≥ 1), the worst over ``data`` sets."""
    return max([1.0] + [d["n_records"] / d["energy_ess"] for d in data if d["energy_ess"] > 0])


def inflate(estimates: dict, g: float, names=None) -> dict:
    """The estimates (those in ``names``, default all) with standard errors × √g.

    Monte Carlo records are correlated along each chain; g = records / energy ESS
    (:func:`inefficiency`) accounts for that, and ``extra["stderr_inflation"]`` records √g.
    """
    out = dict(estimates)
    for m, e in estimates.items():
        if names is None or m in names:
            e.extra["stderr_inflation"] = math.sqrt(g)
            out[m] = dataclasses.replace(e, log_z_stderr=e.log_z_stderr * math.sqrt(g))
    return out


def _feat(interp, x_a, x_b, *, log_density_a, log_density_b, key, m: dict, log_z_a=0.0):
    """Forward paths from ``x_a``, reverse from ``x_b`` (if any); FEAT estimates with costs."""
    from boltzgen.mcmc import forward_paths, reverse_paths

    common = dict(
        log_density_a=log_density_a,
        log_density_b=log_density_b,
        n_steps=int(m["feat_steps"]),
        eps=interp.eps_schedule(float(m["feat_eps"])),
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
    cost = dict(
        n_paths_forward=int(x_a.shape[0]),
        n_paths_reverse=0 if rev is None else int(x_b.shape[0]),
        n_steps=int(m["feat_steps"]),
        eps0=float(m["feat_eps"]),
        wall_time=time.perf_counter() - t,
    )
    for e in estimates.values():
        e.extra.update(cost)
    return estimates


def train_on_data(
    objective: str,
    sampler,
    system,
    data: np.ndarray,
    *,
    key,
    steps: int,
    batch_size: int,
    optimizer,
    sampler_options: dict,
    matching_options: dict | None,
    progress: bool,
):
    """Train from samples of p; return (sampler q with exact log q, interpolant or None, history).

    ``"flow_matching"``: the CNF (or the zero-COM CNF inside a
    :class:`~boltzgen.flows.CentreOfMassSplit`, whose centre-of-mass scale is then set to its
    maximum-likelihood value on the data) is fitted by conditional flow matching.
    ``"interpolant"``: an :class:`~boltzgen.flows.Interpolant` with the CNF's width, depth, base
    scale and zero-COM setting learns a velocity and a denoiser; q is its probability-flow ODE.
    """
    import equinox as eqx
    import jax.numpy as jnp

    from boltzgen.flows import CentreOfMassSplit
    from boltzgen.train import train_matching

    m = _options(matching_options, MATCHING_DEFAULTS, "matching")
    pairing, rotations = _pairing(system, m)
    check_data_sampler(objective, sampler, system)
    split = isinstance(sampler, CentreOfMassSplit)
    inner = sampler.inner if split else sampler
    if split:  # the exact Gaussian of the centre of mass: its MLE scale from the data
        com = data.mean(axis=-2)
        s = math.sqrt(float(np.mean(com**2)))
        sampler = eqx.tree_at(lambda q: q.log_com_scale, sampler, jnp.log(jnp.float32(s)))
        data = data - com[:, None, :]
    common = dict(
        key=key,
        steps=steps,
        batch_size=batch_size,
        optimizer=optimizer,
        pairing=pairing,
        rotations=rotations,
        progress=progress,
    )
    if objective == "flow_matching":
        state = train_matching(inner, data, **common)
        q = eqx.tree_at(lambda q: q.inner, sampler, state.model) if split else state.model
        return q, None, state.history
    interp = _interpolant(
        inner.event_shape,
        key=jax.random.fold_in(key, 1),
        sampler_options=sampler_options,
        m=m,
        base_scale=float(jnp.exp(inner.log_scale)),
        zero_com=inner.zero_com,
    )
    state = train_matching(interp, data, **common)
    interp = state.model
    return interp.as_cnf(n_steps=inner.n_steps, solver=inner.solver), interp, state.history


def feat_estimates(
    interp, system, beta: float, holdout: np.ndarray, *, key, matching_options: dict | None
) -> dict[str, est.Estimate]:
    r"""FEAT estimates of ln Z from escorted paths along a trained Gaussian → p interpolant.

    Forward paths start at exact draws of the normalised Gaussian source (ln Z_a = 0) and end
    at p; reverse paths start at held-out samples of p. ε(t) = ε₀ γ(t)², so ε s = −ε₀ γ η is
    finite at both ends. The weights are exact for the learned fields and any step count; the
    estimates are ``feat_forward``, ``feat_reverse``, ``feat_bar`` and the bounds
    ``feat_upper_bound`` (mean A_F, an upper bound on βF) and ``feat_lower_bound``.
    """
    m = _options(matching_options, MATCHING_DEFAULTS, "matching")
    n_f = int(m["feat_paths"])
    k_base, k_paths = jax.random.split(key)
    x0 = interp.sample_base(n_f, key=k_base)
    x1 = jax.numpy.asarray(holdout[: min(n_f, int(holdout.shape[0]))], dtype=x0.dtype)
    return _feat(
        interp,
        x0,
        x1,
        log_density_a=interp.base_log_prob,
        log_density_b=lambda x: -beta * system.energy(x),
        key=k_paths,
        m=m,
    )


def relative_free_energy(
    system_a,
    beta_a: float,
    system_b,
    beta_b: float,
    *,
    seed: int = 0,
    sampler_options: dict | None = None,
    steps: int = 2000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    clip: float = 10.0,
    data_options: dict | None = None,
    matching_options: dict | None = None,
    progress: bool = True,
) -> dict[str, est.Estimate]:
    r"""ln(Z_B/Z_A) between two particle ensembles by FEAT along a learned interpolant A → B.

    Monte Carlo samples of p_A ∝ e^{−β_A E_A} and p_B ∝ e^{−β_B E_B} train a data → data
    stochastic interpolant (velocity b and denoiser η, :class:`~boltzgen.flows.Interpolant`
    with ``source="data"``); escorted Euler–Maruyama paths then run forward from held-out
    samples of A and backward from held-out samples of B, and their path log-weights A_F, A_R
    give ``feat_forward``, ``feat_reverse``, ``feat_bar`` and the bounds ``feat_upper_bound``
    / ``feat_lower_bound`` (:func:`boltzgen.estimators.feat` with ln Z_a = 0): every ``log_z``
    is ln(Z_B/Z_A), exact in expectation for any learned fields. Two temperatures of one
    system, or two couplings (e.g. a Coulomb gas at λ = 0 and λ = 1), are typical uses.

    Args:
        system_a: state A's system.
        beta_a: state A's inverse temperature.
        system_b: state B's system (same event shape (N, d)).
        beta_b: state B's inverse temperature.
        seed: the seed of the data, the weights and the paths.
        sampler_options: ``hidden``, ``depth``, ``field``, ``n_rbf``, ``r_max`` of the fields.
        steps: interpolant training steps.
        batch_size: pairs per training step.
        learning_rate: peak learning rate.
        clip: global gradient-norm clip.
        data_options: Monte Carlo data per state (:data:`DATA_DEFAULTS`; ``n_holdout`` samples
            start the paths).
        matching_options: ``gamma_scale``, ``feat_paths``, ``feat_steps``, ``feat_eps``,
            ``pairing`` (:data:`MATCHING_DEFAULTS`).
        progress: progress bars.

    Returns:
        method → :class:`~boltzgen.estimators.Estimate` of ln(Z_B/Z_A); ``extra`` holds the
        Monte Carlo cost (``n_energy_evals_data``) and the path settings.
    """
    from boltzgen.train import make_optimizer, train_matching

    if tuple(system_a.event_shape) != tuple(system_b.event_shape):
        raise ValueError(
            f"states A and B need the same event shape, got {tuple(system_a.event_shape)} and "
            f"{tuple(system_b.event_shape)}"
        )
    check_data_options(data_options, matching_options)
    invariant = [bool(getattr(s, "translation_invariant", False)) for s in (system_a, system_b)]
    if invariant[0] != invariant[1]:
        raise ValueError("states A and B must both be translation-invariant or both not")
    m = _options(matching_options, MATCHING_DEFAULTS, "matching")
    key = jax.random.key(seed)
    k_a, k_b, k_init, k_train, k_paths = jax.random.split(key, 5)
    data_a = training_data(system_a, beta_a, key=k_a, progress=progress, **(data_options or {}))
    data_b = training_data(system_b, beta_b, key=k_b, progress=progress, **(data_options or {}))
    interp = _interpolant(
        system_a.event_shape,
        key=k_init,
        sampler_options=sampler_options,
        m=m,
        source="data",
        zero_com=invariant[0],
    )
    pairing, rotations = _pairing(system_a, m)
    state = train_matching(
        interp,
        (data_a["train"], data_b["train"]),
        key=k_train,
        steps=steps,
        batch_size=batch_size,
        optimizer=make_optimizer(learning_rate, steps, clip),
        pairing=pairing,
        rotations=rotations,
        progress=progress,
    )
    interp = state.model
    n = min(int(m["feat_paths"]), len(data_a["holdout"]), len(data_b["holdout"]))
    if n < 2:
        raise ValueError("relative_free_energy needs data_options n_holdout >= 2")
    dtype = jax.numpy.float32
    out = _feat(
        interp,
        jax.numpy.asarray(data_a["holdout"][:n], dtype),
        jax.numpy.asarray(data_b["holdout"][:n], dtype),
        log_density_a=lambda x: -beta_a * system_a.energy(x),
        log_density_b=lambda x: -beta_b * system_b.energy(x),
        key=k_paths,
        m=m,
    )
    data_evals = float(data_a["n_energy_evals"] + data_b["n_energy_evals"])
    for e in out.values():
        e.extra["n_energy_evals_data"] = data_evals
    return inflate(out, inefficiency(data_a, data_b))


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


__all__ = [
    "DATA_DEFAULTS",
    "DATA_OBJECTIVES",
    "MATCHING_DEFAULTS",
    "check_data_options",
    "check_data_sampler",
    "default_pairing",
    "feat_estimates",
    "inefficiency",
    "inflate",
    "relative_free_energy",
    "sample_metrics",
    "train_on_data",
    "training_data",
]
