r"""MCMC refinement of flow samples with exact importance weights: annealed IS and SMC from q to p.

A normalised sampler q (a trained flow) is annealed towards the target p ∝ e^{-u} along

    π_λ ∝ q^{1-λ} p^{λ},   0 = λ_0 < λ_1 < ... < λ_K = 1,

with blackjax HMC/MALA moves (the pure :func:`~boltzgen.mcmc.kernels.ais_step` kernel with
π_0 = q, π_1 = p). Because q is normalised, ln Z_0 = 0 exactly and the AIS log-weights
w = Σ_k (λ_k - λ_{k-1}) [log p - log q](x_{k-1}) satisfy E[e^w] = Z_p for any schedule and any
π_λ-invariant kernels: the refined samples keep exact weights (a stochastic normalising flow,
Wu, Köhler & Noé 2020).

Two flavours share one jitted ``lax.scan`` (run in chunks, a progress bar between chunks):

* plain AIS (``resample_threshold=None``): ln Ẑ = logmeanexp(w), delta-method stderr;
* SMC (``resample_threshold=r``): after each weight increment, every replica population whose
  Kish ESS / size falls below r is resampled (systematic), its ln Ẑ accumulates
  logmeanexp(w) and its weights reset to 0 — all inside the scan with ``jnp.where``.

Also the shared result type :class:`RefineResult` (used by :func:`neural_mcmc` too). The
chunked-scan driver both entry points use, :func:`run_chunked`, lives in
:mod:`boltzgen.mcmc._scan` and is re-exported here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc.resampling import systematic

from boltzgen.estimators import (
    MAX_TRUSTED_PARETO_K,
    MIN_TRUSTED_ESS,
    Cost,
    Estimate,
    importance_stderr,
    kish_ess,
    logmeanexp,
    pareto_k,
)
from boltzgen.mcmc._ais import AISState, add_increment, ais_init, ais_step, annealing_schedule
from boltzgen.mcmc._checks import check_int, check_precision, check_step_sizes, check_target_accept
from boltzgen.mcmc._moves import KERNELS, TARGET_ACCEPT, check_kernel, scale_step_size
from boltzgen.mcmc._scan import run_chunked

METHODS = ("ais", "smc", "nmcmc")


@dataclasses.dataclass(frozen=True)
class RefineResult:
    r"""Output of :func:`refine_anneal` (AIS / SMC) and :func:`~boltzgen.mcmc.neural_mcmc`.

    Attributes:
        method: ``"ais"``, ``"smc"`` or ``"nmcmc"``.
        positions: final samples, shape ``(M, *event_shape)`` (NumPy). For AIS/SMC weighted by
            ``log_weights``; for nmcmc the final states of the M independent chains.
        log_weights: float64 log-weights of ``positions``, shape ``(M,)``; Σ_i w̃_i f(x_i)
            estimates E_p[f] with w̃ ∝ e^{log_weights}. AIS: the AIS weights, E[e^w] = Z_p.
            SMC: the final-stage weights of each replica r shifted by that replica's accumulated
            Σ_events logmeanexp(w_event), so that logmeanexp over a replica is ln Ẑ_r and over all
            M (equal-size replicas) it is ln Ẑ = ln mean_r Ẑ_r (the raw final-stage weights are in
            ``diagnostics["final_stage_log_weights"]``). nmcmc: zeros (equal weights).
        log_z: the estimate of ln Z_p (float64).
        log_z_stderr: its standard error. AIS: delta method √(Σ w̃² - 1/M). SMC: delta method
            over the R independent replicas, √(Σ_r Ŵ_r² - 1/R) with Ŵ_r = Ẑ_r/Σ_s Ẑ_s (NaN for
            R = 1). nmcmc: delta method of the importance-sampling estimate from the IMH
            proposals (iid from q).
        ess_before: Kish ESS of the initial q samples' weights log p - log q.
        ess_after: Kish ESS of ``log_weights`` (SMC: of the pooled final-stage weights as
            defined above; nmcmc: M, equal weights — the proposals' ESS behind ``log_z`` is
            ``diagnostics["proposal_ess"]``).
        n_samples: M, the number of chains / particles of the main run.
        n_energy_evals: evaluations of log p (value, value+gradient counted once), summed over
            chains, pilot run included.
        n_log_q_evals: evaluations of log q (value, value+gradient, or one ``sample_q`` draw
            counted once), summed over chains, pilot run included.
        wall_time: seconds of the runs (pilot + main) after ``block_until_ready``, compilation
            excluded.
        compile_time: seconds spent tracing and compiling.
        diagnostics: per-step traces and scalars (NumPy / float); the keys are listed in the
            docstring of the function that made the result.
    """

    method: str
    positions: np.ndarray
    log_weights: np.ndarray
    log_z: float
    log_z_stderr: float
    ess_before: float
    ess_after: float
    n_samples: int
    n_energy_evals: int
    n_log_q_evals: int
    wall_time: float
    compile_time: float
    diagnostics: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    @property
    def beta_f(self) -> float:
        """βF = -ln Z."""
        return -self.log_z

    def to_estimate(self, name: str | None = None) -> tuple[Estimate, dict]:
        """This result as an :class:`~boltzgen.estimators.Estimate`, and its scalars for HDF5.

        For neural MCMC ln Z is importance sampling on the IMH proposals (iid samples of q):
        their number and Kish ESS are reported, not the equal weights of the final chain states.
        The scalars (ESS before refinement, cost, every scalar diagnostic, the ``low_ess`` flag
        as 0/1) go to the ``/refine`` attributes.
        """
        scalars = {k: float(v) for k, v in self.diagnostics.items() if np.ndim(v) == 0}
        n_used, ess = int(self.n_samples), float(self.ess_after)
        if self.method == "nmcmc":
            n_used = int(np.size(self.diagnostics["proposal_log_weights"]))
            ess = float(self.diagnostics["proposal_ess"])
        cost = Cost(
            n_energy_evals=float(self.n_energy_evals),
            n_log_q_evals=float(self.n_log_q_evals),
            wall_time=float(self.wall_time),
        )
        low = ess < MIN_TRUSTED_ESS
        flags = {"low_ess"} if low else set()
        if self.method == "nmcmc":  # the estimate is importance sampling on the proposals
            k = pareto_k(self.diagnostics["proposal_log_weights"])
            scalars["pareto_k"] = k
            if k > MAX_TRUSTED_PARETO_K:
                flags.add("high_k")
        before = float(self.ess_before)
        notes = [f"ESS {before:.4g} before refinement"]
        if self.method == "nmcmc":
            n_bad = int(self.diagnostics.get("n_nonfinite_proposals", 0))
            n_init = int(self.diagnostics.get("n_nonfinite_initial", 0))
            if n_init:
                notes.append(f"{n_init} chains started at a non-finite energy and moved off it")
        else:
            n_bad = int(np.sum(~np.isfinite(np.asarray(self.log_weights, np.float64))))
        e = Estimate(
            name or f"refined_{self.method}",
            float(self.log_z),
            float(self.log_z_stderr),
            "estimate",
            n_used,
            ess,
            n_nonfinite=n_bad,
            cost=cost,
            flags=flags,
            notes=tuple(notes),
            extra=dict(ess_before=before, **scalars),
        )
        attrs = dict(
            ess_before=before,
            **cost.to_attrs(),
            **scalars,
            low_ess=int(low),
            high_k=int("high_k" in flags),
        )
        return e, attrs


# --- the SMC step on top of the AIS kernel ------------------------------------------------------


class RefineState(NamedTuple):
    """Carry of the annealed refinement scan.

    Attributes:
        ais: the :class:`~boltzgen.mcmc.AISState` of all M chains (replica-major order).
        log_z_acc: per replica, Σ over its resampling events of logmeanexp(w_event), ``(R,)``.
        n_resample: per replica, number of resampling events so far (``int32``, ``(R,)``).
    """

    ais: AISState
    log_z_acc: jax.Array
    n_resample: jax.Array


class RefineInfo(NamedTuple):
    """Diagnostics of one refinement step (scalars, except where noted).

    Attributes:
        acceptance: mean acceptance of the move over chains.
        step_size: step size ε used for the move.
        n_divergent: divergent HMC trajectories (``int32``).
        log_weight_increment: mean over chains of the weight increment.
        ess_fraction: mean over replicas of Kish ESS / size after the increment, before
            resampling (the quantity compared with the threshold).
        n_resampled: replicas resampled at this step (``int32``).
    """

    acceptance: jax.Array
    step_size: jax.Array
    n_divergent: jax.Array
    log_weight_increment: jax.Array
    ess_fraction: jax.Array
    n_resampled: jax.Array


def _logmeanexp_last(w):
    return jax.scipy.special.logsumexp(w, axis=-1) - math.log(w.shape[-1])


def _refine_step(
    key,
    state: RefineState,
    lambda_prev,
    lambda_next,
    step_size,
    *,
    n_replicas: int,
    resample_threshold: float | None,
    step_kw: dict,
):
    """Increment at x_{k-1} → (SMC: resample replicas with ESS/size < r) → move at λ_k."""
    chains = state.ais.chains
    dtype = chains.log_weight.dtype
    lp = jnp.asarray(lambda_prev, dtype)
    ln = jnp.asarray(lambda_next, dtype)
    # 1. increment (Kahan-compensated, as in ais_step).
    dw, t, comp = add_increment(chains, lp, ln)
    chains = chains._replace(log_weight=t, log_weight_compensation=comp)
    m = t.shape[0]
    size = m // n_replicas
    w = t.reshape(n_replicas, size)
    lse = jax.scipy.special.logsumexp
    ess_frac = jnp.exp(2 * lse(w, axis=1) - lse(2 * w, axis=1)) / size
    k_move, k_res = jax.random.split(key)
    log_z_acc, n_res = state.log_z_acc, state.n_resample
    n_resampled = jnp.zeros((), jnp.int32)
    if resample_threshold is not None:
        # 2. resample the replicas whose ESS fraction is below the threshold (or NaN).
        do = ~(ess_frac >= resample_threshold)
        probs = jax.nn.softmax(w, axis=1)
        idx = jax.vmap(lambda k, p: systematic(k, p, size))(
            jax.random.split(k_res, n_replicas), probs
        )
        local = jnp.where(do[:, None], idx, jnp.arange(size)[None, :])
        flat = (local + size * jnp.arange(n_replicas)[:, None]).reshape(-1)
        chains = jax.tree.map(lambda a: a[flat], chains)
        log_z_acc = jnp.where(do, log_z_acc + _logmeanexp_last(w), log_z_acc)
        reset = jnp.repeat(do, size)
        zero = jnp.zeros_like(chains.log_weight)
        chains = chains._replace(
            log_weight=jnp.where(reset, zero, chains.log_weight),
            log_weight_compensation=jnp.where(reset, zero, chains.log_weight_compensation),
        )
        n_res = n_res + do.astype(jnp.int32)
        n_resampled = jnp.sum(do, dtype=jnp.int32)
    # 3. the π_{λ_k}-invariant move (zero increment: λ_prev = λ_next).
    ais_state, info = ais_step(
        k_move, state.ais._replace(chains=chains), ln, ln, step_size=step_size, **step_kw
    )
    out = RefineInfo(
        info.acceptance,
        info.step_size,
        info.n_divergent,
        jnp.mean(dw),
        jnp.mean(ess_frac),
        n_resampled,
    )
    return RefineState(ais_state, log_z_acc, n_res), out


def _anneal_once(
    key,
    *,
    sample_q,
    log_q,
    log_density,
    n_chains,
    lam,
    kernel,
    n_leapfrog,
    step_size,
    target_accept,
    adapt_rate,
    n_replicas,
    resample_threshold,
    reuse_move_density,
    dtype,
    progress,
    label,
):
    """One AIS/SMC run (fixed or adaptive step size) → host arrays and timings."""
    n_steps = lam.size - 1
    fixed = np.ndim(step_size) > 0
    step_kw = dict(
        log_density_0=log_q,
        log_density_1=log_density,
        kernel=kernel,
        n_leapfrog=n_leapfrog,
        target_accept=float(target_accept),
        adapt_rate=float(adapt_rate),
        reuse_move_density=bool(reuse_move_density),
    )

    def init(key):
        x, lq_sample = sample_q(key, n_chains)
        x = jnp.asarray(x, dtype)
        eps0 = scale_step_size(x) if step_size is None or fixed else step_size
        st = ais_init(x, log_density_0=log_q, log_density_1=log_density, step_size=eps0)
        st = st._replace(step_size=jnp.asarray(st.step_size, dtype))
        mismatch = jnp.max(jnp.abs(st.chains.log_density_0 - jnp.asarray(lq_sample, dtype)))
        zeros = jnp.zeros((n_replicas,), dtype)
        return (
            RefineState(st, zeros, jnp.zeros((n_replicas,), jnp.int32)),
            st.chains.log_density_1 - st.chains.log_density_0,
            mismatch,
        )

    def body(carry, xs):
        k, lp, ln, e = xs
        state, w0, mm = carry
        state, info = _refine_step(
            k,
            state,
            lp,
            ln,
            e if fixed else None,
            n_replicas=n_replicas,
            resample_threshold=resample_threshold,
            step_kw=step_kw,
        )
        return (state, w0, mm), info

    k_init, k_run = jax.random.split(key)
    eps_seq = np.asarray(step_size, np.float64) if fixed else np.zeros(n_steps)
    xs = (
        jax.random.split(k_run, n_steps),
        jnp.asarray(lam[:-1], dtype),
        jnp.asarray(lam[1:], dtype),
        jnp.asarray(eps_seq, dtype),
    )
    (state, w0, mismatch), info, wall, comp, n_traces = run_chunked(
        init, (k_init,), body, xs, progress=progress, label=label
    )
    host = jax.device_get(
        dict(
            positions=state.ais.chains.position,
            log_weight=state.ais.chains.log_weight,
            log_z_acc=state.log_z_acc,
            n_resample=state.n_resample,
            initial_log_weights=w0,
            log_q_mismatch=mismatch,
        )
    )
    return host, info, wall, comp, n_traces


def refine_anneal(
    key: jax.Array,
    *,
    sample_q: Callable,
    log_q: Callable,
    log_density: Callable,
    n_chains: int = 1024,
    n_steps: int = 100,
    schedule="power",
    power: float = 2.0,
    kernel: str = "hmc",
    n_leapfrog: int = 5,
    step_size=None,
    target_accept: float | None = None,
    adapt_rate: float = 1.0,
    resample_threshold: float | None = None,
    n_replicas: int | None = None,
    pilot_chains: int | None = None,
    reuse_move_density: bool | None = None,
    precision: str = "float64",
    progress: bool | str = False,
) -> RefineResult:
    r"""Refine samples of a normalised sampler q towards p ∝ e^{log_density} by AIS or SMC.

    Path π_λ ∝ q^{1-λ} p^{λ} on the grid 0 = λ_0 < ... < λ_K = 1 (π_0 = q exactly, Z_0 = 1).
    Each chain starts from x_0 ~ q and does, for k = 1..K,

        w ← w + (λ_k - λ_{k-1}) [log p(x_{k-1}) - log q(x_{k-1})],   x_k ~ T_{λ_k}(x_{k-1}, ·),

    with T_λ a blackjax HMC (identity mass, ``n_leapfrog`` steps) or MALA move leaving π_λ
    invariant. Then E[e^w] = Z_p exactly, for any schedule and step sizes fixed in advance.

    **AIS** (``resample_threshold=None``): ln Ẑ = logsumexp(w) - ln M, stderr √(Σ w̃² - 1/M).

    **SMC** (``resample_threshold=r`` in (0, 1]): the M particles form R independent replica
    populations of M/R. After each increment, a replica whose Kish ESS / (M/R) < r is resampled
    (systematic resampling), its ln Ẑ_r accumulates logmeanexp(w) and its weights reset to 0;

        ln Ẑ_r = Σ_events logmeanexp(w_event) + logmeanexp(w_final),

    unbiased for Z_p: E[Ẑ_r] = Z_p. The replicas are combined as Ẑ = (1/R) Σ_r Ẑ_r, with the
    standard error of ln Ẑ by the delta method over replicas, √(Σ_r Ŵ_r² - 1/R),
    Ŵ_r = Ẑ_r / Σ_s Ẑ_s. Why replicas: resampling makes the particles dependent, so the iid
    delta method on the final weights is wrong; R independent populations give an honest (if
    noisy for small R: a χ²_{R-1}-like spread of the error itself) estimate without the ancestry
    bookkeeping of the Lee & Whiteley (2018) estimator. The resampling decision is a
    ``jnp.where`` on the ESS inside the jitted scan (no host round-trips).

    **Step sizes.** ``pilot_chains > 0`` (default max(64, M/8)): a pilot plain-AIS run adapts
    ε_k online, ε_{k+1} = ε_k exp(adapt_rate (ā_k - target_accept)), and the main run uses that
    fixed sequence, so its weights are exactly unbiased. ``pilot_chains=0`` adapts online in
    the main run (bias O(1/M)). A fixed array of length K skips both. The initial ε (if
    ``step_size`` is None) is scale-aware: half the smallest per-coordinate standard deviation
    of the run's own initial q samples, ε_0 = ½ min_j std_i(x_{0,ij}).

    **Cost.** Per chain: ``sample_q`` (1 log-q evaluation), then log q and log p with gradients
    at x_0 (1 each), then per step n_grad + 1 evaluations of log p (n_grad = ``n_leapfrog`` for
    HMC, 1 for MALA; the +1 re-evaluates log p at the new position, giving the next increment)
    and n_grad of log q: with ``reuse_move_density`` (default in float64) log q at the new
    position is recovered from the move's log π_λ, log q = (log π_λ - λ log p)/(1 - λ), instead
    of an (n_grad + 1)-th evaluation (see :func:`~boltzgen.mcmc.kernels.ais_step`). This matters
    because a flow's log q with its gradient is usually far costlier than the energy, and it
    also keeps one copy of the flow's gradient out of the compiled program. The pilot's
    evaluations are included.

    The run is one ``jit``-ed ``lax.scan`` in equal chunks (a progress bar between chunks), in
    float64 by default (``jax.enable_x64(True)``; float32 flow parameters promote).

    Args:
        key: PRNG key.
        sample_q: ``sample_q(key, n) -> (x, log_q)``, n exact samples of q and their log q.
        log_q: log q of ONE configuration (normalised, differentiable).
        log_density: unnormalised log p of ONE configuration (e.g. -βE(x)).
        n_chains: M, chains of the main run.
        n_steps: K, annealing steps (= MCMC moves).
        schedule: ``"power"`` (λ_k = (k/K)^p), ``"linear"`` or an explicit λ grid of length K+1.
        power: p of the power schedule.
        kernel: ``"hmc"`` or ``"mala"``.
        n_leapfrog: leapfrog steps per HMC move.
        step_size: None (scale-aware ε_0, adapted), a float ε_0 (adapted), or a fixed array of
            length K (used as is, no pilot).
        target_accept: target mean acceptance (default 0.65 for HMC, 0.57 for MALA).
        adapt_rate: gain of the multiplicative step-size update.
        resample_threshold: None for AIS, or r in (0, 1] for SMC.
        n_replicas: R for SMC (default 16, reduced to a divisor of M with ≥ 32 particles each);
            must divide M. Ignored (1) for AIS.
        pilot_chains: chains of the pilot run (default max(64, M/8)); 0 disables it.
        reuse_move_density: recover log q after each move from log π_λ (default: True in
            float64, False in float32, where the 1/(1 - λ) round-off amplification hurts).
        precision: ``"float64"`` (default) or ``"float32"``.
        progress: progress bars (a string labels them).

    Returns:
        A :class:`RefineResult` (method ``"ais"`` or ``"smc"``). ``diagnostics`` holds
        ``schedule`` (λ grid), ``acceptance``, ``step_sizes``, ``n_divergent``,
        ``log_weight_increment``, ``ess_fraction`` (per step, length K), ``n_resample`` (total
        events over replicas), ``n_resampled`` (per step), ``log_z_replicas`` (ln Ẑ_r, SMC),
        ``n_replicas``, ``final_stage_log_weights`` (SMC), ``initial_log_weights``
        (log p - log q of x_0), ``log_q_mismatch`` (max |log q from ``sample_q`` - ``log_q``|
        at x_0: a consistency check of the sampler), ``pilot_step_sizes``,
        ``pilot_acceptance``, ``n_traces`` (compilations of the main scan chunk: 1).

    Example:
        >>> import jax, jax.numpy as jnp, math
        >>> def sample_q(k, n):
        ...     x = 2.0 * jax.random.normal(k, (n, 2))
        ...     return x, jax.vmap(log_q)(x)
        >>> def log_q(x):
        ...     return -0.5 * x @ x / 4.0 - math.log(8 * math.pi)
        >>> r = refine_anneal(jax.random.key(0), sample_q=sample_q, log_q=log_q,
        ...                   log_density=lambda x: -0.5 * x @ x, n_chains=512, n_steps=20)
        >>> abs(r.log_z - math.log(2 * math.pi)) < 4 * r.log_z_stderr
        True
    """
    check_kernel(kernel)
    check_precision(precision)
    n_chains = check_int("n_chains", n_chains, 2)
    n_leapfrog = check_int("n_leapfrog", n_leapfrog)
    lam = annealing_schedule(n_steps, schedule, power)
    n_steps = lam.size - 1
    if target_accept is None:
        target_accept = TARGET_ACCEPT[kernel]
    check_target_accept(target_accept)
    smc = resample_threshold is not None
    if smc:
        r = float(resample_threshold)
        if not 0.0 < r <= 1.0:
            raise ValueError(f"resample_threshold must be in (0, 1], got {resample_threshold!r}")
        resample_threshold = r
        if n_replicas is None:
            n_replicas = max(
                d for d in range(1, 17) if n_chains % d == 0 and (n_chains // d >= 32 or d == 1)
            )
        n_replicas = check_int("n_replicas", n_replicas)
        if n_chains % n_replicas:
            raise ValueError(f"n_replicas = {n_replicas} must divide n_chains = {n_chains}")
    else:
        n_replicas = 1
    fixed = np.ndim(step_size) > 0
    if fixed:
        step_size = check_step_sizes(step_size, n_steps)
        pilot_chains = 0
    elif step_size is not None and not float(step_size) > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    if pilot_chains is None:
        pilot_chains = max(64, n_chains // 8)
    pilot_chains = check_int("pilot_chains", pilot_chains, 0)
    if pilot_chains == 1:
        raise ValueError("pilot_chains must be 0 or >= 2")

    dtype = jnp.float64 if precision == "float64" else jnp.float32
    if reuse_move_density is None:
        reuse_move_density = precision == "float64"
    common = dict(
        sample_q=sample_q,
        log_q=log_q,
        log_density=log_density,
        lam=lam,
        kernel=kernel,
        n_leapfrog=n_leapfrog,
        target_accept=target_accept,
        adapt_rate=adapt_rate,
        reuse_move_density=bool(reuse_move_density),
        dtype=dtype,
    )
    n_grad = n_leapfrog if kernel == "hmc" else 1
    per_chain = 1 + n_steps * (n_grad + 1)
    # log q: one sample_q draw, the initial evaluation, n_grad (+1) per step
    per_chain_q = 2 + n_steps * (n_grad + (0 if reuse_move_density else 1))
    key_pilot, key_main = jax.random.split(key)
    diag: dict = {}
    wall = comp = 0.0
    evals_p = evals_q = 0
    label = progress if isinstance(progress, str) else ("smc" if smc else "ais")
    with jax.enable_x64(precision == "float64"):
        if pilot_chains:
            _, pinfo, w_, c_, _ = _anneal_once(
                key_pilot,
                n_chains=pilot_chains,
                step_size=step_size,
                n_replicas=1,
                resample_threshold=None,
                progress=f"{label} pilot" if progress else False,
                label="pilot",
                **common,
            )
            step_size = np.asarray(pinfo.step_size, np.float64)
            wall, comp = w_, c_
            evals_p += pilot_chains * per_chain
            evals_q += pilot_chains * per_chain_q
            diag["pilot_step_sizes"] = step_size
            diag["pilot_acceptance"] = np.asarray(pinfo.acceptance, np.float64)
        host, info, w_, c_, n_traces = _anneal_once(
            key_main,
            n_chains=n_chains,
            step_size=step_size,
            n_replicas=n_replicas,
            resample_threshold=resample_threshold,
            progress=label if progress else False,
            label=label,
            **common,
        )
    wall += w_
    comp += c_
    evals_p += n_chains * per_chain
    evals_q += n_chains * per_chain_q

    w_final = np.asarray(host["log_weight"], np.float64)
    w0 = np.asarray(host["initial_log_weights"], np.float64)
    diag.update(
        schedule=lam,
        acceptance=np.asarray(info.acceptance, np.float64),
        step_sizes=np.asarray(info.step_size, np.float64),
        n_divergent=np.asarray(info.n_divergent),
        log_weight_increment=np.asarray(info.log_weight_increment, np.float64),
        ess_fraction=np.asarray(info.ess_fraction, np.float64),
        n_resampled=np.asarray(info.n_resampled),
        n_resample=int(np.sum(host["n_resample"])),
        n_replicas=int(n_replicas),
        initial_log_weights=w0,
        log_q_mismatch=float(host["log_q_mismatch"]),
        n_traces=int(n_traces),
    )
    if smc:
        acc = np.asarray(host["log_z_acc"], np.float64)
        size = n_chains // n_replicas
        log_w = (w_final.reshape(n_replicas, size) + acc[:, None]).reshape(-1)
        log_z_r = np.array([logmeanexp(row) for row in log_w.reshape(n_replicas, size)])
        log_z = logmeanexp(log_z_r)
        stderr = importance_stderr(log_z_r) if n_replicas > 1 else math.nan
        diag.update(log_z_replicas=log_z_r, final_stage_log_weights=w_final)
    else:
        log_w = w_final
        log_z = logmeanexp(log_w)
        stderr = importance_stderr(log_w)
    return RefineResult(
        method="smc" if smc else "ais",
        positions=np.asarray(host["positions"]),
        log_weights=log_w,
        log_z=float(log_z),
        log_z_stderr=float(stderr),
        ess_before=kish_ess(w0),
        ess_after=kish_ess(log_w),
        n_samples=int(n_chains),
        n_energy_evals=int(evals_p),
        n_log_q_evals=int(evals_q),
        wall_time=float(wall),
        compile_time=float(comp),
        diagnostics=diag,
    )


__all__ = [
    "KERNELS",
    "METHODS",
    "RefineInfo",
    "RefineResult",
    "RefineState",
    "refine_anneal",
    "run_chunked",
]
