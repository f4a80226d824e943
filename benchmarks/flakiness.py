"""Flakiness of the statistical tests: each test's checking body on many other seeds.

Every statistical test whose checking body is a function of a seed (``_check_*(seed)`` in the
test modules) is run on seeds it was not written with; the table gives, per test, the failures,
the observed failure rate, the nominal rate implied by its tolerances, and whether the two are
consistent (P(≥ observed failures | nominal rate) ≥ 0.01, a one-sided binomial test).

Nominal rates: a two-sided 4σ check fails with probability 2(1 − Φ(4)) = 6.3e-5, a one-sided
3σ check with 1.35e-3; a coverage test fails when the covered fraction of its R replicates
leaves its band, a binomial tail computed at the predicted coverage; a test of several checks is
given the sum of their rates (a union bound). The two "before" rows run the bodies of the two
flaky tests as they were (commit 1363417) on the same seeds. The coverage rows also print the
covered fraction pooled over all seeds' replicates, against the predicted coverage.

    .venv/bin/python benchmarks/flakiness.py [--scale 1.0]

``--scale`` multiplies every seed count (0.1 for a quick look).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time

import numpy as np
from scipy.stats import binom, norm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import conftest  # noqa: E402  (the tests' shared JAX settings and compilation cache)
import stat_theory  # noqa: E402
import test_estimators_two_state as ts  # noqa: E402
import test_particle_mcmc as tpm  # noqa: E402
import test_refine as tr  # noqa: E402

from boltzgen import estimators as est  # noqa: E402

P4 = 2 * norm.sf(4.0)  # a two-sided 4σ check
P3_ONE = norm.sf(3.0)  # a one-sided 3σ check
FIRST_SEED = 1000  # the tests use seeds below 200; these are others, taken in order


# ------------------------------------------------------------------ the two tests as they were


def old_mismatched_states(seed):
    rng = np.random.default_rng(seed)
    wf, wr, exact = ts.two_gaussians(rng, 20000, 20000, mu=2.0, s=2.5, c=-1.0)
    res = est.two_state(wf, wr)
    b = res["bar"]
    assert res["jarzynski_forward"].ess < 0.01 * 20000
    assert b.extra["overlap"] < 0.5
    assert abs(b.log_z - exact) <= 4 * b.log_z_stderr
    up, lo = res["work_upper_bound"], res["work_lower_bound"]
    assert up.log_z <= exact + 3 * up.log_z_stderr
    assert lo.log_z >= exact - 3 * lo.log_z_stderr
    assert res["jarzynski_forward"].log_z >= up.log_z
    assert res["jarzynski_reverse"].log_z <= lo.log_z


def old_coverage_importance_and_reverse(seed):
    r_cover = 1000
    rng = np.random.default_rng(seed)
    w_q, w_p, log_z = ts.q_and_p_samples(rng, 400 * r_cover, s_q=1.15)
    w_q, w_p = w_q.reshape(r_cover, 400), w_p.reshape(r_cover, 400)
    fwd = [est.importance_log_z(w) for w in w_q]
    rev = [est.reverse_importance_log_z(w) for w in w_p]
    covers = {
        "importance": ts.covered_fraction(fwd, log_z),
        "reverse": ts.covered_fraction(rev, log_z),
    }
    for cover in covers.values():
        assert abs(cover - 0.683) <= 0.05
    return covers


# ------------------------------------------------------------------ nominal rates


def _coverage_rate(p, r):
    return stat_theory.coverage_failure_rate(p, p, r, stat_theory.binomial_band(p, r))


def _imp_rev_target():
    moments = stat_theory.standardised_moments(
        [ts.gaussian_weight_moments(ts.S_COVER, k) for k in (1, 2, 3, 4)]
    )
    return stat_theory.delta_method_coverage(ts.N_COVER, *moments)


def _old_coverage_rate():
    lo, hi = math.ceil((0.683 - 0.05) * 1000 - 1e-9), math.floor((0.683 + 0.05) * 1000 + 1e-9)
    one = binom.cdf(lo - 1, 1000, 0.683) + binom.sf(hi, 1000, 0.683)
    return 2 * one


def studies():
    """(name, check(seed), number of seeds, nominal failure rate, predicted coverage or None)."""
    imp_target = _imp_rev_target()
    return [
        (
            "mismatched_states (before)",
            old_mismatched_states,
            500,
            2 * P3_ONE + P4,  # the ESS < 1 % check had no stated rate
            None,
        ),
        (
            "mismatched_states",
            ts._check_mismatched_states,
            500,
            3 * P4 + ts.mismatch_forward_ess_failure_bound(20000, 200),
            None,
        ),
        (
            "coverage_importance_and_reverse (before)",
            old_coverage_importance_and_reverse,
            100,
            _old_coverage_rate(),
            {"importance": 0.683, "reverse": 0.683},
        ),
        (
            "coverage_importance_and_reverse",
            ts._check_coverage_importance_and_reverse,
            100,
            2 * _coverage_rate(imp_target, ts.R_COVER),
            {"importance": imp_target, "reverse": imp_target},
        ),
        (
            "coverage_bar",
            ts._check_coverage_bar,
            100,
            _coverage_rate(0.683, ts.R_COVER_BAR),
            0.683,
        ),
        ("ais_coverage (test_refine)", tr._check_ais_coverage, 60, _coverage_rate(0.68, 1000), ()),
        ("smc_coverage (test_refine)", tr._check_smc_coverage, 60, _coverage_rate(0.653, 500), ()),
        ("two_gaussians_within_errors", ts._check_two_gaussians, 600, 6 * P4 + 4e-5, None),
        ("mbar_ladder_within_errors", ts._check_mbar_ladder, 200, 6 * P4, None),
        ("crooks_check", ts._check_crooks, 4000, 2 * P4, None),
        (
            "reverse_importance_and_forward_ess",
            ts._check_reverse_importance_and_forward_ess,
            200,
            3 * P4,
            None,
        ),
        ("w2_gaussians (test_particle_mcmc)", tpm._check_w2_gaussians, 100, 2 * P4, None),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every seed count")
    args = parser.parse_args(argv)
    if not args.scale > 0:
        parser.error("--scale must be > 0")

    rows, pooled = [], []
    t_all = time.perf_counter()
    for name, check, n_seeds, nominal, target in studies():
        n_seeds = max(1, round(n_seeds * args.scale))
        failures, covers, messages = 0, [], []
        t0 = time.perf_counter()
        for seed in range(FIRST_SEED, FIRST_SEED + n_seeds):
            try:
                out = check(seed)
            except AssertionError as err:
                failures += 1
                first = (str(err).splitlines() or ["(assertion without message)"])[0]
                messages.append(f"seed {seed}: {first[:90]}")
                out = None  # a failed seed's covered fraction is not pooled
            if target is not None and out is not None:
                covers.append(out)
        wall = time.perf_counter() - t0
        p_value = float(binom.sf(failures - 1, n_seeds, nominal)) if failures else 1.0
        rows.append((name, n_seeds, failures, failures / n_seeds, nominal, p_value, wall))
        if covers:
            pooled.append((name, covers, target))
        for m in messages[:3]:
            print(f"  [{name}] {m}", flush=True)
        print(f"  [{name}] done: {failures}/{n_seeds} failed, {wall:.0f} s", flush=True)

    print()
    head = (
        f"{'test':<42}{'seeds':>6}{'fail':>6}{'observed':>10}{'nominal':>10}"
        f"{'P(≥obs)':>10}  consistent"
    )
    print(head)
    print("-" * len(head))
    for name, n, k, rate, nominal, p_value, _ in rows:
        ok = "yes" if p_value >= 0.01 else "NO"
        print(f"{name:<42}{n:>6}{k:>6}{rate:>10.3g}{nominal:>10.2g}{p_value:>10.3g}  {ok}")
    print()
    print("pooled covered fraction over all seeds (coverage tests), against the prediction:")
    for name, covers, target in pooled:
        if isinstance(covers[0], dict):  # several estimators, one predicted coverage each
            series = [(f"{name} [{k}]", [c[k] for c in covers], target[k]) for k in covers[0]]
        elif isinstance(covers[0], tuple):  # (coverage, its prediction from this seed's data)
            series = [(name, [c for c, _ in covers], float(np.mean([p for _, p in covers])))]
        else:
            series = [(name, covers, target)]
        for label, vals, want in series:
            vals = np.asarray(vals, float)
            se = vals.std(ddof=1) / math.sqrt(vals.size) if vals.size > 1 else math.nan
            print(f"  {label}: {vals.mean():.4f} ± {se:.4f} (predicted {want:.4f})")
    print(f"\ntotal wall time {time.perf_counter() - t_all:.0f} s")
    shutil.rmtree(os.environ.get(conftest._CACHE_ENV, ""), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
