"""Analytic test systems with closed-form ln Z (Gaussians)."""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from boltzgen.systems._base import AbstractSystem, check_positive_float, check_positive_int


class Gaussian(AbstractSystem):
    """A Gaussian energy E(x) = ½ (x - μ)ᵀ Σ⁻¹ (x - μ) on vectors of length ``dim``.

    Exact ln Z(β) = (n/2) ln(2π/β) + ½ ln det Σ. ``Gaussian.isotropic(dim, sigma)`` and
    ``Gaussian.correlated(cov)`` are the usual constructors.

    Args:
        mean: μ, shape (dim,).
        covariance: Σ, symmetric positive definite, shape (dim, dim).
    """

    kind: ClassVar[str] = "gaussian"
    permutation_symmetric: ClassVar[bool] = False
    mean: np.ndarray = eqx.field(converter=lambda a: np.asarray(a, np.float64))
    covariance: np.ndarray = eqx.field(converter=lambda a: np.asarray(a, np.float64))

    def __check_init__(self):
        if self.mean.ndim != 1 or self.mean.size < 1:
            raise ValueError(f"mean must be a non-empty vector, got shape {self.mean.shape}")
        n = self.mean.size
        if self.covariance.shape != (n, n):
            raise ValueError(
                f"covariance must have shape ({n}, {n}) to match mean, got {self.covariance.shape}"
            )
        if not np.allclose(self.covariance, self.covariance.T):
            raise ValueError("covariance must be symmetric")
        eig = np.linalg.eigvalsh(self.covariance)
        if not np.all(eig > 0):
            raise ValueError(f"covariance must be positive definite, eigenvalues {eig}")

    @classmethod
    def isotropic(cls, dim: int, sigma: float = 1.0, mean: float = 0.0) -> Gaussian:
        """N(mean·1, σ² I) in ``dim`` dimensions."""
        dim = check_positive_int("dim", dim)
        sigma = check_positive_float("sigma", sigma)
        return cls(np.full(dim, float(mean)), sigma**2 * np.eye(dim))

    @classmethod
    def correlated(cls, covariance, mean=None) -> Gaussian:
        """N(mean, covariance); mean defaults to zero."""
        covariance = np.asarray(covariance, np.float64)
        if mean is None:
            mean = np.zeros(covariance.shape[0])
        return cls(mean, covariance)

    @property
    def event_shape(self) -> tuple[int]:
        """``(dim,)``."""
        return (int(self.mean.size),)

    def _energy(self, x):
        d = x - jnp.asarray(self.mean, x.dtype)
        return 0.5 * d @ jnp.linalg.solve(jnp.asarray(self.covariance, x.dtype), d)

    def exact_log_z(self, beta: float) -> float:
        """(n/2) ln(2π/β) + ½ ln det Σ."""
        beta = check_positive_float("beta", beta)
        n = self.mean.size
        _, logdet = np.linalg.slogdet(self.covariance)
        return 0.5 * n * math.log(2 * math.pi / beta) + 0.5 * logdet

    def params(self) -> dict:
        """Parameters (mean and covariance as nested lists)."""
        return dict(mean=self.mean.tolist(), covariance=self.covariance.tolist())
