r"""Fixed-step ODE integration for the continuous flows: the RK4 tableau, the solvers, one solve.

dy/dt = f(t, y) is integrated from t0 to t1 (either direction) in ``n_steps`` equal steps of a
diffrax solver with a constant step size (no error control), returning y(t1). The classical RK4
tableau is written by hand (diffrax ships none); the solves are diffrax's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import diffrax
import jax
import numpy as np

# Classical 4th-order Runge-Kutta (Butcher tableau c = (½, ½, 1), b = (1/6, 1/3, 1/3, 1/6)).
# diffrax needs an embedded error estimate; the RK4 − Euler difference is used (it is never
# consulted with a constant step size).
_RK4_TABLEAU = diffrax.ButcherTableau(
    c=np.array([0.5, 0.5, 1.0]),
    b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    b_error=np.array([1 / 6 - 1.0, 1 / 3, 1 / 3, 1 / 6]),
    a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
)


class RK4(diffrax.AbstractERK):
    """Classical 4th-order Runge-Kutta method (4 stages, for fixed step sizes)."""

    tableau: ClassVar[diffrax.ButcherTableau] = _RK4_TABLEAU
    interpolation_cls: ClassVar[Callable[..., diffrax.ThirdOrderHermitePolynomialInterpolation]] = (
        diffrax.ThirdOrderHermitePolynomialInterpolation.from_k
    )

    def order(self, terms):
        """Order of the method (4)."""
        del terms
        return 4


SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "rk4": RK4,
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "euler": diffrax.Euler,
}


def integrate(vector_field: Callable, y0, t0, t1, *, solver: str, n_steps: int):
    """``n_steps`` fixed steps of ``SOLVERS[solver]`` for dy/dt = vector_field(t, y, args); y(t1).

    ``y0`` may be any pytree (e.g. the augmented state (x, ℓ)); ``t1 < t0`` integrates backward.
    """
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        SOLVERS[solver](),
        t0=t0,
        t1=t1,
        dt0=(t1 - t0) / n_steps,
        y0=y0,
        stepsize_controller=diffrax.ConstantStepSize(),
        max_steps=n_steps,
        saveat=diffrax.SaveAt(t1=True),
    )
    return jax.tree_util.tree_map(lambda y: y[0], sol.ys)


__all__ = ["RK4", "SOLVERS", "integrate"]
