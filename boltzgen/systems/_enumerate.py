"""Enumeration of all 2^N states of a spin system: exact ln Z for small N.

Works on any spin system (``n_spins``, ``event_shape`` and ``energy``); the states are ±1 in
the bit order of :func:`all_states` (spin k of state i is bit k of i).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

#: Largest number of spins for which ``exact_log_z`` enumerates all states.
MAX_ENUMERATE = 20


def all_states(n: int) -> np.ndarray:
    """All 2^n spin states as a (2^n, n) float64 array of ±1 (n ≤ 24)."""
    if n > 24:
        raise ValueError(f"enumerating 2^{n} states is too large (n ≤ 24)")
    idx = np.arange(2**n, dtype=np.int64)[:, None]
    bits = (idx >> np.arange(n, dtype=np.int64)[None, :]) & 1
    return (2.0 * bits - 1.0).astype(np.float64)


def enumerate_energies(system) -> np.ndarray:
    """Energies of all 2^N states of ``system`` (float64), in the order of :func:`all_states`."""
    states = all_states(system.n_spins).reshape(-1, *system.event_shape)
    with jax.enable_x64(True):
        e = jax.jit(jax.vmap(system.energy))(jnp.asarray(states, jnp.float64))
        return np.asarray(e, np.float64)


def enumerate_log_z(system, beta: float) -> float:
    """Exact ln Z = ln Σ_s exp(−βE(s)) by enumerating all 2^N states (float64 log-sum-exp)."""
    a = -float(beta) * enumerate_energies(system)
    m = a.max()
    return float(m + math.log(np.sum(np.exp(a - m))))


__all__ = ["MAX_ENUMERATE", "all_states", "enumerate_energies", "enumerate_log_z"]
