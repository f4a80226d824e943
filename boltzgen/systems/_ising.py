"""Discrete spin systems: the 2-D Ising model and pairwise spin systems on any graph.

States are ±1 arrays (float32 or float64, so that the continuous pipeline's arrays and float64
estimator arithmetic apply unchanged): shape ``(L, L)`` for the lattice, ``(N,)`` for a graph.
ln Z is a sum over the 2^N states (no integral, no measure).
"""

from __future__ import annotations

import itertools
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from boltzgen.systems._base import AbstractSystem, check_positive_int
from boltzgen.systems._enumerate import MAX_ENUMERATE, enumerate_log_z
from boltzgen.systems._enumerate import all_states as all_states
from boltzgen.systems._enumerate import enumerate_energies as enumerate_energies
from boltzgen.systems._ising_lattice import (
    _check_finite,
    _transfer_log_z,
    kaufman_log_z,
    lattice_method,
)

#: Critical coupling of the isotropic square-lattice Ising model, K_c = ½ ln(1 + √2) (exact to
#: double precision; the rounded value 0.4406868 is not used anywhere in boltzgen).
BETA_C = 0.5 * math.log1p(math.sqrt(2.0))

BOUNDARIES = ("periodic", "open")


def _check_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class AbstractSpinSystem(AbstractSystem):
    """A system of N Ising spins s_i = ±1 (any array shape); ln Z sums over the 2^N states."""

    #: Discrete state space: samplers must be normalised mass functions, no Jacobians.
    discrete: ClassVar[bool] = True
    permutation_symmetric: ClassVar[bool] = False

    @property
    def n_spins(self) -> int:
        """Number of spins N."""
        return self.n_dof

    @property
    def spin_flip_symmetric(self) -> bool:
        """True when E(−s) = E(s) (no field): samplers should be Z2-symmetrised."""
        raise NotImplementedError

    def magnetisation(self, s) -> jax.Array:
        """Magnetisation per spin m = Σ s_i / N of one configuration."""
        return jnp.mean(s)

    def exact_log_z(self, beta: float) -> float | None:
        """Exact ln Z(β) by enumeration when N ≤ ``MAX_ENUMERATE``, else None."""
        if self.n_spins > MAX_ENUMERATE:
            return None
        return enumerate_log_z(self, beta)


class Ising(AbstractSpinSystem):
    r"""Ising model on an L×L square lattice.

    E(s) = −J_h Σ_{⟨ij⟩ horizontal} s_i s_j − J_v Σ_{⟨ij⟩ vertical} s_i s_j − h Σ_i s_i,

    with each nearest-neighbour bond counted once. ``boundary = "periodic"`` is the L×L torus
    (2L² bonds; for L = 2 the two bonds joining a pair of sites both count, as in Kaufman's
    formula), ``"open"`` has 2L(L − 1) bonds. Couplings J > 0 are ferromagnetic.

    Args:
        L: linear size, L ≥ 2.
        J: coupling of both directions (used where ``Jh`` / ``Jv`` are None).
        h: uniform field.
        boundary: ``"periodic"`` or ``"open"``.
        Jh, Jv: horizontal / vertical couplings when they differ.
    """

    kind: ClassVar[str] = "ising"
    L: int = eqx.field(static=True)
    Jh: float = eqx.field(static=True)
    Jv: float = eqx.field(static=True)
    h: float = eqx.field(static=True)
    boundary: str = eqx.field(static=True)

    def __init__(
        self,
        L: int = 8,
        J: float = 1.0,
        h: float = 0.0,
        boundary: str = "periodic",
        Jh: float | None = None,
        Jv: float | None = None,
    ):
        self.L = check_positive_int("L", L, minimum=2)
        J = _check_real("J", J)
        self.Jh = J if Jh is None else _check_real("Jh", Jh)
        self.Jv = J if Jv is None else _check_real("Jv", Jv)
        self.h = _check_real("h", h)
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        self.boundary = boundary

    @property
    def event_shape(self) -> tuple[int, int]:
        """``(L, L)``."""
        return (self.L, self.L)

    @property
    def spin_flip_symmetric(self) -> bool:
        """True when h = 0."""
        return self.h == 0.0

    def _energy(self, s):
        if self.boundary == "periodic":
            horiz = jnp.sum(s * jnp.roll(s, -1, axis=1))
            vert = jnp.sum(s * jnp.roll(s, -1, axis=0))
        else:
            horiz = jnp.sum(s[:, :-1] * s[:, 1:])
            vert = jnp.sum(s[:-1, :] * s[1:, :])
        return -self.Jh * horiz - self.Jv * vert - self.h * jnp.sum(s)

    def n_bonds(self) -> int:
        """Number of nearest-neighbour bonds (both directions)."""
        return 2 * self.L * self.L if self.boundary == "periodic" else 2 * self.L * (self.L - 1)

    def exact_log_z(self, beta: float) -> float | None:
        """Exact ln Z(β), or None where no exact method applies.

        Kaufman's torus formula (h = 0, periodic), a transfer matrix (L ≤
        ``MAX_TRANSFER_WIDTH``, any h), or enumeration (N ≤ ``MAX_ENUMERATE``): the route of
        :func:`~boltzgen.systems.ising_exact_method`. ValueError for a non-finite β.
        """
        b = _check_finite("beta", beta)  # Kaufman takes βJ of the β given, as ising_exact_log_z
        method = lattice_method(self.L, b, self.Jh, self.Jv, self.h, self.boundary)
        if method == "kaufman":
            return kaufman_log_z(self.L, self.L, beta * self.Jh, beta * self.Jv)
        if method == "transfer_matrix":
            return _transfer_log_z(
                self.L, self.L, b * self.Jh, b * self.Jv, b * self.h, self.boundary
            )
        return super().exact_log_z(beta)

    def params(self) -> dict:
        """Run-spec parameters."""
        out = dict(L=self.L, h=self.h, boundary=self.boundary)
        if self.Jh == self.Jv:
            out["J"] = self.Jh
        else:
            out.update(Jh=self.Jh, Jv=self.Jv)
        return out


class PairwiseSpins(AbstractSpinSystem):
    r"""A pairwise spin system on any graph: E(s) = −Σ_{i<j} J_ij s_i s_j − Σ_i h_i s_i.

    Covers the Sherrington–Kirkpatrick (:meth:`sherrington_kirkpatrick`) and ±J Edwards–Anderson
    (:meth:`edwards_anderson`) spin glasses. States have shape ``(N,)``.

    Args:
        couplings: symmetric (N, N) matrix J with zero diagonal.
        fields: (N,) fields h, or None for zero.
        name: a label for the instance (stored in results).
    """

    kind: ClassVar[str] = "spins"
    couplings: np.ndarray
    fields: np.ndarray
    name: str = eqx.field(static=True)

    def __init__(self, couplings, fields=None, name: str = "custom"):
        J = np.asarray(couplings, dtype=np.float64)
        if J.ndim != 2 or J.shape[0] != J.shape[1] or J.shape[0] < 1:
            raise ValueError(f"couplings must be a square (N, N) matrix, got shape {J.shape}")
        if not np.all(np.isfinite(J)):
            raise ValueError("couplings must be finite")
        if not np.allclose(J, J.T, rtol=0, atol=1e-12):
            raise ValueError("couplings must be symmetric (J_ij = J_ji)")
        if np.any(np.diag(J) != 0):
            raise ValueError("couplings must have a zero diagonal (no self-interaction)")
        n = J.shape[0]
        h = np.zeros(n) if fields is None else np.asarray(fields, dtype=np.float64)
        if h.shape != (n,) or not np.all(np.isfinite(h)):
            raise ValueError(f"fields must be {n} finite numbers, got shape {h.shape}")
        self.couplings, self.fields, self.name = J, h, str(name)

    @classmethod
    def sherrington_kirkpatrick(cls, n: int, *, seed: int = 0, J: float = 1.0) -> PairwiseSpins:
        """SK model: J_ij ~ N(0, J²/N) iid for i < j, from a fixed NumPy seed."""
        return SherringtonKirkpatrick(n, seed=seed, J=J)

    @classmethod
    def edwards_anderson(
        cls, L: int, *, seed: int = 0, boundary: str = "periodic"
    ) -> PairwiseSpins:
        """±J Edwards–Anderson glass on an L×L square lattice (site i = row·L + col)."""
        return EdwardsAnderson(L, seed=seed, boundary=boundary)

    @property
    def event_shape(self) -> tuple[int]:
        """``(N,)``."""
        return (self.couplings.shape[0],)

    @property
    def spin_flip_symmetric(self) -> bool:
        """True when every field is zero."""
        return not np.any(self.fields)

    def _energy(self, s):
        J = jnp.asarray(self.couplings, s.dtype)
        h = jnp.asarray(self.fields, s.dtype)
        return -0.5 * s @ (J @ s) - h @ s

    def params(self) -> dict:
        """Run-spec parameters (the instance name; couplings live in the results' arrays)."""
        return dict(name=self.name, n_spins=self.n_spins)


class SherringtonKirkpatrick(PairwiseSpins):
    """Sherrington–Kirkpatrick glass: J_ij ~ N(0, J²/N) iid for i < j from NumPy seed ``seed``."""

    kind: ClassVar[str] = "sk"
    seed: int = eqx.field(static=True)
    scale: float = eqx.field(static=True)

    def __init__(self, n_spins: int = 20, *, seed: int = 0, J: float = 1.0):
        n = check_positive_int("n_spins", n_spins, minimum=2)
        J = _check_real("J", J)
        seed = check_positive_int("seed", seed, minimum=0)
        rng = np.random.default_rng(seed)
        upper = np.triu(rng.normal(0.0, J / math.sqrt(n), size=(n, n)), k=1)
        super().__init__(upper + upper.T, name=f"sk(n={n}, seed={seed}, J={J})")
        self.seed, self.scale = int(seed), J

    def params(self) -> dict:
        """Run-spec parameters."""
        return dict(n_spins=self.n_spins, seed=self.seed, J=self.scale)


class EdwardsAnderson(PairwiseSpins):
    """±J Edwards–Anderson glass on an L×L lattice (site i = row·L + col) from seed ``seed``."""

    kind: ClassVar[str] = "edwards_anderson"
    L: int = eqx.field(static=True)
    seed: int = eqx.field(static=True)
    boundary: str = eqx.field(static=True)

    def __init__(self, L: int = 4, *, seed: int = 0, boundary: str = "periodic"):
        L = check_positive_int("L", L, minimum=2)
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        seed = check_positive_int("seed", seed, minimum=0)
        rng = np.random.default_rng(seed)
        n = L * L
        J = np.zeros((n, n))
        for r, c in itertools.product(range(L), range(L)):
            for dr, dc in ((0, 1), (1, 0)):
                r2, c2 = r + dr, c + dc
                if boundary == "open" and (r2 >= L or c2 >= L):
                    continue
                i, j = r * L + c, (r2 % L) * L + (c2 % L)
                v = rng.choice((-1.0, 1.0))
                J[i, j] += v
                J[j, i] += v
        super().__init__(J, name=f"ea(L={L}, seed={seed}, boundary={boundary})")
        self.L, self.seed, self.boundary = L, int(seed), boundary

    def params(self) -> dict:
        """Run-spec parameters."""
        return dict(L=self.L, seed=self.seed, boundary=self.boundary)
