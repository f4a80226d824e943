"""The one training loop: one trace per run, chunking, checkpoints, exact resume, NaN safety."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_allclose

from boltzgen.flows import CNF, make_sampler
from boltzgen.systems import Gaussian
from boltzgen.train import (
    FlowMatching,
    ReverseKL,
    Trainer,
    reverse_kl_loss,
    train,
    train_matching,
)


def _leaves(s):
    return [np.asarray(a) for a in jax.tree.leaves(eqx.filter(s, eqx.is_array))]


def test_chunk_traces_once_whatever_the_number_of_chunks():
    """The chunk is traced once: the last, partial chunk is masked, not recompiled."""
    system = Gaussian.isotropic(4, 0.5)
    q = make_sampler("realnvp", system, key=jax.random.key(0), n_layers=2, hidden=16)
    st = train(
        q,
        system.energy,
        1.0,
        key=jax.random.key(1),
        trainer=Trainer(steps=23, batch_size=32, chunk=5),
        progress=False,
        max_traces=1,
    )
    assert st.step == 23 and len(st.history["loss"]) == 23
    assert np.all(np.isfinite(st.history["loss"]))
    assert np.all(np.diff(st.history["wall_time"]) >= 0)


def test_chunking_does_not_change_the_result():
    """Chunk lengths 1, 4 and 7 (with a masked remainder) run the same steps with the same keys."""
    system = Gaussian.isotropic(6, 0.5)  # the loop, not the sampler: a quick flow
    q = make_sampler("realnvp", system, key=jax.random.key(0), n_layers=2, hidden=16)
    runs = [
        train(
            q,
            system.energy,
            2.0,
            key=jax.random.key(3),
            trainer=Trainer(steps=12, batch_size=32, chunk=c),
            progress=False,
        )
        for c in (1, 4, 7)
    ]
    for other in runs[1:]:
        assert_allclose(runs[0].history["loss"], other.history["loss"], rtol=1e-5, atol=1e-6)
        for a, b in zip(_leaves(runs[0].model), _leaves(other.model), strict=True):
            assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_training_reduces_the_variational_bound_gaussian():
    system = Gaussian.isotropic(4, 0.5, mean=1.0)
    q = make_sampler("realnvp", system, key=jax.random.key(0), n_layers=4, hidden=32)
    st = train(
        q,
        system.energy,
        1.0,
        key=jax.random.key(1),
        trainer=Trainer(steps=300, batch_size=256, learning_rate=3e-3),
        progress=False,
    )
    loss = np.asarray(st.history["loss"])
    exact_beta_f = -system.exact_log_z(1.0)
    # KL(q‖p) = loss − βF starts large (mean 1, σ 0.5 vs a standard base) and ends small.
    assert loss[:10].mean() - exact_beta_f > 1.0
    assert loss[-50:].mean() - exact_beta_f < 0.05


def test_checkpoint_beyond_the_steps_is_refused(tmp_path):
    system = Gaussian.isotropic(6, 0.5)  # the loop, not the sampler: a quick flow
    ck = tmp_path / "c.ckpt"
    q0 = make_sampler("realnvp", system, key=jax.random.key(0), n_layers=2, hidden=16)
    kw = dict(key=jax.random.key(2), progress=False)
    done = train(
        q0, system.energy, 2.0, trainer=Trainer(steps=8, batch_size=16), checkpoint=ck, **kw
    )
    assert done.step == 8 and ck.exists()
    with pytest.raises(ValueError, match="beyond train.steps = 4"):
        train(
            q0,
            system.energy,
            2.0,
            trainer=Trainer(steps=4, batch_size=16),
            checkpoint=ck,
            resume=True,
            **kw,
        )
    # Extending a finished run continues from its checkpoint.
    more = train(
        q0,
        system.energy,
        2.0,
        trainer=Trainer(steps=10, batch_size=16),
        checkpoint=ck,
        resume=True,
        **kw,
    )
    assert more.step == 10 and len(more.history["loss"]) == 10


def _interrupted(tmp_path, run_fn, steps, stop_at):
    """Run ``run_fn(trainer, checkpoint, resume)`` to ``stop_at`` by a run killed there, then
    resume to ``steps``; return (uninterrupted, resumed) states."""
    full = run_fn(Trainer(steps=steps, batch_size=32, chunk=4), None, False)
    ck = tmp_path / "r.ckpt"

    class Killed(Exception):
        pass

    import boltzgen.train._trainer as tr

    real_save = tr.save_checkpoint

    def save_then_die(path, state, **kw):
        real_save(path, state, **kw)
        if state.step >= stop_at:
            raise Killed

    tr.save_checkpoint = save_then_die
    try:
        with pytest.raises(Killed):
            run_fn(
                Trainer(steps=steps, batch_size=32, chunk=4, checkpoint_every=stop_at), ck, False
            )
    finally:
        tr.save_checkpoint = real_save
    resumed = run_fn(
        Trainer(steps=steps, batch_size=32, chunk=4, checkpoint_every=stop_at), ck, True
    )
    return full, resumed


def test_killed_and_resumed_reverse_kl_equals_the_uninterrupted_run(tmp_path):
    system = Gaussian.isotropic(6, 0.5)  # the loop, not the sampler: a quick flow
    q0 = make_sampler("realnvp", system, key=jax.random.key(0), n_layers=2, hidden=16)

    def run_fn(trainer, ck, resume):
        return train(
            q0,
            system.energy,
            2.0,
            key=jax.random.key(5),
            trainer=trainer,
            checkpoint=ck,
            resume=resume,
            progress=False,
        )

    full, resumed = _interrupted(tmp_path, run_fn, 16, 8)
    assert resumed.step == 16
    assert_allclose(full.history["loss"], resumed.history["loss"], rtol=1e-6)
    for a, b in zip(_leaves(full.model), _leaves(resumed.model), strict=True):
        assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_killed_and_resumed_flow_matching_equals_the_uninterrupted_run(tmp_path):
    """Flow matching checkpoints and resumes through the same loop (pairing on the host)."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(512, 3, 2)).astype(np.float32) * 0.5
    cnf = CNF((3, 2), key=jax.random.key(0), hidden=16, depth=1, n_steps=4)

    def run_fn(trainer, ck, resume):
        from boltzgen.train._matching import as_data
        from boltzgen.train._objectives import Task

        task = Task(
            cnf, {"data": as_data(cnf, data, "data")}, pair=lambda a, b: np.asarray(b)[::-1].copy()
        )
        return trainer.fit(
            FlowMatching(),
            task,
            key=jax.random.key(1),
            checkpoint=ck,
            resume=resume,
            progress=False,
        )

    full, resumed = _interrupted(tmp_path, run_fn, 12, 8)
    assert_allclose(full.history["loss"], resumed.history["loss"], rtol=1e-6)
    for a, b in zip(_leaves(full.model), _leaves(resumed.model), strict=True):
        assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_killed_and_resumed_beta_range_curve_training_equals_the_uninterrupted_run(tmp_path):
    """The β-range (curve) objective checkpoints and resumes through the same loop."""
    from spin_models import MeanField

    from boltzgen.systems import Ising
    from boltzgen.train import BetaRange

    system = Ising(3)
    q0 = MeanField(system.event_shape, key=jax.random.key(0))

    def run_fn(trainer, ck, resume):
        return train(
            q0,
            system.energy,
            (0.2, 0.6),
            key=jax.random.key(4),
            objective=BetaRange(),
            trainer=trainer,
            checkpoint=ck,
            resume=resume,
            progress=False,
        )

    full, resumed = _interrupted(tmp_path, run_fn, 12, 8)
    assert_allclose(full.history["loss"], resumed.history["loss"], rtol=1e-6)
    for a, b in zip(_leaves(full.model), _leaves(resumed.model), strict=True):
        assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_checkpoint_for_another_sampler_or_run_is_refused(tmp_path):
    system = Gaussian.isotropic(6, 0.5)  # the loop, not the sampler: a quick flow
    ck = tmp_path / "c.ckpt"
    q = make_sampler("realnvp", system, key=jax.random.key(0), n_layers=2, hidden=16)
    kw = dict(key=jax.random.key(0), progress=False)
    trainer = Trainer(steps=2, batch_size=8)
    st = train(q, system.energy, 2.0, trainer=trainer, checkpoint=ck, **kw)
    assert st.step == 2
    other = make_sampler("realnvp", system, key=jax.random.key(0), n_layers=3, hidden=16)
    with pytest.raises(ValueError, match="was it written for another sampler"):
        train(
            other,
            system.energy,
            2.0,
            trainer=Trainer(steps=4, batch_size=8),
            checkpoint=ck,
            resume=True,
            **kw,
        )
    task = ReverseKL().energy_task(q, system.energy, 2.0)
    with pytest.raises(ValueError, match="belongs to another run"):
        Trainer(steps=4, batch_size=8).fit(
            ReverseKL(), task, checkpoint=ck, resume=True, fingerprint="another", **kw
        )
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        train(q, system.energy, 2.0, trainer=trainer, checkpoint=bad, resume=True, **kw)


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
    st = train(
        q,
        energy,
        1.0,
        key=jax.random.key(0),
        trainer=Trainer(steps=5, batch_size=64),
        progress=False,
    )
    assert all(np.isfinite(st.history["loss"])) and max(st.history["n_nonfinite"]) > 0
    assert all(np.isfinite(a).all() for a in _leaves(st.model))


def test_train_matching_rejects_bad_input():
    data = np.zeros((10, 2, 2), np.float32)
    cnf = CNF((2, 2), key=jax.random.key(0), hidden=8, depth=1, n_steps=2)
    t = Trainer(steps=1, batch_size=4)
    with pytest.raises(ValueError, match="unknown pairing 'greedy'"):
        train_matching(cnf, data, key=jax.random.key(1), trainer=t, pairing="greedy")
    with pytest.raises(ValueError, match="one data array"):
        train_matching(cnf, (data, data), key=jax.random.key(1), trainer=t)
    with pytest.raises(ValueError, match="shape"):
        train_matching(cnf, np.zeros((10, 3)), key=jax.random.key(1), trainer=t)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(steps=-1), "steps must be an integer >= 0"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(learning_rate=0.0), "learning_rate must be > 0"),
        (dict(learning_rate=float("nan")), "learning_rate must be a finite number"),
        (dict(chunk=0), "chunk must be an integer >= 1"),
        (dict(steps="abc"), "steps must be an integer"),
    ],
)
def test_trainer_rejects_bad_settings(kw, msg):
    with pytest.raises(ValueError, match=msg):
        Trainer(**kw)


def test_path_gradient_vanishes_sample_by_sample_when_q_is_p():
    """ "Sticking the landing": with q = p (an identity RealNVP on its N(0, I) base against
    the target N(0, I) at β = 1) the path gradient is exactly zero on every batch, while the
    full reparametrised gradient is not (its score term has mean zero, not value zero); the
    loss value is the same."""
    system = Gaussian.isotropic(4, 1.0)
    q = make_sampler("realnvp", system, key=jax.random.key(0), n_layers=2, hidden=16)

    def grad_and_value(pg):
        def f(m):
            return reverse_kl_loss(
                m, system.energy, 1.0, key=jax.random.key(1), batch_size=64, path_gradient=pg
            )[0]

        v, g = eqx.filter_value_and_grad(f)(q)
        return float(v), max(float(jnp.max(jnp.abs(a))) for a in _leaves(g))

    v_full, g_full = grad_and_value(False)
    v_path, g_path = grad_and_value(True)
    assert g_path == 0.0 and g_full > 1e-2
    assert abs(v_full - v_path) < 1e-5
    assert ReverseKL(path_gradient=True).path_gradient
    with pytest.raises(ValueError, match="path_gradient"):
        ReverseKL(path_gradient=1)
