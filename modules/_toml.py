"""TOML configuration files of the spiral modules (never dispatched: leading ``_``).

A module describes its settings as a dataclass whose fields are the TOML keys (top level and
``[reconstruction]``/``[binning]`` tables merged), with defaults; :func:`load` reads the file
named by the JSON parameter ``spiral_config`` if the client sent one (a :class:`ConfigError` when
it is not a file), else the first of ``<dir>/<file_name>`` that exists (FIRE share first, then the
repository's ``configs/``), and takes the defaults when there is none.  Every error names the file
used (its full path): :func:`check_types` rejects values of the wrong type, naming the key with
its table, and the dataclass's own value checks (``__post_init__``) are prefixed with the path.
Unknown keys are ignored with a warning, to the log and to the client, that suggests the closest
valid key.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import tomllib
from pathlib import Path
from typing import Any, Mapping, Optional, TypeVar

import constants
import mrdhelper
from _images import ConfigError

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parents[1]
CONFIG_DIRS = (Path("/tmp/share/configs"), REPO_DIR / "configs")
SECTIONS = ("reconstruction", "binning")
T = TypeVar("T")
_TYPES = {"list": list, "str": str, "bool": bool, "int": int, "float": (int, float)}
_ARTICLES = {"int": "an int"}


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
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from exc
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


def check_types(cls: type, values: Mapping[str, Any], source: Path | str,
                tables: Optional[Mapping[str, str]] = None) -> None:
    """ConfigError ``<source>: [table] key must be an int, got list [1, 2]`` for the first value
    that does not have its field's type (an int is a float; a bool is neither)."""
    kinds = {f.name: f.type for f in dataclasses.fields(cls)}
    tables = tables or {}
    for key, value in values.items():
        kind = kinds[key]
        if not isinstance(value, _TYPES[kind]) or (kind in ("int", "float") and isinstance(value, bool)):
            raise ConfigError(f"{source}: {_key_label(key, tables.get(key))} must be "
                              f"{_ARTICLES.get(kind, 'a ' + kind)}, got {mrdhelper.describe(value)}")


def resolve(path: str) -> Path:
    """A configured path: absolute, relative to the working directory, else to the repository."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else REPO_DIR / p
