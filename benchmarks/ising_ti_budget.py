"""Thermodynamic integration on the 2-D Ising torus at one budget: error, cost, wall time.

The Monte Carlo side of the time-to-accuracy comparison of issue 4 (the flow side is
``benchmarks/ising_targets.py``):

    python benchmarks/ising_ti_budget.py --L 16 --n-betas 64 --n-chains 128 --n-sweeps 6000

prints ln Z ± statistical stderr, the quadrature-error estimate, the deviation from Kaufman's
exact ln Z, sweeps and wall time (compilation excluded and reported separately).
"""

from __future__ import annotations

import argparse
import math

import jax

from boltzgen.mcmc import thermodynamic_integration
from boltzgen.systems import BETA_C, Ising


def main() -> None:
    """Run TI once and print one line of results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, default=16)
    ap.add_argument("--beta", type=float, default=BETA_C)
    ap.add_argument("--n-betas", type=int, default=64)
    ap.add_argument("--n-chains", type=int, default=128)
    ap.add_argument("--n-sweeps", type=int, default=6000)
    ap.add_argument("--kernel", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    beta = BETA_C if abs(args.beta - BETA_C) < 1e-6 else args.beta
    system = Ising(args.L)
    exact = system.exact_log_z(beta)
    r = thermodynamic_integration(
        system,
        beta,
        key=jax.random.key(args.seed),
        n_betas=args.n_betas,
        n_chains=args.n_chains,
        n_sweeps=args.n_sweeps,
        kernel=args.kernel,
        progress=True,
    )
    total = math.hypot(r.log_z_stderr, r.quadrature_error)
    print(
        f"Ising L = {args.L}, β = {beta:.7g}: TI {args.n_betas} nodes × {args.n_chains} chains × "
        f"{args.n_sweeps} sweeps\n"
        f"ln Z = {r.log_z:.7f} ± {r.log_z_stderr:.2g} (stat, rel {r.log_z_stderr / r.log_z:.2g})"
        f"; quadrature-error estimate {r.quadrature_error:.2g}; stat ⊕ quad {total:.2g} "
        f"(rel {total / r.log_z:.2g})\n"
        f"exact {exact:.7f}: Δ = {r.log_z - exact:+.5f} ({(r.log_z - exact) / r.log_z_stderr:+.1f}σ"
        f" stat)\n"
        f"{r.n_sweeps:.3g} sweeps, wall {r.wall_time:.1f} s (+{r.compile_time:.1f} s compile)"
    )


if __name__ == "__main__":
    main()
