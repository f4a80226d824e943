"""Training-step FLOP rate of each sampler against this machine's matmul rate on the same shapes.

For each sampler, one reverse-KL training step (batch 256, CoulombGas(6, 2) at β = 10, d = 12:
samples of q with exact log q, the loss mean(βE + ln q), its gradient and an Adam update) is
timed as the library runs it, and its floating-point operations are counted by XLA's cost
analysis. XLA counts a loop body once, and the CNF's solver (diffrax) is a loop; so the CNF's
FLOPs are counted on the same step with the fixed-step RK4 written out step by step (the same
arithmetic, no loop), which is also timed ("unrolled"). The CNF's flow-matching step (the
first, cheap phase of the default training) has no loop.

The matmul reference: every ``dot_general`` of the (loop-free) step is read off its lowered
program with its shapes; each distinct shape is timed alone as a batched matmul (enough copies
to amortise the dispatch), and the reference rate is Σ dot FLOPs / Σ their BLAS times — the
rate this machine's BLAS reaches on exactly the step's matrix products. The table gives the
achieved rate (all counted FLOPs / step time), its ratio to that reference, the share of the
FLOPs that are matrix products, and a large square GEMM for scale.

    python benchmarks/flop_rate.py [--only realnvp cnf-radii ...] [--repeats 20]
"""

from __future__ import annotations

import argparse
import math
import re
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import boltzgen.flows._cnf as cnf_module
from boltzgen.flows import RealNVP, make_sampler
from boltzgen.systems import CoulombGas
from boltzgen.train._matching import flow_matching_loss

BETA = 10.0
BATCH = 256
SYSTEM = CoulombGas(6, 2)


def _samplers():
    key = jax.random.key(0)
    return {
        # The comparison of the issue: an 8-layer RealNVP of similar width (on the flattened
        # 12 coordinates; not a valid sampler of identical particles in 2-D, timed only).
        "realnvp": RealNVP(SYSTEM.event_shape, key=key, n_layers=8, hidden=32),
        "equivariant": make_sampler("equivariant", SYSTEM, key=key),
        "cnf-rbf": make_sampler("cnf", SYSTEM, key=key, field="rbf"),
        "cnf-radii": make_sampler("cnf", SYSTEM, key=key, field="radii"),
    }


def _integrate_unrolled(vector_field, y0, t0, t1, *, solver, n_steps):
    """The classical RK4 of boltzgen.flows._ode written out step by step (no loop)."""
    if solver != "rk4":
        raise SystemExit(f"unrolled counting needs the rk4 solver, got {solver!r}")
    h = (t1 - t0) / n_steps

    def axpy(y, a, k):
        return jax.tree.map(lambda u, v: u + a * v, y, k)

    y = y0
    for i in range(n_steps):
        t = t0 + i * h
        k1 = vector_field(t, y, None)
        k2 = vector_field(t + h / 2, axpy(y, h / 2, k1), None)
        k3 = vector_field(t + h / 2, axpy(y, h / 2, k2), None)
        k4 = vector_field(t + h, axpy(y, h, k3), None)
        y = jax.tree.map(
            lambda u, a, b, c, d: u + h / 6 * (a + 2 * b + 2 * c + d), y, k1, k2, k3, k4
        )
    return y


def _reverse_kl_step(q):
    """A jitted reverse-KL step (loss, gradient, Adam) and its arguments."""
    opt = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(1e-3))
    params, static = eqx.partition(q, eqx.is_inexact_array)
    opt_state = opt.init(params)
    energy = jax.vmap(SYSTEM.energy)

    def step(params, opt_state, key):
        def loss(p):
            x, log_q = eqx.combine(p, static).sample_and_log_prob(BATCH, key=key)
            return jnp.mean(BETA * energy(x) + log_q)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step, (params, opt_state, jax.random.key(1))


def _flow_matching_step(q):
    """A jitted flow-matching step of the CNF inside ``q`` on Gaussian stand-in data."""
    cnf = getattr(q, "inner", q)
    opt = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(1e-3))
    params, static = eqx.partition(cnf, eqx.is_inexact_array)
    opt_state = opt.init(params)
    k0, k1, k2 = jax.random.split(jax.random.key(2), 3)
    shape = (BATCH, *cnf.event_shape)
    x0 = cnf.project(jax.random.normal(k0, shape))
    x1 = cnf.project(1.5 * jax.random.normal(k1, shape))
    t = jax.random.uniform(k2, (BATCH,))

    def step(params, opt_state, x0, x1, t):
        def loss(p):
            return flow_matching_loss(eqx.combine(p, static), x0, x1, t)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step, (params, opt_state, x0, x1, t)


def _time(fn, args, repeats: int) -> float:
    """Median seconds of one call of the jitted ``fn`` (compiled and warmed up first)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _flops(fn, args) -> tuple[float, str]:
    lowered = jax.jit(fn).lower(*args)
    cost = lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"]), lowered.as_text()


_DOT = re.compile(
    r"stablehlo\.dot_general\s+\S+,\s*\S+,\s*(?:batching_dims\s*=\s*\[([\d, ]*)\]\s*x\s*"
    r"\[([\d, ]*)\],\s*)?contracting_dims\s*=\s*\[([\d, ]*)\]\s*x\s*\[([\d, ]*)\].*?:\s*"
    r"\(tensor<([^>]*)>,\s*tensor<([^>]*)>\)"
)


def _dims(text: str) -> list[int]:
    return [int(v) for v in text.replace(" ", "").split(",") if v]


def _shape(text: str) -> tuple[list[int], str]:
    parts = text.split("x")
    return [int(p) for p in parts[:-1]], parts[-1]


def dot_shapes(mlir: str) -> dict[tuple[int, int, int, int, str], int]:
    """(batch, M, K, N, dtype) → count, of every dot_general in a lowered program."""
    out: dict[tuple[int, int, int, int, str], int] = {}
    for m in _DOT.finditer(mlir):
        lb, rb, lc, rc = (_dims(g or "") for g in m.groups()[:4])
        lhs, dtype = _shape(m.group(5))
        rhs, _ = _shape(m.group(6))
        b = math.prod(lhs[i] for i in lb)
        k = math.prod(lhs[i] for i in lc)
        mm = math.prod(s for i, s in enumerate(lhs) if i not in lb and i not in lc)
        n = math.prod(s for i, s in enumerate(rhs) if i not in rb and i not in rc)
        key = (b, mm, k, n, dtype)
        out[key] = out.get(key, 0) + 1
    return out


def blas_time(shape: tuple[int, int, int, int, str], repeats: int) -> float:
    """Seconds of one (batch, M, K) @ (batch, K, N) product, timed over many copies at once."""
    b, m, k, n, dtype = shape
    flops = 2.0 * b * m * k * n
    copies = max(1, int(2e8 // max(flops, 1.0)))
    dt = {"f32": jnp.float32, "f64": jnp.float64}.get(dtype, jnp.float32)
    ka, kb = jax.random.split(jax.random.key(3))
    a = jax.random.normal(ka, (copies * b, m, k), dt)
    c = jax.random.normal(kb, (copies * b, k, n), dt)
    return _time(jax.jit(jnp.matmul), (a, c), repeats) / copies


def measure(name: str, q, kind: str, repeats: int) -> dict:
    """One table row: sampler ``name``'s ``kind`` step ("reverse_kl" or "flow_matching")."""
    make = _reverse_kl_step if kind == "reverse_kl" else _flow_matching_step
    step, args = make(q)
    t_lib = _time(jax.jit(step), args, repeats)
    original = cnf_module.integrate
    cnf_module.integrate = _integrate_unrolled
    try:
        step_u, args_u = make(q)
        flops, mlir = _flops(step_u, args_u)
        t_unrolled = (
            _time(jax.jit(step_u), args_u, repeats) if "stablehlo.while" not in mlir else t_lib
        )
    finally:
        cnf_module.integrate = original
    dots = dot_shapes(mlir)
    dot_flops = sum(2.0 * b * m * k * n * c for (b, m, k, n, _), c in dots.items())
    t_blas = sum(blas_time(s, repeats) * c for s, c in dots.items())
    return dict(
        name=name,
        kind=kind,
        loop_free="stablehlo.while" not in mlir,
        step_s=t_lib,
        unrolled_s=t_unrolled,
        gflop=flops / 1e9,
        rate=flops / t_lib / 1e9,
        dot_share=dot_flops / flops if flops else float("nan"),
        blas_rate=dot_flops / t_blas / 1e9 if t_blas else float("nan"),
        n_dot_shapes=len(dots),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="subset of the samplers")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    samplers = _samplers()
    names = args.only or list(samplers)
    n = 1024
    a = jax.random.normal(jax.random.key(4), (n, n), jnp.float32)
    peak = 2.0 * n**3 / _time(jax.jit(jnp.matmul), (a, a), args.repeats) / 1e9
    print(f"jax {jax.__version__}, {jax.devices()[0]}; square f32 GEMM {n}²: {peak:.1f} GFLOP/s")
    print(
        "| sampler | step | steps/s | unrolled steps/s | GFLOP per step | achieved GFLOP/s | "
        "matmul share of FLOPs | BLAS GFLOP/s on the step's matmul shapes | achieved / BLAS |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        kinds = ["reverse_kl"] + (["flow_matching"] if name.startswith("cnf") else [])
        for kind in kinds:
            r = measure(name, samplers[name], kind, args.repeats)
            print(
                f"| {name} | {kind} | {1 / r['step_s']:.2f} | {1 / r['unrolled_s']:.2f} | "
                f"{r['gflop']:.3g} | {r['rate']:.2f} | {100 * r['dot_share']:.0f} % | "
                f"{r['blas_rate']:.1f} | {100 * r['rate'] / r['blas_rate']:.0f} % |",
                flush=True,
            )


if __name__ == "__main__":
    main()
