r"""Escorted Jarzynski / controlled Crooks paths between two densities (FEAT, arXiv 2504.11516).

Paths run from density a (t = 0) to density b (t = 1) on a time grid t_0 < … < t_K with steps
h_k = t_{k+1} − t_k, driven by a (learned) drift b(t, x) and score s(t, x) through the
Euler–Maruyama kernels

    (forward)  F_k(x_{k+1} | x_k) = N(x_{k+1}; x_k + h_k (b + ε_k s)(t_k, x_k), 2ε_k h_k I),
    (backward) B_k(x_k | x_{k+1}) = N(x_k; x_{k+1} − h_k (b − ε_k s)(t_{k+1}, x_{k+1}), 2ε_k h_k I),

with ε_k = ε(t_k + h_k/2) (the midpoint, so that ε(t) may vanish at the ends). The path
log-weights

    A_F = ln ρ̃_b(x_K) − ln ρ̃_a(x_0) + Σ_k [ln B_k(x_k|x_{k+1}) − ln F_k(x_{k+1}|x_k)],
          x_0 ~ ρ_a, path drawn with F;
    A_R = ln ρ̃_a(x_0) − ln ρ̃_b(x_K) + Σ_k [ln F_k(x_{k+1}|x_k) − ln B_k(x_k|x_{k+1})],
          x_K ~ ρ_b, path drawn with B backward in time,

satisfy E[e^{A_F}] = Z_b/Z_a and E[e^{A_R}] = Z_a/Z_b exactly, for ANY drift, score, ε and time
grid (the drift and score only change the variance). With ε = 0 the kernels degenerate and the
transport is the ODE ẋ = b(t, x); then

    A_F = ln ρ̃_b(x_1) − ln ρ̃_a(x_0) + ∫_0^1 ∇·b(t, x_t) dt,
    A_R = ln ρ̃_a(x_0) − ln ρ̃_b(x_1) − ∫_0^1 ∇·b(t, x_t) dt,

with a caller-supplied exact divergence, x and the integral integrated jointly by classical
fourth-order Runge–Kutta (exact up to the O(h⁴) integration error, unlike the stochastic case).

The forward and reverse works of :mod:`boltzgen.estimators` are W_F = −A_F and W_R = −A_R;
:func:`boltzgen.estimators._feat.feat` turns the log-weights into estimates of ln Z_b.

Everything is vectorised over paths (``vmap`` over the fields) and over steps (``lax.scan``);
there are no Python loops over samples or steps, and the simulation is one ``eqx.filter_jit``
call that runs unchanged on GPU. The Gaussian log-ratio terms are computed in float64 when
``jax_enable_x64`` is on (positions keep the dtype of the input samples).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from boltzgen.mcmc._moves import centre as _centre

__all__ = ["PathResult", "forward_paths", "reverse_paths", "time_grid"]


class PathResult(eqx.Module):
    """End points and log-weights of a batch of escorted paths.

    Attributes:
        x_a: the end points at t = 0, shape ``(n_paths, *event_shape)`` (the given samples of
            ρ_a for :func:`forward_paths`, the simulated end points for :func:`reverse_paths`).
        x_b: the end points at t = 1 (simulated for forward paths, the given samples of ρ_b
            for reverse paths).
        log_w: the path log-weight A_F (forward) or A_R (reverse), shape ``(n_paths,)``, float64
            when x64 is enabled; non-finite values are replaced by −inf (zero weight).
        log_density_a: ln ρ̃_a(x_a) (unnormalised), shape ``(n_paths,)``.
        log_density_b: ln ρ̃_b(x_b) (unnormalised), shape ``(n_paths,)``.
        path_term: the path part of ``log_w``: Σ_k [ln B_k − ln F_k] (forward) or
            Σ_k [ln F_k − ln B_k] (reverse); with ε = 0, +∫∇·b dt (forward) or −∫∇·b dt
            (reverse).
        n_nonfinite: number of paths whose log-weight was non-finite (masked to −inf),
            scalar ``int32``.
        n_drift_evals: total evaluations of the drift b (all paths).
        n_score_evals: total evaluations of the score s (0 when ε = 0 or ``score`` is None).
        n_divergence_evals: total evaluations of ∇·b (ε = 0 only).
        n_energy_evals: total evaluations of ln ρ̃_a and ln ρ̃_b together (2 per path).
        direction: ``"forward"`` or ``"reverse"``.
        deterministic: True for the ε = 0 (ODE, RK4) transport.
    """

    x_a: Array
    x_b: Array
    log_w: Float[Array, " n"]
    log_density_a: Float[Array, " n"]
    log_density_b: Float[Array, " n"]
    path_term: Float[Array, " n"]
    n_nonfinite: Int[Array, ""]
    n_drift_evals: int = eqx.field(static=True)
    n_score_evals: int = eqx.field(static=True)
    n_divergence_evals: int = eqx.field(static=True)
    n_energy_evals: int = eqx.field(static=True)
    direction: str = eqx.field(static=True)
    deterministic: bool = eqx.field(static=True)


def time_grid(n_steps: int) -> np.ndarray:
    """Uniform time grid t_k = k/K, k = 0…K, on [0, 1] (float64 NumPy array of length K + 1)."""
    if not isinstance(n_steps, (int, np.integer)) or isinstance(n_steps, bool) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    return np.linspace(0.0, 1.0, int(n_steps) + 1)


def _check_times(times, n_steps) -> np.ndarray:
    """The validated time grid (float64, strictly increasing, at least two points)."""
    if times is None:
        if n_steps is None:
            raise ValueError("give n_steps (uniform grid on [0, 1]) or an explicit times array")
        return time_grid(n_steps)
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or t.size < 2:
        raise ValueError(f"times must be a 1-D array of at least 2 points, got shape {t.shape}")
    if not np.all(np.isfinite(t)) or not np.all(np.diff(t) > 0):
        raise ValueError("times must be finite and strictly increasing")
    if n_steps is not None and n_steps != t.size - 1:
        raise ValueError(f"n_steps = {n_steps} but times has {t.size - 1} steps")
    return t


def _step_eps(eps, times: np.ndarray):
    """ε_k at the step midpoints t_k + h_k/2, and whether the transport is deterministic.

    Returns a float64 NumPy array when the values are concrete (the usual case), else a JAX
    array (ε traced, e.g. differentiated through): then it is assumed positive.
    """
    k = times.size - 1
    t_mid = 0.5 * (times[:-1] + times[1:])
    if callable(eps):
        e = jax.vmap(eps)(jnp.asarray(t_mid))
        e = jnp.broadcast_to(jnp.asarray(e), (k,))
    else:
        e = jnp.asarray(eps)
        if e.ndim == 0:
            e = jnp.broadcast_to(e, (k,))
        elif e.shape != (k,):
            raise ValueError(f"eps must be a scalar, a callable or shape ({k},), got {e.shape}")
    try:
        e_np = np.asarray(e, dtype=np.float64)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return e, False
    if not np.all(np.isfinite(e_np)) or np.any(e_np < 0.0):
        raise ValueError(f"eps must be finite and ≥ 0 on every step, got {e_np}")
    zero = e_np == 0.0
    if np.all(zero):
        return e_np, True
    if np.any(zero):
        raise ValueError(
            f"eps vanishes on {int(zero.sum())} of {k} steps (ε is evaluated at step midpoints): "
            "use ε > 0 on every step (ε(t) may vanish at t = 0, 1) or ε ≡ 0 (ODE transport)"
        )
    return e_np, False


def _check_event(x, zero_com: bool, name: str):
    if getattr(x, "ndim", 0) < 1:
        raise ValueError(f"{name} must have a leading path axis, got shape {jnp.shape(x)}")
    if zero_com and x.ndim < 3:
        raise ValueError(
            f"zero_com=True needs (N, d) particle events, i.e. {name} of shape "
            f"(n_paths, N, d); got {x.shape}"
        )


def _identity(x):
    return x


def _batched_fields(drift, score, proj):
    """(t, x_batch) → projected (b, s) on every path (s = 0 when ``score`` is None)."""

    def fields(t, x):
        b = proj(jax.vmap(drift, in_axes=(None, 0))(t, x).astype(x.dtype))
        if score is None:
            return b, jnp.zeros_like(b)
        s = proj(jax.vmap(score, in_axes=(None, 0))(t, x).astype(x.dtype))
        return b, s

    return fields


def _end_terms(x_a, x_b, log_density_a, log_density_b, wdt):
    la = jax.vmap(log_density_a)(x_a).astype(wdt)
    lb = jax.vmap(log_density_b)(x_b).astype(wdt)
    return la, lb


def _mask(log_w):
    ok = jnp.isfinite(log_w)
    return jnp.where(ok, log_w, -jnp.inf), jnp.sum(~ok).astype(jnp.int32)


def _work_dtype(dtype):
    """float64 when x64 is enabled, else float32 (never narrower than the positions)."""
    return jnp.promote_types(dtype, jnp.result_type(float))


@eqx.filter_jit
def _sde_paths(drift, score, x_start, log_density_a, log_density_b, key, times, eps, sign, proj):
    """Euler–Maruyama paths; ``sign`` = +1 forward (F from t_0), −1 reverse (B from t_K).

    Per step, with ξ the (projected) standard normal and σ = √(2εh), the new point is
    x + h(b + εs)(t_k, x) + σξ (forward) or x − h(b − εs)(t_{k+1}, x) + σξ (reverse), and the
    log-ratio of the opposite kernel to the one drawn from is ½|ξ|² − ½|u|² with
    u = h[(b − εs)(t_{k+1}, x_{k+1}) − (b + εs)(t_k, x_k)]/σ − ξ (both cases: the residual of
    the opposite kernel divided by σ). The normalisations of F_k and B_k cancel.
    """
    xdt = x_start.dtype
    wdt = _work_dtype(xdt)
    fields = _batched_fields(drift, score, proj)
    axes = tuple(range(1, x_start.ndim))
    n_steps = times.shape[0] - 1
    t_x = times.astype(xdt)
    h_w = jnp.diff(times).astype(wdt)
    e_w = eps.astype(wdt)
    keys = jax.random.split(key, n_steps)
    if sign > 0:
        t_now, t_next, hs, es = t_x[:-1], t_x[1:], h_w, e_w
    else:
        t_now, t_next, hs, es = t_x[::-1][:-1], t_x[::-1][1:], h_w[::-1], e_w[::-1]

    x0 = proj(x_start)
    b0, s0 = fields(t_now[0], x0)

    def step(carry, inp):
        x, b, s, acc = carry
        t_new, h, e, k = inp
        sig = jnp.sqrt(2.0 * e * h)
        xi = proj(jax.random.normal(k, x.shape, xdt))
        h_x, e_x, sig_x = h.astype(xdt), e.astype(xdt), sig.astype(xdt)
        if sign > 0:
            x_new = x + h_x * (b + e_x * s) + sig_x * xi
        else:
            x_new = x - h_x * (b - e_x * s) + sig_x * xi
        b_new, s_new = fields(t_new, x_new)
        bw, sw, bnw, snw = (a.astype(wdt) for a in (b, s, b_new, s_new))
        if sign > 0:  # later point = new, earlier point = current
            diff = (bnw - e * snw) - (bw + e * sw)
        else:  # later point = current, earlier point = new
            diff = (bw - e * sw) - (bnw + e * snw)
        xiw = xi.astype(wdt)
        u = (h / sig) * diff - xiw
        term = 0.5 * jnp.sum(xiw * xiw, axis=axes) - 0.5 * jnp.sum(u * u, axis=axes)
        return (x_new, b_new, s_new, acc + term), None

    acc0 = jnp.zeros(x_start.shape[:1], wdt)
    (x_end, _, _, acc), _ = jax.lax.scan(step, (x0, b0, s0, acc0), (t_next, hs, es, keys))
    x_a, x_b = (x0, x_end) if sign > 0 else (x_end, x0)
    la, lb = _end_terms(x_a, x_b, log_density_a, log_density_b, wdt)
    log_w = (lb - la + acc) if sign > 0 else (la - lb + acc)
    log_w, n_bad = _mask(log_w)
    return x_a, x_b, log_w, la, lb, acc, n_bad


@eqx.filter_jit
def _ode_paths(drift, divergence, x_start, log_density_a, log_density_b, times, sign, proj):
    """RK4 transport of (x, ∫∇·b dt) jointly; ``sign`` = −1 integrates from t_K back to t_0.

    The accumulated integral is Σ (h/6)(d_1 + 2d_2 + 2d_3 + d_4) with signed steps, i.e.
    +∫_0^1 ∇·b dt forward and −∫_0^1 ∇·b dt reverse: in both cases the path term of the weight.
    """
    xdt = x_start.dtype
    wdt = _work_dtype(xdt)
    t_seq = times if sign > 0 else times[::-1]
    t_now = t_seq[:-1]
    h_seq = jnp.diff(t_seq)  # negative in reverse

    def f(t, x):
        return proj(jax.vmap(drift, in_axes=(None, 0))(t, x).astype(xdt))

    def d(t, x):
        return jax.vmap(divergence, in_axes=(None, 0))(t, x).astype(wdt)

    def step(carry, inp):
        x, acc = carry
        t, h = inp
        tx, hx, half = t.astype(xdt), h.astype(xdt), (0.5 * h).astype(xdt)
        k1, d1 = f(tx, x), d(tx, x)
        x2 = x + half * k1
        k2, d2 = f(tx + half, x2), d(tx + half, x2)
        x3 = x + half * k2
        k3, d3 = f(tx + half, x3), d(tx + half, x3)
        x4 = x + hx * k3
        k4, d4 = f(tx + hx, x4), d(tx + hx, x4)
        x_new = x + (hx / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        acc = acc + (h.astype(wdt) / 6.0) * (d1 + 2.0 * d2 + 2.0 * d3 + d4)
        return (x_new, acc), None

    x0 = proj(x_start)
    acc0 = jnp.zeros(x_start.shape[:1], wdt)
    (x_end, acc), _ = jax.lax.scan(step, (x0, acc0), (t_now, h_seq))
    x_a, x_b = (x0, x_end) if sign > 0 else (x_end, x0)
    la, lb = _end_terms(x_a, x_b, log_density_a, log_density_b, wdt)
    log_w = (lb - la + acc) if sign > 0 else (la - lb + acc)
    log_w, n_bad = _mask(log_w)
    return x_a, x_b, log_w, la, lb, acc, n_bad


def _paths(
    sign,
    drift,
    score,
    x,
    *,
    log_density_a,
    log_density_b,
    key,
    n_steps,
    eps,
    times,
    divergence,
    zero_com,
) -> PathResult:
    name = "x0" if sign > 0 else "x1"
    if not callable(drift):
        raise TypeError(f"drift must be a callable drift(t, x), got {type(drift).__name__}")
    if score is not None and not callable(score):
        raise TypeError(f"score must be a callable score(t, x) or None, got {type(score)}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    _check_event(x, zero_com, name)
    t = _check_times(times, n_steps)
    e, deterministic = _step_eps(eps, t)
    proj = _centre if zero_com else _identity
    n, k = int(x.shape[0]), t.size - 1
    t_j = jnp.asarray(t, _work_dtype(x.dtype))
    if deterministic:
        if divergence is None:
            raise ValueError(
                "eps = 0 is the deterministic (ODE) transport: its weight needs the exact "
                "divergence ∇·b; pass divergence(t, x) (e.g. the trace of jax.jacfwd of the "
                "drift), or use eps > 0"
            )
        out = _ode_paths(drift, divergence, x, log_density_a, log_density_b, t_j, sign, proj)
        counts = dict(n_drift_evals=4 * k * n, n_score_evals=0, n_divergence_evals=4 * k * n)
    else:
        if key is None:
            raise ValueError("eps > 0 (stochastic paths) needs a PRNG key: key=jax.random.key(…)")
        e_j = jnp.asarray(e, _work_dtype(x.dtype))
        out = _sde_paths(drift, score, x, log_density_a, log_density_b, key, t_j, e_j, sign, proj)
        counts = dict(
            n_drift_evals=(k + 1) * n,
            n_score_evals=0 if score is None else (k + 1) * n,
            n_divergence_evals=0,
        )
    x_a, x_b, log_w, la, lb, acc, n_bad = out
    return PathResult(
        x_a=x_a,
        x_b=x_b,
        log_w=log_w,
        log_density_a=la,
        log_density_b=lb,
        path_term=acc,
        n_nonfinite=n_bad,
        n_energy_evals=2 * n,
        direction="forward" if sign > 0 else "reverse",
        deterministic=deterministic,
        **counts,
    )


def forward_paths(
    drift: Callable,
    score: Callable | None,
    x0: Float[Array, "n ..."],
    *,
    log_density_a: Callable,
    log_density_b: Callable,
    key=None,
    n_steps: int | None = None,
    eps: float | Callable | Array = 1.0,
    times=None,
    divergence: Callable | None = None,
    zero_com: bool = False,
) -> PathResult:
    r"""Forward escorted paths from samples of ρ_a and their log-weights A_F.

    x_{k+1} = x_k + h_k (b + ε_k s)(t_k, x_k) + √(2 ε_k h_k) ξ_k, ξ_k ~ N(0, I), and

        A_F = ln ρ̃_b(x_K) − ln ρ̃_a(x_0) + Σ_k [ln B_k(x_k|x_{k+1}) − ln F_k(x_{k+1}|x_k)],

    computed as Σ_k ½|ξ_k|² − ½|u_k|², u_k = h_k[(b − ε_k s)(t_{k+1}, x_{k+1}) −
    (b + ε_k s)(t_k, x_k)]/√(2ε_k h_k) − ξ_k. E[e^{A_F}] = Z_b/Z_a for any b, s, ε, grid; the
    forward work of :mod:`boltzgen.estimators` is W_F = −A_F. With ε ≡ 0: the RK4 ODE transport
    and A_F = ln ρ̃_b(x_1) − ln ρ̃_a(x_0) + ∫_0^1 ∇·b dt.

    Cost per path: K + 1 drift and K + 1 score evaluations (ε > 0), or 4K drift and 4K
    divergence evaluations (ε = 0, RK4), and one evaluation of each of ln ρ̃_a, ln ρ̃_b.
    The simulation is compiled once per (function objects, shapes, K): pass the same callables
    (or ``eqx.Module`` fields, whose arrays are traced) across calls to reuse it; ε and the
    grid values are traced, so changing them does not recompile.

    Args:
        drift: b(t, x) for ONE configuration x (any event shape), returning x's shape.
        score: s(t, x) (the score ∇ ln ρ_t of the interpolating density, or any field), same
            shapes; None means s = 0 (allowed: the weights stay exact). Unused when ε = 0.
        x0: samples of ρ_a, shape ``(n_paths, *event_shape)``.
        log_density_a: unnormalised ln ρ̃_a(x) = −u_a(x) of ONE configuration.
        log_density_b: unnormalised ln ρ̃_b(x) = −u_b(x) of ONE configuration.
        key: PRNG key (required for ε > 0); keyword-only, split once per step.
        n_steps: K, for the uniform grid t_k = k/K (or give ``times``).
        eps: ε as a scalar, a callable ε(t) (evaluated at step midpoints t_k + h_k/2, so it may
            vanish at t = 0 and 1), or an array of the K per-step values. ε ≡ 0 selects the
            deterministic transport; ε must otherwise be > 0 on every step.
        times: an explicit strictly increasing grid t_0 < … < t_K (a lives at t_0, b at t_K).
        divergence: ∇·b(t, x) of ONE configuration, required when ε = 0 (exact, e.g.
            ``jnp.trace(jax.jacfwd(lambda y: drift(t, y))(x).reshape(D, D))``). With
            ``zero_com`` it must be the divergence on the subspace, tr(P J_b P); for a
            translation-invariant drift b this is the full trace of the Jacobian of the
            projected field P b.
        zero_com: for (N, d) particle events: project x0, the noise, the drift and the score
            onto the zero-centre-of-mass subspace (subtract the particle mean), so paths stay
            centred and live in the (N − 1)d-dimensional subspace. Densities and kernels are
            then with respect to Lebesgue measure on the subspace in orthonormal coordinates:
            ρ_a and ρ_b must be normalised (or not) on the subspace, and Z_b/Z_a is the ratio of
            subspace integrals. The Gaussian kernels are (N − 1)d-dimensional with quadratic
            forms of the projected displacements (their normalisations cancel in ln B − ln F).

    Returns:
        :class:`PathResult` with ``log_w`` = A_F (non-finite → −inf, counted).

    Raises:
        ValueError: eps = 0 without ``divergence``, ε ≥ 0 violated, vanishing only on some
            steps, no key for ε > 0, a bad grid, or ``zero_com`` with a non-(N, d) event.
    """
    return _paths(
        1,
        drift,
        score,
        x0,
        log_density_a=log_density_a,
        log_density_b=log_density_b,
        key=key,
        n_steps=n_steps,
        eps=eps,
        times=times,
        divergence=divergence,
        zero_com=zero_com,
    )


def reverse_paths(
    drift: Callable,
    score: Callable | None,
    x1: Float[Array, "n ..."],
    *,
    log_density_a: Callable,
    log_density_b: Callable,
    key=None,
    n_steps: int | None = None,
    eps: float | Callable | Array = 1.0,
    times=None,
    divergence: Callable | None = None,
    zero_com: bool = False,
) -> PathResult:
    r"""Reverse escorted paths from samples of ρ_b and their log-weights A_R.

    Backward in time from x_K = x1: x_k = x_{k+1} − h_k (b − ε_k s)(t_{k+1}, x_{k+1}) +
    √(2 ε_k h_k) ξ_k, and

        A_R = ln ρ̃_a(x_0) − ln ρ̃_b(x_K) + Σ_k [ln F_k(x_{k+1}|x_k) − ln B_k(x_k|x_{k+1})],

    computed as Σ_k ½|ξ_k|² − ½|u_k|² with u_k = h_k[(b − ε_k s)(t_{k+1}, x_{k+1}) −
    (b + ε_k s)(t_k, x_k)]/√(2ε_k h_k) − ξ_k. E[e^{A_R}] = Z_a/Z_b for any b, s, ε, grid; the
    reverse work of :mod:`boltzgen.estimators` is W_R = −A_R. With ε ≡ 0: the ODE integrated
    by RK4 from t = 1 to 0 and A_R = ln ρ̃_a(x_0) − ln ρ̃_b(x_1) − ∫_0^1 ∇·b dt.

    Args:
        drift: b(t, x) for ONE configuration.
        score: s(t, x) or None (s = 0).
        x1: samples of ρ_b, shape ``(n_paths, *event_shape)``.
        log_density_a: unnormalised ln ρ̃_a of ONE configuration.
        log_density_b: unnormalised ln ρ̃_b of ONE configuration.
        key: PRNG key (required for ε > 0).
        n_steps: K for the uniform grid on [0, 1] (or give ``times``).
        eps: ε as in :func:`forward_paths` (the same ε_k enter F_k and B_k).
        times: explicit grid t_0 < … < t_K.
        divergence: exact ∇·b(t, x), required when ε = 0 (see :func:`forward_paths`).
        zero_com: project onto the zero-centre-of-mass subspace (see :func:`forward_paths`).

    Returns:
        :class:`PathResult` with ``log_w`` = A_R, ``x_b`` the given samples (projected when
        ``zero_com``) and ``x_a`` the simulated end points at t = 0.
    """
    return _paths(
        -1,
        drift,
        score,
        x1,
        log_density_a=log_density_a,
        log_density_b=log_density_b,
        key=key,
        n_steps=n_steps,
        eps=eps,
        times=times,
        divergence=divergence,
        zero_com=zero_com,
    )
