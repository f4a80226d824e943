r"""Monte Carlo training data for the data-based objectives: equilibrium samples of p by HMC/MALA.

A data objective (flow matching, stochastic interpolant) owns an :class:`HMCData` that says how
its samples of p are made; the held-out part of the same samples feeds the stages that need
samples of p (:class:`boltzgen.stages.HeldOutData`, the reverse FEAT paths).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import jax
import numpy as np

from boltzgen import _checks


@dataclass(frozen=True)
class MonteCarloData:
    """Samples of p split into a training and a held-out set, with what they cost.

    Attributes:
        train: training samples, shape (n_samples, *event_shape).
        train_energy: their energies E(x).
        holdout: held-out samples, shape (n_holdout, *event_shape).
        holdout_energy: their energies.
        n_records: states recorded by the chains (before the split).
        n_energy_evals: energy + gradient evaluations of the chains.
        wall_time: seconds.
        acceptance: mean acceptance of the moves.
        step_size: the adapted step size.
        energy_ess: effective sample size of the recorded energy traces (all chains).
        energy_rhat: split-R̂ of the chains' energy traces.
    """

    train: np.ndarray
    train_energy: np.ndarray
    holdout: np.ndarray
    holdout_energy: np.ndarray
    n_records: int
    n_energy_evals: int
    wall_time: float
    acceptance: float
    step_size: float
    energy_ess: float
    energy_rhat: float

    def inefficiency(self) -> float:
        """G = records / ESS of the energy trace (≥ 1): the chains' correlation factor."""
        return max(1.0, self.n_records / self.energy_ess) if self.energy_ess > 0 else 1.0


def inefficiency(*data: MonteCarloData) -> float:
    """The worst :meth:`MonteCarloData.inefficiency` over ``data``."""
    return max([1.0] + [d.inefficiency() for d in data])


@dataclass(frozen=True)
class HMCData:
    """Equilibrium samples of p by tuned HMC or MALA chains (zero centre of mass where needed).

    ``n_chains`` chains adapt their step size for ``n_warmup`` moves, then record every
    ``thin``-th state until ``n_samples + n_holdout`` states are recorded; the records are
    shuffled (chains and times mixed) and split into training and held-out sets.

    Attributes:
        n_samples: training samples of p.
        n_holdout: held-out samples of p (lower bound, reverse IS, BAR, reverse FEAT paths).
        n_chains: parallel chains.
        kernel: ``"hmc"`` or ``"mala"``.
        n_leapfrog: leapfrog steps per HMC move.
        n_warmup: step-size adaptation moves before recording.
        thin: moves between recorded states.
    """

    n_samples: int = 8192
    n_holdout: int = 4096
    n_chains: int = 256
    kernel: Literal["hmc", "mala"] = "hmc"
    n_leapfrog: int = 10
    n_warmup: int = 1000
    thin: int = 20

    def __post_init__(self):
        for name in ("n_samples", "n_chains", "n_leapfrog", "thin"):
            _checks.integer(name, getattr(self, name), 1)
        for name in ("n_holdout", "n_warmup"):
            _checks.integer(name, getattr(self, name), 0)
        _checks.choice("kernel", self.kernel, ("hmc", "mala"))

    def check(self, system) -> None:
        """Raise ValueError unless ``system`` is a particle system (configurations (N, d))."""
        shape = tuple(system.event_shape)
        if len(shape) != 2 or getattr(system, "discrete", False):
            raise ValueError(
                f"Monte Carlo training data need a particle system (configurations (N, d)); "
                f"{system.kind!r} has event shape {shape}"
            )

    def memory_bytes(self, system) -> int:
        """Bytes of the recorded samples (float32), for the memory check before a run."""
        return 4 * (self.n_samples + self.n_holdout) * int(np.prod(system.event_shape))

    def sample(self, system, beta: float, *, key, progress: bool = True) -> MonteCarloData:
        """Run the chains and return the split samples with their cost."""
        from boltzgen.mcmc._particles import particle_mcmc

        n_total = self.n_samples + self.n_holdout
        per_chain = math.ceil(n_total / self.n_chains)
        k_run, k_perm = jax.random.split(key)
        res = particle_mcmc(
            system,
            beta,
            key=k_run,
            n_chains=self.n_chains,
            n_steps=per_chain * self.thin,
            kernel=self.kernel,
            n_leapfrog=self.n_leapfrog if self.kernel == "hmc" else None,
            n_warmup=self.n_warmup,
            thin=self.thin,
            progress="mcmc data" if progress else False,
        )
        shape = tuple(system.event_shape)
        x = np.asarray(res.flat_samples).reshape(-1, *shape)
        e = np.asarray(res.flat_energies)
        perm = np.asarray(jax.random.permutation(k_perm, x.shape[0]))[:n_total]
        x, e = x[perm], e[perm]
        n = self.n_samples
        return MonteCarloData(
            train=x[:n],
            train_energy=e[:n],
            holdout=x[n:],
            holdout_energy=e[n:],
            n_records=int(res.flat_energies.size),
            n_energy_evals=int(res.n_energy_evals),
            wall_time=float(res.wall_time),
            acceptance=float(res.acceptance),
            step_size=float(res.step_size),
            energy_ess=float(res.energy_ess),
            energy_rhat=float(res.energy_rhat),
        )


__all__ = ["HMCData", "MonteCarloData", "inefficiency"]
