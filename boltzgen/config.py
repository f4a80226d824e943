"""TOML run specs → the strategy objects of :func:`boltzgen.run`, with one-line errors.

The data flow is one way: ``cli → config → library``; nothing in the library imports this
module. Sections map onto objects, and the settable keys and their types come from the
objects' dataclass fields, so every parameter of every piece can be set:

=============  ==============================================================================
section        object
=============  ==============================================================================
``[system]``   ``kind`` → a registered system (``boltzgen systems``), other keys its parameters
``[ensemble]`` ``beta`` (one run) or ``betas`` (a free-energy curve); ``indistinguishable``
``[sampler]``  ``kind`` → a registered sampler (``boltzgen samplers``), other keys its options
``[train]``    ``objective`` → an objective class; keys that are fields of that objective go to
               it (``beta_anneal``), the others to :class:`~boltzgen.train.Trainer`
``[data]``     the data objective's :class:`~boltzgen.train.HMCData`
``[matching]`` ``pairing``, ``gamma_scale`` → the data objective; ``feat_paths``,
               ``feat_steps``, ``feat_eps`` → the :class:`~boltzgen.stages.FEAT` stage
``[estimate]`` :class:`~boltzgen.Estimation`
``[refine]``   ``method`` (``nmcmc`` | ``ais`` | ``smc`` | ``none``) → a refinement stage
``[reference]`` ``method`` (``auto`` | ``ais`` | ``ladder`` | ``ti`` | ``beta_ais`` | ``none``)
=============  ==============================================================================

The one source of defaults is the objects' own field defaults; the packaged default spec
(``boltzgen/default.toml``) adds only what has no class default — the seed demo's system and
temperature — so ``boltzgen run`` and ``bg.run(CoulombGas(6, 2), 10.0)`` are the same run.
A section or key that does not apply to the chosen objective, system or ensemble is an error
naming it, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, Literal

SECTIONS = (
    "system",
    "ensemble",
    "sampler",
    "train",
    "data",
    "matching",
    "estimate",
    "refine",
    "reference",
)

#: Fields of data objectives written under ``[train]`` (their others are [data] / [matching]).
_DATA_OBJECTIVE_TRAIN_KEYS = ("reverse_weight",)
#: ``[train]`` keys of the reverse-KL fine-tuning phase of a data objective (FineTuned).
_FINETUNE_KEYS = ("finetune_steps", "finetune_learning_rate", "finetune_batch_size")

#: ``[matching]`` keys that go to the FEAT stage, with the stage's field names.
_FEAT_KEYS = {"feat_paths": "paths", "feat_steps": "steps", "feat_eps": "eps"}


class SpecError(ValueError):
    """A bad run spec: the message is one line naming the bad key or value.

    A message of several lines (one passed on from a library, e.g. h5py) is joined into one.
    """

    def __init__(self, message):
        super().__init__(" ".join(part.strip() for part in str(message).splitlines()))


def default_spec_text() -> str:
    """The packaged default spec (the seed demo: Coulomb gas N = 6, d = 2 at β = 10)."""
    return files("boltzgen").joinpath("default.toml").read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_spec(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """The raw spec dict of a TOML file (the packaged default when ``path`` is None) + overrides.

    Raises:
        SpecError: unreadable file, a directory, not UTF-8, TOML syntax error, bad override.
    """
    if path is None:
        raw: dict = {}  # the packaged default fills in what is missing (see validate)
    else:
        if os.path.isdir(path):
            raise SpecError(f"spec {path!r} is a directory; give a TOML file")
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise SpecError(f"spec file not found: {path}") from None
        except OSError as err:
            raise SpecError(f"cannot read spec {path}: {err.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise SpecError(f"{path}: not UTF-8 text (byte {err.start})") from None
        empty = SpecError(f"{path}: the spec is empty (run without a spec for the default)")
        if not text.strip():
            raise empty
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise SpecError(f"{path}: invalid TOML: {err}") from None
        if not raw:  # comments only
            raise empty
    seen: dict[str, Any] = {}
    for item in overrides:
        dotted, value = _parse_override(item)
        if dotted in seen and seen[dotted] != value:
            raise SpecError(
                f"--set {dotted} given twice with different values ({seen[dotted]!r}, {value!r})"
            )
        seen[dotted] = value
        _apply(raw, dotted, value)
    return raw


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise SpecError(f"--set expects section.key=value, got {item!r}")
    dotted, value_text = item.split("=", 1)
    dotted = dotted.strip()
    parts = dotted.split(".")
    if not all(parts) or len(parts) > 2:
        raise SpecError(f"--set expects section.key=value, got {item!r}")
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text
    return dotted, value


def _apply(spec: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    if len(parts) == 1:
        spec[parts[0]] = value
        return
    section = spec.setdefault(parts[0], {})
    if not isinstance(section, dict):
        raise SpecError(f"{parts[0]} is not a section; cannot set {dotted}")
    section[parts[1]] = value


# --------------------------------------------------------------------------------------------
# Typed construction of an object from a section
# --------------------------------------------------------------------------------------------


def settable_fields(cls) -> dict[str, Any]:
    """The spec-settable fields of a strategy class: name → type hint."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if f.init and not f.name.startswith("_") and f.name != "data"
    }


def _type_name(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _coerce(where: str, value, hint):
    """``value`` checked against the type ``hint`` (TOML has no null: optional = the type)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(where, value, a)
            except SpecError as err:
                errors.append(err)
        raise SpecError(f"{where} must be {_type_name(hint)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise SpecError(f"{where} must be {_type_name(hint)}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise SpecError(f"{where} must be finite, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SpecError(f"{where} must be a string, got {value!r}")
        return value
    return value


def build(cls, section: str, values: dict, *, extra_valid=(), **fixed):
    """``cls(**values, **fixed)`` with each key checked against ``cls``'s fields and types.

    Raises:
        SpecError: an unknown key (the message lists the valid ones), a wrong type, or a value
            the class rejects (its message prefixed with the section).
    """
    hints = settable_fields(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            valid = ", ".join([*extra_valid, *hints])
            raise SpecError(f"unknown key {section}.{key}; valid: {valid}")
        kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
    try:
        return cls(**kwargs, **fixed)
    except ValueError as err:
        raise SpecError(_prefix(section, err, hints)) from None


def _prefix(section: str, err: Exception, names=()) -> str:
    msg = str(err).splitlines()[0]
    if msg.startswith(section):
        return msg
    first = msg.split(" ", 1)[0]
    if first in names:
        return f"{section}.{msg}"
    if msg.startswith("unknown ") and msg.split(" ")[1] in names:
        return f"unknown {section}.{msg[len('unknown ') :]}"
    return f"{section}: {msg}"


def fields_of(obj) -> dict:
    """The settable fields of a strategy object with their values (None values dropped)."""
    return {k: getattr(obj, k) for k in settable_fields(type(obj)) if getattr(obj, k) is not None}


# --------------------------------------------------------------------------------------------
# The run spec as objects
# --------------------------------------------------------------------------------------------


@dataclass
class RunSpec:
    """A validated run spec: the objects of :func:`boltzgen.run` or :func:`boltzgen.run_curve`.

    Attributes:
        system: the system object.
        system_params: its ``kind`` and every parameter (defaults filled in).
        beta: β of a single run, or None for a curve.
        betas: the β grid of a curve, or None.
        indistinguishable: subtract ln N!.
        sampler_kind: the sampler family.
        sampler_options: its options (defaults filled in).
        objective: the training objective.
        trainer: the training loop's settings.
        estimation: the estimation phase's settings.
        stages: the stages after estimation.
        reference: the Monte Carlo reference, or None.
        seed: the seed.
    """

    system: Any
    system_params: dict
    beta: float | None
    betas: list | None
    indistinguishable: bool
    sampler_kind: str
    sampler_options: dict
    objective: Any
    trainer: Any
    estimation: Any
    stages: tuple = ()
    reference: Any = None
    seed: int = 0
    _feat: Any = field(default=None, repr=False)

    def build_sampler(self):
        """The initial sampler (weights from the run's ``init`` key stream)."""
        from boltzgen._keys import RunKeys
        from boltzgen.flows import make_sampler

        return make_sampler(
            self.sampler_kind, self.system, key=RunKeys(self.seed).init, **self.sampler_options
        )

    def run(self, *, checkpoint=None, resume=False, progress=True):
        """Run the spec (:func:`boltzgen.run` or :func:`boltzgen.run_curve`)."""
        import boltzgen as bg

        common = dict(
            trainer=self.trainer,
            estimation=self.estimation,
            seed=self.seed,
            checkpoint=checkpoint,
            resume=resume,
            progress=progress,
            spec_text=self.to_toml(),
        )
        if self.betas is not None:
            return bg.run_curve(
                self.system, self.betas, self.build_sampler(), self.objective, **common
            )
        return bg.run(
            self.system,
            self.beta,
            self.build_sampler(),
            self.objective,
            stages=self.stages,
            reference=self.reference,
            indistinguishable=self.indistinguishable,
            **common,
        )

    def sections(self) -> dict:
        """The spec as run, section by section, from the objects (defaults filled in)."""
        ens = {"betas": list(self.betas)} if self.betas is not None else {"beta": self.beta}
        ens["indistinguishable"] = self.indistinguishable
        from boltzgen.train import FineTuned

        obj = self.objective
        finetune = {}
        if isinstance(obj, FineTuned):
            finetune = {
                "finetune_steps": obj.steps,
                "finetune_learning_rate": obj.learning_rate,
                "finetune_batch_size": obj.batch_size,
            }
            obj = obj.base
        elif getattr(obj, "needs_data", False):
            finetune = {"finetune_steps": 0}
        own = fields_of(obj)
        if getattr(obj, "needs_data", False):  # the rest is in [data] / [matching]
            own = {k: v for k, v in own.items() if k in _DATA_OBJECTIVE_TRAIN_KEYS}
        train = {"objective": obj.name, **own, **finetune, **fields_of(self.trainer)}
        out = {
            "system": dict(self.system_params),
            "ensemble": ens,
            "sampler": {"kind": self.sampler_kind, **self.sampler_options},
            "train": train,
        }
        if getattr(obj, "needs_data", False):
            out["data"] = fields_of(obj.data)
            matching = {}
            if hasattr(obj, "pairing"):
                matching["pairing"] = obj.pairing
            if hasattr(obj, "gamma_scale"):
                matching["gamma_scale"] = obj.gamma_scale
                for key, name in _FEAT_KEYS.items():
                    feat = self._feat
                    if feat is not None:
                        matching[key] = getattr(feat, name)
            if matching:
                out["matching"] = matching
        out["estimate"] = fields_of(self.estimation)
        if self.betas is None:
            refiners = [s for s in self.stages if s.name == "refine"]
            out["refine"] = (
                {"method": refiners[0].method, **fields_of(refiners[0])}
                if refiners
                else {"method": "none"}
            )
            r = self.reference
            out["reference"] = {"method": r.method, **fields_of(r)} if r else {"method": "none"}
        return out

    def to_toml(self) -> str:
        """The spec as run, as TOML text (``seed`` first, then the sections)."""
        lines = [f"seed = {_toml_value(self.seed)}", ""]
        for name, values in self.sections().items():
            lines.append(f"[{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
            lines.append("")
        return "\n".join(lines)


def load_spec(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunSpec:
    """Read a TOML spec (the packaged default when ``path`` is None), apply overrides, build it.

    Args:
        path: TOML file, or None for the default run.
        overrides: strings ``section.key=value``; the value is parsed as TOML
            (``2.0``, ``true``, ``"x"``) and taken as a plain string if that fails.

    Raises:
        SpecError: any bad file, key, type or value, or a piece that does not apply.
    """
    return validate(read_spec(path, overrides))


def validate(raw: dict) -> RunSpec:
    """Build the :class:`RunSpec` of a raw spec dict; raise :class:`SpecError` on any problem."""
    unknown = set(raw) - set(SECTIONS) - {"seed"}
    if unknown:
        raise SpecError(
            f"unknown top-level key {sorted(unknown)[0]!r}; valid: {', '.join(SECTIONS)}, seed"
        )
    for name in SECTIONS:
        if not isinstance(raw.get(name, {}), dict):
            raise SpecError(f"[{name}] must be a table, got {raw[name]!r}")
    default = tomllib.loads(default_spec_text())
    seed = _seed(raw.get("seed", default["seed"]))
    system, system_params = _system(_merged_system(raw.get("system"), default["system"]))
    ens = _ensemble(raw.get("ensemble", {}), default["ensemble"], system)
    curve = ens["betas"] is not None
    if curve:
        _no_single_run_pieces(raw)
    sampler_kind, sampler_options = _sampler(raw.get("sampler", {}), system, ens)
    objective = _objective(raw, system, sampler_kind, sampler_options, curve)
    first = getattr(objective, "base", objective)  # a FineTuned objective's first phase
    if sampler_options.get("zero_com") == "auto" and first.name == "interpolant":
        # The interpolant trains a CNF without a centre-of-mass split: 'auto' is the full space
        # unless the system is translation-invariant.
        sampler_options["zero_com"] = bool(getattr(system, "translation_invariant", False))
    trainer = _trainer(raw.get("train", {}), objective)
    estimation = _estimation(raw.get("estimate", {}))
    spec = RunSpec(
        system=system,
        system_params=system_params,
        beta=ens["beta"],
        betas=ens["betas"],
        indistinguishable=ens["indistinguishable"],
        sampler_kind=sampler_kind,
        sampler_options=sampler_options,
        objective=objective,
        trainer=trainer,
        estimation=estimation,
        seed=seed,
    )
    if not curve:
        spec.stages, spec._feat = _stages(raw, objective)
        spec.reference = _reference(raw.get("reference", {}), system)
    from boltzgen._run import check_memory, check_pipeline

    try:  # before the sampler is built: its arrays grow with the system too
        check_memory(system, objective, trainer, estimation, spec.stages, spec.reference)
    except ValueError as err:
        raise SpecError(str(err)) from None
    sampler = _checked_sampler(spec)
    if not curve:
        try:
            check_pipeline(
                system, sampler, objective, trainer, estimation, spec.stages, spec.reference
            )
        except ValueError as err:
            raise SpecError(str(err).splitlines()[0]) from None
    else:
        try:
            objective.check(system, sampler)
        except ValueError as err:
            raise SpecError(str(err).splitlines()[0]) from None
    return spec


def _merged_system(given: dict | None, default: dict) -> dict:
    """The ``[system]`` section: the packaged default's, updated by the user's keys.

    If the user names another kind, its parameters take that kind's own defaults instead.
    """
    if given is None:
        return dict(default)
    if given.get("kind", default["kind"]) != default["kind"]:
        return dict(given)
    return {**default, **given}


def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise SpecError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return seed


def _system(section: dict):
    from boltzgen.systems import SYSTEMS, make_system

    params = dict(section)
    kind = params.pop("kind", "coulomb")
    if kind not in SYSTEMS:
        raise SpecError(f"unknown system.kind {kind!r}; valid: {', '.join(SYSTEMS)}")
    try:
        system = make_system(kind, **params)
    except ValueError as err:
        raise SpecError(_prefix("system", err)) from None
    except MemoryError:
        raise SpecError("system: the requested size does not fit in memory") from None
    return system, {"kind": kind, **SYSTEMS[kind].defaults(), **params}


def _ensemble(section: dict, default: dict, system) -> dict:
    allowed = ("beta", "betas", "indistinguishable")
    for key in section:
        if key not in allowed:
            raise SpecError(f"unknown key ensemble.{key}; valid: {', '.join(allowed)}")
    if "beta" in section and "betas" in section:
        raise SpecError(
            "give ensemble.beta (one run) or ensemble.betas (a free-energy curve), not both"
        )
    indist = section.get("indistinguishable", False)
    if not isinstance(indist, bool):
        raise SpecError(f"ensemble.indistinguishable must be true or false, got {indist!r}")
    betas = section.get("betas")
    if betas is not None:
        from boltzgen._curve import check_betas

        if not isinstance(betas, list):
            raise SpecError(f"ensemble.betas must be a list of numbers, got {betas!r}")
        if any(isinstance(b, bool) or not isinstance(b, int | float) for b in betas):
            raise SpecError(f"ensemble.betas must be a list of numbers, got {betas!r}")
        try:
            check_betas(betas)
        except ValueError as err:
            raise SpecError(f"ensemble.{err}") from None
        if not getattr(system, "discrete", False):
            raise SpecError(
                f"ensemble.betas (one beta-conditioned training for a free-energy curve) needs a "
                f"spin system; {system.kind!r} is continuous: give ensemble.beta"
            )
        if indist:
            raise SpecError("ensemble.indistinguishable does not apply to spin curves")
        return {"beta": None, "betas": [float(b) for b in betas], "indistinguishable": False}
    beta = section.get("beta", default["beta"])
    if isinstance(beta, bool) or not isinstance(beta, int | float):
        raise SpecError(f"ensemble.beta must be a positive finite number, got {beta!r}")
    if not (math.isfinite(beta) and beta > 0):
        raise SpecError(f"ensemble.beta must be a positive finite number, got {beta!r}")
    return {"beta": float(beta), "betas": None, "indistinguishable": indist}


def _no_single_run_pieces(raw: dict) -> None:
    """A curve run has no refinement, reference or data: such sections are errors."""
    for name in ("refine", "reference", "data", "matching"):
        if name in raw:
            raise SpecError(
                f"section [{name}] does not apply to a free-energy curve (ensemble.betas); "
                "remove it or give ensemble.beta"
            )
    objective = raw.get("train", {}).get("objective", "auto")
    if objective not in ("auto", "beta_range"):
        raise SpecError(
            f"train.objective {objective!r} does not apply to a free-energy curve "
            "(ensemble.betas): use 'beta_range' (the default)"
        )


def _sampler(section: dict, system, ens) -> tuple[str, dict]:
    from boltzgen.flows import SAMPLERS, default_sampler_kind

    opts = dict(section)
    kind = opts.pop("kind", "auto")
    if kind == "auto":
        kind = default_sampler_kind(system)
    if kind not in SAMPLERS:
        raise SpecError(f"unknown sampler.kind {kind!r}; valid: auto, {', '.join(SAMPLERS)}")
    entry = SAMPLERS[kind]
    if ens["betas"] is not None:
        if "beta_conditioned" not in entry.params:
            raise SpecError(f"sampler {kind!r} cannot be beta-conditioned (ensemble.betas)")
        if opts.get("beta_conditioned") is False:
            raise SpecError("ensemble.betas needs sampler.beta_conditioned = true (the default)")
        for k in ("beta_min", "beta_max"):
            if k in opts:
                raise SpecError(f"sampler.{k} is set from ensemble.betas; remove it")
        betas = ens["betas"]
        opts.update(beta_conditioned=True, beta_min=min(betas), beta_max=max(betas))
    elif opts.get("beta_conditioned"):
        raise SpecError(
            "sampler.beta_conditioned = true needs ensemble.betas (a free-energy curve); "
            "set ensemble.betas = [...] or sampler.beta_conditioned = false"
        )
    return kind, {**entry.defaults(), **opts}


def _checked_sampler(spec: RunSpec):
    try:
        return spec.build_sampler()
    except ValueError as err:
        raise SpecError(_prefix("sampler", err)) from None


def _objective(raw: dict, system, sampler_kind: str, sampler_options: dict, curve: bool):
    """The objective of ``[train]`` (with ``finetune_*``: wrapped in FineTuned)."""
    from boltzgen.train import FineTuned, default_objective

    train = dict(raw.get("train", {}))
    given = {k: train.pop(k) for k in _FINETUNE_KEYS if k in train}
    name = train.get("objective", "auto")
    default = None
    if name == "auto" and not curve:
        default = default_objective(system, sampler_kind=sampler_kind)
    base = _base_objective(raw, train, system, sampler_options, curve, default)
    steps = given.get("finetune_steps")
    if steps is not None:
        steps = _coerce("train.finetune_steps", steps, int)
        if steps < 0:
            raise SpecError(f"train.finetune_steps must be an integer >= 0, got {steps!r}")
    else:
        steps = default.steps if isinstance(default, FineTuned) else 0
    if steps == 0:
        for k in ("finetune_learning_rate", "finetune_batch_size"):
            if k in given:
                raise SpecError(f"train.{k} needs train.finetune_steps >= 1")
        return base
    if not base.needs_data:
        raise SpecError(
            f"train.finetune_steps applies to the data objectives (flow_matching, "
            f"maximum_likelihood, interpolant); train.objective is {base.name!r}"
        )
    kwargs = {"steps": steps}
    if "finetune_learning_rate" in given:
        kwargs["learning_rate"] = _coerce(
            "train.finetune_learning_rate", given["finetune_learning_rate"], float
        )
    if "finetune_batch_size" in given:
        kwargs["batch_size"] = _coerce(
            "train.finetune_batch_size", given["finetune_batch_size"], int
        )
    try:
        return FineTuned(base, **kwargs)
    except ValueError as err:
        raise SpecError(f"train.{str(err).splitlines()[0]}") from None


def _base_objective(raw, train, system, sampler_options, curve, default):
    from boltzgen.train import OBJECTIVE_CLASSES, BetaRange, FineTuned, HMCData

    name = train.get("objective", "auto")
    if not isinstance(name, str):
        raise SpecError(f"train.objective must be a string, got {name!r}")
    if name == "auto":
        if curve:
            cls = BetaRange
        else:
            cls = type(default.base) if isinstance(default, FineTuned) else type(default)
    elif name in OBJECTIVE_CLASSES:
        cls = OBJECTIVE_CLASSES[name]
    else:
        raise SpecError(
            f"unknown train.objective {name!r}; valid: auto, {', '.join(OBJECTIVE_CLASSES)}"
        )
    own = settable_fields(cls)
    values = {k: v for k, v in train.items() if k in own}
    if values.get("beta_anneal") == "auto":
        del values["beta_anneal"]
    fixed = {}
    if cls.needs_data:
        data = dict(raw.get("data", {}))
        if default is not None and cls.name == getattr(default, "base", default).name:
            # the default objective's own data settings, under the user's [data]
            data = {**fields_of(getattr(default, "base", default).data), **data}
        fixed["data"] = build(HMCData, "data", data)
        matching = dict(raw.get("matching", {}))
        for key in _FEAT_KEYS:
            matching.pop(key, None)  # the FEAT stage's keys (checked there)
        for key in matching:
            if key not in own:
                valid = ", ".join(
                    [k for k in ("pairing", "gamma_scale") if k in own]
                    + (list(_FEAT_KEYS) if "gamma_scale" in own else [])
                )
                raise SpecError(
                    f"unknown key matching.{key} for objective {name!r}; valid: {valid}"
                )
        build(cls, "matching", matching, **fixed)  # errors in [matching] keys name that section
        values.update(matching)
        if "field" in own:  # the interpolant's fields take the CNF sampler's architecture
            for key in ("hidden", "depth", "field", "n_rbf", "r_max"):
                if key in sampler_options and sampler_options[key] != "auto":
                    values.setdefault(key, sampler_options[key])
    else:
        for section in ("data", "matching"):
            if section in raw:
                raise SpecError(
                    f"section [{section}] applies to the data objectives (flow_matching, "
                    f"maximum_likelihood, interpolant); train.objective is {cls.name!r}"
                )
    return build(cls, "train", values, **fixed)


def _trainer(train: dict, objective):
    from boltzgen.train import FineTuned, Trainer

    base = objective.base if isinstance(objective, FineTuned) else objective
    mine = list(settable_fields(type(base)))
    if base.needs_data:  # the data objectives' other fields are in [data] / [matching]
        mine = [k for k in mine if k in _DATA_OBJECTIVE_TRAIN_KEYS]
    extra_valid = ["objective", *mine, *(_FINETUNE_KEYS if base.needs_data else ())]
    values = {k: v for k, v in train.items() if k not in extra_valid}
    return build(Trainer, "train", values, extra_valid=extra_valid)


def _estimation(section: dict):
    from boltzgen._estimation import Estimation

    return build(Estimation, "estimate", section)


def _stages(raw: dict, objective) -> tuple[tuple, Any]:
    from boltzgen.stages import FEAT, REFINERS, HeldOutData

    stages = []
    feat = None
    if getattr(objective, "needs_data", False) and objective.data.n_holdout > 0:
        stages.append(HeldOutData())
    matching = raw.get("matching", {})
    if objective.name == "interpolant":
        try:
            feat = build(
                FEAT, "matching", {_FEAT_KEYS[k]: v for k, v in matching.items() if k in _FEAT_KEYS}
            )
        except SpecError as err:  # name the spec's keys (feat_paths), not the stage's (paths)
            msg = str(err)
            for key, name in _FEAT_KEYS.items():
                msg = msg.replace(f"matching.{name} ", f"matching.{key} ")
            raise SpecError(msg) from None
        stages.append(feat)
    elif any(k in matching for k in _FEAT_KEYS):
        key = next(k for k in matching if k in _FEAT_KEYS)
        raise SpecError(
            f"matching.{key} sets FEAT paths, which need train.objective = "
            f"'interpolant', got {objective.name!r}"
        )
    section = dict(raw.get("refine", {}))
    method = section.pop("method", "nmcmc")
    if not isinstance(method, str):
        raise SpecError(f"refine.method must be a string, got {method!r}")
    if method == "none":
        if section:
            raise SpecError(f"unknown key refine.{sorted(section)[0]} for method 'none'")
    elif method in REFINERS:
        stages.append(build(REFINERS[method], "refine", section, extra_valid=["method"]))
    else:
        raise SpecError(f"unknown refine.method {method!r}; valid: {', '.join(REFINERS)}, none")
    return tuple(stages), feat


def _reference(section: dict, system):
    from boltzgen.references import default_reference, reference_class

    section = dict(section)
    method = section.pop("method", "auto")
    if not isinstance(method, str):
        raise SpecError(f"reference.method must be a string, got {method!r}")
    if method == "none" or (method == "auto" and default_reference(system) is None):
        if section:
            raise SpecError(f"unknown key reference.{sorted(section)[0]} for method 'none'")
        return None
    if method == "auto":
        cls = type(default_reference(system))
    else:
        try:
            cls = reference_class(method, system)
        except ValueError as err:
            raise SpecError(str(err)) from None
    ref = build(cls, "reference", section, extra_valid=["method"])
    try:
        ref.check(system)
    except ValueError as err:
        raise SpecError(str(err).splitlines()[0]) from None
    return ref


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return (
            repr(v)
            if math.isfinite(v)
            else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
        )
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")
