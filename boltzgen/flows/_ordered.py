"""OrderedFlow: a generic flow mapped onto the ordered fundamental domain, then relabelled."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from boltzgen.flows._base import AbstractSampler, check_batch


def _inv_softplus(y):
    """softplus⁻¹(y) = y + ln(1 - e^{-y}) for y > 0."""
    return y + jnp.log(-jnp.expm1(-y))


def order_forward(u):
    """Ordering bijection R^{N×d} → D on ONE configuration, with ln|det ∂x/∂u|.

    x_{1,0} = u_{1,0}, x_{k,0} = x_{k-1,0} + softplus(u_{k,0}) (k ≥ 2), other coordinates
    unchanged; ln|det| = Σ_{k≥2} ln σ(u_{k,0}).
    """
    first = u[:, 0]
    gaps = jax.nn.softplus(first[1:])
    new = jnp.concatenate([first[:1], first[:1] + jnp.cumsum(gaps)])
    return u.at[:, 0].set(new), jnp.sum(jax.nn.log_sigmoid(first[1:]))


def order_inverse(x):
    """Inverse of :func:`order_forward` on ONE configuration in D, with ln|det ∂u/∂x|."""
    first = x[:, 0]
    # ties (measure zero, or float round-off of tiny gaps) → smallest positive gap, not NaN
    gaps = jnp.maximum(jnp.diff(first), jnp.finfo(first.dtype).tiny)
    u_rest = _inv_softplus(gaps)
    u = x.at[1:, 0].set(u_rest)
    return u, -jnp.sum(jax.nn.log_sigmoid(u_rest))


def sort_particles(x):
    """Sort the particles (axis -2) of a batch by their first coordinate."""
    order = jnp.argsort(x[..., 0], axis=-1)
    return jnp.take_along_axis(x, order[..., None], axis=-2)


class OrderedFlow(AbstractSampler):
    r"""Exactly permutation-invariant density from a generic flow on the fundamental domain.

    Let g be the inner flow on R^{N·d} (density q_g) and O the ordering bijection onto
    D = {x : x_{1,0} < x_{2,0} < … < x_{N,0}} (:func:`order_forward`: first coordinates by
    cumulative sums of softplus gaps). Then q_D(y) = q_g(O⁻¹(y)) |det ∂O⁻¹/∂y| is a normalised
    density on D. Sampling draws y ~ q_D and relabels the particles by a uniformly random
    permutation π, so the model density on all of R^{N×d} is

        q(x) = q_D(sort(x)) / N!,

    (sort by first coordinate), normalised and exactly invariant under relabelling.

    Why ln Z comes out right: for a permutation-symmetric target, R^{N×d} is (up to the null
    set of ties) the disjoint union of the N! images π(D), each carrying the same mass, so
    Z_labelled = N!·Z_D. Importance sampling with q gives w(x) = -u(x) - ln q_D(sort(x)) + ln N!,
    whose mean exponential is exactly N!·Z_D = Z_labelled, the ln Z the particle systems
    report: that of labelled particles, ∫ e^{−u} over all of R^{N×d}, with no 1/N! factor.

    Caveat for d ≥ 2: q vanishes where two first coordinates coincide although the target does
    not, which fattens the weight tails; prefer :class:`EquivariantFlow` there.

    Args:
        inner: a sampler on R^{N·d} with event shape ``(N*d,)`` or ``(N, d)`` (e.g. RealNVP).
        n_particles: N.
        dim: d (any d ≥ 1).
    """

    inner: AbstractSampler
    n_particles: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)

    def __check_init__(self):
        n, d = self.n_particles, self.dim
        if tuple(self.inner.event_shape) not in ((n * d,), (n, d)):
            raise ValueError(
                f"inner sampler has event shape {tuple(self.inner.event_shape)}; "
                f"expected ({n * d},) or ({n}, {d})"
            )

    @property
    def event_shape(self) -> tuple[int, int]:
        """``(n_particles, dim)``."""
        return (self.n_particles, self.dim)

    @property
    def log_n_factorial(self) -> float:
        """Ln N!."""
        return math.lgamma(self.n_particles + 1)

    def transform_and_log_det(self, z):
        """Base → D on ONE configuration (no relabelling), with ln|det| (``inner`` must have it)."""
        u, ld_inner = self.inner.transform_and_log_det(z)
        y, ld_order = order_forward(u.reshape(self.event_shape))
        return y, ld_inner + ld_order

    def sample_and_log_prob(
        self, n: int, *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "n N d"], Float[Array, " n"]]:
        """Y ~ q_D, then a uniformly random relabelling; ln q = ln q_D(y) - ln N!."""
        k_inner, k_perm = jax.random.split(key)
        u, log_q_inner = self.inner.sample_and_log_prob(n, key=k_inner)
        y, ld = jax.vmap(order_forward)(u.reshape(n, *self.event_shape))
        perm = jnp.argsort(jax.random.uniform(k_perm, (n, self.n_particles)), axis=-1)
        x = jnp.take_along_axis(y, perm[..., None], axis=-2)
        return x, log_q_inner - ld - self.log_n_factorial

    def log_prob(self, x: Float[Array, "n N d"]) -> Float[Array, " n"]:
        """Ln q(x) = ln q_g(O⁻¹(sort x)) + ln|det ∂O⁻¹/∂y| - ln N!."""
        check_batch(self, x)
        y = sort_particles(x)
        u, ld = jax.vmap(order_inverse)(y)
        u = u.reshape(x.shape[0], *self.inner.event_shape)
        return self.inner.log_prob(u) + ld - self.log_n_factorial


__all__ = ["OrderedFlow", "order_forward", "order_inverse", "sort_particles"]
