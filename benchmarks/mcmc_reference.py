"""Monte Carlo reference (AIS from the harmonic trap) for the Coulomb gas: accuracy vs cost.

Run:  .venv/bin/python benchmarks/mcmc_reference.py [--quick]

Prints, for CoulombGas(6, 2) at β = 10: ln Z ± stderr (delta method), Kish ESS, energy(+grad)
evaluations, wall time (compilation excluded, reported apart), and the virial residual
2⟨Σ|x|²⟩ - ⟨V_C⟩ - dN/β of the reweighted samples, at the default settings and at 4× the cost
(4× chains, and 4× annealing steps); then the N = 2, d = 2, β = 2 check against the exact
quadrature.
"""

import argparse
import time

import jax
import numpy as np

from boltzgen.estimators import weighted_mean
from boltzgen.mcmc import coulomb_reference
from boltzgen.systems import CoulombGas


def virial(system, beta, r):
    v_c = np.asarray(jax.vmap(system.coulomb_energy)(jax.numpy.asarray(r.samples)))
    g = 2 * system.trap * np.sum(r.samples**2, axis=(1, 2)) - system.coupling * v_c
    m, se = weighted_mean(g, r.log_weights)
    return m - system.dim * system.n_particles / beta, se


def line(label, system, beta, r, exact=None):
    res, se = virial(system, beta, r)
    s = (
        f"{label:<34s} lnZ = {r.log_z:.4f} ± {r.log_z_stderr:.4f}  ESS = {r.ess:7.1f}/{r.n_samples}"
        f"  evals = {r.n_energy_evals:.3g}  wall = {r.wall_time:5.1f} s (+{r.compile_time:.1f} s"
        f" compile)  virial resid = {res:+.4f} ± {se:.4f}"
    )
    if exact is not None:
        s += f"  exact = {exact:.4f}  (Δ = {(r.log_z - exact) / r.log_z_stderr:+.2f}σ)"
    print(s, flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="skip the 4× runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    key = jax.random.key(args.seed)
    k1, k2, k3, k4 = jax.random.split(key, 4)

    system, beta = CoulombGas(6, 2), 10.0
    print(f"CoulombGas(6, 2), β = {beta}; devices: {jax.devices()}")
    r = coulomb_reference(system, beta, key=k1)
    a = r.ais_result
    print(
        f"defaults: n_chains={r.n_samples}, n_steps={a.schedule.size - 1}, "
        f"power schedule; mean acceptance {a.acceptance.mean():.2f}, "
        f"divergent moves {a.n_divergent.sum()}"
    )
    line("default", system, beta, r)
    print(f"    βF/N = {r.beta_f / system.n_particles:.5f} ± {r.log_z_stderr / 6:.5f}")
    if not args.quick:
        m, k = r.n_samples, a.schedule.size - 1
        line("4x chains", system, beta, coulomb_reference(system, beta, key=k2, n_chains=4 * m))
        line("4x steps", system, beta, coulomb_reference(system, beta, key=k3, n_steps=4 * k))

    pair = CoulombGas(2, 2)
    r2 = coulomb_reference(pair, 2.0, key=k4)
    line("CoulombGas(2, 2), β = 2, defaults", pair, 2.0, r2, exact=pair.exact_log_z(2.0))
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
