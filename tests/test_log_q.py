"""ln q of the default Coulomb-gas samplers, in and far outside q's bulk, against an
independent change-of-variables value.

For each default sampler (d = 1: RealNVP on the ordered domain; d = 2, 3: the equivariant
spline flow with its gap layers) with random, non-identity parameters, and for points drawn
from q, from broad Gaussians (scale 1 and 3) and q's samples scaled by 3, in float64:

* the flow's inverse is an inverse: f(f⁻¹(x)) = x (for the ordered flow: = sort(x));
* ln q(x) from ``log_prob`` equals ln N(z; 0, I) − ln|det ∂f/∂z| (− ln N! for the ordered
  flow) with z = f⁻¹(x) and the determinant of the dense Jacobian of the forward map
  (``jax.jacfwd`` + ``slogdet``), which shares nothing with the layers' own log-determinant
  bookkeeping.

The previous gap layer (a power law in the gap, whose inverse raised gaps to powers up to
e³ ≈ 20) fails the round trip at such points: that was the ln Z "150 nats above the truth".
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from boltzgen.flows import OrderedFlow, make_sampler
from boltzgen.flows._ordered import order_inverse, sort_particles
from boltzgen.systems import CoulombGas


def _perturbed(q, key, scale=0.05, head_scale=0.5):
    """``q`` as after training: every float parameter moved by scale · N(0, 1), and the
    zero-initialised output heads (identity layers at initialisation) by head_scale · N(0, 1),
    so that every layer transforms strongly."""
    leaves, tree = jax.tree.flatten(q)
    keys = jax.random.split(key, len(leaves))
    out = []
    for a, k in zip(leaves, keys, strict=True):
        if eqx.is_inexact_array(a) and a.size > 1:
            s = head_scale if not np.any(np.asarray(a)) else scale
            a = a + s * jax.random.normal(k, a.shape, a.dtype)
        out.append(a)
    return jax.tree.unflatten(tree, out)


def _to64(q):
    return jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, q)


def _independent(q, x):
    """(z, the point f(z) must reproduce, ln q by change of variables) for ONE configuration."""
    if isinstance(q, OrderedFlow):
        y = sort_particles(x[None])[0]
        u, _ = order_inverse(y)
        z, _ = q.inner.inverse_and_log_det(u.reshape(q.inner.event_shape))
        extra = -math.lgamma(q.n_particles + 1)
    else:
        y = x
        z, _ = q.inverse_and_log_det(x)
        extra = 0.0
    jac = jax.jacfwd(lambda zz: q.transform_and_log_det(zz)[0].reshape(-1))(z)
    jac = jac.reshape(y.size, z.size)
    _, logdet = jnp.linalg.slogdet(jac)
    log_base = -0.5 * jnp.sum(z * z) - 0.5 * z.size * math.log(2 * math.pi)
    return z, y, log_base - logdet + extra


@pytest.mark.slow  # each dimension compiles the float64 flow and its dense Jacobian: ~1 min
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_log_q_is_the_change_of_variables_value_in_and_out_of_the_bulk(dim):
    system = CoulombGas(4, dim)
    # the coupling flows (the default CNF's log q is an ODE solve, checked in test_cnf.py)
    base = make_sampler("equivariant" if dim > 1 else "realnvp", system, key=jax.random.key(0))
    rng = np.random.default_rng(3)
    # moderate parameters (as after training): the inverse is an inverse to round-off and ln q
    # the change-of-variables value everywhere; strong ones (every layer far from the
    # identity): the maps are so badly conditioned that the round trip and the dense
    # determinant lose digits, but ln q must stay finite (the old gap layer gave NaN there)
    for head_scale, exact in ((0.05, True), (0.5, False)):
        q = _perturbed(base, jax.random.key(1), head_scale=head_scale)
        x_q, _ = q.sample_and_log_prob(64, key=jax.random.key(2))
        points = {
            "q": np.asarray(x_q, np.float64),
            "gauss1": rng.normal(0.0, 1.0, (64, 4, dim)),
            "gauss3": rng.normal(0.0, 3.0, (64, 4, dim)),
            "q*3": 3.0 * np.asarray(x_q, np.float64),
        }
        with jax.enable_x64(True):
            q64 = _to64(q)
            check = jax.jit(jax.vmap(lambda x, q64=q64: _independent(q64, x)))
            for name, x in points.items():
                what = f"d={dim} heads {head_scale} {name}"
                x = jnp.asarray(x, jnp.float64)
                lq = np.asarray(q64.log_prob(x))
                z, y, lq_ind = (np.asarray(a) for a in check(x))
                assert np.all(np.isfinite(lq)) and np.all(np.isfinite(z)), what
                if exact:
                    np.testing.assert_allclose(lq, lq_ind, rtol=1e-8, atol=1e-8, err_msg=what)
                    y_back = jax.vmap(lambda zz, q64=q64: q64.transform_and_log_det(zz)[0])(z)
                    y_back = np.asarray(y_back).reshape(y.shape)
                    err = np.max(np.abs(y_back - y) / (1.0 + np.abs(y)))
                    assert err < 1e-8, (what, err)
