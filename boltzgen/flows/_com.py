r"""Centre-of-mass split: a full-space density from a zero-centre-of-mass sampler.

For N particles x ∈ R^{N×d} write x = y + 1 ⊗ R with R = x̄ the centre of mass and y = Px on
the subspace Σ_i y_i = 0. In orthonormal coordinates the map x ↦ (√N R, y) is a rotation, so
dx = N^{d/2} dR dσ(y) (dσ the subspace's Lebesgue measure), and a density that draws y from a
zero-COM sampler q_⊥ and R independently from N(0, s² I_d) is

    q(x) = q_⊥(y) · N(R; 0, s² I_d) · N^{−d/2}.

This is exact and keeps every symmetry of q_⊥ (permutations, rotations about the origin when
the COM Gaussian is isotropic). For a harmonic trap E = κΣ|x_i|² + V(y) the centre of mass
separates exactly, since Σ_i |x_i|² = Σ_i |y_i|² + N|R|²: R ~ N(0, I/(2Nβκ)) and
ln Z = (d/2) ln(π/(βκ)) + ln Z_⊥ (the Jacobian N^{d/2} times the Gaussian integral
(π/(Nβκ))^{d/2}), with Z_⊥ = ∫ exp(−β[κΣ|y_i|² + V(y)]) dσ(y) on the subspace, so a
zero-COM model of the interaction part plus this split reproduces the labelled-particle ln Z
over all coordinates. The COM scale s is a trainable leaf (stored as ln s); for the trap its
optimum is the exact 1/√(2Nβκ).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from boltzgen.flows._base import AbstractSampler, check_batch
from boltzgen.flows._nn import LOG_2PI


class CentreOfMassSplit(AbstractSampler):
    r"""q(x) = q_⊥(x − x̄) · N(x̄; 0, s² I_d) · N^{−d/2} from a zero-COM sampler q_⊥.

    Args:
        inner: a sampler on the zero-centre-of-mass subspace (``inner.zero_com`` true), event
            shape (N, d).
        com_scale: initial s, the standard deviation of each centre-of-mass coordinate.
    """

    inner: AbstractSampler
    log_com_scale: Float[Array, ""]

    @property
    def cheap_log_prob_grad(self) -> bool:  # type: ignore[override]
        """As cheap as the inner sampler's (the centre-of-mass Gaussian is free)."""
        return self.inner.cheap_log_prob_grad

    def __init__(self, inner: AbstractSampler, *, com_scale: float = 1.0):
        if not getattr(inner, "zero_com", False):
            raise ValueError("CentreOfMassSplit needs a zero-centre-of-mass inner sampler")
        if not com_scale > 0:
            raise ValueError(f"com_scale must be > 0, got {com_scale!r}")
        self.inner = inner
        self.log_com_scale = jnp.asarray(math.log(com_scale), dtype=jnp.float32)

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape (N, d) of one configuration."""
        return tuple(self.inner.event_shape)

    def _com_log_prob(self, com):
        """Ln N(R; 0, s² I_d) − (d/2) ln N for a batch of centres of mass (n, d)."""
        n_particles, d = self.event_shape
        s = jnp.exp(self.log_com_scale).astype(com.dtype)
        gauss = -0.5 * jnp.sum((com / s) ** 2, axis=-1) - d * jnp.log(s) - 0.5 * d * LOG_2PI
        return gauss - 0.5 * d * math.log(n_particles)

    def sample_and_log_prob(
        self, n: int, *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "n ..."], Float[Array, " n"]]:
        """Draw y ~ q_⊥ and R ~ N(0, s² I); return x = y + R with ln q(x)."""
        k_inner, k_com = jax.random.split(key)
        y, log_q = self.inner.sample_and_log_prob(n, key=k_inner)
        s = jnp.exp(self.log_com_scale).astype(y.dtype)
        com = s * jax.random.normal(k_com, (n, self.event_shape[1]), dtype=y.dtype)
        return y + com[:, None, :], log_q + self._com_log_prob(com)

    def log_prob(self, x: Float[Array, "n ..."]) -> Float[Array, " n"]:
        """Ln q(x) = ln q_⊥(x − x̄) + ln N(x̄; 0, s² I) − (d/2) ln N for a batch."""
        check_batch(self, x)
        com = jnp.mean(x, axis=-2)
        return self.inner.log_prob(x - com[:, None, :]) + self._com_log_prob(com)


__all__ = ["CentreOfMassSplit"]
