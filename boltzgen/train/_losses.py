"""Training objectives for samplers q of a Boltzmann density p ∝ exp(−u)."""

from __future__ import annotations

import equinox as eqx
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


def _frozen(sampler):
    """``sampler`` with every array leaf behind ``stop_gradient`` (sampling needs no gradient)."""
    params, static = eqx.partition(sampler, eqx.is_array)
    return eqx.combine(jax.lax.stop_gradient(params), static)


def _score_function_loss(log_q, f, groups: int):
    """Surrogate whose gradient is the REINFORCE estimate, and whose value is mean(f).

    ∇_θ E_q[f] = E_q[(f − b) ∇_θ ln q] with f = u + ln q (the ∇ ln q term inside f has zero
    mean) and b the mean of f over the other samples of its group (a leave-one-out baseline:
    unbiased, unlike the plain batch mean, whose bias is O(1/n)). Non-finite f are masked.
    """
    finite = jnp.isfinite(f)
    f0 = jnp.where(finite, f, 0.0).reshape(groups, -1)
    m = finite.reshape(groups, -1).astype(f.dtype)
    n = jnp.sum(m, axis=1, keepdims=True)
    loo = (jnp.sum(f0, axis=1, keepdims=True) - f0) / jnp.maximum(n - 1, 1)
    adv = jax.lax.stop_gradient(jnp.where(m > 0, f0 - loo, 0.0)).reshape(-1)
    n_ok = jnp.maximum(jnp.sum(finite), 1)
    surrogate = jnp.sum(adv * jnp.where(finite, log_q, 0.0)) / n_ok
    value = jnp.sum(f0) / n_ok
    return surrogate - jax.lax.stop_gradient(surrogate) + jax.lax.stop_gradient(value)


def reinforce_loss(sampler, energy_fn, beta, *, key, batch_size: int):
    """Variational free energy E_q[u + ln q] ≥ βF with the score-function (REINFORCE) gradient.

    For discrete samplers (spins), where x cannot be reparametrised: samples are drawn without
    gradient, ln q is re-evaluated with it, and the gradient is E_q[(f − b) ∇ ln q] with
    f = u + ln q and a leave-one-out batch baseline b (variance reduction without bias). The
    value returned is the batch mean of f: a (stochastic) upper bound on βF, not the answer.

    Args:
        sampler: a normalised ``AbstractSampler`` (e.g. an autoregressive spin model).
        energy_fn: E(x) on ONE configuration (vmapped here).
        beta: inverse temperature (array leaf).
        key: PRNG key.
        batch_size: number of samples per step.

    Returns:
        ``(loss, aux)`` with aux = dict(n_nonfinite, log_w).
    """
    x, _ = _frozen(sampler).sample_and_log_prob(batch_size, key=key)
    x = jax.lax.stop_gradient(x)
    log_q = sampler.log_prob(x)
    u = beta * jax.vmap(energy_fn)(x)
    f = jax.lax.stop_gradient(u + log_q)
    loss = _score_function_loss(log_q, f, 1)
    finite = jnp.isfinite(f)
    return loss, dict(
        n_nonfinite=jnp.sum(~finite).astype(jnp.int32), log_w=jnp.where(finite, -f, -jnp.inf)
    )


#: Temperatures drawn per step by :func:`reinforce_beta_range_loss`.
BETA_GROUPS = 8


def reinforce_beta_range_loss(sampler, energy_fn, beta, *, key, batch_size: int):
    """REINFORCE for a β-conditioned sampler q(x | β) over a range of temperatures.

    ``beta`` is ``[β_min, β_max]``. Each step draws ``BETA_GROUPS`` temperatures (stratified
    uniform in the range) with ``batch_size // BETA_GROUPS`` samples each, and minimises the mean
    over them of E_{q(·|β)}[βE + ln q(·|β)] — every term an upper bound on βF(β) — with a
    leave-one-out baseline within each temperature (ln Z(β) differs between temperatures, so a
    baseline shared across them would only add variance).

    The sampler must provide ``sample_and_log_prob(n, *, key, beta)`` and ``log_prob(x, beta)``
    with ``beta`` of shape (n,).

    Returns:
        ``(loss, aux)`` with aux = dict(n_nonfinite, log_w) (log_w of the warmest group).
    """
    g = BETA_GROUPS
    per = batch_size // g
    if per < 2:
        raise ValueError(f"batch_size must be >= {2 * g} for β-range training, got {batch_size}")
    k_beta, k_x = jax.random.split(key)
    lo, hi = beta[0], beta[1]
    u01 = (jnp.arange(g) + jax.random.uniform(k_beta, (g,))) / g
    betas = jnp.repeat(lo + (hi - lo) * u01, per)
    x, _ = _frozen(sampler).sample_and_log_prob(g * per, key=k_x, beta=betas)
    x = jax.lax.stop_gradient(x)
    log_q = sampler.log_prob(x, betas)
    f = jax.lax.stop_gradient(betas * jax.vmap(energy_fn)(x) + log_q)
    loss = _score_function_loss(log_q, f, g)
    finite = jnp.isfinite(f)
    log_w = jnp.where(finite, -f, -jnp.inf)[:per]
    return loss, dict(n_nonfinite=jnp.sum(~finite).astype(jnp.int32), log_w=log_w)


LOSSES = {
    "reverse_kl": reverse_kl_loss,
    "reinforce": reinforce_loss,
    "reinforce_beta_range": reinforce_beta_range_loss,
}
