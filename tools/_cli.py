"""Command-line glue of the conversion tools (helper, never run directly).

:func:`start` sets up logging to stderr (``LEVEL name: message``) and parses the command line;
:func:`exit_status` runs a tool's work and turns a :class:`ToolError` into one error line and the
exit status; :func:`image_group` opens an MRD file read-only and picks its group (default: the
last), with the names of its image series.
"""
from __future__ import annotations

import argparse
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import h5py

import mrdfile


class ToolError(Exception):
    """Ends a tool: the message is logged as an error and ``status`` (default 2) is the exit status."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


def start(parse_args: Callable[[list[str] | None], argparse.Namespace],
          argv: list[str] | None) -> argparse.Namespace:
    """Logging at INFO to stderr, then ``parse_args(argv)``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return parse_args(argv)


def exit_status(log: logging.Logger, work: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``work(args)``, or the status of the :class:`ToolError` it raises after logging it on ``log``."""
    try:
        return work(args)
    except ToolError as exc:
        log.error("%s", exc)
        return exc.status


@contextmanager
def image_group(path: Path, group: str | None) -> Iterator[tuple[str, h5py.Group, list[str]]]:
    """``(name, group, image series names)`` of group ``group`` (default: the last) of the MRD file
    ``path``, open read-only inside the ``with``; ToolError for a missing file or group."""
    if not path.is_file():
        raise ToolError(f"no such file: {path}")
    with h5py.File(path, "r") as h5:
        try:
            name = mrdfile.named_or_last_group(h5, group)
        except LookupError as exc:
            raise ToolError(str(exc)) from None
        yield name, h5[name], mrdfile.image_series_names(h5[name])
