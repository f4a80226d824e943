"""FEAT: escorted Jarzynski / controlled Crooks paths (boltzgen.mcmc._escorted) and estimators.

Exact answers: a = N(0, I) (normalised) → b = an unnormalised shifted anisotropic Gaussian in
D = 3, and on the zero-centre-of-mass subspace of N = 3 particles in d = 2 a harmonic pair
energy with closed-form subspace integral. Statistical tolerances from the reported standard
errors (4σ, fixed seeds); the one-step kernel algebra against explicit Gaussian densities; the
exact Gaussian-interpolant fields (variance of A_F shrinking with the step, and a nearly
constant A_F for the ODE transport).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_allclose, within_sigmas
from counting import Counter
from jax.scipy.stats import norm

from boltzgen.estimators._bar import bar
from boltzgen.estimators._feat import FEAT_METHODS, feat
from boltzgen.estimators._work import jarzynski, jarzynski_reverse, work_bounds
from boltzgen.mcmc._escorted import PathResult, forward_paths, reverse_paths

D = 3
MU = np.array([0.8, -0.3, 0.5])
SIG = np.array([0.6, 1.3, 0.9])
C = 0.7
EXACT_LOG_Z_B = C + float(np.sum(np.log(SIG))) + 0.5 * D * math.log(2 * math.pi)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


# --------------------------------------------------------------- Gaussian a → Gaussian b, D = 3


def log_rho_a(x):
    """Normalised N(0, I)."""
    return -0.5 * jnp.sum(x**2) - 0.5 * D * math.log(2 * math.pi)


def log_rho_b(x):
    """Unnormalised: ln ρ̃_b = −½ Σ ((x − μ)/σ)² + c, ln Z_b = c + Σ ln σ + (D/2) ln 2π."""
    return -0.5 * jnp.sum(((x - MU) / SIG) ** 2) + C


def _var_t(t):
    return (1 - t) ** 2 + t**2 * SIG**2


def b_exact(t, x):
    """Velocity of x_t = (1 − t) x_0 + t x_1.

    ρ_t = N(tμ, diag(v_t)), v_t = (1 − t)² + t²σ², and b = ṁ + v̇/(2v)(x − m) transports it.
    """
    return MU + ((-2 * (1 - t) + 2 * t * SIG**2) / (2 * _var_t(t))) * (x - t * MU)


def s_exact(t, x):
    """Score of ρ_t."""
    return -(x - t * MU) / _var_t(t)


def div_exact(t, x):
    return jnp.trace(jax.jacfwd(lambda y: b_exact(t, y))(x))


_K = jax.random.split(jax.random.key(11), 4)
_W1 = np.asarray(jax.random.normal(_K[0], (8, D)))
_C1 = np.asarray(jax.random.normal(_K[1], (8,)))
_W2 = np.asarray(0.2 * jax.random.normal(_K[2], (D, 8)) / math.sqrt(8))
_P = np.asarray(0.15 * jax.random.normal(_K[3], (D, D)))


def b_wrong(t, x):
    """Deliberately wrong drift: the exact one plus a random linear field and a small tanh MLP."""
    return b_exact(t, x) + _W2 @ jnp.tanh(_W1 @ x + _C1 + t) + _P @ x


def s_wrong(t, x):
    """Deliberately wrong score."""
    return 0.7 * s_exact(t, x)


def div_wrong(t, x):
    """Exact divergence of the wrong drift (Jacobian trace)."""
    return jnp.trace(jax.jacfwd(lambda y: b_wrong(t, y))(x))


def samples(seed, n):
    k0, k1, kf, kr = jax.random.split(jax.random.key(seed), 4)
    x0 = jax.random.normal(k0, (n, D))
    x1 = MU[None] + SIG[None] * jax.random.normal(k1, (n, D))
    return x0, x1, kf, kr


def _bump(t):
    """ε(t) = 4t(1 − t): zero at both ends."""
    return 4.0 * t * (1.0 - t)


@pytest.mark.parametrize(
    "eps, grid",
    [
        (1.0, dict(n_steps=20)),
        (_bump, dict(times=np.linspace(0.0, 1.0, 21) ** 1.5)),  # non-uniform, ε → 0 at ends
        (0.0, dict(n_steps=20)),  # ODE transport, exact divergence, RK4
    ],
    ids=["eps1", "eps_bump_nonuniform", "ode"],
)
def test_wrong_fields_recover_exact_log_z(x64, eps, grid):
    x0, x1, kf, kr = samples(0, 2000)
    kw = dict(log_density_a=log_rho_a, log_density_b=log_rho_b, eps=eps, divergence=div_wrong)
    rf = forward_paths(b_wrong, s_wrong, x0, key=kf, **kw, **grid)
    rr = reverse_paths(b_wrong, s_wrong, x1, key=kr, **kw, **grid)
    assert rf.log_w.dtype == jnp.float64 and rr.log_w.dtype == jnp.float64
    assert int(rf.n_nonfinite) == 0 and int(rr.n_nonfinite) == 0
    assert np.std(rf.log_w) > 0.3  # the fields really are wrong
    est = feat(rf.log_w, rr.log_w)  # ρ_a normalised: log_z_a = 0
    for m in ("feat_forward", "feat_reverse", "feat_bar"):
        e = est[m]
        assert e.kind == "estimate"
        within_sigmas(e.log_z, EXACT_LOG_Z_B, e.log_z_stderr)
    # the bracket mean(A_F) ≤ ln Z_b ≤ −mean(A_R), bounds on βF named by their kind
    up, lo = est["feat_upper_bound"], est["feat_lower_bound"]
    assert up.kind == "upper_bound" and lo.kind == "lower_bound"
    assert up.log_z < EXACT_LOG_Z_B + 4 * up.log_z_stderr
    assert lo.log_z > EXACT_LOG_Z_B - 4 * lo.log_z_stderr
    assert up.log_z < est["feat_bar"].log_z < lo.log_z
    assert est["feat_bar"].log_z_stderr < min(
        est["feat_forward"].log_z_stderr, est["feat_reverse"].log_z_stderr
    )


def test_exact_fields_variance_shrinks_with_step(x64):
    x0 = jax.random.normal(jax.random.key(0), (500, D))
    kw = dict(log_density_a=log_rho_a, log_density_b=log_rho_b)
    var, bias = [], []
    for k in (4, 16, 64):
        r = forward_paths(b_exact, s_exact, x0, key=jax.random.key(1), n_steps=k, eps=1.0, **kw)
        var.append(float(np.var(r.log_w)))
        bias.append(EXACT_LOG_Z_B - float(np.mean(r.log_w)))  # KL of the path measures, ≥ 0
    assert var[0] > var[1] > var[2]
    assert var[2] < 0.2 * var[0]  # Var A_F = O(h)
    assert bias[0] > bias[1] > bias[2] > 0
    # ε = 0 with the exact velocity: the ODE transports ρ_a onto ρ_b, A_F = ln Z_b for every x
    r = forward_paths(b_exact, None, x0, n_steps=20, eps=0.0, divergence=div_exact, **kw)
    assert r.deterministic and r.n_score_evals == 0
    assert float(np.std(r.log_w)) < 1e-5
    assert_allclose(np.mean(r.log_w), EXACT_LOG_Z_B, atol=1e-5)
    x1 = MU[None] + SIG[None] * jax.random.normal(jax.random.key(2), (500, D))
    r = reverse_paths(b_exact, None, x1, n_steps=20, eps=0.0, divergence=div_exact, **kw)
    assert_allclose(r.log_w, -EXACT_LOG_Z_B, atol=1e-5)
    assert_allclose(np.std(r.x_a, axis=0), np.ones(D), atol=0.1)  # x_a ~ N(0, I)


# --------------------------------------------------------------- the one-step kernel algebra


def _log_gauss(y, mean, var, dim):
    return -0.5 * jnp.sum((y - mean) ** 2, axis=tuple(range(1, y.ndim))) / var - 0.5 * dim * (
        math.log(2 * math.pi) + jnp.log(var)
    )


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_one_step_weight_matches_explicit_kernels(x64, direction):
    """K = 1 on [0.1, 0.6]: A from the returned end points and explicit Gaussian log-densities."""
    t0, t1, eps = 0.1, 0.6, 0.8
    h, x0, x1, kf, _ = t1 - t0, *samples(3, 50)
    fn, x = (forward_paths, x0) if direction == "forward" else (reverse_paths, x1)
    # Every function counted: the reported evaluation counts must be the real ones.
    drift, score = Counter(b_wrong, 1, arg=1), Counter(s_wrong, 1, arg=1)
    rho_a, rho_b = Counter(log_rho_a, 1), Counter(log_rho_b, 1)
    r = fn(
        drift,
        score,
        x,
        key=kf,
        times=[t0, t1],
        eps=eps,
        log_density_a=rho_a,
        log_density_b=rho_b,
    )
    xa, xb = r.x_a, r.x_b
    fa = jax.vmap(lambda y: b_wrong(t0, y) + eps * s_wrong(t0, y))(xa)
    bb = jax.vmap(lambda y: b_wrong(t1, y) - eps * s_wrong(t1, y))(xb)
    log_f = _log_gauss(xb, xa + h * fa, 2 * eps * h, D)
    log_b = _log_gauss(xa, xb - h * bb, 2 * eps * h, D)
    la, lb = jax.vmap(log_rho_a)(xa), jax.vmap(log_rho_b)(xb)
    want = lb - la + log_b - log_f if direction == "forward" else la - lb + log_f - log_b
    assert_allclose(r.log_w, want, rtol=1e-10, atol=1e-10)
    assert_allclose(r.log_density_a, la, rtol=1e-12)
    assert (r.n_drift_evals, r.n_score_evals) == (drift.n, score.n)
    assert r.n_energy_evals == rho_a.n + rho_b.n and rho_a.n == rho_b.n == 50


# --------------------------------------------------------------- zero centre of mass, N = 3, d = 2

N_P, DIM_P, K_PAIR = 3, 2, 0.8
DOF = (N_P - 1) * DIM_P
EXACT_PAIR = 0.5 * DOF * math.log(2 * math.pi / (K_PAIR * N_P))  # Z_b = (2π/(kN))^{(N−1)d/2}


def _centre(x):
    return x - jnp.mean(x, axis=0, keepdims=True)


def log_rho_a_com(x):
    """Standard Gaussian on the zero-COM subspace, normalised there (x centred)."""
    return -0.5 * jnp.sum(x**2) - 0.5 * DOF * math.log(2 * math.pi)


def log_rho_b_com(x):
    """−u, u = (k/2) Σ_{i<j} |x_i − x_j|² = (kN/2) Σ_i |x_i − x̄|² (translation-invariant)."""
    d2 = jnp.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    return -0.25 * K_PAIR * jnp.sum(d2)  # each pair counted twice


_M = np.asarray(0.3 * jax.random.normal(jax.random.key(5), (DIM_P, DIM_P)))


def b_com(t, x):
    """Wrong translation-invariant drift (not centred on purpose: the sampler projects it)."""
    return -0.4 * _centre(x) + _centre(x) @ _M + jnp.array([[0.3, -0.2]])


def s_com(t, x):
    return -(1.0 + t * (K_PAIR * N_P - 1.0)) * x


def div_com(t, x):
    """Subspace divergence: the Jacobian trace of the projected, translation-invariant field."""
    jac = jax.jacfwd(lambda y: _centre(b_com(t, y)))(x)
    return jnp.trace(jac.reshape(N_P * DIM_P, N_P * DIM_P))


@pytest.mark.parametrize("eps", [1.0, 0.0], ids=["eps1", "ode"])
def test_zero_com_harmonic_pairs(x64, eps):
    n = 2000
    k0, k1, kf, kr = jax.random.split(jax.random.key(7), 4)
    x0 = _centre_batch(jax.random.normal(k0, (n, N_P, DIM_P)))
    x1 = _centre_batch(jax.random.normal(k1, (n, N_P, DIM_P))) / math.sqrt(K_PAIR * N_P)
    kw = dict(
        log_density_a=log_rho_a_com,
        log_density_b=log_rho_b_com,
        n_steps=20,
        eps=eps,
        divergence=div_com,
        zero_com=True,
    )
    rf = forward_paths(b_com, s_com, x0, key=kf, **kw)
    rr = reverse_paths(b_com, s_com, x1, key=kr, **kw)
    for r in (rf, rr):  # paths stay centred
        for x in (r.x_a, r.x_b):
            assert float(jnp.max(jnp.abs(jnp.mean(x, axis=1)))) < 1e-12
    est = feat(rf.log_w, rr.log_w)
    for m in ("feat_forward", "feat_reverse", "feat_bar"):
        within_sigmas(est[m].log_z, EXACT_PAIR, est[m].log_z_stderr)
    assert est["feat_upper_bound"].log_z < EXACT_PAIR < est["feat_lower_bound"].log_z


def _centre_batch(x):
    return x - jnp.mean(x, axis=1, keepdims=True)


# --------------------------------------------------------------- estimators on arrays


def test_feat_equals_work_estimators_on_negated_log_weights():
    rng = np.random.default_rng(0)
    a_f = rng.normal(-0.6, 1.1, 700) + 0.1 * rng.standard_exponential(700)
    a_r = rng.normal(-0.8, 1.3, 500)
    a_f[3] = -np.inf  # zero weight
    a_r[4] = np.nan  # counted, zero weight
    lza = 2.5
    est = feat(a_f, a_r, log_z_a=lza)
    assert tuple(est) == FEAT_METHODS
    ref = {
        "feat_forward": jarzynski(-a_f),
        "feat_reverse": jarzynski_reverse(-a_r),
        "feat_bar": bar(-a_f, -a_r),
    }
    ref["feat_upper_bound"], ref["feat_lower_bound"] = work_bounds(-a_f, -a_r)
    for m, r in ref.items():
        e = est[m]
        assert e.method == m and e.kind == r.kind and e.n_samples == r.n_samples
        assert_allclose(e.log_z, r.log_z + lza, rtol=1e-14)
        assert_allclose(e.log_z_stderr, r.log_z_stderr, rtol=1e-14)
        assert e.extra["log_z_a"] == lza
    assert est["feat_bar"].extra["n_nonfinite_reverse"] == 1
    assert est["feat_forward"].extra["n_zero_weight"] == 1
    # kinds on βF: mean(A_F) is a lower bound on ln Z (upper on βF), −mean(A_R) an upper one
    assert est["feat_upper_bound"].kind == "upper_bound"
    # the bound of the forward process restricted to its finite-work paths (699 of 700)
    fin = np.isfinite(a_f)
    assert_allclose(est["feat_upper_bound"].log_z, lza + np.mean(a_f[fin]) + np.log(fin.mean()))
    assert est["feat_lower_bound"].kind == "lower_bound"
    # a NaN reverse work leaves only the trivial bound (ln Z ≤ +∞)
    assert est["feat_lower_bound"].log_z == np.inf and est["feat_lower_bound"].n_nonfinite == 1
    lower = feat(a_f, np.where(np.isfinite(a_r), a_r, 0.0), log_z_a=lza)["feat_lower_bound"]
    assert_allclose(lower.log_z, lza - np.mean(np.where(np.isfinite(a_r), a_r, 0.0)))
    assert est["feat_upper_bound"].beta_f > lower.beta_f
    only = feat(a_f, log_z_a=lza)
    assert tuple(only) == ("feat_forward", "feat_upper_bound")
    assert_allclose(only["feat_upper_bound"].log_z, est["feat_upper_bound"].log_z, rtol=1e-15)
    with pytest.raises(ValueError, match="log_w_reverse"):
        feat(a_f, np.array([0.0, np.inf]))


# --------------------------------------------------------------- API: errors, jit, dtypes


def test_input_errors(x64):
    x0, _, kf, _ = samples(1, 8)
    kw = dict(log_density_a=log_rho_a, log_density_b=log_rho_b, n_steps=4)
    with pytest.raises(ValueError, match="divergence"):
        forward_paths(b_wrong, None, x0, eps=0.0, **kw)
    with pytest.raises(ValueError, match="key"):
        forward_paths(b_wrong, s_wrong, x0, eps=1.0, **kw)
    with pytest.raises(ValueError, match="zero_com"):
        forward_paths(b_wrong, s_wrong, x0, key=kf, zero_com=True, **kw)
    with pytest.raises(ValueError, match="vanishes"):
        forward_paths(b_wrong, s_wrong, x0, key=kf, eps=np.array([1.0, 0.0, 1.0, 1.0]), **kw)
    with pytest.raises(ValueError, match="≥ 0"):
        forward_paths(b_wrong, s_wrong, x0, key=kf, eps=-1.0, **kw)
    with pytest.raises(ValueError, match="increasing"):
        forward_paths(b_wrong, s_wrong, x0, key=kf, eps=1.0, times=[0.0, 0.5, 0.4], **kw)
    with pytest.raises(ValueError, match="n_steps"):
        forward_paths(
            b_wrong, s_wrong, x0, key=kf, log_density_a=log_rho_a, log_density_b=log_rho_b
        )


def test_jit_counts_and_masking(x64):
    n, k = 2000, 20  # the shapes of the first test: its compiled kernels are reused
    x0, _, kf, _ = samples(0, n)
    kw = dict(log_density_a=log_rho_a, log_density_b=log_rho_b, n_steps=k, eps=0.5)
    r = forward_paths(b_wrong, s_wrong, x0, key=kf, **kw)
    assert isinstance(r, PathResult) and r.direction == "forward" and not r.deterministic
    # The counts against counted functions, on a small run (new shapes compile once more):
    # per path K + 1 drift and score evaluations, no divergence, ln ρ̃_a and ln ρ̃_b once each.
    fns = [Counter(b_wrong, 1, arg=1), Counter(s_wrong, 1, arg=1)]
    fns += [Counter(log_rho_a, 1), Counter(log_rho_b, 1)]
    small = forward_paths(
        *fns[:2], x0[:16], key=kf, log_density_a=fns[2], log_density_b=fns[3], n_steps=3, eps=0.5
    )
    assert (small.n_drift_evals, small.n_score_evals) == (fns[0].n, fns[1].n) == (4 * 16,) * 2
    assert small.n_divergence_evals == 0 and small.n_energy_evals == fns[2].n + fns[3].n == 32
    assert (r.n_drift_evals, r.n_score_evals, r.n_energy_evals) == ((k + 1) * n, (k + 1) * n, 2 * n)
    jitted = jax.jit(lambda x, key: forward_paths(b_wrong, s_wrong, x, key=key, **kw).log_w)
    assert_allclose(jitted(x0, kf), r.log_w, rtol=1e-12)
    assert_allclose(r.log_w, r.log_density_b - r.log_density_a + r.path_term, rtol=1e-12)
    # a non-finite end-state density is masked to −inf and counted
    bad = dict(kw, log_density_b=lambda x: jnp.where(x[0] > 0, jnp.nan, log_rho_b(x)))
    rb = forward_paths(b_wrong, s_wrong, x0, key=kf, **bad)
    pos = np.asarray(rb.x_b)[:, 0] > 0
    assert 0 < pos.sum() < n and int(rb.n_nonfinite) == pos.sum()
    assert np.all(np.isneginf(np.asarray(rb.log_w)[pos]))
    assert np.all(np.isfinite(np.asarray(rb.log_w)[~pos]))
    ro = forward_paths(b_wrong, None, x0, **dict(kw, eps=0.0), divergence=div_wrong)
    assert ro.deterministic and ro.n_score_evals == 0
    assert (ro.n_drift_evals, ro.n_divergence_evals) == (4 * k * n, 4 * k * n)


def test_float32_without_x64():
    """Default precision: positions and weights in float32 (own fields: no shared jit cache)."""
    mu, sig = jnp.asarray(MU, jnp.float32), jnp.asarray(SIG, jnp.float32)
    x0 = jax.random.normal(jax.random.key(0), (256, D))
    r = forward_paths(
        lambda t, x: mu + (sig - 1.0) * x,
        lambda t, x: -x,
        x0,
        key=jax.random.key(1),
        n_steps=10,
        log_density_a=lambda x: -0.5 * jnp.sum(x**2),
        log_density_b=lambda x: -0.5 * jnp.sum(((x - mu) / sig) ** 2),
    )
    assert r.log_w.dtype == jnp.float32 and r.x_b.dtype == jnp.float32
    assert int(r.n_nonfinite) == 0 and np.all(np.isfinite(np.asarray(r.log_w)))


def test_gaussian_logpdf_helper_is_right():
    """The explicit reference density used above against jax.scipy (guards the guard)."""
    y, m = jnp.array([[0.3, -1.0, 2.0]]), jnp.array([[0.1, 0.2, 0.3]])
    assert_allclose(
        _log_gauss(y, m, 0.7, D), jnp.sum(norm.logpdf(y, m, math.sqrt(0.7)), axis=1), rtol=1e-6
    )
