"""Monte Carlo baseline: BAR / MBAR along a ladder of Coulomb couplings, from the free trap.

The states are E_λ(x) = κΣ|x_i|² + λ·c·V_C(x), λ_0 = 0 < λ_1 < ... < λ_{K-1} = 1 (c the system's
coupling, V_C = Σ_{i<j} 1/|x_i − x_j|). λ = 0 is the harmonic trap with exact ln Z_0 and exact
samples. Every state is sampled in equilibrium by blackjax HMC chains
(:func:`~boltzgen.mcmc._moves.blackjax_move`; all K·M chains in one ``vmap``, one jitted
``lax.scan``), and ln Z_1 = ln Z_0 − Σ_k Δf_{k,k+1} follows from BAR
between neighbours and, with all states at once, from MBAR.

Because the reduced energy is linear in λ, u_l(x) = β(T(x) + λ_l c V(x)) with T = κΣ|x|², so
only T and V are recorded per sample and the full u_kn matrix of MBAR is built afterwards.

Samples of one chain are correlated; the statistical inefficiency g_k = (samples)/(effective
samples) of each state's recorded ln V traces (numpyro's ``effective_sample_size``, Geyer's
initial monotone sequence over the independent chains) sets that state's subsampling stride,
after which the asymptotic BAR and MBAR variances apply.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc.resampling import systematic

from boltzgen.estimators import Cost, Estimate
from boltzgen.mcmc._checks import check_int, check_target_accept
from boltzgen.mcmc._diagnostics import pooled_ess
from boltzgen.mcmc._moves import adapt_step_size, blackjax_move
from boltzgen.mcmc._scan import compile_scans, progress_bar, run_scans, split_evenly
from boltzgen.systems import CoulombGas
from boltzgen.systems._coulomb import pair_distances


@dataclasses.dataclass(frozen=True)
class LadderResult:
    r"""Output of :func:`coupling_ladder`.

    Attributes:
        lambdas: the coupling ladder λ_k, shape ``(K,)``.
        log_z_reference: exact ln Z_0 of the free trap at β.
        log_z_bar: ln Z_1 = ln Z_0 − Σ_k Δf_{k,k+1} with BAR between neighbours.
        log_z_bar_stderr: √Σ_k σ_k² of the neighbour BAR errors (after subsampling).
        log_z_mbar: ln Z_1 from MBAR over all K states (after subsampling).
        log_z_mbar_stderr: its asymptotic standard error.
        delta_f: Δf_{k,k+1} from BAR, shape ``(K-1,)``.
        delta_f_stderr: their standard errors.
        trap_energy: recorded T(x) = κΣ|x|², shape ``(n_records, K, M)``.
        coulomb_energy: recorded V_C(x), same shape.
        target_samples: configurations of the λ = 1 state (the target) at the records kept after
            subsampling, shape ``(n_kept, M, N, d)``: equilibrium samples of p.
        strides: subsampling stride ⌈g_k⌉ of each state's records before estimating.
        statistical_inefficiency: g_k of the recorded ln V traces, per state, shape ``(K,)``.
        acceptance: mean HMC acceptance per state after burn-in, shape ``(K,)``.
        step_sizes: the frozen HMC step size per state, shape ``(K,)``.
        n_energy_evals: energy evaluations over all chains and states: energy+gradient in the
            HMC moves, energy alone for the burn-in weights and the records.
        wall_time: seconds (compilation excluded).
        compile_time: seconds spent compiling.
    """

    lambdas: np.ndarray
    log_z_reference: float
    log_z_bar: float
    log_z_bar_stderr: float
    log_z_mbar: float
    log_z_mbar_stderr: float
    delta_f: np.ndarray
    delta_f_stderr: np.ndarray
    trap_energy: np.ndarray
    coulomb_energy: np.ndarray
    target_samples: np.ndarray
    strides: np.ndarray
    statistical_inefficiency: np.ndarray
    acceptance: np.ndarray
    step_sizes: np.ndarray
    n_energy_evals: int
    wall_time: float
    compile_time: float

    def to_estimates(self) -> dict[str, Estimate]:
        """``ladder_bar`` and ``ladder_mbar`` with the number of records used and the cost."""
        n = int(sum(self.trap_energy[::s, k].size for k, s in enumerate(self.strides)))
        cost = Cost(n_energy_evals=float(self.n_energy_evals), wall_time=float(self.wall_time))
        extra = dict(max_stride=int(self.strides.max()), n_states=int(self.lambdas.size))
        return {
            m: Estimate(m, float(lz), float(se), "estimate", n, cost=cost, extra=extra)
            for m, lz, se in (
                ("ladder_bar", self.log_z_bar, self.log_z_bar_stderr),
                ("ladder_mbar", self.log_z_mbar, self.log_z_mbar_stderr),
            )
        }


def coupling_ladder(
    system: CoulombGas,
    beta: float,
    *,
    key,
    n_states: int = 16,
    power: float = 3.0,
    n_chains: int = 128,
    n_warmup: int = 1000,
    n_records: int = 100,
    thin: int = 5,
    n_leapfrog: int = 4,
    target_accept: float = 0.65,
    progress: bool | str = False,
) -> LadderResult:
    r"""Estimate ln Z of a Coulomb gas by BAR and MBAR along the coupling ladder λ_k = (k/(K−1))^p.

    Every state k is sampled by ``n_chains`` HMC chains started from exact trap samples. During
    ``n_warmup`` moves the coupling of state k ramps from 0 to λ_k (as (t/T)^4 over 3/4 of them,
    an SMC sampler with resampling that removes chains stalled at near-collisions) and the step
    size of each state adapts towards ``target_accept``; it is then frozen and ``n_records``
    samples per chain are recorded every ``thin`` moves. Runs in float64.

    Args:
        system: the :class:`~boltzgen.systems.CoulombGas`.
        beta: β > 0.
        key: PRNG key.
        n_states: K ≥ 2 states including λ = 0 and λ = 1.
        power: p of the ladder λ_k = (k/(K−1))^p (dense near λ = 0, where V_C has a heavy tail
            under the free trap in 2-D).
        n_chains: M chains per state.
        n_warmup: equilibration moves per chain (step size adapted).
        n_records: recorded samples per chain.
        thin: moves between records.
        n_leapfrog: leapfrog steps per HMC move.
        target_accept: target mean acceptance of the burn-in adaptation.
        progress: progress bar (a string is its label).

    Returns:
        A :class:`LadderResult` with BAR and MBAR estimates and the cost.
    """
    from boltzgen.estimators import bar_delta_f, mbar

    if not isinstance(system, CoulombGas):
        raise ValueError(f"coupling_ladder needs a CoulombGas, got {type(system).__name__}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    n_states = check_int("n_states", n_states, 2)
    n_chains = check_int("n_chains", n_chains, 2)
    n_warmup = check_int("n_warmup", n_warmup, 0)
    n_records = check_int("n_records", n_records, 2)
    thin = check_int("thin", thin)
    n_leapfrog = check_int("n_leapfrog", n_leapfrog)
    if not power > 0:
        raise ValueError(f"power must be > 0, got {power!r}")
    check_target_accept(target_accept)

    beta = float(beta)
    kappa, coupling = float(system.trap), float(system.coupling)
    n, d = system.n_particles, system.dim
    lambdas = (np.arange(n_states, dtype=np.float64) / (n_states - 1)) ** power
    width = math.sqrt(1.0 / (2.0 * beta * kappa))
    log_z0 = 0.5 * d * n * math.log(math.pi / (beta * kappa))

    def parts(x):
        return kappa * jnp.sum(x * x), jnp.sum(1.0 / pair_distances(x))

    def move(k, x, lam, eps):
        def logp(y):
            t, v = parts(y)
            return -beta * (t + lam * coupling * v)

        ld, g = jax.value_and_grad(logp)(x)
        new, acc, _ = blackjax_move(
            k, x, ld, g, logp, eps, kernel="hmc", n_leapfrog=n_leapfrog, mass_dtype=x.dtype
        )
        return new.position, acc

    # vmap over chains (inner) and states (outer).
    move_all = jax.vmap(jax.vmap(move, in_axes=(0, 0, None, None)), in_axes=(0, 0, 0, 0))

    def burn(carry, xs):
        # Burn-in is an SMC sampler from the free trap: the coupling of every state ramps up as
        # (t/T)^4 over the first 3/4 of the burn-in, with AIS weight increments
        # −β c Δλ_eff V(x) and systematic resampling within a state when its ESS falls below
        # M/2, and every 50 steps of the ramp and at its end whatever the ESS. Chains start from
        # trap samples, where pairs can be very close; such a chain stalls as the coupling grows
        # (HMC rejects every move) and only its weight says so: a few stalled chains hardly
        # lower the ESS, hence the forced resampling. None of this needs to be exact: only the
        # records taken later, with frozen step sizes, are used.
        k, ramp, ramp_prev, force = xs
        x, eps, logw = carry
        k_move, k_res = jax.random.split(k)
        v = jax.vmap(jax.vmap(lambda y: parts(y)[1]))(x)
        logw = logw - beta * coupling * (lam_d * (ramp - ramp_prev))[:, None] * v
        x, logw = jax.vmap(_resample_if_degenerate, in_axes=(0, 0, 0, None))(
            jax.random.split(k_res, n_states), x, logw, force
        )
        keys = jax.random.split(k_move, (n_states, n_chains))
        x, acc = move_all(keys, x, lam_d * ramp, eps)
        mean_acc = jnp.mean(acc, axis=1)
        return (x, adapt_step_size(eps, mean_acc, target_accept), logw), mean_acc

    def record(carry, k):
        x, eps, acc_sum = carry

        def one(x, k):
            keys = jax.random.split(k, (n_states, n_chains))
            return move_all(keys, x, lam_d, eps)

        def body(c, k):
            x, a = c
            x, acc = one(x, k)
            return (x, a + jnp.mean(acc, axis=1)), None

        (x, acc_sum), _ = jax.lax.scan(body, (x, acc_sum), jax.random.split(k, thin))
        t, v = jax.vmap(jax.vmap(parts))(x)
        return (x, eps, acc_sum), (t, v, x[-1])

    with jax.enable_x64(True):
        lam_d = jnp.asarray(lambdas)
        k0, kb, kr = jax.random.split(key, 3)
        x0 = width * jax.random.normal(k0, (n_states, n_chains, n, d), jnp.float64)
        eps0 = jnp.full((n_states,), 0.5 * width, jnp.float64)
        burn_sizes = split_evenly(n_warmup)
        rec_sizes = split_evenly(n_records)
        burn_keys = jax.random.split(kb, max(n_warmup, 1))
        ramp = (
            jnp.minimum(1.0, (jnp.arange(max(n_warmup, 1)) + 1.0) / max(0.75 * n_warmup, 1.0)) ** 4
        )
        ramp_prev = jnp.concatenate([jnp.zeros(1), ramp[:-1]])
        logw0 = jnp.zeros((n_states, n_chains), jnp.float64)
        steps = jnp.arange(max(n_warmup, 1))
        force = ((steps % 50 == 49) & (ramp < 1.0)) | ((ramp == 1.0) & (ramp_prev < 1.0))
        rec_keys = jax.random.split(kr, n_records)
        burn_xs = (burn_keys, ramp, ramp_prev, force)

        t0 = time.perf_counter()
        burn_c = compile_scans(burn, (x0, eps0, logw0), burn_xs, burn_sizes)
        zero = jnp.zeros((n_states,), jnp.float64)
        rec_c = compile_scans(record, (x0, eps0, zero), rec_keys, rec_sizes)
        t1 = time.perf_counter()
        bar_ = progress_bar(progress, n_warmup + n_records * thin, "λ-ladder")
        bar_or_none = bar_ if progress else None
        (x, eps, _), _ = run_scans(burn_c, (x0, eps0, logw0), burn_xs, burn_sizes, bar=bar_or_none)
        carry, outs = run_scans(
            rec_c, (x, eps, zero), rec_keys, rec_sizes, bar=bar_or_none, units_per_step=thin
        )
        bar_.close()
        carry = jax.block_until_ready(carry)
        t2 = time.perf_counter()
        _, eps, acc_sum = carry
        trap_e = np.concatenate([np.asarray(t) for t, _, _ in outs])  # (R, K, M)
        coul_e = np.concatenate([np.asarray(v) for _, v, _ in outs])
        x_target = np.concatenate([np.asarray(xt) for _, _, xt in outs])

    # Statistical inefficiency g_k of each state's ln V trace over the M independent chains
    # (ln V: the same chain, a less heavy-tailed observable than V, whose variance under the free
    # trap is infinite in 2-D); each state is then subsampled with its own stride ⌈g_k⌉.
    g = np.empty(n_states)
    for k in range(n_states):
        chains = np.log(coul_e[:, k, :].T)  # (M, R)
        ess = pooled_ess(chains)
        g[k] = max(1.0, chains.size / ess) if ess > 0 and np.isfinite(ess) else float(n_records)
    strides = np.minimum(n_records, np.ceil(g)).astype(int)
    t_sub = [trap_e[:: strides[k], k, :].reshape(-1) for k in range(n_states)]
    v_sub = [coul_e[:: strides[k], k, :].reshape(-1) for k in range(n_states)]

    # Neighbour BAR: W_F = β(λ_{k+1} − λ_k) c V on state-k samples, W_R = −that on state k+1.
    dlam = np.diff(lambdas)
    df = np.empty(n_states - 1)
    dfe = np.empty(n_states - 1)
    for k in range(n_states - 1):
        wf = beta * dlam[k] * coupling * v_sub[k]
        wr = -beta * dlam[k] * coupling * v_sub[k + 1]
        df[k], dfe[k] = bar_delta_f(wf, wr)

    # MBAR on all states: u_l(x_n) = β(T_n + λ_l c V_n) for every pooled sample n.
    t_pool, v_pool = np.concatenate(t_sub), np.concatenate(v_sub)  # grouped by state
    u_kn = beta * (t_pool[None, :] + lambdas[:, None] * coupling * v_pool[None, :])
    n_k = np.array([v.size for v in v_sub])
    f_k, cov = mbar(u_kn, n_k)
    var_last = cov[-1, -1] + cov[0, 0] - 2 * cov[0, -1]

    n_moves = n_warmup + n_records * thin
    return LadderResult(
        lambdas=lambdas,
        log_z_reference=log_z0,
        log_z_bar=float(log_z0 - np.sum(df)),
        log_z_bar_stderr=float(np.sqrt(np.sum(dfe**2))),
        log_z_mbar=float(log_z0 - (f_k[-1] - f_k[0])),
        log_z_mbar_stderr=float(math.sqrt(max(var_last, 0.0))),
        delta_f=df,
        delta_f_stderr=dfe,
        trap_energy=trap_e,
        coulomb_energy=coul_e,
        target_samples=x_target[:: strides[-1]],
        strides=strides,
        statistical_inefficiency=g,
        acceptance=np.asarray(acc_sum) / max(n_records * thin, 1),
        step_sizes=np.asarray(eps),
        # per chain and state: n_leapfrog + 1 energy+gradient evaluations per HMC move, one
        # V_C per burn-in step (the weight increment) and one T, V_C per record
        n_energy_evals=int(
            n_states * n_chains * (n_moves * (n_leapfrog + 1) + n_warmup + n_records)
        ),
        wall_time=t2 - t1,
        compile_time=t1 - t0,
    )


def _resample_if_degenerate(key, x, logw, force):
    """Systematic resampling of one state's chains if their Kish ESS < M/2 or ``force``."""
    m = logw.shape[0]
    w = jnp.exp(logw - jnp.max(logw))
    w = w / jnp.sum(w)
    ess = 1.0 / jnp.sum(w * w)
    idx = systematic(key, w, m)
    do = (ess < 0.5 * m) | force
    x = jnp.where(do, x[idx], x)
    return x, jnp.where(do, jnp.zeros_like(logw), logw)
