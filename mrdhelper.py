"""Helper functions imported by reconstruction modules as ``import mrdhelper``.

Provides the same names and behaviour as python-ismrmrd-server's ``mrdhelper`` so that its
modules run unchanged: copying geometry from a readout into an image header, reading
``userParameters`` from the parsed MRD header, reading JSON config parameters, parsing values
out of a Siemens ICE MiniHeader, and building/parsing ``ROI_*`` and ``Text_*`` MetaAttributes.
:class:`ConfigError` is the error of a configuration value a module cannot use (a ValueError, so
upstream-style ``except ValueError`` still catches it).
"""

import base64
import logging
import re
import tomllib
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from connection import MrdError

# Fields copied one-to-one from an AcquisitionHeader into an ImageHeader.
_HEADER_FIELDS = (
    'version', 'flags', 'measurement_uid',
    'position', 'read_dir', 'phase_dir', 'slice_dir', 'patient_table_position',
    'acquisition_time_stamp', 'physiology_time_stamp', 'user_int', 'user_float',
)
# Fields of AcquisitionHeader.idx that have a same-named ImageHeader field.
_IDX_FIELDS = ('average', 'slice', 'contrast', 'phase', 'repetition', 'set')

_IMTYPE_MAGNITUDE = 1


class ConfigError(MrdError, ValueError):
    """A configuration value (JSON parameter, TOML setting, module option) the module cannot use."""


def describe(value: Any) -> str:
    """Type and value of a configuration value for error texts: ``list [3]``, ``str 'abc'``, ``null``."""
    return 'null' if value is None else f'{type(value).__name__} {value!r}'


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's tables; a :class:`ConfigError` naming the file when it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from exc


def update_img_header_from_raw(imgHead: Any, rawHead: Any) -> Any:
    """Copy readout geometry, counters and user fields from ``rawHead`` into ``imgHead``.

    ``rawHead`` is an ``ismrmrd.AcquisitionHeader``, ``imgHead`` an ``ismrmrd.ImageHeader``.
    Afterwards image_type = 1 (magnitude), image_index = 1 and image_series_index = 0;
    data_type, matrix_size, channels and field_of_view are left untouched.
    Returns ``imgHead`` (unchanged if ``rawHead`` is None).
    """
    if rawHead is None:
        return imgHead
    for field in _HEADER_FIELDS:
        setattr(imgHead, field, getattr(rawHead, field))
    for field in _IDX_FIELDS:
        setattr(imgHead, field, getattr(rawHead.idx, field))
    imgHead.image_type = _IMTYPE_MAGNITUDE
    imgHead.image_index = 1
    imgHead.image_series_index = 0
    return imgHead


def _find_user_parameter(metadata: Any, list_name: str, name: str) -> Any:
    """Raw value of the first ``userParameters.<list_name>`` entry called ``name``, else None."""
    user_params = getattr(metadata, 'userParameters', None)
    for param in getattr(user_params, list_name, None) or ():
        if param.name == name:
            return param.value
    return None


def get_userParameterLong_value(metadata: Any, name: str) -> Optional[int]:
    """``int`` value of the named userParameterLong, or None if absent."""
    value = _find_user_parameter(metadata, 'userParameterLong', name)
    return None if value is None else int(value)


def get_userParameterDouble_value(metadata: Any, name: str) -> Optional[float]:
    """``float`` value of the named userParameterDouble, or None if absent."""
    value = _find_user_parameter(metadata, 'userParameterDouble', name)
    return None if value is None else float(value)


def get_userParameterString_value(metadata: Any, name: str) -> Optional[str]:
    """``str`` value of the named userParameterString, or None if absent."""
    value = _find_user_parameter(metadata, 'userParameterString', name)
    return None if value is None else str(value)


def get_userParameterBase64_value(metadata: Any, name: str) -> Optional[str]:
    """Decoded UTF-8 text of the named userParameterBase64, or None if absent.

    The ismrmrd xsdata model already base64-decodes the value to ``bytes``; a ``str`` value
    (e.g. from another object model) is base64-decoded here.
    """
    value = _find_user_parameter(metadata, 'userParameterBase64', name)
    if value is None:
        return None
    if isinstance(value, str):
        value = base64.b64decode(value)
    return value.decode('utf-8')


def get_meta_value(meta: Any, key: str) -> Any:
    """``meta[key]`` (e.g. of an ``ismrmrd.Meta``); None if the key or the mapping is missing."""
    try:
        return meta[key]
    except (KeyError, TypeError, IndexError):
        return None


def get_json_config_param(config: Any, key: str, default: Any = None, type: str = 'str') -> Any:
    """Value of ``config['parameters'][key]`` converted according to ``type``.

    Returns ``default`` when ``config`` is not a dict, has no ``parameters`` dict or lacks ``key``.
    Valid values convert as in python-ismrmrd-server: 'int' -> an int, a whole float or a string
    ``int()`` parses ("5" -> 5); 'float'/'double' -> an int, float or string ``float()`` parses;
    'str'/'string'/'choice' -> ``str(v)`` of a string, number or bool; 'bool'/'boolean' -> a bool as
    is, a string True if it contains "true" (any case), False if it contains "false".
    Any other value raises :class:`ConfigError` naming ``parameters.<key>``, the expected type and
    the given one: a list or object, null, "abc" for an int, and also what upstream silently
    truncates or replaces (3.5 or true for an int, true for a float, "maybe" or 1 for a bool, where
    upstream returns ``default``). An unknown ``type`` raises ValueError (checked only when the key
    is present, so a missing key never raises).
    """
    if not isinstance(config, dict):
        return default
    params = config.get('parameters')
    if not isinstance(params, dict) or key not in params:
        return default
    value = params[key]
    if type == 'int':
        return _json_int(key, value)
    if type in ('float', 'double'):
        return _json_float(key, value)
    if type in ('str', 'string', 'choice'):
        if value is None or isinstance(value, (list, dict)):
            raise _json_error(key, 'a str', value)
        return str(value)
    if type in ('bool', 'boolean'):
        return _json_bool(key, value)
    raise ValueError(f"Unsupported config parameter type '{type}' for key '{key}'")


def _json_error(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f'JSON configuration: parameters.{key} must be {expected}, got {describe(value)}')


def _json_number(key: str, value: Any, kind: type, expected: str) -> Any:
    """``value`` as ``kind`` (int or float): a number of that kind (an int also for a float, a whole
    float also for an int) or a string ``kind()`` reads; bools are not numbers."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if kind is float or isinstance(value, int) or value.is_integer():
            return kind(value)
    elif isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    raise _json_error(key, expected, value)


def _json_int(key: str, value: Any) -> int:
    return _json_number(key, value, int, 'an int')


def _json_float(key: str, value: Any) -> float:
    return _json_number(key, value, float, 'a float')


def _json_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.lower()
        if 'true' in text:
            return True
        if 'false' in text:
            return False
    raise _json_error(key, 'a bool (true/false)', value)


def _extract_minihead_value(text: str, param_type: str, name: str) -> Optional[str]:
    """Single value line of ``<param_type."name"> { ... }`` in MiniHeader text, or None.

    Lines inside the braces that start with a ``<Tag>`` (properties such as ``<Precision>``)
    are ignored; exactly one remaining non-empty line is required.
    """
    pattern = r'<' + param_type + r'\."' + re.escape(name) + r'">\s*\{([^}]*)\}'
    match = re.search(pattern, text)
    if match is None:
        return None
    lines = [line.strip() for line in match.group(1).splitlines()]
    values = [line for line in lines if line and not re.match(r'<\w+>', line)]
    if len(values) != 1:
        logging.warning("MiniHeader %s \"%s\": expected one value, found %d",
                        param_type, name, len(values))
        return None
    return values[0]


def extract_minihead_bool_param(text: str, name: str) -> bool:
    """``<ParamBool."name"> { "true" }`` -> True; False if "false" or missing."""
    value = _extract_minihead_value(text, 'ParamBool', name)
    return value is not None and value.strip('"').strip().lower() == 'true'


def _minihead_number(text: str, param_type: str, name: str, cast: Callable[[str], Any], default: Any) -> Any:
    value = _extract_minihead_value(text, param_type, name)
    try:
        return cast(value) if value is not None else default
    except ValueError:
        logging.warning("MiniHeader %s \"%s\" is not a number: %r", param_type, name, value)
        return default


def extract_minihead_long_param(text: str, name: str) -> int:
    """``<ParamLong."name"> { 1 }`` -> 1; 0 if missing or not an integer."""
    return _minihead_number(text, 'ParamLong', name, int, 0)


def extract_minihead_double_param(text: str, name: str) -> float:
    """``<ParamDouble."name"> { 1.5 }`` -> 1.5; 0.0 if missing or not a number."""
    return _minihead_number(text, 'ParamDouble', name, float, 0.0)


def extract_minihead_string_param(text: str, name: str) -> Optional[str]:
    """``<ParamString."name"> { "gre" }`` -> 'gre' (quotes stripped); None if missing."""
    value = _extract_minihead_value(text, 'ParamString', name)
    if value is None:
        return None
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def create_roi(x: Sequence[float], y: Sequence[float], rgb: Sequence[float] = (1, 0, 0),
               thickness: float = 1, style: int = 0, visibility: int = 1) -> list[str]:
    """Value of a ``ROI_<name>`` MetaAttribute.

    Format: r, g, b ('%f', 0-1), thickness ('%f'), style ('%d', 0 solid / 1 dashed),
    visibility ('%d'), then x1, y1, x2, y2, ... ('%f', pixel units, x = column, y = row).
    """
    if len(x) != len(y):
        raise ValueError(f"ROI x and y differ in length ({len(x)} != {len(y)})")
    r, g, b = rgb
    roi = ['%f' % r, '%f' % g, '%f' % b, '%f' % thickness, '%d' % style, '%d' % visibility]
    for xi, yi in zip(x, y):
        roi += ['%f' % xi, '%f' % yi]
    return roi


def parse_roi(roi: Sequence[str]) -> tuple[list[float], list[float], tuple[float, float, float],
                                           float, int, int]:
    """Inverse of :func:`create_roi`: returns ``(x, y, rgb, thickness, style, visibility)``.

    Raises ValueError unless ``roi`` has an even number of entries, at least 8.
    """
    if len(roi) < 8 or len(roi) % 2 != 0:
        raise ValueError(f"ROI must have an even number of entries >= 8, got {len(roi)}")
    rgb = (float(roi[0]), float(roi[1]), float(roi[2]))
    thickness = float(roi[3])
    style = int(float(roi[4]))
    visibility = int(float(roi[5]))
    x = [float(v) for v in roi[6::2]]
    y = [float(v) for v in roi[7::2]]
    return x, y, rgb, thickness, style, visibility


def create_text(x: float, y: float, rgb: Sequence[float] = (1, 0, 0), visibility: int = 1,
                string: str = '') -> list[str]:
    """Value of a ``Text_<name>`` MetaAttribute.

    Format (7 entries): r, g, b, x, y ('%f'), visibility ('%d'), string.
    """
    r, g, b = rgb
    return ['%f' % r, '%f' % g, '%f' % b, '%f' % x, '%f' % y, '%d' % visibility, str(string)]


def parse_text(text: Sequence[str]) -> tuple[float, float, tuple[float, float, float], int, str]:
    """Inverse of :func:`create_text`: returns ``(x, y, rgb, visibility, string)``.

    Raises ValueError unless ``text`` has exactly 7 entries.
    """
    if len(text) != 7:
        raise ValueError(f"Text attribute must have exactly 7 entries, got {len(text)}")
    rgb = (float(text[0]), float(text[1]), float(text[2]))
    return float(text[3]), float(text[4]), rgb, int(float(text[5])), text[6]
