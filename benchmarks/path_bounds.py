"""Annealed path bounds against the path length K on one trained flow.

Trains the default sampler (or ``--sampler KIND``, e.g. ``equivariant``, the previous default)
once for the default run spec (checkpointed under --dir, so a rerun skips the training), then
for each K runs the default neural-MCMC stage with ``path_steps = K`` and prints the path
bounds, their bracket width, BAR on the path works and the stage's time.

    python benchmarks/path_bounds.py             # CoulombGas(6, 2), β = 10, K = 25,100,400
    python benchmarks/path_bounds.py --sampler equivariant   # the coupling flow, HMC paths
    python benchmarks/path_bounds.py --beta 1 --steps 10,100
"""

from __future__ import annotations

import argparse
import os
import tempfile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--beta", type=float, default=10.0)
    ap.add_argument("--steps", default="25,100,400")
    ap.add_argument("--sampler", default="auto", help="sampler kind, or auto (the default)")
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "boltzgen-paths"))
    args = ap.parse_args()

    import boltzgen as bg

    os.makedirs(args.dir, exist_ok=True)
    system = bg.systems.CoulombGas(args.n, args.dim)
    ck = os.path.join(args.dir, f"{args.sampler}-n{args.n}-d{args.dim}-b{args.beta}.ckpt")
    q = None
    if args.sampler != "auto":
        q = bg.flows.make_sampler(args.sampler, system, key=bg._keys.RunKeys(0).init)
    kw = dict(reference=None, checkpoint=ck, resume=True, progress=False)
    print(f"CoulombGas({args.n}, {args.dim}), β = {args.beta}")
    print(f"{'K':>5s} {'upper':>10s} {'lower':>10s} {'width':>7s} {'path_bar':>10s} {'±':>6s} "
          f"{'paths s':>8s}")  # fmt: skip
    for k in (int(s) for s in args.steps.split(",")):
        r = bg.run(system, args.beta, q, stages=(bg.stages.NeuralMCMC(path_steps=k),), **kw)
        up, lo = r.estimates["path_upper_bound"], r.estimates["path_lower_bound"]
        b = r.estimates["path_bar"]
        print(
            f"{k:5d} {up.beta_f:10.4f} {lo.beta_f:10.4f} {up.beta_f - lo.beta_f:7.3f} "
            f"{b.beta_f:10.4f} {b.log_z_stderr:6.3f} {b.cost.wall_time:8.1f}",
            flush=True,
        )
    v = r.estimates["variational"]
    print(f"variational {v.beta_f:.4f}; forward_bound_refined "
          f"{r.estimates['forward_bound_refined'].beta_f:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
