"""TOML configuration files of the spiral modules (never dispatched: leading ``_``).

A module describes its settings as a dataclass whose fields are the TOML keys (top level and
``[reconstruction]``/``[binning]`` tables merged), with defaults; :func:`load` reads the file
named by the JSON parameter ``spiral_config`` if the client sent one, else the first of
``<dir>/<file_name>`` that exists (FIRE share first, then the repository's ``configs/``), and
:func:`check_types` rejects values of the wrong type with :class:`ConfigError`.
"""
from __future__ import annotations

import dataclasses
import logging
import tomllib
from pathlib import Path
from typing import Any, TypeVar

import mrdhelper
from _images import ConfigError

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parents[1]
CONFIG_DIRS = (Path("/tmp/share/configs"), REPO_DIR / "configs")
SECTIONS = ("reconstruction", "binning")
T = TypeVar("T")
_TYPES = {"list": list, "str": str, "bool": bool, "int": int, "float": (int, float)}


def load(cls: type[T], config: Any, file_name: str) -> T:
    """Settings of ``cls`` from the session's TOML file, defaults where it is silent or absent."""
    given = mrdhelper.get_json_config_param(config, "spiral_config")
    candidates = [Path(given)] if given else [d / file_name for d in CONFIG_DIRS]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        log.info("No %s found (%s); using the defaults", file_name, ", ".join(map(str, candidates)))
        return cls()
    with open(path, "rb") as f:
        try:
            values = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    for section in SECTIONS:
        values.update(values.pop(section, {}))
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    log.info("Configuration from %s", path)
    return cls(**values)


def check_types(settings: Any, file_name: str) -> None:
    """ConfigError naming the key when a value does not have its field's type."""
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        expected = _TYPES[field.type]
        if not isinstance(value, expected) or (field.type in ("int", "float") and isinstance(value, bool)):
            raise ConfigError(f"{file_name}: {field.name} = {value!r} is not a {field.type}")


def resolve(path: str) -> Path:
    """A configured path: absolute, relative to the working directory, else to the repository."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else REPO_DIR / p
