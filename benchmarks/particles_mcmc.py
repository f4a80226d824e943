"""Tuned MCMC at equal budget on DW4 / LJ13 / LJ55: energy-W2 and distance-W2 vs long MCMC.

Run:  .venv/bin/python benchmarks/particles_mcmc.py --system dw4 [--budgets 1e5 1e6 1e7]
      .venv/bin/python benchmarks/particles_mcmc.py --system lj13 --quick

Step 1 builds a reference set by long zero-centre-of-mass HMC (many chains, long, thinned;
:func:`boltzgen.mcmc._particles.particle_mcmc`) and caches it to ``--cache`` (default
``runs/out/particles_ref_<system>.npz``, git-ignored); a cached file is reused when its
settings match. Step 2 runs :func:`~boltzgen.mcmc._particles.mcmc_at_budget` for each budget
(total energy+gradient evaluations, warm-up and initialisation included) and prints the
energy-W2 and interatomic-distance W2 of its ``--n-samples`` samples against the reference
(:mod:`boltzgen.estimators._metrics`), the evaluations spent, acceptance, step size and wall
time. The "floor" line is the W2 between random subsets of ``--n-samples`` reference
configurations and the full reference (mean and sd over ``--repeats-floor`` subsets): what an
exact sampler would get with that many samples. Each budget is run with ``--repeats`` seeds.

Conventions (the sets of Köhler et al. 2020 and Klein, Krämer & Noé, arXiv 2306.15030, as in
bgflow and in the DEM/iDEM re-evaluations):

* dw4: ``DoubleWellParticles()`` — N = 4, d = 2, a = 0, b = −4, c = 0.9, d_0 = 4, τ = 1,
  pair sum over i < j — at β = 1.
* lj13 / lj55: ``LennardJones(N, 3, epsilon=1, sigma=KLEIN_SIGMA, tether=1)`` at β = 1:
  bgflow's V = ε[(r_m/r)^12 − 2(r_m/r)^6] with r_m = 1 (σ = 2^{-1/6}), summed over i < j, plus
  the oscillator ½Σ|x_i − x̄|² (oscillator_scale = 1), temperature 1 in units of ε.

``--epsilon`` (default 1) changes ε of the LJ systems. The DEM / iDEM code base (and the
equal-budget re-evaluations built on it, whose MCMC energy-W2 LJ13 0.516 / LJ55 0.872 are quoted
in PHYSICS.md) evaluates 2·Σ_{i<j} V + ½Σ|x_i − x̄|² ("each interaction is counted twice"),
i.e. this LennardJones with ε = 2: use ``--epsilon 2`` to compare energies and W2 values in
those units. Measured here (reference sets of 50 000 configurations): with ε = 1 (bgflow's
Σ_{i<j} V) the LJ13 cluster at β = 1 is a hot, tether-held droplet, ⟨E⟩ = 0.59 ± 0.03 (sd 6.3);
with ε = 2, ⟨E⟩ = −42.97 ± 0.03 (sd 7.0), the energy range of the published LJ13 histograms,
and the equal-budget energy-W2 at 10⁶ evaluations (0.51 ± 0.12 over 3 seeds) is close to the
quoted 0.516. Which ε generated the published LJ13/LJ55 data was not checked against the data
files themselves (not available offline).

All sampling is in float32 on the zero-COM subspace.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import jax
import numpy as np

from boltzgen.estimators._metrics import distance_w2, energy_w2
from boltzgen.mcmc._particles import mcmc_at_budget, particle_mcmc
from boltzgen.systems._particles import KLEIN_SIGMA, DoubleWellParticles, LennardJones

# Reference settings per system: chains, warm-up moves, post-warm-up moves, thin, leapfrog.
REFERENCE = {
    "dw4": dict(n_chains=256, n_warmup=2000, n_steps=20000, thin=20, n_leapfrog=10),
    "lj13": dict(n_chains=256, n_warmup=2000, n_steps=10000, thin=20, n_leapfrog=10),
    "lj55": dict(n_chains=128, n_warmup=2000, n_steps=10000, thin=50, n_leapfrog=10),
}
QUICK = {
    "dw4": dict(n_chains=128, n_warmup=1000, n_steps=5000, thin=10, n_leapfrog=10),
    "lj13": dict(n_chains=128, n_warmup=1000, n_steps=4000, thin=10, n_leapfrog=10),
    "lj55": dict(n_chains=64, n_warmup=1000, n_steps=2000, thin=20, n_leapfrog=10),
}


def make_system(name: str, epsilon: float = 1.0):
    """The benchmark system and its β (``epsilon`` applies to the LJ systems only)."""
    if name == "dw4":
        return DoubleWellParticles(), 1.0
    if name == "lj13":
        return LennardJones(13, 3, epsilon=epsilon, sigma=KLEIN_SIGMA, tether=1.0), 1.0
    if name == "lj55":
        return LennardJones(55, 3, epsilon=epsilon, sigma=KLEIN_SIGMA, tether=1.0), 1.0
    raise ValueError(name)


def reference(system, beta, settings, *, cache: str, seed: int):
    """Load the cached reference set if its settings match, else sample and cache it."""
    meta = dict(settings, beta=beta, seed=seed, system=repr(system))
    if os.path.exists(cache):
        with np.load(cache, allow_pickle=False) as f:
            if str(f["meta"]) == repr(sorted(meta.items())):
                print(f"reference: cached {cache} ({f['samples'].shape[0]} samples)")
                return f["samples"], f["energies"], {k: float(f[k]) for k in ("ess", "acc")}
            print(f"reference: {cache} has other settings; resampling")
    r = particle_mcmc(system, beta, key=jax.random.key(seed), progress="reference", **settings)
    print(
        f"reference: {r.samples.shape[1]} chains × {r.samples.shape[0]} records "
        f"(warm-up {r.n_warmup}, {r.n_steps} moves, thin {r.thin}, L {r.n_leapfrog}): "
        f"acc {r.acceptance:.3f}, ε {r.step_size:.4g}, divergent {r.n_nonfinite}, "
        f"energy ESS {r.energy_ess:.0f} (τ {r.energy_tau:.2f} records, "
        f"split-R̂ {r.energy_rhat:.4f}), "
        f"{r.n_energy_evals:.3g} evals, {r.wall_time:.1f} s (+{r.compile_time:.1f} s compile)"
    )
    os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
    tmp = cache + ".tmp.npz"
    np.savez(
        tmp,
        samples=r.flat_samples.astype(np.float32),
        energies=r.flat_energies,
        ess=r.energy_ess,
        acc=r.acceptance,
        meta=repr(sorted(meta.items())),
    )
    os.replace(tmp, cache)
    return r.flat_samples, r.flat_energies, dict(ess=r.energy_ess, acc=r.acceptance)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--system", choices=sorted(REFERENCE), default="dw4")
    parser.add_argument("--budgets", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--n-chains", type=int, default=None, help="default: n-samples")
    parser.add_argument("--n-leapfrog", type=int, default=10)
    parser.add_argument("--kernel", choices=["hmc", "mala"], default="hmc")
    parser.add_argument("--warmup-fraction", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="smaller reference set")
    parser.add_argument("--ref-max", type=int, default=50_000, help="reference configs used")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epsilon", type=float, default=1.0, help="LJ ε (2: DEM units)")
    parser.add_argument("--repeats", type=int, default=3, help="seeds per budget")
    parser.add_argument("--repeats-floor", type=int, default=20)
    args = parser.parse_args()

    t_start = time.perf_counter()
    system, beta = make_system(args.system, args.epsilon)
    settings = (QUICK if args.quick else REFERENCE)[args.system]
    tag = args.system + ("_quick" if args.quick else "")
    if args.system != "dw4" and args.epsilon != 1.0:
        tag += f"_eps{args.epsilon:g}"
    cache = args.cache or os.path.join("runs", "out", f"particles_ref_{tag}.npz")
    print(f"{args.system}: {system!r}, β = {beta}; devices {jax.devices()}")
    x_ref, e_ref, info = reference(system, beta, settings, cache=cache, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)
    if x_ref.shape[0] > args.ref_max:
        idx = rng.choice(x_ref.shape[0], args.ref_max, replace=False)
        x_ref, e_ref = x_ref[idx], e_ref[idx]
    n_ref = e_ref.size
    se = np.std(e_ref) / math.sqrt(min(info["ess"], n_ref)) if info["ess"] > 0 else float("nan")
    print(
        f"reference set: {n_ref} configurations, ⟨E⟩ = {np.mean(e_ref):.4f} ± {se:.4f}, "
        f"std {np.std(e_ref):.4f}, min {np.min(e_ref):.4f}"
    )
    m = args.n_samples
    if m <= n_ref:
        fe, fd = [], []
        for _ in range(args.repeats_floor):
            a = rng.choice(n_ref, m, replace=False)
            fe.append(energy_w2(e_ref[a], e_ref))
            fd.append(distance_w2(x_ref[a], x_ref))
        print(
            f"floor ({args.repeats_floor} random subsets of {m} reference samples vs the "
            f"reference): energy-W2 {np.mean(fe):.4f} (sd {np.std(fe):.4f}), "
            f"distance-W2 {np.mean(fd):.4f} (sd {np.std(fd):.4f})"
        )
    header = (
        f"{'budget':>9s} {'evals':>9s} {'chains':>6s} {'warm':>5s} {'moves':>6s} {'thin':>5s} "
        f"{'acc':>5s} {'eps':>7s} {'<E>':>9s} {'E-W2':>8s} {'D-W2':>8s} {'wall s':>7s}"
    )
    print(
        f"equal-budget {args.kernel.upper()} (L = {args.n_leapfrog}), {m} samples, "
        f"{args.repeats} seed(s) per budget:"
    )
    print(header)
    print("-" * len(header))
    summary = []
    for i, budget in enumerate(args.budgets):
        budget = int(budget)
        ews, dws = [], []
        for rep in range(args.repeats):
            try:
                out = mcmc_at_budget(
                    system,
                    beta,
                    budget,
                    key=jax.random.key(args.seed + 1000 * (i + 1) + rep),
                    n_samples=m,
                    n_chains=args.n_chains,
                    kernel=args.kernel,
                    n_leapfrog=args.n_leapfrog,
                    warmup_fraction=args.warmup_fraction,
                )
            except ValueError as err:
                print(f"{budget:9.2g} skipped: {err}")
                break
            finite = np.isfinite(out.energies)
            ew2 = energy_w2(out.energies[finite], e_ref)
            dw2 = distance_w2(out.samples[finite], x_ref)
            ews.append(ew2)
            dws.append(dw2)
            r = out.mcmc
            print(
                f"{budget:9.2g} {out.n_energy_evals:9.3g} {out.n_chains:6d} {out.n_warmup:5d} "
                f"{out.n_steps:6d} {out.thin:5d} {r.acceptance:5.2f} {r.step_size:7.4f} "
                f"{np.mean(out.energies[finite]):9.4f} {ew2:8.4f} {dw2:8.4f} "
                f"{out.wall_time:7.2f}"
                + ("" if finite.all() else f"  ({(~finite).sum()} non-finite masked)"),
                flush=True,
            )
        if ews:
            summary.append((budget, np.mean(ews), np.std(ews), np.mean(dws), np.std(dws)))
    if args.repeats > 1 and summary:
        print(f"mean (sd) over {args.repeats} seeds:")
        for budget, em, es, dm, ds in summary:
            print(f"{budget:9.2g}  energy-W2 {em:.4f} ({es:.4f})  distance-W2 {dm:.4f} ({ds:.4f})")
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
