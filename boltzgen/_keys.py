"""Named key streams of a run: every phase draws from its own stream, derived from the seed.

The derivations are fixed (a table, not ad hoc salts), so the same seed gives the same
numbers whatever phases a run has:

========== =====================================
stream     derivation from ``key = jax.random.key(seed)``
========== =====================================
init       ``split(key, 4)[0]`` (sampler weights)
train      ``split(key, 4)[1]`` (training steps: step t uses ``fold_in(train, t)``)
estimate   ``split(key, 4)[2]`` (samples of q for the estimates)
reference  ``split(key, 4)[3]`` (the Monte Carlo reference)
refine     ``fold_in(key, 101)`` (refinement stages)
data       ``fold_in(key, 202)`` (Monte Carlo training data)
feat       ``fold_in(key, 303)`` (FEAT paths)
========== =====================================
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

#: fold_in salts of the streams that are not one of the four ``split`` keys.
SALTS = {"refine": 101, "data": 202, "feat": 303}


@dataclass(frozen=True)
class RunKeys:
    """The key streams of one run (see the module docstring for their derivation)."""

    seed: int

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")

    @property
    def root(self):
        """``jax.random.key(seed)``."""
        return jax.random.key(self.seed)

    def _split(self, i: int):
        return jax.random.split(self.root, 4)[i]

    @property
    def init(self):
        """Key of the sampler's initial weights."""
        return self._split(0)

    @property
    def train(self):
        """Key of the training phase (step t uses ``fold_in(train, t)``)."""
        return self._split(1)

    @property
    def estimate(self):
        """Key of the estimation phase (samples of q)."""
        return self._split(2)

    @property
    def reference(self):
        """Key of the Monte Carlo reference."""
        return self._split(3)

    def stream(self, name: str):
        """Key of a salted stream: ``"refine"``, ``"data"`` or ``"feat"``."""
        return jax.random.fold_in(self.root, SALTS[name])
