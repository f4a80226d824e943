r"""Exact references for the 2-D Ising model: Kaufman's torus formula, transfer matrix, enumeration.

Three independent routes to ln Z of :class:`~boltzgen.systems.Ising`, all in float64:

* :func:`kaufman_log_z` — Kaufman's (1949) closed form for the m×n torus at h = 0, in the
  log-space form of Beale (PRL 76, 78 (1996)); any size, O(n) work. :func:`kaufman_log_z_mp` is
  the same formula in mpmath at arbitrary precision, the check on the float64 path.
* :func:`transfer_matrix_log_z` — the row-to-row transfer matrix (2^L × 2^L, applied as a
  Kronecker product), any J_h, J_v, h, periodic or open, L ≤ ``MAX_TRANSFER_WIDTH``.
* enumeration of all 2^N states (:func:`~boltzgen.systems.enumerate_log_z`,
  :func:`enumerate_thermo`), N ≤ ``MAX_ENUMERATE``.

:func:`ising_exact_log_z` picks the first that applies; :func:`ising_exact_thermo` adds ⟨E⟩, S
and C_V as exact derivatives (forward-mode autodiff in float64) of the same ln Z. The lattice
formulas themselves, on sizes and couplings only, are in :mod:`boltzgen.systems._ising_lattice`
and the enumeration in :mod:`boltzgen.systems._enumerate` (both importable from here too); this
module adds the system-level dispatch.

Conventions: E(s) = −J_h Σ_horizontal s_i s_j − J_v Σ_vertical s_i s_j − h Σ_i s_i with each
bond counted once (on an L = 2 torus each pair is joined by two bonds and both count, exactly as
in ``Ising._energy``); reduced couplings K_h = βJ_h, K_v = βJ_v; energies and entropies are
totals (not per site), entropy in units of k_B.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from boltzgen.systems._enumerate import (
    MAX_ENUMERATE,
    all_states,
    enumerate_energies,
    enumerate_log_z,
)
from boltzgen.systems._ising import AbstractSpinSystem, Ising
from boltzgen.systems._ising_lattice import (
    KAUFMAN_K_RANGE,
    MAX_TRANSFER_WIDTH,
    _check_finite,
    _kaufman_jit,
    _transfer_log_z,
    _transfer_log_z_any,
    kaufman_log_z,
    kaufman_log_z_mp,
    lattice_method,
)


def transfer_matrix_log_z(system: Ising, beta: float) -> float:
    r"""Exact ln Z of an :class:`Ising` lattice (any J_h, J_v, h, boundary) by a transfer matrix.

    With row states σ ∈ {±1}^L, the row weight w(σ) = exp(K_h Σ_c σ_c σ_{c+1} + βh Σ_c σ_c)
    (c + 1 taken mod L when periodic) and the vertical-bond matrix
    B(σ, σ') = exp(K_v Σ_c σ_c σ'_c) = ⊗_c [[e^{K_v}, e^{−K_v}], [e^{−K_v}, e^{K_v}]],

        periodic:  Z = tr (D B)^L,           open:  Z = 1ᵀ D (B D)^{L−1} 1,   D = diag(w).

    B is applied site by site (O(L 2^L) per vector, never formed); every entry is positive, so
    after each multiplication the iterate is divided by its maximum and ln Z accumulates the log
    of the scale. The periodic trace is taken over blocks of columns of (D B)^L to bound memory.

    Args:
        system: an :class:`Ising` with L ≤ ``MAX_TRANSFER_WIDTH``.
        beta: inverse temperature.

    Returns:
        ln Z as a Python float (float64).

    Raises:
        ValueError: if ``system`` is not an :class:`Ising` or L > ``MAX_TRANSFER_WIDTH``.
    """
    if not isinstance(system, Ising):
        raise ValueError(f"transfer_matrix_log_z needs an Ising system, got {type(system)}")
    if system.L > MAX_TRANSFER_WIDTH:
        raise ValueError(
            f"transfer matrix for L = {system.L} is 2^{system.L} × 2^{system.L}; "
            f"L ≤ {MAX_TRANSFER_WIDTH} only"
        )
    beta = _check_finite("beta", beta)
    return _transfer_log_z(
        system.L,
        system.L,
        beta * system.Jh,
        beta * system.Jv,
        beta * system.h,
        system.boundary,
    )


# --------------------------------------------------------------------------------------------
# Dispatch and thermodynamics
# --------------------------------------------------------------------------------------------


def ising_exact_method(system: AbstractSpinSystem, beta: float) -> str | None:
    """Which exact route :func:`ising_exact_log_z` takes for ``system`` at ``beta``.

    Returns:
        ``"kaufman"`` (periodic Ising, h = 0, couplings the formula handles),
        ``"transfer_matrix"`` (Ising, L ≤ ``MAX_TRANSFER_WIDTH``), ``"enumeration"``
        (N ≤ ``MAX_ENUMERATE``; also any non-Ising spin system), or None.
    """
    beta = _check_finite("beta", beta)
    if isinstance(system, Ising):
        method = lattice_method(system.L, beta, system.Jh, system.Jv, system.h, system.boundary)
        if method is not None:
            return method
    if isinstance(system, AbstractSpinSystem) and system.n_spins <= MAX_ENUMERATE:
        return "enumeration"
    return None


def ising_exact_log_z(system: AbstractSpinSystem, beta: float) -> float | None:
    """Exact ln Z(β) of a spin system, or None when no exact route applies.

    Periodic :class:`Ising` at h = 0 → :func:`kaufman_log_z`; otherwise an :class:`Ising` with
    L ≤ ``MAX_TRANSFER_WIDTH`` → :func:`transfer_matrix_log_z`; otherwise N ≤ ``MAX_ENUMERATE``
    → enumeration (:func:`~boltzgen.systems.enumerate_log_z`); else None. For square Ising
    lattices the enumeration branch is never reached (L ≤ 4 is covered by the transfer matrix);
    it serves other spin systems (SK, EA).
    """
    method = ising_exact_method(system, beta)
    if method == "kaufman":
        return kaufman_log_z(system.L, system.L, beta * system.Jh, beta * system.Jv)
    if method == "transfer_matrix":
        return transfer_matrix_log_z(system, beta)
    if method == "enumeration":
        return enumerate_log_z(system, beta)
    return None


def _thermo_from_derivatives(f, beta: float) -> dict[str, float]:
    """log_z, energy, entropy, heat_capacity from f(β) = ln Z(β) by forward-over-forward AD."""
    with jax.enable_x64(True):
        b = jnp.float64(beta)
        one = jnp.float64(1.0)

        def first(x):
            return jax.jvp(f, (x,), (one,))

        (log_z, d1), (_, d2) = jax.jvp(first, (b,), (one,))
        log_z, d1, d2 = float(log_z), float(d1), float(d2)
    energy = -d1
    return dict(
        log_z=log_z,
        energy=energy,
        entropy=log_z + beta * energy,
        heat_capacity=beta**2 * d2,
    )


def ising_exact_thermo(system: AbstractSpinSystem, beta: float) -> dict[str, float] | None:
    r"""Exact thermodynamics of a spin system at inverse temperature β (totals, k_B = 1).

        ⟨E⟩ = −∂ ln Z / ∂β,   S = ln Z + β⟨E⟩,   C = β² Var E = β² ∂² ln Z / ∂β².

    The derivatives are exact: forward-mode autodiff (float64) of the same Kaufman or transfer-
    matrix ln Z that :func:`ising_exact_log_z` uses, or moments of the enumerated Boltzmann
    distribution (:func:`enumerate_thermo`). The route is :func:`ising_exact_method`.

    Args:
        system: an :class:`Ising` (or any spin system small enough to enumerate).
        beta: inverse temperature.

    Returns:
        ``{"log_z", "energy", "entropy", "heat_capacity"}`` as floats, or None when no exact
        route applies.
    """
    method = ising_exact_method(system, beta)
    beta = float(beta)
    if method is None:
        return None
    if method == "enumeration":
        out = enumerate_thermo(system, beta)
        return {k: out[k] for k in ("log_z", "energy", "entropy", "heat_capacity")}
    L, jh, jv = system.L, system.Jh, system.Jv
    if method == "kaufman":
        zero_h, zero_v = beta * jh == 0, beta * jv == 0

        def f(b):
            return _kaufman_jit(L, L, b * jh, b * jv, zero_h, zero_v)

    else:
        periodic, h = system.boundary == "periodic", system.h

        def f(b):
            return _transfer_log_z_any(jnp, L, L, periodic, b * jh, b * jv, b * h)

    return _thermo_from_derivatives(f, beta)


def enumerate_thermo(system: AbstractSpinSystem, beta: float) -> dict[str, float]:
    r"""Exact thermodynamics of any spin system by enumerating its 2^N states (float64).

    With p(s) = e^{−βE(s)} / Z and the magnetisation per spin m(s) = Σ_i s_i / N:

        log_z = ln Z,  energy = ⟨E⟩,  entropy = ln Z + β⟨E⟩,  heat_capacity = β² (⟨E²⟩ − ⟨E⟩²),
        abs_magnetisation = ⟨|m|⟩,  susceptibility = N β (⟨m²⟩ − ⟨|m|⟩²).

    The susceptibility uses |m| (the usual finite-lattice convention at h = 0, where ⟨m⟩ = 0
    by symmetry); it is not the zero-field linear response N β ⟨m²⟩.

    Args:
        system: any spin system (Ising, SK, EA, …) with N ≤ ``MAX_ENUMERATE`` spins.
        beta: inverse temperature.

    Returns:
        A dict of floats with the six keys above (energy, entropy and heat capacity are totals).

    Raises:
        ValueError: if N > ``MAX_ENUMERATE``.
    """
    n = system.n_spins
    if n > MAX_ENUMERATE:
        raise ValueError(f"enumerating 2^{n} states: N ≤ {MAX_ENUMERATE} only")
    beta = _check_finite("beta", beta)
    energies = enumerate_energies(system)
    mags = np.mean(all_states(n), axis=1)  # same state order as enumerate_energies
    a = -beta * energies
    top = a.max()
    p = np.exp(a - top)
    z = p.sum()
    p /= z
    log_z = float(top + math.log(z))
    mean_e = float(p @ energies)
    var_e = float(p @ (energies - mean_e) ** 2)
    abs_m = float(p @ np.abs(mags))
    m2 = float(p @ mags**2)
    return dict(
        log_z=log_z,
        energy=mean_e,
        entropy=log_z + beta * mean_e,
        heat_capacity=beta**2 * var_e,
        abs_magnetisation=abs_m,
        susceptibility=n * beta * (m2 - abs_m**2),
    )


__all__ = [
    "KAUFMAN_K_RANGE",
    "MAX_ENUMERATE",
    "MAX_TRANSFER_WIDTH",
    "all_states",
    "enumerate_energies",
    "enumerate_log_z",
    "enumerate_thermo",
    "ising_exact_log_z",
    "ising_exact_method",
    "ising_exact_thermo",
    "kaufman_log_z",
    "kaufman_log_z_mp",
    "transfer_matrix_log_z",
]
