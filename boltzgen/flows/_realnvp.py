"""RealNVP: a coupling flow on the flattened configuration, affine or spline couplings."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from boltzgen.flows._base import AbstractSampler, check_batch
from boltzgen.flows._nn import param_dtype, std_normal_log_prob, zero_last_mlp
from boltzgen.flows._transforms import TRANSFORMS, apply_transform, n_params


def _masks(dim: int, n_layers: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(transformed, conditioning) index sets per layer.

    Layers alternate even/odd entries; from dim ≥ 4, every other pair of layers uses a
    first-half/second-half split instead, so that on a flattened (N, d) layout not every layer
    splits by spatial coordinate.
    """
    if dim == 1:
        return [((0,), ())] * n_layers
    idx = np.arange(dim)
    out = []
    for layer in range(n_layers):
        if dim >= 4 and (layer // 2) % 2 == 1:
            sel = (idx < dim // 2) if layer % 2 == 0 else (idx >= dim // 2)
        else:
            sel = (idx % 2) == (layer % 2)
        out.append((tuple(int(i) for i in idx[sel]), tuple(int(i) for i in idx[~sel])))
    return out


class _Coupling(eqx.Module):
    """One coupling layer: x_T ← τ(x_T; θ(x_C)) on a flat vector."""

    net: eqx.nn.MLP
    trans: tuple[int, ...] = eqx.field(static=True)
    cond: tuple[int, ...] = eqx.field(static=True)
    n_par: int = eqx.field(static=True)

    def params(self, x):
        c = x[jnp.array(self.cond, dtype=jnp.int32)] if self.cond else jnp.zeros((1,), x.dtype)
        return self.net(c).reshape(len(self.trans), self.n_par)


class RealNVP(AbstractSampler):
    r"""Coupling flow x = f(z), z ~ N(0, I), on the flattened configuration (Dinh et al. 2017).

    x = f_L ∘ … ∘ f_1 ∘ A(z), where A(z) = μ + e^{σ} ⊙ z is a learnable diagonal affine
    first layer and each coupling f_l transforms the entries T_l of the flat vector with an
    elementwise monotone map τ whose parameters come from an MLP of the other entries C_l:

        y_T = τ(x_T; θ_l(x_C)),   y_C = x_C,   ln|det ∂y/∂x| = Σ_{i∈T} ln τ'(x_i).

    Then ln q(x) = ln N(z; 0, I) - Σ_l ln|det J_{f_l}| - Σ_i σ_i. ``transform="affine"`` uses
    τ(x) = x e^s + t with |s| soft-clamped to ``scale_clamp``; ``transform="spline"`` a
    rational-quadratic spline on [-B, B] with identity tails (B = ``interval``). Masks alternate
    even/odd entries (and first/second half from 4 entries on). The output layers start at
    zero, so an untrained flow is the affine layer alone.

    This flow ignores particle labels: on a permutation-symmetric target wrap it in
    :class:`OrderedFlow` (``make_sampler("realnvp", system)`` does so), or ln Z comes out low
    by up to ln N!.

    Args:
        event_shape: shape of one configuration (flattened internally).
        key: PRNG key for the initial weights.
        n_layers: number of coupling layers L.
        hidden: width of the conditioner MLPs.
        depth: number of hidden layers of each conditioner MLP.
        transform: "affine" or "spline".
        n_bins: spline bins K.
        interval: spline half-width B.
        scale_clamp: bound on the affine log-scale |s|.
        learn_affine: include the learnable diagonal affine first layer.
    """

    couplings: tuple[_Coupling, ...]
    shift: Float[Array, " dim"] | None
    log_scale: Float[Array, " dim"] | None
    shape: tuple[int, ...] = eqx.field(static=True)
    transform: str = eqx.field(static=True)
    n_bins: int = eqx.field(static=True)
    interval: float = eqx.field(static=True)
    scale_clamp: float = eqx.field(static=True)

    def __init__(
        self,
        event_shape,
        *,
        key: PRNGKeyArray,
        n_layers: int = 8,
        hidden: int = 128,
        depth: int = 2,
        transform: str = "affine",
        n_bins: int = 8,
        interval: float = 5.0,
        scale_clamp: float = 3.0,
        learn_affine: bool = True,
    ):
        shape = tuple(int(s) for s in np.atleast_1d(event_shape))
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"event_shape must be a non-empty tuple of positive ints, got {shape}")
        if transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")
        for name, v in (("n_layers", n_layers), ("hidden", hidden), ("n_bins", n_bins)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be a non-negative int, got {depth!r}")
        if not interval > 0 or not scale_clamp > 0:
            raise ValueError("interval and scale_clamp must be positive")
        dim = math.prod(shape)
        n_par = n_params(transform, n_bins)
        keys = jax.random.split(key, n_layers)
        self.couplings = tuple(
            _Coupling(
                zero_last_mlp(max(len(c), 1), len(t) * n_par, hidden, depth, key=k), t, c, n_par
            )
            for (t, c), k in zip(_masks(dim, n_layers), keys, strict=True)
        )
        self.shift = jnp.zeros(dim) if learn_affine else None
        self.log_scale = jnp.zeros(dim) if learn_affine else None
        self.shape = shape
        self.transform = transform
        self.n_bins = n_bins
        self.interval = float(interval)
        self.scale_clamp = float(scale_clamp)

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one configuration."""
        return self.shape

    def _tau(self, x, params, inverse):
        return apply_transform(
            self.transform,
            x,
            params,
            inverse=inverse,
            clamp=self.scale_clamp,
            interval=self.interval,
            n_bins=self.n_bins,
        )

    def transform_and_log_det(self, z):
        """X = f(z) for ONE configuration z (event shape), with ln|det ∂x/∂z|."""
        x = z.reshape(-1)
        logdet = jnp.zeros((), x.dtype)
        if self.log_scale is not None:
            x = self.shift + jnp.exp(self.log_scale) * x
            logdet = logdet + jnp.sum(self.log_scale)
        for layer in self.couplings:
            t = jnp.array(layer.trans, dtype=jnp.int32)
            y, ld = self._tau(x[t], layer.params(x), inverse=False)
            x = x.at[t].set(y)
            logdet = logdet + jnp.sum(ld)
        return x.reshape(self.shape), logdet

    def inverse_and_log_det(self, x):
        """Z = f⁻¹(x) for ONE configuration x, with ln|det ∂z/∂x|."""
        z = x.reshape(-1)
        logdet = jnp.zeros((), z.dtype)
        for layer in reversed(self.couplings):
            t = jnp.array(layer.trans, dtype=jnp.int32)
            y, ld = self._tau(z[t], layer.params(z), inverse=True)
            z = z.at[t].set(y)
            logdet = logdet + jnp.sum(ld)
        if self.log_scale is not None:
            z = (z - self.shift) * jnp.exp(-self.log_scale)
            logdet = logdet - jnp.sum(self.log_scale)
        return z.reshape(self.shape), logdet

    def sample_and_log_prob(
        self, n: int, *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "n ..."], Float[Array, " n"]]:
        """Draw z ~ N(0, I) (in the networks' dtype), x = f(z), ln q(x) = ln N(z) - ln|det J|."""
        z = jax.random.normal(key, (n, *self.shape), dtype=param_dtype(self))
        x, logdet = jax.vmap(self.transform_and_log_det)(z)
        return x, jax.vmap(std_normal_log_prob)(z) - logdet

    def log_prob(self, x: Float[Array, "n ..."]) -> Float[Array, " n"]:
        """Ln q(x) = ln N(f⁻¹(x)) + ln|det ∂f⁻¹/∂x| for a batch."""
        check_batch(self, x)
        z, logdet = jax.vmap(self.inverse_and_log_det)(x)
        return jax.vmap(std_normal_log_prob)(z) + logdet


__all__ = ["RealNVP"]
