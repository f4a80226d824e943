"""Training driver: one trace per run, checkpoints, exact resume, NaN safety."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_allclose

from boltzgen.flows import make_sampler
from boltzgen.systems import CoulombGas, Gaussian
from boltzgen.train import make_optimizer, make_step, reverse_kl_loss, train


def _leaves(s):
    return [np.asarray(a) for a in jax.tree.leaves(eqx.filter(s, eqx.is_array))]


def test_step_traces_once_and_beta_does_not_recompile():
    system = Gaussian.isotropic(4, 0.5)
    q = make_sampler("realnvp", system, key=jax.random.key(0), n_layers=2, hidden=16)
    opt = make_optimizer(1e-3, 10)
    step = make_step(opt, system.energy, 32, max_traces=1)
    state = opt.init(eqx.filter(q, eqx.is_inexact_array))
    for i, beta in enumerate([1.0, 2.0, 3.0]):
        q, state, info = step(q, state, jnp.asarray(beta, jnp.float32), jax.random.key(i))
    assert np.isfinite(float(info["loss"]))


def test_training_reduces_the_variational_bound_gaussian():
    system = Gaussian.isotropic(4, 0.5, mean=1.0)
    q = make_sampler("realnvp", system, key=jax.random.key(0), n_layers=4, hidden=32)
    st = train(
        q,
        system.energy,
        1.0,
        key=jax.random.key(1),
        steps=300,
        batch_size=256,
        learning_rate=3e-3,
        progress=False,
    )
    loss = np.asarray(st.history["loss"])
    exact_beta_f = -system.exact_log_z(1.0)
    # KL(q‖p) = loss − βF starts large (mean 1, σ 0.5 vs a standard base) and ends small.
    assert loss[:10].mean() - exact_beta_f > 1.0
    assert loss[-50:].mean() - exact_beta_f < 0.05


def test_checkpoint_resume_is_exact(tmp_path):
    system = CoulombGas(3, 2)
    ck = tmp_path / "c.ckpt"
    # The schedule depends on the total number of steps: an interrupted run has the same one.
    kw = dict(
        key=jax.random.key(2), batch_size=64, optimizer=make_optimizer(1e-3, 20), progress=False
    )
    q0 = make_sampler("equivariant", system, key=jax.random.key(0), n_layers=2, hidden=16)
    full = train(q0, system.energy, 2.0, steps=20, **kw)
    # Interrupted after 10 steps (the checkpoint of step 10), then resumed to 20.
    part = train(q0, system.energy, 2.0, steps=10, checkpoint_path=ck, checkpoint_every=5, **kw)
    assert part.step == 10 and ck.exists()
    resumed = train(q0, system.energy, 2.0, steps=20, checkpoint_path=ck, resume=True, **kw)
    assert resumed.step == 20 and len(resumed.history["loss"]) == 20
    for a, b in zip(_leaves(full.sampler), _leaves(resumed.sampler), strict=True):
        assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert_allclose(full.history["loss"], resumed.history["loss"], rtol=1e-5)


def test_checkpoint_for_another_sampler_is_refused(tmp_path):
    system = CoulombGas(3, 2)
    ck = tmp_path / "c.ckpt"
    q = make_sampler("equivariant", system, key=jax.random.key(0), n_layers=2, hidden=16)
    train(
        q,
        system.energy,
        2.0,
        key=jax.random.key(0),
        steps=2,
        batch_size=8,
        checkpoint_path=ck,
        progress=False,
    )
    other = make_sampler("equivariant", system, key=jax.random.key(0), n_layers=3, hidden=16)
    with pytest.raises(ValueError, match="was it written for another sampler"):
        train(
            other,
            system.energy,
            2.0,
            key=jax.random.key(0),
            steps=4,
            batch_size=8,
            checkpoint_path=ck,
            resume=True,
            progress=False,
        )


def test_nonfinite_samples_are_masked_and_counted():
    # An energy that is +inf on part of space: those samples are masked, counted, and the
    # gradient stays finite.
    system = Gaussian.isotropic(2)

    def energy(x):
        return jnp.where(x[0] > 1.0, jnp.inf, system.energy(x))

    q = make_sampler("realnvp", system, key=jax.random.key(0), n_layers=2, hidden=8)
    loss, aux = reverse_kl_loss(q, energy, 1.0, key=jax.random.key(1), batch_size=1000)
    assert 50 < int(aux["n_nonfinite"]) < 300  # P(x0 > 1) ≈ 0.16
    assert np.isfinite(float(loss))
    st = train(q, energy, 1.0, key=jax.random.key(0), steps=5, batch_size=64, progress=False)
    assert all(np.isfinite(st.history["loss"])) and max(st.history["n_nonfinite"]) > 0
    assert all(np.isfinite(a).all() for a in _leaves(st.sampler))
