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


def plot_curve(result: Result, path: str) -> None:
    """Plot a β-conditioned run's free-energy curve to a PNG.

    Left: βF(β)/N from importance sampling (error bars) and the variational upper bound, with the
    exact curve where known. Right: the deviation from exact in units of the standard error
    (|Δ/σ| ≤ 3 band), or the relative standard error when no exact value is known.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover
        raise ImportError("plotting needs matplotlib: pip install 'boltzgen[plot]'") from err
    c = result.curve
    if not c:
        raise ValueError("this results file has no /curve (not a β-conditioned run)")
    sysd = result.system
    n = sysd.get("n_spins") or (sysd["L"] ** 2 if "L" in sysd else 1)
    b = np.asarray(c["beta"])
    order = np.argsort(b)
    b = b[order]
    lz, se = np.asarray(c["log_z"])[order], np.asarray(c["log_z_stderr"])[order]
    var = np.asarray(c["variational_beta_f"])[order]
    ex = np.asarray(c["exact_log_z"])[order]
    fig, (a, r) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    if np.all(np.isfinite(ex)):
        a.plot(b, -ex / n, "-", color="C3", lw=1.0, label="exact")
    a.plot(b, var / n, "--", color="C1", lw=1.0, label="variational bound")
    a.errorbar(b, -lz / n, yerr=se / n, fmt="o", ms=3, color="C0", label="importance sampling")
    a.set_xlabel("β")
    a.set_ylabel("βF / N")
    a.legend(fontsize=8)
    if np.all(np.isfinite(ex)):
        r.axhspan(-3, 3, color="0.9")
        r.plot(b, (lz - ex) / se, "o", ms=3, color="C0")
        r.set_ylabel("(ln Z − exact) / stderr")
    else:
        r.semilogy(b, se / np.abs(lz), "o", ms=3, color="C0")
        r.set_ylabel("relative stderr of ln Z")
    r.set_xlabel("β")
    kind = sysd.get("kind")
    fig.suptitle(f"{kind} " + " ".join(f"{k}={v}" for k, v in sysd.items() if k != "kind"))
    fig.savefig(path, dpi=120)
    plt.close(fig)
