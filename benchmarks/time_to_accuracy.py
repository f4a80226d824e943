"""Time-to-accuracy of a run's flow-based best estimate against its own Monte Carlo reference.

Reads results files written by ``boltzgen run`` (schema with ``/energy_evals``) and prints, per
file: the best unflagged flow-based estimate (σ_f) with the energy evaluations and wall time
of everything the flow needed (Monte Carlo training data, training, estimation, refinement
stages — the whole run except the reference), and the reference (AIS from the trap, σ_r, its
own energy evaluations and wall time). AIS chains are independent, so at a fixed protocol
σ_r ∝ 1/√(chains) ∝ 1/√(cost) (checked in ``benchmarks/mcmc_reference.py``: 4× the chains
gave ±0.0063 against ±0.0117); the cost AIS needs for the flow's σ_f is therefore
cost_r · (σ_r/σ_f)². The ratio flow / AIS at equal standard error is printed for energy
evaluations and for wall time (< 1: the flow wins). The flow's cost is mostly fixed (data and
training), so it is not rescaled. The last line gives the extra cost per energy evaluation
above which the flow would win on wall time too (both wall times grow by that cost times
their energy evaluations).

    python benchmarks/time_to_accuracy.py runs/out/default.h5 [more.h5 ...]
"""

from __future__ import annotations

import argparse
import math

import boltzgen as bg


def summary(path: str) -> dict:
    """The figures of one results file (see the module docstring)."""
    r = bg.Result.load(path, samples=False)
    if not r.energy_evals:
        raise SystemExit(f"{path}: no /energy_evals (written by an older boltzgen): re-run it")
    best = r.best()
    ref = next(iter(r.reference.values()))
    flow_evals = sum(v for k, v in r.energy_evals.items() if k != "reference")
    flow_wall = sum(v for k, v in r.timings.items() if k not in ("reference", "total"))
    ref_evals = ref.cost.n_energy_evals
    ref_wall = ref.cost.wall_time
    scale = (ref.log_z_stderr / best.log_z_stderr) ** 2
    z = (best.log_z - ref.log_z) / math.hypot(best.log_z_stderr, ref.log_z_stderr)
    return dict(
        system=" ".join(f"{k}={v}" for k, v in r.system.items() if k != "kind"),
        beta=r.beta,
        best=best.method,
        sigma_f=best.log_z_stderr,
        flow_evals=flow_evals,
        flow_wall=flow_wall,
        sigma_r=ref.log_z_stderr,
        ref_evals=ref_evals,
        ref_wall=ref_wall,
        ais_evals_at_f=ref_evals * scale,
        ais_wall_at_f=ref_wall * scale,
        evals_ratio=flow_evals / (ref_evals * scale),
        wall_ratio=flow_wall / (ref_wall * scale),
        z=z,
        # Extra seconds per energy evaluation (a costlier energy, the same sampler overhead)
        # above which the flow also wins on wall time; None if it already does or never can.
        break_even=_break_even(flow_wall, flow_evals, ref_wall * scale, ref_evals * scale),
    )


def _break_even(flow_wall: float, flow_evals: float, ais_wall: float, ais_evals: float):
    if flow_wall <= ais_wall or flow_evals >= ais_evals:
        return None
    return (flow_wall - ais_wall) / (ais_evals - flow_evals)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    for path in args.files:
        s = summary(path)
        print(f"{path}: {s['system']}, β = {s['beta']:g}")
        print(
            f"  flow  {s['best']:>14s} ±{s['sigma_f']:.4f}  {s['flow_evals']:.3g} energy evals  "
            f"{s['flow_wall']:.0f} s (whole run without the reference)"
        )
        print(
            f"  AIS   {'ref':>14s} ±{s['sigma_r']:.4f}  {s['ref_evals']:.3g} energy evals  "
            f"{s['ref_wall']:.1f} s; at ±{s['sigma_f']:.4f}: {s['ais_evals_at_f']:.3g} evals, "
            f"{s['ais_wall_at_f']:.1f} s"
        )
        print(
            f"  flow / AIS at equal standard error: energy evals {s['evals_ratio']:.3g}, "
            f"wall time {s['wall_ratio']:.3g};  flow − AIS = {s['z']:+.1f}σ"
        )
        if s["break_even"] is not None:
            print(
                f"  the flow also wins on wall time once an energy evaluation costs "
                f"≥ {s['break_even'] * 1e6:.3g} µs more than this one"
            )


if __name__ == "__main__":
    main()
