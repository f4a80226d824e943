r"""Monte Carlo references computed in the same run, as strategy objects.

Each reference is a frozen dataclass holding its settings, with ``check(system)`` (raise
``ValueError`` before training when it does not apply) and ``__call__(system, beta, *, key,
sampler, q_log_w, progress)`` → ``(reference estimates, derived estimates)``. With a trained
sampler, a reference's samples of p also give the lower bound ``forward_bound`` = E_p[u + ln q]
on βF and, from equilibrium samples, reverse importance sampling and BAR between q and p
(``reverse_importance_reference``, ``bar_reference``).

* :class:`TrapAIS` — Coulomb gas: AIS from the harmonic trap (exact ln Z_0 and samples);
* :class:`CentredTrapAIS` — translation-invariant particles (DW4, Lennard-Jones): AIS from a
  centred harmonic trap on the zero-centre-of-mass subspace;
* :class:`CouplingLadder` — Coulomb gas: BAR and MBAR along a ladder of couplings;
* :class:`ThermodynamicIntegration` and :class:`BetaAIS` — spin systems: over β from 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from boltzgen import _checks
from boltzgen._estimation import log_q_and_energy, p_sample_estimates
from boltzgen.estimators import Estimate


class AbstractReference:
    """Base of the references (see the package docstring for the protocol)."""

    #: The reference's name in run specs (``[reference] method``).
    method: ClassVar[str] = ""

    def check(self, system) -> None:
        """Raise ValueError when the reference does not apply to ``system``."""

    def _options(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def memory_bytes(self, system) -> int:
        """Bytes of the reference's stored samples (float64)."""
        return 8 * getattr(self, "n_chains", 0) * (int(np.prod(system.event_shape)) + 2)

    def __call__(self, system, beta, *, key, sampler=None, q_log_w=None, progress=True):
        """Run the reference; return (reference estimates, derived estimates)."""
        raise NotImplementedError

    @staticmethod
    def _derived(system, beta, sampler, x_p, log_w_p, q_log_w) -> dict[str, Estimate]:
        if sampler is None:
            return {}
        names = {"reverse_importance": "reverse_importance_reference", "bar": "bar_reference"}
        lq_e = log_q_and_energy(sampler, system, x_p)
        return p_sample_estimates(beta, lq_e, log_w_p, q_log_w=q_log_w, names=names)


def _is_coulomb(system) -> bool:
    from boltzgen.systems import CoulombGas

    return isinstance(system, CoulombGas)


def _has_particle_reference(system) -> bool:
    return bool(getattr(system, "translation_invariant", False)) and hasattr(
        system, "reference_trap"
    )


def _check_ais_fields(self) -> None:
    _checks.hmc_settings(self)


class _AnnealedReference(AbstractReference):
    def _run(self, system, beta, key, progress):
        raise NotImplementedError

    def __call__(self, system, beta, *, key, sampler=None, q_log_w=None, progress=True):
        """AIS ln Z (``ais``) and the estimates from its weighted samples of p."""
        ref = self._run(system, beta, key, progress)
        log_w = np.asarray(ref.log_weights, np.float64)
        derived = self._derived(system, beta, sampler, np.asarray(ref.samples), log_w, q_log_w)
        return ref.to_estimates(), derived


@dataclass(frozen=True)
class _AnnealedSettings(_AnnealedReference):
    """Settings shared by the AIS references.

    Attributes:
        n_chains: chains of the main run.
        n_steps: annealing steps; schedule λ_k = (k/K)^power (dense near λ = 0, where the
            variance of the interaction energy under the trap is largest).
        power: exponent of the schedule.
        n_leapfrog: leapfrog steps per HMC move.
        kernel: ``"hmc"`` or ``"mala"``.
        step_size: initial step size (None: scale-aware).
        target_accept: target acceptance (None: the kernel's).
        pilot_chains: chains of the step-size pilot run (None: the default).
        precision: ``"float64"`` or ``"float32"``.
    """

    n_chains: int = 1024
    n_steps: int = 2500
    power: float = 4.0
    n_leapfrog: int = 4
    kernel: Literal["hmc", "mala"] = "hmc"
    step_size: float | None = None
    target_accept: float | None = None
    pilot_chains: int | None = None
    precision: Literal["float64", "float32"] = "float64"

    __post_init__ = _check_ais_fields


@dataclass(frozen=True)
class TrapAIS(_AnnealedSettings):
    """AIS for the Coulomb gas from the free harmonic trap (exact ln Z_0, exact samples).

    Attributes: the AIS settings (``n_chains``, ``n_steps``, ``power``, ``n_leapfrog``,
    ``kernel``, ``step_size``, ``target_accept``, ``pilot_chains``, ``precision``).
    """

    method: ClassVar[str] = "ais"

    def check(self, system) -> None:
        """Coulomb gas only."""
        if not _is_coulomb(system):
            raise ValueError(
                f"reference 'ais' from the harmonic trap needs system.kind = 'coulomb', got "
                f"{system.kind!r}"
            )

    def _run(self, system, beta, key, progress):
        from boltzgen.mcmc import coulomb_reference

        return coulomb_reference(system, beta, key=key, progress=progress, **self._options())


@dataclass(frozen=True)
class CentredTrapAIS(_AnnealedSettings):
    """AIS for translation-invariant particles from a centred harmonic trap (zero COM).

    Attributes: the AIS settings of :class:`TrapAIS`.
    """

    method: ClassVar[str] = "ais"

    def check(self, system) -> None:
        """Translation-invariant particle systems with a reference trap only."""
        if not _has_particle_reference(system):
            raise ValueError(
                f"reference 'ais' from a centred trap needs a translation-invariant particle "
                f"system (double_well, lennard_jones), got {system.kind!r}"
            )

    def _run(self, system, beta, key, progress):
        from boltzgen.mcmc import particle_reference

        return particle_reference(system, beta, key=key, progress=progress, **self._options())


@dataclass(frozen=True)
class CouplingLadder(AbstractReference):
    """BAR and MBAR along a ladder of Coulomb couplings from the free trap (HMC in each state).

    Gives ``ladder_bar`` and ``ladder_mbar``; the target state's equilibrium samples give the
    lower bound, reverse importance sampling and BAR between q and p.

    Attributes:
        n_states: states of the ladder (λ from 0 to 1).
        power: exponent of the λ grid.
        n_chains: chains per state.
        n_warmup: burn-in moves per chain.
        n_records: recorded states per chain.
        thin: moves between records.
        n_leapfrog: leapfrog steps per HMC move.
        target_accept: target acceptance of the step-size tuning.
    """

    method: ClassVar[str] = "ladder"
    n_states: int = 16
    power: float = 3.0
    n_chains: int = 128
    n_warmup: int = 1000
    n_records: int = 100
    thin: int = 5
    n_leapfrog: int = 4
    target_accept: float = 0.65

    def __post_init__(self):
        _checks.integer("n_states", self.n_states, 2)
        _checks.positive("power", self.power)
        for name in ("n_chains", "n_records", "thin", "n_leapfrog"):
            _checks.integer(name, getattr(self, name), 1)
        _checks.integer("n_warmup", self.n_warmup, 0)
        _checks.number(
            "target_accept", self.target_accept, low=0, high=1, low_open=True, high_open=True
        )

    def check(self, system) -> None:
        """Coulomb gas only."""
        if not _is_coulomb(system):
            raise ValueError(
                f"reference 'ladder' needs system.kind = 'coulomb', got {system.kind!r}"
            )

    def memory_bytes(self, system) -> int:
        """Bytes of the recorded energies and target samples."""
        per = self.n_records * self.n_chains
        return 8 * per * (2 * self.n_states + int(np.prod(system.event_shape)))

    def __call__(self, system, beta, *, key, sampler=None, q_log_w=None, progress=True):
        """``ladder_bar`` and ``ladder_mbar``, and estimates from the target's samples."""
        from boltzgen.mcmc import coupling_ladder

        ref = coupling_ladder(system, beta, key=key, progress=progress, **self._options())
        x_p = ref.target_samples.reshape(-1, *system.event_shape)
        return ref.to_estimates(), self._derived(system, beta, sampler, x_p, None, q_log_w)


def _check_spin(system, method) -> None:
    if not getattr(system, "discrete", False):
        raise ValueError(
            f"reference {method!r} needs a spin system, got {system.kind!r}; use 'ais', "
            "'ladder' or 'none'"
        )


SPIN_KERNELS = ("auto", "checkerboard", "swendsen_wang", "single_spin")


@dataclass(frozen=True)
class ThermodynamicIntegration(AbstractReference):
    """ln Z(β) = N ln 2 − ∫_0^β ⟨E⟩ dβ' by Clenshaw–Curtis quadrature of Monte Carlo ⟨E⟩.

    Attributes:
        n_betas: quadrature intervals (split at β_c for a ferromagnet beyond it).
        n_chains: chains per node.
        n_sweeps: measured sweeps per chain.
        n_warmup: sweeps before measuring (None: the function's default).
        kernel: ``"auto"``, ``"checkerboard"``, ``"swendsen_wang"`` or ``"single_spin"``.
        max_blocks: blocks of sweeps per chain for the error estimate.
        rule: ``"metropolis"`` or ``"heat_bath"``.
    """

    method: ClassVar[str] = "ti"
    n_betas: int = 32
    n_chains: int = 64
    n_sweeps: int = 1000
    n_warmup: int | None = None
    kernel: str = "auto"
    max_blocks: int = 256
    rule: str = "metropolis"

    def __post_init__(self):
        for name in ("n_betas", "n_chains", "n_sweeps", "max_blocks"):
            _checks.integer(name, getattr(self, name), 1)
        _checks.integer("n_warmup", self.n_warmup, 0, optional=True)
        _checks.choice("kernel", self.kernel, SPIN_KERNELS)
        _checks.choice("rule", self.rule, ("metropolis", "heat_bath"))

    def check(self, system) -> None:
        """Spin systems only."""
        _check_spin(system, self.method)

    def __call__(self, system, beta, *, key, sampler=None, q_log_w=None, progress=True):
        """``ti`` with its quadrature error."""
        from boltzgen.mcmc import thermodynamic_integration

        ref = thermodynamic_integration(system, beta, key=key, progress=progress, **self._options())
        return {"ti": ref.to_estimate("ti")}, {}


@dataclass(frozen=True)
class BetaAIS(AbstractReference):
    """Annealed importance sampling over β from the uniform distribution (Z_0 = 2^N).

    Attributes:
        n_chains: chains.
        n_steps: β steps.
        sweeps_per_step: sweeps at each β.
        schedule: ``"linear"`` or ``"power"``.
        power: exponent of the power schedule.
        kernel: ``"auto"``, ``"checkerboard"``, ``"swendsen_wang"`` or ``"single_spin"``.
        rule: ``"metropolis"`` or ``"heat_bath"``.
    """

    method: ClassVar[str] = "beta_ais"
    n_chains: int = 256
    n_steps: int = 1000
    sweeps_per_step: int = 1
    schedule: str = "linear"
    power: float = 2.0
    kernel: str = "auto"
    rule: str = "metropolis"

    def __post_init__(self):
        for name in ("n_chains", "n_steps", "sweeps_per_step"):
            _checks.integer(name, getattr(self, name), 1)
        _checks.choice("schedule", self.schedule, ("linear", "power"))
        _checks.positive("power", self.power)
        _checks.choice("kernel", self.kernel, SPIN_KERNELS)
        _checks.choice("rule", self.rule, ("metropolis", "heat_bath"))

    def check(self, system) -> None:
        """Spin systems only."""
        _check_spin(system, self.method)

    def __call__(self, system, beta, *, key, sampler=None, q_log_w=None, progress=True):
        """``beta_ais`` with its ESS."""
        from boltzgen.mcmc import beta_annealing

        ref = beta_annealing(system, beta, key=key, progress=progress, **self._options())
        return {"beta_ais": ref.to_estimate("beta_ais")}, {}


def default_reference(system) -> AbstractReference | None:
    """The system's default Monte Carlo reference.

    :class:`TrapAIS` for the Coulomb gas, :class:`CentredTrapAIS` for translation-invariant
    particles, None otherwise (spin systems print their exact ln Z where known).
    """
    if _is_coulomb(system):
        return TrapAIS()
    if _has_particle_reference(system):
        return CentredTrapAIS()
    return None


def reference_class(method: str, system) -> type[AbstractReference]:
    """The reference class of a run-spec ``[reference] method`` for ``system``.

    ``"ais"`` is :class:`TrapAIS` for the Coulomb gas and :class:`CentredTrapAIS` for
    translation-invariant particles.
    """
    if method == "ais":
        return CentredTrapAIS if _has_particle_reference(system) else TrapAIS
    table = {"ladder": CouplingLadder, "ti": ThermodynamicIntegration, "beta_ais": BetaAIS}
    if method not in table:
        raise ValueError(
            f"unknown reference.method {method!r}; valid: auto, ais, ladder, ti, beta_ais, none"
        )
    return table[method]


__all__ = [
    "AbstractReference",
    "BetaAIS",
    "CentredTrapAIS",
    "CouplingLadder",
    "ThermodynamicIntegration",
    "TrapAIS",
    "default_reference",
    "reference_class",
]
