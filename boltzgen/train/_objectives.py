"""Training objectives for samplers q of a Boltzmann density p ∝ exp(−u)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def reverse_kl_loss(sampler, energy_fn, beta, *, key, batch_size: int):
    """Reverse KL up to a constant: the variational free energy E_q[u(x) + ln q(x)] ≥ βF.

    Reparametrised gradient (x = f_θ(z), z ~ base). Samples whose u + ln q is not finite (an
    energy overflow near a 1/r core, a NaN from the network) are masked out of the loss and
    their number returned, so one bad sample neither poisons the step nor vanishes unseen.

    Args:
        sampler: an ``AbstractSampler``.
        energy_fn: E(x) on ONE configuration (vmapped here).
        beta: inverse temperature (an array leaf, so changing it does not recompile).
        key: PRNG key.
        batch_size: number of samples of q per step.

    Returns:
        ``(loss, aux)`` with aux = dict(n_nonfinite, log_w) for logging.
    """
    x, log_q = sampler.sample_and_log_prob(batch_size, key=key)
    u = beta * jax.vmap(energy_fn)(x)
    a = u + log_q
    finite = jnp.isfinite(a)
    n_ok = jnp.maximum(jnp.sum(finite), 1)
    loss = jnp.sum(jnp.where(finite, a, 0.0)) / n_ok
    log_w = jnp.where(finite, -a, -jnp.inf)
    return loss, dict(
        n_nonfinite=jnp.sum(~finite).astype(jnp.int32), log_w=jax.lax.stop_gradient(log_w)
    )


OBJECTIVES = {"reverse_kl": reverse_kl_loss}
