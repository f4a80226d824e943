"""Samplers q: coupling flows, equivariant and ordered-domain flows, CNFs, autoregressive spins.

The spin models (MADE, PixelCNN) have exact log q, Z2 symmetrisation and β-conditioning.

Every sampler is an :class:`AbstractSampler` with ``sample_and_log_prob`` and ``log_prob``;
:func:`make_sampler` builds one from a run-spec kind (see :data:`SAMPLERS`).
"""

from boltzgen.flows._autoregressive import (
    MADE,
    AbstractSpinSampler,
    BetaEmbedding,
    FixedBeta,
    PixelCNN,
    SpinFlipSymmetric,
    receptive_field,
)
from boltzgen.flows._base import AbstractSampler, check_batch
from boltzgen.flows._cnf import CNF
from boltzgen.flows._com import CentreOfMassSplit
from boltzgen.flows._equivariant import EquivariantCoupling, EquivariantFlow
from boltzgen.flows._interpolant import Interpolant
from boltzgen.flows._ordered import OrderedFlow, order_forward, order_inverse, sort_particles
from boltzgen.flows._realnvp import RealNVP
from boltzgen.flows._registry import SAMPLERS, SamplerEntry, default_sampler_kind, make_sampler
from boltzgen.flows._transforms import affine, rational_quadratic_spline

__all__ = [
    "AbstractSampler",
    "check_batch",
    "RealNVP",
    "EquivariantFlow",
    "EquivariantCoupling",
    "CNF",
    "CentreOfMassSplit",
    "Interpolant",
    "OrderedFlow",
    "AbstractSpinSampler",
    "MADE",
    "PixelCNN",
    "SpinFlipSymmetric",
    "FixedBeta",
    "BetaEmbedding",
    "receptive_field",
    "order_forward",
    "order_inverse",
    "sort_particles",
    "affine",
    "rational_quadratic_spline",
    "SAMPLERS",
    "SamplerEntry",
    "make_sampler",
    "default_sampler_kind",
]
