"""CNF: identity at initialisation, exact divergence, round trip, normalisation, symmetries."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_allclose

from boltzgen.flows import CNF, CentreOfMassSplit, make_sampler
from boltzgen.flows._cnf import (
    EGNNField,
    EnvironmentField,
    MLPField,
    ParticleField,
    RadialBasisField,
    RadiiField,
    divergence,
)
from boltzgen.systems import CoulombGas, Ising

PARTICLE = (ParticleField, RadialBasisField, RadiiField, EnvironmentField, EGNNField)

SMALL = dict(hidden=8, depth=1)


def randomise(cnf: CNF, *, seed: int, scale: float = 0.5) -> CNF:
    """Every network weight redrawn from N(0, scale²) (non-zero last layers); σ kept."""
    params, static = eqx.partition(cnf.field, eqx.is_inexact_array)
    leaves, tdef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [
        scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)
    ]
    field = eqx.combine(jax.tree_util.tree_unflatten(tdef, leaves), static)
    return eqx.tree_at(lambda c: c.field, cnf, field)


# One structure per event shape (same n_steps, batch size and widths), so the jitted solves
# compile once per shape and are reused across tests (a diffrax solve compiles in ~1.5 s here).
N_STEPS = 10
BATCH = 32
PARTICLES = (3, 2)
FLAT = (2,)


def make(shape, *, seed=0, **kw):
    """A small CNF; particle shapes get the per-pair MLP field unless ``field`` is given."""
    kw = {"field": "mlp"} | kw if len(shape) == 2 else kw
    return CNF(shape, key=jax.random.key(seed), n_steps=N_STEPS, **(SMALL | kw))


#: Random-weight scale per particle field giving a clearly non-trivial but non-stiff flow (the
#: "rbf" field sums K = 32 basis functions, "radii" K·(L + 1) = 288, so their weights must be
#: smaller).
SCALE = {"mlp": 0.5, "rbf": 0.03, "radii": 0.01, "env": 0.03, "egnn": 0.2}


@eqx.filter_jit
def _sample(cnf, key):
    return cnf.sample_and_log_prob(BATCH, key=key)


@eqx.filter_jit
def _log_prob(cnf, x):
    return cnf.log_prob(x)


@eqx.filter_jit
def _inverse_then_forward(cnf, x):
    """Z = T⁻¹(x) with ∫₁⁰ tr dt, then T(z) with ∫₀¹ tr dt (batched)."""
    z, ell_inv = jax.vmap(cnf.inverse)(x)
    x_again, ell_fwd = jax.vmap(cnf.forward)(z)
    return z, ell_inv, x_again, ell_fwd


def gaussian_log_prob(x, sigma):
    d = math.prod(x.shape[1:])
    r2 = jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1)
    return -0.5 * r2 / sigma**2 - 0.5 * d * math.log(2 * math.pi * sigma**2)


@pytest.mark.parametrize("shape", [PARTICLES, FLAT])
def test_identity_at_initialisation(shape):
    cnf = make(shape, base_scale=0.7)
    assert isinstance(cnf.field, PARTICLE if len(shape) == 2 else MLPField)
    x, log_q = _sample(cnf, jax.random.key(1))
    base = gaussian_log_prob(x, 0.7)
    assert_allclose(log_q, base, rtol=1e-6, atol=1e-5)
    assert_allclose(_log_prob(cnf, x), base, rtol=1e-6, atol=1e-5)
    z, ell_inv, _, _ = _inverse_then_forward(cnf, x)
    assert_allclose(z, x, atol=0.0)
    assert_allclose(ell_inv, np.zeros(BATCH), atol=0.0)


@pytest.mark.parametrize(
    ("shape", "field"),
    [
        (PARTICLES, "mlp"),
        (PARTICLES, "rbf"),
        (PARTICLES, "radii"),
        (PARTICLES, "env"),
        (PARTICLES, "egnn"),
        (FLAT, None),
    ],
)
def test_round_trip_and_log_prob_of_samples(shape, field):
    kw = {} if field is None else {"field": field}
    cnf = randomise(make(shape, **kw), seed=3, scale=SCALE.get(field, 0.5))
    x, log_q = _sample(cnf, jax.random.key(1))
    assert x.shape == (BATCH, *shape) and x.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(log_q)))
    # sample() integrates the state alone (no trace): the same points for the same key
    x_only = eqx.filter_jit(lambda c, k: c.sample(BATCH, key=k))(cnf, jax.random.key(1))
    assert_allclose(x_only, x, rtol=0.0, atol=1e-5)
    z, ell_inv, x_again, ell_fwd = _inverse_then_forward(cnf, x)
    # The flow is far from the identity: the log-density change is O(1).
    assert float(jnp.mean(jnp.abs(ell_inv))) > 0.1
    assert_allclose(_log_prob(cnf, x), log_q, rtol=0.0, atol=1e-4)
    assert_allclose(x_again, x, rtol=0.0, atol=1e-4)
    assert_allclose(ell_fwd, -ell_inv, rtol=0.0, atol=1e-4)


@pytest.mark.parametrize(
    ("shape", "field"),
    [
        ((4, 2), "rbf"),
        ((4, 2), "radii"),
        ((3, 3), "radii"),
        ((4, 2), "mlp"),
        ((4, 2), "env"),
        ((4, 2), "egnn"),
        ((3,), "rbf"),
    ],
)
def test_exact_divergence_matches_jacobian_trace(shape, field):
    scale = SCALE[field] if field in ("env", "egnn") else 0.5
    cnf = randomise(make(shape, field=field), seed=5, scale=scale)
    kx, kt = jax.random.split(jax.random.key(2))
    xs = jax.random.normal(kx, (6, *shape))
    ts = jax.random.uniform(kt, (6,))

    @jax.jit
    def both(x, t):
        jac = jax.jacfwd(lambda xf: cnf.field(t, xf.reshape(shape)).reshape(-1))(x.ravel())
        return cnf.field.divergence(t, x), divergence(cnf.field, t, x), jnp.trace(jac)

    div, div_jvp, tr = jax.vmap(both)(xs, ts)
    assert float(jnp.max(jnp.abs(tr))) > 0.1  # a non-trivial field
    assert_allclose(div, tr, rtol=1e-5, atol=1e-5)  # the one the CNF integrates
    assert_allclose(div_jvp, tr, rtol=1e-5, atol=1e-5)  # the generic one-hot JVP trace


@pytest.mark.parametrize(
    ("shape", "field"),
    [
        (FLAT, None),
        ((2, 1), "mlp"),
        ((2, 1), "rbf"),
        ((2, 1), "radii"),
        ((2, 1), "env"),
        ((2, 1), "egnn"),
    ],
)
def test_normalised_on_2d_grid(shape, field):
    """Σ q ΔxΔy = 1 for a random field: MLP field on R², particle field for 2 particles in 1-D."""
    kw = {} if field is None else {"field": field}
    cnf = randomise(make(shape, **kw), seed=7, scale=SCALE.get(field, 0.5))
    assert isinstance(cnf.field, MLPField if len(shape) == 1 else PARTICLE)
    g = jnp.linspace(-8.0, 8.0, 161)
    xx, yy = jnp.meshgrid(g, g, indexing="ij")
    pts = jnp.stack([xx.ravel(), yy.ravel()], axis=-1).reshape(-1, *shape)
    q = jnp.exp(_log_prob(cnf, pts))
    mass = float(jnp.sum(q) * (g[1] - g[0]) ** 2)
    assert abs(mass - 1.0) < 5e-3, mass


@pytest.mark.parametrize("field", ["mlp", "rbf", "radii", "env", "egnn"])
def test_particle_field_permutation_and_rotation(field):
    cnf = randomise(make(PARTICLES, field=field), seed=11, scale=SCALE[field])
    x, log_q = _sample(cnf, jax.random.key(4))
    z, ell, _, _ = _inverse_then_forward(cnf, x)
    perm = jnp.array([2, 0, 1])
    z_p, ell_p, _, _ = _inverse_then_forward(cnf, x[:, perm])
    assert_allclose(z_p, z[:, perm], rtol=0.0, atol=1e-5)
    # float32: the relabelled/rotated solve sums in another order (round-off ~1e-6 relative)
    assert_allclose(ell_p, ell, rtol=1e-5, atol=1e-5)
    angle = 0.7
    rot = jnp.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    z_r, ell_r, _, _ = _inverse_then_forward(cnf, x @ rot.T)
    assert_allclose(z_r, z @ rot.T, rtol=0.0, atol=1e-5)
    assert_allclose(ell_r, ell, rtol=1e-5, atol=1e-5)
    assert_allclose(_log_prob(cnf, x[:, perm]), log_q, rtol=1e-5, atol=1e-4)
    assert_allclose(_log_prob(cnf, x @ rot.T), log_q, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_gradient_and_tsit5():
    cnf = randomise(make(PARTICLES), seed=13)
    x, _ = _sample(cnf, jax.random.key(1))
    grads = eqx.filter_grad(lambda c: jnp.mean(c.log_prob(x)))(cnf)
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)
    tsit = randomise(make(PARTICLES, solver="tsit5"), seed=13)
    assert_allclose(_log_prob(tsit, x), _log_prob(cnf, x), rtol=0.0, atol=1e-3)


def test_registry_builds_cnf_and_refuses_spins():
    q = make_sampler(
        "cnf", CoulombGas(3, 2), key=jax.random.key(0), hidden=8, depth=1, n_steps=4,
        zero_com=False,
    )  # fmt: skip
    # field 'auto': the radii field in a trap, the plain radial-basis field otherwise
    assert isinstance(q, CNF) and isinstance(q.field, RadiiField)
    assert q.event_shape == (3, 2)
    with pytest.raises(ValueError, match="discrete"):
        make_sampler("cnf", Ising(3), key=jax.random.key(0))
    with pytest.raises(ValueError, match="expects a batch"):
        q.log_prob(jnp.zeros((6,)))
    with pytest.raises(ValueError, match="solver"):
        CNF((2,), key=jax.random.key(0), solver="rk5")


def subspace_basis(n: int, d: int) -> np.ndarray:
    """Orthonormal basis (n·d, (n−1)·d) of the zero-centre-of-mass subspace of R^{n×d}."""
    centring = np.eye(n) - np.ones((n, n)) / n
    u, s, _ = np.linalg.svd(centring)
    b = u[:, s > 0.5]  # the n − 1 eigenvectors with eigenvalue 1
    return np.kron(b, np.eye(d))  # row (i, a) ↔ particle i, coordinate a


@pytest.mark.parametrize("field", ["rbf", "radii", "mlp", "env", "egnn"])
def test_zero_com_divergence_is_the_subspace_trace(field):
    shape = (4, 2)
    scale = SCALE[field] if field in ("env", "egnn") else 0.5
    cnf = randomise(make(shape, zero_com=True, field=field), seed=17, scale=scale)
    basis = jnp.asarray(subspace_basis(*shape), dtype=jnp.float32)
    kx, kt = jax.random.split(jax.random.key(3))
    xs = cnf.project(jax.random.normal(kx, (6, *shape)))
    ts = jax.random.uniform(kt, (6,))

    @jax.jit
    def both(x, t):
        jac = jax.jacfwd(lambda xf: cnf.field(t, xf.reshape(shape)).reshape(-1))(x.ravel())
        return cnf.field.divergence(t, x), jnp.trace(basis.T @ jac @ basis), cnf.field(t, x)

    div, tr_sub, v = jax.vmap(both)(xs, ts)
    assert float(jnp.max(jnp.abs(tr_sub))) > 0.1
    assert_allclose(div, tr_sub, rtol=1e-5, atol=1e-5)
    assert_allclose(jnp.sum(v, axis=1), np.zeros((6, 2)), atol=1e-5)  # keeps Σ x_i fixed


def test_zero_com_normalised_on_the_subspace():
    """3 particles in 1-D: q lives on a plane; Σ q ΔA = 1 in orthonormal plane coordinates."""
    shape = (3, 1)
    cnf = randomise(make(shape, zero_com=True), seed=19)
    assert cnf.n_dof == 2
    basis = jnp.asarray(subspace_basis(*shape), dtype=jnp.float32)  # (3, 2)
    g = jnp.linspace(-8.0, 8.0, 161)
    uu, vv = jnp.meshgrid(g, g, indexing="ij")
    coords = jnp.stack([uu.ravel(), vv.ravel()], axis=-1)
    pts = (coords @ basis.T).reshape(-1, *shape)
    q = jnp.exp(_log_prob(cnf, pts))
    mass = float(jnp.sum(q) * (g[1] - g[0]) ** 2)
    assert abs(mass - 1.0) < 5e-3, mass


def test_zero_com_samples_centred_and_invariant():
    shape = (4, 2)
    cnf = randomise(make(shape, zero_com=True), seed=23, scale=0.2)
    x, log_q = _sample(cnf, jax.random.key(6))
    assert_allclose(jnp.mean(x, axis=1), np.zeros((BATCH, 2)), atol=1e-5)
    assert_allclose(_log_prob(cnf, x), log_q, rtol=0.0, atol=1e-4)
    shifted = x + jnp.array([[[1.5, -0.7]]])  # log_prob centres its input
    assert_allclose(_log_prob(cnf, shifted), log_q, rtol=0.0, atol=1e-4)
    perm = jnp.array([3, 1, 0, 2])
    assert_allclose(_log_prob(cnf, x[:, perm]), log_q, rtol=0.0, atol=1e-4)
    # At initialisation q is the (N−1)d-dimensional Gaussian on the subspace.
    base = make(shape, zero_com=True, base_scale=0.7)
    xb, lq = _sample(base, jax.random.key(2))
    k = (shape[0] - 1) * shape[1]
    expect = -0.5 * jnp.sum(xb**2, axis=(1, 2)) / 0.49 - 0.5 * k * math.log(2 * math.pi * 0.49)
    assert_allclose(lq, expect, rtol=1e-6, atol=1e-5)


def test_registry_zero_com_for_translation_invariant_systems():
    from boltzgen.flows import default_sampler_kind
    from boltzgen.systems import DoubleWellParticles

    dw4 = DoubleWellParticles()
    assert default_sampler_kind(dw4) == "cnf"
    q = make_sampler("cnf", dw4, key=jax.random.key(0), hidden=8, depth=1, n_steps=4)
    assert q.zero_com and q.n_dof == 6 and isinstance(q.field, RadialBasisField)
    # in the trap the centre of mass separates: the zero-COM CNF times its exact Gaussian
    split = make_sampler("cnf", CoulombGas(3, 2), key=jax.random.key(0), n_steps=4)
    assert isinstance(split, CentreOfMassSplit) and split.inner.zero_com
    assert not split.cheap_log_prob_grad
    full = make_sampler("cnf", CoulombGas(3, 2), key=jax.random.key(0), n_steps=4, zero_com=False)
    assert isinstance(full, CNF) and not full.zero_com
    with pytest.raises(ValueError, match="zero_com = true"):
        make_sampler("cnf", dw4, key=jax.random.key(0), zero_com=False)
    with pytest.raises(ValueError, match="translation-invariant"):
        make_sampler("realnvp", dw4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="zero_com needs particles"):
        CNF((4,), key=jax.random.key(0), zero_com=True)
    for kind, cls in (("env", EnvironmentField), ("egnn", EGNNField)):
        q = make_sampler("cnf", dw4, key=jax.random.key(0), hidden=8, depth=1, field=kind)
        assert isinstance(q.field, cls) and q.field.zero_com
    with pytest.raises(ValueError, match="unknown particle field 'gnn'.*radii, mlp, env, egnn"):
        make_sampler("cnf", dw4, key=jax.random.key(0), field="gnn")
    with pytest.raises(ValueError, match="n_rbf must be >= 2, got 1"):
        make_sampler("cnf", dw4, key=jax.random.key(0), field="env", n_rbf=1)


def test_centre_of_mass_split_normalised_and_consistent():
    """2 particles in 1-D: the split density integrates to 1 over R² and matches its samples."""

    inner = randomise(make((2, 1), zero_com=True), seed=29)
    q = CentreOfMassSplit(inner, com_scale=0.6)
    g = jnp.linspace(-8.0, 8.0, 161)
    xx, yy = jnp.meshgrid(g, g, indexing="ij")
    pts = jnp.stack([xx.ravel(), yy.ravel()], axis=-1).reshape(-1, 2, 1)
    mass = float(jnp.sum(jnp.exp(_log_prob(q, pts))) * (g[1] - g[0]) ** 2)
    assert abs(mass - 1.0) < 5e-3, mass
    x, log_q = _sample(q, jax.random.key(8))
    assert_allclose(_log_prob(q, x), log_q, rtol=0.0, atol=1e-4)
    com = np.asarray(jnp.mean(x, axis=(1, 2)))
    # s = 0.6: the sd of 32 × 1 draws has standard error ≈ 0.6/√64 = 0.075; ±4 of them.
    assert 0.3 < float(np.std(com)) < 0.9


def test_registry_splits_centre_of_mass_for_the_trap():
    from boltzgen.flows import CentreOfMassSplit

    q = make_sampler("cnf", CoulombGas(3, 2), key=jax.random.key(0), n_steps=4, zero_com=True)
    assert isinstance(q, CentreOfMassSplit) and q.inner.zero_com
    assert q.event_shape == (3, 2)


@pytest.mark.slow
@pytest.mark.parametrize("zero_com", [False, True])
def test_run_cnf_two_particle_coulomb_gas_matches_exact(zero_com):
    """Permutation-invariant CNF (full space, or zero-COM flow × exact COM Gaussian): the
    labelled-particle ln Z of CoulombGas(2, 2) agrees with the exact 1-D integral."""
    import boltzgen as bg

    system = CoulombGas(2, 2)
    opts = dict(hidden=16, depth=1, n_steps=8, zero_com=zero_com)
    from conftest import make_q

    r = bg.run(
        system,
        2.0,
        make_q(system, "cnf", **opts),
        trainer=bg.train.Trainer(steps=60, batch_size=64),
        estimation=bg.Estimation(n_samples=2048),
        stages=(),
        reference=None,
        progress=False,
    )
    e = r.estimates["importance"]
    assert e.ess > 100
    assert abs(e.log_z - r.exact_log_z) < 4 * e.log_z_stderr, (e.log_z, e.log_z_stderr)
    assert r.estimates["variational"].log_z <= r.exact_log_z


def test_log_q_and_energy_chunks_agree():
    """The float64 evaluation of p-samples in chunks equals one batch (and 0 points → empty)."""
    from boltzgen._estimation import log_q_and_energy as _log_q_and_energy

    system = CoulombGas(3, 2)
    cnf = randomise(make(PARTICLES, field="rbf"), seed=5, scale=SCALE["rbf"])
    x = np.asarray(jax.random.normal(jax.random.key(2), (BATCH, *PARTICLES)))
    lq, e = _log_q_and_energy(cnf, system, x)
    lq_c, e_c = _log_q_and_energy(cnf, system, x, chunk_size=BATCH // 2)
    assert lq.shape == e.shape == (BATCH,) and lq.dtype == np.float64
    assert_allclose(lq_c, lq, rtol=0.0, atol=1e-10)
    assert_allclose(e_c, e, rtol=0.0, atol=1e-10)
    assert_allclose(lq, _log_prob(cnf, jnp.asarray(x)), rtol=0.0, atol=1e-4)
    empty = _log_q_and_energy(cnf, system, x[:0])
    assert empty[0].shape == empty[1].shape == (0,)


def test_max_batch_gives_the_same_solves():
    """Batches of ``max_batch`` in sequence (lax.map, remainder included) = one vmapped solve."""
    full = randomise(make(PARTICLES, field="rbf"), seed=3, scale=SCALE["rbf"])
    parts = randomise(make(PARTICLES, field="rbf", max_batch=12), seed=3, scale=SCALE["rbf"])
    assert full.max_batch is None and parts.max_batch == 12
    x, lq = _sample(full, jax.random.key(4))
    x_p, lq_p = _sample(parts, jax.random.key(4))
    assert_allclose(x_p, x, rtol=0.0, atol=1e-5)
    assert_allclose(lq_p, lq, rtol=0.0, atol=1e-4)
    assert_allclose(_log_prob(parts, x), lq, rtol=0.0, atol=1e-4)
    egnn = make(PARTICLES, field="egnn")
    assert egnn.max_batch == 256 and make(PARTICLES, field="egnn", max_batch=7).max_batch == 7
    with pytest.raises(ValueError, match="max_batch must be >= 0"):
        make(PARTICLES, max_batch=-1)
