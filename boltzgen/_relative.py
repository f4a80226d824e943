r"""ln(Z_B/Z_A) between two particle ensembles by FEAT along a learned interpolant A → B."""

from __future__ import annotations

import math

import jax

from boltzgen import estimators as est
from boltzgen._keys import RunKeys
from boltzgen.stages import FEAT
from boltzgen.train import Interpolant, Trainer
from boltzgen.train._data import inefficiency


def relative_free_energy(
    system_a,
    beta_a: float,
    system_b,
    beta_b: float,
    *,
    objective: Interpolant = Interpolant(),
    trainer: Trainer = Trainer(),
    feat: FEAT = FEAT(),
    seed: int = 0,
    progress: bool = True,
) -> dict[str, est.Estimate]:
    r"""ln(Z_B/Z_A) between two particle ensembles by FEAT along a learned interpolant A → B.

    Monte Carlo samples of p_A ∝ e^{−β_A E_A} and p_B ∝ e^{−β_B E_B} (``objective.data``) train a
    data → data stochastic interpolant (velocity b and denoiser η); escorted Euler–Maruyama
    paths then run forward from held-out samples of A and backward from held-out samples of B,
    and their path log-weights A_F, A_R give ``feat_forward``, ``feat_reverse``, ``feat_bar``
    and the bounds ``feat_upper_bound`` / ``feat_lower_bound``: every ``log_z`` is
    ln(Z_B/Z_A), exact in expectation for any learned fields. Two temperatures of one system,
    or two couplings (e.g. a Coulomb gas at λ = 0 and λ = 1), are typical uses.

    Args:
        system_a: state A's system.
        beta_a: state A's inverse temperature.
        system_b: state B's system (same event shape (N, d)).
        beta_b: state B's inverse temperature.
        objective: the interpolant's fields, pairing and Monte Carlo data (per state; the
            ``n_holdout`` samples start the paths).
        trainer: the training loop's settings.
        feat: the paths (``paths``, ``steps``, ``eps``).
        seed: the seed of the data, the weights and the paths.
        progress: progress bars.

    Returns:
        method → :class:`~boltzgen.estimators.Estimate` of ln(Z_B/Z_A); the Monte Carlo cost is
        in ``extra["n_energy_evals_data"]``.
    """
    if tuple(system_a.event_shape) != tuple(system_b.event_shape):
        raise ValueError(
            f"states A and B need the same event shape, got {tuple(system_a.event_shape)} and "
            f"{tuple(system_b.event_shape)}"
        )
    invariant = [bool(getattr(s, "translation_invariant", False)) for s in (system_a, system_b)]
    if invariant[0] != invariant[1]:
        raise ValueError("states A and B must both be translation-invariant or both not")
    for s in (system_a, system_b):
        objective.data.check(s)
    n = min(feat.paths, objective.data.n_holdout)
    if n < 2:
        raise ValueError("relative_free_energy needs data.n_holdout >= 2")
    k_a, k_b, k_init, k_train, k_paths = jax.random.split(RunKeys(seed).root, 5)
    data_a = objective.data.sample(system_a, beta_a, key=k_a, progress=progress)
    data_b = objective.data.sample(system_b, beta_b, key=k_b, progress=progress)
    model = objective.build(system_a.event_shape, key=k_init, source="data", zero_com=invariant[0])
    task = objective.pair_task(model, system_a, data_a.train, data_b.train)
    interp = trainer.fit(objective, task, key=k_train, progress=progress).model
    dtype = jax.numpy.float32
    out = feat.run(
        interp,
        jax.numpy.asarray(data_a.holdout[:n], dtype),
        jax.numpy.asarray(data_b.holdout[:n], dtype),
        log_density_a=lambda x: -beta_a * system_a.energy(x),
        log_density_b=lambda x: -beta_b * system_b.energy(x),
        key=k_paths,
    )
    evals = float(data_a.n_energy_evals + data_b.n_energy_evals)
    g = math.sqrt(inefficiency(data_a, data_b))
    import dataclasses

    return {
        m: dataclasses.replace(
            e, extra={**e.extra, "n_energy_evals_data": evals}
        ).with_stderr_inflation(g)
        for m, e in out.items()
    }
