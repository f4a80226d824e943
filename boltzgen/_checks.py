"""Value checks shared by the strategy objects: one-line ``ValueError`` messages naming the value.

Each checker takes the parameter's name as the user would write it (``n_chains``); the config
layer prefixes the section (``refine.n_chains must be an integer >= 1, got 0``).
"""

from __future__ import annotations

import math
from typing import Any


def integer(
    name: str,
    value: Any,
    minimum: int | None = 1,
    *,
    maximum: int | None = None,
    optional: bool = False,
) -> None:
    """Raise unless ``value`` is an int (not a bool) in [``minimum``, ``maximum``].

    None is allowed if ``optional``.
    """
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> None:
    """Raise unless ``value`` is a finite real number in the given (closed or open) range."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "" if low is None else f"{'(' if low_open else '['}{low:g}"
        hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
        if low is not None and high is not None:
            want = f"in {lo}, {hi}"
        elif low is not None:
            want = f"{'>' if low_open else '>='} {low:g}"
        else:
            want = f"{'<' if high_open else '<='} {high:g}"
        raise ValueError(f"{name} must be {want}, got {value!r}")


def positive(name: str, value: Any, *, optional: bool = False) -> None:
    """Raise unless ``value`` is a finite number > 0."""
    number(name, value, low=0.0, low_open=True, optional=optional)


def choice(name: str, value: Any, valid: tuple) -> None:
    """Raise unless ``value`` is one of ``valid``."""
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")


def boolean(name: str, value: Any) -> None:
    """Raise unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def beta(value: Any) -> float:
    """Check an inverse temperature β and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"beta must be a positive finite number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"beta must be a positive finite number, got {value!r}")
    return float(value)


def hmc_settings(obj) -> None:
    """Check the HMC/MALA annealing settings shared by the AIS stages and references.

    ``n_chains``, ``n_steps``, ``n_leapfrog`` ≥ 1; ``power`` > 0; ``kernel`` hmc/mala;
    optional ``step_size`` > 0, ``target_accept`` in (0, 1), ``pilot_chains`` ≥ 0; ``precision``
    float64/float32; and ``adapt_rate`` > 0 where the object has one.
    """
    for name in ("n_chains", "n_steps", "n_leapfrog"):
        integer(name, getattr(obj, name), 1)
    positive("power", obj.power)
    choice("kernel", obj.kernel, ("hmc", "mala"))
    positive("step_size", obj.step_size, optional=True)
    number("target_accept", obj.target_accept, low=0, high=1, low_open=True, high_open=True,
           optional=True)  # fmt: skip
    integer("pilot_chains", obj.pilot_chains, 0, optional=True)
    choice("precision", obj.precision, ("float64", "float32"))
    if hasattr(obj, "adapt_rate"):
        positive("adapt_rate", obj.adapt_rate)
