"""boltzgen: a Boltzmann-generator free-energy engine for statistical physics, on JAX.

Give it an energy function and a temperature; it trains a sampler q(x) towards
p(x) ∝ exp(−βE(x)) and turns samples into free energies with error bars and bounds.

Example:
    >>> import boltzgen as bg
    >>> system = bg.systems.CoulombGas(n_particles=6, dim=2)
    >>> result = bg.run(system, beta=10.0, steps=2000)            # doctest: +SKIP
    >>> result.estimates["importance"].log_z                       # doctest: +SKIP
    >>> result.save("out.h5")                                      # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from boltzgen import estimators, flows, mcmc, systems, train
from boltzgen._curve import run_curve
from boltzgen._data import relative_free_energy
from boltzgen._run import run, sample_log_weights
from boltzgen.estimators import Estimate
from boltzgen.results import Result

try:
    __version__ = version("boltzgen")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "unknown"

__all__ = [
    "Estimate",
    "Result",
    "estimators",
    "flows",
    "mcmc",
    "run",
    "run_curve",
    "relative_free_energy",
    "sample_log_weights",
    "systems",
    "train",
    "__version__",
]
