"""Count the evaluations a function really receives, inside jit, vmap, scan and grad.

The cost fields of the Monte Carlo results (``n_energy_evals``, ``n_log_q_evals``) are computed
by formulas in the library; the tests check them against an independent count: the function
under test is wrapped so that every evaluation reports, through ``jax.debug.callback``, how many
configurations it received. The report sits on the identity map x ↦ x in front of the function:
a custom batching rule makes a vmapped call report its whole batch in one callback, and a custom
JVP makes a value-and-gradient (or a gradient alone) report once, from the forward pass. Both
branches of a vmapped ``cond`` report (both run).
"""

from __future__ import annotations

import math

import jax
import numpy as np


class Counter:
    """``f`` on ONE configuration of ``event_ndim`` dimensions, counting evaluated configurations.

    The configuration is the positional argument number ``arg`` (e.g. 1 for a field f(t, x)).
    Read :attr:`n` after the computation (it waits for pending callbacks).
    """

    def __init__(self, f, event_ndim: int, arg: int = 0):
        self._f = f
        self._event_ndim = event_ndim
        self._arg = arg
        self._n = 0

        def add(x):
            shape = np.shape(x)
            self._n += math.prod(shape[: len(shape) - self._event_ndim])

        @jax.custom_batching.custom_vmap
        def report(x):
            jax.debug.callback(add, x)
            return x

        @report.def_vmap
        def _report_batched(axis_size, in_batched, x):
            return report(x), in_batched[0]

        @jax.custom_jvp
        def tap(x):
            return report(x)

        @tap.defjvp
        def _tap_jvp(primals, tangents):
            return tap(primals[0]), tangents[0]

        self._tap = tap

    def __call__(self, *args, **kwargs):
        args = list(args)
        args[self._arg] = self._tap(args[self._arg])
        return self._f(*args, **kwargs)

    @property
    def n(self) -> int:
        """Configurations evaluated so far."""
        jax.effects_barrier()
        return self._n

    def reset(self) -> None:
        """Start counting again from zero."""
        jax.effects_barrier()
        self._n = 0


def counting_system(system):
    """A copy of ``system`` whose ``energy`` is counted: (copy, counter)."""
    counter = Counter(system.energy, len(system.event_shape))

    class Counted(type(system)):
        def energy(self, x):
            return counter(x)

    counted = object.__new__(Counted)
    counted.__dict__.update(system.__dict__)
    return counted, counter
