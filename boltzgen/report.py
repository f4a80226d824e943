"""Plots from a results file (matplotlib, optional extra ``boltzgen[plot]``)."""

from __future__ import annotations

import numpy as np

from boltzgen.results import Result


def plot_training(result: Result, path: str) -> None:
    """Plot the training loss (variational βF) and batch ESS fraction against step, to a PNG.

    The exact βF (when known) and the best estimate are drawn as horizontal lines.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover
        raise ImportError("plotting needs matplotlib: pip install 'boltzgen[plot]'") from err
    h = result.train_history
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    if "loss" in h and len(h["loss"]):
        steps = np.arange(1, len(h["loss"]) + 1)
        a.plot(steps, h["loss"], lw=0.6, color="C0", label="batch variational βF")
        lo, hi = np.percentile(h["loss"][len(h["loss"]) // 2 :], [1, 99])
        a.set_ylim(lo - (hi - lo), hi + 2 * (hi - lo))
        b.plot(steps, h["ess_fraction"], lw=0.6, color="C1")
    best = result.best()
    if best is not None:
        a.axhline(best.beta_f, color="k", ls="--", lw=0.8, label=f"{best.method} βF")
    if result.exact_log_z is not None:
        a.axhline(-result.exact_log_z, color="C3", ls=":", lw=1.0, label="exact βF")
    a.set_xlabel("step")
    a.set_ylabel("βF")
    a.legend(fontsize=8)
    b.set_xlabel("step")
    b.set_ylabel("batch ESS fraction")
    b.set_ylim(0, 1)
    fig.suptitle(f"{result.system.get('kind')} β = {result.beta:g}")
    fig.savefig(path, dpi=120)
    plt.close(fig)
