"""Shared test configuration: strict numerics, one allclose helper, a results-file fixture."""

import os
import tempfile

# The suite's time is mostly XLA compilation of small programs that then run for a moment:
# compile without LLVM's expensive optimisation passes (≈ 40 % less compile time measured on
# tests/test_flows.py::test_log_det_matches_jacobian). Results stay the same up to float
# round-off; every process of the session (xdist workers, CLI and README subprocesses)
# inherits the flags through the environment. Set before jax initialises its backend.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)

import jax  # noqa: E402
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

# One persistent XLA compilation cache per test session, shared by the xdist workers and the
# subprocesses the tests start (CLI, README examples): many tests compile the same programs.
# It is created fresh for each session (so a timing of `make test` is one from scratch) by the
# first process that imports this file; the others inherit its path through the environment.
_CACHE_ENV = "BOLTZGEN_TEST_JAX_CACHE"
if _CACHE_ENV not in os.environ:
    os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="boltzgen-jax-cache-")
    _OWNER = True
else:
    _OWNER = False
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ[_CACHE_ENV])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def assert_allclose(actual, desired, *, rtol=1e-7, atol=0.0, err_msg=""):
    """The one array comparison of the test suite (NumPy's, on host copies)."""
    np.testing.assert_allclose(
        np.asarray(actual), np.asarray(desired), rtol=rtol, atol=atol, err_msg=err_msg
    )


def within_sigmas(value, target, stderr, n_sigma=4.0):
    """|value − target| ≤ n_sigma · stderr, with a readable message."""
    diff = abs(value - target)
    assert np.isfinite(stderr) and stderr > 0, f"bad standard error {stderr}"
    assert diff <= n_sigma * stderr, (
        f"{value:.6f} vs {target:.6f}: |diff| = {diff:.3g} > {n_sigma} × stderr {stderr:.3g}"
    )


def pytest_sessionfinish(session, exitstatus):
    """The process that created the session's compilation cache removes it."""
    if _OWNER and not hasattr(session.config, "workerinput"):
        import shutil

        shutil.rmtree(os.environ[_CACHE_ENV], ignore_errors=True)


@pytest.fixture
def key():
    return jax.random.key(0)


def make_q(system, kind=None, *, seed=0, **options):
    """The sampler a run with ``seed`` builds (its weights from the run's ``init`` key stream)."""
    from boltzgen._keys import RunKeys
    from boltzgen.flows import default_sampler_kind, make_sampler

    kind = default_sampler_kind(system) if kind is None else kind
    return make_sampler(kind, system, key=RunKeys(seed).init, **options)
