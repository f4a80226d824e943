"""Monte Carlo ln Z of the periodic 2-D Ising model: thermodynamic integration and β-AIS.

Run:  .venv/bin/python benchmarks/ising_mc.py [--quick] [--seed 0]

For L = 8 and L = 16 at β_c, and L = 8 at β = 0.3 and 0.6, runs thermodynamic integration
(Clenshaw–Curtis over β, split at β_c, Swendsen–Wang near β_c, checkerboard Metropolis elsewhere)
and β-annealed importance sampling at two or three budgets, and prints ln Z ± stderr, the TI
quadrature-error estimate, the relative stderr, sweeps, wall time (compilation excluded, shown
apart) and the error against the exact ln Z (Kaufman; "n/a" if boltzgen.systems._ising_exact is
not available). Finally it extrapolates, by σ ∝ 1/√cost from the largest measured TI budget, the
wall time TI needs for a relative stderr of 1e-5 on ln Z for L = 16 at β_c.
"""

import argparse
import time

import jax

from boltzgen.mcmc import beta_annealing, thermodynamic_integration
from boltzgen.systems import BETA_C, Ising

try:
    from boltzgen.systems._ising_exact import ising_exact_log_z
except ImportError:  # written concurrently by someone else
    ising_exact_log_z = None


def exact_log_z(system, beta):
    if ising_exact_log_z is None:
        return None
    try:
        return float(ising_exact_log_z(system, beta))
    except Exception as err:  # noqa: BLE001 - report and carry on
        print(f"  (exact ln Z failed: {err})")
        return None


def line(label, r, exact):
    err = (
        "n/a"
        if exact is None
        else f"{r.log_z - exact:+.5f} ({(r.log_z - exact) / r.log_z_error:+.1f}σ)"
    )
    extra = (
        f" quad {r.quadrature_error:.1e} (noise {r.quadrature_error_noise:.1e})"
        if r.method == "thermodynamic_integration"
        else f" ESS {r.ess:7.1f}/{r.n_chains}"
    )
    print(
        f"  {label:<24s} lnZ = {r.log_z:.5f} ± {r.log_z_stderr:.5f}{extra}"
        f"  rel {r.relative_stderr:.1e}"
        f"  sweeps {r.n_sweeps:.3g}  wall {r.wall_time:6.2f} s (+{r.compile_time:.1f} s compile)"
        f"  vs exact {err}",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smallest budget only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t_start = time.perf_counter()
    key = jax.random.key(args.seed)
    ti_budgets = [(32, 250), (32, 1000), (64, 2000)]  # (chains per node, sweeps per chain)
    ais_budgets = [(256, 500), (1024, 1000)]  # (chains, annealing steps)
    if args.quick:
        ti_budgets, ais_budgets = ti_budgets[:1], ais_budgets[:1]
    cases = [(8, BETA_C), (16, BETA_C), (8, 0.3), (8, 0.6)]
    print(
        f"devices: {jax.devices()}; TI with 32 β nodes; exact ln Z: "
        f"{'Kaufman (boltzgen.systems._ising_exact)' if ising_exact_log_z else 'n/a'}"
    )
    last_ti = {}
    for L, beta in cases:
        system = Ising(L)
        exact = exact_log_z(system, beta)
        ex = "n/a" if exact is None else f"{exact:.6f}"
        print(f"Ising L = {L} periodic, β = {beta:.6f}: exact ln Z = {ex}")
        for n_chains, n_sweeps in ti_budgets:
            key, k = jax.random.split(key)
            r = thermodynamic_integration(
                system, beta, key=k, n_betas=32, n_chains=n_chains, n_sweeps=n_sweeps
            )
            line(f"TI {n_chains} ch × {n_sweeps} sw", r, exact)
            last_ti[(L, beta)] = r
        for n_chains, n_steps in ais_budgets:
            key, k = jax.random.split(key)
            r = beta_annealing(system, beta, key=k, n_chains=n_chains, n_steps=n_steps)
            line(f"β-AIS {n_chains} ch × {n_steps} st", r, exact)
    r = last_ti[(16, BETA_C)]
    target = 1e-5
    factor = (r.relative_stderr / target) ** 2
    print(
        f"\nL = 16 at β_c: relative stderr {r.relative_stderr:.2e} in {r.wall_time:.1f} s "
        f"({r.n_sweeps:.3g} sweeps); σ ∝ 1/√cost extrapolates relative stderr 1e-5 to "
        f"{factor * r.wall_time:.0f} s ({factor * r.n_sweeps:.3g} sweeps)"
        + (" [measured]" if factor <= 1 else " [extrapolated]")
        + f"; the quadrature-error estimate at 32 nodes is {r.quadrature_error:.1e} "
        f"(relative {r.quadrature_error / abs(r.log_z):.1e})"
    )
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
