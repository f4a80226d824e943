"""Throughput of the CNF: samples with EXACT log q per second at d = 12, 39 and 165.

The three sizes of the issue: CoulombGas(6, 2) (d = 12, full-space particle field),
LJ13 (13 × 3 = 39 coordinates, zero-COM) and LJ55 (55 × 3 = 165, zero-COM), batch 256, the
registry's default CNF (radial-basis field, hidden 64, depth 2, 20 fixed RK4 steps,
closed-form exact trace of the equivariant field; ``--field mlp`` for per-pair MLPs). The
field's weights are randomised so the solve is not the trivial v ≡ 0.

Usage:
    .venv/bin/python benchmarks/throughput_cnf.py [--batch 256] [--repeats 5] [--steps 20]
        [--log-prob] [--grad]

Prints, per system: compile time, seconds per batch of ``sample_and_log_prob`` (median of
``--repeats``), samples per second; with ``--log-prob`` the same for ``log_prob`` of given
configurations (the backward solve); with ``--grad`` one reverse-KL gradient step.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from boltzgen.flows import make_sampler
from boltzgen.systems import KLEIN_SIGMA, CoulombGas, LennardJones

SYSTEMS = {
    "coulomb6 (d=12)": CoulombGas(6, 2),
    "lj13 (d=39)": LennardJones(13, 3, sigma=KLEIN_SIGMA),
    "lj55 (d=165)": LennardJones(55, 3, sigma=KLEIN_SIGMA),
}


def randomise(sampler, seed: int, scale: float = 0.02):
    """Every inexact leaf of the field redrawn from N(0, scale²) (a non-trivial flow)."""
    params, static = eqx.partition(sampler, eqx.is_inexact_array)
    leaves, tdef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [
        x if x.ndim == 0 else scale * jax.random.normal(k, x.shape, x.dtype)
        for k, x in zip(keys, leaves, strict=True)
    ]
    return eqx.combine(jax.tree_util.tree_unflatten(tdef, new), static)


def timed(fn, *args, repeats: int):
    """(compile + first call seconds, median seconds of ``repeats`` further calls)."""
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return first, float(np.median(times))


def reverse_kl_grad(energy, batch: int, q, key):
    """Gradient of mean(E + ln q) over a batch drawn from q (reparametrised)."""

    def loss(q):
        y, lq = q.sample_and_log_prob(batch, key=key)
        return jnp.mean(jax.vmap(energy)(y) + lq)

    return eqx.filter_grad(loss)(q)


def main(argv=None) -> None:
    """Run the benchmark and print one line per system and operation."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="RK4 steps")
    p.add_argument("--log-prob", action="store_true", help="also time log_prob (backward)")
    p.add_argument("--grad", action="store_true", help="also time a reverse-KL gradient")
    p.add_argument(
        "--field",
        default="rbf",
        choices=["rbf", "radii", "mlp", "env", "egnn"],
        help="particle field",
    )
    p.add_argument("--only", nargs="*", default=None, help="subset of systems (name prefixes)")
    args = p.parse_args(argv)
    print(f"device {jax.devices()[0]}, batch {args.batch}, RK4 steps {args.steps}", flush=True)
    for name, system in SYSTEMS.items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        q = make_sampler("cnf", system, key=jax.random.key(0), n_steps=args.steps, field=args.field)
        q = randomise(q, seed=1, scale=0.1 / system.event_shape[0])  # non-stiff at every N
        sample = eqx.filter_jit(lambda q, k: q.sample_and_log_prob(args.batch, key=k))
        first, per = timed(sample, q, jax.random.key(2), repeats=args.repeats)
        x, log_q = sample(q, jax.random.key(2))
        assert bool(jnp.all(jnp.isfinite(log_q))), name
        print(
            f"{name:16s} sample_and_log_prob: compile+first {first:6.2f} s, "
            f"{per:7.3f} s/batch, {args.batch / per:9.0f} samples/s"
        )
        if args.log_prob:
            lp = eqx.filter_jit(lambda q, x: q.log_prob(x))
            first, per = timed(lp, q, x, repeats=args.repeats)
            err = float(jnp.max(jnp.abs(lp(q, x) - log_q)))
            print(
                f"{name:16s} log_prob:            compile+first {first:6.2f} s, "
                f"{per:7.3f} s/batch, {args.batch / per:9.0f} samples/s, "
                f"max |Δ log q| vs sampled {err:.1e}"
            )
        if args.grad:
            grad = eqx.filter_jit(partial(reverse_kl_grad, system.energy, args.batch))
            first, per = timed(grad, q, jax.random.key(3), repeats=max(1, args.repeats // 2))
            print(
                f"{name:16s} reverse-KL gradient: compile+first {first:6.2f} s, {per:7.3f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
