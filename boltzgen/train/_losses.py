"""Training objectives for samplers q of a Boltzmann density p ∝ exp(−u).

Non-finite energies (the policy of docs/design.md, "Non-finite energies"): a sample whose
energy is NaN or ±inf lies where the target density is zero (an overlap, a clash, a user's
energy outside its domain). It is never left out of the loss — leaving it out rewards q for
moving mass there — but charged a finite penalty P (the batch's largest finite value plus
:data:`PENALTY_NATS`) with no gradient through the energy, and the change of q's mass in that
region is seen through a score-function term (P − b) ∇_θ ln q_θ(x) with x held fixed, so the
gradient pushes q out of it. A sample whose ln q is not finite (a numerical failure of the
network) carries no information and is masked. Both kinds are counted per step
(``n_nonfinite``), shown in the progress bar and stored in ``/train``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

#: Penalty, in nats above the batch's largest finite value, charged for a sample with a
#: non-finite energy.
PENALTY_NATS = 10.0


def _energies(energy_fn, x, beta):
    """Reduced energies u = β E(x), with no gradient through the energy where it is not finite.

    The energy is evaluated once without gradient to find those samples; they enter the
    differentiated evaluation through ``stop_gradient``, so a 0 · ∞ = NaN from the energy's
    derivative at a singularity never reaches the parameters.
    """
    e0 = jax.vmap(energy_fn)(jax.lax.stop_gradient(x))
    bad = ~jnp.isfinite(e0)
    mask = bad.reshape(bad.shape + (1,) * (x.ndim - 1))
    x_in = jnp.where(mask, jax.lax.stop_gradient(x), x)
    u = beta * jax.vmap(energy_fn)(x_in)
    return jnp.where(bad, jnp.nan, u), bad


def _penalty(a, ok):
    """P = max of the finite values + PENALTY_NATS (no gradient); PENALTY_NATS if none."""
    top = jnp.max(jnp.where(ok, a, -jnp.inf))
    return jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0) + PENALTY_NATS)


def reverse_kl_loss(sampler, energy_fn, beta, *, key, batch_size: int, path_gradient=False):
    """Reverse KL up to a constant: the variational free energy E_q[u(x) + ln q(x)] ≥ βF.

    Reparametrised gradient (x = f_θ(z), z ~ base) for the samples with a finite energy. A
    sample with a NaN or infinite energy is charged the penalty P of the module docstring, and
    its gradient is the score-function term (P − b) ∇_θ ln q_θ(x) at fixed x (b the mean of the
    finite values): a gradient of (P − b)·q(bad region) that moves mass out of the region. The
    extra ln q evaluation runs only in steps that have such a sample. Samples with a non-finite
    ln q are masked. The value returned is the mean of the penalised values: a training loss,
    not a bound.

    Args:
        sampler: an ``AbstractSampler``.
        energy_fn: E(x) on ONE configuration (vmapped here).
        beta: inverse temperature (an array leaf, so changing it does not recompile).
        key: PRNG key.
        batch_size: number of samples of q per step.
        path_gradient: differentiate ln q only through x ("sticking the landing"): the term
            ∇_θ ln q_θ(x)|_x, whose expectation under q is zero, is dropped, which removes its
            variance (the gradient vanishes sample by sample when q = p). Costs one more
            (inverse) pass of the flow per step; the value of the loss is unchanged.

    Returns:
        ``(loss, aux)`` with aux = dict(n_nonfinite, log_w) for logging; log_w is −∞ (zero
        weight) at every sample not counted as finite.
    """
    x, log_q = sampler.sample_and_log_prob(batch_size, key=key)
    if path_gradient:
        lq_x = _frozen(sampler).log_prob(x)  # depends on θ only through x
        log_q = jax.lax.stop_gradient(log_q) + lq_x - jax.lax.stop_gradient(lq_x)
    u, bad_e = _energies(energy_fn, x, beta)
    good_q = jnp.isfinite(log_q)
    a = u + log_q
    ok = good_q & ~bad_e
    pen = good_q & bad_e
    p = _penalty(a, ok)
    n_used = jnp.maximum(jnp.sum(good_q), 1)
    n_ok = jnp.maximum(jnp.sum(ok), 1)
    base = jax.lax.stop_gradient(jnp.sum(jnp.where(ok, a, 0.0)) / n_ok)
    value = (jnp.sum(jnp.where(ok, a, 0.0)) + p * jnp.sum(pen)) / n_used

    def score(_):
        lq = sampler.log_prob(jax.lax.stop_gradient(x))
        s = jnp.sum(jnp.where(pen & jnp.isfinite(lq), (p - base) * lq, 0.0)) / n_used
        return s - jax.lax.stop_gradient(s)

    surrogate = jax.lax.cond(jnp.any(pen), score, lambda _: jnp.zeros((), value.dtype), None)
    log_w = jnp.where(ok, -a, -jnp.inf)
    return value + surrogate, dict(
        n_nonfinite=jnp.sum(~ok).astype(jnp.int32), log_w=jax.lax.stop_gradient(log_w)
    )


def _frozen(sampler):
    """``sampler`` with every array leaf behind ``stop_gradient`` (sampling needs no gradient)."""
    params, static = eqx.partition(sampler, eqx.is_array)
    return eqx.combine(jax.lax.stop_gradient(params), static)


def _penalised(u, log_q):
    """Values f = u + ln q with a non-finite energy replaced by the penalty, and masks.

    Returns ``(f, valid, n_nonfinite, ok)``: f finite wherever ``valid``; invalid are the samples
    whose ln q is not finite (masked).
    """
    good_q = jnp.isfinite(log_q)
    bad_e = ~jnp.isfinite(u)
    f = u + log_q
    ok = good_q & ~bad_e
    f = jnp.where(good_q & bad_e, _penalty(f, ok), f)
    return jax.lax.stop_gradient(f), good_q, jnp.sum(~ok).astype(jnp.int32), ok


def _score_function_loss(log_q, f, valid, groups: int):
    """Surrogate whose gradient is the REINFORCE estimate, and whose value is mean(f).

    ∇_θ E_q[f] = E_q[(f − b) ∇_θ ln q] with f = u + ln q (the ∇ ln q term inside f has zero
    mean) and b the mean of f over the other samples of its group (a leave-one-out baseline:
    unbiased, unlike the plain batch mean, whose bias is O(1/n)). Samples not ``valid`` are
    masked.
    """
    f0 = jnp.where(valid, f, 0.0).reshape(groups, -1)
    m = valid.reshape(groups, -1).astype(f.dtype)
    n = jnp.sum(m, axis=1, keepdims=True)
    loo = (jnp.sum(f0, axis=1, keepdims=True) - f0) / jnp.maximum(n - 1, 1)
    adv = jax.lax.stop_gradient(jnp.where(m > 0, f0 - loo, 0.0)).reshape(-1)
    n_ok = jnp.maximum(jnp.sum(valid), 1)
    surrogate = jnp.sum(adv * jnp.where(valid, log_q, 0.0)) / n_ok
    value = jnp.sum(f0) / n_ok
    return surrogate - jax.lax.stop_gradient(surrogate) + jax.lax.stop_gradient(value)


def reinforce_loss(sampler, energy_fn, beta, *, key, batch_size: int):
    """Variational free energy E_q[u + ln q] ≥ βF with the score-function (REINFORCE) gradient.

    For discrete samplers (spins), where x cannot be reparametrised: samples are drawn without
    gradient, ln q is re-evaluated with it, and the gradient is E_q[(f − b) ∇ ln q] with
    f = u + ln q and a leave-one-out batch baseline b (variance reduction without bias). The
    value returned is the batch mean of f: a (stochastic) upper bound on βF, not the answer.
    A non-finite energy is charged the penalty of the module docstring (its score term pushes
    q away); a non-finite ln q is masked.

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
    f, valid, n_bad, ok = _penalised(u, jax.lax.stop_gradient(log_q))
    loss = _score_function_loss(log_q, f, valid, 1)
    log_w = jnp.where(ok, -f, -jnp.inf)
    return loss, dict(n_nonfinite=n_bad, log_w=log_w)


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
    u = betas * jax.vmap(energy_fn)(x)
    f, valid, n_bad, ok = _penalised(u, jax.lax.stop_gradient(log_q))
    loss = _score_function_loss(log_q, f, valid, g)
    log_w = jnp.where(ok, -f, -jnp.inf)[:per]
    return loss, dict(n_nonfinite=n_bad, log_w=log_w)


LOSSES = {
    "reverse_kl": reverse_kl_loss,
    "reinforce": reinforce_loss,
    "reinforce_beta_range": reinforce_beta_range_loss,
}
