"""Running a ``lax.scan`` in chunks: compiled ahead of time, chains on the device, progress bar.

A long Monte Carlo run is one scan over steps. It is cut into chunks so that a progress bar can
advance between them; the chunk sizes are equal (:func:`split_evenly`), so the chunk function
is compiled once, and the carry never leaves the device between chunks. Splitting a scan into
chunks does not change its numbers.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from tqdm.auto import tqdm


def split_evenly(total: int, most: int = 10) -> list[int]:
    """``total`` as equal chunks (the largest divisor ≤ ``most`` of them): one compilation."""
    if total <= 0:
        return []
    parts = max(d for d in range(1, min(total, most) + 1) if total % d == 0)
    return [total // parts] * parts


def progress_bar(progress: bool | str, total: int, label: str, unit: str = "step"):
    """A tqdm bar of ``total`` units, labelled ``progress`` if a string else ``label``.

    Disabled when ``progress`` is falsy (it then still accepts updates).
    """
    return tqdm(
        total=total,
        desc=progress if isinstance(progress, str) else label,
        disable=not progress,
        unit=unit,
        dynamic_ncols=True,
    )


def _rows(xs, start: int, stop: int):
    return jax.tree.map(lambda a: a[start:stop], xs)


def compile_scans(body, carry, xs, sizes) -> dict:
    """``{size: lax.scan(body) over size steps}`` for each size in ``sizes``, compiled.

    Each is lowered for ``carry`` (arrays or shapes) and the leading ``size`` rows of ``xs``.
    """
    return {
        s: jax.jit(lambda c, x: jax.lax.scan(body, c, x)).lower(carry, _rows(xs, 0, s)).compile()
        for s in set(sizes)
        if s > 0
    }


def run_scans(compiled: dict, carry, xs, sizes, *, bar=None, units_per_step: int = 1):
    """Run the compiled chunks of :func:`compile_scans` over consecutive rows of ``xs``.

    With a ``bar``, waits for each chunk and advances the bar by ``size · units_per_step``.

    Returns:
        ``(carry, outs)``, ``outs`` the list of per-chunk scan outputs.
    """
    outs = []
    start = 0
    for s in sizes:
        if s:
            carry, out = compiled[s](carry, _rows(xs, start, start + s))
            start += s
            if bar is not None:
                jax.block_until_ready(carry)
                bar.update(s * units_per_step)
            outs.append(out)
    return carry, outs


def run_chunked(init_fn, init_args, body, xs, *, progress=False, label="scan"):
    """Run ``state = init_fn(*init_args)`` then ``lax.scan(body, state, xs)`` in equal chunks.

    At most 25 chunks (:func:`split_evenly`). Both functions are compiled ahead of time (once:
    the chunk function is traced exactly once, counted in the returned ``n_traces``); the state
    stays on the device between chunks, and a progress bar advances between them.

    Returns:
        ``(state, infos, wall_time, compile_time, n_traces)`` with ``infos`` the per-step Info
        pytree concatenated over chunks as NumPy arrays.
    """
    n_steps = jax.tree.leaves(xs)[0].shape[0]
    sizes = split_evenly(n_steps, 25)
    traces = [0]

    def run_chunk(state, xs_chunk):
        traces[0] += 1
        return jax.lax.scan(body, state, xs_chunk)

    t0 = time.perf_counter()
    init_c = jax.jit(init_fn).lower(*init_args).compile()
    state_shape = jax.eval_shape(init_fn, *init_args)
    chunk_c = {sizes[0]: jax.jit(run_chunk).lower(state_shape, _rows(xs, 0, sizes[0])).compile()}
    t1 = time.perf_counter()
    state = jax.block_until_ready(init_c(*init_args))
    bar = progress_bar(progress, n_steps, label)
    state, infos = run_scans(chunk_c, state, xs, sizes, bar=bar if progress else None)
    bar.close()
    state = jax.block_until_ready(state)
    t2 = time.perf_counter()
    infos = jax.device_get(infos)
    info = jax.tree.map(lambda *a: np.concatenate([np.asarray(x) for x in a]), *infos)
    return state, info, t2 - t1, t1 - t0, traces[0]
