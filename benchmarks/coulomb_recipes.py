"""Training recipes of the default CNF on one Coulomb-gas case: variational gap and ESS.

One training (seed 0) of the CNF with the trap's radii field — flow matching on HMC samples of
p, then optionally reverse-KL fine-tuning — followed by ``--n-q`` samples of q with float64
log-weights: the variational bound on βF, its gap to a reference βF (``--ref``; e.g. the
``ref:ais`` row of a ``boltzgen run`` of the same system), the Kish ESS and importance
sampling. No refinement and no reference run: this compares recipes, cheaply.

    python benchmarks/coulomb_recipes.py --n 20 --steps 6000 --data 16384 --ref 1575.64
    python benchmarks/coulomb_recipes.py --n 20 --steps 6000 --data 16384 --ref 1575.64 \\
        --finetune-steps 400 --finetune-batch 64 --finetune-lr 1e-3 --r-max 6 --n-radii 12
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="charges")
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--beta", type=float, default=10.0)
    ap.add_argument("--ref", type=float, required=True, help="reference βF")
    ap.add_argument("--steps", type=int, default=1500, help="flow-matching steps")
    ap.add_argument("--data", type=int, default=8192, help="HMC training samples")
    ap.add_argument("--finetune-steps", type=int, default=0)
    ap.add_argument("--finetune-batch", type=int, default=0, help="0: the run's batch (256)")
    ap.add_argument("--finetune-lr", type=float, default=3e-4)
    ap.add_argument("--r-max", type=float, default=8.0)
    ap.add_argument("--n-radii", type=int, default=8)
    ap.add_argument("--n-q", type=int, default=4096, help="estimation samples")
    args = ap.parse_args()

    import boltzgen as bg
    from boltzgen.flows import make_sampler
    from boltzgen.train import FineTuned, FlowMatching, HMCData, Trainer

    system = bg.systems.CoulombGas(args.n, args.dim)
    q = make_sampler(
        "cnf",
        system,
        key=bg._keys.RunKeys(0).init,
        r_max=args.r_max,
        n_radii=args.n_radii,
    )
    objective = FlowMatching(data=HMCData(n_samples=args.data))
    if args.finetune_steps:
        objective = FineTuned(
            objective,
            steps=args.finetune_steps,
            batch_size=args.finetune_batch,
            learning_rate=args.finetune_lr,
        )
    t0 = time.perf_counter()
    r = bg.run(
        system,
        args.beta,
        q,
        objective,
        trainer=Trainer(steps=args.steps),
        estimation=bg.Estimation(n_samples=args.n_q, n_boot=0),
        stages=(),
        reference=None,
        progress=False,
    )
    v, i = r.estimates["variational"], r.estimates["importance"]
    print(
        f"N = {args.n}, d = {args.dim}, β = {args.beta:g}: variational {v.beta_f:.3f} "
        f"(gap {v.beta_f - args.ref:.3f}), Kish ESS {i.ess:.1f} / {args.n_q} "
        f"({100 * i.ess / args.n_q:.2f} %), importance βF {i.beta_f:.3f} ± {i.beta_f_stderr:.3f}"
        f" (k̂ {i.extra.get('pareto_k', float('nan')):.2f}); wall {time.perf_counter() - t0:.0f} s"
        f" ({', '.join(f'{k} {t:.0f} s' for k, t in r.timings.items())})"
    )


if __name__ == "__main__":
    main()
