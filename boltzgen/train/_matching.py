r"""Data-driven training of continuous flows: flow matching and stochastic interpolants.

Given samples of p (from Monte Carlo), these objectives regress a vector field onto a
conditional target; no energy is evaluated during training.

* Conditional flow matching (straight line; Lipman et al. 2022, Tong et al. 2023):
  x_t = (1 − t) x₀ + t x₁, x₀ ~ the CNF's Gaussian base, x₁ ~ data, t ~ U(0, 1),

      L(v) = E |v(t, x_t) − (x₁ − x₀)|²,

  minimised by the marginal velocity v*(t, x) = E[x₁ − x₀ | x_t = x], whose ODE maps the base
  onto the data distribution. The base scale of the CNF is FROZEN during flow matching (the
  target assumes that base; a trainable σ would be pulled by the regression, not by the
  density).
* Stochastic interpolants (Albergo, Boffi, Vanden-Eijnden, arXiv 2303.08797), see
  :mod:`boltzgen.flows._interpolant`: x_t = α_t x₀ + β_t x₁ + γ_t z with

      L_b = E[½|b̂|² − (α̇x₀ + β̇x₁ + γ̇z)·b̂],     L_η = E[½|η̂|² − z·η̂],

  minimised by b = E[α̇x₀ + β̇x₁ + γ̇z | x_t] and η = E[z | x_t]. Both are evaluated
  antithetically (x_t^± = α x₀ + β x₁ ± γ z, averaged): the γ̇ z·b̂ term, whose variance
  diverges like 1/t at the ends, then cancels to leading order. x₀ comes from a Gaussian source
  or from samples of a density A (data A → data B, e.g. two temperatures of one system).

Couplings of (x₀, x₁). Both objectives are valid for ANY coupling π(x₀, x₁) whose marginals are
the source and the target: the learned marginal field still transports one onto the other.
Within a minibatch of B draws of each, every permutation of the x₁ keeps both empirical
marginals exactly, so these pairings (:data:`PAIRINGS`) are all valid:

* ``"independent"``: x₀ and x₁ drawn independently.
* ``"ot"``: minibatch optimal transport, the permutation minimising Σ_b |x₀_b − x₁_π(b)|²
  (Hungarian algorithm); straighter paths, smaller variance of the target.
* ``"aligned"`` (particles (N, d)): each independent pair is aligned, x₁ replaced by the
  relabelled (and, with ``rotations``, rotated) copy g·x₁ closest to x₀.
* ``"equivariant_ot"`` (particles): equivariant flow matching of Klein, Krämer, Noé
  (arXiv 2306.15030): the cost of every (x₀_b, x₁_c) is the distance after alignment,
  min_g |x₀_b − g·x₁_c|², then batch OT on that cost, with the aligned copies as partners.

Why aligning is allowed: for a permutation- (and rotation-) invariant energy, u(g·x) = u(x) for
every relabelling g of the particles (and proper rotation about the origin), and the Lebesgue
measure is invariant too, so g·x₁ ~ p whenever x₁ ~ p: for ANY choice of g — even one that
depends on x₀ — the partner g(x₀, x₁)·x₁ still has the Boltzmann distribution p, because p is
invariant under every g. The pairs (x₀, g·x₁) thus form a coupling of the base and p, and the
learned field transports the base onto p; with an invariant base and an equivariant field
the flow's q is invariant, so nothing is lost by learning only the aligned paths. Rotations are
only allowed (``rotations=True``) where the energy is rotation-invariant about the origin (a
radial trap, or a translation-invariant system with zero centre of mass); they are proper
rotations (det = +1), found by the Kabsch algorithm. Reflections are never used.

The pairings are host-side NumPy/SciPy (assignment problems: the Hungarian algorithm has no
JAX implementation), called from inside the jitted training chunk through
``jax.pure_callback``; the losses and the minibatch draw are pure and jit-able.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from scipy.optimize import linear_sum_assignment

from boltzgen.flows._cnf import CNF
from boltzgen.flows._interpolant import Interpolant
from boltzgen.flows._nn import param_dtype

PAIRINGS = ("independent", "ot", "aligned", "equivariant_ot")

# Brute force over all N! relabellings (vectorised) up to this N, the Hungarian algorithm above.
_MAX_BRUTE_FORCE_N = 6
_CHUNK = 1 << 21  # entries of the (pairs, N!, N) gather per chunk


# --------------------------------------------------------------------------------------------
# Losses (pure, jit-able)
# --------------------------------------------------------------------------------------------


def _bcast(t, x):
    """T of shape (n,) reshaped to broadcast against a batch x of shape (n, ...)."""
    return jnp.reshape(t, t.shape + (1,) * (x.ndim - 1)).astype(x.dtype)


def _sum_event(a):
    return jnp.sum(a.reshape(a.shape[0], -1), axis=1)


def flow_matching_loss(cnf: CNF, x0, x1, t) -> Float[Array, ""]:
    r"""Conditional flow-matching loss (1/B) Σ_b |v(t_b, x_t,b) − (x₁_b − x₀_b)|².

    x_t = (1 − t) x₀ + t x₁ (projected onto the zero-COM subspace with ``cnf.zero_com``); the
    squared norm is summed over the event and averaged over the batch.

    Args:
        cnf: the CNF; only ``cnf.field`` enters.
        x0: base samples, shape (B, *event_shape).
        x1: data samples (paired with x0), same shape.
        t: times in [0, 1], shape (B,).
    """
    x0 = cnf.project(x0)
    x1 = cnf.project(x1)
    xt = (1.0 - _bcast(t, x0)) * x0 + _bcast(t, x0) * x1
    v = jax.vmap(cnf.field)(t, xt)
    return jnp.mean(_sum_event((v - (x1 - x0)) ** 2))


def interpolant_loss(interp: Interpolant, x0, x1, z, t):
    r"""Stochastic-interpolant losses L_b + L_η, antithetic in z; returns (total, (L_b, L_η)).

    With x_t^± = α x₀ + β x₁ ± γ z and the target velocities m ± γ̇ z, m = α̇x₀ + β̇x₁:

        L_b = ½ Σ_± E[½|b̂(x^±)|² − (m ± γ̇z)·b̂(x^±)],
        L_η = ½ Σ_± E[½|η̂(x^±)|² ∓ z·η̂(x^±)].

    Each is minimised by the conditional expectation (b = E[m + γ̇z | x_t], η = E[z | x_t]);
    the minimum values are −½E|b|² and −½E|η|², so the losses are negative.

    Args:
        interp: the :class:`Interpolant`.
        x0: samples of ρ₀, shape (B, *event_shape).
        x1: samples of ρ₁ paired with x0, same shape.
        z: standard normal noise (projected with ``zero_com``), same shape.
        t: times in (0, 1) (γ̇ is infinite at the ends), shape (B,).
    """
    x0, x1, z = interp.project(x0), interp.project(x1), interp.project(z)
    _, _, g, da, db, dg = interp.coefficients(t)
    mean = interp.interpolate(t, x0, x1, jnp.zeros_like(z))
    gz = _bcast(g, z) * z
    drift = _bcast(da, x0) * x0 + _bcast(db, x1) * x1
    dgz = _bcast(dg, z) * z
    # Both antithetic copies in one batch of 2B (one network call per field).
    t2 = jnp.concatenate([t, t])
    xt = jnp.concatenate([mean + gz, mean - gz])
    target_b = jnp.concatenate([drift + dgz, drift - dgz])
    target_eta = jnp.concatenate([z, -z])
    b = jax.vmap(interp.velocity)(t2, xt)
    eta = jax.vmap(interp.denoiser)(t2, xt)
    loss_b = jnp.mean(_sum_event(0.5 * b * b - target_b * b))
    loss_eta = jnp.mean(_sum_event(0.5 * eta * eta - target_eta * eta))
    return loss_b + loss_eta, (loss_b, loss_eta)


# --------------------------------------------------------------------------------------------
# Pairing (host-side NumPy)
# --------------------------------------------------------------------------------------------


def kabsch_rotations(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    r"""Proper rotations R_m = argmin_{R ∈ SO(d)} Σ_i |x0_{m,i} − R x1_{m,i}|² (Kabsch).

    Rotations about the origin (no translation is fitted: centre the data first for
    translation-invariant systems). With H = Σ_i x1_i x0_iᵀ = U S Vᵀ, R = V D Uᵀ,
    D = diag(1, …, 1, sign det(V Uᵀ)), so det R = +1 always (no reflections).

    Args:
        x0: reference configurations, shape (M, N, d).
        x1: configurations to rotate, shape (M, N, d).

    Returns:
        R of shape (M, d, d); the rotated copy is ``x1 @ R.transpose(0, 2, 1)``.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    x1 = np.asarray(x1, dtype=np.float64)
    h = np.einsum("mni,mnj->mij", x1, x0)
    u, _, vt = np.linalg.svd(h)
    v = np.swapaxes(vt, -1, -2)
    ut = np.swapaxes(u, -1, -2)
    sign = np.sign(np.linalg.det(v @ ut))
    sign = np.where(sign == 0, 1.0, sign)
    d = np.ones(h.shape[:-1])
    d[:, -1] = sign
    return (v * d[:, None, :]) @ ut


def best_permutations(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    r"""Relabellings π_m = argmin_π Σ_i |x0_{m,i} − x1_{m,π(i)}|² (optimal assignment).

    Exact: a vectorised brute force over all N! permutations for N ≤ 6, the Hungarian
    algorithm (``scipy.optimize.linear_sum_assignment``) per pair above.

    Args:
        x0: references, shape (M, N, d).
        x1: configurations to relabel, shape (M, N, d).

    Returns:
        Integer array (M, N); the relabelled copy is ``np.take_along_axis(x1, π[..., None], 1)``.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    x1 = np.asarray(x1, dtype=np.float64)
    m, n, _ = x0.shape
    cost = np.sum((x0[:, :, None, :] - x1[:, None, :, :]) ** 2, axis=-1)  # (M, N, N)
    if n <= _MAX_BRUTE_FORCE_N:
        perms = np.array(list(itertools.permutations(range(n))), dtype=np.intp)  # (P, N)
        rows = np.arange(n)
        out = np.empty((m, n), dtype=np.intp)
        step = max(1, _CHUNK // (len(perms) * n))
        for s in range(0, m, step):
            c = cost[s : s + step][:, rows[None, :], perms]  # (m', P, N)
            out[s : s + step] = perms[np.argmin(c.sum(axis=-1), axis=1)]
        return out
    out = np.empty((m, n), dtype=np.intp)
    for k in range(m):
        _, cols = linear_sum_assignment(cost[k])
        out[k] = cols
    return out


def align_particles(
    x0: np.ndarray, x1: np.ndarray, *, rotations: bool = False, n_iter: int = 3
) -> np.ndarray:
    r"""The copy g·x1 of each x1 (relabelled, optionally rotated) closest to its x0.

    Alternates the optimal relabelling (:func:`best_permutations`) and, with ``rotations``,
    the optimal proper rotation (:func:`kabsch_rotations`) ``n_iter`` times. Each step
    minimises |x0 − g·x1|² over one factor with the other fixed (the identity is always a
    candidate), so the distance never increases: |x0 − g·x1| ≤ |x0 − x1|. The result is a
    relabelled and rotated copy of x1, with the same energy under any permutation- (and
    rotation-) invariant energy.

    Args:
        x0: references, shape (M, N, d).
        x1: configurations to align, shape (M, N, d).
        rotations: also rotate (about the origin), only for rotation-invariant energies.
        n_iter: alternations of relabelling and rotation (1 is used without ``rotations``).

    Returns:
        The aligned copies, shape (M, N, d), float64.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    y = np.asarray(x1, dtype=np.float64)
    if x0.ndim != 3 or x0.shape != y.shape:
        raise ValueError(f"expected two arrays of shape (M, N, d), got {x0.shape}, {y.shape}")
    for _ in range(n_iter if rotations else 1):
        perm = best_permutations(x0, y)
        y = np.take_along_axis(y, perm[..., None], axis=1)
        if rotations:
            r = kabsch_rotations(x0, y)
            y = y @ np.swapaxes(r, -1, -2)
    return y


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise squared distances |a_i − b_j|² of flattened batches, shape (len(a), len(b))."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    c = np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2.0 * a @ b.T
    return np.maximum(c, 0.0)


def pair_batch(
    x0: np.ndarray, x1: np.ndarray, *, pairing: str = "independent", rotations: bool = False
) -> np.ndarray:
    r"""Partners for the batch x0: a permuted (and, for particles, aligned) copy of x1.

    Returns x̃1 with x̃1_b the partner of x0_b (see the module docstring for :data:`PAIRINGS`
    and why each is a valid coupling). ``"independent"`` returns x1 unchanged.

    Cost: ``"ot"`` one B×B assignment; ``"aligned"`` B alignments; ``"equivariant_ot"`` B²
    alignments (each a vectorised search over the N! relabellings for N ≤ 6, else one
    Hungarian solve per pair in a Python loop, which is slow for B² ≳ 10⁴ pairs) plus one B×B
    assignment.

    Args:
        x0: source samples, shape (B, *event_shape).
        x1: target samples, shape (B, *event_shape).
        pairing: one of :data:`PAIRINGS`.
        rotations: with ``"aligned"`` / ``"equivariant_ot"``, also align by proper rotations.
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing {pairing!r}; valid: {', '.join(PAIRINGS)}")
    dtype = np.asarray(x1).dtype
    x0 = np.asarray(x0, dtype=np.float64)
    x1 = np.asarray(x1, dtype=np.float64)
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {x0.shape} and {x1.shape}")
    if pairing == "independent":
        return x1.astype(dtype)
    if pairing == "ot":
        _, cols = linear_sum_assignment(_sq_dist(x0, x1))
        return x1[cols].astype(dtype)
    if x0.ndim != 3:
        raise ValueError(f"pairing {pairing!r} needs particles (B, N, d), got {x0.shape}")
    if pairing == "aligned":
        return align_particles(x0, x1, rotations=rotations).astype(dtype)
    # equivariant_ot: align every (b, c) pair, OT on the aligned cost.
    bsz = x0.shape[0]
    a = np.repeat(x0, bsz, axis=0)  # a[b·B + c] = x0_b
    c = np.tile(x1, (bsz, 1, 1))  # c[b·B + c] = x1_c
    aligned = align_particles(a, c, rotations=rotations)
    cost = np.sum((a - aligned) ** 2, axis=(1, 2)).reshape(bsz, bsz)
    _, cols = linear_sum_assignment(cost)
    return aligned.reshape(bsz, bsz, *x0.shape[1:])[np.arange(bsz), cols].astype(dtype)


# --------------------------------------------------------------------------------------------
# Minibatches (inside the jitted training step)
# --------------------------------------------------------------------------------------------


def draw_batch(model, data_a, data_b, key, batch_size: int, t_min: float):
    """One minibatch: x0 (base or data A), x1 (data B), z, t ~ U(t_min, 1 − t_min)."""
    k0, k1, kz, kt = jax.random.split(key, 4)
    i1 = jax.random.randint(k1, (batch_size,), 0, data_b.shape[0])
    x1 = data_b[i1]
    if data_a is None:
        x0 = model.sample_base(batch_size, key=k0).astype(x1.dtype)
    else:
        x0 = data_a[jax.random.randint(k0, (batch_size,), 0, data_a.shape[0])]
    if isinstance(model, Interpolant):
        z = model.sample_noise(batch_size, key=kz).astype(x1.dtype)
    else:
        z = jnp.zeros_like(x1)
    t = jax.random.uniform(kt, (batch_size,), x1.dtype, t_min, 1.0 - t_min)
    return x0, x1, z, t


def as_data(model, x, name):
    """Samples as a device array of the model's dtype, projected (zero COM); shape checked."""
    shape = tuple(model.event_shape)
    x = jnp.asarray(x, dtype=param_dtype(model))
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or x.shape[0] < 1:
        raise ValueError(
            f"{name} must be samples of shape (n, {', '.join(map(str, shape))}), got {x.shape}"
        )
    return model.project(x)


__all__ = [
    "PAIRINGS",
    "align_particles",
    "as_data",
    "best_permutations",
    "draw_batch",
    "flow_matching_loss",
    "interpolant_loss",
    "kabsch_rotations",
    "pair_batch",
]
