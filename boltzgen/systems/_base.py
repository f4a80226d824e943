"""The abstract system: an energy function on one configuration, plus metadata."""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float


class AbstractSystem(eqx.Module):
    """A physical system: a potential energy E(x) on ONE configuration.

    Downstream code works with the reduced energy u(x) = βE(x); vmap at the call site.

    Subclasses implement ``_energy`` and set ``event_shape``. Public methods check inputs and
    call the private hooks.

    Attributes:
        kind: registry name used in run specs (``[system] kind = ...``).
        event_shape: shape of one configuration, e.g. ``(n_particles, dim)``.
        permutation_symmetric: True when E is invariant under relabelling particles (axis 0).
    """

    kind: ClassVar[str] = "abstract"
    permutation_symmetric: eqx.AbstractClassVar[bool]

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one configuration."""
        raise NotImplementedError

    def energy(self, x: Float[Array, "..."]) -> Float[Array, ""]:
        """Potential energy E(x) of one configuration of shape ``event_shape``.

        Raises:
            ValueError: if ``x`` does not have shape ``event_shape``.
        """
        if tuple(x.shape) != tuple(self.event_shape):
            raise ValueError(
                f"{type(self).__name__}.energy expects one configuration of shape "
                f"{tuple(self.event_shape)}, got {tuple(x.shape)}; use jax.vmap for a batch"
            )
        return self._energy(x)

    def reduced_energy(self, x: Float[Array, "..."], beta) -> Float[Array, ""]:
        """Reduced energy u(x) = βE(x) of one configuration."""
        return beta * self.energy(x)

    def _energy(self, x):
        raise NotImplementedError

    @property
    def n_dof(self) -> int:
        """Number of degrees of freedom (product of ``event_shape``)."""
        return math.prod(self.event_shape)

    def exact_log_z(self, beta: float) -> float | None:
        """Exact ln Z(β) = ln ∫ exp(-βE(x)) dx over labelled coordinates, or None if unknown."""
        del beta
        return None

    def params(self) -> dict:
        """The system's parameters as plain Python values (run-spec keys, HDF5 attrs)."""
        raise NotImplementedError


class AbstractParticleSystem(AbstractSystem):
    """N identical particles in d dimensions: configurations of shape ``(n_particles, dim)``."""

    n_particles: eqx.AbstractVar[int]
    dim: eqx.AbstractVar[int]
    permutation_symmetric: ClassVar[bool] = True
    #: True when the centre of mass separates exactly from the relative coordinates with a
    #: Gaussian law (a harmonic trap with internal forces): samplers may treat it exactly.
    com_separable: ClassVar[bool] = False

    @property
    def event_shape(self) -> tuple[int, int]:
        """``(n_particles, dim)``."""
        return (self.n_particles, self.dim)


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """Return ``value`` as int, or raise ValueError naming the bad value."""
    if isinstance(value, bool) or not isinstance(value, int | jnp.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_float(name: str, value) -> float:
    """Return ``value`` as float, or raise ValueError naming the bad value."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)
