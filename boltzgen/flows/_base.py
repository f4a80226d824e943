"""The sampler interface: a normalised density q with ``sample_and_log_prob`` in one pass."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
from jaxtyping import Array, Float, PRNGKeyArray


class AbstractSampler(eqx.Module):
    """A trainable, normalised model density q(x) on configurations of shape ``event_shape``.

    Concrete samplers implement ``sample_and_log_prob`` and ``log_prob``; both act on a batch.
    All trainable parameters are inexact-array leaves (``eqx.partition(s, eqx.is_inexact_array)``).
    """

    #: Whether ∇ log q costs about as much as one forward pass (coupling flows: yes; a CNF,
    #: whose log q integrates an ODE with the exact divergence: no). The annealed paths of the
    #: neural-MCMC stage move by HMC for such samplers, by gradient-free random-walk
    #: Metropolis otherwise.
    cheap_log_prob_grad: ClassVar[bool] = True

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one configuration."""
        raise NotImplementedError

    def sample_and_log_prob(
        self, n: int, *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "n ..."], Float[Array, " n"]]:
        """Draw ``n`` samples x ~ q and return them with log q(x), in one pass."""
        raise NotImplementedError

    def log_prob(self, x: Float[Array, "n ..."]) -> Float[Array, " n"]:
        """Log q(x) for a batch of configurations, shape ``(n, *event_shape)``."""
        raise NotImplementedError

    def sample(self, n: int, *, key: PRNGKeyArray) -> Float[Array, "n ..."]:
        """Draw ``n`` samples x ~ q."""
        return self.sample_and_log_prob(n, key=key)[0]


def check_batch(sampler: AbstractSampler, x) -> None:
    """Raise ValueError unless ``x`` has shape ``(n, *sampler.event_shape)``."""
    shape = tuple(sampler.event_shape)
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ValueError(
            f"{type(sampler).__name__}.log_prob expects a batch of shape "
            f"(n, {', '.join(map(str, shape))}), got {tuple(x.shape)}"
        )


__all__ = ["AbstractSampler", "check_batch"]
