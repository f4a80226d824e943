"""The HDF5 results schema: write, read, and the free-energy table. One place.

Schema (version 5, documented in docs/results-format.md)::

    /                 attrs: schema_version, boltzgen_version, created, seed, spec, device, beta
    /system           attrs: kind and parameters;  dataset exact_log_z where known
    /train            per-step datasets: loss, grad_norm, ess_fraction, n_nonfinite, wall_time
    /train/params     the trained sampler's array leaves (same layout as a checkpoint)
    /samples          x, log_q, energy, log_w, weights_normalised
    /refine           refined samples (x, log_w), per-step diagnostics; attrs: method, cost, ESS
    /estimates/<m>    attrs: log_z, log_z_stderr, beta_f, beta_f_stderr, kind, n_samples, ess,
                      n_nonfinite, flags, notes, cost (n_energy_evals, wall_time, ...), ...
    /reference/<m>    same attrs plus n_energy_evals, wall_time
    /observables/<m>  spin systems: attrs <name> and <name>_stderr (energy, entropy,
                      abs_magnetisation, susceptibility, heat_capacity) per method
                      (importance, refined_nmcmc, exact); data-trained particle runs: group
                      ``samples`` with energy_w2, distance_w2 (q's samples vs held-out Monte
                      Carlo samples) and their ``_reweighted`` versions (stderr NaN)
    /curve            β-conditioned runs (``run_curve``): one dataset per quantity over the β
                      grid (beta, log_z, log_z_stderr, ess, variational_beta_f, exact_log_z, ...)
    /timings          attrs: wall time of each phase in seconds
    /energy_evals     attrs: energy evaluations of each phase (data, train, estimate, each
                      stage, reference); absent in files of version <= 4

The file is written to a temporary name and renamed into place, so a killed run leaves the
previous file or none, never a half-written one.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from boltzgen.estimators import Estimate

SCHEMA_VERSION = 5

#: Groups and root attributes every results file has (Result.load checks them).
_REQUIRED_GROUPS = ("system", "train", "train/params", "estimates", "reference", "timings")
_REQUIRED_ATTRS = ("beta", "seed", "spec", "device", "created")

#: Above this share of non-finite estimation samples a run's answer is not usable
#: (:meth:`Result.problems`; the CLI exits with code 3).
UNUSABLE_NONFINITE_SHARE = 0.5


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("boltzgen")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


@dataclass
class Result:
    """Everything a run produced; ``save`` writes it to HDF5, ``load`` reads it back.

    Attributes:
        beta: inverse temperature.
        system: ``{"kind": ..., <parameters>}``.
        seed: the run's seed.
        spec: the full TOML text actually run (defaults filled in), or "".
        estimates: method → :class:`Estimate` from the trained sampler.
        reference: method → Monte Carlo reference :class:`Estimate` (cost in ``extra``).
        exact_log_z: exact ln Z when the system has one, else None.
        train_history: per-step arrays (loss, grad_norm, ess_fraction, ...).
        samples: x, log_q, energy, log_w arrays from the estimation phase.
        refined: the MCMC refinement's samples and diagnostics (arrays), with its scalars under
            ``"attrs"`` (method, ESS before, cost); empty without refinement.
        observables: method → {name: (value, stderr)} for spin systems (⟨E⟩, S, ⟨|m|⟩, χ, C;
            method ``"exact"`` where known, with stderr 0); empty otherwise.
        curve: for a β-conditioned run, quantity → array over the β grid; empty otherwise.
        timings: wall time of each phase (seconds).
        energy_evals: energy evaluations of each phase (``data``: the Monte Carlo training
            samples; ``train``: the steps that evaluate the energy; ``estimate``: one per
            sample of q; each stage; ``reference``); empty when not counted.
        params: the trained sampler's array leaves, in tree order.
        device: the JAX device string.
        created: ISO time stamp.
    """

    beta: float
    system: dict
    seed: int = 0
    spec: str = ""
    estimates: dict[str, Estimate] = field(default_factory=dict)
    reference: dict[str, Estimate] = field(default_factory=dict)
    exact_log_z: float | None = None
    train_history: dict[str, np.ndarray] = field(default_factory=dict)
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    refined: dict = field(default_factory=dict)
    observables: dict = field(default_factory=dict)
    curve: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    energy_evals: dict[str, float] = field(default_factory=dict)
    params: list[np.ndarray] = field(default_factory=list)
    device: str = ""
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    )

    # ------------------------------------------------------------------ writing
    def save(self, path: str | os.PathLike) -> None:
        """Write the result to ``path`` (HDF5), atomically: temporary file then rename."""
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        remove_stale_temporaries(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with h5py.File(tmp, "w") as f:
                self._write(f)
            with open(tmp, "rb+") as fh:  # on disk before the rename makes it the results file
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def _write(self, f: h5py.File) -> None:
        f.attrs.update(
            schema_version=SCHEMA_VERSION,
            boltzgen_version=_version(),
            created=self.created,
            seed=int(self.seed),
            spec=self.spec,
            device=self.device,
            beta=float(self.beta),
        )
        g = f.create_group("system")
        for k, v in self.system.items():
            g.attrs[k] = np.asarray(v) if isinstance(v, list) else v
        if self.exact_log_z is not None:
            g.create_dataset("exact_log_z", data=np.float64(self.exact_log_z))
        t = f.create_group("train")
        for k, v in self.train_history.items():
            t.create_dataset(k, data=np.asarray(v))
        p = t.create_group("params")
        for i, a in enumerate(self.params):
            p.create_dataset(f"{i:05d}", data=np.asarray(a))
        s = f.create_group("samples")
        for k, v in self.samples.items():
            s.create_dataset(k, data=np.asarray(v), compression="gzip", compression_opts=1)
        if self.refined:
            r = f.create_group("refine")
            for k, v in self.refined.items():
                if k == "attrs":
                    r.attrs.update(v)
                else:
                    r.create_dataset(k, data=np.asarray(v), compression="gzip", compression_opts=1)
        for name, group in (("estimates", self.estimates), ("reference", self.reference)):
            e = f.create_group(name, track_order=True)  # read back in the order written
            for method, est in group.items():
                e.create_group(method).attrs.update(est.to_attrs())
        if self.observables:
            o = f.create_group("observables", track_order=True)
            for method, obs in self.observables.items():
                g = o.create_group(method, track_order=True)
                for name, (value, err) in obs.items():
                    g.attrs[name] = float(value)
                    g.attrs[f"{name}_stderr"] = float(err)
        if self.curve:
            c = f.create_group("curve", track_order=True)
            for k, v in self.curve.items():
                c.create_dataset(k, data=np.asarray(v))
        f.create_group("timings").attrs.update({k: float(v) for k, v in self.timings.items()})
        if self.energy_evals:
            f.create_group("energy_evals").attrs.update(
                {k: float(v) for k, v in self.energy_evals.items()}
            )
        f.flush()

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(cls, path: str | os.PathLike, *, samples: bool = True) -> Result:
        """Read a results file written by :meth:`save`.

        Raises:
            ValueError: if the file is not a boltzgen results file or has a newer schema.
        """
        path = os.fspath(path)
        try:
            f = h5py.File(path, "r")
        except (OSError, FileNotFoundError) as err:
            raise ValueError(f"cannot open results file {path!r}: {err}") from None
        with f:
            version = f.attrs.get("schema_version")
            if version is None:
                raise ValueError(f"{path!r} is not a boltzgen results file (no schema_version)")
            if int(version) > SCHEMA_VERSION:
                raise ValueError(
                    f"{path!r} has schema_version {int(version)}, newer than this boltzgen "
                    f"({SCHEMA_VERSION}); upgrade boltzgen"
                )
            missing = [g for g in _REQUIRED_GROUPS if g not in f]
            missing += [f"{a} attribute" for a in _REQUIRED_ATTRS if a not in f.attrs]
            if samples and "samples" not in f:
                missing.append("samples")
            if missing:
                raise ValueError(
                    f"{path!r} is not a complete boltzgen results file (no {missing[0]})"
                )
            system = {k: _plain(v) for k, v in f["system"].attrs.items()}
            exact = float(f["system/exact_log_z"][()]) if "exact_log_z" in f["system"] else None
            history = {k: v[()] for k, v in f["train"].items() if isinstance(v, h5py.Dataset)}
            params = [f["train/params"][k][()] for k in sorted(f["train/params"])]
            smp = {k: v[()] for k, v in f["samples"].items()} if samples else {}
            refined = {}
            if "refine" in f:
                refined = {"attrs": {k: _plain(v) for k, v in f["refine"].attrs.items()}}
                if samples:
                    refined.update({k: v[()] for k, v in f["refine"].items()})
            est = {m: Estimate.from_attrs(dict(g.attrs)) for m, g in f["estimates"].items()}
            ref = {m: Estimate.from_attrs(dict(g.attrs)) for m, g in f["reference"].items()}
            obs = {}
            for m, g in f.get("observables", {}).items():
                a = dict(g.attrs)
                obs[m] = {
                    k: (float(v), float(a.get(f"{k}_stderr", math.nan)))
                    for k, v in a.items()
                    if not k.endswith("_stderr")
                }
            return cls(
                beta=float(f.attrs["beta"]),
                system=system,
                seed=int(f.attrs["seed"]),
                spec=_plain(f.attrs["spec"]),
                estimates=est,
                reference=ref,
                exact_log_z=exact,
                train_history=history,
                samples=smp,
                refined=refined,
                observables=obs,
                curve={k: v[()] for k, v in f["curve"].items()} if "curve" in f else {},
                timings={k: float(v) for k, v in f["timings"].attrs.items()},
                energy_evals=_energy_evals(f),
                params=params,
                device=_plain(f.attrs["device"]),
                created=_plain(f.attrs["created"]),
            )

    # ------------------------------------------------------------------ table
    def table(self) -> str:
        """The free-energy table: every estimate as βF ± stderr with its kind, then the bracket."""
        n = self.system.get("n_particles")
        head = f"system {self.system.get('kind')} " + " ".join(
            f"{k}={v}" for k, v in self.system.items() if k != "kind"
        )
        lines = [f"{head}   β = {self.beta:g}   seed = {self.seed}"]
        cols = (
            f"{'method':<30}{'kind':<13}{'βF':>14}{'± stderr':>11}{'ln Z':>14}{'ESS':>10}{'n':>9}"
            "  notes"
        )
        if self.curve:
            return "\n".join([lines[0], *self.curve_lines(), *self._timing_lines()])
        lines += [cols, "-" * len(cols)]
        rows = [("", m, e) for m, e in self.estimates.items()]
        rows += [("ref:", m, e) for m, e in self.reference.items()]
        for prefix, method, e in rows:
            notes = e.table_notes()
            ess = f"{e.ess:.4g}" if math.isfinite(e.ess) else "-"
            lines.append(
                f"{prefix + method:<30}{_kind_label(e.kind):<13}"
                f"{_num(e.beta_f)}{e.beta_f_stderr:>11.2g}"
                f"{_num(e.log_z)}{ess:>10}{e.n_samples:>9}  {'; '.join(notes)}"
            )
        if self.exact_log_z is not None:
            lines.append(
                f"{'exact':<30}{'exact':<13}{-self.exact_log_z:>14.6f}{'':>11}{self.exact_log_z:>14.6f}"
            )
        lines.append("")
        lines += self.training_lines()
        lines += self.bracket_lines()
        lines += self.reference_lines()
        lines += self.observable_lines()
        sites = self.system.get("n_spins") or (
            self.system["L"] ** 2 if "L" in self.system else None
        )
        if sites and not n:
            best = self.best()
            if best is not None:
                lines.append(
                    f"per site: βF/N = {best.beta_f / sites:.8f} ± {best.beta_f_stderr / sites:.2g}"
                    f"   F/N = {best.beta_f / sites / self.beta:.8f}"
                )
        if n:
            best = self.best()
            if best is not None:
                lines.append(
                    f"per particle: βF/N = {best.beta_f / n:.6f} ± {best.beta_f_stderr / n:.2g}   "
                    f"F/N = {best.beta_f / n / self.beta:.6f}"
                )
        lines += self._timing_lines()
        return "\n".join(lines)

    def _timing_lines(self) -> list[str]:
        if not self.timings:
            return []
        lines = ["wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items())]
        if any(self.energy_evals.values()):
            total = sum(self.energy_evals.values())
            parts = ", ".join(f"{k} {v:.3g}" for k, v in self.energy_evals.items())
            lines.append(f"energy evaluations: {parts}; total {total:.3g}")
        return lines

    def curve_lines(self) -> list[str]:
        """The free-energy curve: ln Z(β) ± stderr, variational bound, ESS, exact, deviation."""
        c = self.curve
        head = (
            f"{'β':>8}{'ln Z (IS)':>16}{'± stderr':>11}{'rel. err':>10}{'var. βF':>14}"
            f"{'ESS':>10}{'exact ln Z':>16}{'Δ/σ':>8}"
        )
        out = [head, "-" * len(head)]
        for i, b in enumerate(c["beta"]):
            lz, se, ex = c["log_z"][i], c["log_z_stderr"][i], c["exact_log_z"][i]
            dev = (lz - ex) / se if np.isfinite(ex) and se > 0 else math.nan
            exs = f"{ex:>16.6f}" if np.isfinite(ex) else f"{'-':>16}"
            devs = f"{dev:>+8.1f}" if np.isfinite(dev) else f"{'-':>8}"
            out.append(
                f"{b:>8.4f}{lz:>16.6f}{se:>11.2g}{se / abs(lz) if lz else math.nan:>10.1e}"
                f"{c['variational_beta_f'][i]:>14.6f}{c['ess'][i]:>10.4g}{exs}{devs}"
            )
        return out

    def observable_lines(self) -> list[str]:
        """Observables per method (value ± stderr; no ± where there is no error bar)."""
        if not self.observables:
            return []
        methods = list(self.observables)
        names = list(dict.fromkeys(k for m in methods for k in self.observables[m]))
        out = ["", f"{'observable':<20}" + "".join(f"{m:>28}" for m in methods)]
        for name in names:
            cells = []
            for m in methods:
                v = self.observables[m].get(name)
                if v is None:
                    cells.append(f"{'-':>28}")
                elif m == "exact" or not math.isfinite(v[1]):
                    cells.append(f"{v[0]:>28.6f}")
                else:
                    cells.append(f"{f'{v[0]:.6f} ± {v[1]:.2g}':>28}")
            out.append(f"{name:<20}" + "".join(cells))
        return out

    def best(self) -> Estimate | None:
        """The minimum-variance estimate of kind ``estimate`` among the sampler's estimates.

        Flagged estimates (:data:`boltzgen.estimators.FLAGS`: error bar not to be trusted) are
        passed over when any unflagged one exists.
        """
        cands = [
            e
            for e in self.estimates.values()
            if e.kind == "estimate" and math.isfinite(e.log_z_stderr)
        ]
        trusted = [e for e in cands if e.trusted]
        cands = trusted or cands
        return min(cands, key=lambda e: e.log_z_stderr) if cands else None

    def problems(self) -> list[str]:
        """Why the answer of this run is not usable (empty when it is).

        The run is unusable when it has no finite best estimate, or when more than
        :data:`UNUSABLE_NONFINITE_SHARE` of the estimation samples of q had a non-finite
        energy or ln q (q then lives mostly where p is zero or the energy fails). The CLI
        writes the file anyway and exits with code 3.
        """
        out = []
        est = self.estimates.get("importance")
        if (
            est is not None
            and est.n_samples
            and (est.n_nonfinite > UNUSABLE_NONFINITE_SHARE * est.n_samples)
        ):
            out.append(
                f"{est.n_nonfinite} of {est.n_samples} estimation samples have a non-finite "
                f"energy or ln q (more than {UNUSABLE_NONFINITE_SHARE:.0%})"
            )
        best = self.best()
        if not self.curve and (best is None or not math.isfinite(best.log_z)):
            out.append("no finite free-energy estimate")
        return out

    def training_lines(self) -> list[str]:
        """A line on the samples of q with non-finite energies met in training, if any."""
        n = self.train_history.get("n_nonfinite")
        total = int(np.nansum(np.asarray(n, np.float64))) if n is not None and len(n) else 0
        if not total:
            return []
        last = int(np.asarray(n)[-1])
        return [
            f"training: {total} samples of q with a non-finite energy or ln q were penalised "
            f"({last} in the last step)"
        ]

    def reference_lines(self) -> list[str]:
        """The best estimate against each Monte Carlo reference and the exact value, in σ."""
        best = self.best()
        if best is None:
            return []
        targets = [(f"ref:{m}", e.log_z, e.log_z_stderr) for m, e in self.reference.items()]
        if self.exact_log_z is not None:
            targets.append(("exact", self.exact_log_z, 0.0))
        out = []
        for name, log_z, err in targets:
            diff = best.log_z - log_z
            sigma = math.hypot(best.log_z_stderr, err)
            z = f" ({diff / sigma:+.1f}σ)" if sigma > 0 else ""
            out.append(f"{best.method} − {name}: Δ ln Z = {diff:+.4f} ± {sigma:.2g}{z}")
        return out

    def bracket_lines(self) -> list[str]:
        """``lower ≤ estimate ≤ upper`` on βF, with a warning when violated beyond 3 errors."""
        allest = list(self.estimates.values()) + list(self.reference.values())
        upper = [e for e in allest if e.kind == "upper_bound"]
        lower = [e for e in allest if e.kind == "lower_bound"]
        best = self.best()
        if best is None or not (upper or lower):
            return []
        lo = max(lower, key=lambda e: e.beta_f) if lower else None
        up = min(upper, key=lambda e: e.beta_f) if upper else None
        text = "bracket on βF: "
        text += f"{lo.beta_f:.4f} ({lo.method}) ≤ " if lo else ""
        text += f"{best.beta_f:.4f} ± {best.beta_f_stderr:.2g} ({best.method})"
        text += f" ≤ {up.beta_f:.4f} ({up.method})" if up else ""
        out = [text]
        for b, sign in ((lo, 1), (up, -1)):
            if b is None:
                continue
            gap = sign * (b.beta_f - best.beta_f)  # > 0 means violated
            err = math.hypot(b.beta_f_stderr, best.beta_f_stderr)
            if gap > 3 * err:
                out.append(
                    f"WARNING: {b.method} ({b.kind}) violates the bracket by {gap:.3g} "
                    f"(> 3 × {err:.2g}): a bug or poor sampling"
                )
        return out


def _num(x: float, width: int = 14) -> str:
    """A table cell: fixed point, or exponent notation where fixed point would not fit."""
    if math.isfinite(x) and abs(x) >= 1e6:
        return f" {x:>{width - 1}.6g}"
    return f"{x:>{width}.6f}"


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove ``<path>.tmp-<pid>`` files left by killed runs whose process is gone.

    A SIGKILL during a save cannot clean up; the next save (or run) of the same output name
    does. Returns the removed paths.
    """
    import glob

    path = os.fspath(path)
    removed = []
    for tmp in glob.glob(glob.escape(path) + ".tmp-*"):
        pid = tmp.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)  # still running: not ours to remove
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            os.remove(tmp)
            removed.append(tmp)
        except OSError:
            pass
    return removed


def _kind_label(kind: str) -> str:
    return {"estimate": "estimate", "upper_bound": "upper bound", "lower_bound": "lower bound"}[
        kind
    ]


def _plain(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _energy_evals(f: h5py.File) -> dict[str, float]:
    """The ``/energy_evals`` attributes (empty for files written before they were counted)."""
    if "energy_evals" not in f:
        return {}
    return {k: float(v) for k, v in f["energy_evals"].attrs.items()}
