"""Annealed importance sampling (AIS) with blackjax HMC / MALA moves.

Two levels:

* a pure kernel, :func:`ais_init` / :func:`ais_step`, acting on a batch of chains, whose loop the
  caller owns (``lax.scan`` over annealing steps, ``vmap`` over chains inside), with the state
  and the per-step diagnostics as NamedTuples (:class:`AISState`, :class:`AISInfo`);
* one entry point, :func:`ais`, that builds the schedule, runs the scan under ``jit`` (in float64
  by default), times it outside ``jit`` and returns an :class:`AISResult`.

The MCMC moves themselves are blackjax's (:func:`~boltzgen.mcmc._moves.blackjax_move`, which
takes the log density at call time, so the λ-dependent density is built inside the scan body),
and so is the step-size rule (:func:`~boltzgen.mcmc._moves.adapt_step_size`). What is written
here is only the AIS bookkeeping: weight increments and the carried (log π_0, log π_1,
gradients) per chain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from boltzgen.estimators import importance_stderr, kish_ess, logmeanexp, normalised_weights
from boltzgen.mcmc._checks import check_int, check_precision, check_step_sizes, check_target_accept
from boltzgen.mcmc._moves import (
    KERNELS,
    TARGET_ACCEPT,
    adapt_step_size,
    blackjax_move,
    check_kernel,
    needs_gradient,
)
from boltzgen.mcmc._scan import run_chunked

SCHEDULES = ("power", "linear")

__all__ = [
    "KERNELS",
    "SCHEDULES",
    "AISChains",
    "AISInfo",
    "AISResult",
    "AISState",
    "add_increment",
    "ais",
    "ais_init",
    "ais_step",
    "annealing_schedule",
]


class AISChains(NamedTuple):
    """Per-chain part of the AIS state (every leaf has a leading chain axis).

    Attributes:
        position: x_k, shape ``(n_chains, *event_shape)``.
        log_density_0: log π_0(x_k) (unnormalised), shape ``(n_chains,)``.
        log_density_1: log π_1(x_k) (unnormalised), shape ``(n_chains,)``.
        grad_0: ∇ log π_0(x_k).
        grad_1: ∇ log π_1(x_k).
        log_weight: accumulated AIS log-weight w_k, shape ``(n_chains,)``.
        log_weight_compensation: Kahan compensation term of the running sum ``log_weight``
            (keeps the sum accurate to a few ulp even in float32 over 10⁴ steps).
    """

    position: Array
    log_density_0: Array
    log_density_1: Array
    grad_0: Array
    grad_1: Array
    log_weight: Array
    log_weight_compensation: Array


class AISState(NamedTuple):
    """State of the annealer: the chains plus the shared step size and a step counter.

    Attributes:
        chains: :class:`AISChains`.
        step_size: integrator step size ε to use at the next move (scalar, float).
        step: number of annealing steps taken (scalar ``int32``).
    """

    chains: AISChains
    step_size: Array
    step: Array


class AISInfo(NamedTuple):
    """Diagnostics of one annealing step (all scalars).

    Attributes:
        acceptance: mean Metropolis acceptance probability over chains of the move.
        step_size: the step size ε used for the move.
        n_divergent: number of chains whose HMC trajectory diverged (0 for MALA).
        log_weight_increment: mean over chains of the weight increment of this step.
    """

    acceptance: Array
    step_size: Array
    n_divergent: Array
    log_weight_increment: Array


def _value_and_grads(position, log_density_0, log_density_1, gradients=True):
    if not gradients:  # a gradient-free move: the carried gradients are zeros, never read
        l0, l1 = log_density_0(position), log_density_1(position)
        zero = jax.tree.map(jnp.zeros_like, position)
        return l0, l1, zero, zero
    l0, g0 = jax.value_and_grad(log_density_0)(position)
    l1, g1 = jax.value_and_grad(log_density_1)(position)
    return l0, l1, g0, g1


def add_increment(chains: AISChains, lambda_prev, lambda_next):
    """The weight increment of every chain at its carried x_{k-1}, added to its log-weight.

    dw = (λ_k - λ_{k-1}) [log π_1 - log π_0](x_{k-1}), summed with Kahan compensation.

    Returns:
        ``(dw, log_weight, log_weight_compensation)``.
    """
    dw = (lambda_next - lambda_prev) * (chains.log_density_1 - chains.log_density_0)
    y = dw - chains.log_weight_compensation
    t = chains.log_weight + y
    comp = (t - chains.log_weight) - y
    return dw, t, comp


def ais_init(
    positions: Float[Array, "..."],
    *,
    log_density_0: Callable,
    log_density_1: Callable,
    step_size: float,
    kernel: str = "hmc",
) -> AISState:
    """Initial AIS state from exact samples x_0 ~ π_0 (one evaluation of both densities).

    Args:
        positions: x_0 for every chain, shape ``(n_chains, *event_shape)``.
        log_density_0: unnormalised log π_0 of ONE configuration.
        log_density_1: unnormalised log π_1 of ONE configuration.
        step_size: initial integrator step size ε_0.
        kernel: the moves that follow (``"rwm"``: no gradients are evaluated, zeros carried).

    Returns:
        The state with w_0 = 0 and the step counter at 0 (``int32``).
    """
    grads = needs_gradient(check_kernel(kernel))
    l0, l1, g0, g1 = jax.vmap(lambda x: _value_and_grads(x, log_density_0, log_density_1, grads))(
        positions
    )
    zero = jnp.zeros_like(l0)
    chains = AISChains(positions, l0, l1, g0, g1, zero, zero)
    return AISState(chains, jnp.asarray(step_size, l0.dtype), jnp.zeros((), jnp.int32))


def ais_step(
    key: Array,
    state: AISState,
    lambda_prev: Array,
    lambda_next: Array,
    *,
    log_density_0: Callable,
    log_density_1: Callable,
    kernel: str = "hmc",
    n_leapfrog: int = 10,
    target_accept: float = 0.65,
    adapt_rate: float = 1.0,
    step_size: Array | None = None,
    reuse_move_density: bool = False,
) -> tuple[AISState, AISInfo]:
    r"""One AIS step on every chain: weight increment at x_{k-1}, then an MCMC move at λ_k.

    Along the geometric path π_λ ∝ exp((1-λ) log π_0 + λ log π_1), in the standard AIS order

        w_k = w_{k-1} + (λ_k - λ_{k-1}) [log π_1(x_{k-1}) - log π_0(x_{k-1})],
        x_k ~ T_{λ_k}(x_{k-1}, ·),

    where T_λ is a blackjax HMC (identity mass matrix, ``n_leapfrog`` velocity-Verlet steps) or
    MALA transition that leaves π_λ invariant. Then E[e^{w_K}] = Z_1/Z_0 exactly for any
    schedule. The components log π_0, log π_1 and their gradients at the new position are
    evaluated once after the move (the "+1" evaluation) and carried, so the next increment and
    the gradient of π_λ at the next λ are free.

    Step size. If ``step_size`` is None the carried ε is used and then adapted SMC-style from
    this move's mean acceptance ā over chains:

        ε_{k+1} = ε_k · exp(adapt_rate · (ā_k - target_accept)),

    so ε at step k depends only on earlier steps. Because ā averages over all chains, each chain's
    kernel depends (at O(1/n_chains)) on the other chains' pasts; the weights are exact
    conditional on a fixed step-size sequence, so for a strictly unbiased run pass a fixed ε_k
    (e.g. from a pilot run) as ``step_size``, which is then used as is and not adapted.

    Reusing the move's density (``reuse_move_density=True``, for an expensive π_0 such as a
    flow's log q): the move returns log π_λ and ∇ log π_λ at the new position, so only π_1 is
    re-evaluated there and

        log π_0 = (log π_λ - λ log π_1) / (1 - λ),
        ∇ log π_0 = (∇ log π_λ - λ ∇ log π_1) / (1 - λ),

    saving one evaluation of π_0 per step. Round-off is amplified by 1/(1 - λ): use it in
    float64 with 1 - λ_k not tiny below λ = 1 (a power schedule with K ≤ 10⁵ is fine). At
    λ_k = 1 the carried π_0 components are left unchanged (stale): they are never used again,
    since the schedule ends at 1 and later increments are (1 - 1)·(...) = 0.

    Args:
        key: PRNG key for this step.
        state: the current :class:`AISState`.
        lambda_prev: λ_{k-1}.
        lambda_next: λ_k.
        log_density_0: unnormalised log π_0 of one configuration.
        log_density_1: unnormalised log π_1 of one configuration.
        kernel: ``"hmc"``, ``"mala"`` or ``"rwm"`` (random-walk Metropolis: values only, the
            carried gradients are zeros).
        n_leapfrog: leapfrog steps per HMC trajectory (ignored for MALA and RWM).
        target_accept: target mean acceptance for the adaptation.
        adapt_rate: gain of the multiplicative step-size update.
        step_size: a fixed ε for this step (no adaptation), or None to use and adapt the carried ε.
        reuse_move_density: derive π_0 at the new position from the move's log π_λ (see above)
            instead of evaluating it.

    Returns:
        The new state and an :class:`AISInfo`.
    """
    chains = state.chains
    dtype = chains.log_weight.dtype
    lambda_prev = jnp.asarray(lambda_prev, dtype)
    lambda_next = jnp.asarray(lambda_next, dtype)
    eps = state.step_size if step_size is None else jnp.asarray(step_size, dtype)

    # 1. weight increment at x_{k-1} (Kahan-compensated running sum).
    dw, log_weight, comp = add_increment(chains, lambda_prev, lambda_next)

    # 2. move at λ_k.
    def log_density(x):
        return (1 - lambda_next) * log_density_0(x) + lambda_next * log_density_1(x)

    def move_one(k, x, l0, l1, g0, g1):
        ld = (1 - lambda_next) * l0 + lambda_next * l1
        grad = jax.tree.map(lambda a, b: (1 - lambda_next) * a + lambda_next * b, g0, g1)
        new, acc, divergent = blackjax_move(
            k, x, ld, grad, log_density, eps, kernel=kernel, n_leapfrog=n_leapfrog, mass_dtype=dtype
        )
        if reuse_move_density:
            grads = needs_gradient(kernel)
            if grads:
                nl1, ng1 = jax.value_and_grad(log_density_1)(new.position)
            else:  # gradient-free moves carry zero gradients
                nl1, ng1 = log_density_1(new.position), g1
            at_one = lambda_next >= 1
            denom = jnp.where(at_one, jnp.ones_like(lambda_next), 1 - lambda_next)
            nl0 = jnp.where(at_one, l0, (new.logdensity - lambda_next * nl1) / denom)
            ng0 = g0
            if grads:
                ng0 = jax.tree.map(
                    lambda g, gl, g1: jnp.where(at_one, g, (gl - lambda_next * g1) / denom),
                    g0,
                    new.logdensity_grad,
                    ng1,
                )
        else:
            nl0, nl1, ng0, ng1 = _value_and_grads(
                new.position, log_density_0, log_density_1, needs_gradient(kernel)
            )
        return new.position, nl0, nl1, ng0, ng1, acc, divergent

    keys = jax.random.split(key, chains.log_weight.shape[0])
    pos, l0, l1, g0, g1, acc, div = jax.vmap(move_one)(
        keys,
        chains.position,
        chains.log_density_0,
        chains.log_density_1,
        chains.grad_0,
        chains.grad_1,
    )
    mean_acc = jnp.mean(acc).astype(dtype)
    if step_size is None:
        next_eps = adapt_step_size(eps, mean_acc, target_accept, adapt_rate)
    else:
        next_eps = eps
    new_state = AISState(
        AISChains(pos, l0, l1, g0, g1, log_weight, comp),
        next_eps.astype(dtype),
        state.step + jnp.ones((), jnp.int32),
    )
    info = AISInfo(mean_acc, eps, jnp.sum(div, dtype=jnp.int32), jnp.mean(dw))
    return new_state, info


def annealing_schedule(n_steps: int, schedule="power", power: float = 4.0) -> np.ndarray:
    r"""The λ grid 0 = λ_0 < λ_1 < ... < λ_K = 1 (float64, length K + 1).

    ``"power"``: λ_k = (k/K)^p, dense near λ = 0 for p > 1 (needed when log π_1 - log π_0 has a
    heavy tail under π_0, e.g. the 2-D Coulomb energy under the free trap).
    ``"linear"``: λ_k = k/K. An explicit array is validated and returned.
    """
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
        u = np.arange(n_steps + 1, dtype=np.float64) / n_steps
        if schedule == "linear":
            return u
        if not power > 0:
            raise ValueError(f"power must be > 0, got {power!r}")
        return u**power
    lam = np.asarray(schedule, np.float64)
    if lam.ndim != 1 or lam.size < 2:
        raise ValueError(
            f"an explicit schedule must be a 1-D array of length >= 2, got {lam.shape}"
        )
    if lam[0] != 0.0 or lam[-1] != 1.0 or np.any(np.diff(lam) < 0):
        raise ValueError("an explicit schedule must be non-decreasing from exactly 0 to exactly 1")
    return lam


@dataclasses.dataclass(frozen=True)
class AISResult:
    r"""Output of :func:`ais`.

    Attributes:
        positions: final samples x_K, shape ``(n_chains, *event_shape)`` (numpy).
        log_weights: AIS log-weights w (numpy float64), E[e^w] = Z_1/Z_0.
        schedule: the λ grid, length ``n_steps + 1``.
        acceptance: mean acceptance over chains at each step, shape ``(n_steps,)``.
        step_sizes: step size used at each step, shape ``(n_steps,)``; pass it back as
            ``step_size=`` to rerun with a fixed (non-adaptive) sequence.
        n_divergent: divergent HMC trajectories at each step.
        n_energy_evals: evaluations of (log π_0, log π_1, ∇) summed over chains: per chain
            1 (initial) + n_steps · (n_grad + 1) with n_grad = n_leapfrog (HMC) or 1 (MALA) and
            +1 for the components at the new position, which also give the next weight increment.
        wall_time: seconds for the run, after ``block_until_ready``, compilation excluded.
        compile_time: seconds spent tracing and compiling.
    """

    positions: np.ndarray
    log_weights: np.ndarray
    schedule: np.ndarray
    acceptance: np.ndarray
    step_sizes: np.ndarray
    n_divergent: np.ndarray
    n_energy_evals: int
    wall_time: float
    compile_time: float

    @property
    def n_chains(self) -> int:
        """Number of chains M."""
        return int(self.log_weights.size)

    @property
    def log_z_ratio(self) -> float:
        """ln(Z_1/Z_0) estimate, logsumexp(w) - ln M."""
        return logmeanexp(self.log_weights)

    @property
    def log_z_ratio_stderr(self) -> float:
        """Delta-method standard error √(Σ w̃² - 1/M) of ``log_z_ratio``."""
        return importance_stderr(self.log_weights)

    @property
    def ess(self) -> float:
        """Kish effective sample size 1/Σ w̃²."""
        return kish_ess(self.log_weights)

    @property
    def weights_normalised(self) -> np.ndarray:
        """w̃_i = e^{w_i}/Σ_j e^{w_j} (float64)."""
        return normalised_weights(self.log_weights)


# --- entry point ------------------------------------------------------------------------------


def ais(
    key: Array,
    *,
    log_density_0: Callable,
    sample_0: Callable,
    log_density_1: Callable,
    n_chains: int = 1024,
    n_steps: int = 1000,
    schedule="power",
    power: float = 4.0,
    kernel: str = "hmc",
    n_leapfrog: int = 10,
    step_size=0.1,
    target_accept: float | None = None,
    adapt_rate: float = 1.0,
    precision: str = "float64",
    progress: bool | str = False,
) -> AISResult:
    r"""Annealed importance sampling from π_0 to π_1 with blackjax HMC or MALA moves.

    Along π_λ ∝ exp((1-λ) log π_0 + λ log π_1) on the grid λ_0 = 0 < ... < λ_K = 1, each of
    ``n_chains`` independent chains starts from an exact sample x_0 ~ π_0 and does, for
    k = 1..K,

        w ← w + (λ_k - λ_{k-1}) [log π_1 - log π_0](x_{k-1}),   x_k ~ T_{λ_k}(x_{k-1}, ·).

    For any schedule and any π_λ-invariant kernels, E[e^w] = Z_1/Z_0, so

        ln(Z_1/Z_0) ≈ logsumexp(w) - ln M,    stderr ≈ √(Σ w̃² - 1/M),

    and the final x_K weighted by w̃ ∝ e^w are consistent for expectations under π_1.
    The step size is adapted online towards ``target_accept`` (see :func:`ais_step`) unless
    ``step_size`` is an array of length ``n_steps`` (then it is used as given and the weights are
    exactly unbiased; reuse ``result.step_sizes`` of a pilot run).

    The whole run is one ``jit``-ed ``lax.scan`` over steps with ``vmap`` over chains; with
    ``precision="float64"`` (default, the reference) it runs under ``jax.enable_x64(True)``.

    Args:
        key: PRNG key (``jax.random.key``).
        log_density_0: unnormalised log π_0 of ONE configuration.
        sample_0: ``sample_0(key, n)`` → n exact samples of π_0, shape ``(n, *event_shape)``.
        log_density_1: unnormalised log π_1 of ONE configuration.
        n_chains: M, number of independent chains.
        n_steps: K, number of annealing steps (= MCMC moves).
        schedule: ``"power"`` (λ_k = (k/K)^p), ``"linear"``, or an explicit λ grid of length K+1.
        power: p for the power schedule.
        kernel: ``"hmc"`` (identity mass matrix), ``"mala"`` or ``"rwm"`` (no gradients).
        n_leapfrog: leapfrog steps per HMC move.
        step_size: initial ε (float, adapted) or a fixed sequence of length K (not adapted).
        target_accept: target mean acceptance (default 0.65 for HMC, 0.57 for MALA).
        adapt_rate: gain of the step-size update.
        precision: ``"float64"`` or ``"float32"``.
        progress: show a progress bar (a string is used as its label).

    Returns:
        An :class:`AISResult` with samples, float64 log-weights, diagnostics and cost.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> r = ais(jax.random.key(0), log_density_0=lambda x: -0.5 * x @ x,
        ...         sample_0=lambda k, n: jax.random.normal(k, (n, 3)),
        ...         log_density_1=lambda x: -0.5 * x @ x / 4.0, n_chains=256, n_steps=50)
        >>> abs(r.log_z_ratio - 3 * jnp.log(2.0)) < 5 * r.log_z_ratio_stderr + 1e-3
        Array(True, dtype=bool)
    """
    check_kernel(kernel)
    check_precision(precision)
    n_chains = check_int("n_chains", n_chains)
    n_leapfrog = check_int("n_leapfrog", n_leapfrog)
    lam = annealing_schedule(n_steps, schedule, power)
    n_steps = lam.size - 1
    if target_accept is None:
        target_accept = TARGET_ACCEPT[kernel]
    check_target_accept(target_accept)
    fixed = np.ndim(step_size) > 0
    if fixed:
        eps_seq = check_step_sizes(step_size, n_steps)
        eps0 = float(eps_seq[0])
    else:
        eps0 = float(step_size)
        if not eps0 > 0:
            raise ValueError(f"step_size must be > 0, got {step_size!r}")
        eps_seq = np.zeros(n_steps)

    kw = dict(log_density_0=log_density_0, log_density_1=log_density_1)
    step_kw = dict(
        kw,
        kernel=kernel,
        n_leapfrog=n_leapfrog,
        target_accept=float(target_accept),
        adapt_rate=float(adapt_rate),
    )
    dtype = jnp.float64 if precision == "float64" else jnp.float32

    def init(key):
        x0 = jnp.asarray(sample_0(key, n_chains), dtype)
        return ais_init(x0, step_size=eps0, kernel=kernel, **kw)

    def body(state, xs):
        k, lp, ln, e = xs
        return ais_step(k, state, lp, ln, step_size=e if fixed else None, **step_kw)

    with jax.enable_x64(precision == "float64"):
        k0, kr = jax.random.split(key)
        xs = (
            jax.random.split(kr, n_steps),
            jnp.asarray(lam[:-1], dtype),
            jnp.asarray(lam[1:], dtype),
            jnp.asarray(eps_seq, dtype),
        )
        state, info, wall, comp, _ = run_chunked(
            init, (k0,), body, xs, progress=progress, label="ais"
        )
        pos, logw = jax.device_get((state.chains.position, state.chains.log_weight))

    n_grad = n_leapfrog if kernel == "hmc" else 1
    return AISResult(
        positions=np.asarray(pos),
        log_weights=np.asarray(logw, np.float64),
        schedule=lam,
        acceptance=np.asarray(info.acceptance, np.float64),
        step_sizes=np.asarray(info.step_size, np.float64),
        n_divergent=np.asarray(info.n_divergent),
        n_energy_evals=int(n_chains * (1 + n_steps * (n_grad + 1))),
        wall_time=wall,
        compile_time=comp,
    )
