r"""Tuned HMC / MALA for particle systems, with exact zero-centre-of-mass dynamics.

The target is p(x) ∝ exp(−βE(x)) for configurations x of shape (N, d). For a
translation-invariant energy (DW4, Lennard-Jones clusters with a tether to the centre of mass)
∫ e^{−βE} dx over R^{Nd} diverges along the centre of mass (COM), and the density is defined on
the (N−1)d-dimensional subspace S = {x : Σ_i x_i = 0} with Lebesgue measure in orthonormal
coordinates of S. The samplers here then move inside S exactly: initial positions are centred,
and the move (:func:`~boltzgen.mcmc._moves.hmc_step`, re-exported here) projects the momentum
and the gradient onto S and re-centres the accepted position, which makes it plain HMC (MALA:
one leapfrog step) in orthonormal coordinates of S with identity mass; the argument, and why
this move is hand-written rather than blackjax's, are in :mod:`boltzgen.mcmc._moves`.

Cost: each leapfrog step calls ``value_and_grad`` of βE once; the energy of the last leapfrog
position is the one the Metropolis test needs, so an HMC move costs exactly L energy+gradient
evaluations and a MALA move 1, plus one evaluation per chain at initialisation. These are the
numbers reported in ``n_energy_evals``.

Non-finite energies (a Lennard-Jones overlap overflows (σ/r)^12 in float32) give a non-finite
ΔH, which is rejected with probability one; the chain keeps its old state, so a bad proposal
never poisons a chain, and the count of such proposals is reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from boltzgen.mcmc._checks import check_int
from boltzgen.mcmc._diagnostics import trace_ess, trace_rhat
from boltzgen.mcmc._moves import (
    KERNELS,
    DualAveraging,
    ParticleInfo,
    ParticleState,
    centre,
    dual_averaging_init,
    dual_averaging_update,
    hmc_step,
    init_state,
)
from boltzgen.mcmc._scan import compile_scans, progress_bar, run_scans, split_evenly

__all__ = [
    "BudgetResult",
    "DualAveraging",
    "ParticleInfo",
    "ParticleMCMCResult",
    "ParticleState",
    "centre",
    "dual_averaging_init",
    "dual_averaging_update",
    "hmc_step",
    "init_state",
    "lattice_init",
    "length_scale",
    "make_potential",
    "mcmc_at_budget",
    "particle_mcmc",
    "trace_ess",
    "trace_rhat",
]

#: Default target mean acceptance. MALA: 0.574, the optimal-scaling value (the blackjax moves of
#: AIS and refinement default to 0.57; kept apart so that neither set of results changes).
_DEFAULT_TARGET = {"hmc": 0.65, "mala": 0.574}


def make_potential(system, beta):
    """u(x) = βE(x) of one configuration (the system's ``energy`` times β)."""

    def potential(x):
        return beta * system.energy(x)

    return potential


def length_scale(system) -> float:
    """A typical interparticle spacing of ``system``.

    2^{1/6}σ for a system with ``sigma`` (Lennard-Jones), ``d0`` for a double well, else 1.
    Used for the default initial lattice and the default initial step size.
    """
    sigma = getattr(system, "sigma", None)
    if sigma is not None:
        return float(sigma) * 2.0 ** (1.0 / 6.0)
    d0 = getattr(system, "d0", None)
    if d0 is not None:
        return float(d0)
    return 1.0


def lattice_init(key, n_chains: int, n_particles: int, dim: int, spacing: float, jitter=0.05):
    """Jittered lattice starts, shape (n_chains, N, d), a NumPy float64 array.

    The N points of the simple-cubic lattice of ``spacing`` nearest its centre, each chain with
    an independent random rotation (d ≥ 2) and Gaussian jitter of ``jitter · spacing``, centred.
    No two particles are closer than about spacing·(1 − 4·jitter), so a Lennard-Jones core
    cannot overflow at the start.
    """
    side = int(math.ceil(n_particles ** (1.0 / dim))) + 2
    grid = np.stack(
        np.meshgrid(*[np.arange(side, dtype=np.float64)] * dim, indexing="ij"), -1
    ).reshape(-1, dim)
    grid = grid - (side - 1) / 2.0
    # Nearest to the centre, ties broken by a fixed tiny offset so the choice is deterministic.
    r = np.sum((grid - 0.1234 * np.arange(1, dim + 1) / dim) ** 2, axis=1)
    pts = grid[np.argsort(r, kind="stable")[:n_particles]] * spacing
    pts = pts - pts.mean(axis=0)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    out = np.empty((n_chains, n_particles, dim))
    for c in range(n_chains):
        if dim >= 2:
            q, rr = np.linalg.qr(rng.standard_normal((dim, dim)))
            q = q * np.sign(np.diag(rr))
        else:
            q = np.ones((1, 1))
        out[c] = pts @ q.T + jitter * spacing * rng.standard_normal((n_particles, dim))
    return out - out.mean(axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class ParticleMCMCResult:
    r"""Output of :func:`particle_mcmc`.

    Attributes:
        samples: recorded configurations, shape ``(n_kept, n_chains, N, d)`` (record t of
            chain c is ``samples[t, c]``); ``flat_samples`` gives ``(n_kept · n_chains, N, d)``.
        energies: E(x) (not reduced) of each record, shape ``(n_kept, n_chains)``.
        final_positions: last state of every chain, shape ``(n_chains, N, d)``.
        acceptance: mean acceptance probability over chains and post-warm-up moves.
        acceptance_per_chain: the same per chain, shape ``(n_chains,)``.
        n_nonfinite: post-warm-up proposals with a non-finite energy or gradient (divergent
            trajectories, overlaps), all rejected.
        step_size: the frozen step size ε of the sampling phase.
        energy_ess: effective sample size of the recorded energy traces over all chains
            (numpyro's ``effective_sample_size``: Geyer's initial monotone sequence, chains pooled).
        energy_tau: integrated autocorrelation time of the energy in units of records,
            n_kept · n_chains / energy_ess (1 for independent records).
        energy_rhat: split-R̂ of the energy traces (numpyro's ``split_gelman_rubin``); values
            well above 1 (say > 1.01) mean the chains have not forgotten their start.
        n_energy_evals: energy+gradient evaluations: n_chains · (1 + L · (n_warmup + n_steps)).
        kernel, n_leapfrog, n_warmup, n_steps, thin, beta, zero_com: the settings used.
        wall_time: seconds of sampling (compilation excluded).
        compile_time: seconds spent compiling.
    """

    samples: np.ndarray
    energies: np.ndarray
    final_positions: np.ndarray
    acceptance: float
    acceptance_per_chain: np.ndarray
    n_nonfinite: int
    step_size: float
    energy_ess: float
    energy_tau: float
    energy_rhat: float
    n_energy_evals: int
    kernel: str
    n_leapfrog: int
    n_warmup: int
    n_steps: int
    thin: int
    beta: float
    zero_com: bool
    wall_time: float
    compile_time: float

    @property
    def flat_samples(self) -> np.ndarray:
        """Samples as ``(n_kept · n_chains, N, d)``."""
        return self.samples.reshape((-1,) + self.samples.shape[2:])

    @property
    def flat_energies(self) -> np.ndarray:
        """Energies as ``(n_kept · n_chains,)``."""
        return self.energies.reshape(-1)


def particle_mcmc(
    system,
    beta: float,
    *,
    key,
    n_chains: int,
    n_steps: int,
    kernel: str = "hmc",
    step_size: float | None = None,
    n_leapfrog: int | None = None,
    n_warmup: int = 500,
    thin: int = 1,
    target_accept: float | None = None,
    jitter: float | None = None,
    init=None,
    zero_com: bool | None = None,
    precision: str = "float32",
    progress: bool | str = False,
) -> ParticleMCMCResult:
    r"""Sample p(x) ∝ exp(−βE(x)) of a particle system with many HMC or MALA chains.

    All chains move together (``vmap``) inside jitted ``lax.scan`` chunks; a progress bar runs
    over the chunks. During ``n_warmup`` moves one step size shared by all chains is tuned by
    dual averaging towards ``target_accept`` (mean acceptance over chains); it is then frozen at
    the averaged iterate and ``n_steps`` moves follow, recording every ``thin``-th state
    (n_kept = n_steps // thin records per chain). Warm-up states are not recorded.

    For ``zero_com`` (default ``system.translation_invariant``) the chains live on the zero
    centre-of-mass subspace and sample the density restricted to it, see the module docstring.

    Args:
        system: anything with ``energy(x)`` on one configuration of shape ``event_shape`` =
            (N, d) (e.g. :class:`~boltzgen.systems.DoubleWellParticles`,
            :class:`~boltzgen.systems.LennardJones`), and optionally ``translation_invariant``.
        beta: inverse temperature β > 0.
        key: PRNG key.
        n_chains: number of independent chains.
        n_steps: post-warm-up moves per chain.
        kernel: ``"hmc"`` or ``"mala"`` (HMC with one leapfrog step).
        step_size: initial leapfrog step ε_0 (default 0.05 × :func:`length_scale` /√β for HMC,
            half that for MALA); dual averaging starts from it.
        n_leapfrog: leapfrog steps L per HMC move (default 10; must be 1 or None for MALA).
        n_warmup: step-size adaptation moves (may be 0: ε_0 is used as is).
        thin: record every ``thin``-th post-warm-up state.
        target_accept: target mean acceptance (default 0.65 HMC, 0.574 MALA).
        jitter: each move of each chain uses ε·(1 + jitter·U(−1, 1)) (default 0.2 for HMC, 0
            for MALA). Random step sizes avoid the near-periodic trajectories of a fixed ε·L
            (on harmonic modes) and make the mean acceptance a smooth function of ε, which the
            adaptation needs; the chain stays exact since ε is drawn independently of x.
        init: initial positions, shape (n_chains, N, d) or (N, d) (broadcast); default a
            jittered lattice of spacing :func:`length_scale` (:func:`lattice_init`). Centred
            if ``zero_com``.
        zero_com: sample on the zero-COM subspace (default ``system.translation_invariant``,
            False if the system has no such attribute).
        precision: ``"float32"`` (default) or ``"float64"``.
        progress: show a progress bar (a string is its label).

    Returns:
        A :class:`ParticleMCMCResult`.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if not (isinstance(beta, int | float) and not isinstance(beta, bool) and beta > 0):
        raise ValueError(f"beta must be a positive number, got {beta!r}")
    beta = float(beta)
    n_chains = check_int("n_chains", n_chains)
    n_steps = check_int("n_steps", n_steps, 0)
    n_warmup = check_int("n_warmup", n_warmup, 0)
    thin = check_int("thin", thin)
    if kernel == "mala":
        if n_leapfrog not in (None, 1):
            raise ValueError(f"MALA takes one leapfrog step, got n_leapfrog={n_leapfrog!r}")
        n_leapfrog = 1
    else:
        n_leapfrog = check_int("n_leapfrog", 10 if n_leapfrog is None else n_leapfrog)
    target = _DEFAULT_TARGET[kernel] if target_accept is None else float(target_accept)
    if not 0.0 < target < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}")
    jitter = (0.2 if kernel == "hmc" else 0.0) if jitter is None else float(jitter)
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
    if zero_com is None:
        zero_com = bool(getattr(system, "translation_invariant", False))
    shape = tuple(system.event_shape)
    if len(shape) != 2:
        raise ValueError(f"particle_mcmc needs configurations of shape (N, d), got {shape}")
    n_part, dim = shape
    if zero_com and n_part < 2:
        raise ValueError("zero_com needs at least 2 particles")
    scale = length_scale(system)
    if step_size is None:
        step_size = (0.05 if kernel == "hmc" else 0.025) * scale / math.sqrt(beta)
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    n_kept = n_steps // thin

    k_init, k_warm, k_samp = jax.random.split(key, 3)
    if init is None:
        x_init = lattice_init(k_init, n_chains, n_part, dim, scale)
    else:
        x_init = np.broadcast_to(np.asarray(init, dtype=np.float64), (n_chains,) + shape)
        if not np.all(np.isfinite(x_init)):
            raise ValueError("init contains non-finite positions")

    potential = make_potential(system, beta)

    def one_chain(k, s, eps):
        if jitter > 0:
            k, kj = jax.random.split(k)
            eps = eps * (1.0 + jitter * jax.random.uniform(kj, (), eps.dtype, -1.0, 1.0))
        return hmc_step(k, s, potential, eps, n_leapfrog=n_leapfrog, zero_com=zero_com)

    step_one = jax.vmap(one_chain, in_axes=(0, 0, None))

    def warm_body(carry, k):
        state, da = carry
        eps = jnp.exp(da.log_step)
        state, info = step_one(jax.random.split(k, n_chains), state, eps)
        da = dual_averaging_update(da, jnp.mean(info.acceptance_rate), target)
        return (state, da), None

    def sample_body(carry, k):
        state, eps, acc_sum, n_bad = carry

        def inner(c, kk):
            s, a, b = c
            s, info = step_one(jax.random.split(kk, n_chains), s, eps)
            return (s, a + info.acceptance_rate, b + jnp.sum(~info.is_finite, dtype=b.dtype)), None

        (state, acc_sum, n_bad), _ = jax.lax.scan(
            inner, (state, acc_sum, n_bad), jax.random.split(k, thin)
        )
        return (state, eps, acc_sum, n_bad), (state.position, state.potential)

    if precision not in ("float32", "float64"):
        raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")
    x64 = precision == "float64"
    ctx = jax.enable_x64(True) if x64 else contextlib.nullcontext()
    with ctx:
        dtype = jnp.float64 if x64 else jnp.float32
        x0 = jnp.asarray(x_init, dtype)
        init_all = jax.jit(jax.vmap(lambda x: init_state(x, potential, zero_com=zero_com)))
        da0 = dual_averaging_init(jnp.asarray(step_size, dtype))
        warm_sizes = split_evenly(n_warmup)
        samp_sizes = split_evenly(n_kept)
        warm_keys = jax.random.split(k_warm, max(n_warmup, 1))
        samp_keys = jax.random.split(k_samp, max(n_kept, 1))

        t0 = time.perf_counter()
        init_c = init_all.lower(x0).compile()
        state0 = init_c(x0)
        warm_c = compile_scans(warm_body, (state0, da0), warm_keys, warm_sizes)
        acc0 = jnp.zeros((n_chains,), dtype)
        bad0 = jnp.zeros((), jnp.int32)
        eps0 = jnp.asarray(step_size, dtype)
        samp_c = compile_scans(sample_body, (state0, eps0, acc0, bad0), samp_keys, samp_sizes)
        t1 = time.perf_counter()

        bar = progress_bar(progress, n_warmup + n_kept * thin, f"{kernel} (particles)")
        shown = bar if progress else None
        # state0 (one energy+gradient per chain) starts the chains: evaluated once, as counted
        (state, da), _ = run_scans(warm_c, (state0, da0), warm_keys, warm_sizes, bar=shown)
        eps = jnp.exp(da.log_step_avg) if n_warmup > 0 else eps0
        carry = (state, eps.astype(dtype), acc0, bad0)
        carry, outs = run_scans(
            samp_c, carry, samp_keys, samp_sizes, bar=shown, units_per_step=thin
        )
        carry = jax.block_until_ready(carry)
        bar.close()
        t2 = time.perf_counter()
        state, eps, acc_sum, n_bad = carry
        if outs:
            samples = np.concatenate([np.asarray(x) for x, _ in outs])
            energies = np.concatenate([np.asarray(u) for _, u in outs]).astype(np.float64) / beta
        else:
            samples = np.zeros((0, n_chains) + shape, np.float64 if x64 else np.float32)
            energies = np.zeros((0, n_chains))
        final = np.asarray(state.position)

    n_moves = n_kept * thin
    acc_chain = np.asarray(acc_sum, np.float64) / max(n_moves, 1)
    ess = trace_ess(energies) if n_kept >= 4 else float("nan")
    tau = samples.shape[0] * n_chains / ess if ess > 0 else float("nan")
    return ParticleMCMCResult(
        samples=samples,
        energies=energies,
        final_positions=final,
        acceptance=float(np.mean(acc_chain)) if n_moves else float("nan"),
        acceptance_per_chain=acc_chain,
        n_nonfinite=int(n_bad),
        step_size=float(eps),
        energy_ess=ess,
        energy_tau=tau,
        energy_rhat=trace_rhat(energies) if n_kept >= 4 else float("nan"),
        n_energy_evals=int(n_chains * (1 + n_leapfrog * (n_warmup + n_moves))),
        kernel=kernel,
        n_leapfrog=n_leapfrog,
        n_warmup=n_warmup,
        n_steps=n_moves,
        thin=thin,
        beta=beta,
        zero_com=zero_com,
        wall_time=t2 - t1,
        compile_time=t1 - t0,
    )


@dataclasses.dataclass(frozen=True)
class BudgetResult:
    """Output of :func:`mcmc_at_budget`: the equal-budget MCMC baseline.

    Attributes:
        samples: ``n_samples`` configurations, shape ``(n_samples, N, d)``.
        energies: their energies E(x), shape ``(n_samples,)``.
        budget: the energy+gradient evaluation budget asked for.
        n_energy_evals: evaluations actually spent (≤ budget).
        n_chains: chains run.
        n_warmup: warm-up moves per chain (counted in the budget).
        n_steps: post-warm-up moves per chain.
        thin: moves between the samples kept from one chain.
        mcmc: the full :class:`ParticleMCMCResult` (acceptance, step size, ESS, timings).
    """

    samples: np.ndarray
    energies: np.ndarray
    budget: int
    n_energy_evals: int
    n_chains: int
    n_warmup: int
    n_steps: int
    thin: int
    mcmc: ParticleMCMCResult

    @property
    def wall_time(self) -> float:
        """Seconds of sampling (compilation excluded)."""
        return self.mcmc.wall_time


def mcmc_at_budget(
    system,
    beta: float,
    budget: int,
    *,
    key,
    n_samples: int,
    n_chains: int | None = None,
    kernel: str = "hmc",
    n_leapfrog: int | None = None,
    warmup_fraction: float = 0.5,
    max_warmup: int | None = None,
    **kwargs,
) -> BudgetResult:
    r"""Tuned MCMC given a total budget of energy(+gradient) evaluations: the fair baseline.

    Runs C = ``n_chains`` chains (default ``n_samples``: one sample per chain, its final state)
    for as many moves as ``budget`` allows, everything counted: one evaluation per chain at
    initialisation plus L per move (L = ``n_leapfrog``, 1 for MALA), i.e.
    T = ⌊(budget − C)/(C·L)⌋ moves per chain. Of these, W = min(⌊f·T⌋, ``max_warmup``) with
    f = ``warmup_fraction`` tune the step size; each chain then yields k = ⌈n_samples/C⌉
    samples spaced ``thin`` = ⌊(T − W)/k⌋ moves apart, ending at its last move; the first
    ``n_samples`` of the C·k are returned. With C = n_samples the samples are the final states
    of independent chains.

    Args:
        system: the particle system (see :func:`particle_mcmc`).
        beta: inverse temperature.
        budget: total energy+gradient evaluations allowed.
        key: PRNG key.
        n_samples: number of samples to return.
        n_chains: chains (≤ n_samples, default n_samples).
        kernel: ``"hmc"`` or ``"mala"``.
        n_leapfrog: leapfrog steps per HMC move (default 10).
        warmup_fraction: fraction f of each chain's moves used for step-size adaptation.
        max_warmup: cap on warm-up moves (default none).
        **kwargs: passed to :func:`particle_mcmc` (``init``, ``zero_com``, ``step_size``,
            ``target_accept``, ``jitter``, ``precision``, ``progress``).

    Returns:
        A :class:`BudgetResult`.

    Raises:
        ValueError: if the budget does not allow one move per sample after warm-up.
    """
    n_samples = check_int("n_samples", n_samples)
    budget = check_int("budget", budget)
    n_chains = n_samples if n_chains is None else check_int("n_chains", n_chains)
    if n_chains > n_samples:
        raise ValueError(f"n_chains ({n_chains}) must be <= n_samples ({n_samples})")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
    lf = 1 if kernel == "mala" else (10 if n_leapfrog is None else n_leapfrog)
    lf = check_int("n_leapfrog", lf)
    moves = (budget - n_chains) // (n_chains * lf)
    n_warm = int(warmup_fraction * moves)
    if max_warmup is not None:
        n_warm = min(n_warm, check_int("max_warmup", max_warmup, 0))
    per_chain = -(-n_samples // n_chains)
    thin = (moves - n_warm) // per_chain if moves > n_warm else 0
    if thin < 1:
        raise ValueError(
            f"budget {budget} allows {max(moves, 0)} moves per chain for {n_chains} chains "
            f"(L = {lf}), {n_warm} of them warm-up: too few for {per_chain} sample(s) per chain"
        )
    res = particle_mcmc(
        system,
        beta,
        key=key,
        n_chains=n_chains,
        n_steps=thin * per_chain,
        kernel=kernel,
        n_leapfrog=None if kernel == "mala" else lf,
        n_warmup=n_warm,
        thin=thin,
        **kwargs,
    )
    samples = res.flat_samples[-n_samples:]
    energies = res.flat_energies[-n_samples:]
    return BudgetResult(
        samples=samples,
        energies=energies,
        budget=budget,
        n_energy_evals=res.n_energy_evals,
        n_chains=n_chains,
        n_warmup=n_warm,
        n_steps=thin * per_chain,
        thin=thin,
        mcmc=res,
    )
