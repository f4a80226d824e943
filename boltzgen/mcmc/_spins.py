r"""Monte Carlo baselines for spin systems: lattice kernels, observables and free energies.

Kernels (pure, vectorised over chains, STYLE.md §1; the caller owns the ``lax.scan``):

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

Entry points: :func:`sample_spins` (chains and traces), :func:`spin_observables` (⟨E⟩, ⟨|m|⟩,
χ, C with autocorrelation-aware errors), :func:`thermodynamic_integration` and
:func:`beta_annealing` (ln Z, returning a :class:`SpinFreeEnergy`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jaxtyping import Array, Float
from tqdm.auto import tqdm

from boltzgen.estimators import importance_stderr, kish_ess, logmeanexp
from boltzgen.mcmc._nmcmc import integrated_autocorrelation_time
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

_STAT_NAMES = ("energy", "energy_sq", "magnetisation", "abs_magnetisation", "magnetisation_sq")


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
    n_chains = _check_int("n_chains", n_chains)
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


# --- running many chains: blocks of sweeps, compiled once --------------------------------------

_COMPILED: dict = {}


def _compiled(fn, statics: dict, *args):
    """``jax.jit(partial(fn, **statics))`` compiled ahead of time for ``args``, cached.

    The cache key holds the statics, the pytree structure (an Ising system's parameters are
    static fields of it) and the shapes/dtypes of the array leaves: calling again with other
    array values (β, keys, couplings of another instance of the same size) reuses the
    executable. Returns ``(compiled, seconds spent compiling now)``.
    """
    leaves, treedef = jax.tree.flatten(args)
    sig = (
        fn.__name__,
        tuple(sorted(statics.items())),
        treedef,
        tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x)))) for x in leaves),
        bool(jax.config.jax_enable_x64),
    )
    if sig in _COMPILED:
        return _COMPILED[sig], 0.0
    t0 = time.perf_counter()
    comp = jax.jit(partial(fn, **statics)).lower(*args).compile()
    _COMPILED[sig] = comp
    return comp, time.perf_counter() - t0


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


def _run_blocks(system, state, beta, keys, *, kernel: str, block: int, acc_dtype: str, rule: str):
    """Scan over ``keys``, one per block of ``block`` sweeps.

    Returns the state and, per block, the means of E, E², m, |m|, m² per chain (shape
    ``(n_blocks, n_chains, 5)``) and the mean flip fraction.
    """
    acc_dt = jnp.dtype(acc_dtype)

    def block_body(state, key):
        def sweep_body(carry, k):
            state, acc, frac = carry
            state, info = _sweep(system, kernel, state, beta, k, rule)
            e = info.energy.astype(acc_dt)
            m = info.magnetisation.astype(acc_dt)
            acc = acc + jnp.stack([e, e * e, m, jnp.abs(m), m * m], axis=-1)
            return (state, acc, frac + info.flip_fraction.astype(acc_dt)), None

        n = state.spins.shape[0]
        init = (state, jnp.zeros((n, 5), acc_dt), jnp.zeros((), acc_dt))
        (state, acc, frac), _ = jax.lax.scan(sweep_body, init, jax.random.split(key, block))
        return state, (acc / block, frac / block)

    return jax.lax.scan(block_body, state, keys)


def _chunk_sizes(n_blocks: int, n_chunks: int) -> list[int]:
    size = -(-n_blocks // n_chunks)
    out = [size] * (n_blocks // size)
    if n_blocks % size:
        out.append(n_blocks % size)
    return out


def _simulate(
    system, spins, beta, *, key, kernel, block, n_burn_blocks, n_blocks, progress, label, rule
):
    """Run ``n_burn_blocks + n_blocks`` blocks of ``block`` sweeps in chunks.

    A progress bar advances between chunks; accumulators are float64. Returns the final state,
    the stats of the measured blocks ``(n_blocks, n_chains, 5)`` (float64 NumPy), the flip
    fraction per block, the wall time and the compile time.
    """
    total = n_burn_blocks + n_blocks
    n_chunks = 20 if progress else 1
    sizes = _chunk_sizes(total, n_chunks)
    with jax.enable_x64(True):
        k_run = jax.random.split(key, total)
        beta_d = jnp.asarray(beta, spins.dtype)
        t0 = time.perf_counter()
        init_c, compile_time = _compiled(_init_fn, {}, system, spins)
        state_shape = jax.eval_shape(_init_fn, system, spins)
        chunks = {}
        for sz in sorted(set(sizes)):
            chunks[sz], ct = _compiled(
                _run_blocks,
                dict(kernel=kernel, block=block, acc_dtype="float64", rule=rule),
                system,
                state_shape,
                beta_d,
                k_run[:sz],
            )
            compile_time += ct
        t1 = time.perf_counter()
        state = jax.block_until_ready(init_c(system, spins))
        outs = []
        bar = tqdm(
            total=total * block,
            desc=progress if isinstance(progress, str) else label,
            disable=not progress,
            unit="sweep",
            dynamic_ncols=True,
        )
        start = 0
        for sz in sizes:
            state, out = chunks[sz](system, state, beta_d, k_run[start : start + sz])
            start += sz
            if progress:
                jax.block_until_ready(state)
                bar.update(sz * block)
            outs.append(out)
        bar.close()
        state = jax.block_until_ready(state)
        wall = time.perf_counter() - t1
        outs = jax.device_get(outs)
    stats = np.concatenate([np.asarray(o[0], np.float64) for o in outs])[n_burn_blocks:]
    frac = np.concatenate([np.asarray(o[1], np.float64) for o in outs])[n_burn_blocks:]
    del t0
    return state, stats, frac, wall, compile_time


def _init_fn(system, spins):
    return spin_init(system, spins)


# --- checks ------------------------------------------------------------------------------------


def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_beta(beta, *, positive: bool = False) -> float:
    ok = not isinstance(beta, bool) and isinstance(beta, int | float | np.floating | np.integer)
    if ok:
        b = float(beta)
        ok = math.isfinite(b) and (b > 0 if positive else b >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"beta must be a finite number {bound}, got {beta!r}")
    return b


def _check_system(system) -> AbstractSpinSystem:
    if not isinstance(system, Ising | PairwiseSpins):
        raise ValueError(
            f"system must be an Ising or PairwiseSpins system, got {type(system).__name__}"
        )
    return system


# --- sampling and observables ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SpinChains:
    """Output of :func:`sample_spins`: final states and per-sweep traces after burn-in.

    Attributes:
        spins: final configurations, ``(n_chains, *event_shape)``.
        energy: E after each measured sweep, ``(n_sweeps, n_chains)`` float64.
        magnetisation: m = Σ s_i / N after each measured sweep, ``(n_sweeps, n_chains)``.
        flip_fraction: fraction of spins flipped in each measured sweep, ``(n_sweeps,)``.
        beta: inverse temperature.
        kernel: kernel used.
        n_sweeps: measured sweeps per chain.
        burn_in: discarded sweeps per chain.
        wall_time: seconds (compilation excluded).
        compile_time: seconds spent compiling (0 when a cached executable was reused).
    """

    spins: np.ndarray
    energy: np.ndarray
    magnetisation: np.ndarray
    flip_fraction: np.ndarray
    beta: float
    kernel: str
    n_sweeps: int
    burn_in: int
    wall_time: float
    compile_time: float

    @property
    def n_chains(self) -> int:
        """Number of chains."""
        return int(self.energy.shape[1])


def sample_spins(
    system: AbstractSpinSystem,
    beta: float,
    *,
    key: Array,
    n_chains: int = 64,
    n_sweeps: int = 1000,
    burn_in: int | None = None,
    kernel: str = "auto",
    rule: str = "metropolis",
    progress: bool | str = False,
) -> SpinChains:
    """Run ``n_chains`` chains from uniform random spins and record E and m after every sweep.

    Args:
        system: an Ising or PairwiseSpins system.
        beta: inverse temperature ≥ 0.
        key: PRNG key.
        n_chains: independent chains.
        n_sweeps: recorded sweeps per chain (after burn-in).
        burn_in: discarded sweeps per chain (default ``n_sweeps // 4``).
        kernel: ``"auto"`` (Swendsen–Wang for a ferromagnetic h = 0 Ising lattice with L ≥
            ``CLUSTER_MIN_L`` and β in ``CLUSTER_WINDOW``·β_c, checkerboard otherwise;
            single-spin for PairwiseSpins),
            ``"checkerboard"``, ``"swendsen_wang"`` or ``"single_spin"``.
        rule: ``"metropolis"`` (default) or ``"heat_bath"`` for the local kernels.
        progress: progress bar (a string labels it).

    Returns:
        :class:`SpinChains`; feed it to :func:`spin_observables`.
    """
    rule = _check_rule(rule)
    system = _check_system(system)
    beta = _check_beta(beta)
    n_chains = _check_int("n_chains", n_chains)
    n_sweeps = _check_int("n_sweeps", n_sweeps)
    burn_in = n_sweeps // 4 if burn_in is None else _check_int("burn_in", burn_in, 0)
    if kernel == "auto" and _auto_uses_cluster(system, beta):
        kernel = "swendsen_wang"
    kernel = _check_kernel(system, kernel)
    k0, k1 = jax.random.split(key)
    spins = random_spins(system, n_chains, key=k0)
    state, stats, frac, wall, comp = _simulate(
        system,
        spins,
        beta,
        key=k1,
        kernel=kernel,
        block=1,
        n_burn_blocks=burn_in,
        n_blocks=n_sweeps,
        progress=progress,
        label=kernel,
        rule=rule,
    )
    return SpinChains(
        spins=np.asarray(state.spins),
        energy=stats[..., 0],
        magnetisation=stats[..., 2],
        flip_fraction=frac,
        beta=beta,
        kernel=kernel,
        n_sweeps=n_sweeps,
        burn_in=burn_in,
        wall_time=wall,
        compile_time=comp,
    )


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
    burn_in: int = 0,
    n_groups: int = 16,
) -> SpinObservables:
    r"""⟨E⟩, ⟨|m|⟩, χ and C with standard errors that account for autocorrelation.

    With E the energy and m = Σ_i s_i / N of each sample:

        χ = N β (⟨m²⟩ − ⟨|m|⟩²),    C = β² (⟨E²⟩ − ⟨E⟩²)

    (whole-system values; per site: ⟨E⟩/N, C/N, and χ as is). Errors of ⟨E⟩ and ⟨|m|⟩ are
    √(Var τ_int / n) with τ_int from :func:`~boltzgen.mcmc.integrated_autocorrelation_time`
    (pooled over chains); errors of χ and C are jackknife errors over ``n_groups`` groups of
    whole chains, which are independent, so autocorrelation within chains is accounted for. For
    one chain the groups are consecutive blocks of it (valid when blocks ≫ τ_int).

    Args:
        system: the spin system (for N and, for raw samples, the energy).
        data: a :class:`SpinChains`, or raw configurations: ``(T, n_chains, *event_shape)``
            chains or ``(M, *event_shape)`` independent samples.
        beta: the inverse temperature of the samples.
        burn_in: leading sweeps to drop (chains only).
        n_groups: jackknife groups (≤ number of chains).

    Returns:
        A :class:`SpinObservables`.
    """
    system = _check_system(system)
    beta = _check_beta(beta)
    n_groups = _check_int("n_groups", n_groups, 2)
    burn_in = _check_int("burn_in", burn_in, 0)
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
    e = np.asarray(e, np.float64)[0 if iid else burn_in :]
    m = np.asarray(m, np.float64)[0 if iid else burn_in :]
    if e.shape[0] < 2:
        raise ValueError(f"need at least 2 samples per chain after burn_in = {burn_in}")
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


# --- free energies -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SpinFreeEnergy:
    r"""A Monte Carlo ln Z of a spin system with its errors and cost.

    Attributes:
        method: ``"thermodynamic_integration"`` or ``"beta_annealing"``.
        log_z: ln Z(β).
        log_z_stderr: statistical standard error of ``log_z``.
        n_sweeps: total sweeps over all chains, burn-in included (one sweep = N single-spin
            updates, or one Swendsen–Wang update of all N spins).
        n_site_updates: ``n_sweeps`` · N.
        wall_time: seconds of Monte Carlo (after ``block_until_ready``, compilation excluded).
        compile_time: seconds spent compiling (0 when cached executables were reused).
        beta: the target β.
        n_spins: N.
        n_chains: chains per β node (TI) or in total (AIS).
        quadrature_error: TI only: discretisation-error estimate |I_fine − I_coarse| (0 for AIS,
            whose estimate has no discretisation bias).
        quadrature_error_noise: TI only: the statistical standard deviation of
            I_fine − I_coarse (a ``quadrature_error`` not well above it is unresolved noise).
        betas: TI: the β nodes (0 first); AIS: the annealing schedule β_0 = 0 < … < β_K.
        mean_energy: TI: ⟨E⟩ at each node (exactly 0 at β = 0); AIS: the unweighted mean of E
            over chains at each step (a diagnostic).
        mean_energy_stderr: TI: standard error of ⟨E⟩ at each node (with τ_int).
        energy_variance: TI: Var(E) at each node (C(β) = β² Var(E)).
        tau_energy: TI: integrated autocorrelation time of E at each node, in sweeps.
        quadrature_weights: TI: weights w_j of ∫_0^β ⟨E⟩ dβ' ≈ Σ_j w_j ⟨E⟩_j.
        kernels: TI: the kernel used at each node.
        log_weights: AIS: float64 log-weights w.
        ess: AIS: Kish effective sample size 1/Σ w̃².
        flip_fraction: mean fraction of spins flipped per sweep (per node, or per AIS step).
    """

    method: str
    log_z: float
    log_z_stderr: float
    n_sweeps: int
    n_site_updates: int
    wall_time: float
    compile_time: float
    beta: float
    n_spins: int
    n_chains: int
    quadrature_error: float = 0.0
    quadrature_error_noise: float = 0.0
    betas: np.ndarray | None = None
    mean_energy: np.ndarray | None = None
    mean_energy_stderr: np.ndarray | None = None
    energy_variance: np.ndarray | None = None
    tau_energy: np.ndarray | None = None
    quadrature_weights: np.ndarray | None = None
    kernels: tuple[str, ...] = ()
    log_weights: np.ndarray | None = None
    ess: float = math.nan
    flip_fraction: np.ndarray | None = None

    @property
    def beta_f(self) -> float:
        """βF = −ln Z."""
        return -self.log_z

    @property
    def beta_f_stderr(self) -> float:
        """Standard error of βF (that of ln Z)."""
        return self.log_z_stderr

    @property
    def log_z_error(self) -> float:
        """Total error bar √(stderr² + quadrature_error²) (statistical ⊕ discretisation)."""
        return math.hypot(self.log_z_stderr, self.quadrature_error)

    @property
    def relative_stderr(self) -> float:
        """log_z_stderr / |log_z|."""
        return self.log_z_stderr / abs(self.log_z) if self.log_z else math.inf

    @property
    def log_z_per_site(self) -> float:
        """Per-site ln Z / N."""
        return self.log_z / self.n_spins


def clenshaw_curtis(m: int, a: float = -1.0, b: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    r"""Clenshaw–Curtis rule with m + 1 nodes on [a, b], increasing.

    Nodes x_k = a + (b − a)(1 − cos(kπ/m))/2, k = 0..m (clustered towards both ends, the ends
    included); weights from the exact moments of the Chebyshev polynomials,
    Σ_k w_k T_j(t_k) = ∫_{-1}^{1} T_j = 2/(1 − j²) (j even, else 0), j = 0..m. The rule with
    m/2 intervals uses every second node, so the pair gives a nested error estimate.
    """
    m = _check_int("m", m, 1)
    t = -np.cos(np.pi * np.arange(m + 1) / m)
    j = np.arange(m + 1)
    T = np.cos(j[:, None] * np.arccos(np.clip(t, -1, 1))[None, :])
    mom = np.where(j % 2 == 0, 2.0 / (1.0 - np.where(j == 1, 0, j) ** 2), 0.0)
    w = np.linalg.solve(T, mom)
    return a + (b - a) * (t + 1) / 2, w * (b - a) / 2


def _ti_grid(beta: float, beta_c: float | None, n_betas: int):
    """Nodes (0 first), fine weights, coarse weights, for ∫_0^β split at β_c when β > β_c."""
    if beta_c is not None and beta > beta_c * (1 + 1e-9):
        half = max(2, n_betas // 2)
        half += half % 2
        intervals = [(0.0, beta_c, half), (beta_c, beta, half)]
    else:
        m = max(2, n_betas + n_betas % 2)
        intervals = [(0.0, beta, m)]
    nodes, fine, coarse = [], [], []
    for i, (a, b, m) in enumerate(intervals):
        x, w = clenshaw_curtis(m, a, b)
        _, wc = clenshaw_curtis(m // 2, a, b)
        wc_full = np.zeros(m + 1)
        wc_full[::2] = wc
        if i > 0:  # the shared end point: add its weights to the previous node
            fine[-1] += w[0]
            coarse[-1] += wc_full[0]
            x, w, wc_full = x[1:], w[1:], wc_full[1:]
        nodes += list(x)
        fine += list(w)
        coarse += list(wc_full)
    return np.array(nodes), np.array(fine), np.array(coarse)


def thermodynamic_integration(
    system: AbstractSpinSystem,
    beta: float,
    *,
    key: Array,
    n_betas: int = 32,
    n_chains: int = 64,
    n_sweeps: int = 1000,
    burn_in: int | None = None,
    kernel: str = "auto",
    max_blocks: int = 256,
    rule: str = "metropolis",
    progress: bool | str = False,
) -> SpinFreeEnergy:
    r"""Estimate ln Z(β) by thermodynamic integration over β from the uniform distribution.

    Since d ln Z/dβ = −⟨E⟩_β and Z(0) = 2^N (any field: ⟨E⟩_0 = 0 too),

        ln Z(β) = N ln 2 − ∫_0^β ⟨E⟩_{β'} dβ'.

    The integral uses a Clenshaw–Curtis rule (nodes clustered at both ends of an interval,
    :func:`clenshaw_curtis`); for a ferromagnetic Ising lattice at h = 0 with β > β_c
    (:func:`critical_beta`) it is split at β_c into [0, β_c] and [β_c, β], each with about
    ``n_betas / 2`` intervals, so nodes cluster on both sides of the critical point. At each
    node β_j > 0, ``n_chains`` chains from uniform spins do ``burn_in`` + ``n_sweeps`` sweeps;
    ⟨E⟩_j is the mean over the measured sweeps, with standard error s_j = √(Var τ_int / n)
    (τ_int of block means of E, see :func:`~boltzgen.mcmc.integrated_autocorrelation_time`).
    All nodes run at once as one batch of chains with one β each (one compilation).

    Errors, reported separately:

    * statistical: ``log_z_stderr`` = √(Σ_j w_j² s_j²) (nodes are independent);
    * discretisation: ``quadrature_error`` = |Σ_j (w_j − w_j^c) ⟨E⟩_j|, the difference from the
      nested coarser rule (half the intervals, every second node) — an estimate of the coarse
      rule's error, so conservative for the fine rule — with its own statistical noise
      ``quadrature_error_noise`` = √(Σ_j (w_j − w_j^c)² s_j²).

    Args:
        system: an Ising or PairwiseSpins system.
        beta: target β > 0.
        key: PRNG key.
        n_betas: number of simulated nodes (β > 0), rounded up to an even count per interval.
        n_chains: chains per node.
        n_sweeps: measured sweeps per chain.
        burn_in: discarded sweeps per chain (default ``n_sweeps // 4``); rounded up to whole
            blocks.
        kernel: ``"auto"`` (Swendsen–Wang at nodes with β_j/β_c in ``CLUSTER_WINDOW`` for a
            ferromagnetic h = 0 Ising lattice with L ≥ ``CLUSTER_MIN_L``, checkerboard
            Metropolis elsewhere; single-spin
            Metropolis for PairwiseSpins) or a kernel name for every node.
        max_blocks: the sweeps are recorded as at most ~this many block means per chain.
        rule: ``"metropolis"`` (default) or ``"heat_bath"`` for the local kernels.
        progress: progress bar (a string labels it).

    Returns:
        A :class:`SpinFreeEnergy` with ``method="thermodynamic_integration"``.

    Example:
        >>> import jax
        >>> from boltzgen.systems import Ising, BETA_C, enumerate_log_z
        >>> r = thermodynamic_integration(Ising(4), BETA_C, key=jax.random.key(0), n_sweeps=400)
        >>> abs(r.log_z - enumerate_log_z(Ising(4), BETA_C)) < 5 * r.log_z_error
        True
    """
    system = _check_system(system)
    beta = _check_beta(beta, positive=True)
    n_betas = _check_int("n_betas", n_betas, 1)
    n_chains = _check_int("n_chains", n_chains, 2)
    n_sweeps = _check_int("n_sweeps", n_sweeps)
    max_blocks = _check_int("max_blocks", max_blocks, 4)
    rule = _check_rule(rule)
    burn_in = n_sweeps // 4 if burn_in is None else _check_int("burn_in", burn_in, 0)
    if kernel != "auto":
        _check_kernel(system, kernel)
    elif kernel not in SPIN_KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; valid: {', '.join(SPIN_KERNELS)}")
    n_spins = system.n_spins
    nodes, w_fine, w_coarse = _ti_grid(beta, critical_beta(system), n_betas)
    sim = np.arange(1, nodes.size)  # β = 0 is exact: ⟨E⟩_0 = 0
    kernels = ["-"] + [
        ("swendsen_wang" if _auto_uses_cluster(system, b) else _check_kernel(system, "auto"))
        if kernel == "auto"
        else kernel
        for b in nodes[1:]
    ]
    block = max(1, -(-n_sweeps // max_blocks))
    n_blocks = -(-n_sweeps // block)
    n_burn_blocks = -(-burn_in // block)
    mean_e = np.zeros(nodes.size)
    se_e = np.zeros(nodes.size)
    var_e = np.zeros(nodes.size)
    tau_e = np.full(nodes.size, math.nan)
    flip = np.full(nodes.size, math.nan)
    wall = comp = 0.0
    keys = jax.random.split(key, 2 * len(_STEPS))
    for g, kern in enumerate(sorted(set(kernels[1:]))):
        idx = sim[[kernels[j] == kern for j in sim]]
        betas_chain = np.repeat(nodes[idx], n_chains).astype(np.float32)
        spins = random_spins(system, betas_chain.size, key=keys[2 * g])
        label = progress if isinstance(progress, str) else f"TI {kern}"
        _, stats, frac, t_run, t_comp = _simulate(
            system,
            spins,
            betas_chain,
            key=keys[2 * g + 1],
            kernel=kern,
            block=block,
            n_burn_blocks=n_burn_blocks,
            n_blocks=n_blocks,
            progress=progress,
            label=label,
            rule=rule,
        )
        wall += t_run
        comp += t_comp
        for p, j in enumerate(idx):
            cs = slice(p * n_chains, (p + 1) * n_chains)
            blk = stats[:, cs, 0]
            mean_e[j], se_e[j], _ = _mean_stderr(blk)
            var_e[j] = max(float(np.mean(stats[:, cs, 1])) - mean_e[j] ** 2, 0.0)
            n_tot = n_blocks * block * n_chains
            tau_e[j] = se_e[j] ** 2 * n_tot / var_e[j] if var_e[j] > 0 else math.nan
            flip[j] = float(np.mean(frac))
    integral = float(w_fine @ mean_e)
    dw = w_fine - w_coarse
    n_total = (n_burn_blocks + n_blocks) * block * n_chains * sim.size
    return SpinFreeEnergy(
        method="thermodynamic_integration",
        log_z=n_spins * math.log(2.0) - integral,
        log_z_stderr=float(math.sqrt(np.sum((w_fine * se_e) ** 2))),
        n_sweeps=int(n_total),
        n_site_updates=int(n_total * n_spins),
        wall_time=wall,
        compile_time=comp,
        beta=beta,
        n_spins=n_spins,
        n_chains=n_chains,
        quadrature_error=abs(float(dw @ mean_e)),
        quadrature_error_noise=float(math.sqrt(np.sum((dw * se_e) ** 2))),
        betas=nodes,
        mean_energy=mean_e,
        mean_energy_stderr=se_e,
        energy_variance=var_e,
        tau_energy=tau_e,
        quadrature_weights=w_fine,
        kernels=tuple(kernels),
        flip_fraction=flip,
    )


AIS_SCHEDULES = ("linear", "power")


def beta_schedule(beta: float, n_steps: int, schedule="linear", power: float = 2.0) -> np.ndarray:
    """The β grid 0 = β_0 < … < β_K = β of :func:`beta_annealing` (float64, length K + 1).

    ``"linear"``: β_k = β k/K; ``"power"``: β_k = β (k/K)^p (denser near 0 for p > 1). An
    explicit array is validated (non-decreasing from exactly 0 to exactly β) and returned.
    """
    if isinstance(schedule, str):
        if schedule not in AIS_SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(AIS_SCHEDULES)}")
        n_steps = _check_int("n_steps", n_steps)
        u = np.arange(n_steps + 1, dtype=np.float64) / n_steps
        if schedule == "linear":
            return beta * u
        if not (isinstance(power, int | float) and power > 0):
            raise ValueError(f"power must be > 0, got {power!r}")
        return beta * u**power
    b = np.asarray(schedule, np.float64)
    if b.ndim != 1 or b.size < 2 or b[0] != 0.0 or b[-1] != beta or np.any(np.diff(b) < 0):
        raise ValueError(
            f"an explicit schedule must be a non-decreasing 1-D array from exactly 0 to exactly "
            f"beta = {beta}, got {b if b.size < 8 else b.shape}"
        )
    return b


def _ais_chunk(system, carry, keys, b_prev, b_next, *, kernel: str, sweeps: int, rule: str):
    def body(carry, xs):
        state, logw = carry
        k, bp, bn = xs
        logw = logw - (bn - bp) * state.energy.astype(logw.dtype)
        bn32 = bn.astype(state.spins.dtype)

        def sweep(st, kk):
            st, info = _sweep(system, kernel, st, bn32, kk, rule)
            return st, info.flip_fraction

        state, fr = jax.lax.scan(sweep, state, jax.random.split(k, sweeps))
        e_mean = jnp.mean(state.energy.astype(logw.dtype))
        return (state, logw), (jnp.mean(fr), e_mean)

    return jax.lax.scan(body, carry, (keys, b_prev, b_next))


def _ais_init(system, spins):
    state = spin_init(system, spins)
    return state, jnp.zeros(spins.shape[0], jnp.float64)


def beta_annealing(
    system: AbstractSpinSystem,
    beta: float,
    *,
    key: Array,
    n_chains: int = 256,
    n_steps: int = 1000,
    sweeps_per_step: int = 1,
    schedule="linear",
    power: float = 2.0,
    kernel: str = "auto",
    rule: str = "metropolis",
    progress: bool | str = False,
) -> SpinFreeEnergy:
    r"""Estimate ln Z(β) by annealed importance sampling over β from the uniform distribution.

    Each of M chains starts from uniform spins (an exact sample of β_0 = 0, Z_0 = 2^N) and, for
    k = 0..K−1 along the schedule 0 = β_0 < … < β_K = β,

        w ← w − (β_{k+1} − β_k) E(s_k),    then ``sweeps_per_step`` sweeps at β_{k+1}.

    E[e^w] = Z(β)/2^N for any schedule and any β-invariant kernels, so

        ln Z = N ln 2 + logsumexp(w) − ln M,    stderr = √(Σ w̃² − 1/M)  (delta method),

    with w̃ = e^w/Σe^w and the Kish ESS = 1/Σ w̃² reported beside it (the delta method is
    optimistic when the ESS is small). Log-weights are accumulated in float64; spins are float32.

    Args:
        system: an Ising or PairwiseSpins system.
        beta: target β > 0.
        key: PRNG key.
        n_chains: M.
        n_steps: K.
        sweeps_per_step: sweeps after each weight increment.
        schedule: ``"linear"`` (default), ``"power"`` or an explicit β grid (see
            :func:`beta_schedule`).
        power: exponent of the power schedule.
        kernel: ``"auto"`` (for a ferromagnetic h = 0 Ising lattice with L ≥ ``CLUSTER_MIN_L``:
            Swendsen–Wang at steps with β_k/β_c in ``CLUSTER_WINDOW``, checkerboard elsewhere,
            chosen inside the scan by ``lax.cond``; single-spin Metropolis for PairwiseSpins) or
            a kernel name.
        rule: ``"metropolis"`` (default) or ``"heat_bath"`` for the local kernels.
        progress: progress bar (a string labels it).

    Returns:
        A :class:`SpinFreeEnergy` with ``method="beta_annealing"``.
    """
    system = _check_system(system)
    beta = _check_beta(beta, positive=True)
    n_chains = _check_int("n_chains", n_chains, 2)
    sweeps = _check_int("sweeps_per_step", sweeps_per_step)
    rule = _check_rule(rule)
    betas = beta_schedule(beta, n_steps, schedule, power)
    n_steps = betas.size - 1
    if kernel == "auto":
        bc = critical_beta(system)
        in_window = (
            bc is not None
            and system.L >= CLUSTER_MIN_L
            and np.any((betas >= CLUSTER_WINDOW[0] * bc) & (betas <= CLUSTER_WINDOW[1] * bc))
        )
        kern = "cluster_auto" if in_window else _check_kernel(system, "auto")
    else:
        kern = _check_kernel(system, kernel)
    sizes = _chunk_sizes(n_steps, 20 if progress else 1)
    k0, k1 = jax.random.split(key)
    with jax.enable_x64(True):
        spins = random_spins(system, n_chains, key=k0)
        keys = jax.random.split(k1, n_steps)
        bp, bn = jnp.asarray(betas[:-1]), jnp.asarray(betas[1:])
        init_c, comp = _compiled(_ais_init, {}, system, spins)
        carry_shape = jax.eval_shape(_ais_init, system, spins)
        chunks = {}
        for sz in sorted(set(sizes)):
            chunks[sz], ct = _compiled(
                _ais_chunk,
                dict(kernel=kern, sweeps=sweeps, rule=rule),
                system,
                carry_shape,
                keys[:sz],
                bp[:sz],
                bn[:sz],
            )
            comp += ct
        t1 = time.perf_counter()
        carry = jax.block_until_ready(init_c(system, spins))
        bar = tqdm(
            total=n_steps,
            desc=progress if isinstance(progress, str) else "β-AIS",
            disable=not progress,
            unit="step",
            dynamic_ncols=True,
        )
        outs, start = [], 0
        for sz in sizes:
            sl = slice(start, start + sz)
            carry, out = chunks[sz](system, carry, keys[sl], bp[sl], bn[sl])
            start += sz
            if progress:
                jax.block_until_ready(carry)
                bar.update(sz)
            outs.append(out)
        bar.close()
        carry = jax.block_until_ready(carry)
        wall = time.perf_counter() - t1
        logw = np.asarray(jax.device_get(carry[1]), np.float64)
        outs = jax.device_get(outs)
    frac = np.concatenate([np.asarray(o[0], np.float64) for o in outs])
    e_mean = np.concatenate([np.asarray(o[1], np.float64) for o in outs])
    n_spins = system.n_spins
    n_total = n_steps * sweeps * n_chains
    return SpinFreeEnergy(
        method="beta_annealing",
        log_z=n_spins * math.log(2.0) + logmeanexp(logw),
        log_z_stderr=importance_stderr(logw),
        n_sweeps=int(n_total),
        n_site_updates=int(n_total * n_spins),
        wall_time=wall,
        compile_time=comp,
        beta=beta,
        n_spins=n_spins,
        n_chains=n_chains,
        betas=betas,
        mean_energy=e_mean,
        kernels=(kern,),
        log_weights=logw,
        ess=kish_ess(logw),
        flip_fraction=frac,
    )
