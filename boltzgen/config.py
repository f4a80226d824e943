"""TOML run specs → validated plain dicts, with one-line errors that name the bad key or value.

A spec has the sections of DESIGN.md ("Run spec"): ``[system]``, ``[ensemble]``, ``[sampler]``,
``[train]``, ``[data]`` and ``[matching]`` (data-based objectives), ``[estimate]``,
``[refine]``, ``[reference]`` and a top-level ``seed``. Every key
has a default (the seed demo: the 2-D Coulomb gas, N = 6, β = 10), so an empty spec is a valid
run.
"""

from __future__ import annotations

import copy
import math
import tomllib
from typing import Any

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

#: Defaults of the sections whose keys are fixed here (system and sampler keys belong to
#: their registries, refine and reference keys to their methods).
DEFAULTS: dict[str, Any] = {
    "system": {"kind": "coulomb"},
    "ensemble": {"beta": 10.0, "indistinguishable": False, "betas": []},
    "sampler": {"kind": "auto"},
    "train": {
        "objective": "auto",
        "beta_anneal": "auto",
        "steps": 1500,
        "batch_size": 256,
        "learning_rate": 2e-3,
        "clip": 10.0,
        "checkpoint_every": 500,
    },
    "estimate": {"n_samples": 65536, "chunk_size": 8192, "n_boot": 200},
    "data": {},  # Monte Carlo training data of train.objective = flow_matching | interpolant
    "matching": {},  # pairing, interpolant γ and FEAT path options
    "refine": {"method": "nmcmc"},
    "reference": {"method": "auto"},
    "seed": 0,
}

_INT, _NUM, _BOOL, _STR = (int,), (int, float), (bool,), (str,)
_TYPES = {
    "ensemble": {"beta": _NUM, "indistinguishable": _BOOL, "betas": (list,)},
    "train": {
        "objective": _STR,
        "beta_anneal": (int, float, str),
        "steps": _INT,
        "batch_size": _INT,
        "learning_rate": _NUM,
        "clip": _NUM,
        "checkpoint_every": _INT,
    },
    "estimate": {"n_samples": _INT, "chunk_size": _INT, "n_boot": _INT},
}
_POSITIVE = {
    "ensemble.beta",
    "train.batch_size",
    "train.learning_rate",
    "train.clip",
    "train.checkpoint_every",
    "estimate.chunk_size",
}


class SpecError(ValueError):
    """A bad run spec: the message is one line naming the bad key or value."""


def load_spec(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Read a TOML spec (or the built-in default when ``path`` is None), apply ``--set`` overrides.

    Args:
        path: TOML file, or None for the default run.
        overrides: strings ``section.key=value``; the value is parsed as TOML
            (``2.0``, ``true``, ``"x"``) and taken as a plain string if that fails.

    Returns:
        The validated spec with every default filled in.

    Raises:
        SpecError: unreadable file, TOML syntax error, unknown key, wrong type or bad value.
    """
    raw: dict = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise SpecError(f"spec file not found: {path}") from None
        except tomllib.TOMLDecodeError as err:
            raise SpecError(f"{path}: invalid TOML: {err}") from None
        except OSError as err:
            raise SpecError(f"cannot read spec {path}: {err.strerror}") from None
    for item in overrides:
        apply_override(raw, item)
    return validate(raw)


def apply_override(spec: dict, item: str) -> None:
    """Apply one ``section.key=value`` (or ``seed=value``) override to ``spec`` in place."""
    if "=" not in item:
        raise SpecError(f"--set expects section.key=value, got {item!r}")
    dotted, value_text = item.split("=", 1)
    parts = dotted.strip().split(".")
    if not all(parts) or len(parts) > 2:
        raise SpecError(f"--set expects section.key=value, got {item!r}")
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text
    if len(parts) == 1:
        spec[parts[0]] = value
    else:
        section = spec.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise SpecError(f"{parts[0]} is not a section; cannot set {dotted}")
        section[parts[1]] = value


def validate(raw: dict) -> dict:
    """Check every key and value of a spec and fill in defaults; raise :class:`SpecError`."""
    from boltzgen.flows import SAMPLERS, default_sampler_kind
    from boltzgen.systems import SYSTEMS, make_system

    unknown = set(raw) - set(SECTIONS) - {"seed"}
    if unknown:
        raise SpecError(
            f"unknown top-level key {sorted(unknown)[0]!r}; valid: {', '.join(SECTIONS)}, seed"
        )
    spec = copy.deepcopy(DEFAULTS)
    for name in SECTIONS:
        section = raw.get(name, {})
        if not isinstance(section, dict):
            raise SpecError(f"[{name}] must be a table, got {section!r}")
        spec[name] = {**spec[name], **section}
    spec["seed"] = raw.get("seed", DEFAULTS["seed"])
    if isinstance(spec["seed"], bool) or not isinstance(spec["seed"], int) or spec["seed"] < 0:
        raise SpecError(f"seed must be a non-negative integer, got {spec['seed']!r}")

    # Fixed-key sections.
    for name, types in _TYPES.items():
        for key, value in spec[name].items():
            if key not in types:
                raise SpecError(f"unknown key {name}.{key}; valid: {', '.join(types)}")
            want = types[key]
            if (isinstance(value, bool) and bool not in want) or not isinstance(value, want):
                names = " or ".join(
                    "number" if t is float else t.__name__
                    for t in want
                    if not (t is int and float in want)
                )
                raise SpecError(f"{name}.{key} must be {names}, got {value!r}")
            if f"{name}.{key}" in _POSITIVE and not value > 0:
                raise SpecError(f"{name}.{key} must be positive, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise SpecError(f"{name}.{key} must be finite, got {value!r}")
    betas = spec["ensemble"]["betas"]
    if betas and (
        len(betas) < 2
        or any(isinstance(b, bool) or not isinstance(b, int | float) for b in betas)
        or not all(math.isfinite(b) and b > 0 for b in betas)
        or max(betas) == min(betas)
    ):
        raise SpecError(
            f"ensemble.betas must be empty or >= 2 distinct positive numbers (a free-energy "
            f"curve from one β-conditioned training), got {betas!r}"
        )
    if spec["train"]["steps"] < 0:
        raise SpecError(f"train.steps must be >= 0, got {spec['train']['steps']!r}")
    if spec["estimate"]["n_samples"] < 2:
        raise SpecError(f"estimate.n_samples must be >= 2, got {spec['estimate']['n_samples']!r}")
    if spec["estimate"]["n_boot"] < 0:
        raise SpecError(f"estimate.n_boot must be >= 0, got {spec['estimate']['n_boot']!r}")
    from boltzgen._data import DATA_OBJECTIVES
    from boltzgen.train import OBJECTIVES

    OBJECTIVES = (*OBJECTIVES, *DATA_OBJECTIVES)  # noqa: N806
    if spec["train"]["objective"] not in ("auto", *OBJECTIVES):
        raise SpecError(
            f"unknown train.objective {spec['train']['objective']!r}; "
            f"valid: auto, {', '.join(OBJECTIVES)}"
        )
    anneal = spec["train"]["beta_anneal"]
    if anneal != "auto" and (isinstance(anneal, str) or not 0 <= anneal < 1):
        raise SpecError(f"train.beta_anneal must be 'auto' or a number in [0, 1), got {anneal!r}")

    # System: the registry knows its keys.
    sysspec = dict(spec["system"])
    kind = sysspec.pop("kind")
    if kind not in SYSTEMS:
        raise SpecError(f"unknown system.kind {kind!r}; valid: {', '.join(SYSTEMS)}")
    spec["system"] = {"kind": kind, **SYSTEMS[kind].defaults(), **sysspec}
    try:
        system = make_system(kind, **sysspec)
    except ValueError as err:
        raise SpecError(_prefix("system", err)) from None

    # Sampler: the flows registry knows its keys.
    samp = dict(spec["sampler"])
    skind = samp.pop("kind")
    if skind == "auto":
        skind = default_sampler_kind(system)
    if skind not in SAMPLERS:
        raise SpecError(f"unknown sampler.kind {skind!r}; valid: auto, {', '.join(SAMPLERS)}")
    entry = SAMPLERS[skind]
    spec["sampler"] = {"kind": skind, **entry.defaults(), **samp}
    from boltzgen.flows import make_sampler

    try:  # building it checks types and that the sampler suits the system (cheap: an init)
        import jax

        make_sampler(skind, system, key=jax.random.key(0), **samp)
    except ValueError as err:
        raise SpecError(_prefix("sampler", err)) from None

    if spec["sampler"].get("beta_conditioned") and not spec["ensemble"]["betas"]:
        raise SpecError(
            "sampler.beta_conditioned = true needs ensemble.betas (a free-energy curve); "
            "set ensemble.betas = [...] or sampler.beta_conditioned = false"
        )

    # Data-based training: Monte Carlo data and matching options (defaults filled in).
    from boltzgen._data import DATA_DEFAULTS, MATCHING_DEFAULTS, check_data_options

    try:
        check_data_options(spec["data"], spec["matching"])
    except ValueError as err:
        raise SpecError(_prefix("data/matching", err)) from None
    spec["data"] = {**DATA_DEFAULTS, **spec["data"]}
    spec["matching"] = {**MATCHING_DEFAULTS, **spec["matching"]}
    if (
        spec["train"]["objective"] in ("flow_matching", "interpolant")
        and spec["sampler"]["kind"] != "cnf"
    ):
        raise SpecError(
            f"train.objective {spec['train']['objective']!r} trains a continuous flow: set "
            f"sampler.kind = 'cnf', got {spec['sampler']['kind']!r}"
        )

    # Refinement and reference: each Monte Carlo method knows its keys.
    from boltzgen._run import (
        reference_defaults,
        refine_defaults,
        resolve_reference,
        resolve_refine,
    )

    for section, resolve, defaults in (
        ("refine", resolve_refine, lambda m: refine_defaults(m, system)),
        ("reference", lambda m: resolve_reference(m, system), reference_defaults),
    ):
        opts = dict(spec[section])
        method = opts.pop("method")
        if not isinstance(method, str):
            raise SpecError(f"{section}.method must be a string, got {method!r}")
        method = resolve(method)
        valid = defaults(method)
        bad = set(opts) - set(valid)
        if bad:
            raise SpecError(
                f"unknown key {section}.{sorted(bad)[0]} for method {method!r}; "
                f"valid: method{''.join(', ' + k for k in valid)}"
            )
        for key, value in opts.items():
            default = valid[key]
            want = (int, float) if isinstance(default, float) else type(default)
            if isinstance(default, bool) != isinstance(value, bool) or not isinstance(value, want):
                raise SpecError(f"{section}.{key} must be {type(default).__name__}, got {value!r}")
        spec[section] = {"method": method, **valid, **opts}
    from boltzgen._run import check_refine

    opts = {k: v for k, v in spec["refine"].items() if k != "method"}
    check_refine(spec["refine"]["method"], opts, system)
    return spec


def _prefix(section: str, err: Exception) -> str:
    msg = str(err).splitlines()[0]
    return msg if msg.startswith(section) else f"{section}: {msg}"


def to_toml(spec: dict) -> str:
    """Serialise a (validated, flat-sectioned) spec to TOML text."""
    lines = [f"seed = {_toml_value(spec['seed'])}", ""]
    for name in SECTIONS:
        lines.append(f"[{name}]")
        for key, value in spec[name].items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


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
