"""Shared test configuration: strict numerics, one allclose helper, a results-file fixture."""

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


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


@pytest.fixture
def key():
    return jax.random.key(0)


def make_q(system, kind=None, *, seed=0, **options):
    """The sampler a run with ``seed`` builds (its weights from the run's ``init`` key stream)."""
    from boltzgen._keys import RunKeys
    from boltzgen.flows import default_sampler_kind, make_sampler

    kind = default_sampler_kind(system) if kind is None else kind
    return make_sampler(kind, system, key=RunKeys(seed).init, **options)
