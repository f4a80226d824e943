"""Tests of the autoregressive spin samplers: exact normalisation, autoregressive masks, cached
sampling against one-pass log q, sampling distribution, Z2 symmetrisation, β-conditioning."""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_allclose, within_sigmas
from scipy.special import logsumexp
from scipy.stats import chi2

from boltzgen.flows import (
    MADE,
    AbstractSampler,
    FixedBeta,
    PixelCNN,
    SpinFlipSymmetric,
    default_sampler_kind,
    make_sampler,
    receptive_field,
)
from boltzgen.systems import CoulombGas
from boltzgen.systems._ising import (
    Ising,
    SherringtonKirkpatrick,
    all_states,
    enumerate_energies,
    enumerate_log_z,
)

BETAS = (0.3, 0.8)


def perturb(model, scale=0.5, seed=0):
    """Random values in every trainable leaf (also the masked entries: they must not matter).

    NumPy draws: jax.random would compile once per leaf shape.
    """
    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, tdef = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(seed)
    noisy = [leaf + scale * rng.standard_normal(leaf.shape).astype(leaf.dtype) for leaf in leaves]
    return eqx.combine(jax.tree_util.tree_unflatten(tdef, noisy), static)


@functools.cache
def build(name, L, seed=0):
    """(model, beta) for a named case on an L×L lattice; beta is None for plain models."""
    key = jax.random.key(seed)
    cond = name.endswith("_beta")
    kw = dict(beta_conditioned=True, beta_min=0.2, beta_max=1.0) if cond else {}
    base = name.split("_")[0]
    if base == "made":
        m = MADE((L, L), key=key, channels=2, depth=2, **kw)
    elif base == "pixelcnn":
        m = PixelCNN(L, key=key, channels=8, depth=3, **kw)
    elif base == "pixelconv":  # small-kernel conv path for the first layer, dilated type-B layers
        m = PixelCNN(L, key=key, channels=8, depth=3, first_kernel_size=2 * L + 1, dilation=(1, 2))
    m = perturb(m, seed=seed)
    if "_sym" in name:
        m = SpinFlipSymmetric(m)
    return m, (BETAS[0] if cond else None)


def args(beta):
    return () if beta is None else (beta,)


def _beta(beta, dtype=jnp.float32):
    # an array, not a Python float: one compilation serves every β
    return None if beta is None else jnp.asarray(beta, dtype)


@eqx.filter_jit
def _log_prob(m, x, beta):
    return m.log_prob(x, *args(beta))


def log_prob(m, x, beta=None):
    """Jitted ``m.log_prob`` (eager op-by-op dispatch and recompiles dominated the test time)."""
    return _log_prob(m, x, _beta(beta, x.dtype))


@eqx.filter_jit
def _sample(m, key, n, beta):
    return m.sample_and_log_prob(n, key=key, **({} if beta is None else {"beta": beta}))


def sample(m, key, n, beta=None):
    """Jitted ``m.sample_and_log_prob``."""
    return _sample(m, key, n, _beta(beta))


def states(L, dtype=jnp.float32):
    return jnp.asarray(all_states(L * L).reshape(-1, L, L), dtype)


@pytest.mark.parametrize("name", ["made_sym", "pixelcnn_beta", "pixelconv"])
def test_normalised_3x3(name):
    m, beta = build(name, 3)
    betas = BETAS if beta is not None else (None,)
    for b in betas:
        lp = log_prob(m, states(3), b)
        assert lp.dtype == jnp.float32
        assert abs(float(logsumexp(np.asarray(lp, np.float64)))) < 1e-5
        with jax.enable_x64(True):
            lp64 = log_prob(m, states(3, jnp.float64), b)
            assert lp64.dtype == jnp.float64
            assert abs(float(logsumexp(np.asarray(lp64)))) < 1e-10
            assert_allclose(lp64, lp, atol=1e-5)


@pytest.mark.parametrize("name", ["made_sym_beta", "pixelcnn_sym"])
def test_normalised_4x4(name):
    m, beta = build(name, 4)
    for b in BETAS if beta is not None else (None,):
        with jax.enable_x64(True):
            lp = log_prob(m, states(4, jnp.float64), b)
            assert abs(float(logsumexp(np.asarray(lp)))) < 1e-10
    lp = log_prob(m, states(4), beta)
    assert abs(float(logsumexp(np.asarray(lp, np.float64)))) < 1e-5


@pytest.mark.parametrize("name", ["made", "pixelcnn", "pixelconv", "made_beta"])
def test_autoregressive_property(name):
    """Flipping s_j leaves the conditionals i ≤ j unchanged and changes every later one."""
    L = 4
    m, beta = build(name, L)
    n = L * L
    x = jnp.where(jax.random.bernoulli(jax.random.key(3), 0.5, (6, L, L)), 1.0, -1.0)
    logits = jax.jit(lambda x: m.conditional_logits(x, *args(beta)))
    base = np.asarray(logits(x))
    for j in range(n):
        flipped = x.reshape(6, n).at[:, j].multiply(-1.0).reshape(6, L, L)
        new = np.asarray(logits(flipped))
        assert_allclose(new[:, : j + 1], base[:, : j + 1], atol=1e-6, err_msg=f"site {j}")
        changed = np.max(np.abs(new[:, j + 1 :] - base[:, j + 1 :]), axis=0)
        assert np.all(changed > 1e-6), f"flipping site {j} leaves later conditionals unchanged"


def test_receptive_field_matrix():
    # full first kernel: every earlier site, nothing later
    r = receptive_field(4, [(3, 3, 1, False)])
    assert np.array_equal(r, np.tril(np.ones((16, 16), bool), k=-1))
    # 3x3 type-A kernels: (1, 0) cannot see (0, 2) with zero padding, however deep
    r = receptive_field(4, [(1, 1, 1, False)] + [(1, 1, 1, True)] * 6)
    assert not r[4, 2] and r[4, 1] and r[5, 2]


@eqx.filter_jit
def _grad_sum_log_prob(m, x, beta):
    return eqx.filter_grad(lambda m: jnp.sum(m.log_prob(x, *args(beta))))(m)


def test_masked_weights_get_no_gradient():
    x = states(3)[:64]
    for name in ["made_beta", "pixelcnn", "pixelconv"]:
        m, beta = build(name, 3)
        grads = _grad_sum_log_prob(m, x, _beta(beta))
        if isinstance(m, MADE):
            pairs = list(zip(grads.w_layers, m.masks, strict=True))
        else:
            pairs = [(grads.w_first, m.mask_first[:, :, None])]
            pairs += [(g, m.mask_res[:, :, None, None]) for g in grads.w_res]
        for g, mask in pairs:
            g = np.asarray(g)
            assert np.all(g[~np.broadcast_to(np.asarray(mask), g.shape)] == 0.0)
            assert np.any(g != 0.0)


def test_masks_not_trainable():
    for name in ["made", "pixelcnn_sym_beta"]:
        m, _ = build(name, 3)
        params, _ = eqx.partition(m, eqx.is_inexact_array)
        dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)}
        assert dtypes == {jnp.dtype(jnp.float32)}
        masks = [leaf for leaf in jax.tree_util.tree_leaves(m) if leaf.dtype == jnp.bool_]
        assert masks, "masks are stored as boolean (non-trainable) leaves"


@pytest.mark.parametrize("name", ["made", "pixelcnn", "pixelcnn_sym_beta", "pixelconv"])
def test_sampled_log_q_matches_log_prob(name):
    m, beta = build(name, 4)
    x, log_q = sample(m, jax.random.key(5), 200, beta)
    assert x.dtype == jnp.float32 and x.shape == (200, 4, 4)
    assert set(np.unique(np.asarray(x))) <= {-1.0, 1.0}
    assert log_q.dtype == jnp.float32 and log_q.shape == (200,)
    assert_allclose(log_q, log_prob(m, x, beta), atol=2e-5, rtol=1e-6)
    if name.startswith("pixel"):
        return  # float64 PixelCNN compilations are slow; test_normalised_* check float64
    with jax.enable_x64(True):
        lp64 = log_prob(m, jnp.asarray(x, jnp.float64), beta)
    assert_allclose(log_q, lp64, atol=2e-5, rtol=1e-6)


@pytest.mark.parametrize("shape", [(6, 6), (20,)])
def test_made_blocked_sampling(shape):
    """MADE samples in blocks of up to 16 sites (here 3 × 12 and 2 × 10): cached log q exact."""
    m = perturb(MADE(shape, key=jax.random.key(2), channels=3, depth=3, beta_conditioned=True))
    betas = jnp.linspace(0.2, 1.0, 100)
    x, log_q = sample(m, jax.random.key(4), 100, betas)
    assert x.shape == (100, *shape)
    assert_allclose(log_q, log_prob(m, x, betas), atol=3e-5, rtol=1e-6)


# the models of test_normalised_3x3 (other seeds): their float64 log_prob is compiled already
@pytest.mark.parametrize("name", ["made_sym", "pixelcnn_beta"])
def test_sampling_distribution(name):
    """Frequencies of the 512 states of a 3×3 lattice match q: Pearson χ² and per-state z."""
    m, beta = build(name, 3, seed=1)
    n = 2**15
    x, _ = sample(m, jax.random.key(7), n, beta)
    bits = (np.asarray(x).reshape(n, 9) > 0).astype(np.int64)
    idx = bits @ (1 << np.arange(9))  # the index of all_states
    counts = np.bincount(idx, minlength=512)
    with jax.enable_x64(True):
        q = np.exp(np.asarray(log_prob(m, states(3, jnp.float64), beta)))
    expected = n * q
    big = expected >= 5
    z = (counts - expected) / np.sqrt(expected * (1 - q))
    assert np.max(np.abs(z[big])) < 5.0  # per-state binomial z (where it is near-Gaussian)
    stat = np.sum((counts[big] - expected[big]) ** 2 / expected[big])
    rest_obs, rest_exp = counts[~big].sum(), expected[~big].sum()
    dof = int(big.sum()) - 1
    if rest_exp > 0:
        stat += (rest_obs - rest_exp) ** 2 / rest_exp
        dof += 1
    assert chi2.sf(stat, dof) > 1e-4, f"chi2 {stat:.1f} on {dof} dof"


def test_scan_jit_conformance():
    m, _ = build("made_sym", 3)
    sampler = m

    @eqx.filter_jit
    def run(sampler, key):
        def step(carry, k):
            x, lq = sampler.sample_and_log_prob(16, key=k)
            return carry + jnp.sum(lq), (x, lq)

        return jax.lax.scan(step, jnp.zeros((), jnp.float32), jax.random.split(key, 3))

    total, (xs, lqs) = run(sampler, jax.random.key(0))
    assert xs.shape == (3, 16, 3, 3) and xs.dtype == jnp.float32
    assert total.dtype == jnp.float32 and lqs.shape == (3, 16)
    assert_allclose(lqs, log_prob(m, xs.reshape(48, 3, 3)).reshape(3, 16), atol=2e-5)
    # same sampler, same key: same draw; it is a pure function of the key
    x2, _ = sample(m, jax.random.split(jax.random.key(0), 3)[0], 16)
    assert np.array_equal(np.asarray(x2), np.asarray(xs[0]))


def test_beta_conditioning_api():
    m, _ = build("made_beta", 3)
    x = states(3)[::8]
    lp_a, lp_b = log_prob(m, x, BETAS[0]), log_prob(m, x, BETAS[1])
    assert np.max(np.abs(np.asarray(lp_a - lp_b))) > 1e-3  # β does enter
    per = jnp.where(jnp.arange(x.shape[0]) % 2 == 0, BETAS[0], BETAS[1])
    mixed = log_prob(m, x, per)
    assert_allclose(mixed[::2], lp_a[::2], atol=1e-6)
    assert_allclose(mixed[1::2], lp_b[1::2], atol=1e-6)
    fixed = m.at(BETAS[1])
    assert isinstance(fixed, FixedBeta) and isinstance(fixed, AbstractSampler)
    assert fixed.event_shape == (3, 3)
    assert_allclose(log_prob(fixed, x), lp_b, atol=1e-6)
    xs, lq = sample(fixed, jax.random.key(1), 32)
    assert_allclose(lq, log_prob(m, xs, BETAS[1]), atol=2e-5)
    # β is a leaf behind stop_gradient: no gradient, no recompilation for a new β
    g = _grad_sum_log_prob(fixed, x, None)
    assert float(g.beta) == 0.0
    f = eqx.filter_jit(lambda f, x: f.log_prob(x))
    f(fixed, x)
    f(m.at(0.5), x)
    assert f._cached._cache_size() == 1
    # symmetrised conditional model: both orders of wrapping agree
    sym = SpinFlipSymmetric(m)
    assert sym.beta_conditioned
    assert_allclose(log_prob(sym.at(0.5), x), log_prob(SpinFlipSymmetric(m.at(0.5)), x), atol=1e-6)
    xs, lq = sample(sym, jax.random.key(2), 32, 0.5)
    assert_allclose(lq, log_prob(sym, xs, 0.5), atol=2e-5)


def test_beta_errors():
    cond, _ = build("made_beta", 3)
    plain, _ = build("made", 3)
    x = states(3)[:4]
    with pytest.raises(ValueError, match="pass beta"):
        cond.log_prob(x)
    with pytest.raises(ValueError, match="pass beta"):
        cond.sample_and_log_prob(4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="shape"):
        cond.log_prob(x, jnp.ones(3))
    with pytest.raises(ValueError, match="not beta-conditioned"):
        plain.log_prob(x, 0.5)
    with pytest.raises(ValueError, match="beta-conditioned"):
        plain.at(0.5)
    with pytest.raises(ValueError, match="pass beta"):
        SpinFlipSymmetric(cond).log_prob(x)
    with pytest.raises(ValueError, match="do not pass beta"):
        SpinFlipSymmetric(plain).log_prob(x, 0.5)
    with pytest.raises(ValueError, match=r"expects a batch of shape \(n, 3, 3\)"):
        plain.log_prob(x.reshape(4, 9))


def test_bad_hyperparameters():
    key = jax.random.key(0)
    bad = [
        (lambda: MADE((3, 3), key=key, channels=0), "channels"),
        (lambda: MADE((3, 3), key=key, depth=0), "depth"),
        (lambda: MADE((1,), key=key), "at least 2 spins"),
        (lambda: MADE(9, key=key, beta_min=1.0, beta_max=0.5), "beta_max must exceed"),
        (lambda: PixelCNN(4, key=key, kernel_size=4), "kernel_size must be odd"),
        (lambda: PixelCNN(4, key=key, first_kernel_size=4), "first_kernel_size must be odd"),
        (lambda: PixelCNN(4, key=key, first_kernel_size="wide"), "first_kernel_size"),
        (lambda: PixelCNN(4, key=key, depth=3, dilation=(1, 2, 3)), "one value per"),
        (lambda: PixelCNN(1, key=key), "L must be"),
        (lambda: PixelCNN(4, key=key, channels=2.5), "channels"),
    ]
    for fn, msg in bad:
        with pytest.raises(ValueError, match=msg):
            fn()
    # VAN-style small kernels cannot see the far end of the previous row (zero padding)
    with pytest.raises(ValueError) as err:
        PixelCNN(8, key=key, first_kernel_size=5, kernel_size=3, depth=6, dilation=2)
    msg = str(err.value)
    for part in ("L=8", "first_kernel_size=5", "kernel_size=3", "depth=6", "dilation=(2, 2"):
        assert part in msg


def test_registry():
    ising, sk = Ising(4), SherringtonKirkpatrick(6)
    assert default_sampler_kind(ising) == "pixelcnn"
    assert default_sampler_kind(sk) == "made"
    assert default_sampler_kind(CoulombGas(3, 2)) == "cnf"
    key = jax.random.key(0)
    q = make_sampler("pixelcnn", ising, key=key)
    assert isinstance(q, SpinFlipSymmetric) and isinstance(q.model, PixelCNN)
    assert isinstance(make_sampler("pixelcnn", Ising(4, h=0.2), key=key), PixelCNN)
    assert isinstance(make_sampler("pixelcnn", ising, key=key, z2=False), PixelCNN)
    q = make_sampler("made", sk, key=key, channels=1, beta_conditioned=True, beta_max=2.0)
    assert q.beta_conditioned and q.model.beta_embed.beta_max == 2.0
    x, lq = q.at(1.0).sample_and_log_prob(8, key=key)
    assert x.shape == (8, 6)
    q = make_sampler("made", ising, key=key, z2=False)
    assert isinstance(q, MADE) and q.event_shape == (4, 4)
    with pytest.raises(ValueError, match="discrete spin system"):
        make_sampler("realnvp", ising, key=key)
    with pytest.raises(ValueError, match="discrete spin system"):
        make_sampler("equivariant", ising, key=key)
    with pytest.raises(ValueError, match="continuous"):
        make_sampler("made", CoulombGas(3, 2), key=key)
    with pytest.raises(ValueError, match="L×L lattice"):
        make_sampler("pixelcnn", sk, key=key)
    with pytest.raises(ValueError, match="z2"):
        make_sampler("made", sk, key=key, z2="yes")
    with pytest.raises(ValueError, match="unknown parameter"):
        make_sampler("made", sk, key=key, width=3)
    with pytest.raises(ValueError, match="receptive field"):
        make_sampler("pixelcnn", ising, key=key, first_kernel_size=3)


# --- Z2 symmetrisation removes the ln 2 bias of a one-sector sampler ----------------------------

SYSTEM = Ising(3, J=1.0, h=0.0)
BETA = 0.6


def _exact_kl_train(model, steps=300):
    """Minimise the exact reverse KL Σ_s q(s)(ln q(s) + βE(s)) over the 512 states, with the
    conditional of s_0 frozen (Adam's steps do not shrink with the gradient: left free, the
    s_0 logit drifts back towards 0 and q leaks into the other sector)."""
    x = states(3)
    u = BETA * jnp.asarray(enumerate_energies(SYSTEM), jnp.float32)
    opt = optax.adam(2e-2)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p):
        lq = eqx.combine(p, static).log_prob(x)
        return jnp.sum(jnp.exp(lq) * (lq + u))

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        g = eqx.tree_at(lambda g: g.b_layers[-1], g, g.b_layers[-1].at[0].set(0.0))
        g = eqx.tree_at(lambda g: g.w_layers[-1], g, g.w_layers[-1].at[0].set(0.0))
        up, s = opt.update(g, s)
        return optax.apply_updates(p, up), s

    state = opt.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return eqx.combine(params, static)


def _is_log_z(q, n, key):
    """Importance-sampling ln Ẑ = logsumexp(w) − ln n with a delta-method standard error."""
    x, lq = sample(q, key, n)
    with jax.enable_x64(True):
        e = np.asarray(jax.jit(jax.vmap(SYSTEM.energy))(jnp.asarray(x, jnp.float64)))
    log_w = -BETA * e - np.asarray(lq, np.float64)
    w = np.exp(log_w - log_w.max())
    est = math.log(w.mean()) + log_w.max()
    return est, w.std(ddof=1) / math.sqrt(n) / w.mean()


def test_spin_flip_symmetrisation_removes_ln2_bias():
    log_z = enumerate_log_z(SYSTEM, BETA)
    u = BETA * enumerate_energies(SYSTEM)
    # (a) exact sums: q with zero mass outside the s_0 = +1 sector (logit of s_0 = +∞)
    m = perturb(MADE((3, 3), key=jax.random.key(0)), scale=0.3)
    collapsed = eqx.tree_at(lambda m: m.b_layers[-1], m, m.b_layers[-1].at[0].set(jnp.inf))
    with jax.enable_x64(True):
        x = states(3, jnp.float64)
        lq = np.asarray(log_prob(collapsed, x))
        lq_sym = np.asarray(log_prob(SpinFlipSymmetric(collapsed), x))
    assert abs(logsumexp(lq)) < 1e-12 and abs(logsumexp(lq_sym)) < 1e-12
    support = np.isfinite(lq)
    assert support.sum() == 256 and np.all(np.isfinite(lq_sym))
    # E_q[w] = Σ_{q > 0} q · e^{−u}/q: only one sector of the Boltzmann weight
    est = logsumexp(lq[support] + (-u[support] - lq[support]))
    est_sym = logsumexp(lq_sym + (-u - lq_sym))
    assert abs(est - (log_z - math.log(2.0))) < 1e-10
    assert abs(est_sym - log_z) < 1e-10
    # (b) sampling: a q trained by exact reverse KL from a start in one sector stays there
    start = eqx.tree_at(lambda m: m.b_layers[-1], m, m.b_layers[-1].at[0].set(16.0))
    q = _exact_kl_train(start)
    with jax.enable_x64(True):
        q_other = float(jnp.sum(jnp.exp(log_prob(q, states(3, jnp.float64)))[::2]))
    assert q_other < 1e-5  # states with s_0 = −1 (even indices of all_states): never sampled
    n = 8192
    est, se = _is_log_z(q, n, jax.random.key(11))
    est_sym, se_sym = _is_log_z(SpinFlipSymmetric(q), n, jax.random.key(12))
    within_sigmas(est, log_z - math.log(2.0), se)  # low by ln 2
    assert log_z - est > 0.5
    within_sigmas(est_sym, log_z, se_sym)
