r"""Neural MCMC: independent Metropolis–Hastings with the flow q as proposal, plus local moves.

A cached IMH kernel (a pure ``nmcmc_init`` / ``nmcmc_step`` pair whose loop the caller owns,
with the state and the per-step diagnostics as NamedTuples :class:`NMCMCState` /
:class:`NMCMCInfo`) keeps (x, log p(x), ∇ log p(x), log q(x)) per chain. Each step draws one
proposal per chain with ONE batched ``sample_q`` call (which returns log q with the sample, so
q's density is never re-evaluated for a proposal), evaluates log p there, and accepts with
probability

    α = min(1, exp([log p(x') - log q(x')] - [log p(x) - log q(x)])).

Then ``n_local`` blackjax MALA/HMC moves on p follow
(:func:`~boltzgen.mcmc._moves.blackjax_move`; an IMH chain driven by a weak flow mixes badly
where q underweights p, and local moves fix that at finite length), after which log q at the
new position is re-evaluated once (value only). The local step size adapts during burn-in
only and is frozen afterwards, so the post-burn-in chain is a time-homogeneous p-invariant
Markov chain. Nicoli et al., PRE 2020 (arXiv 1910.13496) for neural MCMC.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from boltzgen.estimators import importance_stderr, kish_ess, logmeanexp
from boltzgen.mcmc._checks import check_int, check_precision, check_target_accept
from boltzgen.mcmc._diagnostics import integrated_autocorrelation_time
from boltzgen.mcmc._moves import (
    KERNELS,
    TARGET_ACCEPT,
    adapt_step_size,
    blackjax_move,
    scale_step_size,
)
from boltzgen.mcmc._refine import RefineResult
from boltzgen.mcmc._scan import run_chunked


class NMCMCState(NamedTuple):
    """State of the neural-MCMC chains (leading chain axis except where noted).

    Attributes:
        position: x, shape ``(n_chains, *event_shape)``.
        log_density: log p(x) (unnormalised), ``(n_chains,)``.
        grad: ∇ log p(x) (needed by the local moves).
        log_q: log q(x), ``(n_chains,)`` — cached, never recomputed for an accepted proposal.
        step_size: local-move step size ε (scalar).
        step: steps taken (scalar ``int32``).
        n_accept: accepted IMH proposals per chain (``int32``, ``(n_chains,)``).
    """

    position: jax.Array
    log_density: jax.Array
    grad: jax.Array
    log_q: jax.Array
    step_size: jax.Array
    step: jax.Array
    n_accept: jax.Array


class NMCMCInfo(NamedTuple):
    """Diagnostics of one neural-MCMC step.

    Attributes:
        imh_acceptance: mean over chains of the IMH acceptance probability min(1, e^{Δ}).
        imh_accepted: fraction of chains whose proposal was accepted.
        local_acceptance: mean acceptance of the local moves (NaN-free; 0 if none).
        step_size: local step size ε used at this step.
        proposal_log_weight: log p(x') - log q(x') of every chain's proposal, ``(n_chains,)``.
        log_density: log p after the step, ``(n_chains,)``.
    """

    imh_acceptance: jax.Array
    imh_accepted: jax.Array
    local_acceptance: jax.Array
    step_size: jax.Array
    proposal_log_weight: jax.Array
    log_density: jax.Array


def _finite_or_excluded(lp, g):
    """The log density with NaN/+inf replaced by −inf (zero density) and its gradient by 0 there.

    The non-finite-energy policy: such a state has zero target density. A chain in one
    accepts the next finite proposal with probability 1; a proposal in one is never accepted.
    """
    ok = jnp.isfinite(lp)
    mask = ok.reshape(ok.shape + (1,) * (g.ndim - 1))
    return jnp.where(ok, lp, -jnp.inf), jnp.where(mask & jnp.isfinite(g), g, 0.0)


def nmcmc_init(
    positions: jax.Array,
    log_q_values: jax.Array,
    *,
    log_density: Callable,
    step_size: float,
) -> NMCMCState:
    """Initial state from samples x ~ q and their log q (one evaluation of log p and ∇ log p).

    A position with a non-finite log p (a NaN or infinite energy) enters with log p = −∞: the
    chain leaves it at its first step with a finite proposal (it never stays in it).

    Args:
        positions: x_0 per chain, shape ``(n_chains, *event_shape)``.
        log_q_values: log q(x_0), ``(n_chains,)``.
        log_density: unnormalised log p of ONE configuration.
        step_size: initial local step size ε.
    """
    lp, g = _finite_or_excluded(*jax.vmap(jax.value_and_grad(log_density))(positions))
    return NMCMCState(
        positions,
        lp,
        g,
        jnp.asarray(log_q_values, lp.dtype),
        jnp.asarray(step_size, lp.dtype),
        jnp.zeros((), jnp.int32),
        jnp.zeros(lp.shape, jnp.int32),
    )


def nmcmc_step(
    key: jax.Array,
    state: NMCMCState,
    *,
    sample_q: Callable,
    log_q: Callable,
    log_density: Callable,
    local_kernel: str | None = "mala",
    n_local: int = 1,
    n_leapfrog: int = 5,
    target_accept: float = 0.57,
    adapt: bool | jax.Array = False,
    adapt_rate: float = 1.0,
    recompute_log_q: bool = False,
) -> tuple[NMCMCState, NMCMCInfo]:
    r"""One IMH step with proposal q for every chain, then ``n_local`` local moves on p.

    IMH: x' ~ q with log q(x') from the same ``sample_q(key, n_chains)`` call; with
    v = log p - log q, accept if ln U < v(x') - v(x) (U ~ Uniform(0, 1); a proposal with a NaN
    or infinite energy has log p = −∞ and is rejected, a chain at such a state accepts the next
    finite proposal). The state caches (log p, ∇ log p, log q), so an accepted proposal costs one
    value+gradient of log p and nothing more for q. Local moves: blackjax MALA or HMC
    (identity mass) on log p with the carried step size ε; afterwards log q is re-evaluated at
    the new position (value only). If ``adapt`` (a bool or traced bool), ε is updated as
    ε ← ε exp(adapt_rate (ā - target_accept)) from the local moves' mean acceptance ā.

    Args:
        key: PRNG key.
        state: the current :class:`NMCMCState`.
        sample_q: ``sample_q(key, n) -> (x, log_q)``.
        log_q: log q of ONE configuration.
        log_density: unnormalised log p of ONE configuration.
        local_kernel: ``"mala"``, ``"hmc"`` or None (pure IMH).
        n_local: local moves per step.
        n_leapfrog: leapfrog steps per HMC move.
        target_accept: target mean acceptance of the local moves.
        adapt: adapt ε at this step.
        adapt_rate: gain of the step-size update.
        recompute_log_q: re-evaluate log q(x') with ``log_q`` (one more log-q evaluation per
            proposal) instead of trusting the value returned by ``sample_q``; use it when the
            sampler draws in a lower precision than the run (its log q then carries that
            round-off, e.g. ~1e-6 for a float32 flow).

    Returns:
        The new state and an :class:`NMCMCInfo`.
    """
    n = state.log_density.shape[0]
    dtype = state.log_density.dtype
    k_prop, k_u, k_local = jax.random.split(key, 3)
    # 1. independent MH with proposal q (one batched draw for all chains).
    xp, lq_p = sample_q(k_prop, n)
    xp = jnp.asarray(xp, state.position.dtype)
    lq_p = jax.vmap(log_q)(xp) if recompute_log_q else lq_p
    lq_p = jnp.asarray(lq_p, dtype)
    lp_p, g_p = _finite_or_excluded(*jax.vmap(jax.value_and_grad(log_density))(xp))
    v_prop = lp_p - lq_p
    log_ratio = v_prop - (state.log_density - state.log_q)
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    log_u = jnp.log(jax.random.uniform(k_u, (n,), dtype))
    accept = log_u < log_ratio
    prob = jnp.exp(jnp.minimum(log_ratio, 0.0))

    def pick(new, old):
        mask = accept.reshape(accept.shape + (1,) * (new.ndim - 1))
        return jnp.where(mask, new, old)

    x = pick(xp, state.position)
    lp = pick(lp_p, state.log_density)
    g = pick(g_p, state.grad)
    lq = pick(lq_p, state.log_q)
    eps = state.step_size

    # 2. local moves on p.
    local_acc = jnp.zeros((), dtype)
    if local_kernel is not None and n_local > 0:

        def move_one(k, x, lp, g):
            accs = []
            for kk in jax.random.split(k, n_local):
                new, a, _ = blackjax_move(
                    kk,
                    x,
                    lp,
                    g,
                    log_density,
                    eps,
                    kernel=local_kernel,
                    n_leapfrog=n_leapfrog,
                    mass_dtype=dtype,
                )
                x, lp, g = new.position, new.logdensity, new.logdensity_grad
                accs.append(a)
            return x, lp, g, jnp.mean(jnp.stack(accs))

        x, lp, g, acc = jax.vmap(move_one)(jax.random.split(k_local, n), x, lp, g)
        lp, g = _finite_or_excluded(lp, g)
        lq = jax.vmap(log_q)(x).astype(dtype)
        local_acc = jnp.mean(acc).astype(dtype)
        new_eps = adapt_step_size(eps, local_acc, target_accept, adapt_rate)
        eps_next = jnp.where(adapt, new_eps, eps).astype(dtype)
    else:
        eps_next = eps
    new_state = NMCMCState(
        x,
        lp,
        g,
        lq,
        eps_next,
        state.step + jnp.ones((), jnp.int32),
        state.n_accept + accept.astype(jnp.int32),
    )
    info = NMCMCInfo(
        jnp.mean(prob),
        jnp.mean(accept.astype(dtype)),
        local_acc,
        eps,
        v_prop,
        lp,
    )
    return new_state, info


def neural_mcmc(
    key: jax.Array,
    *,
    sample_q: Callable,
    log_q: Callable,
    log_density: Callable,
    n_chains: int = 256,
    n_steps: int = 200,
    local_kernel: str | None = "mala",
    n_local: int = 1,
    step_size: float | None = None,
    n_leapfrog: int = 5,
    target_accept: float | None = None,
    adapt_rate: float = 1.0,
    n_warmup: int | None = None,
    recompute_log_q: bool = False,
    precision: str = "float64",
    progress: bool | str = False,
) -> RefineResult:
    r"""Neural MCMC: M independent IMH chains with proposal q, alternated with local moves on p.

    Each chain starts at x_0 ~ q and does ``n_steps`` steps of :func:`nmcmc_step`: an
    independent Metropolis–Hastings move with proposal q (accept with probability
    min(1, exp([log p(x') - log q(x')] - [log p(x) - log q(x)]))) followed by ``n_local``
    MALA/HMC moves on p. The local step size adapts towards ``target_accept`` during the first
    ``n_warmup`` steps and is then frozen. The final states are M (approximately independent)
    samples of p.

    The IMH proposals x'_{t,c} are iid draws of q whatever the chains do, so they also give the
    importance-sampling estimate reported as ``log_z``:

        ln Ẑ = logmeanexp(log p(x') - log q(x')),   stderr √(Σ w̃² - 1/(TM)),

    and, with the final states' log p - log q as the "reverse" side, BAR between q and p (done
    by the caller from ``diagnostics["proposal_log_weights"]`` and
    ``diagnostics["final_log_weights"]``).

    The run is one ``jit``-ed ``lax.scan`` in equal chunks (progress bar between chunks), in
    float64 by default. Cost per chain: initially 1 ``sample_q``, 1 ``log_q`` (the consistency
    check ``log_q_mismatch``) and 1 log p (value+grad); per step 1 ``sample_q`` (+1 ``log_q``
    if ``recompute_log_q``) and 1 log p (value+grad) for the proposal, n_local · n_grad log p
    for the local moves (n_grad = ``n_leapfrog`` for HMC, 1 for MALA) and 1 log q (value)
    after them.

    Args:
        key: PRNG key.
        sample_q: ``sample_q(key, n) -> (x, log_q)``: n exact samples of q and their log q.
        log_q: log q of ONE configuration.
        log_density: unnormalised log p of ONE configuration.
        n_chains: M, independent chains.
        n_steps: T, steps per chain (burn-in included).
        local_kernel: ``"mala"`` (default), ``"hmc"`` or None (pure IMH).
        n_local: local moves after each IMH step.
        step_size: initial local ε (default: half the smallest per-coordinate std of x_0).
        n_leapfrog: leapfrog steps per HMC move.
        target_accept: local target acceptance (default 0.57 MALA, 0.65 HMC).
        adapt_rate: gain of the step-size update.
        n_warmup: steps with ε adaptation (default T/4); excluded from τ_int.
        recompute_log_q: re-evaluate log q at every proposal (and x_0) with ``log_q`` instead of
            using the value from ``sample_q`` (see :func:`nmcmc_step`; +1 log-q evaluation per
            proposal).
        precision: ``"float64"`` (default) or ``"float32"``.
        progress: progress bar (a string labels it).

    Returns:
        A :class:`~boltzgen.mcmc.RefineResult` with ``method="nmcmc"``, equal weights, and
        diagnostics: ``imh_acceptance`` / ``imh_accepted`` / ``local_acceptance`` /
        ``step_sizes`` (per step), ``imh_acceptance_mean`` and ``local_acceptance_mean``
        (post-burn-in means), ``log_density_trace`` (log p, shape ``(T, M)``), ``tau_int``
        (integrated autocorrelation time of log p after burn-in, see
        :func:`integrated_autocorrelation_time`), ``proposal_log_weights`` (all T·M proposals'
        log p - log q, flat float64, iid under q), ``proposal_ess`` (their Kish ESS),
        ``final_log_weights`` (log p - log q at the final states), ``initial_log_weights``,
        ``log_q_mismatch`` (max |log q from ``sample_q`` - ``log_q``| at x_0: the round-off
        carried by the proposals' log q unless ``recompute_log_q``),
        ``n_accept`` (per chain), ``n_warmup``, ``n_traces``, and the non-finite-energy
        counts ``n_nonfinite_initial`` (chains started at a state of zero target density, which
        leave it at their first finite proposal), ``n_nonfinite_proposals`` (proposals with
        zero weight) and ``n_nonfinite_final`` (chains that never reached a finite state).
    """
    if local_kernel is not None and local_kernel not in KERNELS:
        raise ValueError(f"unknown local_kernel {local_kernel!r}; valid: hmc, mala, None")
    check_precision(precision)
    n_chains = check_int("n_chains", n_chains, 2)
    n_steps = check_int("n_steps", n_steps)
    n_local = check_int("n_local", n_local, 0)
    n_leapfrog = check_int("n_leapfrog", n_leapfrog)
    if n_warmup is None:
        n_warmup = n_steps // 4
    n_warmup = check_int("n_warmup", n_warmup, 0)
    if n_warmup > n_steps:
        raise ValueError(f"n_warmup = {n_warmup} exceeds n_steps = {n_steps}")
    if target_accept is None:
        target_accept = TARGET_ACCEPT["hmc" if local_kernel == "hmc" else "mala"]
    check_target_accept(target_accept)
    if step_size is not None and not float(step_size) > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    dtype = jnp.float64 if precision == "float64" else jnp.float32
    step_kw = dict(
        sample_q=sample_q,
        log_q=log_q,
        log_density=log_density,
        local_kernel=local_kernel,
        n_local=n_local,
        n_leapfrog=n_leapfrog,
        target_accept=float(target_accept),
        adapt_rate=float(adapt_rate),
        recompute_log_q=bool(recompute_log_q),
    )

    def init(key):
        x, lq = sample_q(key, n_chains)
        x = jnp.asarray(x, dtype)
        lq_fresh = jax.vmap(log_q)(x).astype(dtype)
        mismatch = jnp.max(jnp.abs(lq_fresh - jnp.asarray(lq, dtype)))
        lq = lq_fresh if recompute_log_q else lq
        eps0 = scale_step_size(x) if step_size is None else step_size
        st = nmcmc_init(x, lq, log_density=log_density, step_size=eps0)
        return st, st.log_density - st.log_q, mismatch

    def body(carry, xs):
        k, adapt = xs
        state, w0, mm = carry
        state, info = nmcmc_step(k, state, adapt=adapt, **step_kw)
        return (state, w0, mm), info

    k_init, k_run = jax.random.split(key)
    label = progress if isinstance(progress, str) else "nmcmc"
    with jax.enable_x64(precision == "float64"):
        xs = (jax.random.split(k_run, n_steps), jnp.arange(n_steps) < n_warmup)
        (state, w0, mismatch), info, wall, comp, n_traces = run_chunked(
            init, (k_init,), body, xs, progress=progress, label=label
        )
        host = jax.device_get(
            dict(
                positions=state.position,
                log_density=state.log_density,
                log_q=state.log_q,
                n_accept=state.n_accept,
                w0=w0,
                mismatch=mismatch,
            )
        )
    trace = np.asarray(info.log_density, np.float64)
    prop_w = np.asarray(info.proposal_log_weight, np.float64).reshape(-1)
    final_w = np.asarray(host["log_density"], np.float64) - np.asarray(host["log_q"], np.float64)
    w0 = np.asarray(host["w0"], np.float64)
    post = slice(n_warmup, None)
    n_grad = 0 if local_kernel is None else n_local * (n_leapfrog if local_kernel == "hmc" else 1)
    re_q = 1 if (local_kernel is not None and n_local > 0) else 0
    rc = 1 if recompute_log_q else 0
    diag = dict(
        imh_acceptance=np.asarray(info.imh_acceptance, np.float64),
        imh_accepted=np.asarray(info.imh_accepted, np.float64),
        local_acceptance=np.asarray(info.local_acceptance, np.float64),
        step_sizes=np.asarray(info.step_size, np.float64),
        imh_acceptance_mean=float(np.mean(info.imh_acceptance[post]))
        if n_warmup < n_steps
        else math.nan,
        local_acceptance_mean=float(np.mean(info.local_acceptance[post]))
        if n_warmup < n_steps
        else math.nan,
        log_density_trace=trace,
        tau_int=integrated_autocorrelation_time(trace[post]),
        proposal_log_weights=prop_w,
        proposal_ess=kish_ess(prop_w),
        final_log_weights=final_w,
        initial_log_weights=w0,
        n_accept=np.asarray(host["n_accept"]),
        n_nonfinite_initial=int(np.sum(~np.isfinite(w0))),
        n_nonfinite_proposals=int(np.sum(~np.isfinite(prop_w))),
        n_nonfinite_final=int(np.sum(~np.isfinite(final_w))),
        log_q_mismatch=float(host["mismatch"]),
        n_warmup=int(n_warmup),
        n_traces=int(n_traces),
    )
    return RefineResult(
        method="nmcmc",
        positions=np.asarray(host["positions"]),
        log_weights=np.zeros(n_chains, np.float64),
        log_z=logmeanexp(prop_w),
        log_z_stderr=importance_stderr(prop_w),
        ess_before=kish_ess(w0),
        ess_after=float(n_chains),
        n_samples=int(n_chains),
        n_energy_evals=int(n_chains * (1 + n_steps * (1 + n_grad))),
        n_log_q_evals=int(n_chains * (2 + n_steps * (1 + rc + re_q))),
        wall_time=float(wall),
        compile_time=float(comp),
        diagnostics=diag,
    )


__all__ = [
    "NMCMCInfo",
    "NMCMCState",
    "integrated_autocorrelation_time",
    "neural_mcmc",
    "nmcmc_init",
    "nmcmc_step",
]
