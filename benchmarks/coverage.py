"""Coverage of the best estimate's error bar over independent seeded runs.

Each seed is a whole run (training, estimation, neural MCMC with annealed paths) of a case
with an exact ln Z, with the default sampler and objective of the system (``--sampler
default``: for the Coulomb gas the CNF, flow matching on HMC samples then reverse-KL
fine-tuning, at reduced step counts) or the equivariant coupling flow trained by reverse KL
(``--sampler equivariant``); the script counts how often |best − exact| ≤ 1σ (and 2σ) and
compares the fractions with 68.3 % (95.4 %) and their binomial standard errors. The JAX persistent
compilation cache is on (in a temporary directory), so the seeds after the first reuse its
compiled programs.

    python benchmarks/coverage.py                      # CoulombGas(2, 2), β = 2, 50 seeds
    python benchmarks/coverage.py --sampler equivariant
    python benchmarks/coverage.py --dim 3 --beta 5 --seeds 100
"""

from __future__ import annotations

import argparse
import collections
import math
import tempfile
import time

import jax


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--beta", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=200, help="training steps")
    ap.add_argument("--finetune-steps", type=int, default=50, help="default sampler only")
    ap.add_argument("--sampler", choices=["default", "equivariant"], default="default")
    args = ap.parse_args()
    jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="bg-cache-"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

    import boltzgen as bg
    from boltzgen.flows import make_sampler

    system = bg.systems.CoulombGas(2, args.dim)
    exact = system.exact_log_z(args.beta)
    rows = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        if args.sampler == "equivariant":
            q = make_sampler(
                "equivariant", system, key=bg._keys.RunKeys(seed).init, n_layers=2, hidden=16
            )
            objective = bg.train.ReverseKL()
        else:
            q = None  # the system's default sampler and objective, fewer steps
            objective = bg.train.FineTuned(
                bg.train.FlowMatching(data=bg.train.HMCData(n_samples=4096, n_holdout=0)),
                steps=args.finetune_steps,
            )
        r = bg.run(
            system,
            args.beta,
            q,
            objective,
            trainer=bg.train.Trainer(steps=args.steps, batch_size=256),
            estimation=bg.Estimation(n_samples=4096, n_boot=0),
            stages=(
                bg.stages.NeuralMCMC(n_chains=128, n_steps=40, path_chains=128, path_steps=20),
            ),  # fmt: skip
            reference=None,
            seed=seed,
            progress=False,
        )
        b = r.best()
        z = (b.log_z - exact) / b.log_z_stderr
        rows.append((seed, b.method, z))
        print(f"seed {seed:3d}  best {b.method:16s} z = {z:+.2f}", flush=True)
        jax.clear_caches()  # else the compiled programs of every run pile up in memory
    n = len(rows)
    for k, target in ((1, 0.6827), (2, 0.9545)):
        frac = sum(abs(z) <= k for _, _, z in rows) / n
        se = math.sqrt(target * (1 - target) / n)
        print(f"{k}σ coverage: {frac:.3f} (target {target:.3f} ± {se:.3f} binomial, n = {n})")
    print("best methods:", dict(collections.Counter(m for _, m, _ in rows)))
    print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
