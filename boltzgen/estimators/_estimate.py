"""The one result type of every free-energy estimate."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["estimate", "upper_bound", "lower_bound"]
KINDS = ("estimate", "upper_bound", "lower_bound")


@dataclass(frozen=True)
class Estimate:
    """A free-energy estimate: ln Z with its standard error, and what kind of number it is.

    ``kind`` refers to βF = -ln Z: an ``upper_bound`` on βF (e.g. the variational free energy)
    is a lower bound on ln Z.

    Attributes:
        method: short name, e.g. ``"importance"`` (the HDF5 group ``/estimates/<method>``).
        log_z: the estimate of ln Z (float64).
        log_z_stderr: its standard error (delta method unless stated in ``extra``).
        kind: ``estimate``, ``upper_bound`` or ``lower_bound`` (for βF).
        n_samples: number of samples used, including any with non-finite weight.
        ess: Kish effective sample size (NaN where it does not apply).
        extra: further scalars (bootstrap stderr, non-finite count, warnings as 0/1 flags, ...).
    """

    method: str
    log_z: float
    log_z_stderr: float
    kind: Kind = "estimate"
    n_samples: int = 0
    ess: float = math.nan
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def beta_f(self) -> float:
        """βF = -ln Z (dimensionless, kT units)."""
        return -self.log_z

    @property
    def beta_f_stderr(self) -> float:
        """Standard error of βF (equal to that of ln Z)."""
        return self.log_z_stderr

    def free_energy(self, beta: float) -> float:
        """F = βF/β in the system's energy units."""
        return self.beta_f / beta

    def to_attrs(self) -> dict:
        """Flat dict of scalars for HDF5 attributes (schema of docs/results-format.md)."""
        attrs = dict(
            method=self.method,
            log_z=float(self.log_z),
            log_z_stderr=float(self.log_z_stderr),
            beta_f=float(self.beta_f),
            beta_f_stderr=float(self.beta_f_stderr),
            kind=self.kind,
            n_samples=int(self.n_samples),
            ess=float(self.ess),
        )
        for k, v in self.extra.items():
            attrs[k] = v
        return attrs

    @classmethod
    def from_attrs(cls, attrs: dict) -> Estimate:
        """Inverse of :meth:`to_attrs`."""
        attrs = dict(attrs)
        core = {
            k: attrs.pop(k) for k in ("method", "log_z", "log_z_stderr", "kind", "n_samples", "ess")
        }
        for k in ("beta_f", "beta_f_stderr"):
            attrs.pop(k, None)
        return cls(
            method=str(core["method"]),
            log_z=float(core["log_z"]),
            log_z_stderr=float(core["log_z_stderr"]),
            kind=str(core["kind"]),  # type: ignore[arg-type]
            n_samples=int(core["n_samples"]),
            ess=float(core["ess"]),
            extra={k: _plain(v) for k, v in attrs.items()},
        )


def _plain(v):
    """HDF5 attribute value → plain Python scalar or string."""
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        return v.item()
    if isinstance(v, bytes):
        return v.decode()
    return v
