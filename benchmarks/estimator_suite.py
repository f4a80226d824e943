"""Flow-only vs refined free energies vs Monte Carlo, at equal error: the issue-3 figures.

Run:  .venv/bin/python benchmarks/estimator_suite.py --n-particles 6 [--steps 1500]
      [--cache /tmp/flow_n6.eqx] [--smc 1024x200] [--nmcmc 512x200] [--ais 1024x2500]
      [--ladder 16x128] [--n-samples 65536] [--seed 0]

For the 2-D Coulomb gas at β = 10 (labelled particles) this trains the default equivariant flow
(the keys of ``boltzgen.run`` with the seed; cached with ``--cache``), then prints one table:

* flow only: variational upper bound on βF, importance sampling (ESS);
* refined: SMC from q to p (ln Z, ESS before → after), neural MCMC (IMH + MALA) whose final
  states give BAR between q and p, reverse IS and the lower bound;
* Monte Carlo without the flow: AIS from the harmonic trap and BAR / MBAR along a coupling
  ladder, with the lower bound from the AIS samples;

each with its cost in energy (+ log q) evaluations and wall time, and — for the Monte Carlo
baselines — the cost extrapolated to the error bar of the best flow-based estimate
(σ ∝ cost^{-1/2}: cost × (σ_MC/σ_best)²).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time

import equinox as eqx
import jax
import numpy as np

from boltzgen import estimators
from boltzgen._estimation import sample_log_weights
from boltzgen._keys import RunKeys
from boltzgen.estimators import Cost
from boltzgen.flows import make_sampler
from boltzgen.references import CouplingLadder, TrapAIS
from boltzgen.stages import SMC, NeuralMCMC, StageContext
from boltzgen.systems import CoulombGas
from boltzgen.train import Trainer, train


def _pair(text: str) -> tuple[int, int]:
    a, b = text.lower().split("x")
    return int(a), int(b)


def trained_flow(system, beta, *, seed, cache, steps, batch_size, learning_rate):
    """The default flow of ``boltzgen run`` trained with the run's keys (or loaded)."""
    keys = RunKeys(seed)
    flow = make_sampler("equivariant", system, key=keys.init)
    t = time.perf_counter()
    if cache and os.path.exists(cache):
        print(f"loading the trained flow from {cache}", flush=True)
        return eqx.tree_deserialise_leaves(cache, flow), 0.0, (keys.estimate, keys.reference)
    state = train(
        flow,
        system.energy,
        beta,
        key=keys.train,
        trainer=Trainer(steps=steps, batch_size=batch_size, learning_rate=learning_rate, clip=10.0),
        progress=True,
    )
    if cache:
        eqx.tree_serialise_leaves(cache, state.model)
    return state.model, time.perf_counter() - t, (keys.estimate, keys.reference)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-particles", type=int, default=6)
    p.add_argument("--beta", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--cache", default=None, help="file to save / load the trained flow")
    p.add_argument("--n-samples", type=int, default=65536)
    p.add_argument("--smc", type=_pair, default=(1024, 200), help="chains x steps")
    p.add_argument("--nmcmc", type=_pair, default=(512, 200), help="chains x steps")
    p.add_argument("--ais", type=_pair, default=(1024, 2500), help="chains x steps")
    p.add_argument("--ladder", type=_pair, default=(16, 128), help="states x chains")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    system = CoulombGas(args.n_particles, 2)
    beta = args.beta
    q, t_train, (k_est, k_ref) = trained_flow(
        system,
        beta,
        seed=args.seed,
        cache=args.cache,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
    )
    rows = {}
    t = time.perf_counter()
    # The samples and estimates of the estimation phase (chunks of 8192, as before).
    samples = sample_log_weights(q, system, beta, args.n_samples, key=k_est, progress=True)
    w = samples["log_w"]
    flow_only = {
        "variational": estimators.variational_bound(w),
        "importance": estimators.importance_log_z(
            w, rng=np.random.default_rng(args.seed), n_boot=200
        ),
    }
    t_est = time.perf_counter() - t
    cost = Cost(n_log_q_evals=float(args.n_samples), wall_time=t_est)
    rows.update({m: e.with_cost(cost) for m, e in flow_only.items()})

    key = RunKeys(args.seed).root
    ctx = StageContext(system, beta, q, samples, objective=None, progress=True)
    n, k = args.smc
    out = SMC(n_chains=n, n_steps=k)(dataclasses.replace(ctx, key=jax.random.fold_in(key, 101)))
    rows.update(out.estimates)
    n, k = args.nmcmc
    out = NeuralMCMC(n_chains=n, n_steps=k)(
        dataclasses.replace(ctx, key=jax.random.fold_in(key, 102))
    )
    est = out.estimates
    rows.update({f"{m}": e for m, e in est.items() if m != "forward_bound_refined"})
    rows["forward_bound_nmcmc"] = est["forward_bound_refined"]
    n, k = args.ais
    ref, derived = TrapAIS(n_chains=n, n_steps=k)(system, beta, key=k_ref, sampler=q, progress=True)
    rows.update({f"mc:{m}": e for m, e in ref.items()})
    rows.update(derived)
    s, c = args.ladder
    ref, _ = CouplingLadder(n_states=s, n_chains=c)(
        system, beta, key=jax.random.fold_in(key, 103), progress=True
    )
    rows.update({f"mc:{m}": e for m, e in ref.items()})

    flow_based = [
        e
        for m, e in rows.items()
        if e.kind == "estimate" and not m.startswith("mc:") and "low_ess" not in e.flags
    ]
    best = min(flow_based, key=lambda e: e.log_z_stderr)
    print(
        f"\nCoulomb gas N = {args.n_particles}, d = 2, β = {beta:g}, labelled particles; "
        f"flow trained {t_train:.0f} s ({args.steps} steps × {args.batch_size})"
    )
    print(
        "| method | kind | βF | ± | ESS | n | energy evals | log q evals | wall s "
        "| MC cost at σ_best |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m, e in rows.items():
        c = e.cost  # counts that were not recorded are 0 (wall time NaN): printed as nan
        ess = f"{e.ess:.4g}" if math.isfinite(e.ess) else "-"
        if "ess_before" in e.extra:
            ess = f"{e.extra['ess_before']:.4g} → {ess}"
        if "low_ess" in e.flags:
            ess += " (low)"
        evals = c.n_energy_evals or c.n_log_q_evals or math.nan
        lq = c.n_log_q_evals or math.nan
        scaled = ""
        if m.startswith("mc:") and e.kind == "estimate":
            f = (e.log_z_stderr / best.log_z_stderr) ** 2
            scaled = f"{c.n_energy_evals * f:.3g} evals, {c.wall_time * f:.1f} s"
        print(
            f"| {m} | {e.kind} | {e.beta_f:.4f} | {e.log_z_stderr:.2g} | {ess} | {e.n_samples} "
            f"| {evals:.3g} | {lq:.3g} | {c.wall_time:.1f} | {scaled} |"
        )
    print(f"\nbest flow-based: {best.method} βF = {best.beta_f:.4f} ± {best.log_z_stderr:.2g}")
    uppers = [e for e in rows.values() if e.kind == "upper_bound"]
    lowers = [e for e in rows.values() if e.kind == "lower_bound"]
    up = min(uppers, key=lambda e: e.beta_f)
    lo = max(lowers, key=lambda e: e.beta_f)
    print(
        f"bracket: {lo.beta_f:.4f} ({lo.method}) ≤ βF ≤ {up.beta_f:.4f} ({up.method}); "
        f"width {up.beta_f - lo.beta_f:.3f}"
    )


if __name__ == "__main__":
    main()
