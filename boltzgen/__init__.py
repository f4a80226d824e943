"""boltzgen: a Boltzmann-generator free-energy engine for statistical physics, on JAX.

Give it an energy function and a temperature; it trains a sampler q(x) towards
p(x) ∝ exp(−βE(x)) and turns samples into free energies with error bars and bounds.

Example:
    >>> import boltzgen as bg
    >>> system = bg.systems.CoulombGas(n_particles=6, dim=2)
    >>> result = bg.run(system, beta=10.0)                         # doctest: +SKIP
    >>> result.estimates["importance"].log_z                       # doctest: +SKIP
    >>> result.save("out.h5")                                      # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from boltzgen import estimators, flows, mcmc, references, stages, systems, train
from boltzgen._curve import run_curve
from boltzgen._estimation import Estimation, sample_log_weights
from boltzgen._relative import relative_free_energy
from boltzgen._run import run
from boltzgen.estimators import Estimate
from boltzgen.results import Result

try:
    __version__ = version("boltzgen")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "unknown"

__all__ = [
    "Estimate",
    "Estimation",
    "Result",
    "estimators",
    "flows",
    "mcmc",
    "references",
    "relative_free_energy",
    "run",
    "run_curve",
    "sample_log_weights",
    "stages",
    "systems",
    "train",
    "__version__",
]
