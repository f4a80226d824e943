"""Small shared pieces: MLPs with a zero-initialised output layer, Gaussian log densities."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


def zero_last_mlp(in_size: int, out_size: int, hidden: int, depth: int, *, key) -> eqx.nn.MLP:
    """An MLP (SiLU) whose last layer is zero, so a coupling layer starts as the identity."""
    mlp = eqx.nn.MLP(in_size, out_size, hidden, depth, activation=jax.nn.silu, key=key)
    last = mlp.layers[-1]
    return eqx.tree_at(
        lambda m: (m.layers[-1].weight, m.layers[-1].bias),
        mlp,
        (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)),
    )


def std_normal_log_prob(z):
    """Σ ln N(z_i; 0, 1) over all entries of one configuration."""
    return -0.5 * jnp.sum(z * z) - 0.5 * z.size * LOG_2PI


def param_dtype(module) -> jnp.dtype:
    """Dtype of the first inexact array leaf of ``module`` (the networks' float precision)."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(module, eqx.is_inexact_array))
    return leaves[0].dtype if leaves else jnp.float32
