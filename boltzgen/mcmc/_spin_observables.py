"""Thermal averages of spin chains with autocorrelation-aware errors: :func:`spin_observables`."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from boltzgen.mcmc._checks import check_beta, check_int
from boltzgen.mcmc._diagnostics import integrated_autocorrelation_time
from boltzgen.mcmc._spin_kernels import _check_system
from boltzgen.mcmc._spin_sampling import SpinChains
from boltzgen.systems import AbstractSpinSystem


@dataclasses.dataclass(frozen=True)
class SpinObservables:
    r"""Thermal averages of a spin system with standard errors (per system, not per site).

    Attributes:
        energy: ⟨E⟩.
        energy_stderr: its standard error √(Var(E) τ_E / n), n = samples over all chains.
        abs_magnetisation: ⟨|m|⟩, m = Σ s_i / N.
        abs_magnetisation_stderr: √(Var(|m|) τ_{|m|} / n).
        susceptibility: χ = N β (⟨m²⟩ − ⟨|m|⟩²) (the finite-lattice χ′ of |m|; per site it is
            already intensive).
        susceptibility_stderr: jackknife over groups of chains.
        specific_heat: C = β² Var(E) = β² (⟨E²⟩ − ⟨E⟩²) for the whole system; per site C/N.
        specific_heat_stderr: jackknife over groups of chains.
        tau_energy: integrated autocorrelation time of E, in samples (NaN for iid samples).
        tau_abs_magnetisation: the same for |m|.
        n_samples: number of samples (sweeps × chains).
        n_spins: N.
    """

    energy: float
    energy_stderr: float
    abs_magnetisation: float
    abs_magnetisation_stderr: float
    susceptibility: float
    susceptibility_stderr: float
    specific_heat: float
    specific_heat_stderr: float
    tau_energy: float
    tau_abs_magnetisation: float
    n_samples: int
    n_spins: int

    @property
    def energy_per_site(self) -> float:
        """⟨E⟩/N."""
        return self.energy / self.n_spins

    @property
    def specific_heat_per_site(self) -> float:
        """C/N = β² Var(E)/N."""
        return self.specific_heat / self.n_spins


def _mean_stderr(trace: np.ndarray) -> tuple[float, float, float]:
    """Mean of a ``(T, n_chains)`` trace, its standard error with τ_int, and τ_int.

    se = √(Var(x) τ_int / (T·n_chains)); where τ_int is undefined (T < 4, or no variance), the
    spread of the chain means is used instead (chains are independent).
    """
    x = np.asarray(trace, np.float64)
    mean = float(np.mean(x))
    tau = integrated_autocorrelation_time(x)
    if math.isfinite(tau) and x.size > 1:
        return mean, math.sqrt(np.var(x, ddof=1) * max(tau, 0.0) / x.size), tau
    if x.shape[1] > 1:
        cm = x.mean(axis=0)
        return mean, float(np.std(cm, ddof=1) / math.sqrt(cm.size)), tau
    return mean, 0.0, tau


def _jackknife(groups: list[np.ndarray], fn) -> tuple[float, float]:
    """Evaluate fn on all data and its jackknife standard error over ``groups`` (leave one out)."""
    full = fn(np.concatenate(groups))
    g = len(groups)
    if g < 2:
        return full, math.nan
    loo = np.array([fn(np.concatenate(groups[:i] + groups[i + 1 :])) for i in range(g)])
    return full, float(math.sqrt((g - 1) / g * np.sum((loo - loo.mean()) ** 2)))


def spin_observables(
    system: AbstractSpinSystem,
    data,
    beta: float,
    *,
    n_warmup: int = 0,
    n_groups: int = 16,
) -> SpinObservables:
    r"""⟨E⟩, ⟨|m|⟩, χ and C with standard errors that account for autocorrelation.

    With E the energy and m = Σ_i s_i / N of each sample:

        χ = N β (⟨m²⟩ − ⟨|m|⟩²),    C = β² (⟨E²⟩ − ⟨E⟩²)

    (whole-system values; per site: ⟨E⟩/N, C/N, and χ as is). Errors of ⟨E⟩ and ⟨|m|⟩ are
    √(Var τ_int / n) with τ_int from :func:`~boltzgen.mcmc.kernels.integrated_autocorrelation_time`
    (pooled over chains); errors of χ and C are jackknife errors over ``n_groups`` groups of
    whole chains, which are independent, so autocorrelation within chains is accounted for. For
    one chain the groups are consecutive blocks of it (valid when blocks ≫ τ_int).

    Args:
        system: the spin system (for N and, for raw samples, the energy).
        data: a :class:`SpinChains`, or raw configurations: ``(T, n_chains, *event_shape)``
            chains or ``(M, *event_shape)`` independent samples.
        beta: the inverse temperature of the samples.
        n_warmup: leading sweeps to drop (chains only).
        n_groups: jackknife groups (≤ number of chains).

    Returns:
        A :class:`SpinObservables`.
    """
    system = _check_system(system)
    beta = check_beta(beta)
    n_groups = check_int("n_groups", n_groups, 2)
    n_warmup = check_int("n_warmup", n_warmup, 0)
    ev = tuple(system.event_shape)
    iid = False
    if isinstance(data, SpinChains):
        e, m = data.energy, data.magnetisation
    else:
        x = np.asarray(data)
        if tuple(x.shape[x.ndim - len(ev) :]) != ev or x.ndim not in (len(ev) + 1, len(ev) + 2):
            raise ValueError(
                f"samples must have shape (M, {', '.join(map(str, ev))}) or "
                f"(T, n_chains, {', '.join(map(str, ev))}), got {x.shape}"
            )
        iid = x.ndim == len(ev) + 1
        flat = x.reshape(-1, *ev)
        with jax.enable_x64(True):
            ef = np.asarray(jax.jit(jax.vmap(system.energy))(jnp.asarray(flat, jnp.float64)))
        mf = flat.reshape(flat.shape[0], -1).mean(axis=1)
        shape = (x.shape[0], 1) if iid else x.shape[:2]
        e, m = ef.reshape(shape), mf.reshape(shape)
    e = np.asarray(e, np.float64)[0 if iid else n_warmup :]
    m = np.asarray(m, np.float64)[0 if iid else n_warmup :]
    if e.shape[0] < 2:
        raise ValueError(f"need at least 2 samples per chain after n_warmup = {n_warmup}")
    T, n_chains = e.shape
    n_spins = system.n_spins
    if iid:
        e_mean, a_mean = float(e.mean()), float(np.abs(m).mean())
        e_se = float(np.std(e, ddof=1) / math.sqrt(T))
        a_se = float(np.std(np.abs(m), ddof=1) / math.sqrt(T))
        tau_e = tau_a = 1.0
    else:
        e_mean, e_se, tau_e = _mean_stderr(e)
        a_mean, a_se, tau_a = _mean_stderr(np.abs(m))
    # jackknife groups: whole chains, or consecutive blocks of one chain / of iid samples
    if n_chains >= 2:
        parts = np.array_split(np.arange(n_chains), min(n_groups, n_chains))
        groups = [np.stack([e[:, p].ravel(), m[:, p].ravel()], axis=1) for p in parts]
    else:
        parts = np.array_split(np.arange(T), min(n_groups, T))
        groups = [np.stack([e[p, 0], m[p, 0]], axis=1) for p in parts]
    chi, chi_se = _jackknife(
        groups, lambda d: n_spins * beta * (np.mean(d[:, 1] ** 2) - np.mean(np.abs(d[:, 1])) ** 2)
    )
    c, c_se = _jackknife(groups, lambda d: beta**2 * np.var(d[:, 0]))
    return SpinObservables(
        energy=e_mean,
        energy_stderr=e_se,
        abs_magnetisation=a_mean,
        abs_magnetisation_stderr=a_se,
        susceptibility=float(chi),
        susceptibility_stderr=chi_se,
        specific_heat=float(c),
        specific_heat_stderr=c_se,
        tau_energy=tau_e,
        tau_abs_magnetisation=tau_a,
        n_samples=int(e.size),
        n_spins=n_spins,
    )
