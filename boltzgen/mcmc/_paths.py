r"""Annealed paths both ways between a normalised sampler q and p: two-sided path bounds.

Forward paths are AIS from q to p along π_λ ∝ q^{1-λ} p^λ (:func:`refine_anneal`, with the
step sizes fixed in advance by its pilot run):

    A_F = Σ_{k=1}^{K} (λ_k − λ_{k−1}) [log p − log q](x_{k−1}),   x_k ~ T_k(x_{k−1}, ·),

with T_k a reversible (HMC or MALA) move leaving π_{λ_k} invariant, so E[e^{A_F}] = Z_p (Z_q = 1).

Reverse paths run the same protocol backwards from x_K ~ p: for k = K, …, 1,

    x_{k−1} ~ T_k(x_k, ·),   A_R += (λ_{k−1} − λ_k) [log p − log q](x_{k−1}),

the same kernels (same λ_k, step size and leapfrog count) in the opposite order. Because each
T_k satisfies detailed balance with respect to π_{λ_k}, the path measures obey Crooks' relation
P_F[path] / P_R[reversed path] = e^{A_F − ln Z_p}, A_R = −A_F of the same path, so

    E_F[e^{A_F}] = Z_p,   E_R[e^{A_R}] = 1/Z_p,
    −mean(A_F) ≥ βF = −ln Z_p ≥ mean(A_R)   (second law, Jensen),

and BAR on the pair (works W_F = −A_F, W_R = −A_R) is the minimum-variance estimate. The upper
bound and the forward Jarzynski estimate are exact for any q. **The reverse quantities assume
x_K are exact equilibrium samples of p**; with approximate ones (the final states of neural-MCMC
chains) the lower bound is only as good as those samples. Both bounds tighten as K grows: the
gaps are the KL divergences between the forward and reverse path measures, which vanish like
1/K for a smooth schedule.

One program serves all three runs (a pilot that adapts the step sizes, the forward run, the
reverse run): the same chunked scan of :func:`~boltzgen.mcmc.kernels.ais_step` with π_0 = q,
π_1 = p, the λ grid, the step sizes and a flag "adapt" as inputs, so it is compiled once. The
forward grid is (0, 0, λ_1, …, λ_K) and the reverse grid (1, 1, λ_{K−1}, …, λ_0): each has K + 1
moves, the first with a zero increment, so the kernels are T_0, T_1, …, T_K forward and
T_K, …, T_1, T_0 in reverse (T_0 at the end of either does not enter its weight), exactly each
other's reversal. log q is evaluated after every move (not recovered from the move's density:
at λ = 1 that recovery is undefined, and the reverse run starts there).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from boltzgen.mcmc._ais import AISState, ais_init, ais_step, annealing_schedule
from boltzgen.mcmc._checks import check_int, check_precision
from boltzgen.mcmc._moves import TARGET_ACCEPT, adapt_step_size, check_kernel, scale_step_size
from boltzgen.mcmc._scan import compile_scans, progress_bar, run_scans, split_evenly

__all__ = ["AnnealedPaths", "annealed_paths"]


@dataclasses.dataclass(frozen=True)
class AnnealedPaths:
    r"""Output of :func:`annealed_paths`.

    Attributes:
        log_w_forward: A_F of the forward paths from q, shape ``(M_F,)`` (float64).
        log_w_reverse: A_R of the reverse paths from the given samples of p, ``(M_R,)``.
        schedule: the forward λ grid, length K + 1.
        step_sizes: the fixed step size of each kernel T_1 … T_K (from the forward pilot run).
        acceptance_forward: mean acceptance per forward step, ``(K,)``.
        acceptance_reverse: mean acceptance per reverse move, ``(K + 1,)`` (T_K first).
        n_energy_evals: evaluations of log p (with or without gradient), both directions.
        n_log_q_evals: evaluations of log q, both directions.
        wall_time: seconds of the runs, compilation excluded.
        compile_time: seconds of compilation.
    """

    log_w_forward: np.ndarray
    log_w_reverse: np.ndarray
    schedule: np.ndarray
    step_sizes: np.ndarray
    acceptance_forward: np.ndarray
    acceptance_reverse: np.ndarray
    n_energy_evals: int
    n_log_q_evals: int
    wall_time: float
    compile_time: float

    @property
    def n_steps(self) -> int:
        """K, the path length in moves."""
        return int(self.schedule.size - 1)

    @property
    def upper_bound(self) -> float:
        """−mean(A_F) ≥ βF."""
        return float(-np.mean(self.log_w_forward))

    @property
    def lower_bound(self) -> float:
        """mean(A_R) ≤ βF (for exact samples of p)."""
        return float(np.mean(self.log_w_reverse))


def annealed_paths(
    key: jax.Array,
    *,
    sample_q: Callable,
    log_q: Callable,
    log_density: Callable,
    p_positions,
    n_chains: int = 256,
    n_steps: int = 100,
    schedule="power",
    power: float = 2.0,
    kernel: str = "hmc",
    n_leapfrog: int = 5,
    target_accept: float | None = None,
    precision: str = "float64",
    progress: bool | str = False,
) -> AnnealedPaths:
    r"""Forward AIS paths from q to p and the same protocol reversed from samples of p.

    Args:
        key: PRNG key.
        sample_q: ``sample_q(key, n) -> (x, log_q)``, exact samples of the normalised q.
        log_q: log q of ONE configuration (normalised, differentiable).
        log_density: unnormalised log p of ONE configuration (−βE).
        p_positions: equilibrium samples of p, shape ``(M_R, *event_shape)``; all are used as
            reverse starting points.
        n_chains: M_F, forward paths.
        n_steps: K, moves per path.
        schedule: ``"power"``, ``"linear"`` or an explicit λ grid (see :func:`refine_anneal`).
        power: exponent of the power schedule.
        kernel: ``"hmc"``, ``"mala"`` or ``"rwm"`` (random-walk Metropolis: no gradient of
            ln q or ln p, for samplers whose ∇ ln q is expensive, e.g. a CNF).
        n_leapfrog: leapfrog steps per HMC move.
        target_accept: target acceptance of the pilot's step-size adaptation (the pilot is a
            forward run of ``n_chains`` paths, so that all three runs share one program).
        precision: ``"float64"`` or ``"float32"``.
        progress: progress bars (a string labels them).

    Returns:
        An :class:`AnnealedPaths` with both sets of path log-weights and their cost.

    Raises:
        ValueError: bad sizes, kernel or precision, or fewer than 2 samples of p.
    """
    check_kernel(kernel)
    check_precision(precision)
    n_chains = check_int("n_chains", n_chains, 2)
    n_leapfrog = check_int("n_leapfrog", n_leapfrog)
    x_p = np.asarray(p_positions)
    if x_p.ndim < 1 or x_p.shape[0] < 2:
        raise ValueError(f"p_positions needs at least 2 samples of p, got shape {x_p.shape}")
    if target_accept is None:
        target_accept = TARGET_ACCEPT[kernel]
    lam = annealing_schedule(n_steps, schedule, power)
    k = lam.size - 1
    label = progress if isinstance(progress, str) else "paths"
    dtype = jnp.float64 if precision == "float64" else jnp.float32
    m_r = x_p.shape[0]
    grid_f = np.concatenate([[0.0], lam])  # K + 1 moves: T_0, T_1, ..., T_K
    grid_r = np.concatenate([[1.0], lam[::-1]])  # T_K, ..., T_1, T_0
    step_kw = dict(
        log_density_0=log_q,
        log_density_1=log_density,
        kernel=kernel,
        n_leapfrog=n_leapfrog,
        target_accept=float(target_accept),
        reuse_move_density=False,
    )

    def init(x, eps0):
        st = ais_init(
            x, log_density_0=log_q, log_density_1=log_density, step_size=eps0, kernel=kernel
        )
        return st._replace(step_size=jnp.asarray(eps0, dtype))

    def body(carry, xs):
        state, adapt = carry
        key, lp, ln, eps = xs
        e = jnp.where(adapt, state.step_size, eps)
        new, info = ais_step(key, state, lp, ln, step_size=e, **step_kw)
        nxt = jnp.where(adapt, adapt_step_size(e, info.acceptance, target_accept), e)
        return (new._replace(step_size=nxt.astype(dtype)), adapt), info

    with jax.enable_x64(precision == "float64"):
        k_q, k_pilot, k_fwd, k_rev = jax.random.split(key, 4)
        xq, _ = sample_q(k_q, 2 * n_chains)
        xq = jnp.asarray(xq, dtype)
        x_pilot, x_fwd = xq[:n_chains], xq[n_chains:]
        eps0 = scale_step_size(x_fwd)
        sizes = split_evenly(k + 1, 25)
        compiled: dict = {}
        compile_time = [0.0]

        def run(name, k_run, x, grid, eps, adapt):
            xs = (
                jax.random.split(k_run, k + 1),
                jnp.asarray(grid[:-1], dtype),
                jnp.asarray(grid[1:], dtype),
                jnp.asarray(eps, dtype),
            )
            if x.shape[0] not in compiled:  # one program per number of chains
                tc = time.perf_counter()
                init_c = jax.jit(init).lower(x, eps0).compile()
                carry = (jax.eval_shape(init, x, eps0), jnp.asarray(True))
                compiled[x.shape[0]] = (init_c, compile_scans(body, carry, xs, sizes))
                compile_time[0] += time.perf_counter() - tc
            init_c, chunks = compiled[x.shape[0]]
            bar = progress_bar(f"{label} {name}" if progress else False, k + 1, f"{label} {name}")
            carry, infos = run_scans(
                chunks, (init_c(x, eps0), jnp.asarray(adapt)), xs, sizes, bar=bar
            )
            bar.close()
            info = jax.tree.map(lambda *a: np.concatenate([np.asarray(v) for v in a]), *infos)
            state: AISState = carry[0]
            return np.asarray(state.chains.log_weight, np.float64), info

        t1 = time.perf_counter()
        _, pinfo = run("pilot", k_pilot, x_pilot, grid_f, np.zeros(k + 1), True)
        eps = np.asarray(pinfo.step_size, np.float64)  # ε of each forward move T_0 ... T_K
        w_f, finfo = run("forward", k_fwd, x_fwd, grid_f, eps, False)
        w_r, rinfo = run("reverse", k_rev, jnp.asarray(x_p, dtype), grid_r, eps[::-1], False)
        wall = time.perf_counter() - t1 - compile_time[0]
    n_grad = n_leapfrog if kernel == "hmc" else 1
    # per chain: ln p and ln q with gradients at the start, then per move n_grad gradients of
    # both and one more evaluation of both at the new position (pilot and forward: M each;
    # reverse: M_R); ln q also once per forward or pilot chain when q is sampled
    per_chain = 1 + (k + 1) * (n_grad + 1)
    n_eval = (2 * n_chains + m_r) * per_chain
    return AnnealedPaths(
        log_w_forward=w_f,
        log_w_reverse=w_r,
        schedule=lam,
        step_sizes=eps[1:],
        acceptance_forward=np.asarray(finfo.acceptance, np.float64)[1:],
        acceptance_reverse=np.asarray(rinfo.acceptance, np.float64),
        n_energy_evals=int(n_eval),
        n_log_q_evals=int(n_eval + 2 * n_chains),
        wall_time=float(wall),
        compile_time=float(compile_time[0]),
    )
