"""The project's one BART wrapper (never dispatched: leading ``_``).

``run_bart(["scale", "2", "x", "y"], {"x": array})["y"]`` writes every input as
``<name>.cfl``/``<name>.hdr`` into a fresh temporary folder, runs ``bart <tool_args>``
there (an argument list, never a shell string), and returns every ``.cfl`` the tool
created, keyed by name.  The cfl format (spiral.md §9.2): a text header
``# Dimensions`` followed by the sizes, and raw little-endian complex64 values in
Fortran (column-major) order.  Read arrays drop trailing singleton dimensions
(a header always lists 16).  The binary is ``$BART_BINARY`` or ``bart`` on PATH.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from connection import MrdError

BART_DIMS = 16
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class BartError(MrdError):
    """A BART command failed: ``returncode`` (negative: killed by that signal) and ``stderr``."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        self.args_list = list(args)
        self.returncode = returncode
        self.stderr = stderr
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no error output"
        super().__init__(f"bart {' '.join(self.args_list)} failed with exit code {returncode}: {detail}")


def write_cfl(base: str | Path, array: np.ndarray) -> None:
    """Write ``base.hdr`` and ``base.cfl`` (complex64, Fortran order)."""
    array = np.asarray(array, dtype=np.complex64)
    if array.ndim > BART_DIMS:
        raise ValueError(f"BART arrays have at most {BART_DIMS} dimensions, got {array.ndim}")
    dims = list(array.shape) + [1] * (BART_DIMS - array.ndim)
    Path(f"{base}.hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
    # The transpose of a Fortran-ordered array is C-contiguous; tofile writes it without a copy.
    np.asfortranarray(array).T.tofile(f"{base}.cfl")


def read_cfl(base: str | Path) -> np.ndarray:
    """Read ``base.hdr``/``base.cfl`` as complex64, trailing singleton dimensions dropped."""
    lines = Path(f"{base}.hdr").read_text().splitlines()
    try:
        dims = [int(d) for d in lines[lines.index("# Dimensions") + 1].split()]
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{base}.hdr has no '# Dimensions' line") from exc
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    data = np.fromfile(f"{base}.cfl", dtype=np.complex64)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{base}.cfl holds {data.size} values, header says {dims}")
    return data.reshape(dims, order="F")


def bart_binary() -> str:
    """The BART executable: ``$BART_BINARY`` or ``bart``."""
    return os.environ.get("BART_BINARY", "bart")


def run_bart(tool_args: Sequence[str], inputs: Mapping[str, np.ndarray] | None = None,
             threads: int | None = None) -> dict[str, np.ndarray]:
    """Run ``bart *tool_args`` in a temporary folder holding ``inputs``; return its new cfl files.

    Input names must be letters, digits and ``_``; refer to them (and to outputs) by name in
    ``tool_args``.  ``threads`` sets ``OMP_NUM_THREADS``.  Raises :class:`BartError` on a
    non-zero exit status or a missing binary.
    """
    inputs = dict(inputs or {})
    for name in inputs:
        if not _NAME.match(name):
            raise ValueError(f"invalid cfl name {name!r}")
    args = [str(a) for a in tool_args]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(int(threads))
    with tempfile.TemporaryDirectory(prefix="bart-") as tmp:
        for name, array in inputs.items():
            write_cfl(Path(tmp) / name, array)
        try:
            proc = subprocess.run([bart_binary(), *args], cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        except OSError as exc:
            raise BartError(args, 127, f"cannot run {bart_binary()}: {exc}") from exc
        stderr = proc.stderr.decode("utf-8", errors="replace")
        if proc.returncode != 0:
            raise BartError(args, proc.returncode, stderr or proc.stdout.decode("utf-8", "replace"))
        return {p.stem: read_cfl(p.with_suffix("")) for p in sorted(Path(tmp).glob("*.cfl"))
                if p.stem not in inputs}
