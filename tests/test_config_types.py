"""modules/_toml.check_types reads a config dataclass's type hints with typing.get_type_hints, so
generic and optional hints (``list[str]``, ``float | None``) work in a module's settings."""
from __future__ import annotations

import dataclasses
import sys
from typing import Optional

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "modules"))
import _toml  # noqa: E402
from _errors import ConfigError  # noqa: E402


@dataclasses.dataclass
class Settings:
    paths: list[str] = dataclasses.field(default_factory=list)
    limit: float | None = None
    count: Optional[int] = None
    name: str = ""
    on: bool = False
    table: dict[str, int] = dataclasses.field(default_factory=dict)


@pytest.mark.parametrize("values", [
    {"paths": ["a", "b"], "limit": 2.5, "count": 3, "name": "x", "on": True, "table": {"a": 1}},
    {"paths": [], "limit": 2, "table": {}},  # an int is a float
])
def test_values_of_the_hinted_types_pass(values):
    _toml.check_types(Settings, values, "s.toml")


@pytest.mark.parametrize("values, expected", [
    ({"paths": "a"}, "paths must be a list, got str 'a'"),
    ({"paths": ["a", 1]}, "paths must be a list of str, got list ['a', 1]"),
    ({"limit": "2"}, "limit must be a float, got str '2'"),
    ({"limit": True}, "limit must be a float, got bool True"),
    ({"count": 1.5}, "count must be an int, got float 1.5"),
    ({"on": 1}, "on must be a bool, got int 1"),
    ({"table": {"a": "1"}}, "table must be a dict of str to int, got dict {'a': '1'}"),
])
def test_values_of_other_types_name_the_hinted_type(values, expected):
    with pytest.raises(ConfigError) as info:
        _toml.check_types(Settings, values, "s.toml")
    assert str(info.value) == f"s.toml: {expected}"


def test_config_error_is_the_one_of_mrdhelper_and_the_server_logs_it_in_one_line():
    import mrdhelper
    from connection import MrdError
    assert _toml.ConfigError is ConfigError is mrdhelper.ConfigError
    assert issubclass(ConfigError, MrdError) and issubclass(ConfigError, ValueError)
