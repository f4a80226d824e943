"""The one result type of every free-energy estimate, with its cost and its flags."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field, fields, replace
from types import MappingProxyType
from typing import Literal

Kind = Literal["estimate", "upper_bound", "lower_bound"]
KINDS = ("estimate", "upper_bound", "lower_bound")

#: Flags an estimate can carry, with the note the table prints for each. A flagged estimate's
#: error bar is not to be trusted; :meth:`boltzgen.Result.best` passes over flagged estimates
#: while an unflagged one exists.
FLAGS: dict[str, str] = {
    "low_ess": "ESS<100: error bar untrustworthy",
    "low_overlap": "overlap {overlap:.2g} < 0.03: error bar untrustworthy",
    "nonfinite": "over 1% of inputs non-finite: q has mass where p = 0 or E failed",
    "high_k": "Pareto k̂ {pareto_k:.2f} > 0.5: infinite weight variance, error bar invalid",
}

#: Above this share of non-finite inputs (``n_nonfinite / n_samples``) an estimate carries the
#: ``nonfinite`` flag (set by :class:`Estimate` itself).
MAX_TRUSTED_NONFINITE_SHARE = 0.01


@dataclass(frozen=True)
class Cost:
    """What an estimate cost: energy and log q evaluations, lattice sweeps, wall time.

    Attributes:
        n_energy_evals: energy (or energy + gradient) evaluations.
        n_log_q_evals: evaluations of the sampler's log density.
        n_sweeps: lattice sweeps (spin Monte Carlo).
        n_site_updates: single-site updates (spin Monte Carlo).
        wall_time: seconds (NaN when not measured).
    """

    n_energy_evals: float = 0.0
    n_log_q_evals: float = 0.0
    n_sweeps: float = 0.0
    n_site_updates: float = 0.0
    wall_time: float = math.nan

    def to_attrs(self) -> dict[str, float]:
        """The non-zero (and measured) entries as flat HDF5 attributes."""
        out = {}
        for f in fields(self):
            v = float(getattr(self, f.name))
            if f.name == "wall_time" and math.isfinite(v) or f.name != "wall_time" and v:
                out[f.name] = v
        return out

    def note(self) -> str:
        """One phrase for the table, e.g. ``cost 1.4e+07 energy evals, 1.0 s`` ("" when none)."""
        if self.n_sweeps:
            return f"cost {self.n_sweeps:.3g} sweeps, {self.wall_time:.1f} s"
        if self.n_energy_evals:
            lq = f" + {self.n_log_q_evals:.3g} log q" if self.n_log_q_evals else ""
            return f"cost {self.n_energy_evals:.3g} energy{lq} evals, {self.wall_time:.1f} s"
        return ""


_COST_NAMES = tuple(f.name for f in fields(Cost))


@dataclass(frozen=True)
class Estimate:
    """A free-energy estimate: ln Z with its standard error, and what kind of number it is.

    ``kind`` refers to βF = -ln Z: an ``upper_bound`` on βF (e.g. the variational free energy)
    is a lower bound on ln Z. Immutable: derive a changed copy with :func:`dataclasses.replace`.

    Attributes:
        method: short name, e.g. ``"importance"`` (the HDF5 group ``/estimates/<method>``).
        log_z: the estimate of ln Z (float64).
        log_z_stderr: its standard error (delta method unless a note says otherwise).
        kind: ``estimate``, ``upper_bound`` or ``lower_bound`` (for βF).
        n_samples: number of samples used, including any with non-finite weight.
        ess: Kish effective sample size (NaN where it does not apply).
        n_nonfinite: inputs (weights, works) that were NaN or ±inf — under the non-finite
            policy samples of zero target density, given zero weight (docs/design.md); above
            :data:`MAX_TRUSTED_NONFINITE_SHARE` of ``n_samples`` the ``nonfinite`` flag is set.
        cost: what it cost (:class:`Cost`).
        flags: names from :data:`FLAGS` that make the error bar untrustworthy.
        notes: further phrases for the table (e.g. a bootstrap error, the ESS before refinement).
        extra: further scalar diagnostics (read-only), written as HDF5 attributes.
    """

    method: str
    log_z: float
    log_z_stderr: float
    kind: Kind = "estimate"
    n_samples: int = 0
    ess: float = math.nan
    _: KW_ONLY
    n_nonfinite: int = 0
    cost: Cost = field(default_factory=Cost)
    flags: frozenset[str] = frozenset()
    notes: tuple[str, ...] = ()
    extra: Mapping = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        unknown = set(self.flags) - set(FLAGS)
        if unknown:
            raise ValueError(f"unknown estimate flag {sorted(unknown)[0]!r}; valid: {list(FLAGS)}")
        flags = set(self.flags)
        if self.n_samples > 0 and self.n_nonfinite > MAX_TRUSTED_NONFINITE_SHARE * self.n_samples:
            flags.add("nonfinite")
        object.__setattr__(self, "flags", frozenset(flags))
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def beta_f(self) -> float:
        """βF = -ln Z (dimensionless, kT units)."""
        return -self.log_z

    @property
    def beta_f_stderr(self) -> float:
        """Standard error of βF (equal to that of ln Z)."""
        return self.log_z_stderr

    @property
    def trusted(self) -> bool:
        """False when a flag says the error bar is not to be trusted."""
        return not self.flags

    def free_energy(self, beta: float) -> float:
        """F = βF/β in the system's energy units."""
        return self.beta_f / beta

    def shifted(self, delta: float, note: str | None = None) -> Estimate:
        """This estimate with ln Z → ln Z + ``delta`` (e.g. −ln N! for identical particles)."""
        notes = self.notes + ((note,) if note else ())
        return replace(self, log_z=self.log_z + delta, notes=notes)

    def with_stderr_inflation(self, factor: float) -> Estimate:
        """This estimate with its standard error multiplied by ``factor`` (recorded in extra)."""
        return replace(
            self,
            log_z_stderr=self.log_z_stderr * factor,
            extra={**self.extra, "stderr_inflation": float(factor)},
        )

    def with_cost(self, cost: Cost) -> Estimate:
        """This estimate with its :class:`Cost` replaced."""
        return replace(self, cost=cost)

    def table_notes(self) -> list[str]:
        """The notes column of the free-energy table: flags, non-finite inputs, notes, cost."""
        out = [_flag_note(f, self.extra) for f in sorted(self.flags)]
        if self.n_nonfinite:
            out.append(f"{self.n_nonfinite} non-finite")
        out += list(self.notes)
        c = self.cost.note()
        if c:
            out.append(c)
        return out

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
            n_nonfinite=int(self.n_nonfinite),
            flags=",".join(sorted(self.flags)),
            notes="; ".join(self.notes),
        )
        for f in FLAGS:  # schema 3 readers look for the 0/1 attributes
            attrs[f] = int(f in self.flags)
        attrs.update(self.cost.to_attrs())
        for k, v in self.extra.items():
            attrs[k] = v
        return attrs

    @classmethod
    def from_attrs(cls, attrs: dict) -> Estimate:
        """Inverse of :meth:`to_attrs`; also reads files of schema version 3 (flags as 0/1)."""
        attrs = {k: _plain(v) for k, v in dict(attrs).items()}
        core = {
            k: attrs.pop(k) for k in ("method", "log_z", "log_z_stderr", "kind", "n_samples", "ess")
        }
        for k in ("beta_f", "beta_f_stderr"):
            attrs.pop(k, None)
        flag_text = str(attrs.pop("flags", ""))
        flags = {f for f in flag_text.split(",") if f}
        for f in FLAGS:
            if attrs.pop(f, 0):
                flags.add(f)
        notes_text = str(attrs.pop("notes", ""))
        cost = Cost(**{k: float(attrs.pop(k)) for k in _COST_NAMES if k in attrs})
        n_nonfinite = int(attrs.pop("n_nonfinite", 0))
        return cls(
            method=str(core["method"]),
            log_z=float(core["log_z"]),
            log_z_stderr=float(core["log_z_stderr"]),
            kind=str(core["kind"]),  # type: ignore[arg-type]
            n_samples=int(core["n_samples"]),
            ess=float(core["ess"]),
            n_nonfinite=n_nonfinite,
            cost=cost,
            flags=frozenset(flags),
            notes=tuple(n for n in notes_text.split("; ") if n),
            extra=attrs,
        )


def _flag_note(flag: str, extra) -> str:
    try:
        return FLAGS[flag].format(**extra)
    except (KeyError, ValueError, TypeError):
        return FLAGS[flag].split(": ")[-1] if "{" in FLAGS[flag] else FLAGS[flag]


def _plain(v):
    """HDF5 attribute value → plain Python scalar or string."""
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        return v.item()
    if isinstance(v, bytes):
        return v.decode()
    return v


def fields_from_diagnostics(diagnostics: dict) -> dict:
    """Keyword fields of an :class:`Estimate` from an estimator's diagnostics.

    The estimators collect their diagnostics in one dict; this sorts them into the typed
    fields once: ``low_ess`` / ``low_overlap`` (0/1) become ``flags``; ``n_nonfinite`` (or the
    sum of ``n_nonfinite_forward`` and ``n_nonfinite_reverse``) becomes ``n_nonfinite``; a
    bootstrap error adds a note; everything else stays in ``extra``.
    """
    d = dict(diagnostics)
    flags = {f for f in FLAGS if d.pop(f, 0)}
    n_bad = int(d.pop("n_nonfinite", 0))
    n_bad += int(d.get("n_nonfinite_forward", 0)) + int(d.get("n_nonfinite_reverse", 0))
    notes = []
    if "log_z_stderr_bootstrap" in d:
        notes.append(f"bootstrap ±{d['log_z_stderr_bootstrap']:.2g}")
    return dict(n_nonfinite=n_bad, flags=flags, notes=tuple(notes), extra=d)
