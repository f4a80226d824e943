"""Registry of samplers: run-spec ``[sampler] kind`` → constructor and hyper-parameter docs."""

from __future__ import annotations

from jaxtyping import PRNGKeyArray

from boltzgen._registry import Entry, resolve
from boltzgen.flows._autoregressive import MADE, PixelCNN, SpinFlipSymmetric
from boltzgen.flows._base import AbstractSampler
from boltzgen.flows._cnf import CNF
from boltzgen.flows._com import CentreOfMassSplit
from boltzgen.flows._equivariant import EquivariantFlow
from boltzgen.flows._ordered import OrderedFlow
from boltzgen.flows._realnvp import RealNVP

#: A registered sampler family; ``build(system, key=key, **hyper)`` returns the sampler.
SamplerEntry = Entry


def _is_particle_system(system) -> bool:
    shape = tuple(system.event_shape)
    return bool(getattr(system, "permutation_symmetric", False)) and len(shape) == 2


def _is_discrete(system) -> bool:
    return bool(getattr(system, "discrete", False))


def _require_continuous(system, kind: str) -> None:
    if _is_discrete(system):
        raise ValueError(
            f"sampler {kind!r} is a continuous flow; {type(system).__name__} is a discrete spin "
            f"system: use 'pixelcnn' (L×L lattices) or 'made'"
        )


def _require_discrete(system, kind: str) -> None:
    if not _is_discrete(system):
        raise ValueError(
            f"sampler {kind!r} is for discrete spin systems; {type(system).__name__} is "
            f"continuous: use 'realnvp' or 'equivariant'"
        )


def _spin_common(system, kind, hyper) -> tuple[dict, bool]:
    """Pop z2 and the β-range options; return (model kwargs, symmetrise?)."""
    _require_discrete(system, kind)
    z2 = hyper.pop("z2")
    if isinstance(z2, str):
        if z2 != "auto":
            raise ValueError(f"sampler.z2 must be true, false or 'auto', got {z2!r}")
        z2 = bool(getattr(system, "spin_flip_symmetric", False))
    return hyper, z2


def _build_made(system, *, key, **hyper) -> AbstractSampler:
    hyper, z2 = _spin_common(system, "made", hyper)
    model = MADE(tuple(system.event_shape), key=key, **hyper)
    return SpinFlipSymmetric(model) if z2 else model


def _build_pixelcnn(system, *, key, **hyper) -> AbstractSampler:
    hyper, z2 = _spin_common(system, "pixelcnn", hyper)
    shape = tuple(system.event_shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(
            f"sampler 'pixelcnn' needs an L×L lattice; {type(system).__name__} has event shape "
            f"{shape}: use 'made'"
        )
    model = PixelCNN(shape[0], key=key, **hyper)
    return SpinFlipSymmetric(model) if z2 else model


def _build_realnvp(system, *, key, **hyper) -> AbstractSampler:
    _require_continuous(system, "realnvp")
    if _is_particle_system(system):
        n, d = system.event_shape
        if d > 1 and n > 1:
            # The ordered domain x_{1,0} < ... < x_{N,0} has a boundary (two particles with equal
            # first coordinate) where p > 0 but the ordering bijection's density vanishes, so
            # importance sampling misses mass there: measured ~2 nats low on CoulombGas(6, 2)
            # at β = 10. In d = 1 the Coulomb repulsion makes p vanish there too, and it is exact.
            raise ValueError(
                f"sampler 'realnvp' on identical particles is reliable only in d = 1 (ordered "
                f"domain); for d = {d} use 'equivariant', whose density is permutation-invariant"
            )
        return OrderedFlow(RealNVP((n * d,), key=key, **hyper), n, d)
    return RealNVP(tuple(system.event_shape), key=key, **hyper)


def _build_equivariant(system, *, key, **hyper) -> AbstractSampler:
    _require_continuous(system, "equivariant")
    if not _is_particle_system(system):
        raise ValueError(
            f"sampler 'equivariant' needs a permutation-symmetric particle system with event "
            f"shape (N, d); {type(system).__name__} has {tuple(system.event_shape)}"
        )
    n, d = system.event_shape
    rotate = hyper.get("rotate", "auto")
    if isinstance(rotate, str):
        if rotate != "auto":
            raise ValueError(f"sampler.rotate must be true, false or 'auto', got {rotate!r}")
        # Measured (1500 steps × 256): on CoulombGas(6, 2) at β = 10 rotation improved the
        # variational bound 175.3 → 173.3 and ESS 12 → 74 of 65536; on CoulombGas(2, 3) at β = 5
        # it cut ESS from 26 % to 4 %. So: rotate in d = 2 only.
        hyper["rotate"] = d == 2
    return EquivariantFlow(n, d, key=key, **hyper)


def _build_cnf(system, *, key, **hyper) -> AbstractSampler:
    if _is_discrete(system):
        raise ValueError(
            f"sampler 'cnf' is a continuous normalising flow; {type(system).__name__} is a "
            f"discrete spin system: use 'pixelcnn' (L×L lattices) or 'made'"
        )
    invariant = bool(getattr(system, "translation_invariant", False))
    separable = bool(getattr(system, "com_separable", False))
    zero_com = hyper.pop("zero_com", "auto")
    if zero_com == "auto":
        zero_com = invariant or separable
    elif not isinstance(zero_com, bool):
        raise ValueError(f"sampler.zero_com must be true, false or 'auto', got {zero_com!r}")
    if invariant and not zero_com:
        raise ValueError(
            f"system {system.kind!r} is translation-invariant (Z over all coordinates diverges): "
            "the cnf sampler needs zero_com = true"
        )
    field = hyper.pop("field", "auto")
    if field == "auto":
        # In a trap (centre of mass separable) the pair coefficients also see the distances
        # from the centre (docs/particles.md, "The CNF"; measured gain in the README).
        field = "radii" if separable else "rbf"
    cnf = CNF(tuple(system.event_shape), key=key, zero_com=zero_com, field=field, **hyper)
    if zero_com and not invariant:
        # Full-space q: the zero-COM flow for the relative coordinates and an exact Gaussian
        # for the centre of mass (separates exactly in a harmonic trap); initial s = σ/√N, the
        # spread of the mean of N iid N(0, σ²) positions.
        n = system.event_shape[0]
        return CentreOfMassSplit(cnf, com_scale=float(hyper.get("base_scale", 1.0)) / n**0.5)
    return cnf


_NUM = (int, float)
_TRANSFORM_DOC = "coupling transform: 'affine' (soft-clamped log-scale) or 'spline' (RQS)"
_SPIN_COMMON = {
    "z2": (
        (bool, str),
        "auto",
        "spin-flip symmetrise q_sym(s) = (q(s) + q(-s))/2; 'auto' = when the system is "
        "Z2-symmetric",
    ),
    "beta_conditioned": (
        bool,
        False,
        "model q(s | beta): methods take beta; use .at(beta) for a plain sampler",
    ),
    "beta_min": (_NUM, 0.0, "low end of the beta range mapped onto [-1, 1] (conditioning input)"),
    "beta_max": (_NUM, 1.0, "high end of the beta range mapped onto [-1, 1]"),
}

SAMPLERS: dict[str, SamplerEntry] = {
    "realnvp": SamplerEntry(
        "realnvp",
        "RealNVP coupling flow on the flattened configuration; identical particles only in d = 1, "
        "wrapped in OrderedFlow (ordered fundamental domain + random relabelling)",
        {
            "n_layers": (int, 8, "number of coupling layers"),
            "hidden": (int, 128, "width of the conditioner MLPs"),
            "depth": (int, 2, "hidden layers per conditioner MLP"),
            "transform": (str, "affine", _TRANSFORM_DOC),
            "n_bins": (int, 8, "spline bins (transform = 'spline')"),
            "interval": (_NUM, 5.0, "spline half-width B; identity outside [-B, B]"),
            "scale_clamp": (_NUM, 3.0, "bound on the affine log-scale |s|"),
            "learn_affine": (bool, True, "learnable diagonal affine first layer"),
        },
        _build_realnvp,
    ),
    "equivariant": SamplerEntry(
        "equivariant",
        "permutation-equivariant coupling flow (DeepSets conditioner) for particles, d >= 2",
        {
            "n_layers": (int, 8, "coupling layers, cycling through the d coordinates"),
            "hidden": (int, 32, "width of the pair features and of the φ (node) MLP"),
            "depth": (int, 2, "hidden layers per MLP"),
            "transform": (str, "spline", _TRANSFORM_DOC),
            "n_bins": (int, 8, "spline bins (transform = 'spline')"),
            "interval": (_NUM, 5.0, "spline half-width B; identity outside [-B, B]"),
            "scale_clamp": (_NUM, 3.0, "bound on the affine log-scale |s|"),
            "base_scale": (_NUM, 0.7, "initial scale σ of the iid Gaussian base"),
            "rotate": (
                (bool, str),
                "auto",
                "alternate coupling axes by 45° between blocks; 'auto' = only in d = 2",
            ),
            "gap": (
                bool,
                True,
                "sorted-gap layer after each coupling (pushes close particles apart)",
            ),
            "radial": (bool, False, "log-radius layer after each block of d coupling layers"),
            "rounds": (int, 1, "message-passing rounds of each pair conditioner"),
        },
        _build_equivariant,
    ),
    "cnf": SamplerEntry(
        "cnf",
        "continuous normalising flow dx/dt = v(x, t), exact divergence, fixed-step RK4 (diffrax); "
        "permutation- and rotation-equivariant field for particles (N, d), MLP field otherwise",
        {
            "hidden": (int, 64, "width of the vector-field MLPs"),
            "depth": (int, 2, "hidden layers per MLP"),
            "n_steps": (int, 20, "fixed RK4 steps on t ∈ [0, 1]"),
            "field": (
                str,
                "auto",
                "particle field: 'rbf' (radial basis functions of the distances, coefficients "
                "from one MLP of t), 'radii' (the same, pair coefficients also depending on both "
                "particles' distances from the centre; ~1.4x the cost of 'rbf'), 'mlp' (an MLP "
                "per pair; 5-17x slower), 'env' (many-body: "
                "pair coefficients from the radial environments of both particles, closed-form "
                "trace) or 'egnn' (message passing, trace by N*d JVPs: slowest); 'auto' = "
                "'radii' for a system in a harmonic trap, 'rbf' otherwise",
            ),
            "n_rbf": (int, 32, "radial basis functions of the particle fields"),
            "r_max": (_NUM, 8.0, "largest radial-basis centre (length units of the system)"),
            "n_radii": (
                int,
                8,
                "radial shells of the distance from the centre ('radii' field only; their "
                "centres span [0, r_max])",
            ),
            "base_scale": (_NUM, 1.0, "initial scale σ of the iid Gaussian base (trainable)"),
            "max_batch": (
                int,
                0,
                "configurations per vectorised ODE solve, larger batches in sequence (bounds "
                "memory); 0 = automatic: 256 for 'egnn', unlimited otherwise",
            ),
            "zero_com": (
                (bool, str),
                "auto",
                "work on the zero-centre-of-mass subspace with its (N−1)d-dim Gaussian base "
                "(for a system that is not translation-invariant, e.g. the trapped Coulomb gas, "
                "times an exact Gaussian for the centre of mass); 'auto' = when the system is "
                "translation-invariant (DW4, Lennard-Jones) or its centre of mass separates "
                "(harmonic trap: Coulomb gas)",
            ),
        },
        _build_cnf,
    ),
    "pixelcnn": SamplerEntry(
        "pixelcnn",
        "masked-convolution autoregressive model for L×L spin lattices (raster order, exact log q, "
        "cached sequential sampling); receptive field checked to cover every earlier site",
        {
            "channels": (int, 16, "feature channels C"),
            "depth": (int, 3, "masked convolutions: one type A, depth - 1 residual type B"),
            "kernel_size": (int, 3, "odd kernel size of the type-B layers"),
            "first_kernel_size": (
                (int, str),
                "full",
                "odd kernel size of the first layer, or 'full' (L rows × 2L-1 columns: sees "
                "every earlier site)",
            ),
            "dilation": ((int, list), 1, "dilation of the type-B layers: one int or one per layer"),
            **_SPIN_COMMON,
        },
        _build_pixelcnn,
    ),
    "made": SamplerEntry(
        "made",
        "masked dense autoregressive network over the flattened spins (any spin system; exact "
        "log q, cached sequential sampling)",
        {
            "channels": (int, 2, "hidden units per spin (hidden width = channels × N)"),
            "depth": (int, 2, "hidden layers"),
            **_SPIN_COMMON,
        },
        _build_made,
    ),
}


def default_sampler_kind(system) -> str:
    """The default sampler family of a system.

    Discrete spin systems: 'pixelcnn' on L×L lattices, 'made' otherwise. Continuous systems:
    'cnf' (zero centre of mass) for translation-invariant particles and for particles whose
    centre of mass separates exactly (a harmonic trap: the CNF on the relative coordinates
    times the exact Gaussian of the centre of mass), 'equivariant' for other
    permutation-symmetric particles with d ≥ 2, else 'realnvp'.
    """
    if _is_discrete(system):
        shape = tuple(system.event_shape)
        # PixelCNN sampling is fast enough at L = 16 (benchmarks/throughput_spins.py, 2 cores,
        # float32, batch 1024, defaults): 0.15 s per batch (1.8 M spins/s; log_prob forward
        # 0.05 s, forward+backward 0.13 s) vs MADE 0.026 s (10 M spins/s; 0.004 / 0.011 s).
        # A REINFORCE step costs ~0.3 s vs ~0.04 s: PixelCNN is the default for lattices for its
        # 2-D locality (VAN found it the more accurate of the two), MADE for other graphs.
        if len(shape) == 2 and shape[0] == shape[1]:
            return "pixelcnn"
        return "made"
    if getattr(system, "translation_invariant", False) or getattr(system, "com_separable", False):
        # Measured (benchmarks/robustness.py and `make run`, CoulombGas(6, 2), seed 0): flow
        # matching + 300 reverse-KL steps of the CNF reach KL gap 0.04 / ESS 94 % at β = 1 and
        # 1.13 / 5.4 % at β = 10, against 2.08 / 3.2 % at β = 10 for the equivariant coupling
        # flow trained by reverse KL.
        return "cnf"
    if _is_particle_system(system) and system.event_shape[1] >= 2:
        return "equivariant"
    return "realnvp"


def make_sampler(kind: str, system, *, key: PRNGKeyArray, **hyper) -> AbstractSampler:
    """Build a registered sampler for ``system`` from its kind and hyper-parameters.

    Missing hyper-parameters take the defaults listed in ``SAMPLERS[kind].params``. With
    ``beta_conditioned = true`` the spin samplers return the conditional model q(s | β) (its
    methods take ``beta``); ``q.at(beta)`` is the plain sampler at one β.

    Args:
        kind: a key of :data:`SAMPLERS` ("realnvp", "equivariant", "cnf", "pixelcnn", "made").
        system: the target system (uses ``event_shape``, ``permutation_symmetric``,
            ``discrete`` and ``spin_flip_symmetric``).
        key: PRNG key for the initial weights.
        **hyper: hyper-parameters of that kind.

    Raises:
        ValueError: unknown kind or hyper-parameter (the message lists the valid ones), a value
            of the wrong type, or a sampler that does not fit the system.
    """
    entry, full = resolve("sampler", kind, SAMPLERS, hyper)
    if getattr(system, "translation_invariant", False) and kind != "cnf":
        raise ValueError(
            f"system {system.kind!r} is translation-invariant (Z over all coordinates diverges): "
            f"sampler {kind!r} has no zero-centre-of-mass mode; use 'cnf'"
        )
    return entry.build(system, key=key, **full)


__all__ = ["SAMPLERS", "SamplerEntry", "default_sampler_kind", "make_sampler"]
