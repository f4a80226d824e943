"""Throughput and a short quality probe of the samplers on CoulombGas(6, 2) at β = 10.

Usage:
    .venv/bin/python benchmarks/throughput_flows.py [--steps 1500] [--only NAME ...] [--no-quality]

Prints, per sampler configuration: samples (with log q) per second at batch 512 and 4096,
reverse-KL steps per second at batch 512 (adam + clip_by_global_norm(10)), and after
``--steps`` training steps the Kish ESS fraction of 16384 samples and the variational bound
mean(βE + ln q) (an upper bound on βF; lower is better).
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.special import logsumexp

from boltzgen.flows import make_sampler
from boltzgen.systems import CoulombGas

BETA = 10.0
SYSTEM = CoulombGas(6, 2)

CONFIGS = {
    "equivariant-spline": ("equivariant", dict(transform="spline")),  # the registry default
    "equivariant-affine": ("equivariant", dict(transform="affine")),
    "equivariant-radial": ("equivariant", dict(transform="spline", radial=True)),
    "equivariant-plain": (  # couplings only: no rotation, no sorted-gap layers
        "equivariant",
        dict(transform="spline", rotate=False, gap=False, base_scale=1.0),
    ),
}


def energy_batch(x):
    return jax.vmap(SYSTEM.energy)(x)


def make_step(opt, batch):
    @eqx.filter_jit
    def step(sampler, opt_state, key):
        def loss_fn(s):
            x, log_q = s.sample_and_log_prob(batch, key=key)
            f = BETA * energy_batch(x) + log_q
            ok = jnp.isfinite(f)
            return jnp.sum(jnp.where(ok, f, 0.0)) / jnp.maximum(jnp.sum(ok), 1)

        loss, grads = eqx.filter_value_and_grad(loss_fn)(sampler)
        updates, opt_state = opt.update(grads, opt_state, eqx.filter(sampler, eqx.is_inexact_array))
        return eqx.apply_updates(sampler, updates), opt_state, loss

    return step


def timed(fn, reps):
    jax.block_until_ready(fn(0))  # warm-up / compile
    t0 = time.perf_counter()
    for i in range(reps):
        out = fn(i + 1)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / reps


def probe(sampler, n=16384, chunk=4096, seed=123):
    draw = eqx.filter_jit(
        lambda s, k: (lambda x, lq: (energy_batch(x), lq))(*s.sample_and_log_prob(chunk, key=k))
    )
    es, lqs = [], []
    for k in jax.random.split(jax.random.key(seed), n // chunk):
        e, lq = draw(sampler, k)
        es.append(np.asarray(e, np.float64))
        lqs.append(np.asarray(lq, np.float64))
    e, lq = np.concatenate(es), np.concatenate(lqs)
    logw = -BETA * e - lq
    logw = np.where(np.isfinite(logw), logw, -np.inf)
    ess = float(np.exp(2 * logsumexp(logw) - logsumexp(2 * logw)))
    fin = np.isfinite(BETA * e + lq)
    return dict(
        ess_frac=ess / n,
        bound=float(np.mean((BETA * e + lq)[fin])),
        log_z=float(logsumexp(logw) - np.log(n)),
    )


def run(name, kind, hyper, steps, lr, quality):
    sampler = make_sampler(kind, SYSTEM, key=jax.random.key(0), **hyper)
    n_par = sum(
        x.size for x in jax.tree_util.tree_leaves(eqx.filter(sampler, eqx.is_inexact_array))
    )
    row = dict(name=name, params=n_par)
    for b in (512, 4096):
        f = eqx.filter_jit(lambda s, k, b=b: s.sample_and_log_prob(b, key=k))
        dt = timed(lambda i, f=f: f(sampler, jax.random.key(i)), reps=5 if b == 4096 else 20)
        row[f"samples/s@{b}"] = b / dt
    opt = optax.chain(
        optax.clip_by_global_norm(10.0),
        optax.adam(optax.cosine_decay_schedule(lr, max(steps, 1), 0.05)),
    )
    step = make_step(opt, 512)
    opt_state = opt.init(eqx.filter(sampler, eqx.is_inexact_array))
    s0, o0, _ = step(sampler, opt_state, jax.random.key(1))  # compile
    jax.block_until_ready(eqx.filter(s0, eqx.is_inexact_array))
    t0 = time.perf_counter()
    s_, o_ = s0, o0
    for i in range(10):
        s_, o_, loss = step(s_, o_, jax.random.key(100 + i))
    jax.block_until_ready(loss)
    row["steps/s@512"] = 10 / (time.perf_counter() - t0)
    if quality:
        t0 = time.perf_counter()
        keys = jax.random.split(jax.random.key(7), steps)
        for i in range(steps):
            sampler, opt_state, loss = step(sampler, opt_state, keys[i])
        jax.block_until_ready(loss)
        row["train_s"] = time.perf_counter() - t0
        row.update(probe(sampler))
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--only", nargs="*", default=None, help=f"subset of {list(CONFIGS)}")
    ap.add_argument("--no-quality", action="store_true")
    args = ap.parse_args()
    names = args.only or list(CONFIGS)
    print(
        f"CoulombGas(6, 2), beta={BETA}, device={jax.devices()[0].platform}, "
        f"steps={args.steps}, lr={args.lr} (cosine)"
    )
    cols = [
        "name",
        "params",
        "samples/s@512",
        "samples/s@4096",
        "steps/s@512",
        "train_s",
        "ess_frac",
        "bound",
        "log_z",
    ]
    print(" | ".join(cols), flush=True)
    for name in names:
        kind, hyper = CONFIGS[name]
        row = run(name, kind, hyper, args.steps, args.lr, not args.no_quality)
        print(
            " | ".join(
                f"{row[c]:.4g}" if isinstance(row.get(c), float) else str(row.get(c, "-"))
                for c in cols
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
