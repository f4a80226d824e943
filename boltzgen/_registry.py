"""Registries of named, parametrised things (systems, samplers): one entry type, one checker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    """A registered family: its parameters (name → (types, default, doc)) and its builder."""

    kind: str
    summary: str
    params: dict[str, tuple[type | tuple[type, ...], Any, str]]
    build: Any

    def defaults(self) -> dict[str, Any]:
        """Default value of every parameter."""
        return {k: v[1] for k, v in self.params.items()}


def resolve(section: str, kind: str, table: dict[str, Entry], params: dict) -> tuple[Entry, dict]:
    """Look ``kind`` up in ``table`` and return its entry and the checked, defaulted parameters.

    Raises:
        ValueError: unknown kind or parameter (the message lists the valid ones), or a value of
            the wrong type (named as ``section.name``).
    """
    if kind not in table:
        raise ValueError(f"unknown {section} kind {kind!r}; valid kinds: {', '.join(table)}")
    entry = table[kind]
    unknown = set(params) - set(entry.params)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(sorted(unknown))} for {section} {kind!r}; "
            f"valid: {', '.join(entry.params)}"
        )
    full = entry.defaults() | params
    for name, (types, _, _) in entry.params.items():
        value = full[name]
        allowed = types if isinstance(types, tuple) else (types,)
        bad_bool = isinstance(value, bool) and bool not in allowed  # bool is an int subclass
        if bad_bool or not isinstance(value, types):
            want = (
                types.__name__
                if isinstance(types, type)
                else " or ".join(t.__name__ for t in types)
            )
            raise ValueError(f"{section}.{name} must be {want}, got {value!r}")
    return entry, full
