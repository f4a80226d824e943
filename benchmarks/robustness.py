"""The default run spec on other cases of the Coulomb gas: only β, N and d overridden.

For every case the full default pipeline runs (sampler, objective, stages and Monte Carlo
reference all at their defaults, seed 0) and one line is printed: the variational gap against
the run's own reference (AIS from the trap), the Kish ESS fraction and Pareto k̂ of importance
sampling, the bracket (tightest lower and upper bound on βF, and its width), the best
unflagged estimate's deviation from the reference in its combined standard errors, whether the
bracket contains the reference, and the wall time. A case is given as ``beta:N:d``.

    python benchmarks/robustness.py --cases 1:6:2,10:6:2,5:4:3,20:6:2,0.5:6:2,5:5:1,10:10:2
"""

from __future__ import annotations

import argparse
import math
import time


def run_case(beta: float, n: int, d: int, seed: int):
    """The default spec with ensemble.beta, system.n_particles and system.dim overridden."""
    from boltzgen.config import load_spec

    spec = load_spec(
        None,
        [f"ensemble.beta={beta}", f"system.n_particles={n}", f"system.dim={d}", f"seed={seed}"],
    )
    t0 = time.perf_counter()
    r = spec.run(progress=False)
    return r, time.perf_counter() - t0


def summary(r) -> dict:
    """The figures of one run (βF side: bounds and estimates; reference = first ref row)."""
    ref = next(iter(r.reference.values()))
    ests = list(r.estimates.values()) + list(r.reference.values())
    lower = max((e for e in ests if e.kind == "lower_bound"), key=lambda e: e.beta_f)
    upper = min((e for e in ests if e.kind == "upper_bound"), key=lambda e: e.beta_f)
    best = r.best()
    imp = r.estimates["importance"]
    z = (best.beta_f - ref.beta_f) / math.hypot(best.beta_f_stderr, ref.beta_f_stderr)
    return dict(
        ref=ref.beta_f,
        ref_se=ref.beta_f_stderr,
        gap=r.estimates["variational"].beta_f - ref.beta_f,
        ess=imp.extra.get("ess_fraction", float("nan")),
        k=imp.extra.get("pareto_k", float("nan")),
        lower=lower.beta_f,
        lower_m=lower.method,
        upper=upper.beta_f,
        upper_m=upper.method,
        best=best.method,
        best_bf=best.beta_f,
        best_se=best.beta_f_stderr,
        z=z,
        inside=lower.beta_f - 4 * lower.beta_f_stderr
        <= ref.beta_f
        <= upper.beta_f + 4 * upper.beta_f_stderr,
        flagged=sorted(m for m, e in r.estimates.items() if not e.trusted),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="1:6:2,10:6:2,5:4:3")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(
        f"{'β':>5s} {'N':>3s} {'d':>2s} {'ref βF':>12s} {'gap':>7s} {'ESS %':>6s} {'k̂':>5s} "
        f"{'lower':>11s} {'upper':>11s} {'width':>6s} {'best':>14s} {'βF':>12s} {'±':>6s} "
        f"{'z':>5s} {'in':>3s} {'s':>5s}"
    )
    for case in args.cases.split(","):
        beta, n, d = case.split(":")
        r, wall = run_case(float(beta), int(n), int(d), args.seed)
        s = summary(r)
        print(
            f"{float(beta):5g} {int(n):3d} {int(d):2d} {s['ref']:12.4f} {s['gap']:7.3f} "
            f"{100 * s['ess']:6.2f} {s['k']:5.2f} {s['lower']:11.4f} {s['upper']:11.4f} "
            f"{s['upper'] - s['lower']:6.3f} {s['best']:>14s} {s['best_bf']:12.4f} "
            f"{s['best_se']:6.3f} {s['z']:+5.1f} {'yes' if s['inside'] else 'NO':>3s} {wall:5.0f}",
            flush=True,
        )
        print(f"      bounds: {s['lower_m']} / {s['upper_m']}; flagged: {', '.join(s['flagged'])}")


if __name__ == "__main__":
    main()
