"""The estimation phase: samples of q with float64 log-weights, and the sampler-only estimates.

Also the helpers the stages share: float64 log q and E of given configurations, the estimates
that need samples of p (lower bound, reverse importance sampling, BAR between q and p), and the
observables of spin systems.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from boltzgen import _checks
from boltzgen import estimators as est


@dataclass(frozen=True)
class Estimation:
    """How many samples of q the estimates use, and how they are drawn.

    Attributes:
        n_samples: samples of q for importance sampling and the variational bound.
        chunk_size: samples drawn per device call (bounded memory).
        n_boot: bootstrap resamples of the importance-sampling error (0 = delta method only).
    """

    n_samples: int = 65536
    chunk_size: int = 8192
    n_boot: int = 200

    def __post_init__(self):
        _checks.integer("n_samples", self.n_samples, 2)
        _checks.integer("chunk_size", self.chunk_size, 1)
        _checks.integer("n_boot", self.n_boot, 0)

    def memory_bytes(self, system) -> int:
        """Bytes of the stored samples (x in float32; log q, E, w and weights in float64)."""
        return self.n_samples * (4 * int(np.prod(system.event_shape)) + 4 * 8)

    def __call__(self, sampler, system, beta: float, *, key, seed: int = 0, progress=True):
        """Draw the samples and return ``(samples, estimates)``.

        ``samples`` has x, log_q, energy, log_w and weights_normalised; ``estimates`` the
        variational bound and importance sampling (bootstrap generator seeded by ``seed``).
        """
        samples = sample_log_weights(
            sampler,
            system,
            beta,
            self.n_samples,
            key=key,
            chunk_size=min(self.chunk_size, self.n_samples),
            progress=progress,
        )
        rng = np.random.default_rng(seed)
        estimates = {
            "variational": est.variational_bound(samples["log_w"]),
            "importance": est.importance_log_z(samples["log_w"], rng=rng, n_boot=self.n_boot),
        }
        samples["weights_normalised"] = est.normalised_weights(samples["log_w"])
        return samples, estimates


def sample_log_weights(
    sampler,
    system,
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
    network's log-determinant or of the 1/r energy. Chunk i uses the key ``fold_in(key, i)``.
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


def log_q_and_energy(sampler, system, x, chunk_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
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


def p_sample_estimates(
    beta: float,
    log_q_energy: tuple[np.ndarray, np.ndarray],
    log_w_p=None,
    *,
    q_log_w=None,
    names: dict | None = None,
) -> dict[str, est.Estimate]:
    """Estimates that need samples of p: lower bound, reverse IS and BAR between q and p.

    The lower bound works with weighted samples; reverse importance sampling and BAR need
    equilibrium (equal-weight) samples of p.

    Args:
        beta: β.
        log_q_energy: (ln q(x), E(x)) in float64 at the samples of p.
        log_w_p: log-weights of weighted samples of p, or None for equilibrium samples.
        q_log_w: log-weights w = −u − ln q of independent samples of q (the estimation phase);
            with equilibrium samples of p they give BAR with works W_F = −w, W_R = w(x_p).
        names: method names of ``forward_bound``, ``reverse_importance`` and ``bar`` (default:
            those names).
    """
    m = {k: k for k in ("forward_bound", "reverse_importance", "bar")} | (names or {})
    lq, e = log_q_energy
    w_p = -beta * e - lq  # −u − ln q at the p-samples
    out = {m["forward_bound"]: est.forward_bound(-w_p, log_w_p, method=m["forward_bound"])}
    if log_w_p is None:
        out[m["reverse_importance"]] = est.reverse_importance_log_z(
            w_p, method=m["reverse_importance"]
        )
        if q_log_w is not None:
            out[m["bar"]] = est.bar(-np.asarray(q_log_w), w_p, method=m["bar"])
    return out


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


__all__ = [
    "Estimation",
    "OBSERVABLES",
    "exact_observables",
    "log_q_and_energy",
    "p_sample_estimates",
    "sample_log_weights",
    "spin_observables",
]
