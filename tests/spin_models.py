"""Tiny exactly normalised spin samplers for tests (no dependence on boltzgen.flows models)."""

import equinox as eqx
import jax
import jax.numpy as jnp

from boltzgen.flows import AbstractSampler


class MeanField(AbstractSampler):
    """Independent spins, q(s) = Π σ(s_i a_i): the simplest exactly normalised discrete q.

    Called with ``beta``, the logits are a_i + β b_i (a β-conditioned q(s | β); b starts at 0).
    """

    logits: jax.Array
    slope: jax.Array
    shape: tuple = eqx.field(static=True)

    def __init__(self, shape, *, key):
        self.shape = tuple(shape)
        self.logits = 0.3 * jax.random.normal(key, self.shape)
        self.slope = jnp.zeros(self.shape)

    @property
    def event_shape(self):
        return self.shape

    def _a(self, beta):
        if beta is None:
            return self.logits[None]
        beta = (
            jnp.broadcast_to(jnp.asarray(beta, self.logits.dtype), (1,))
            if jnp.ndim(beta) == 0
            else beta
        )
        return self.logits[None] + beta.reshape(-1, *[1] * len(self.shape)) * self.slope[None]

    def sample_and_log_prob(self, n, *, key, beta=None):
        a = jnp.broadcast_to(self._a(beta), (n, *self.shape))
        s = jnp.where(jax.random.uniform(key, (n, *self.shape)) < jax.nn.sigmoid(a), 1.0, -1.0)
        return s, self.log_prob(s, beta)

    def log_prob(self, s, beta=None):
        a = self._a(beta).astype(s.dtype)
        axes = tuple(range(1, s.ndim))
        return jnp.sum(jax.nn.log_sigmoid(s * a), axis=axes)

    def at(self, beta):
        """The fixed-β sampler q(· | β)."""
        return AtBeta(self, beta)


class AtBeta(AbstractSampler):
    """A β-conditioned :class:`MeanField` at one β."""

    model: MeanField
    beta: float = eqx.field(static=True)

    @property
    def event_shape(self):
        return self.model.shape

    def sample_and_log_prob(self, n, *, key):
        return self.model.sample_and_log_prob(n, key=key, beta=jnp.full((n,), self.beta))

    def log_prob(self, s):
        return self.model.log_prob(s, jnp.full((s.shape[0],), self.beta, s.dtype))
