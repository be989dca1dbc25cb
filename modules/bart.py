"""``from bart import bart``: BART's Python call for modules written for python-ismrmrd-server.

Why this file exists: upstream's ``bartfire.py`` (and many user modules) import ``bart`` from the
``python/`` folder of a BART source tree, which python-ismrmrd-server's Docker image puts on the
Python path.  Debian's ``bart`` package ships the binary only, so that import would fail here.
Module folders are on ``sys.path``, so this file answers the import; it defines no ``process``, so
the server never selects it as a session module.

* When BART's own Python folder is there (``$BART_TOOLBOX_PATH/python/bart.py``, else
  ``$TOOLBOX_PATH/python/bart.py``), its ``bart`` is used, unchanged.
* Otherwise :func:`bart` is implemented on the project's BART layer (``modules/_bart.py``: binary
  discovery, cfl files, a temporary folder per call) with BART's calling convention:
  ``bart(nargout, cmd, *args, **kwargs)`` writes the arrays ``args`` as inputs, runs
  ``bart <cmd...> [-k|--kw <file>]... <inputs...> <outputs...>`` (a keyword argument ``kw=array``
  becomes the option ``-kw``, or ``--kw`` for a longer name, followed by that array's file) and
  returns ``None`` for ``nargout == 0``, the output array for 1 and a list of them for more; the
  exit status, stdout and stderr are kept as ``bart.ERR``, ``bart.stdout``, ``bart.stderr``.

Deliberate differences from BART's own: a failing command raises ``_bart.BartError`` (exit code and
BART's error line; the server sends it to the client as an error text) instead of printing and
returning ``None``; a bad ``nargout`` raises ``ValueError`` instead of printing the usage; the
tool's output goes to the log (DEBUG), not to stdout.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np

import _bart

log = logging.getLogger(__name__)

TOOLBOX_VARIABLES = ("BART_TOOLBOX_PATH", "TOOLBOX_PATH")  # the order BART's own wrapper prefers


def toolbox_python_file() -> Path | None:
    """BART's own ``python/bart.py`` from ``$BART_TOOLBOX_PATH`` or ``$TOOLBOX_PATH``, if present."""
    for variable in TOOLBOX_VARIABLES:
        folder = os.environ.get(variable)
        if folder and (Path(folder) / "python" / "bart.py").is_file():
            return Path(folder) / "python" / "bart.py"
    return None


def _load_toolbox(path: Path) -> ModuleType:
    """Import BART's ``bart.py`` under another name; its folder joins ``sys.path`` (it imports ``cfl``)."""
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    spec = importlib.util.spec_from_file_location("_bart_toolbox_python", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _option(keyword: str) -> str:
    return ("--" if len(keyword) > 1 else "-") + keyword


def binary_bart(nargout: int, cmd: str, *args: Any, **kwargs: Any) -> np.ndarray | list[np.ndarray] | None:
    """BART's ``bart(nargout, cmd, *args, **kwargs)`` on ``_bart``'s binary layer (see the module text)."""
    if type(nargout) is not int or nargout < 0:
        raise ValueError(f"usage: bart(<nargout>, <command>, <arguments...>); nargout must be an int >= 0, "
                         f"got {nargout!r}")
    inputs = {f"in{i}": np.asarray(a) for i, a in enumerate(args)}
    keyword_inputs = {f"kw{i}": np.asarray(a) for i, a in enumerate(kwargs.values())}
    options = [item for keyword, name in zip(kwargs, keyword_inputs) for item in (_option(keyword), name)]
    outputs = [f"out{i}" for i in range(nargout)]
    tool_args = [*cmd.split(), *options, *inputs, *outputs]
    with _bart.BartSession() as session:
        try:
            created = session.run(tool_args, {**inputs, **keyword_inputs})
        except _bart.BartError as exc:
            binary_bart.ERR, binary_bart.stdout, binary_bart.stderr = exc.returncode, session.stdout, exc.stderr
            raise
        binary_bart.ERR, binary_bart.stdout, binary_bart.stderr = 0, session.stdout, session.stderr
        missing = [name for name in outputs if name not in created]
        if missing:
            raise FileNotFoundError(f"bart {' '.join(tool_args)} wrote no {', '.join(missing)}")
        result = [np.array(created[name]) for name in outputs]
    if nargout == 0:
        return None
    return result[0] if nargout == 1 else result


def _select() -> Callable[..., Any]:
    path = toolbox_python_file()
    if path is not None:
        try:
            module = _load_toolbox(path)
            log.debug("bart: using BART's own Python wrapper %s", path)
            return module.bart
        except Exception as exc:  # a broken toolbox folder: the binary layer still works
            log.warning("bart: BART's Python wrapper %s does not import (%s: %s); using the bart binary",
                        path, type(exc).__name__, exc)
    return binary_bart


bart = _select()
