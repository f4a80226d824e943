"""The shared pieces of boltzgen.mcmc: checks, chunked scans, blackjax moves, old import paths."""

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from boltzgen.mcmc._checks import check_beta, check_int, check_step_sizes, check_target_accept
from boltzgen.mcmc._moves import adapt_step_size, blackjax_move, centre, scale_step_size
from boltzgen.mcmc._scan import compile_scans, run_chunked, run_scans, split_evenly


def test_old_private_import_paths_still_work():
    # Paths used by _run.py, _data.py, the benchmarks and the tests before the split.
    for mod, names in {
        "boltzgen.mcmc._particles": [
            "particle_mcmc",
            "mcmc_at_budget",
            "hmc_step",
            "init_state",
            "trace_ess",
            "trace_rhat",
            "lattice_init",
            "length_scale",
            "centre",
        ],
        "boltzgen.mcmc._refine": ["run_chunked", "refine_anneal", "RefineResult", "KERNELS"],
        "boltzgen.mcmc._nmcmc": ["integrated_autocorrelation_time", "neural_mcmc"],
        "boltzgen.mcmc._ais": ["KERNELS", "ais", "ais_step", "annealing_schedule"],
        "boltzgen.mcmc._spins": [
            "SPIN_KERNELS",
            "CLUSTER_MIN_L",
            "sample_spins",
            "thermodynamic_integration",
            "beta_annealing",
            "spin_observables",
            "_compiled",
            "_simulate",
            "_sweep",
        ],
    }.items():
        m = importlib.import_module(mod)
        for name in names:
            assert hasattr(m, name), f"{mod}.{name}"
    import boltzgen.mcmc as mcmc
    from boltzgen.mcmc import _spins

    for name in mcmc.__all__:
        assert hasattr(mcmc, name)
    assert _spins.sample_spins is mcmc.sample_spins


def test_checks():
    assert check_int("n", np.int64(3)) == 3 and isinstance(check_int("n", np.int64(3)), int)
    for bad in (True, 0, 1.0, "2"):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            check_int("n", bad)
    assert check_int("n", 0, 0) == 0
    assert check_beta(0) == 0.0
    with pytest.raises(ValueError, match="finite number > 0"):
        check_beta(0, positive=True)
    with pytest.raises(ValueError, match="beta"):
        check_beta(math.inf)
    with pytest.raises(ValueError, match="target_accept"):
        check_target_accept(1.0)
    assert check_step_sizes([0.1, 0.2], 2).dtype == np.float64
    with pytest.raises(ValueError, match="shape \\(3,\\)"):
        check_step_sizes([0.1, 0.2], 3)


def test_split_evenly():
    assert split_evenly(0) == [] and split_evenly(7) == [1] * 7
    assert split_evenly(12) == [2] * 6 and split_evenly(100, 25) == [4] * 25
    assert split_evenly(13) == [13]  # a prime above the cap: one chunk


def test_chunked_scan_equals_one_scan_and_traces_once():
    def body(c, x):
        c = 0.9 * c + jnp.sin(x)
        return c, jnp.sum(c)

    xs = jnp.arange(60.0).reshape(20, 3)
    with jax.enable_x64(True):
        ref_c, ref_y = jax.jit(lambda c, x: jax.lax.scan(body, c, x))(jnp.zeros(3), xs)
        c, y, wall, comp, n_traces = run_chunked(lambda k: jnp.zeros(3), (0,), body, xs)
        assert n_traces == 1 and wall >= 0 and comp > 0
        np.testing.assert_array_equal(np.asarray(c), np.asarray(ref_c))
        np.testing.assert_array_equal(y, np.asarray(ref_y))
        sizes = [5, 5, 5, 5]
        compiled = compile_scans(body, jnp.zeros(3), xs, sizes)
        c2, outs = run_scans(compiled, jnp.zeros(3), xs, sizes)
        assert list(compiled) == [5] and len(outs) == 4
        np.testing.assert_array_equal(np.asarray(c2), np.asarray(ref_c))


def test_step_size_rules():
    eps = adapt_step_size(jnp.float32(0.1), 0.75, 0.65, 2.0)
    np.testing.assert_allclose(float(eps), 0.1 * math.exp(0.2), rtol=1e-6)
    x = jnp.stack([jnp.array([0.0, 2.0]), jnp.array([2.0, 6.0])])  # stds 1 and 2
    assert float(scale_step_size(x)) == pytest.approx(0.5)
    assert float(scale_step_size(jnp.ones((4, 2)))) == 1.0  # no spread: ε_0 = 1


@pytest.mark.parametrize("kernel", ["hmc", "mala"])
def test_blackjax_move_keeps_a_gaussian(kernel):
    # Many independent moves from exact N(0, I) samples stay N(0, I) (mean and variance).
    def logp(x):
        return -0.5 * jnp.sum(x * x)

    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (4000, 2), jnp.float64)
        ld, g = jax.vmap(jax.value_and_grad(logp))(x)

        def move(k, x, ld, g):
            new, acc, div = blackjax_move(
                k, x, ld, g, logp, 0.8, kernel=kernel, n_leapfrog=3, mass_dtype=x.dtype
            )
            return new.position, acc, div

        y, acc, div = jax.vmap(move)(jax.random.split(jax.random.key(1), 4000), x, ld, g)
        y, acc, div = np.asarray(y), np.asarray(acc), np.asarray(div)
    assert np.all(np.isfinite(acc)) and 0.3 < float(np.mean(acc)) <= 1.0
    assert not np.any(div)
    assert np.all(np.abs(y.mean(axis=0)) < 5 / math.sqrt(4000))
    assert np.all(np.abs(y.var(axis=0) - 1.0) < 5 * math.sqrt(2 / 4000))


def test_centre():
    x = jnp.arange(12.0).reshape(2, 3, 2)
    c = centre(x)
    np.testing.assert_allclose(np.asarray(c.mean(axis=-2)), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(c - x), np.asarray(c - x)[:, :1, :].repeat(3, 1))
