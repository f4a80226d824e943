"""Running many spin chains: blocks of sweeps compiled once, and :func:`sample_spins`.

The chains of one run are one batch; sweeps are grouped into blocks whose means of E, E², m,
|m|, m² per chain are accumulated in float64, and the scan over blocks runs in chunks (a
progress bar between them). Executables are cached by the shapes of their arguments
(:func:`_compiled`), so a sweep over temperatures or over instances of one size compiles once.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from boltzgen.mcmc._checks import check_beta, check_int
from boltzgen.mcmc._scan import progress_bar
from boltzgen.mcmc._spin_kernels import (
    _auto_uses_cluster,
    _check_kernel,
    _check_rule,
    _check_system,
    _sweep,
    random_spins,
    spin_init,
)
from boltzgen.systems import AbstractSpinSystem

#: Per-chain block means recorded by :func:`_run_blocks`, in this order.
_STAT_NAMES = ("energy", "energy_sq", "magnetisation", "abs_magnetisation", "magnetisation_sq")

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
        bar = progress_bar(progress, total * block, label, unit="sweep")
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
        n_warmup: discarded sweeps per chain.
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
    n_warmup: int
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
    n_warmup: int | None = None,
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
        n_warmup: discarded sweeps per chain (default ``n_sweeps // 4``).
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
    beta = check_beta(beta)
    n_chains = check_int("n_chains", n_chains)
    n_sweeps = check_int("n_sweeps", n_sweeps)
    n_warmup = n_sweeps // 4 if n_warmup is None else check_int("n_warmup", n_warmup, 0)
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
        n_burn_blocks=n_warmup,
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
        n_warmup=n_warmup,
        wall_time=wall,
        compile_time=comp,
    )
