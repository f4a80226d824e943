"""Autocorrelation diagnostics of Monte Carlo traces: τ_int, effective sample size, split-R̂.

All use numpyro's estimators (Geyer's initial monotone sequence on the autocorrelation pooled
over chains through the between/within variance, as in Stan).
"""

from __future__ import annotations

import math

import numpy as np
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin


def integrated_autocorrelation_time(traces) -> float:
    r"""τ_int of a scalar observable from several chains, ``traces`` of shape ``(T, n_chains)``.

    τ_int = 1 + 2 Σ_{t≥1} ρ(t) with Geyer's initial monotone sequence truncation, computed with
    ``numpyro.diagnostics.effective_sample_size`` (which pools chains through the between/within
    variance, as in Stan): τ_int = n_chains · T / ESS. τ_int = 1 for independent draws.
    """
    t = np.asarray(traces, np.float64)
    if t.ndim != 2 or t.shape[0] < 4:
        return math.nan
    if not np.all(np.isfinite(t)) or np.all(np.var(t, axis=0) == 0):
        return math.nan
    ess = float(effective_sample_size(t.T))
    return float(t.size / ess) if ess > 0 else math.inf


def pooled_ess(chains) -> float:
    """Effective sample size (numpyro) of a scalar, ``chains`` of shape ``(n_chains, n_draws)``."""
    return float(effective_sample_size(chains[:, :, None])[0])


def trace_ess(values) -> float:
    """Effective sample size of a scalar trace of shape ``(n_records, n_chains)``.

    numpyro's ``effective_sample_size`` (Geyer's initial monotone sequence on the
    autocorrelation pooled over chains). The standard error of the mean is then
    std / √ESS. Returns the total over chains; ``n_records · n_chains`` at most about.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"trace_ess expects shape (n_records, n_chains), got {v.shape}")
    if v.shape[0] < 4:
        return float("nan")
    if not np.all(np.isfinite(v)) or np.ptp(v) == 0:
        return float("nan")
    return pooled_ess(v.T)


def trace_rhat(values) -> float:
    """Split-R̂ of a scalar trace of shape ``(n_records, n_chains)`` (numpyro)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"trace_rhat expects shape (n_records, n_chains), got {v.shape}")
    if v.shape[0] < 4 or not np.all(np.isfinite(v)) or np.ptp(v) == 0:
        return float("nan")
    return float(split_gelman_rubin(v.T[:, :, None])[0])
