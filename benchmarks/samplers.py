"""Samplers and objectives on one Coulomb-gas case: variational gap, ESS, Pareto k̂, cost.

Every variant trains its sampler (the default CNF unless the variant names the equivariant
coupling flow) from the same seed with the default trainer unless the variant says otherwise,
then draws the default 65 536 estimation samples. The reference βF is the Monte Carlo
reference (AIS from the harmonic trap) of the same run spec; pass it with ``--ref`` (from
``boltzgen run``'s ``ref:ais`` row) or let the script compute it with the default reference.

    python benchmarks/samplers.py --n 6 --dim 2 --beta 10 --ref 168.3134
    python benchmarks/samplers.py --variants default,reverse_kl --beta 1
"""

from __future__ import annotations

import argparse

VARIANTS = {
    "default": "CNF: FineTuned(FlowMatching()) — 1500 flow-matching steps, 300 reverse-KL steps",
    "cnf_flow_matching": "CNF: FlowMatching() alone, 1500 steps",
    "reverse_kl": "equivariant coupling flow: ReverseKL(), Trainer() (the default until now)",
    "reverse_kl_3000": "equivariant: ReverseKL(), Trainer(steps=3000)",
    "mixed_0.5": "equivariant: MaximumLikelihood(reverse_weight=0.5) on HMCData()",
    "max_likelihood": "equivariant: MaximumLikelihood() on HMCData()",
    "path_gradient": "equivariant: ReverseKL(path_gradient=True)",
    "beta_anneal_0.3": "equivariant: ReverseKL(beta_anneal=0.3)",
}


def _pieces(name):
    """(sampler kind, objective, trainer) of a variant."""
    import boltzgen as bg

    trainer = bg.train.Trainer()
    if name == "default":
        return "cnf", bg.train.FineTuned(bg.train.FlowMatching()), trainer
    if name == "cnf_flow_matching":
        return "cnf", bg.train.FlowMatching(), trainer
    if name == "reverse_kl":
        obj = bg.train.ReverseKL()
    elif name == "reverse_kl_3000":
        obj, trainer = bg.train.ReverseKL(), bg.train.Trainer(steps=3000)
    elif name == "mixed_0.5":
        obj = bg.train.MaximumLikelihood(reverse_weight=0.5)
    elif name == "max_likelihood":
        obj = bg.train.MaximumLikelihood()
    elif name == "path_gradient":
        obj = bg.train.ReverseKL(path_gradient=True)
    elif name == "beta_anneal_0.3":
        obj = bg.train.ReverseKL(beta_anneal=0.3)
    else:
        raise SystemExit(f"unknown variant {name!r}; valid: {', '.join(VARIANTS)}")
    return "equivariant", obj, trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--beta", type=float, default=10.0)
    ap.add_argument("--ref", type=float, default=None, help="reference βF (else computed)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import boltzgen as bg
    from boltzgen.references import default_reference

    system = bg.systems.CoulombGas(args.n, args.dim)
    ref = args.ref
    if ref is None:
        r = default_reference(system)
        est, _ = r(system, args.beta, key=bg._keys.RunKeys(args.seed).reference, progress=False)
        ref = next(iter(est.values())).beta_f
    print(f"CoulombGas({args.n}, {args.dim}), β = {args.beta}, reference βF = {ref:.4f}")
    print(f"{'variant':18s} {'variational':>12s} {'gap':>7s} {'IS βF':>11s} {'±':>7s} "
          f"{'ESS %':>7s} {'k̂':>5s} {'train s':>8s}")  # fmt: skip
    for name in args.variants.split(","):
        kind, obj, trainer = _pieces(name)
        q = bg.flows.make_sampler(kind, system, key=bg._keys.RunKeys(args.seed).init)
        r = bg.run(system, args.beta, q, obj, trainer=trainer, stages=(),
                   reference=None, seed=args.seed, progress=False)  # fmt: skip
        v, imp = r.estimates["variational"], r.estimates["importance"]
        k = imp.extra.get("pareto_k", float("nan"))
        print(
            f"{name:18s} {v.beta_f:12.3f} {v.beta_f - ref:7.3f} {imp.beta_f:11.3f} "
            f"{imp.log_z_stderr:7.3f} {100 * imp.extra['ess_fraction']:7.2f} {k:5.2f} "
            f"{r.timings.get('train', 0) + r.timings.get('data', 0):8.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
