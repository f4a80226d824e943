"""Score-function (REINFORCE) training of discrete samplers: unbiased gradient, β annealing."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from spin_models import MeanField

from boltzgen.systems import Ising, SherringtonKirkpatrick, all_states, enumerate_log_z
from boltzgen.train import (
    BetaRange,
    Reinforce,
    ReverseKL,
    Trainer,
    reinforce_beta_range_loss,
    reinforce_loss,
    train,
)


def _exact_objective(q, system, beta):
    """E_q[βE + ln q] by enumeration (a differentiable function of q's parameters)."""
    states = jnp.asarray(all_states(system.n_spins).reshape(-1, *system.event_shape), jnp.float32)
    lq = q.log_prob(states)
    f = beta * jax.vmap(system.energy)(states) + lq
    return jnp.sum(jnp.exp(lq) * f)


def test_mean_field_is_normalised():
    system = Ising(3)
    q = MeanField(system.event_shape, key=jax.random.key(0))
    states = jnp.asarray(all_states(9).reshape(-1, 3, 3), jnp.float32)
    assert abs(float(jnp.sum(jnp.exp(q.log_prob(states)))) - 1.0) < 1e-5


def test_reinforce_gradient_is_unbiased():
    """Mean of the REINFORCE gradient over independent batches = exact ∇ E_q[u + ln q] (4σ)."""
    system = SherringtonKirkpatrick(6, seed=3)
    beta = 1.5
    q = MeanField(system.event_shape, key=jax.random.key(1))
    params, static = eqx.partition(q, eqx.is_inexact_array)

    def exact(p):
        return _exact_objective(eqx.combine(p, static), system, beta)

    g_exact = jax.grad(exact)(params).logits

    @jax.jit
    def one(key):
        def f(p):
            return reinforce_loss(
                eqx.combine(p, static), system.energy, beta, key=key, batch_size=64
            )[0]

        return jax.grad(f)(params).logits

    grads = np.asarray(jax.vmap(one)(jax.random.split(jax.random.key(2), 400)))
    mean, se = grads.mean(0), grads.std(0, ddof=1) / np.sqrt(len(grads))
    z = (mean - np.asarray(g_exact)) / se
    assert np.all(np.abs(z) < 4.0), f"z-scores {z}"
    # The baseline matters: the gradient is far from zero here, so the test can fail.
    assert np.max(np.abs(np.asarray(g_exact)) / se) > 10


def test_reinforce_value_is_the_variational_bound():
    system = Ising(3)
    q = MeanField(system.event_shape, key=jax.random.key(0))
    loss, aux = reinforce_loss(q, system.energy, 0.4, key=jax.random.key(1), batch_size=4096)
    exact = float(_exact_objective(q, system, 0.4))
    f = -np.asarray(aux["log_w"])
    assert abs(float(loss) - exact) < 4 * f.std() / np.sqrt(f.size)
    assert float(loss) > -enumerate_log_z(system, 0.4)  # an upper bound on βF


def test_train_reinforce_reaches_mean_field_optimum_and_anneal_keeps_one_trace():
    """Training a product q on a 1-D-like system converges towards min_q E_q[u + ln q] ≥ βF."""
    system = SherringtonKirkpatrick(8, seed=0)
    beta = 0.5
    q = MeanField(system.event_shape, key=jax.random.key(0))
    st = train(
        q,
        system.energy,
        beta,
        key=jax.random.key(1),
        objective=Reinforce(beta_anneal=0.3),
        trainer=Trainer(steps=300, batch_size=256, learning_rate=5e-2),
        progress=False,
        max_traces=1,
    )
    final = float(_exact_objective(st.sampler, system, beta))
    start = float(_exact_objective(q, system, beta))
    beta_f = -enumerate_log_z(system, beta)
    assert final >= beta_f - 1e-5  # the variational bound holds exactly
    assert final < start - 0.05  # and training improved it


def test_beta_anneal_validation():
    with pytest.raises(ValueError, match="beta_anneal must be in"):
        Reinforce(beta_anneal=1.5)
    with pytest.raises(ValueError, match="beta_anneal must be in"):
        ReverseKL(beta_anneal=-0.1)


def test_beta_range_objective_traces_once_and_groups_temperatures():
    system = Ising(3)
    q = MeanField(system.event_shape, key=jax.random.key(0))
    st = train(
        q,
        system.energy,
        (0.2, 0.8),
        key=jax.random.key(0),
        objective=BetaRange(),
        trainer=Trainer(steps=9, batch_size=64, learning_rate=1e-2, chunk=4),
        progress=False,
        max_traces=1,
    )
    assert np.all(np.isfinite(st.history["loss"]))
    with pytest.raises(ValueError, match="batch_size"):
        reinforce_beta_range_loss(
            q, system.energy, jnp.asarray([0.2, 0.8]), key=jax.random.key(0), batch_size=8
        )
