"""Annealed paths both ways between q and p: exact Gaussian case, second-law ordering."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from boltzgen.estimators import feat
from boltzgen.mcmc import annealed_paths

D = 2
MU = jnp.array([1.0, -0.5])
S_P = 0.5  # p ∝ exp(-|x - μ|² / (2 s²)):  ln Z_p = (d/2) ln(2π s²)
S_Q = 1.2
LOG_Z = 0.5 * D * math.log(2 * math.pi * S_P**2)


def log_q(x):
    return -0.5 * jnp.sum(x * x) / S_Q**2 - 0.5 * D * math.log(2 * math.pi * S_Q**2)


def sample_q(key, n):
    x = S_Q * jax.random.normal(key, (n, D))
    return x, jax.vmap(log_q)(x)


def log_p(x):
    return -0.5 * jnp.sum((x - MU) ** 2) / S_P**2


def run(n_steps, seed=0, n=512, p_samples=None, kernel="hmc"):
    key = jax.random.key(seed)
    if p_samples is None:
        z = jax.random.normal(jax.random.fold_in(key, 9), (n, D))
        p_samples = np.asarray(MU[None, :] + S_P * z)
    return annealed_paths(
        key,
        sample_q=sample_q,
        log_q=log_q,
        log_density=log_p,
        p_positions=p_samples,
        n_chains=n,
        n_steps=n_steps,
        n_leapfrog=3,
        kernel=kernel,
    )


# Random-walk moves mix less per step: 32 of them leave the one-sided estimates' weights as
# well spread as 8 HMC moves do (with 8, path_reverse's ESS is 15 % and it is biased low).
@pytest.mark.parametrize(("kernel", "n_steps"), [("hmc", 8), ("rwm", 32)])
def test_two_sided_bounds_and_bar_match_the_exact_gaussian_ln_z(kernel, n_steps):
    res = run(n_steps=n_steps, kernel=kernel)
    est = feat(res.log_w_forward, res.log_w_reverse, prefix="path")
    assert set(est) == {"path_forward", "path_reverse", "path_bar", "path_upper_bound",
                        "path_lower_bound"}  # fmt: skip
    beta_f = -LOG_Z
    up, lo = est["path_upper_bound"], est["path_lower_bound"]
    # second law: −mean(A_F) ≥ βF ≥ mean(A_R), each up to 4 standard errors
    assert up.beta_f > beta_f - 4 * up.log_z_stderr
    assert lo.beta_f < beta_f + 4 * lo.log_z_stderr
    assert up.beta_f > lo.beta_f
    for name in ("path_bar", "path_forward", "path_reverse"):
        e = est[name]
        assert abs(e.log_z - LOG_Z) < 4 * e.log_z_stderr, (name, e.log_z, e.log_z_stderr)
    assert res.n_steps == n_steps and res.step_sizes.shape == (n_steps,)
    assert res.acceptance_reverse.shape == (n_steps + 1,)


@pytest.mark.parametrize("kernel", ["hmc", "rwm"])
def test_bounds_tighten_as_the_paths_lengthen(kernel):
    short, long = run(n_steps=2, kernel=kernel), run(n_steps=40, kernel=kernel)
    w_short = short.upper_bound - short.lower_bound
    w_long = long.upper_bound - long.lower_bound
    se = np.std(long.log_w_forward) / math.sqrt(long.log_w_forward.size)
    se += np.std(long.log_w_reverse) / math.sqrt(long.log_w_reverse.size)
    assert w_long < 0.5 * w_short
    assert long.upper_bound > -LOG_Z - 4 * se > long.lower_bound - 8 * se


def test_reverse_paths_from_samples_that_are_not_of_p_break_the_lower_bound():
    """The lower bound needs equilibrium samples of p: started at q's samples it is wrong."""
    x_q = np.asarray(sample_q(jax.random.key(5), 512)[0])
    res = run(n_steps=2, p_samples=x_q)
    se = np.std(res.log_w_reverse) / math.sqrt(res.log_w_reverse.size)
    assert res.lower_bound > -LOG_Z + 4 * se


@pytest.mark.parametrize("bad", [1, 0])
def test_too_few_samples_of_p_are_refused(bad):
    with pytest.raises(ValueError, match="p_positions"):
        run(n_steps=2, p_samples=np.zeros((bad, D)))


@pytest.mark.slow
def test_path_bar_error_bar_covers_the_exact_value_over_seeds():
    """Over 100 seeds (K = 8, 256 paths each way) the 1σ interval of the path BAR covers the
    exact ln Z 68.3 % of the time within 4 binomial standard errors (± 0.19), and the mean
    z-score is 0 within 4 standard errors of the mean."""
    z = []
    for seed in range(100):
        res = run(n_steps=8, seed=seed, n=256)
        e = feat(res.log_w_forward, res.log_w_reverse, prefix="path")["path_bar"]
        z.append((e.log_z - LOG_Z) / e.log_z_stderr)
    z = np.asarray(z)
    cover = np.mean(np.abs(z) <= 1)
    assert abs(cover - 0.6827) <= 4 * math.sqrt(0.6827 * 0.3173 / z.size), cover
    assert abs(z.mean()) <= 4 * z.std() / math.sqrt(z.size), z.mean()
