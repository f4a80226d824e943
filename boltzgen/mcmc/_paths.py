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

In the reverse run the p-invariant move T_K is applied first; the schedule is given to the
shared annealing scan as μ = 1 − λ on the grid (0, 0, 1 − λ_{K−1}, …, 1 − λ_0), whose first step
has a zero increment and moves with T_K, so the kernel sequence is exactly T_K, …, T_1 (its last
move, at μ = 1, does not enter the weight).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from boltzgen.mcmc._checks import check_int, check_precision
from boltzgen.mcmc._moves import TARGET_ACCEPT, check_kernel
from boltzgen.mcmc._refine import _anneal_once, refine_anneal

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
    pilot_chains: int | None = None,
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
        kernel: ``"hmc"`` or ``"mala"``.
        n_leapfrog: leapfrog steps per HMC move.
        target_accept: target acceptance of the pilot's step-size adaptation.
        pilot_chains: chains of the forward pilot that fixes the step sizes (None: max(64, M/8)).
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
    x_p = np.asarray(p_positions)
    if x_p.ndim < 1 or x_p.shape[0] < 2:
        raise ValueError(f"p_positions needs at least 2 samples of p, got shape {x_p.shape}")
    if target_accept is None:
        target_accept = TARGET_ACCEPT[kernel]
    label = progress if isinstance(progress, str) else "paths"
    fwd = refine_anneal(
        jax.random.fold_in(key, 0),
        sample_q=sample_q,
        log_q=log_q,
        log_density=log_density,
        n_chains=n_chains,
        n_steps=n_steps,
        schedule=schedule,
        power=power,
        kernel=kernel,
        n_leapfrog=n_leapfrog,
        target_accept=target_accept,
        pilot_chains=pilot_chains,
        precision=precision,
        progress=f"{label} forward" if progress else False,
    )
    lam = np.asarray(fwd.diagnostics["schedule"], np.float64)
    eps = np.asarray(fwd.diagnostics["step_sizes"], np.float64)
    k = lam.size - 1
    mu = np.concatenate([[0.0, 0.0], 1.0 - lam[::-1][1:]])
    mu[-1] = 1.0
    eps_rev = np.concatenate([eps[::-1], eps[:1]])
    m_r = x_p.shape[0]
    dtype = jnp.float64 if precision == "float64" else jnp.float32

    def sample_p(_key, n):
        x = jnp.asarray(x_p, dtype)
        return x, jax.vmap(log_density)(x)

    with jax.enable_x64(precision == "float64"):
        host, info, wall, comp, _ = _anneal_once(
            jax.random.fold_in(key, 1),
            sample_q=sample_p,
            log_q=log_density,
            log_density=log_q,
            n_chains=m_r,
            lam=mu,
            kernel=kernel,
            n_leapfrog=n_leapfrog,
            step_size=eps_rev,
            target_accept=target_accept,
            adapt_rate=1.0,
            n_replicas=1,
            resample_threshold=None,
            reuse_move_density=False,
            dtype=dtype,
            progress=f"{label} reverse" if progress else False,
            label=f"{label} reverse",
        )
    n_grad = n_leapfrog if kernel == "hmc" else 1
    # reverse, per chain: log p at x_K, then per move n_grad gradients of both and one more
    # evaluation of both at the new position (the next increment and gradient)
    per_chain = 1 + (k + 1) * (n_grad + 1)
    return AnnealedPaths(
        log_w_forward=np.asarray(fwd.log_weights, np.float64),
        log_w_reverse=np.asarray(host["log_weight"], np.float64),
        schedule=lam,
        step_sizes=eps,
        acceptance_forward=np.asarray(fwd.diagnostics["acceptance"], np.float64),
        acceptance_reverse=np.asarray(info.acceptance, np.float64),
        n_energy_evals=int(fwd.n_energy_evals + m_r * per_chain),
        n_log_q_evals=int(fwd.n_log_q_evals + m_r * per_chain),
        wall_time=float(fwd.wall_time + wall),
        compile_time=float(fwd.compile_time + comp),
    )
