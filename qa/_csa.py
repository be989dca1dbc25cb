"""Siemens CSA headers of DICOM files: the tag list of (0029,xx10)/(0029,xx20) and its ASCCONV text.

A CSA header is a little-endian list of named tags, each with a list of text items. Two layouts
exist: CSA2 starts with ``SV10`` and 4 more bytes, CSA1 with the tag count directly. Then come the
tag count and a check word (77), then per tag a 64-byte NUL-padded name, the value multiplicity, a
4-byte VR, the syngo data type, the item count and a check word; per item four int32 (the item's
length is the second for CSA2, the first minus the item count of tag 1 for CSA1) and the item
bytes, padded to a multiple of 4. :func:`read_csa` returns the tags' items as text;
:func:`ascconv` parses the ``### ASCCONV BEGIN`` … ``### ASCCONV END`` block of the series
header's ``MrPhoenixProtocol`` (``key = value`` lines) into numbers and strings.
"""
from __future__ import annotations

import re
import struct

MAX_TAGS = 1000
TAG = struct.Struct("<64si4s3i")
ITEM = struct.Struct("<4i")
ASCCONV_BLOCK = re.compile(r"### ASCCONV BEGIN[^\n]*\n(.*?)### ASCCONV END", re.S)
ASCCONV_LINE = re.compile(r'^\s*([A-Za-z_][\w.\[\]]*)\s*=\s*("(?:[^"]|"")*"|\S+)', re.M)
UTF7_CHAR = re.compile(r"\+A[A-Za-z0-9+/]{2}-")  # one UTF-7 character, e.g. +AF8- for "_"


def read_csa(data: bytes) -> dict[str, list[str]]:
    """Tag name → its non-empty items as text (trailing NULs and spaces removed).

    Raises ValueError when ``data`` is not a CSA header or is cut short.
    """
    csa2 = data[:4] == b"SV10"
    offset = 8 if csa2 else 0
    if len(data) < offset + 8:
        raise ValueError(f"CSA header of {len(data)} bytes is too short")
    n_tags, _check = struct.unpack_from("<2I", data, offset)
    if not 0 < n_tags <= MAX_TAGS:
        raise ValueError(f"CSA header announces {n_tags} tags")
    offset += 8
    tags: dict[str, list[str]] = {}
    first_item_count = 0
    for tag_no in range(n_tags):
        if offset + TAG.size > len(data):
            raise ValueError(f"CSA header ends inside tag {tag_no}")
        name, _vm, _vr, _syngodt, n_items, _check = TAG.unpack_from(data, offset)
        offset += TAG.size
        if tag_no == 1:
            first_item_count = n_items
        items = []
        for _ in range(n_items):
            if offset + ITEM.size > len(data):
                raise ValueError(f"CSA header ends inside the items of tag {tag_no}")
            x0, x1, _x2, _x3 = ITEM.unpack_from(data, offset)
            offset += ITEM.size
            length = x1 if csa2 else x0 - first_item_count
            if length < 0 or offset + length > len(data):
                if csa2:
                    raise ValueError(f"CSA item of {length} bytes in tag {tag_no} runs past the end")
                break  # CSA1 writes lengths that overrun for unused items
            text = data[offset:offset + length].split(b"\0", 1)[0].decode("latin-1").strip()
            offset += length + (-length % 4)
            if text:
                items.append(text)
        tags[name.split(b"\0", 1)[0].decode("latin-1")] = items
    return tags


def ascconv(protocol_text: str) -> dict[str, int | float | str]:
    """The ASCCONV block of a Siemens protocol text as key → value: hexadecimal and decimal
    integers, floats, and strings (quotes removed, ``""`` unescaped, single UTF-7 characters
    such as ``+AF8-`` for ``_``, which some versions write, decoded). Empty when there is no block."""
    block = ASCCONV_BLOCK.search(protocol_text)
    values: dict[str, int | float | str] = {}
    for key, raw in ASCCONV_LINE.findall(block.group(1) if block else ""):
        values[key] = _value(raw)
    return values


def _value(raw: str) -> int | float | str:
    """One ASCCONV value: a quoted string, an integer (``0x`` hexadecimal too) or a float."""
    if raw.startswith('"'):
        return UTF7_CHAR.sub(lambda m: m.group().encode("ascii").decode("utf-7"), raw[1:-1].replace('""', '"'))
    try:
        return int(raw, 0)
    except ValueError:
        try:
            return float(raw)
        except ValueError:
            return raw
