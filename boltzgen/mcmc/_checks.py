"""Argument checks shared by the Monte Carlo entry points (each raises ``ValueError``)."""

from __future__ import annotations

import math

import numpy as np

PRECISIONS = ("float64", "float32")


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_beta(beta, *, positive: bool = False) -> float:
    """``beta`` as a float if it is a finite real number ≥ 0 (> 0 if ``positive``)."""
    ok = not isinstance(beta, bool) and isinstance(beta, int | float | np.floating | np.integer)
    if ok:
        b = float(beta)
        ok = math.isfinite(b) and (b > 0 if positive else b >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"beta must be a finite number {bound}, got {beta!r}")
    return b


def check_precision(precision: str) -> str:
    """``"float64"`` or ``"float32"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")
    return precision


def check_target_accept(target_accept):
    """A target acceptance strictly between 0 and 1 (returned unchanged)."""
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}")
    return target_accept


def check_step_sizes(step_size, n_steps: int) -> np.ndarray:
    """A fixed step-size sequence: positive, shape ``(n_steps,)``, as float64 NumPy."""
    eps = np.asarray(step_size, np.float64)
    if eps.shape != (n_steps,) or not np.all(eps > 0):
        raise ValueError(
            f"a fixed step-size sequence must be positive with shape ({n_steps},), "
            f"got shape {eps.shape}"
        )
    return eps
