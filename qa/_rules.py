"""Explicit QA rules: the TOML file of ``--qa-rules``, read into :class:`RuleEntry` objects.

Format (``qa/README.md``): an array of tables ``[[protocol]]``, each with ``match`` (a protocol name
or glob, case ignored), optionally ``station`` (a station name or glob), and any of the parameters
of :data:`qa._compare.PARAMETERS` by their field name. A parameter is a bare value (exact) or a
table with ``value`` (exact), ``value`` and ``tolerance`` (absolute, in the parameter's unit),
``range = [low, high]`` (for every component and echo) or ``allowed = [...]`` (one of them).
Every problem is a :class:`mrdhelper.ConfigError` naming the file, the entry, the key and what is
wrong, with the closest valid key for a misspelt one. The first entry that matches a session's
protocol (and station) is its reference.
"""
from __future__ import annotations

import difflib
import fnmatch
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mrdhelper import ConfigError, describe, read_toml

from ._compare import BY_FIELD, PARAMETERS, Expectation, Parameter, normalise

ENTRY_KEYS = ("match", "station")
FORMS = ("value", "tolerance", "range", "allowed")


@dataclass(frozen=True)
class RuleEntry:
    """One ``[[protocol]]`` table: its position (from 1), globs and expectations."""

    index: int
    match: str
    station: Optional[str]
    expectations: tuple[Expectation, ...]

    def applies(self, protocol: str, station: str) -> bool:
        """Whether the entry's globs match the protocol and station (case ignored)."""
        return (fnmatch.fnmatchcase(protocol.casefold(), self.match.casefold())
                and (self.station is None or fnmatch.fnmatchcase(station.casefold(), self.station.casefold())))


def load_rules(path: Path) -> tuple[RuleEntry, ...]:
    """The entries of a rules file, in file order; ConfigError for anything that is not valid."""
    raw = read_toml(path)
    for key in raw:
        if key != "protocol":
            raise ConfigError(f"{path}: unknown key '{key}'{_closest(key, ['protocol'])}; "
                              f"the file holds [[protocol]] tables")
    entries = raw.get("protocol", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{path}: protocol must be an array of tables [[protocol]], got {describe(entries)}")
    return tuple(_entry(path, i, entry) for i, entry in enumerate(entries, start=1))


def _entry(path: Path, index: int, entry: dict[str, Any]) -> RuleEntry:
    match = entry.get("match")
    where = f"{path}: protocol entry {index}" + (f" ('{match}')" if isinstance(match, str) else "")
    if not isinstance(match, str) or not match.strip():
        raise ConfigError(f"{where}: match must be a protocol name or glob (a non-empty string), "
                          f"got {describe(match)}")
    station = entry.get("station")
    if station is not None and not (isinstance(station, str) and station.strip()):
        raise ConfigError(f"{where}: station must be a station name or glob (a non-empty string), "
                          f"got {describe(station)}")
    expectations = []
    for key, spec in entry.items():
        if key in ENTRY_KEYS:
            continue
        parameter = BY_FIELD.get(key)
        if parameter is None:
            raise ConfigError(f"{where}: unknown parameter key '{key}'"
                              f"{_closest(key, [*ENTRY_KEYS, *BY_FIELD])}")
        expectations.append(_expectation(f"{where}: {key}", parameter, spec))
    expectations.sort(key=lambda e: PARAMETERS.index(e.parameter))  # deviations in the table's order
    return RuleEntry(index, match.strip(), None if station is None else station.strip(), tuple(expectations))


def _expectation(where: str, parameter: Parameter, spec: Any) -> Expectation:
    """The expectation of one parameter key: a bare value or a table of one form."""
    if not isinstance(spec, dict):
        return Expectation(parameter, value=_value(where, parameter, spec))
    for key in spec:
        if key not in FORMS:
            raise ConfigError(f"{where}: unknown key '{key}'{_closest(key, FORMS)}; "
                              f"use value (with tolerance), range or allowed")
    forms = [k for k in ("value", "range", "allowed") if k in spec]
    if len(forms) != 1:
        raise ConfigError(f"{where}: give exactly one of value, range and allowed, got "
                          f"{' and '.join(forms) if forms else 'none'}")
    if "tolerance" in spec and "value" not in spec:
        raise ConfigError(f"{where}: tolerance needs a value")
    if parameter.kind == "text" and ("tolerance" in spec or "range" in spec):
        raise ConfigError(f"{where}: {'tolerance' if 'tolerance' in spec else 'range'} needs a number; "
                          f"{parameter.name} is text (give value or allowed)")
    if "range" in spec:
        bounds = spec["range"]
        if (not isinstance(bounds, list) or len(bounds) != 2 or not all(_is_number(b) for b in bounds)
                or bounds[0] > bounds[1]):
            raise ConfigError(f"{where}: range must be [low, high], two numbers with low <= high, "
                              f"got {describe(bounds)}")
        return Expectation(parameter, range=(float(bounds[0]), float(bounds[1])))
    if "allowed" in spec:
        allowed = spec["allowed"]
        if not isinstance(allowed, list) or not allowed:
            raise ConfigError(f"{where}: allowed must be a non-empty list of values, got {describe(allowed)}")
        return Expectation(parameter, allowed=tuple(_value(f"{where}: allowed[{i}]", parameter, v)
                                                    for i, v in enumerate(allowed)))
    tolerance = spec.get("tolerance")
    if tolerance is not None and not (_is_number(tolerance) and tolerance >= 0):
        unit = parameter.unit.strip() or "units of the value"
        raise ConfigError(f"{where}: tolerance must be a number >= 0 (in {unit}), got {describe(tolerance)}")
    return Expectation(parameter, value=_value(f"{where}: value", parameter, spec["value"]),
                       tolerance=None if tolerance is None else float(tolerance))


def _value(where: str, parameter: Parameter, value: Any) -> Any:
    """A value of the parameter's kind, normalised; ConfigError naming the expected type."""
    kind = parameter.kind
    if kind == "text":
        ok = isinstance(value, str)
        expected = "a string"
    elif kind in ("int", "float"):
        ok = _is_number(value) and (kind == "float" or isinstance(value, int))
        expected = "an integer" if kind == "int" else "a number"
    elif kind == "echoes":
        ok = _is_number(value) or (isinstance(value, list) and value and all(_is_number(v) for v in value))
        expected = "a number or a list of numbers (the echo times)"
    else:
        component = int if kind == "ints" else float
        ok = (isinstance(value, list) and len(value) == parameter.length
              and all(_is_number(v) and (component is float or isinstance(v, int)) for v in value))
        expected = f"a list of {parameter.length} {'integers' if kind == 'ints' else 'numbers'}"
    if not ok:
        raise ConfigError(f"{where} must be {expected}, got {describe(value)}")
    return normalise(parameter, value)


def _is_number(value: Any) -> bool:
    """An int or a finite float, not a bool (TOML's inf and nan are no values to compare with)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _closest(key: str, valid: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest valid key (one it begins, ``tr`` → ``tr_ms``, else
    the most similar), or nothing."""
    valid = list(valid)
    match = [v for v in valid if v.startswith(key)][:1] or difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""
