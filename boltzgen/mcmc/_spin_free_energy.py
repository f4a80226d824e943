r"""ln Z of spin systems from the uniform distribution at β = 0 (Z_0 = 2^N).

* :func:`thermodynamic_integration`: ln Z(β) = N ln 2 − ∫_0^β ⟨E⟩_{β'} dβ' with a nested
  Clenshaw–Curtis rule (:func:`clenshaw_curtis`), split at β_c for a ferromagnet;
* :func:`beta_annealing`: annealed importance sampling over β along :func:`beta_schedule`.

Both return a :class:`SpinFreeEnergy` with statistical (and, for TI, discretisation) errors.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from boltzgen.estimators import (
    MIN_TRUSTED_ESS,
    Cost,
    Estimate,
    importance_stderr,
    kish_ess,
    logmeanexp,
)
from boltzgen.mcmc._checks import check_beta, check_int
from boltzgen.mcmc._scan import progress_bar
from boltzgen.mcmc._spin_kernels import (
    _STEPS,
    CLUSTER_MIN_L,
    CLUSTER_WINDOW,
    SPIN_KERNELS,
    _auto_uses_cluster,
    _check_kernel,
    _check_rule,
    _check_system,
    _sweep,
    critical_beta,
    random_spins,
    spin_init,
)
from boltzgen.mcmc._spin_observables import _mean_stderr
from boltzgen.mcmc._spin_sampling import _chunk_sizes, _compiled, _simulate
from boltzgen.systems import AbstractSpinSystem


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

    def to_estimate(self, name: str) -> Estimate:
        """This result as an :class:`~boltzgen.estimators.Estimate` named ``name``.

        Thermodynamic integration carries its quadrature error (a note and ``extra``) and no
        ESS; β-annealing its Kish ESS, flagged ``low_ess`` below 100.
        """
        cost = Cost(
            n_sweeps=float(self.n_sweeps),
            n_site_updates=float(self.n_site_updates),
            wall_time=float(self.wall_time),
        )
        extra, notes, flags, ess = {}, (), set(), math.nan
        if self.method == "thermodynamic_integration":
            extra = dict(
                quadrature_error=float(self.quadrature_error),
                quadrature_error_noise=float(self.quadrature_error_noise),
                n_betas=int(np.size(self.betas)),
            )
            notes = (f"quadrature error {float(self.quadrature_error):.2g}",)
        else:
            ess = float(self.ess)
            flags = {"low_ess"} if ess < MIN_TRUSTED_ESS else set()
        return Estimate(
            name,
            float(self.log_z),
            float(self.log_z_stderr),
            "estimate",
            int(self.n_chains),
            ess,
            cost=cost,
            flags=flags,
            notes=notes,
            extra=extra,
        )


def clenshaw_curtis(m: int, a: float = -1.0, b: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    r"""Clenshaw–Curtis rule with m + 1 nodes on [a, b], increasing.

    Nodes x_k = a + (b − a)(1 − cos(kπ/m))/2, k = 0..m (clustered towards both ends, the ends
    included); weights from the exact moments of the Chebyshev polynomials,
    Σ_k w_k T_j(t_k) = ∫_{-1}^{1} T_j = 2/(1 − j²) (j even, else 0), j = 0..m. The rule with
    m/2 intervals uses every second node, so the pair gives a nested error estimate.
    """
    m = check_int("m", m, 1)
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
    n_warmup: int | None = None,
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
    node β_j > 0, ``n_chains`` chains from uniform spins do ``n_warmup`` + ``n_sweeps`` sweeps;
    ⟨E⟩_j is the mean over the measured sweeps, with standard error s_j = √(Var τ_int / n)
    (τ_int of block means of E, see :func:`~boltzgen.mcmc.kernels.integrated_autocorrelation_time`).
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
        n_warmup: discarded sweeps per chain (default ``n_sweeps // 4``); rounded up to whole
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
    beta = check_beta(beta, positive=True)
    n_betas = check_int("n_betas", n_betas, 1)
    n_chains = check_int("n_chains", n_chains, 2)
    n_sweeps = check_int("n_sweeps", n_sweeps)
    max_blocks = check_int("max_blocks", max_blocks, 4)
    rule = _check_rule(rule)
    n_warmup = n_sweeps // 4 if n_warmup is None else check_int("n_warmup", n_warmup, 0)
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
    n_burn_blocks = -(-n_warmup // block)
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
        n_steps = check_int("n_steps", n_steps)
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
    beta = check_beta(beta, positive=True)
    n_chains = check_int("n_chains", n_chains, 2)
    sweeps = check_int("sweeps_per_step", sweeps_per_step)
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
        bar = progress_bar(progress, n_steps, "β-AIS")
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
