"""TOML configuration files of the spiral modules (never dispatched: leading ``_``).

A module describes its settings as a dataclass whose fields are the TOML keys (top level and
``[reconstruction]``/``[binning]`` tables merged), with defaults; :func:`load` reads the file
named by the JSON parameter ``spiral_config`` if the client sent one (a :class:`ConfigError` when
it is not a file), else the first of ``<dir>/<file_name>`` that exists (FIRE share first, then the
repository's ``configs/``), and takes the defaults when there is none.  Every error names the file
used (its full path): :func:`check_types` rejects values of the wrong type, naming the key with
its table, and the dataclass's own value checks (``__post_init__``) are prefixed with the path.
Unknown keys are ignored with a warning, to the log and to the client, that suggests the closest
valid key.  :class:`ConfigError` (``mrdhelper``'s, through ``_errors``) is importable from here,
next to the reader that raises it.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Optional, TypeVar

import constants
import mrdhelper
from _errors import ConfigError

__all__ = ["ConfigError", "check_types", "load", "resolve"]

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parents[1]
CONFIG_DIRS = (Path("/tmp/share/configs"), REPO_DIR / "configs")
SECTIONS = ("reconstruction", "binning")
T = TypeVar("T")


def load(cls: type[T], config: Any, file_name: str, connection: Any) -> T:
    """Settings of ``cls`` from the session's TOML file, defaults where it is silent or absent.

    ``connection`` receives the warnings about unknown keys as MRD warning texts.
    """
    path = _config_path(config, file_name)
    if path is None:
        return cls()
    values, tables = _read(path)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in [k for k in values if k not in names]:
        text = _unknown_key_text(path, key, tables.get(key), names)
        log.warning(text)
        connection.send_logging(constants.MRD_LOGGING_WARNING, text)
        del values[key]
    check_types(cls, values, path, tables)
    log.info("Configuration from %s", path)
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _config_path(config: Any, file_name: str) -> Optional[Path]:
    """The TOML file to read: ``spiral_config`` of the JSON (which must exist), else the first
    ``<dir>/<file_name>`` found; None when there is none (the defaults apply)."""
    given = mrdhelper.get_json_config_param(config, "spiral_config", None, "str")
    if given:
        path = Path(given).absolute()
        if not path.is_file():
            raise ConfigError(f"JSON configuration: parameters.spiral_config: no such file {path}")
        return path
    candidates = [d / file_name for d in CONFIG_DIRS]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        log.info("No %s found (%s); using the defaults", file_name, ", ".join(map(str, candidates)))
    return path


def _read(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's keys, tables merged into the top level, and the table each merged key came from."""
    raw = mrdhelper.read_toml(path)
    values, tables = {}, {}
    for key, value in raw.items():
        if key not in SECTIONS:
            values[key] = value
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {key} must be a table [{key}], got {mrdhelper.describe(value)}")
        values.update(value)
        tables.update(dict.fromkeys(value, key))
    return values, tables


def _key_label(key: str, table: Optional[str]) -> str:
    """``[reconstruction] arms_per_frame`` for a key of a table, the bare key at the top level."""
    return f"[{table}] {key}" if table else key


def _unknown_key_text(path: Path | str, key: str, table: Optional[str], names: set[str]) -> str:
    """The warning for a key that is no setting, with the closest setting (or table) name."""
    where = f"[{table}] " if table else ""
    text = f"{path}: {where}unknown key '{key}' ignored"
    match = difflib.get_close_matches(key, sorted(names | set(SECTIONS)), n=1)
    return f"{text} (did you mean '{match[0]}'?)" if match else text


def _type_name(kind: Any) -> str:
    """``int`` -> ``an int``, ``list[str]`` -> ``a list of str``, ``float | None`` -> ``a float``
    (TOML has no null: an optional setting is given by its type or left out)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(k) for k in args if k is not type(None))
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        inner = [getattr(a, "__name__", str(a)) for a in args]
        if origin is list and inner:
            return f"a list of {inner[0]}"
        if origin is dict and len(inner) == 2:
            return f"a dict of {inner[0]} to {inner[1]}"
        return f"a {name}"
    name = getattr(kind, "__name__", str(kind))
    return f"an {name}" if name[:1] in "aeiou" else f"a {name}"


def _mismatch(kind: Any, value: Any) -> Optional[str]:
    """None when ``value`` has the type ``kind`` (a type hint); else the expected type in words,
    at the level where it differs (``a list`` for a string, ``a list of str`` for ``[1]``).

    An int is a float; a bool is neither; ``Any`` takes everything."""
    if kind is Any:
        return None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return None if any(_mismatch(k, value) is None for k in args) else _type_name(kind)
    if origin is not None:  # list[str], dict[str, int], tuple[int, ...]
        if not isinstance(value, origin):
            return _type_name(origin)
        if origin is list and args and any(_mismatch(args[0], v) is not None for v in value):
            return _type_name(kind)
        if origin is dict and len(args) == 2 and any(
                _mismatch(args[0], k) is not None or _mismatch(args[1], v) is not None for k, v in value.items()):
            return _type_name(kind)
        return None
    if kind is type(None):
        return None if value is None else "none"
    if isinstance(value, bool) and kind is not bool:
        return _type_name(kind)
    if kind is float:
        return None if isinstance(value, (int, float)) else _type_name(kind)
    return None if isinstance(value, kind) else _type_name(kind)


def check_types(cls: type, values: Mapping[str, Any], source: Path | str,
                tables: Optional[Mapping[str, str]] = None) -> None:
    """ConfigError ``<source>: [table] key must be an int, got list [1, 2]`` for the first value
    that does not have its field's type (the dataclass's type hints, resolved with
    ``typing.get_type_hints``: ``list[str]`` and ``float | None`` work; an int is a float; a bool
    is neither)."""
    kinds = typing.get_type_hints(cls)
    tables = tables or {}
    for key, value in values.items():
        expected = _mismatch(kinds[key], value)
        if expected is not None:
            raise ConfigError(f"{source}: {_key_label(key, tables.get(key))} must be "
                              f"{expected}, got {mrdhelper.describe(value)}")


def resolve(path: str) -> Path:
    """A configured path: absolute, relative to the working directory, else to the repository."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else REPO_DIR / p
