"""The non-finite-energy policy (docs/design.md): a NaN or +inf energy is zero target density.

The case of the issue that found the old behaviour: a 2-D standard Gaussian whose energy is
+inf for x₀ > 1 (here also NaN for x₁ > 1.5), so Z = 2π Φ(1) Φ(1.5). Masking those samples
out of the reverse-KL loss rewarded q for moving into the region (the bad share of a batch
grew from 20/128 to ≈ 120/128 and the "variational upper bound" came out 2.7 nats *below*
βF). Every statistical tolerance below is a number of standard errors of the estimate tested.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import h5py
import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import norm

import boltzgen as bg
from boltzgen.mcmc import neural_mcmc
from boltzgen.stages import NeuralMCMC
from boltzgen.systems import Gaussian
from boltzgen.train import Trainer

TRUE_LOG_Z = math.log(2 * math.pi) + float(norm.logcdf(1.0) + norm.logcdf(1.5))


class _Truncated(Gaussian):
    """N(0, I₂) with E = +inf for x₀ > 1 and E = NaN for x₁ > 1.5 (``nan`` = True)."""

    nan: bool = True

    def _energy(self, x):
        e = jnp.where(x[0] > 1.0, jnp.inf, super()._energy(x))
        return jnp.where(x[1] > 1.5, jnp.nan, e) if self.nan else e

    def exact_log_z(self, beta):
        if beta != 1.0:
            return None
        return TRUE_LOG_Z if self.nan else TRUE_LOG_Z - float(norm.logcdf(1.5))


def _truncated(nan=True):
    g = Gaussian.isotropic(2)
    return _Truncated(g.mean, g.covariance, nan=nan)


def test_training_moves_out_of_the_forbidden_region_and_estimates_stay_right():
    r = bg.run(
        _truncated(),
        1.0,
        trainer=Trainer(steps=100, batch_size=128),
        estimation=bg.Estimation(n_samples=4096, n_boot=0),
        stages=(NeuralMCMC(n_chains=64, n_steps=20, path_chains=0),),  # paths: test_paths.py
        reference=None,
        progress=False,
    )
    bad = np.asarray(r.train_history["n_nonfinite"])
    # P_q(bad) starts near 1 − Φ(1)Φ(1.5) ≈ 0.22 (28 of 128) and must fall, not grow (under the
    # old masked loss it grows to 128 of 128: test_masked_loss_moves_into_the_region).
    assert bad[:5].mean() > 10 and bad[-50:].mean() < 0.25 * bad[:5].mean()
    v = r.estimates["variational"]
    assert v.beta_f >= -TRUE_LOG_Z - 4 * v.beta_f_stderr  # an upper bound on βF
    for name in ("importance", "bar", "refined_nmcmc"):
        e = r.estimates[name]
        assert np.isfinite(e.log_z_stderr) and e.log_z_stderr > 0, name
        assert abs(e.log_z - TRUE_LOG_Z) < 4 * e.log_z_stderr, (name, e.log_z, e.log_z_stderr)
    assert r.problems() == []
    # every estimate of q's samples reports the zero-weight samples in the one attribute
    n_bad_q = int(np.sum(~np.isfinite(r.samples["log_w"])))
    assert r.estimates["importance"].n_nonfinite == n_bad_q


def test_masked_loss_moves_into_the_region(monkeypatch):
    """The check above fails for the old masked loss: the test can tell the two apart."""
    from boltzgen.train import _losses

    def masked(sampler, energy_fn, beta, *, key, batch_size):
        x, log_q = sampler.sample_and_log_prob(batch_size, key=key)
        a = beta * jax.vmap(energy_fn)(x) + log_q
        fin = jnp.isfinite(a)
        loss = jnp.sum(jnp.where(fin, a, 0.0)) / jnp.maximum(jnp.sum(fin), 1)
        return loss, dict(
            n_nonfinite=jnp.sum(~fin).astype(jnp.int32),
            log_w=jax.lax.stop_gradient(jnp.where(fin, -a, -jnp.inf)),
        )

    system = _truncated(nan=False)
    q = bg.flows.make_sampler("realnvp", system, key=jax.random.key(0))  # the default sampler
    task = bg.train.ReverseKL().energy_task(q, system.energy, 1.0)
    monkeypatch.setattr(_losses, "reverse_kl_loss", masked)
    st = Trainer(steps=100, batch_size=128).fit(
        bg.train.ReverseKL(), task, key=jax.random.key(1), progress=False
    )
    bad = np.asarray(st.history["n_nonfinite"])
    assert bad[-20:].mean() > 2 * bad[:5].mean()  # the bad share grows under the masked loss


def _gaussian_q(n_dim=2):
    def sample_q(key, n):
        x = jax.random.normal(key, (n, n_dim))
        return x, -0.5 * jnp.sum(x**2, axis=1) - 0.5 * n_dim * math.log(2 * math.pi)

    def log_q(x):
        return -0.5 * jnp.sum(x**2) - 0.5 * n_dim * math.log(2 * math.pi)

    return sample_q, log_q


def test_neural_mcmc_never_stays_in_a_nonfinite_state():
    system = _truncated()
    sample_q, log_q = _gaussian_q()
    res = neural_mcmc(
        jax.random.key(3),
        sample_q=sample_q,
        log_q=log_q,
        log_density=lambda x: -system.energy(x),
        n_chains=256,
        n_steps=10,
    )
    d = res.diagnostics
    # about 0.22 · 256 ≈ 56 chains start in the region; all leave it
    assert d["n_nonfinite_initial"] > 20 and d["n_nonfinite_final"] == 0
    assert np.all(res.positions[:, 0] <= 1.0) and np.all(res.positions[:, 1] <= 1.5)
    assert np.all(np.isfinite(d["final_log_weights"]))
    assert d["n_nonfinite_proposals"] > 0
    est, _ = res.to_estimate()
    assert est.n_nonfinite == d["n_nonfinite_proposals"]
    # q = N(0, I): the proposals' importance estimate of ln Z = ln 2π Φ(1) Φ(1.5)
    assert abs(est.log_z - TRUE_LOG_Z) < 4 * est.log_z_stderr


def test_variational_bound_with_zero_density_samples_is_a_bound():
    # q = N(0, I) itself: u + ln q = ln(1/2π) where E is finite, so the restricted bound is
    # exact in expectation: βF_q' = −ln(2π) − ln q(F) = βF (q' ∝ p). The masked mean would
    # claim −ln 2π.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200_000, 2))
    w = np.where(x[:, 0] > 1.0, -np.inf, math.log(2 * math.pi))
    w = np.where(x[:, 1] > 1.5, np.nan, w)
    v = bg.estimators.variational_bound(w)
    assert v.n_nonfinite == int(np.sum((x[:, 0] > 1.0) | (x[:, 1] > 1.5)))
    assert "nonfinite" in v.flags
    assert abs(v.beta_f - (-TRUE_LOG_Z)) < 4 * v.beta_f_stderr
    assert v.beta_f - (-math.log(2 * math.pi)) > 100 * v.beta_f_stderr  # not the masked mean


def test_nonfinite_flag_threshold_and_best_passes_over_it():
    from boltzgen.estimators import MAX_TRUSTED_NONFINITE_SHARE, Estimate

    n = 1000
    k = int(MAX_TRUSTED_NONFINITE_SHARE * n)
    assert "nonfinite" not in Estimate("a", 0.0, 0.1, n_samples=n, n_nonfinite=k).flags
    flagged = Estimate("b", 0.0, 0.01, n_samples=n, n_nonfinite=k + 1)
    assert "nonfinite" in flagged.flags and not flagged.trusted


def _spec(tmp_path, lr):
    spec = tmp_path / "g.toml"
    spec.write_text(
        "[system]\nkind = 'gaussian'\ndim = 2\n[ensemble]\nbeta = 1.0\n"
        "[sampler]\nkind = 'realnvp'\nn_layers = 2\nhidden = 8\n"
        f"[train]\nsteps = 5\nbatch_size = 32\nlearning_rate = {lr}\n"
        "[estimate]\nn_samples = 512\n[refine]\nmethod = 'none'\n"
    )
    return spec


def test_cli_exit_code_3_when_the_answer_is_not_usable(tmp_path):
    """Every sample non-finite (a learning rate of 1e12): the file is written, exit code 3."""
    out = tmp_path / "o.h5"
    p = subprocess.run(
        [sys.executable, "-m", "boltzgen.cli", "run", str(_spec(tmp_path, 1e12))]
        + ["--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 3, p.stderr
    assert "not usable" in p.stderr.splitlines()[-1]
    with h5py.File(out) as f:
        flags = str(f["estimates/importance"].attrs["flags"])
        assert "nonfinite" in flags
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]
