r"""Vector fields v(x, t) of the continuous flows, each with its EXACT divergence tr(∂v/∂x).

* :class:`MLPField` — a plain MLP of [flatten(x), t] for any event shape; divergence by D
  Jacobian-vector products with the one-hot basis (:func:`divergence`), D = prod(event_shape).
* :class:`ParticleField` (``"mlp"``) and :class:`RadialBasisField` (``"rbf"``) — pairwise
  permutation- and rotation-equivariant fields on particles (N, d), closed-form divergence.
* :class:`RadiiField` (``"radii"``) — the radial-basis pair field whose pair coefficients also
  depend on both particles' distances from the centre (three-body information at pair cost),
  closed-form divergence.
* :class:`EnvironmentField` (``"env"``) — many-body equivariant (pair coefficients depend on
  both particles' radial environments), closed-form divergence.
* :class:`EGNNField` (``"egnn"``) — E(n)-equivariant message passing, divergence by N·d JVPs.

:func:`make_field` builds one by name. Every field starts at v ≡ 0 (zero last layers). With
``zero_com`` the particle fields act on the zero-centre-of-mass subspace {Σ_i x_i = 0} and the
divergence is the trace on that subspace, tr(P J P), P the centring projection. No stochastic
(Hutchinson) trace estimator is used anywhere: it would make log q a random variable and break
the importance weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from boltzgen.flows._nn import zero_last_mlp


def _centre(x: Float[Array, "n d"]) -> Float[Array, "n d"]:
    """X − x̄: the projection of ONE configuration (N, d) onto the zero-centre-of-mass subspace."""
    return x - jnp.mean(x, axis=0, keepdims=True)


def divergence(
    field: Callable, t, x: Float[Array, "..."], zero_com: bool = False
) -> Float[Array, ""]:
    r"""Exact divergence tr(∂v/∂x) of ``field(t, x)`` at ONE configuration x.

    tr J = Σ_k e_kᵀ J e_k over the D one-hot vectors e_k: D forward-mode JVPs (vmapped), the
    same cost as ``jax.jacfwd``; exact, no stochastic trace estimator. With ``zero_com``
    (x of shape (N, d), v tangent to {Σ_i x_i = 0}) the tangents are P e_k, with P the
    centring projection: Σ_k e_kᵀ J P e_k = tr(J P) = tr(Uᵀ J U) for any orthonormal basis U
    of the subspace (U Uᵀ = P), the trace on the subspace.
    """
    dim = x.size

    def flat(xf):
        return field(t, xf.reshape(x.shape)).reshape(-1)

    xf = x.reshape(-1)
    basis = jnp.eye(dim, dtype=x.dtype)
    if zero_com:
        basis = jax.vmap(lambda e: _centre(e.reshape(x.shape)).reshape(-1))(basis)
    jv = jax.vmap(lambda e: jax.jvp(flat, (xf,), (e,))[1])(basis)  # row k = J e_k
    return jnp.trace(jv)


class MLPField(eqx.Module):
    r"""A plain vector field v(x, t) = MLP([flatten(x), t]) for any event shape.

    The last layer is zero, so v ≡ 0 and the flow is the identity at initialisation.
    """

    mlp: eqx.nn.MLP
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, shape, *, key, hidden, depth):
        dim = math.prod(shape)
        self.mlp = zero_last_mlp(dim + 1, dim, hidden, depth, key=key)
        self.shape = tuple(shape)

    def __call__(self, t, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """V(x, t) on ONE configuration of shape ``shape``."""
        inp = jnp.concatenate([x.reshape(-1), jnp.reshape(t, (1,)).astype(x.dtype)])
        return self.mlp(inp).reshape(self.shape)

    def divergence(self, t, x: Float[Array, "..."]) -> Float[Array, ""]:
        """Exact tr(∂v/∂x) by D Jacobian-vector products (:func:`divergence`)."""
        return divergence(self, t, x)


def _squash(r2):
    """ρ(r²) = r²/(1 + r²): a bounded, smooth feature of a squared distance."""
    return r2 / (1.0 + r2)


class ParticleField(eqx.Module):
    r"""Permutation- and rotation-equivariant field on particles x ∈ R^{N×d}.

        v_i(x, t) = x_i ξ(|x_i|², t) + Σ_{j≠i} η(|x_i − x_j|², t) (x_i − x_j),

    ξ, η small scalar MLPs of (ρ(r²), t) with the bounded feature ρ(r²) = r²/(1 + r²) ∈ [0, 1):
    then |v| grows at most linearly in |x| and the ODE cannot blow up in finite time (a raw r²
    input makes v ~ |x|³ at large |x|). Relabelling the particles permutes the v_i the same
    way, and for an orthogonal R, v(xRᵀ) = v(x)Rᵀ, so with an isotropic base the density q is
    invariant under both. Only squared distances enter the networks (finite gradients at
    r = 0); the diagonal j = i is masked (its difference vector is zero anyway). Both last
    layers are zero, so v ≡ 0 at initialisation.

    With ``zero_com=True`` the field acts on the centre-of-mass-free subspace {Σ_i x_i = 0}:
    the one-body term uses the centred positions y_i = x_i − x̄ and has its particle mean
    removed, v = P[y ξ(|y|²)] + Σ_j η(r²_ij)(x_i − x_j) with P the projection onto the subspace
    (the pair term sums to zero over i already). The field is then translation-invariant and
    keeps Σ_i x_i fixed, and the divergence is the trace on the subspace, tr(P J P) (see
    :meth:`divergence`).
    """

    xi: eqx.nn.MLP
    eta: eqx.nn.MLP
    zero_com: bool = eqx.field(static=True)

    def __init__(self, *, key, hidden, depth, zero_com: bool = False):
        k1, k2 = jax.random.split(key)
        self.xi = zero_last_mlp(2, "scalar", hidden, depth, key=k1)
        self.eta = zero_last_mlp(2, "scalar", hidden, depth, key=k2)
        self.zero_com = bool(zero_com)

    def _coefficients(self, t, x):
        """ξ_i, η_ij, their derivatives in r² (η diagonal masked), pair differences, r²_ij."""
        n = x.shape[0]
        t = jnp.asarray(t, dtype=x.dtype)

        def scalar(mlp, r2):
            # (value, d value / d r²) of mlp(ρ(r²), t), one forward-mode pass.
            def f(r2):
                return mlp(jnp.stack([_squash(r2), t]))

            return jax.jvp(f, (r2,), (jnp.ones_like(r2),))

        y, r2_self, diff, r2 = _pair_geometry(x, self.zero_com)  # r² = 0 on the diagonal
        xi, dxi = jax.vmap(lambda r2: scalar(self.xi, r2))(r2_self)  # (N,)
        eta, deta = jax.vmap(jax.vmap(lambda r2: scalar(self.eta, r2)))(r2)  # (N, N)
        off = 1.0 - jnp.eye(n, dtype=x.dtype)
        return y, xi, dxi, eta * off, deta * off, diff, r2

    def __call__(self, t, x: Float[Array, "n d"]) -> Float[Array, "n d"]:
        """V(x, t) on ONE configuration of shape (N, d)."""
        return _pairwise_value(self._coefficients(t, x), self.zero_com)

    def divergence(self, t, x: Float[Array, "n d"]) -> Float[Array, ""]:
        r"""Exact tr(∂v/∂x) in closed form (one pass instead of N·d JVPs).

        With ξ' = dξ/d(r²) and ∂v_i/∂x_i = ξ_i I + 2ξ'_i x_i x_iᵀ + Σ_{j≠i} [η_ij I
        + 2η'_ij (x_i − x_j)(x_i − x_j)ᵀ],

            tr(∂v/∂x) = Σ_i [d ξ_i + 2ξ'_i |x_i|²] + Σ_{i≠j} [d η_ij + 2η'_ij r²_ij].

        With ``zero_com`` the trace is taken on the subspace, tr(P J P) = tr(J P). The pair
        term is translation-invariant (J_pair P = J_pair), so its trace is unchanged; the
        one-body term's Jacobian is P J_g P with J_g block-diagonal, and tr(J_g P) =
        Σ_i tr J_g,ii − (1/N) Σ_ij tr J_g,ij = (1 − 1/N) Σ_i tr J_g,ii.
        """
        return _pairwise_trace(self._coefficients(t, x), self.zero_com)


def _pair_geometry(x, zero_com: bool):
    """Centred positions y (or x), |y_i|², pair differences x_i − x_j and r²_ij (diagonal 0)."""
    y = _centre(x) if zero_com else x
    diff = x[:, None, :] - x[None, :, :]  # (N, N, d)
    return y, jnp.sum(y * y, axis=-1), diff, jnp.sum(diff * diff, axis=-1)


def _pairwise_value(coefficients, zero_com: bool):
    """V_i = P[y_i ξ_i] + Σ_j η_ij (x_i − x_j) from ``_coefficients``' output."""
    y, xi, _, eta, _, diff, _ = coefficients
    one_body = y * xi[:, None]
    if zero_com:
        one_body = _centre(one_body)
    return one_body + jnp.sum(eta[:, :, None] * diff, axis=1)


def _pairwise_trace(coefficients, zero_com: bool):
    """Closed-form tr(∂v/∂x) of the pairwise field (see :meth:`ParticleField.divergence`)."""
    y, xi, dxi, eta, deta, _, r2 = coefficients
    n, d = y.shape
    one_body = jnp.sum(d * xi + 2.0 * dxi * jnp.sum(y * y, axis=-1))
    if zero_com:
        one_body = (1.0 - 1.0 / n) * one_body
    return one_body + jnp.sum(d * eta + 2.0 * deta * r2)


def _radial_basis(r2, n_rbf: int, r_max: float):
    """(φ_k(s), dφ_k/d(r²)), k < K, s = √(r² + δ²), for squared distances r2 → (..., K).

    φ_k(s) = exp(−(s − μ_k)²/(2w²)), μ_k = k·r_max/(K − 1), w = δ = r_max/(K − 1).
    """
    width = r_max / (n_rbf - 1)
    mu = jnp.linspace(0.0, r_max, n_rbf, dtype=r2.dtype).reshape((1,) * r2.ndim + (n_rbf,))
    s = jnp.sqrt(r2 + width * width)[..., None]
    z = (s - mu) / width
    phi = jnp.exp(-0.5 * z * z)
    return phi, phi * (-z / width) / (2.0 * s)


def _check_basis(n_rbf: int, r_max: float) -> None:
    """ValueError unless n_rbf ≥ 2 and r_max > 0 (the radial basis needs both)."""
    if n_rbf < 2:
        raise ValueError(f"n_rbf must be >= 2, got {n_rbf}")
    if not r_max > 0:
        raise ValueError(f"r_max must be > 0, got {r_max}")


def _time_features(t, dtype):
    """[t, cos(kπt), sin(kπt)] for k = 1..4: a smooth embedding of t ∈ [0, 1]."""
    t = jnp.asarray(t, dtype=dtype)
    k = jnp.arange(1, 5, dtype=dtype) * jnp.pi
    return jnp.concatenate([t[None], jnp.cos(k * t), jnp.sin(k * t)])


class RadialBasisField(eqx.Module):
    r"""The pairwise equivariant field of :class:`ParticleField` with radial-basis scalars.

        v_i = x_i ξ(|x_i|², t) + Σ_{j≠i} η(r²_ij, t)(x_i − x_j),
        ξ = Σ_k a_k(t) φ_k(s),  η = Σ_k c_k(t) φ_k(s),  s = √(r² + δ²),
        φ_k(s) = exp(−(s − μ_k)²/(2w²)),  μ_k = k·r_max/(K − 1),  w = δ = r_max/(K − 1),

    with the 2K coefficients (a, c) from ONE small MLP of t (Fourier features of t), evaluated
    once per configuration and time instead of once per pair: the N² pair terms cost K
    exponentials each, so the field is 5–17× cheaper than per-pair MLPs (d = 12 to 165) and
    the exact closed-form divergence (same formula) stays affordable. s is smooth at r = 0
    (dφ/dr² is finite), the φ_k are bounded, and η → 0 beyond r_max, so |v| grows at most linearly.
    Same symmetries and zero-COM handling as :class:`ParticleField`; v ≡ 0 at initialisation.

    Args:
        key: PRNG key.
        hidden: width of the time MLP.
        depth: hidden layers of the time MLP.
        n_rbf: K, number of radial basis functions.
        r_max: largest centre μ_{K−1} (in the system's length units; distances beyond it see
            only the tails).
        zero_com: act on the zero-centre-of-mass subspace (see :class:`ParticleField`).
    """

    coeff: eqx.nn.MLP
    n_rbf: int = eqx.field(static=True)
    r_max: float = eqx.field(static=True)
    zero_com: bool = eqx.field(static=True)

    def __init__(
        self, *, key, hidden, depth, n_rbf: int = 32, r_max: float = 8.0, zero_com: bool = False
    ):
        _check_basis(n_rbf, r_max)
        self.coeff = zero_last_mlp(9, 2 * n_rbf, hidden, depth, key=key)
        self.n_rbf = int(n_rbf)
        self.r_max = float(r_max)
        self.zero_com = bool(zero_com)

    def _basis(self, r2):
        """(φ_k(s), dφ_k/d(r²)) for squared distances r2 (any shape) → (..., K)."""
        return _radial_basis(r2, self.n_rbf, self.r_max)

    def _coefficients(self, t, x):
        """ξ_i, η_ij, their derivatives in r² (η diagonal masked), pair differences, r²_ij."""
        n = x.shape[0]
        y, r2_self, diff, r2 = _pair_geometry(x, self.zero_com)
        c = self.coeff(_time_features(t, x.dtype))
        a, b = c[: self.n_rbf], c[self.n_rbf :]
        phi, dphi = self._basis(r2_self)
        xi, dxi = phi @ a, dphi @ a
        phi, dphi = self._basis(r2)
        off = 1.0 - jnp.eye(n, dtype=x.dtype)
        return y, xi, dxi, (phi @ b) * off, (dphi @ b) * off, diff, r2

    def __call__(self, t, x: Float[Array, "n d"]) -> Float[Array, "n d"]:
        """V(x, t) on ONE configuration of shape (N, d)."""
        return _pairwise_value(self._coefficients(t, x), self.zero_com)

    def divergence(self, t, x: Float[Array, "n d"]) -> Float[Array, ""]:
        """Exact tr(∂v/∂x), the closed form of :meth:`ParticleField.divergence`."""
        return _pairwise_trace(self._coefficients(t, x), self.zero_com)


def _gaussian_rbf(r2, n_rbf: int, r_max: float):
    """Φ_k(√(r² + δ²)), k < K: :func:`_radial_basis` without the derivative."""
    return _radial_basis(r2, n_rbf, r_max)[0]


def _dense(key, n_in: int, n_out: int, *, zero: bool = False):
    """(W, b) of a dense layer, LeCun-uniform like eqx.nn.Linear (all zero with ``zero``)."""
    if zero:
        return jnp.zeros((n_in, n_out)), jnp.zeros((n_out,))
    lim = 1.0 / math.sqrt(n_in)
    kw, kb = jax.random.split(key)
    return (
        jax.random.uniform(kw, (n_in, n_out), minval=-lim, maxval=lim),
        jax.random.uniform(kb, (n_out,), minval=-lim, maxval=lim),
    )


class EGNNLayer(eqx.Module):
    """One message-passing layer of :class:`EGNNField` (weights as plain arrays)."""

    w_src: Float[Array, "h h"]
    w_dst: Float[Array, "h h"]
    w_edge: Float[Array, "k h"]
    b_edge: Float[Array, " h"]
    w_msg: Float[Array, "h h"]
    b_msg: Float[Array, " h"]
    w_coord: Float[Array, " h"]
    b_coord: Float[Array, ""]
    w_node: Float[Array, "2h h"]
    b_node: Float[Array, " h"]
    w_out: Float[Array, "h h"]
    b_out: Float[Array, " h"]

    def __init__(self, hidden: int, n_rbf: int, *, key):
        ks = jax.random.split(key, 6)
        self.w_src, self.b_edge = _dense(ks[0], hidden, hidden)
        self.w_dst, _ = _dense(ks[1], hidden, hidden)
        self.w_edge, _ = _dense(ks[2], n_rbf, hidden)
        self.w_msg, self.b_msg = _dense(ks[3], hidden, hidden)
        w, b = _dense(ks[4], hidden, 1, zero=True)  # coordinate update starts at zero
        self.w_coord, self.b_coord = w[:, 0], b[0]
        self.w_node, self.b_node = _dense(ks[5], 2 * hidden, hidden)
        self.w_out, self.b_out = _dense(jax.random.fold_in(key, 7), hidden, hidden)

    def __call__(self, h, x, off, n_rbf: int, r_max: float):
        """(h, x) → updated (h, x) for ONE configuration; ``off`` masks the diagonal i = j."""
        diff = x[:, None, :] - x[None, :, :]
        r2 = jnp.sum(diff * diff, axis=-1)
        rbf = _gaussian_rbf(r2, n_rbf, r_max)
        # the first edge layer on [h_i, h_j, φ(r_ij)], split so no (N, N, 2h + K) concat is built
        a = (h @ self.w_src)[:, None, :] + (h @ self.w_dst)[None, :, :] + rbf @ self.w_edge
        m = jax.nn.silu(
            jax.nn.silu(a + self.b_edge[None, None]) @ self.w_msg + self.b_msg[None, None]
        )
        m = m * off[:, :, None]
        # bounded coordinate update: |x_i − x_j|/(r_ij + 1) < 1 and |tanh| < 1
        c = jnp.tanh(m @ self.w_coord + self.b_coord) * off
        unit = diff / (jnp.sqrt(r2 + 1e-12) + 1.0)[..., None]
        x = x + jnp.sum(c[..., None] * unit, axis=1)
        agg = jnp.sum(m, axis=1) / (h.shape[0] - 1)
        u = jax.nn.silu(jnp.concatenate([h, agg], axis=-1) @ self.w_node + self.b_node[None])
        return h + u @ self.w_out + self.b_out[None], x


class EGNNField(eqx.Module):
    r"""A many-body E(n)-equivariant message-passing field (EGNN, Satorras et al. 2021).

    Node features h_i⁰ = A[τ(t), φ(|y_i|²)] (Fourier features τ of t, radial basis φ of the
    squared distance to the centre — the origin without ``zero_com``); then L layers

        m_ij = σ(W_m σ(A h_i + B h_j + C φ(r²_ij) + a) + b),
        x_i ← x_i + Σ_{j≠i} tanh(w·m_ij + c) (x_i − x_j)/(r_ij + 1),
        h_i ← h_i + MLP([h_i, Σ_{j≠i} m_ij/(N − 1)]),

    and v = x^L − x⁰ (projected onto {Σ_i v_i = 0} with ``zero_com``). Unlike the pairwise
    fields, the coefficient of the pair (i, j) depends on every particle through h and the
    moving x^l, so three-body (angular, coordination) structure is representable. The updates
    are bounded (each term below 1 in size), so the ODE cannot blow up; the coordinate layers
    start at zero, so v ≡ 0 at initialisation.

    Divergence: EXACT, by N·d forward-mode JVPs (no closed form); with ``zero_com`` the tangents
    are P e_k, giving tr(J P), the trace on the subspace. It costs ≈ N·d field evaluations,
    so use it where the pairwise fields are too weak (LJ13), not by default.

    Args:
        key: PRNG key.
        hidden: width h of the node features and messages.
        depth: number L of message-passing layers.
        n_rbf: radial basis functions of the distances.
        r_max: largest radial-basis centre (length units).
        zero_com: act on the zero-centre-of-mass subspace.
    """

    embed_w: Float[Array, "k h"]
    embed_b: Float[Array, " h"]
    layers: tuple[EGNNLayer, ...]
    n_rbf: int = eqx.field(static=True)
    r_max: float = eqx.field(static=True)
    zero_com: bool = eqx.field(static=True)

    def __init__(
        self, *, key, hidden, depth, n_rbf: int = 16, r_max: float = 4.0, zero_com: bool = False
    ):
        _check_basis(n_rbf, r_max)
        if depth < 1:
            raise ValueError(f"EGNN depth (message-passing layers) must be >= 1, got {depth}")
        k0, *ks = jax.random.split(key, depth + 1)
        self.embed_w, self.embed_b = _dense(k0, 9 + n_rbf, hidden)
        self.layers = tuple(EGNNLayer(hidden, n_rbf, key=k) for k in ks)
        self.n_rbf = int(n_rbf)
        self.r_max = float(r_max)
        self.zero_com = bool(zero_com)

    def __call__(self, t, x: Float[Array, "n d"]) -> Float[Array, "n d"]:
        """V(x, t) on ONE configuration of shape (N, d)."""
        n = x.shape[0]
        y = _centre(x) if self.zero_com else x
        tf = jnp.broadcast_to(_time_features(t, x.dtype), (n, 9))
        feats = jnp.concatenate([tf, _gaussian_rbf(jnp.sum(y * y, -1), self.n_rbf, self.r_max)], -1)
        h = feats @ self.embed_w + self.embed_b[None]
        off = 1.0 - jnp.eye(n, dtype=x.dtype)
        z = x
        for layer in self.layers:
            h, z = layer(h, z, off, self.n_rbf, self.r_max)
        v = z - x
        return _centre(v) if self.zero_com else v

    def divergence(self, t, x: Float[Array, "n d"]) -> Float[Array, ""]:
        """Exact tr(∂v/∂x) (tr(J P) on the zero-COM subspace) by N·d JVPs."""
        return divergence(self, t, x, zero_com=self.zero_com)


class EnvironmentField(eqx.Module):
    r"""A many-body equivariant field with a closed-form exact divergence.

        v_i = P[y_i ξ(|y_i|², t)] + Σ_{j≠i} η_ij (x_i − x_j),
        η_ij = f(r²_ij, s_i, s_j, t),   s_i^m = Σ_{k≠i} φ_m(r²_ik),  m < M,

    where s_i ∈ R^M is particle i's radial environment (soft neighbour counts in M Gaussian
    shells φ_m of s = √(r² + δ²), as :class:`RadialBasisField`'s basis) and f is an MLP of
    [φ(r²_ij), s_i, s_j, τ(t)] (K radial basis functions of the pair distance, Fourier
    features τ of t), evaluated on all N² pairs at once. The pair coefficient thus depends on
    every particle (the environments of both ends: a surface and a core particle move
    differently), which the pairwise fields cannot express. ξ is the one-body radial-basis
    expansion of :class:`RadialBasisField`. Permutation-, rotation- and (with ``zero_com``)
    translation-equivariant; the pair term is projected onto {Σ_i v_i = 0} (η is not
    symmetric), and starts at zero like ξ, so v ≡ 0 at initialisation.

    Divergence (exact, closed form, one forward-mode pass through f): only x_i's own block
    enters, ∂v_i/∂x_i = Σ_j [η_ij I + (x_i − x_j) ∇_{x_i}η_ijᵀ], and
    ∇_{x_i}η_ij = 2 f_r (x_i − x_j) + f_{s_i}·∇_{x_i}s_i + f_{s_j}·∇_{x_i}s_j with
    ∇_{x_i}s_i^m = Σ_k 2φ'_m(r²_ik)(x_i − x_k) and ∇_{x_i}s_j^m = 2φ'_m(r²_ij)(x_i − x_j), so

        tr ∂v_i/∂x_i = Σ_j [d η_ij + D f_ij · (2r²_ij, T_ij, 2φ'(r²_ij) r²_ij)],
        T^m_ij = Σ_{k≠i} 2φ'_m(r²_ik) (x_i − x_j)·(x_i − x_k),

    D f · u the directional derivative of f (one JVP). The pair term is translation-invariant,
    so projecting it leaves the subspace trace tr(J P) = tr J unchanged; the one-body term's
    trace is that of :class:`RadialBasisField`. Cost O(N³ M) for T, negligible next to the
    N² MLP evaluations at N ≤ 55.

    Args:
        key: PRNG key.
        hidden: width of f's hidden layers and of the one-body time MLP.
        depth: hidden layers of f (≥ 1) and of the time MLP.
        n_rbf: K, radial basis functions of the distances (and of |y_i|²).
        r_max: largest radial-basis centre (length units).
        n_env: M, environment shells.
        zero_com: act on the zero-centre-of-mass subspace.
    """

    one_body: RadialBasisField
    w_in: Float[Array, "k h"]
    b_in: Float[Array, " h"]
    hidden_layers: tuple[tuple[Float[Array, "h h"], Float[Array, " h"]], ...]
    w_out: Float[Array, " h"]
    b_out: Float[Array, ""]
    n_rbf: int = eqx.field(static=True)
    n_env: int = eqx.field(static=True)
    r_max: float = eqx.field(static=True)
    zero_com: bool = eqx.field(static=True)

    def __init__(
        self,
        *,
        key,
        hidden,
        depth,
        n_rbf: int = 16,
        r_max: float = 4.0,
        n_env: int = 8,
        zero_com: bool = False,
    ):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if n_env < 2:
            raise ValueError(f"n_env must be >= 2, got {n_env}")
        k1, k2, *ks = jax.random.split(key, depth + 2)
        self.one_body = RadialBasisField(
            key=k1, hidden=hidden, depth=depth, n_rbf=n_rbf, r_max=r_max, zero_com=zero_com
        )
        self.w_in, self.b_in = _dense(k2, n_rbf + 2 * n_env + 9, hidden)
        self.hidden_layers = tuple(_dense(k, hidden, hidden) for k in ks[: depth - 1])
        w, b = _dense(ks[-1], hidden, 1, zero=True)
        self.w_out, self.b_out = w[:, 0], b[0]
        self.n_rbf, self.n_env, self.r_max = int(n_rbf), int(n_env), float(r_max)
        self.zero_com = bool(zero_com)

    def _pair(self, t, x, trace: bool):
        """η_ij (diagonal 0), with ``trace`` also D f·u per pair (see above), and x_i − x_j."""
        n = x.shape[0]
        diff = x[:, None, :] - x[None, :, :]
        r2 = jnp.sum(diff * diff, axis=-1)
        off = 1.0 - jnp.eye(n, dtype=x.dtype)
        phi, dphi = _radial_basis(r2, self.n_env, self.r_max)  # the M shells
        phi, dphi = phi * off[..., None], dphi * off[..., None]
        env = jnp.sum(phi, axis=1)  # (N, M): s_i
        w_r = self.w_in[: self.n_rbf]
        w_si = self.w_in[self.n_rbf : self.n_rbf + self.n_env]
        w_sj = self.w_in[self.n_rbf + self.n_env : self.n_rbf + 2 * self.n_env]
        w_t = self.w_in[self.n_rbf + 2 * self.n_env :]
        bias = _time_features(t, x.dtype) @ w_t + self.b_in

        def f(r2, si, sj):
            # the first layer on [φ(r²_ij), s_i, s_j, τ(t)], split: no (N, N, K + 2M + 9) concat
            a = _gaussian_rbf(r2, self.n_rbf, self.r_max) @ w_r + si @ w_si + sj @ w_sj
            h = jax.nn.silu(a + bias[None, None])
            for w, b in self.hidden_layers:
                h = jax.nn.silu(h @ w + b[None, None])
            return h @ self.w_out + self.b_out

        si = jnp.broadcast_to(env[:, None, :], (n, n, self.n_env))
        sj = jnp.broadcast_to(env[None, :, :], (n, n, self.n_env))
        if not trace:
            return f(r2, si, sj) * off, None, diff
        gram = jnp.einsum("ija,ika->ijk", diff, diff)  # (x_i − x_j)·(x_i − x_k)
        t_ij = 2.0 * jnp.einsum("ijk,ikm->ijm", gram, dphi)
        eta, deta = jax.jvp(f, (r2, si, sj), (2.0 * r2, t_ij, 2.0 * dphi * r2[..., None]))
        return eta * off, deta * off, diff

    def __call__(self, t, x: Float[Array, "n d"]) -> Float[Array, "n d"]:
        """V(x, t) on ONE configuration of shape (N, d)."""
        eta, _, diff = self._pair(t, x, trace=False)
        pair = jnp.sum(eta[:, :, None] * diff, axis=1)
        if self.zero_com:
            pair = _centre(pair)
        return self.one_body(t, x) + pair

    def divergence(self, t, x: Float[Array, "n d"]) -> Float[Array, ""]:
        """Exact tr(∂v/∂x) (on the zero-COM subspace with ``zero_com``), in closed form."""
        eta, deta, _ = self._pair(t, x, trace=True)
        return self.one_body.divergence(t, x) + jnp.sum(x.shape[1] * eta + deta)


class RadiiField(eqx.Module):
    r"""The radial-basis pair field with pair coefficients that also see both particles' radii.

        v_i = P[y_i ξ(|y_i|², t)] + Σ_{j≠i} η_ij (x_i − x_j),
        η_ij = φ(r²_ij)ᵀ C(t) [ψ(|y_i|²) + ψ(|y_j|²)],

    with φ the K radial basis functions of :class:`RadialBasisField` on the pair distance,
    ψ = [1, ψ_1, …, ψ_L] the same Gaussian shells on the radius |y_i| (y the centred positions
    with ``zero_com``, else x: the distance from the trap centre), and the K·(L + 1) entries of
    C(t) and the one-body coefficients from ONE small MLP of t. In a trap, particles of the
    core and of an outer shell at the same pair distance are moved differently, which a field
    of r_ij alone cannot express; ψ_0 = 1 keeps :class:`RadialBasisField` as a special case.
    η is symmetric, so the pair term sums to zero over i and keeps the centre of mass.

    Cost per evaluation N²·K·(L + 1) multiply-adds (no per-pair MLP). Divergence exact, in
    closed form: ∂v_i/∂x_i = Σ_j [η_ij I +
    (x_i − x_j)∇_{x_i}η_ijᵀ] and ∇_{x_i}η_ij = 2η_r (x_i − x_j) + η_{ρ_i}∇_{x_i}ρ_i +
    η_{ρ_j}∇_{x_i}ρ_j, with ∇_{x_i}ρ_i = 2(1 − 1/N)y_i and ∇_{x_i}ρ_j = −2y_j/N for centred
    radii (2x_i and 0 otherwise). The pair term is translation-invariant, so the trace on the
    zero-COM subspace equals the full trace; the one-body trace is :class:`RadialBasisField`'s.

    Args:
        key: PRNG key.
        hidden: width of the time MLP.
        depth: hidden layers of the time MLP.
        n_rbf: K, radial basis functions of the distances.
        r_max: largest radial-basis centre (of distances and radii; length units).
        n_radii: L, radial shells of |y_i|.
        zero_com: act on the zero-centre-of-mass subspace (see :class:`ParticleField`).
    """

    coeff: eqx.nn.MLP
    n_rbf: int = eqx.field(static=True)
    n_radii: int = eqx.field(static=True)
    r_max: float = eqx.field(static=True)
    zero_com: bool = eqx.field(static=True)

    def __init__(
        self,
        *,
        key,
        hidden,
        depth,
        n_rbf: int = 32,
        r_max: float = 8.0,
        n_radii: int = 8,
        zero_com: bool = False,
    ):
        _check_basis(n_rbf, r_max)
        if n_radii < 2:
            raise ValueError(f"n_radii must be >= 2, got {n_radii}")
        self.coeff = zero_last_mlp(9, n_rbf * (n_radii + 2), hidden, depth, key=key)
        self.n_rbf, self.n_radii = int(n_rbf), int(n_radii)
        self.r_max = float(r_max)
        self.zero_com = bool(zero_com)

    def _parts(self, t, x, trace: bool):
        """One-body coefficients, η_ij (diagonal 0), with ``trace`` D η·u per pair, x_i − x_j."""
        n = x.shape[0]
        k, m = self.n_rbf, self.n_radii + 1
        y, rho, diff, r2 = _pair_geometry(x, self.zero_com)
        c = self.coeff(_time_features(t, x.dtype))
        a, cmat = c[:k], c[k:].reshape(k, m)
        phi, dphi = _radial_basis(rho, k, self.r_max)
        xi, dxi = phi @ a, dphi @ a
        off = 1.0 - jnp.eye(n, dtype=x.dtype)
        psi, dpsi = _radial_basis(rho, self.n_radii, self.r_max)  # (N, L): ψ_l(ρ_i), dψ_l/dρ
        psi = jnp.concatenate([jnp.ones_like(rho)[:, None], psi], axis=-1)
        phi, dphi = _radial_basis(r2, k, self.r_max)  # (N, N, K)
        amat = phi @ cmat  # (N, N, L + 1): φ(r²_ij)ᵀ C
        pair_psi = psi[:, None, :] + psi[None, :, :]
        eta = jnp.sum(amat * pair_psi, axis=-1) * off
        one = (y, xi, dxi)
        if not trace:
            return one, eta, None, diff
        dpsi = jnp.concatenate([jnp.zeros_like(rho)[:, None], dpsi], axis=-1)
        eta_r = jnp.sum((dphi @ cmat) * pair_psi, axis=-1)
        eta_i = jnp.einsum("ijl,il->ij", amat, dpsi)  # ∂η_ij/∂ρ_i
        eta_j = jnp.einsum("ijl,jl->ij", amat, dpsi)  # ∂η_ij/∂ρ_j
        proj_i = jnp.einsum("ija,ia->ij", diff, y)  # (x_i − x_j)·y_i
        proj_j = jnp.einsum("ija,ja->ij", diff, y)  # (x_i − x_j)·y_j
        if self.zero_com:
            radial = 2.0 * (1.0 - 1.0 / n) * eta_i * proj_i - 2.0 / n * eta_j * proj_j
        else:
            radial = 2.0 * eta_i * proj_i
        return one, eta, (2.0 * r2 * eta_r + radial) * off, diff

    def __call__(self, t, x: Float[Array, "n d"]) -> Float[Array, "n d"]:
        """V(x, t) on ONE configuration of shape (N, d)."""
        (y, xi, _), eta, _, diff = self._parts(t, x, trace=False)
        one_body = y * xi[:, None]
        if self.zero_com:
            one_body = _centre(one_body)
        return one_body + jnp.sum(eta[:, :, None] * diff, axis=1)

    def divergence(self, t, x: Float[Array, "n d"]) -> Float[Array, ""]:
        """Exact tr(∂v/∂x) (on the zero-COM subspace with ``zero_com``), in closed form."""
        return self.value_and_divergence(t, x)[1]

    def value_and_divergence(self, t, x: Float[Array, "n d"]):
        """(v(x, t), tr ∂v/∂x) from one evaluation of the bases (what the CNF's ODE needs)."""
        (y, xi, dxi), eta, deta, diff = self._parts(t, x, trace=True)
        n, d = y.shape
        one_body = y * xi[:, None]
        trace = jnp.sum(d * xi + 2.0 * dxi * jnp.sum(y * y, axis=-1))
        if self.zero_com:
            one_body = _centre(one_body)
            trace = (1.0 - 1.0 / n) * trace
        value = one_body + jnp.sum(eta[:, :, None] * diff, axis=1)
        return value, trace + jnp.sum(d * eta + deta)


#: Particle vector fields by name (``CNF(..., field=...)``).
PARTICLE_FIELDS = ("rbf", "radii", "mlp", "env", "egnn")


def make_field(
    shape,
    kind: str = "rbf",
    *,
    key,
    hidden,
    depth,
    zero_com=False,
    n_rbf=32,
    r_max=8.0,
    n_radii=8,
):
    """The vector field for configurations of ``shape``.

    Particles (N, d), N > 1: ``kind`` = ``"rbf"`` (:class:`RadialBasisField`), ``"radii"``
    (:class:`RadiiField`), ``"mlp"``
    (:class:`ParticleField`), ``"env"`` (:class:`EnvironmentField`) or ``"egnn"``
    (:class:`EGNNField`); any other shape: :class:`MLPField` (``kind`` ignored).
    ``zero_com`` needs particles (ValueError otherwise); ``n_radii`` is the ``"radii"`` field's
    number of radial shells (ignored by the others).
    """
    shape = tuple(shape)
    if not (len(shape) == 2 and shape[0] > 1):
        if zero_com:
            raise ValueError(
                f"zero_com needs particles, an event shape (N, d) with N > 1; got {shape}"
            )
        return MLPField(shape, key=key, hidden=hidden, depth=depth)
    if kind == "rbf":
        return RadialBasisField(
            key=key, hidden=hidden, depth=depth, n_rbf=n_rbf, r_max=r_max, zero_com=zero_com
        )
    if kind == "radii":
        return RadiiField(
            key=key,
            hidden=hidden,
            depth=depth,
            n_rbf=n_rbf,
            r_max=r_max,
            n_radii=n_radii,
            zero_com=zero_com,
        )
    if kind == "mlp":
        return ParticleField(key=key, hidden=hidden, depth=depth, zero_com=zero_com)
    if kind == "env":
        return EnvironmentField(
            key=key, hidden=hidden, depth=depth, n_rbf=n_rbf, r_max=r_max, zero_com=zero_com
        )
    if kind == "egnn":
        return EGNNField(
            key=key, hidden=hidden, depth=depth, n_rbf=n_rbf, r_max=r_max, zero_com=zero_com
        )
    raise ValueError(f"unknown particle field {kind!r}; valid: {', '.join(PARTICLE_FIELDS)}")


__all__ = [
    "EGNNField",
    "EGNNLayer",
    "EnvironmentField",
    "MLPField",
    "PARTICLE_FIELDS",
    "ParticleField",
    "RadialBasisField",
    "RadiiField",
    "divergence",
    "make_field",
]
