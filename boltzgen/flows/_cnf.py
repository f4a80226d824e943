r"""CNF: a continuous normalising flow with the exact divergence, solved by diffrax.

The flow is the ODE dx/dt = v_θ(x, t) from t = 0 to t = 1, started from the base density
N(0, σ² I). By the instantaneous change of variables,

    d/dt ln q_t(x(t)) = -tr(∂v_θ/∂x)(x(t), t),
    so  ln q(x₁) = ln N(x₀; 0, σ² I) - ∫₀¹ tr(∂v/∂x) dt.

The divergence is the EXACT trace of the Jacobian (the fields of :mod:`boltzgen.flows._fields`:
D Jacobian-vector products with the one-hot basis vectors, D = prod(event_shape), for the MLP
field, a closed form for the pairwise particle fields); Hutchinson's stochastic estimator is not
used (it would make log q a random variable and break the importance weights). x and the running
integral ℓ(t) = ∫ tr(∂v/∂x) dt are integrated jointly as an augmented state with a fixed number
of steps (:func:`boltzgen.flows._ode.integrate`).

The solver and field names are re-exported here, so ``boltzgen.flows._cnf`` still provides
them.
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from boltzgen.flows._base import AbstractSampler, check_batch
from boltzgen.flows._fields import (
    PARTICLE_FIELDS,
    EGNNField,
    EnvironmentField,
    MLPField,
    ParticleField,
    RadialBasisField,
    RadiiField,
    divergence,
    make_field,
)

# The helpers below lived in this module before the fields and solvers were split out; they
# stay importable from here.
from boltzgen.flows._fields import EGNNLayer as EGNNLayer
from boltzgen.flows._fields import _centre as _centre
from boltzgen.flows._fields import _check_basis as _check_basis
from boltzgen.flows._fields import _dense as _dense
from boltzgen.flows._fields import _gaussian_rbf as _gaussian_rbf
from boltzgen.flows._fields import _pair_geometry as _pair_geometry
from boltzgen.flows._fields import _pairwise_trace as _pairwise_trace
from boltzgen.flows._fields import _pairwise_value as _pairwise_value
from boltzgen.flows._fields import _radial_basis as _radial_basis
from boltzgen.flows._fields import _squash as _squash
from boltzgen.flows._fields import _time_features as _time_features
from boltzgen.flows._nn import LOG_2PI, param_dtype
from boltzgen.flows._ode import _RK4_TABLEAU as _RK4_TABLEAU
from boltzgen.flows._ode import RK4, SOLVERS, integrate


def centre_batch(x: Float[Array, "n n_particles d"], zero_com: bool) -> Float[Array, "..."]:
    """A batch moved onto the zero-centre-of-mass subspace when ``zero_com`` (else unchanged)."""
    return x - jnp.mean(x, axis=-2, keepdims=True) if zero_com else x


def support_dim(shape: tuple[int, ...], zero_com: bool) -> int:
    """Dimension of the support: (N−1)d for (N, d) with ``zero_com``, else prod(shape)."""
    size = math.prod(shape)
    return size - shape[1] if zero_com else size


def gaussian_log_prob(z: Float[Array, "..."], sigma, dim: int) -> Float[Array, ""]:
    """Ln N(z; 0, σ² I_dim) at ONE configuration z (of ``dim`` free coordinates)."""
    return -0.5 * jnp.sum((z / sigma) ** 2) - dim * jnp.log(sigma) - 0.5 * dim * LOG_2PI


#: Default ``max_batch`` of a CNF with the ``"egnn"`` field: 256 configurations at d = 39 hold
#: ≈ 0.5 GB per float64 message tensor of the trace (N·d tangents × N² pairs × width 32).
EGNN_MAX_BATCH = 256


class CNF(AbstractSampler):
    r"""Continuous normalising flow q(x) with exact log-density.

    dx/dt = v_θ(x, t), t ∈ [0, 1], x(0) ~ N(0, σ² I) (σ = ``base_scale``, a trainable leaf
    stored as ln σ), and

        ln q(x(1)) = ln N(x(0); 0, σ² I) − ∫₀¹ tr(∂v_θ/∂x)(x(t), t) dt,

    with the exact trace. ``sample_and_log_prob`` integrates [x, ℓ] forward from t = 0;
    ``log_prob`` integrates it backward from t = 1 to t = 0, where ℓ(0) = −∫₀¹ tr dt, so
    ln q(x₁) = ln N(x(0)) + ℓ(0). Both use ``n_steps`` fixed steps of ``solver``; log q is the
    exact density of the discretised-in-time flow only up to the solver error (O(h⁴) for RK4),
    so forward and backward log q agree to that accuracy.

    For event shape (N, d) with N > 1 the field is a pairwise equivariant field
    (permutation- and rotation-equivariant, so q is permutation- and rotation-invariant):
    :class:`RadialBasisField` (``field="rbf"``, the default: radial basis functions of the
    distances with time-dependent coefficients), :class:`RadiiField` (``field="radii"``: the
    same with pair coefficients that also depend on both particles' radii |y_i|, |y_j|; the
    registry's default for systems in a trap) or :class:`ParticleField` (``field="mlp"``:
    per-pair MLPs, 5–17× slower), or a many-body equivariant field, :class:`EnvironmentField`
    (``field="env"``: closed-form trace) or :class:`EGNNField` (``field="egnn"``: trace by N·d
    JVPs); otherwise :class:`MLPField`. All start at v ≡ 0 (q = base).

    Zero centre of mass (``zero_com=True``, particles only): for translation-invariant systems
    (DW4, Lennard-Jones clusters) Z over all coordinates diverges and q lives on the
    (N−1)d-dimensional subspace {Σ_i x_i = 0}. The base is the isotropic Gaussian ON that
    subspace, z = P ζ with ζ ~ N(0, σ² I) and P the centring projection, whose density with
    respect to the subspace's Lebesgue measure (orthonormal coordinates) is
    (2πσ²)^{−(N−1)d/2} exp(−|z|²/2σ²) — using the full Nd-dimensional normalisation would shift
    ln Z by (d/2) ln(2πσ²). The field keeps the centre of mass fixed and the divergence is the
    trace on the subspace, so ln q is the exact density on the subspace and ln Z = ln ∫ e^{−u}
    over the subspace (in its orthonormal coordinates), the ln Z the translation-invariant
    systems report. ``log_prob`` centres its input first.

    Gradients: reverse mode (``jax.grad``) through the solve works with diffrax's default
    adjoint; ``jax.jacfwd`` through it does not (use ``jax.jacrev``).

    Args:
        event_shape: shape of one configuration.
        key: PRNG key for the initial weights.
        hidden: width of the field's MLPs.
        depth: hidden layers per MLP.
        n_steps: fixed number of solver steps on [0, 1].
        solver: one of :data:`SOLVERS` ("rk4", "tsit5", "dopri5", "heun", "midpoint", "euler").
        base_scale: σ of the isotropic Gaussian base.
        zero_com: work on the zero-centre-of-mass subspace (event shape (N, d), N > 1).
        field: particle field, ``"rbf"``, ``"radii"``, ``"mlp"``, ``"env"`` or ``"egnn"``.
        n_rbf: radial basis functions of the ``"rbf"`` field.
        r_max: largest radial-basis centre of the ``"rbf"`` field (length units).
        n_radii: radial shells of the ``"radii"`` field (ignored by the other fields).
        max_batch: configurations solved at once (``jax.lax.map`` in batches of this size, the
            solves of one batch vectorised); bounds memory, since the ``"egnn"`` trace holds N·d
            tangents per configuration. ``None``/0: :data:`EGNN_MAX_BATCH` for ``"egnn"``,
            unlimited (one vectorised solve) otherwise.
    """

    cheap_log_prob_grad: ClassVar[bool] = False
    field: MLPField | ParticleField | RadialBasisField | RadiiField | EnvironmentField | EGNNField
    log_scale: Float[Array, ""]
    shape: tuple[int, ...] = eqx.field(static=True)
    n_steps: int = eqx.field(static=True)
    solver: str = eqx.field(static=True)
    zero_com: bool = eqx.field(static=True)
    max_batch: int | None = eqx.field(static=True)

    def __init__(
        self,
        event_shape,
        *,
        key: PRNGKeyArray,
        hidden: int = 64,
        depth: int = 2,
        n_steps: int = 20,
        solver: str = "rk4",
        base_scale: float = 1.0,
        zero_com: bool = False,
        field: str = "rbf",
        n_rbf: int = 32,
        r_max: float = 8.0,
        n_radii: int = 8,
        max_batch: int | None = None,
    ):
        shape = tuple(int(s) for s in event_shape)
        if max_batch is not None and max_batch < 0:
            raise ValueError(f"CNF max_batch must be >= 0 (0: automatic), got {max_batch}")
        if solver not in SOLVERS:
            raise ValueError(f"unknown CNF solver {solver!r}; valid: {', '.join(SOLVERS)}")
        if n_steps < 1:
            raise ValueError(f"CNF n_steps must be >= 1, got {n_steps}")
        if hidden < 1:
            raise ValueError(f"CNF hidden must be >= 1, got {hidden}")
        if depth < 0:
            raise ValueError(f"CNF depth must be >= 0, got {depth}")
        if not base_scale > 0:
            raise ValueError(f"CNF base_scale must be > 0, got {base_scale}")
        self.field = make_field(
            shape,
            field,
            key=key,
            hidden=hidden,
            depth=depth,
            zero_com=zero_com,
            n_rbf=n_rbf,
            r_max=r_max,
            n_radii=n_radii,
        )
        self.log_scale = jnp.asarray(math.log(base_scale), dtype=jnp.float32)
        self.shape = shape
        self.n_steps = int(n_steps)
        self.solver = solver
        self.zero_com = bool(zero_com)
        if not max_batch:
            max_batch = EGNN_MAX_BATCH if isinstance(self.field, EGNNField) else None
        self.max_batch = None if max_batch is None else int(max_batch)

    def _map(self, f, x):
        """``f`` over the leading axis of ``x``: one vmap, or lax.map in ``max_batch`` batches."""
        if self.max_batch is None or x.shape[0] <= self.max_batch:
            return jax.vmap(f)(x)
        return jax.lax.map(f, x, batch_size=self.max_batch)

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one configuration."""
        return self.shape

    @property
    def n_dof(self) -> int:
        """Dimension of the space q lives on: (N−1)d with ``zero_com``, else prod(event_shape)."""
        return support_dim(self.shape, self.zero_com)

    def project(self, x: Float[Array, "n ..."]) -> Float[Array, "n ..."]:
        """A batch moved onto q's support: centred (zero centre of mass) with ``zero_com``."""
        return centre_batch(x, self.zero_com)

    def sample_base(self, n: int, *, key: PRNGKeyArray) -> Float[Array, "n ..."]:
        """``n`` draws z of the base density (on the zero-COM subspace with ``zero_com``)."""
        dtype = param_dtype(self.field)
        z = jnp.exp(self.log_scale).astype(dtype) * jax.random.normal(
            key, (n, *self.shape), dtype=dtype
        )
        return self.project(z)

    def base_log_prob(self, z: Float[Array, "..."]) -> Float[Array, ""]:
        """Ln of the normalised base density at ONE configuration z (on q's support)."""
        return gaussian_log_prob(z, jnp.exp(self.log_scale).astype(z.dtype), self.n_dof)

    def _augmented(self, t, y, args):
        x, _ = y
        if hasattr(self.field, "value_and_divergence"):
            return self.field.value_and_divergence(t, x)
        return self.field(t, x), self.field.divergence(t, x)

    def _velocity(self, t, x, args):
        return self.field(t, x)

    def _integrate(self, vector_field, y0, t0, t1):
        """``n_steps`` fixed steps of the solver for dy/dt = vector_field(t, y, args); y(t1)."""
        return integrate(vector_field, y0, t0, t1, solver=self.solver, n_steps=self.n_steps)

    def _solve_state(self, x, t0, t1):
        """Integrate x alone (no divergence) from t0 to t1 for ONE configuration."""
        return self._integrate(self._velocity, x, t0, t1)

    def _solve(self, x, t0, t1):
        """Integrate [x, ℓ] with ℓ(t0) = 0 from t0 to t1 for ONE configuration; return (x, ℓ)."""
        return self._integrate(self._augmented, (x, jnp.zeros((), x.dtype)), t0, t1)

    def forward(self, z: Float[Array, "..."]) -> tuple[Float[Array, "..."], Float[Array, ""]]:
        """X(1) from x(0) = z on ONE configuration, with ∫₀¹ tr(∂v/∂x) dt = ln|det ∂x(1)/∂z|."""
        return self._solve(z, 0.0, 1.0)

    def inverse(self, x: Float[Array, "..."]) -> tuple[Float[Array, "..."], Float[Array, ""]]:
        """X(0) from x(1) = x on ONE configuration, with ∫₁⁰ tr dt = ln|det ∂x(0)/∂x(1)|."""
        return self._solve(x, 1.0, 0.0)

    def sample_and_log_prob(
        self, n: int, *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "n ..."], Float[Array, " n"]]:
        """Draw ``n`` samples x = x(1) with ln q(x) = ln N(x(0)) − ∫₀¹ tr(∂v/∂x) dt."""
        z = self.sample_base(n, key=key)
        x, ell = self._map(self.forward, z)
        return x, jax.vmap(self.base_log_prob)(z) - ell

    def sample(self, n: int, *, key: PRNGKeyArray) -> Float[Array, "n ..."]:
        """Draw ``n`` samples without log q: the same x as ``sample_and_log_prob`` (same key).

        Only the state is integrated (the x-part of the augmented ODE does not depend on ℓ), so
        no divergence is computed (for the ``"egnn"`` field that skips N·d JVPs per field
        evaluation). Pair it with ``log_prob`` (the backward solve) to get
        weights, as :func:`boltzgen.sample_log_weights` does.
        """
        z = self.sample_base(n, key=key)
        return self._map(lambda z: self._solve_state(z, 0.0, 1.0), z)

    def log_prob(self, x: Float[Array, "n ..."]) -> Float[Array, " n"]:
        """Ln q(x) for a batch: integrate backward to x(0), ln q = ln N(x(0)) + ∫₁⁰ tr dt.

        With ``zero_com`` the input is centred first: the result is the density of its
        centre-of-mass-free part on the subspace.
        """
        check_batch(self, x)
        x = self.project(jnp.asarray(x, dtype=param_dtype(self.field)))
        z, ell = self._map(self.inverse, x)
        return jax.vmap(self.base_log_prob)(z) + ell


__all__ = [
    "CNF",
    "EGNNField",
    "EGNN_MAX_BATCH",
    "EnvironmentField",
    "MLPField",
    "PARTICLE_FIELDS",
    "ParticleField",
    "RK4",
    "RadialBasisField",
    "RadiiField",
    "SOLVERS",
    "divergence",
    "make_field",
]
