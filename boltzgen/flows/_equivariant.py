"""EquivariantFlow: permutation-equivariant coupling layers over spatial coordinates.

Written by hand (no library provides permutation-equivariant couplings on (N, d) layouts).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from boltzgen.flows._base import AbstractSampler, check_batch
from boltzgen.flows._nn import LOG_2PI, param_dtype, zero_last_mlp
from boltzgen.flows._transforms import TRANSFORMS, apply_transform, n_params

_DIST_EPS = 1e-4  # smooths |a_i - a_j| at the diagonal (a feature only; exactness unaffected)


class EquivariantCoupling(eqx.Module):
    r"""One permutation-equivariant coupling layer on ONE configuration x ∈ R^{N×d}.

    Transforms coordinate c of every particle, conditioned on the other coordinates
    a_i = x_{i,≠c} of all particles through a DeepSets/pairwise-sum conditioner:

        m_i = (1/N) Σ_j silu(U a_i + V a_j + R ρ(|a_i - a_j|) + b),   θ_i = φ(a_i, m_i),
        y_{i,c} = τ(x_{i,c}; θ_i),   y_{i,≠c} = a_i,

    with ρ a Gaussian radial-basis expansion of the distance and φ an MLP. (The pair network ψ
    has one nonlinearity: its linear read-out commutes with the sum and is absorbed into φ,
    which keeps the N² pair work to one elementwise pass.) Relabelling the particles permutes
    the θ_i the same way, so the map is equivariant and its log-determinant
    Σ_i ln τ'(x_{i,c}; θ_i) is invariant.
    """

    pair_self: eqx.nn.Linear
    pair_other: eqx.nn.Linear
    pair_rbf: eqx.nn.Linear
    phi: eqx.nn.MLP
    coord: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    transform: str = eqx.field(static=True)
    n_bins: int = eqx.field(static=True)
    interval: float = eqx.field(static=True)
    scale_clamp: float = eqx.field(static=True)
    rbf_max: float = eqx.field(static=True)
    n_rbf: int = eqx.field(static=True)

    def __init__(
        self,
        dim,
        coord,
        *,
        key,
        hidden,
        depth,
        transform,
        n_bins,
        interval,
        scale_clamp,
        n_rbf=16,
        rbf_max=4.0,
    ):
        m = dim - 1
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.pair_self = eqx.nn.Linear(m, hidden, key=k1)
        self.pair_other = eqx.nn.Linear(m, hidden, use_bias=False, key=k2)
        self.pair_rbf = eqx.nn.Linear(n_rbf, hidden, use_bias=False, key=k3)
        self.phi = zero_last_mlp(m + hidden, n_params(transform, n_bins), hidden, depth, key=k4)
        self.coord = coord
        self.dim = dim
        self.transform = transform
        self.n_bins = n_bins
        self.interval = interval
        self.scale_clamp = scale_clamp
        self.n_rbf = n_rbf
        self.rbf_max = rbf_max

    @property
    def _others(self):
        return jnp.array([k for k in range(self.dim) if k != self.coord], dtype=jnp.int32)

    def params(self, x):
        """θ_i for every particle, shape (N, n_params), from the untouched coordinates."""
        a = x[:, self._others]
        diff = a[:, None, :] - a[None, :, :]
        dist = jnp.sqrt(jnp.sum(diff * diff, axis=-1) + _DIST_EPS)  # (N, N)
        centres = jnp.linspace(0.0, self.rbf_max, self.n_rbf)
        width = self.rbf_max / (self.n_rbf - 1)
        rbf = jnp.exp(
            -0.5 * ((dist[..., None] - centres[None, None, :]) / width) ** 2
        )  # (N, N, n_rbf)
        h_self = jax.vmap(self.pair_self)(a)  # (N, H)
        h_other = jax.vmap(self.pair_other)(a)  # (N, H)
        h_rbf = rbf @ self.pair_rbf.weight.T  # (N, N, H)
        msg = jnp.mean(jax.nn.silu(h_self[:, None, :] + h_other[None, :, :] + h_rbf), axis=1)
        return jax.vmap(self.phi)(jnp.concatenate([a, msg], axis=-1))

    def _apply(self, x, inverse):
        y, ld = apply_transform(
            self.transform,
            x[:, self.coord],
            self.params(x),
            inverse=inverse,
            clamp=self.scale_clamp,
            interval=self.interval,
            n_bins=self.n_bins,
        )
        return x.at[:, self.coord].set(y), jnp.sum(ld)

    def forward(self, x):
        """Y = layer(x) on ONE configuration (N, d), with ln|det ∂y/∂x|."""
        return self._apply(x, inverse=False)

    def inverse(self, y):
        """X = layer⁻¹(y) on ONE configuration, with ln|det ∂x/∂y|."""
        return self._apply(y, inverse=True)


class EquivariantFlow(AbstractSampler):
    r"""Permutation-invariant flow for N identical particles in d ≥ 2 dimensions.

    x = f_L ∘ … ∘ f_1(σ z), z_{i,k} ~ N(0, 1) iid, with a learned isotropic base scale σ and
    :class:`EquivariantCoupling` layers that cycle through the spatial coordinates
    (layer l transforms coordinate l mod d of every particle). Since the base density
    ∏_{i,k} N(x_{i,k}; 0, σ²) is permutation invariant and every layer is permutation
    equivariant, q(πx) = q(x) exactly for every relabelling π, and q is normalised on the
    labelled space R^{N×d}: importance sampling with q estimates the labelled ln Z directly.

        ln q(x) = Σ_{i,k} ln N(z_{i,k}; 0, 1) - Nd ln σ - Σ_l ln|det J_{f_l}|.

    Args:
        n_particles: N ≥ 1.
        dim: d ≥ 2 (for d = 1 use :class:`OrderedFlow`).
        key: PRNG key for the initial weights.
        n_layers: number of coupling layers (a multiple of d transforms each coordinate equally).
        hidden: width of the pair features and of the φ MLP.
        depth: hidden layers of each MLP.
        transform: "affine" or "spline".
        n_bins: spline bins K.
        interval: spline half-width B (data beyond ±B pass through as the identity).
        scale_clamp: bound on the affine log-scale.
        base_scale: initial σ.

    Measured (CoulombGas(6, 2), β = 10, reverse KL, batch 256-512, lr 1e-3-3e-3): it
    plateaus at a variational bound ≈ 199-203 with Kish ESS ≈ 0.3-0.5 %, whereas OrderedFlow
    reaches ≈ 170 with ESS 6-15 %; but OrderedFlow's IS ln Z came out 1.5-2 nats BELOW this
    flow's on the same system (a sign of the missed mass near tied first coordinates, see
    OrderedFlow). hidden 32 and 64, 8 and 16 layers, affine and spline all plateau alike.

    Raises:
        ValueError: for d = 1 (one coordinate leaves nothing to condition on) or bad sizes.
    """

    layers: tuple[EquivariantCoupling, ...]
    log_sigma: Float[Array, ""]
    n_particles: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)

    def __init__(
        self,
        n_particles: int,
        dim: int,
        *,
        key: PRNGKeyArray,
        n_layers: int = 8,
        hidden: int = 32,
        depth: int = 2,
        transform: str = "spline",
        n_bins: int = 8,
        interval: float = 5.0,
        scale_clamp: float = 3.0,
        base_scale: float = 1.0,
    ):
        if dim == 1:
            raise ValueError(
                "EquivariantFlow needs dim >= 2 (with one coordinate per particle there is "
                "nothing to condition on); use OrderedFlow / sampler kind 'realnvp' for dim = 1"
            )
        for name, v in (
            ("n_particles", n_particles),
            ("dim", dim),
            ("n_layers", n_layers),
            ("hidden", hidden),
            ("n_bins", n_bins),
        ):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")
        if not (interval > 0 and scale_clamp > 0 and base_scale > 0):
            raise ValueError("interval, scale_clamp and base_scale must be positive")
        keys = jax.random.split(key, n_layers)
        self.layers = tuple(
            EquivariantCoupling(
                dim,
                layer % dim,
                key=k,
                hidden=hidden,
                depth=depth,
                transform=transform,
                n_bins=n_bins,
                interval=float(interval),
                scale_clamp=float(scale_clamp),
            )
            for layer, k in enumerate(keys)
        )
        self.log_sigma = jnp.asarray(jnp.log(base_scale), dtype=jnp.float32)
        self.n_particles = n_particles
        self.dim = dim

    @property
    def event_shape(self) -> tuple[int, int]:
        """``(n_particles, dim)``."""
        return (self.n_particles, self.dim)

    def transform_and_log_det(self, z):
        """X = f(z) for ONE configuration z ~ N(0, I), with ln|det ∂x/∂z|."""
        x = jnp.exp(self.log_sigma) * z
        logdet = z.size * self.log_sigma
        for layer in self.layers:
            x, ld = layer.forward(x)
            logdet = logdet + ld
        return x, logdet

    def inverse_and_log_det(self, x):
        """Z = f⁻¹(x) for ONE configuration, with ln|det ∂z/∂x|."""
        logdet = jnp.zeros((), x.dtype)
        for layer in reversed(self.layers):
            x, ld = layer.inverse(x)
            logdet = logdet + ld
        return x * jnp.exp(-self.log_sigma), logdet - x.size * self.log_sigma

    def sample_and_log_prob(
        self, n: int, *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "n N d"], Float[Array, " n"]]:
        """Draw z ~ N(0, I) (networks' dtype), x = f(z), ln q(x) = ln N(z) - ln|det ∂x/∂z|."""
        z = jax.random.normal(key, (n, *self.event_shape), dtype=param_dtype(self))
        x, logdet = jax.vmap(self.transform_and_log_det)(z)
        log_base = -0.5 * jnp.sum(z * z, axis=(1, 2)) - 0.5 * z[0].size * LOG_2PI
        return x, log_base - logdet

    def log_prob(self, x: Float[Array, "n N d"]) -> Float[Array, " n"]:
        """Ln q(x) = ln N(f⁻¹(x)) + ln|det ∂f⁻¹/∂x| for a batch."""
        check_batch(self, x)
        z, logdet = jax.vmap(self.inverse_and_log_det)(x)
        return -0.5 * jnp.sum(z * z, axis=(1, 2)) - 0.5 * z[0].size * LOG_2PI + logdet


__all__ = ["EquivariantCoupling", "EquivariantFlow"]
