r"""Lattice Monte Carlo kernels for spin systems: State/Info, three sweeps, dispatch.

Kernels (pure functions of a batch of chains, vectorised over chains, returning the new
:class:`SpinState` and a :class:`SpinInfo`; the caller owns the ``lax.scan``):

* :func:`checkerboard_step` — Metropolis on the :class:`~boltzgen.systems.Ising` lattice, one
  colour class of sites at a time (two classes, the checkerboard, on bipartite lattices; a greedy
  colouring with ≤ 4 classes for odd L on the torus);
* :func:`swendsen_wang_step` — Swendsen–Wang cluster update for the ferromagnetic Ising model
  at h = 0, with connected components found by min-label propagation plus pointer jumping;
* :func:`single_spin_step` — sequential single-spin Metropolis for any
  :class:`~boltzgen.systems.PairwiseSpins` (SK, Edwards–Anderson): one sweep = N site updates.

States are ±1 arrays (float32 by default) of shape ``(n_chains, L, L)`` or ``(n_chains, N)``.
β is an array argument (a scalar or one value per chain), never a static one, so a temperature
sweep does not recompile. All kernels are hand-written: no JAX library provides lattice spin
kernels (blackjax targets continuous spaces).

:func:`spin_step` dispatches by kernel name; ``kernel="auto"`` picks Swendsen–Wang near the
critical point (:func:`critical_beta`, :data:`CLUSTER_WINDOW`, :data:`CLUSTER_MIN_L`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jaxtyping import Array, Float

from boltzgen.mcmc._checks import check_int
from boltzgen.systems import AbstractSpinSystem, Ising, PairwiseSpins

#: Kernel names accepted by :func:`spin_step` and the entry points.
SPIN_KERNELS = ("auto", "checkerboard", "swendsen_wang", "single_spin")

#: β / β_c window in which ``kernel="auto"`` uses Swendsen–Wang (ferromagnetic Ising, h = 0).
CLUSTER_WINDOW = (0.75, 1.5)

#: Smallest L for which ``kernel="auto"`` uses Swendsen–Wang at all. Measured on 2 CPU cores at
#: L = 16, β_c: a Swendsen–Wang sweep (label propagation) cost ~10× a checkerboard sweep while
#: τ_int(E) was only ~2× smaller, so checkerboard TI was ~8× more efficient; Metropolis τ grows
#: as L^2.17 and SW's as ~L^0.35, so SW wins only on larger lattices (crossover not measured).
CLUSTER_MIN_L = 32

#: Acceptance rules of the local kernels.
RULES = ("metropolis", "heat_bath")


# --- state, info, initialisation ---------------------------------------------------------------


class SpinState(NamedTuple):
    """State of a batch of spin chains.

    Attributes:
        spins: ±1 configurations, shape ``(n_chains, *event_shape)``.
        energy: E(s) of every chain, shape ``(n_chains,)``, same dtype as ``spins``.
        step: number of sweeps taken (scalar ``int32``).
    """

    spins: Array
    energy: Array
    step: Array


class SpinInfo(NamedTuple):
    """Diagnostics of one sweep.

    Attributes:
        energy: E(s) after the sweep, ``(n_chains,)``.
        magnetisation: m = Σ_i s_i / N after the sweep, ``(n_chains,)``.
        flip_fraction: fraction of all spins of all chains flipped in the sweep (scalar; the
            acceptance rate for Metropolis).
        n_iterations: label-propagation iterations of Swendsen–Wang (scalar ``int32``; 0 for
            Metropolis).
    """

    energy: Array
    magnetisation: Array
    flip_fraction: Array
    n_iterations: Array


def _batched_energy(system: AbstractSpinSystem, spins: Array) -> Array:
    return jax.vmap(system.energy)(spins)


def _check_spins(system: AbstractSpinSystem, spins) -> None:
    ev = tuple(system.event_shape)
    if spins.ndim != len(ev) + 1 or tuple(spins.shape[1:]) != ev:
        raise ValueError(
            f"spins must have shape (n_chains, {', '.join(map(str, ev))}), got {tuple(spins.shape)}"
        )


def spin_init(system: AbstractSpinSystem, spins: Float[Array, "n_chains ..."]) -> SpinState:
    """The state of chains started at ``spins`` (energies evaluated once, step counter 0).

    Args:
        system: an :class:`~boltzgen.systems.Ising` or :class:`~boltzgen.systems.PairwiseSpins`.
        spins: ±1 configurations, shape ``(n_chains, *system.event_shape)`` (float dtype).

    Raises:
        ValueError: if ``spins`` has the wrong shape.
    """
    spins = jnp.asarray(spins)
    if not jnp.issubdtype(spins.dtype, jnp.floating):
        spins = spins.astype(jnp.float32)
    _check_spins(system, spins)
    return SpinState(spins, _batched_energy(system, spins), jnp.zeros((), jnp.int32))


def random_spins(
    system: AbstractSpinSystem, n_chains: int, *, key: Array, dtype=jnp.float32
) -> Array:
    """``n_chains`` uniform ±1 configurations: exact samples at β = 0, shape (n, *event)."""
    n_chains = check_int("n_chains", n_chains)
    bits = jax.random.bernoulli(key, 0.5, (n_chains, *system.event_shape))
    return jnp.where(bits, 1.0, -1.0).astype(dtype)


def _beta_like(beta, spins: Array) -> Array:
    """β broadcast to one value per chain, shaped ``(n, 1, ..., 1)`` against ``spins``."""
    n = spins.shape[0]
    b = jnp.broadcast_to(jnp.asarray(beta, spins.dtype), (n,))
    return b.reshape((n,) + (1,) * (spins.ndim - 1))


def _finish(system, state: SpinState, spins: Array, n_flipped, n_iter) -> tuple:
    energy = _batched_energy(system, spins)
    m = jnp.mean(spins.reshape(spins.shape[0], -1), axis=1)
    frac = (n_flipped / spins.size).astype(spins.dtype)
    new = SpinState(spins, energy, state.step + jnp.ones((), jnp.int32))
    return new, SpinInfo(energy, m, frac, jnp.asarray(n_iter, jnp.int32))


# --- Ising lattice: neighbour sums, colouring, checkerboard Metropolis ---------------------------


def _require_ising(system, who: str) -> Ising:
    if not isinstance(system, Ising):
        raise ValueError(f"{who} needs an Ising lattice system, got {type(system).__name__}")
    return system


def _shift(s: Array, offset: int, axis: int, periodic: bool) -> Array:
    """t[..., i, ...] = s[..., i + offset, ...] along ``axis`` (zero outside an open lattice)."""
    if periodic:
        return jnp.roll(s, -offset, axis=axis)
    n = s.shape[axis]
    zero_shape = list(s.shape)
    zero_shape[axis] = 1
    zeros = jnp.zeros(zero_shape, s.dtype)
    if offset == 1:
        return jnp.concatenate([jax.lax.slice_in_dim(s, 1, n, axis=axis), zeros], axis=axis)
    return jnp.concatenate([zeros, jax.lax.slice_in_dim(s, 0, n - 1, axis=axis)], axis=axis)


def _local_field(system: Ising, s: Array) -> Array:
    r"""f_i = J_h (s_left + s_right) + J_v (s_up + s_down) + h, so that ΔE_i = 2 s_i f_i."""
    p = system.boundary == "periodic"
    horiz = _shift(s, 1, -1, p) + _shift(s, -1, -1, p)
    vert = _shift(s, 1, -2, p) + _shift(s, -1, -2, p)
    return system.Jh * horiz + system.Jv * vert + system.h


def lattice_colouring(L: int, boundary: str) -> np.ndarray:
    """A proper colouring of the L×L lattice: integer colours, no two neighbours alike.

    Bipartite lattices (open boundaries, or even L on the torus) get the checkerboard
    (r + c) mod 2. The torus with odd L is not bipartite (rows and columns are odd cycles); it
    gets a greedy colouring in raster order (at most 4 colours: 3 for L ≥ 3).
    """
    r, c = np.indices((L, L))
    if boundary == "open" or L % 2 == 0:
        return (r + c) % 2
    colour = -np.ones((L, L), np.int64)
    for i in range(L):
        for j in range(L):
            used = {
                colour[(i + di) % L, (j + dj) % L] for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1))
            }
            colour[i, j] = min(k for k in range(5) if k not in used)
    return colour


def _flip_probability_test(u, beta_de, rule: str):
    """True where a proposed flip with β ΔE = ``beta_de`` is accepted, given a uniform ``u``.

    Metropolis: u < min(1, e^{−βΔE}); heat bath (Glauber): u < 1/(1 + e^{βΔE}).
    """
    if rule == "metropolis":
        return u < jnp.exp(-beta_de)
    if rule == "heat_bath":
        return u < jax.nn.sigmoid(-beta_de)
    raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")


def checkerboard_step(
    system: Ising, state: SpinState, beta, *, key: Array, rule: str = "metropolis"
) -> tuple[SpinState, SpinInfo]:
    r"""One Metropolis sweep of the Ising lattice, one colour class at a time.

    For the sites of one colour class (no two neighbours; the checkerboard on a bipartite
    lattice), all at once and in every chain, with the local field

        f_i = J_h (s_{r,c-1} + s_{r,c+1}) + J_v (s_{r-1,c} + s_{r+1,c}) + h

    (neighbours through ``jnp.roll`` on the torus, zero outside an open lattice), flip s_i with
    probability min(1, exp(−β ΔE_i)), ΔE_i = 2 s_i f_i (``rule="metropolis"``, default) or
    1/(1 + exp(β ΔE_i)) (``rule="heat_bath"``, which also mixes at β → 0, where Metropolis flips
    every spin and only alternates s ↔ −s). Sites of one class do not interact, so
    the simultaneous update is a product of single-site updates and leaves
    exp(−βE) invariant; a sweep visits every class once (2 on a bipartite lattice, up to 4 on the
    odd-L torus, see :func:`lattice_colouring`). One uniform number per site per sweep.
    Works for any J_h, J_v (either sign) and h.

    Args:
        system: an :class:`~boltzgen.systems.Ising` lattice.
        state: the chains, spins of shape ``(n_chains, L, L)``.
        beta: inverse temperature, a scalar or one value per chain (an array argument: new
            values do not retrace).
        key: PRNG key.
        rule: ``"metropolis"`` or ``"heat_bath"`` (static).

    Returns:
        The new state and a :class:`SpinInfo` (``flip_fraction`` = acceptance rate).
    """
    system = _require_ising(system, "checkerboard_step")
    s = state.spins
    b = _beta_like(beta, s)
    colours = lattice_colouring(system.L, system.boundary)
    u = jax.random.uniform(key, s.shape, s.dtype)
    n_flipped = jnp.zeros((), jnp.int32)
    for colour in range(int(colours.max()) + 1):
        mask = jnp.asarray(colours == colour)[None]
        d_e = 2.0 * s * _local_field(system, s)
        flip = mask & _flip_probability_test(u, b * d_e, rule)
        s = jnp.where(flip, -s, s)
        n_flipped = n_flipped + jnp.sum(flip, dtype=jnp.int32)
    return _finish(system, state, s, n_flipped, 0)


# --- Swendsen–Wang -----------------------------------------------------------------------------


def _check_cluster_system(system) -> Ising:
    system = _require_ising(system, "swendsen_wang_step")
    if system.h != 0.0:
        raise ValueError(
            f"Swendsen–Wang needs zero field, got h = {system.h}; use checkerboard_step"
        )
    if system.Jh < 0 or system.Jv < 0:
        raise ValueError(
            "Swendsen–Wang needs ferromagnetic couplings J >= 0, "
            f"got Jh = {system.Jh}, Jv = {system.Jv}; use checkerboard_step"
        )
    return system


def swendsen_wang_step(
    system: Ising, state: SpinState, beta, *, key: Array
) -> tuple[SpinState, SpinInfo]:
    r"""One Swendsen–Wang cluster update of every chain (ferromagnetic Ising, h = 0).

    Fortuin–Kasteleyn bonds: each nearest-neighbour bond ⟨ij⟩ (each of the 2L² torus bonds
    separately, so the doubled bonds of L = 2 are handled) is activated with probability

        p = 1 − exp(−2 β J)   (J = J_h or J_v)   if s_i = s_j, else 0.

    Connected components of the active bonds are found by iterating, inside a
    ``lax.while_loop`` until no label changes in any chain,

        ℓ_i ← min(ℓ_i, ℓ_j over active bonds ⟨ij⟩),  then  ℓ_i ← ℓ_{ℓ_i}  (pointer jumping),

    from ℓ_i = i (row-major site index); ℓ_i is always a site of i's cluster and ≤ i, so at the
    fixed point every cluster carries its smallest index. Each cluster then flips with
    probability ½ using one random bit per root label. The update leaves exp(−βE) invariant.

    Args:
        system: a ferromagnetic (J_h, J_v ≥ 0) :class:`~boltzgen.systems.Ising` with h = 0.
        state: the chains, spins of shape ``(n_chains, L, L)``.
        beta: a scalar or one value per chain (array argument).
        key: PRNG key.

    Returns:
        The new state and a :class:`SpinInfo` (``flip_fraction``: fraction of spins flipped;
        ``n_iterations``: label-propagation iterations).

    Raises:
        ValueError: for h ≠ 0 or a negative coupling.
    """
    system = _check_cluster_system(system)
    s = state.spins
    n, L = s.shape[0], system.L
    b = _beta_like(beta, s)
    periodic = system.boundary == "periodic"
    p_h = -jnp.expm1(-2.0 * b * system.Jh)
    p_v = -jnp.expm1(-2.0 * b * system.Jv)
    # One draw for bonds and flip bits (each random-number call site costs compile time).
    u = jax.random.uniform(key, (3, *s.shape), s.dtype)
    # bond_h[r, c] joins (r, c)–(r, c+1); bond_v[r, c] joins (r, c)–(r+1, c) (mod L).
    bond_h = (s == jnp.roll(s, -1, axis=-1)) & (u[0] < p_h)
    bond_v = (s == jnp.roll(s, -1, axis=-2)) & (u[1] < p_v)
    if not periodic:
        idx = jnp.arange(L)
        bond_h = bond_h & (idx < L - 1)[None, None, :]
        bond_v = bond_v & (idx < L - 1)[None, :, None]
    # Bonds seen from the other end: (r, c)–(r, c−1) and (r, c)–(r−1, c).
    bond_hl = jnp.roll(bond_h, 1, axis=-1)
    bond_vu = jnp.roll(bond_v, 1, axis=-2)
    n_sites = L * L
    labels0 = jnp.broadcast_to(jnp.arange(n_sites, dtype=jnp.int32).reshape(1, L, L), s.shape)

    def propagate(labels):
        new = labels
        new = jnp.minimum(new, jnp.where(bond_h, jnp.roll(labels, -1, axis=-1), labels))
        new = jnp.minimum(new, jnp.where(bond_hl, jnp.roll(labels, 1, axis=-1), labels))
        new = jnp.minimum(new, jnp.where(bond_v, jnp.roll(labels, -1, axis=-2), labels))
        new = jnp.minimum(new, jnp.where(bond_vu, jnp.roll(labels, 1, axis=-2), labels))
        flat = new.reshape(n, n_sites)
        flat = jnp.take_along_axis(flat, flat, axis=1)
        return flat.reshape(s.shape)

    def cond(carry):
        return carry[1]

    def body(carry):
        labels, _, it = carry
        new = propagate(labels)
        return new, jnp.any(new != labels), it + jnp.ones((), jnp.int32)

    labels, _, n_iter = jax.lax.while_loop(
        cond, body, (labels0, jnp.ones((), bool), jnp.zeros((), jnp.int32))
    )
    bits = u[2].reshape(n, n_sites) < 0.5  # one fair bit per site, used at root labels
    flip = jnp.take_along_axis(bits, labels.reshape(n, n_sites), axis=1).reshape(s.shape)
    s = jnp.where(flip, -s, s)
    return _finish(system, state, s, jnp.sum(flip, dtype=jnp.int32), n_iter)


# --- single-spin Metropolis for pairwise systems -----------------------------------------------


def single_spin_step(
    system: PairwiseSpins, state: SpinState, beta, *, key: Array, rule: str = "metropolis"
) -> tuple[SpinState, SpinInfo]:
    r"""One sequential single-spin Metropolis sweep of a pairwise spin system.

    For i = 0, …, N−1 in order (a ``lax.scan`` of N steps, each acting on site i of every
    chain at once), with the local field f_i = Σ_j J_ij s_j + h_i and ΔE_i = 2 s_i f_i, flip
    s_i with probability min(1, exp(−β ΔE_i)) (``rule="heat_bath"``: 1/(1 + exp(β ΔE_i))).
    Each site update leaves exp(−βE) invariant, so
    the sweep does too. Cost O(N) per site update, O(N²) per sweep and chain.

    Args:
        system: a :class:`~boltzgen.systems.PairwiseSpins` (SK, Edwards–Anderson, custom).
        state: the chains, spins of shape ``(n_chains, N)``.
        beta: a scalar or one value per chain (array argument).
        key: PRNG key.
        rule: ``"metropolis"`` or ``"heat_bath"`` (static).

    Returns:
        The new state and a :class:`SpinInfo` (``flip_fraction`` = acceptance rate).
    """
    if not isinstance(system, PairwiseSpins):
        raise ValueError(
            f"single_spin_step needs a PairwiseSpins system, got {type(system).__name__}"
        )
    s = state.spins
    dtype = s.dtype
    J = jnp.asarray(system.couplings, dtype)
    h = jnp.asarray(system.fields, dtype)
    b = _beta_like(beta, s)[:, 0]
    u = jax.random.uniform(key, s.shape, dtype)

    def body(s, i):
        f = s @ J[i] + h[i]
        si = s[:, i]
        flip = _flip_probability_test(u[:, i], b * 2.0 * si * f, rule)
        s = s.at[:, i].set(jnp.where(flip, -si, si))
        return s, jnp.sum(flip, dtype=jnp.int32)

    s, flips = jax.lax.scan(body, s, jnp.arange(s.shape[1], dtype=jnp.int32))
    return _finish(system, state, s, jnp.sum(flips, dtype=jnp.int32), 0)


# --- dispatch ----------------------------------------------------------------------------------


def _check_kernel(system, kernel: str) -> str:
    """Resolve a kernel name for ``system`` (``"auto"`` → the local Metropolis kernel)."""
    if kernel not in SPIN_KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; valid: {', '.join(SPIN_KERNELS)}")
    if not isinstance(system, Ising | PairwiseSpins):
        raise ValueError(
            f"spin kernels need an Ising or PairwiseSpins system, got {type(system).__name__}"
        )
    if kernel == "auto":
        return "checkerboard" if isinstance(system, Ising) else "single_spin"
    if kernel in ("checkerboard", "swendsen_wang"):
        _require_ising(system, f"kernel={kernel!r}")
        if kernel == "swendsen_wang":
            _check_cluster_system(system)
    elif not isinstance(system, PairwiseSpins):
        raise ValueError(
            f"kernel='single_spin' needs a PairwiseSpins system, got {type(system).__name__}; "
            "use 'checkerboard' for Ising"
        )
    return kernel


_STEPS = {
    "checkerboard": checkerboard_step,
    "swendsen_wang": swendsen_wang_step,
    "single_spin": single_spin_step,
}


def spin_step(
    system: AbstractSpinSystem,
    state: SpinState,
    beta,
    *,
    key: Array,
    kernel: str = "auto",
    rule: str = "metropolis",
) -> tuple[SpinState, SpinInfo]:
    """One sweep with the named kernel (``"auto"``: checkerboard for Ising, else single-spin).

    ``rule`` (``"metropolis"`` or ``"heat_bath"``) applies to the local kernels.
    """
    return _sweep(system, _check_kernel(system, kernel), state, beta, key, _check_rule(rule))


def _check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")
    return rule


def critical_beta(system: AbstractSpinSystem) -> float | None:
    r"""β_c of a ferromagnetic Ising lattice at h = 0, else None.

    Onsager's condition sinh(2β_c J_h) sinh(2β_c J_v) = 1 (β_c = BETA_C / J when J_h = J_v = J);
    the bulk value, also used for open boundaries and small L (where it only marks the region
    of fastest change of ⟨E⟩).
    """
    if not isinstance(system, Ising) or system.h != 0.0:
        return None
    if not (system.Jh > 0 and system.Jv > 0):
        return None

    if system.Jh == system.Jv:
        return 0.5 * math.log1p(math.sqrt(2.0)) / system.Jh

    def f(b):
        return math.log(math.sinh(2 * b * system.Jh)) + math.log(math.sinh(2 * b * system.Jv))

    hi = 10.0 / min(system.Jh, system.Jv)
    return float(scipy.optimize.brentq(f, 1e-12, hi, xtol=1e-15, rtol=1e-15, maxiter=500))


def _auto_uses_cluster(system, beta: float) -> bool:
    bc = critical_beta(system)
    if bc is None or system.L < CLUSTER_MIN_L:
        return False
    return CLUSTER_WINDOW[0] * bc <= beta <= CLUSTER_WINDOW[1] * bc


# --- one sweep by (resolved) kernel name, and the system check of the entry points -------------


def _sweep(
    system, kernel: str, state: SpinState, beta, key, rule: str = "metropolis"
) -> tuple[SpinState, SpinInfo]:
    """One sweep; ``kernel="cluster_auto"`` picks Swendsen–Wang per step by a scalar β."""
    if kernel == "cluster_auto":
        bc = critical_beta(system)
        lo, hi = CLUSTER_WINDOW[0] * bc, CLUSTER_WINDOW[1] * bc
        b = jnp.asarray(beta)
        use = (b >= lo) & (b <= hi)
        return jax.lax.cond(
            use,
            lambda st: swendsen_wang_step(system, st, beta, key=key),
            lambda st: checkerboard_step(system, st, beta, key=key, rule=rule),
            state,
        )
    if kernel == "swendsen_wang":
        return swendsen_wang_step(system, state, beta, key=key)
    return _STEPS[kernel](system, state, beta, key=key, rule=rule)


def _check_system(system) -> AbstractSpinSystem:
    """``system`` if it is an Ising or PairwiseSpins system (the spin entry points need one)."""
    if not isinstance(system, Ising | PairwiseSpins):
        raise ValueError(
            f"system must be an Ising or PairwiseSpins system, got {type(system).__name__}"
        )
    return system
