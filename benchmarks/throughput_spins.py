"""Throughput of the autoregressive spin samplers (MADE, PixelCNN) on L×L lattices.

Usage:
    .venv/bin/python benchmarks/throughput_spins.py [--L 8 16] [--batch 1024] [--repeats 3]
        [--only made pixelcnn ...] [--naive]

Prints, per model and L, after compilation (best of ``--repeats``):
  * spins sampled per second (with exact log q), batch ``--batch``;
  * the time of one ``log_prob`` forward pass and of a forward+backward pass
    (gradient of mean log q w.r.t. the parameters) at that batch;
  * the ratio (sampling time) / (forward time): the cached sampler costs about one forward
    pass per batch (N passes without caching);
  * with ``--naive``, the cost of the uncached alternative estimated as N forward passes.
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp

from boltzgen.flows import MADE, PixelCNN

CONFIGS = {
    "made": lambda L, key: MADE((L, L), key=key),  # defaults: channels 2, depth 2
    "pixelcnn": lambda L, key: PixelCNN(L, key=key),  # defaults: C 16, depth 3, kernel 3, full
    "pixelcnn-c32": lambda L, key: PixelCNN(L, key=key, channels=32),
}


def best_time(fn, repeats):
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return min(times)


def bench(name, L, batch, repeats):
    model = CONFIGS[name](L, jax.random.key(0))
    key = jax.random.key(1)

    sample = eqx.filter_jit(lambda m, k: m.sample_and_log_prob(batch, key=k))
    x, _ = sample(model, key)
    forward = eqx.filter_jit(lambda m, x: m.log_prob(x))

    @eqx.filter_jit
    def fwd_bwd(m, x):
        return eqx.filter_grad(lambda m: jnp.mean(m.log_prob(x)))(m)

    t_s = best_time(lambda: sample(model, key), repeats)
    t_f = best_time(lambda: forward(model, x), repeats)
    t_fb = best_time(lambda: fwd_bwd(model, x), repeats)
    n = L * L
    return dict(
        model=name,
        L=L,
        spins_per_s=batch * n / t_s,
        t_sample=t_s,
        t_fwd=t_f,
        t_fwd_bwd=t_fb,
        ratio=t_s / t_f,
        naive=n * t_f,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--naive", action="store_true", help="print N × forward time")
    args = ap.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, batch {args.batch}, float32")
    head = (
        f"{'model':<14}{'L':>4}{'spins/s':>12}{'sample s':>10}{'fwd s':>9}{'fwd+bwd s':>11}"
        f"{'sample/fwd':>12}"
    )
    if args.naive:
        head += f"{'N×fwd s':>10}"
    print(head)
    for L in args.L:
        for name in args.only:
            r = bench(name, L, args.batch, args.repeats)
            line = (
                f"{r['model']:<14}{r['L']:>4}{r['spins_per_s']:>12.3g}{r['t_sample']:>10.3f}"
                f"{r['t_fwd']:>9.3f}{r['t_fwd_bwd']:>11.3f}{r['ratio']:>12.2f}"
            )
            if args.naive:
                line += f"{r['naive']:>10.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
