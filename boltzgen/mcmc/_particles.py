r"""Tuned HMC / MALA for particle systems, with exact zero-centre-of-mass dynamics.

The target is p(x) ∝ exp(−βE(x)) for configurations x of shape (N, d). For a
translation-invariant energy (DW4, Lennard-Jones clusters with a tether to the centre of mass)
∫ e^{−βE} dx over R^{Nd} diverges along the centre of mass (COM), and the density is defined on
the (N−1)d-dimensional subspace S = {x : Σ_i x_i = 0} with Lebesgue measure in orthonormal
coordinates of S. The samplers here then move inside S exactly:

* initial positions are centred, x ← x − x̄;
* the momentum (HMC) or the proposal noise (MALA) ξ ~ N(0, I_{Nd}) is projected onto S,
  ξ ← ξ − ξ̄ (subtract the particle mean in each spatial direction). P = I − (1/N) 1 1ᵀ ⊗ I_d
  is the orthogonal projector onto S, so Pξ is exactly a standard normal vector in
  orthonormal coordinates of S;
* the gradient is projected too, ∇u ← P∇u. For a translation-invariant energy this is a
  no-op: E(x + 1⊗a) = E(x) for all a ∈ R^d gives 0 = d/dt E(x + t 1⊗a) = a · Σ_i ∂E/∂x_i, so the
  forces sum to zero. (Projecting anyway removes rounding and makes the sampler correct for any
  energy: it then samples p conditioned on x̄ = 0.)

Every leapfrog update (p ← p − (ε/2)∇u, x ← x + εp) therefore stays in S, and the chain is plain
HMC in orthonormal coordinates of S with identity mass: the leapfrog map restricted to S is
volume-preserving and reversible, the kinetic energy ½|p|² of a momentum in S is the same in
ambient and in orthonormal coordinates, and the Metropolis test with H = u(x) + ½|p|² leaves the
restricted density p|_S invariant. Positions are re-centred after each step (a no-op up to
rounding) so x̄ = 0 holds to machine precision over any number of steps.

MALA is HMC with a single leapfrog step: x' = x − (ε²/2)∇u(x) + εPξ, accepted with probability
min(1, e^{−ΔH}); the Hamiltonian test is algebraically the Metropolis–Hastings ratio of the
Langevin proposal, so one code path serves both kernels.

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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

_KERNELS = ("hmc", "mala")
_DEFAULT_TARGET = {"hmc": 0.65, "mala": 0.574}


class ParticleState(NamedTuple):
    """State of one chain: what the next move needs.

    Attributes:
        position: configuration x, shape (N, d).
        potential: reduced energy u(x) = βE(x).
        grad: ∇u(x), projected onto the zero-COM subspace when the sampler is.
    """

    position: jax.Array
    potential: jax.Array
    grad: jax.Array


class ParticleInfo(NamedTuple):
    """Diagnostics of one move of one chain.

    Attributes:
        acceptance_rate: min(1, e^{−ΔH}), 0 when ΔH is not finite.
        is_accepted: whether the proposal was taken.
        is_finite: whether the proposal had a finite energy (and ΔH).
    """

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    is_finite: jax.Array


def centre(x):
    """Centre configurations of shape (..., N, d): x − x̄, x̄ the particle mean (axis −2)."""
    return x - jnp.mean(x, axis=-2, keepdims=True)


def make_potential(system, beta):
    """u(x) = βE(x) of one configuration (the system's ``energy`` times β)."""

    def potential(x):
        return beta * system.energy(x)

    return potential


def init_state(position, potential_fn, *, zero_com: bool) -> ParticleState:
    """Initial :class:`ParticleState` of one chain (centres the position if ``zero_com``)."""
    if zero_com:
        position = centre(position)
    u, g = jax.value_and_grad(potential_fn)(position)
    if zero_com:
        g = centre(g)
    return ParticleState(position, u, g)


def hmc_step(
    key, state: ParticleState, potential_fn, step_size, *, n_leapfrog: int, zero_com: bool
) -> tuple[ParticleState, ParticleInfo]:
    """One HMC move of one chain (MALA when ``n_leapfrog == 1``), identity mass matrix.

    Draws p ~ N(0, I) (projected onto Σ_i p_i = 0 if ``zero_com``), runs ``n_leapfrog`` leapfrog
    steps of size ``step_size`` and accepts with probability min(1, exp(H_0 − H_1)),
    H = u(x) + ½|p|². A non-finite H_1 is rejected. Costs ``n_leapfrog`` energy+gradient
    evaluations.

    Args:
        key: PRNG key.
        state: the current state.
        potential_fn: u(x) = βE(x) on one configuration.
        step_size: leapfrog step ε (scalar array).
        n_leapfrog: L ≥ 1.
        zero_com: move inside the zero-centre-of-mass subspace.

    Returns:
        The new state and a :class:`ParticleInfo`.
    """
    k_mom, k_acc = jax.random.split(key)
    proj = centre if zero_com else (lambda v: v)
    x0 = state.position
    p0 = proj(jax.random.normal(k_mom, x0.shape, x0.dtype))
    vg = jax.value_and_grad(potential_fn)

    def leapfrog(carry, _):
        x, p, _, g = carry
        p = p - 0.5 * step_size * g
        x = x + step_size * p
        u, g = vg(x)
        g = proj(g)
        p = p - 0.5 * step_size * g
        return (x, p, u, g), None

    (x1, p1, u1, g1), _ = jax.lax.scan(
        leapfrog, (x0, p0, state.potential, state.grad), None, length=n_leapfrog
    )
    h0 = state.potential + 0.5 * jnp.sum(p0 * p0)
    h1 = u1 + 0.5 * jnp.sum(p1 * p1)
    log_ratio = h0 - h1
    finite = jnp.isfinite(log_ratio) & jnp.all(jnp.isfinite(g1))
    acc = jnp.where(finite, jnp.exp(jnp.minimum(jnp.where(finite, log_ratio, 0.0), 0.0)), 0.0)
    accept = finite & (jax.random.uniform(k_acc, (), acc.dtype) < acc)
    x1 = proj(x1)
    new = ParticleState(
        jnp.where(accept, x1, x0),
        jnp.where(accept, u1, state.potential),
        jnp.where(accept, g1, state.grad),
    )
    return new, ParticleInfo(acc, accept, finite)


class DualAveraging(NamedTuple):
    """Dual-averaging state of one shared log step size (Hoffman & Gelman 2014, Alg. 5)."""

    log_step: jax.Array
    log_step_avg: jax.Array
    h_bar: jax.Array
    count: jax.Array
    mu: jax.Array


def dual_averaging_init(step_size) -> DualAveraging:
    """Start at ε_0 with shrinkage target μ = ln(10 ε_0)."""
    ls = jnp.log(jnp.asarray(step_size))
    zero = jnp.zeros_like(ls)
    return DualAveraging(ls, ls, zero, jnp.zeros((), jnp.int32), ls + math.log(10.0))


def dual_averaging_update(
    da: DualAveraging, acceptance, target, *, gamma=0.05, t0=10.0, kappa=0.75
) -> DualAveraging:
    r"""One dual-averaging update with statistic H_t = target − acceptance.

    h̄_t = (1 − 1/(t+t_0)) h̄_{t−1} + H_t/(t+t_0), ln ε_t = μ − √t h̄_t/γ,
    ln ε̄_t = t^{−κ} ln ε_t + (1 − t^{−κ}) ln ε̄_{t−1}.
    """
    t = (da.count + 1).astype(da.h_bar.dtype)
    eta = 1.0 / (t + t0)
    h_bar = (1.0 - eta) * da.h_bar + eta * (target - acceptance)
    log_step = da.mu - jnp.sqrt(t) / gamma * h_bar
    w = t ** (-kappa)
    log_step_avg = w * log_step + (1.0 - w) * da.log_step_avg
    return DualAveraging(log_step, log_step_avg, h_bar, da.count + 1, da.mu)


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


def trace_ess(values) -> float:
    """Effective sample size of a scalar trace of shape ``(n_records, n_chains)``.

    numpyro's ``effective_sample_size`` (Geyer's initial monotone sequence on the
    autocorrelation pooled over chains). The standard error of the mean is then
    std / √ESS. Returns the total over chains; ``n_records · n_chains`` at most about.
    """
    from numpyro.diagnostics import effective_sample_size

    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"trace_ess expects shape (n_records, n_chains), got {v.shape}")
    if v.shape[0] < 4:
        return float("nan")
    if not np.all(np.isfinite(v)) or np.ptp(v) == 0:
        return float("nan")
    return float(effective_sample_size(v.T[:, :, None])[0])


def trace_rhat(values) -> float:
    """Split-R̂ of a scalar trace of shape ``(n_records, n_chains)`` (numpyro)."""
    from numpyro.diagnostics import split_gelman_rubin

    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"trace_rhat expects shape (n_records, n_chains), got {v.shape}")
    if v.shape[0] < 4 or not np.all(np.isfinite(v)) or np.ptp(v) == 0:
        return float("nan")
    return float(split_gelman_rubin(v.T[:, :, None])[0])


def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _split(total: int, most: int = 10) -> list[int]:
    """``total`` as equal chunks (the largest divisor ≤ ``most`` of them): one compilation."""
    if total <= 0:
        return []
    parts = max(d for d in range(1, min(total, most) + 1) if total % d == 0)
    return [total // parts] * parts


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
    x64: bool = False,
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
        x64: run in float64 (default float32).
        progress: show a progress bar (a string is its label).

    Returns:
        A :class:`ParticleMCMCResult`.
    """
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
    if not (isinstance(beta, int | float) and not isinstance(beta, bool) and beta > 0):
        raise ValueError(f"beta must be a positive number, got {beta!r}")
    beta = float(beta)
    n_chains = _check_int("n_chains", n_chains)
    n_steps = _check_int("n_steps", n_steps, 0)
    n_warmup = _check_int("n_warmup", n_warmup, 0)
    thin = _check_int("thin", thin)
    if kernel == "mala":
        if n_leapfrog not in (None, 1):
            raise ValueError(f"MALA takes one leapfrog step, got n_leapfrog={n_leapfrog!r}")
        n_leapfrog = 1
    else:
        n_leapfrog = _check_int("n_leapfrog", 10 if n_leapfrog is None else n_leapfrog)
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

    ctx = jax.enable_x64(True) if x64 else contextlib.nullcontext()
    with ctx:
        dtype = jnp.float64 if x64 else jnp.float32
        x0 = jnp.asarray(x_init, dtype)
        init_all = jax.jit(jax.vmap(lambda x: init_state(x, potential, zero_com=zero_com)))
        da0 = dual_averaging_init(jnp.asarray(step_size, dtype))
        warm_sizes = _split(n_warmup)
        samp_sizes = _split(n_kept)
        warm_keys = jax.random.split(k_warm, max(n_warmup, 1))
        samp_keys = jax.random.split(k_samp, max(n_kept, 1))

        t0 = time.perf_counter()
        init_c = init_all.lower(x0).compile()
        state0 = init_c(x0)
        warm_c = {
            s: jax.jit(lambda c, ks: jax.lax.scan(warm_body, c, ks))
            .lower((state0, da0), warm_keys[:s])
            .compile()
            for s in set(warm_sizes)
        }
        acc0 = jnp.zeros((n_chains,), dtype)
        bad0 = jnp.zeros((), jnp.int32)
        eps0 = jnp.asarray(step_size, dtype)
        samp_c = {
            s: jax.jit(lambda c, ks: jax.lax.scan(sample_body, c, ks))
            .lower((state0, eps0, acc0, bad0), samp_keys[:s])
            .compile()
            for s in set(samp_sizes)
        }
        t1 = time.perf_counter()

        bar = tqdm(
            total=n_warmup + n_kept * thin,
            desc=progress if isinstance(progress, str) else f"{kernel} (particles)",
            disable=not progress,
            unit="step",
            dynamic_ncols=True,
        )
        state, da = init_c(x0), da0
        start = 0
        for s in warm_sizes:
            state, da = warm_c[s]((state, da), warm_keys[start : start + s])[0]
            start += s
            if progress:
                jax.block_until_ready(state)
                bar.update(s)
        eps = jnp.exp(da.log_step_avg) if n_warmup > 0 else eps0
        carry = (state, eps.astype(dtype), acc0, bad0)
        xs, us = [], []
        start = 0
        for s in samp_sizes:
            carry, (x_rec, u_rec) = samp_c[s](carry, samp_keys[start : start + s])
            xs.append(x_rec)
            us.append(u_rec)
            start += s
            if progress:
                jax.block_until_ready(carry)
                bar.update(s * thin)
        carry = jax.block_until_ready(carry)
        bar.close()
        t2 = time.perf_counter()
        state, eps, acc_sum, n_bad = carry
        if xs:
            samples = np.concatenate([np.asarray(x) for x in xs])
            energies = np.concatenate([np.asarray(u) for u in us]).astype(np.float64) / beta
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
            ``target_accept``, ``jitter``, ``x64``, ``progress``).

    Returns:
        A :class:`BudgetResult`.

    Raises:
        ValueError: if the budget does not allow one move per sample after warm-up.
    """
    n_samples = _check_int("n_samples", n_samples)
    budget = _check_int("budget", budget)
    n_chains = n_samples if n_chains is None else _check_int("n_chains", n_chains)
    if n_chains > n_samples:
        raise ValueError(f"n_chains ({n_chains}) must be <= n_samples ({n_samples})")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
    lf = 1 if kernel == "mala" else (10 if n_leapfrog is None else n_leapfrog)
    lf = _check_int("n_leapfrog", lf)
    moves = (budget - n_chains) // (n_chains * lf)
    n_warm = int(warmup_fraction * moves)
    if max_warmup is not None:
        n_warm = min(n_warm, _check_int("max_warmup", max_warmup, 0))
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
