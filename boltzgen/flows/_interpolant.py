r"""Stochastic interpolants: a learned velocity b and denoiser η between two densities.

Albergo, Boffi, Vanden-Eijnden, arXiv 2303.08797. With x₀ ~ ρ₀ (a Gaussian base or samples of
a density A), x₁ ~ ρ₁ (samples of B), z ~ N(0, I) independent of both,

    x_t = α_t x₀ + β_t x₁ + γ_t z,   α_t = 1 − t,  β_t = t,  γ_t = √(a t(1 − t)),

(a = ``gamma_scale``) has marginal densities ρ_t joining ρ₀ and ρ₁, and

    b(t, x) = E[α̇ x₀ + β̇ x₁ + γ̇ z | x_t = x],    η(t, x) = E[z | x_t = x],
    ∂_t ρ_t + ∇·(b ρ_t) = 0,                          s = ∇ ln ρ_t = −η/γ.

b is the velocity of the probability-flow ODE ẋ = b(t, x), which maps ρ₀ onto ρ₁; with the
score, ẋ = b + ε s + √(2ε) ξ transports ρ_t for any ε(t) ≥ 0 (the escorted / FEAT paths of
:mod:`boltzgen.mcmc._escorted`). The fields are learned by :mod:`boltzgen.train._matching`.

The fields are those of :class:`boltzgen.flows._cnf.CNF` (:mod:`boltzgen.flows._fields`: a
permutation- and rotation-equivariant particle field, by default
:class:`~boltzgen.flows._fields.RadialBasisField`, for particles (N, d), else an
:class:`~boltzgen.flows._fields.MLPField`), so with a Gaussian source :meth:`Interpolant.as_cnf`
turns b into a CNF with the exact divergence and exact ln q.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from boltzgen.flows._cnf import CNF, centre_batch, gaussian_log_prob, support_dim
from boltzgen.flows._fields import MLPField, ParticleField, RadialBasisField, make_field
from boltzgen.flows._nn import param_dtype

SOURCES = ("gaussian", "data")


class Interpolant(eqx.Module):
    r"""Velocity b(t, x) and denoiser η(t, x) of the stochastic interpolant ρ₀ → ρ₁.

    Coefficients α_t = 1 − t, β_t = t, γ_t = √(a t(1 − t)) with a = ``gamma_scale`` (a = 0 is
    the deterministic straight-line interpolant; then η and the score are not defined).

    Every method acts on ONE configuration x of shape ``event_shape`` and a scalar t, so
    ``velocity`` and ``score`` plug directly into
    :func:`boltzgen.mcmc._escorted.forward_paths` as ``drift`` and ``score``, with
    ``eps=interpolant.eps_schedule(eps0)``.

    The score s = −η/γ is singular at t = 0 and t = 1, where γ = 0 (the exact η vanishes
    there too, as γ, but a learned η̂ does not exactly). :meth:`score` therefore divides by
    γ(clip(t, t_min, 1 − t_min)) with t_min = ``score_t_min``: finite everywhere, and the
    exact −η/γ on [t_min, 1 − t_min]. The escorted paths' weights are exact for any score, so
    the clip only affects their variance. The product the SDE needs, ε(t) s with
    ε(t) = ε₀ γ(t)², is finite without any clip: :meth:`escort` returns −ε₀ γ η.

    Zero centre of mass (``zero_com=True``, particles (N, d)): the source, the noise z and the
    data live on {Σ_i x_i = 0}; both fields are centred particle fields, so b, η
    and s are tangent to the subspace.

    Args:
        event_shape: shape of one configuration.
        key: PRNG key of the initial weights.
        hidden: width of the fields' MLPs.
        depth: hidden layers per MLP.
        gamma_scale: a ≥ 0 in γ_t = √(a t(1 − t)).
        source: ``"gaussian"`` (x₀ ~ N(0, σ² I), σ = ``base_scale``, on the zero-COM subspace
            with ``zero_com``) or ``"data"`` (x₀ from samples of a density A).
        base_scale: σ of the Gaussian source (fixed, not trained).
        zero_com: work on the zero-centre-of-mass subspace (event shape (N, d), N > 1).
        score_t_min: the clip t_min of :meth:`score` (0 < t_min < ½).
        field: particle field, ``"rbf"``, ``"mlp"``, ``"env"`` or ``"egnn"`` (see :class:`CNF`).
        n_rbf: radial basis functions of the ``"rbf"`` field.
        r_max: largest radial-basis centre of the ``"rbf"`` field.
    """

    b: MLPField | ParticleField | RadialBasisField
    eta: MLPField | ParticleField | RadialBasisField
    shape: tuple[int, ...] = eqx.field(static=True)
    gamma_scale: float = eqx.field(static=True)
    source: str = eqx.field(static=True)
    base_scale: float = eqx.field(static=True)
    zero_com: bool = eqx.field(static=True)
    score_t_min: float = eqx.field(static=True)

    def __init__(
        self,
        event_shape,
        *,
        key: PRNGKeyArray,
        hidden: int = 64,
        depth: int = 2,
        gamma_scale: float = 1.0,
        source: str = "gaussian",
        base_scale: float = 1.0,
        zero_com: bool = False,
        score_t_min: float = 1e-3,
        field: str = "rbf",
        n_rbf: int = 32,
        r_max: float = 8.0,
    ):
        shape = tuple(int(s) for s in event_shape)
        if source not in SOURCES:
            raise ValueError(f"unknown interpolant source {source!r}; valid: {', '.join(SOURCES)}")
        if not gamma_scale >= 0:
            raise ValueError(f"gamma_scale must be >= 0, got {gamma_scale}")
        if not base_scale > 0:
            raise ValueError(f"base_scale must be > 0, got {base_scale}")
        if not 0.0 < score_t_min < 0.5:
            raise ValueError(f"score_t_min must be in (0, 0.5), got {score_t_min}")
        kb, ke = jax.random.split(key)
        kw = dict(hidden=hidden, depth=depth, zero_com=zero_com, n_rbf=n_rbf, r_max=r_max)
        self.b = make_field(shape, field, key=kb, **kw)
        self.eta = make_field(shape, field, key=ke, **kw)
        self.shape = shape
        self.gamma_scale = float(gamma_scale)
        self.source = source
        self.base_scale = float(base_scale)
        self.zero_com = bool(zero_com)
        self.score_t_min = float(score_t_min)

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one configuration."""
        return self.shape

    @property
    def n_dof(self) -> int:
        """Dimension of the space the densities live on ((N−1)d with ``zero_com``)."""
        return support_dim(self.shape, self.zero_com)

    # -- the interpolation path -------------------------------------------------------------

    def gamma(self, t) -> Array:
        """γ_t = √(a t(1 − t)) (zero at t = 0 and 1)."""
        t = jnp.asarray(t)
        return jnp.sqrt(jnp.maximum(self.gamma_scale * t * (1.0 - t), 0.0))

    def coefficients(self, t):
        r"""(α, β, γ, α̇, β̇, γ̇) at t; γ̇ = a(1 − 2t)/(2γ) is infinite at t = 0, 1."""
        t = jnp.asarray(t)
        g = self.gamma(t)
        dg = self.gamma_scale * (1.0 - 2.0 * t) / (2.0 * g)
        one = jnp.ones_like(t)
        return 1.0 - t, t, g, -one, one, dg

    def interpolate(self, t, x0, x1, z) -> Array:
        """X_t = α_t x₀ + β_t x₁ + γ_t z (one configuration, or a batch with t of shape (n,))."""
        a, b, g, *_ = self.coefficients(t)
        shape = jnp.shape(a) + (1,) * (jnp.ndim(x0) - jnp.ndim(a))
        a, b, g = (jnp.reshape(c, shape).astype(x0.dtype) for c in (a, b, g))
        return a * x0 + b * x1 + g * z

    def project(self, x: Float[Array, "n ..."]) -> Float[Array, "n ..."]:
        """A batch moved onto the support: centred (zero centre of mass) with ``zero_com``."""
        return centre_batch(x, self.zero_com)

    def sample_noise(self, n: int, *, key: PRNGKeyArray) -> Float[Array, "n ..."]:
        """``n`` draws of z ~ N(0, I) (projected onto the zero-COM subspace with ``zero_com``)."""
        dtype = param_dtype(self.b)
        return self.project(jax.random.normal(key, (n, *self.shape), dtype=dtype))

    def sample_base(self, n: int, *, key: PRNGKeyArray) -> Float[Array, "n ..."]:
        """``n`` draws of the Gaussian source N(0, σ² I) (``source="gaussian"``)."""
        return self.base_scale * self.sample_noise(n, key=key)

    def base_log_prob(self, x: Float[Array, "..."]) -> Float[Array, ""]:
        """Normalised ln N(x; 0, σ² I) of the Gaussian source at ONE configuration."""
        return gaussian_log_prob(x, jnp.asarray(self.base_scale, x.dtype), self.n_dof)

    # -- the learned fields -----------------------------------------------------------------

    def velocity(self, t, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """The velocity b(t, x) of the probability-flow ODE on ONE configuration."""
        return self.b(t, x)

    def velocity_divergence(self, t, x: Float[Array, "..."]) -> Float[Array, ""]:
        """Exact ∇·b(t, x) on ONE configuration (on the subspace with ``zero_com``)."""
        return self.b.divergence(t, x)

    def denoiser(self, t, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """The denoiser η(t, x) ≈ E[z | x_t = x] on ONE configuration."""
        return self.eta(t, x)

    def score(self, t, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """The score s = ∇ ln ρ_t = −η/γ, with γ taken at clip(t, t_min, 1 − t_min).

        Exact −η/γ for t ∈ [t_min, 1 − t_min]; bounded at the singular ends t = 0, 1.
        """
        tc = jnp.clip(jnp.asarray(t), self.score_t_min, 1.0 - self.score_t_min)
        return -self.eta(t, x) / self.gamma(tc).astype(x.dtype)

    def eps_schedule(self, eps0: float) -> Callable:
        """ε(t) = ε₀ γ(t)² (vanishes at t = 0, 1), the ``eps`` callable of the escorted paths."""
        eps0 = float(eps0)
        return lambda t: eps0 * self.gamma(t) ** 2

    def escort(self, t, x: Float[Array, "..."], eps0: float) -> Float[Array, "..."]:
        """ε(t) s(t, x) with ε(t) = ε₀ γ(t)²: equals −ε₀ γ η, finite for every t ∈ [0, 1]."""
        return -eps0 * self.gamma(t).astype(x.dtype) * self.eta(t, x)

    def as_cnf(self, *, n_steps: int = 20, solver: str = "rk4") -> CNF:
        """The probability-flow ODE ẋ = b(t, x) as a :class:`CNF` (Gaussian source only).

        Its base is the source N(0, σ² I) (on the zero-COM subspace with ``zero_com``), its
        field is b itself (shared, not copied), so ``sample_and_log_prob`` and ``log_prob``
        give ln q with the exact divergence, up to the ODE solver's error.
        """
        if self.source != "gaussian":
            raise ValueError(
                "as_cnf needs a Gaussian source (source='gaussian'); a data → data interpolant "
                "has no tractable base density"
            )
        cnf = CNF(
            self.shape,
            key=jax.random.key(0),  # throwaway weights, replaced by b below
            hidden=1,
            depth=1,
            n_steps=n_steps,
            solver=solver,
            base_scale=self.base_scale,
            zero_com=self.zero_com,
        )
        return eqx.tree_at(lambda c: c.field, cnf, self.b)


__all__ = ["Interpolant", "SOURCES"]
