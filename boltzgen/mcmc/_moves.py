r"""MCMC moves and step-size rules shared by AIS, refinement, the coupling ladder and particle MCMC.

* :func:`blackjax_move`: one blackjax HMC (identity mass matrix) or MALA transition of one
  chain, with the log density given at call time (so a λ-dependent density can be built inside
  a scan body). AIS (``_ais``), the refinement kernels (``_refine``, ``_nmcmc``) and the coupling
  ladder (``_ladder``) all move with it.
* Step-size rules: the multiplicative acceptance rule :func:`adapt_step_size`, the scale-aware
  initial step :func:`scale_step_size`, and dual averaging (:func:`dual_averaging_init`,
  :func:`dual_averaging_update`) used by particle MCMC.
* :func:`hmc_step`: a hand-written HMC / MALA move on the zero-centre-of-mass subspace for
  translation-invariant particle systems (used by ``_particles``); see its section below for why
  it is not a blackjax kernel.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import blackjax.mcmc.hmc as bj_hmc
import blackjax.mcmc.mala as bj_mala
import blackjax.mcmc.random_walk as bj_rw
import jax
import jax.numpy as jnp

#: Names of the blackjax moves ("rwm": Gaussian random-walk Metropolis, no gradients).
KERNELS = ("hmc", "mala", "rwm")

#: Default target mean acceptance of the step-size adaptation of the blackjax moves.
TARGET_ACCEPT = {"hmc": 0.65, "mala": 0.57, "rwm": 0.3}


def needs_gradient(kernel: str) -> bool:
    """Whether the move ``kernel`` uses ∇ log π (all but random-walk Metropolis)."""
    return kernel != "rwm"


def check_kernel(kernel: str) -> str:
    """``kernel`` if it is one of :data:`KERNELS`."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; valid: {', '.join(KERNELS)}")
    return kernel


def finite_acceptance(rate):
    """A move's acceptance probability with a non-finite value (NaN energy) counted as 0."""
    return jnp.where(jnp.isfinite(rate), rate, 0.0)


def blackjax_move(
    key,
    position,
    logdensity,
    logdensity_grad,
    log_density_fn,
    step_size,
    *,
    kernel: str,
    n_leapfrog: int,
    mass_dtype,
):
    """One blackjax HMC, MALA or RWM move of ONE chain leaving exp(``log_density_fn``) invariant.

    HMC: ``blackjax.mcmc.hmc.build_kernel()`` with an identity inverse mass matrix (a vector of
    ones of dtype ``mass_dtype``, one entry per coordinate of ``position``) and ``n_leapfrog``
    velocity-Verlet steps. MALA: ``blackjax.mcmc.mala.build_kernel()`` (``n_leapfrog`` unused).
    RWM: ``blackjax.mcmc.random_walk.build_additive_step()`` with isotropic Gaussian proposals of
    standard deviation ε (no gradient: ``logdensity_grad`` is passed through unchanged). The
    current log density and its gradient are passed in, so the move costs ``n_leapfrog`` (HMC)
    or 1 (MALA) evaluations of value and gradient, or 1 evaluation of the value (RWM).

    Args:
        key: PRNG key of this move.
        position: the current position (any shape).
        logdensity: ``log_density_fn(position)``.
        logdensity_grad: its gradient.
        log_density_fn: the unnormalised log density of one configuration.
        step_size: integrator step size ε.
        kernel: ``"hmc"``, ``"mala"`` or ``"rwm"`` (static).
        n_leapfrog: leapfrog steps of an HMC trajectory (static).
        mass_dtype: dtype of the inverse mass matrix (HMC).

    Returns:
        ``(new, acceptance, divergent)``: the blackjax state after the move (``position``,
        ``logdensity``, ``logdensity_grad``), the acceptance probability (0 if not finite) and
        whether the HMC trajectory diverged (always False for MALA and RWM).
    """
    if kernel == "hmc":
        inv_mass = jnp.ones(math.prod(jnp.shape(position)), mass_dtype)
        new, info = bj_hmc.build_kernel()(
            key,
            bj_hmc.HMCState(position, logdensity, logdensity_grad),
            log_density_fn,
            step_size,
            inv_mass,
            n_leapfrog,
        )
        divergent = info.is_divergent
    elif kernel == "rwm":
        step = bj_rw.normal(jnp.asarray(step_size, mass_dtype))
        moved, info = bj_rw.build_additive_step()(
            key, bj_rw.RWState(position, logdensity), log_density_fn, step
        )
        new = bj_hmc.HMCState(moved.position, moved.logdensity, logdensity_grad)
        divergent = jnp.zeros((), bool)
    else:
        new, info = bj_mala.build_kernel()(
            key, bj_mala.MALAState(position, logdensity, logdensity_grad), log_density_fn, step_size
        )
        divergent = jnp.zeros((), bool)
    return new, finite_acceptance(info.acceptance_rate), divergent


# --- step-size rules ---------------------------------------------------------------------------


def adapt_step_size(step_size, acceptance, target_accept, rate=1.0):
    r"""The multiplicative acceptance rule ε ← ε · exp(rate · (ā − target_accept)).

    ā is the mean acceptance of the last move(s): ε grows when moves are accepted more often
    than the target and shrinks otherwise (an SMC-style rule: ε at a step depends only on
    earlier steps).
    """
    return step_size * jnp.exp(rate * (acceptance - target_accept))


def scale_step_size(x):
    """Initial ε_0 = ½ · min over coordinates of the sample std of ``x`` (1 if that is not > 0).

    ``x`` holds one configuration per chain along its leading axis.
    """
    flat = x.reshape(x.shape[0], -1)
    s = jnp.min(jnp.std(flat, axis=0))
    return jnp.where(jnp.isfinite(s) & (s > 0), 0.5 * s, jnp.ones_like(s))


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

    The algorithm of ``blackjax.optimizers.dual_averaging``, kept hand-written because blackjax
    rounds differently (μ = ln(10 ε_0) in one logarithm, H_t/(t+t_0) as a division), so
    switching would change the particle-MCMC step sizes in the last bits.
    """
    t = (da.count + 1).astype(da.h_bar.dtype)
    eta = 1.0 / (t + t0)
    h_bar = (1.0 - eta) * da.h_bar + eta * (target - acceptance)
    log_step = da.mu - jnp.sqrt(t) / gamma * h_bar
    w = t ** (-kappa)
    log_step_avg = w * log_step + (1.0 - w) * da.log_step_avg
    return DualAveraging(log_step, log_step_avg, h_bar, da.count + 1, da.mu)


# --- HMC / MALA on the zero-centre-of-mass subspace ----------------------------------------------
#
# For a translation-invariant energy (DW4, Lennard-Jones clusters with a tether to the centre of
# mass) ∫ e^{−βE} dx over R^{Nd} diverges along the centre of mass (COM), and the density is
# defined on the (N−1)d-dimensional subspace S = {x : Σ_i x_i = 0} with Lebesgue measure in
# orthonormal coordinates of S. The move below stays inside S exactly:
#
# * the momentum ξ ~ N(0, I_{Nd}) is projected onto S, ξ ← ξ − ξ̄ (subtract the particle mean in
#   each spatial direction). P = I − (1/N) 1 1ᵀ ⊗ I_d is the orthogonal projector onto S, so Pξ
#   is exactly a standard normal vector in orthonormal coordinates of S;
# * the gradient is projected too, ∇u ← P∇u. For a translation-invariant energy this is a no-op
#   (E(x + 1⊗a) = E(x) for all a gives a · Σ_i ∂E/∂x_i = 0: the forces sum to zero); projecting
#   anyway removes rounding and makes the move correct for any energy (it then samples p
#   conditioned on x̄ = 0).
#
# Every leapfrog update then stays in S, and the move is plain HMC in orthonormal coordinates of
# S with identity mass: the leapfrog map restricted to S is volume-preserving and reversible, and
# ½|p|² of a momentum in S is the same in ambient and in orthonormal coordinates, so the
# Metropolis test with H = u(x) + ½|p|² leaves p|_S invariant. The accepted position is
# re-centred (a no-op up to rounding) so x̄ = 0 holds to machine precision over any number of
# moves. MALA is the same move with one leapfrog step (the Hamiltonian test is algebraically the
# Metropolis–Hastings ratio of the Langevin proposal x' = x − (ε²/2)∇u(x) + εPξ).
#
# Why not blackjax: blackjax's HMC could take the projected momentum from a custom metric and
# the projected gradient from the density u(Px) (whose gradient is P∇u(Px)), but not the
# re-centring of the accepted position; it also draws its random numbers from its own key splits
# and accepts by its own Bernoulli draw, so every chain (and every particle-MCMC number cached by
# the benchmarks) would change. Non-finite energies are handled differently too: here a
# non-finite H (a Lennard-Jones overlap overflowing (σ/r)^12 in float32) is rejected with
# probability one and counted, so a bad proposal never poisons a chain.


def centre(x):
    """Centre configurations of shape (..., N, d): x − x̄, x̄ the particle mean (axis −2)."""
    return x - jnp.mean(x, axis=-2, keepdims=True)


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
    evaluations: the energy at the last leapfrog position is the one the test needs.

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
