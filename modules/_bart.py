"""The project's one BART layer (never dispatched: leading ``_``).

* :func:`find_bart`: the ``bart`` executable from a configured path, ``$BART_BINARY``, ``PATH``,
  ``$TOOLBOX_PATH`` or ``$BART_TOOLBOX_PATH`` (BART 0.8 reads the first, newer wrappers the second).
* :func:`capabilities`: what the installed BART supports (GPU, ``nlinv -x``, ``nufft -x``);
  Debian bookworm's 0.8 has none of them, so callers adapt their command lines.
* :class:`BartSession`: one temporary folder per session; inputs are written as cfl/hdr, tools run
  as argument lists (never shell strings) with their output in the log, outputs are read back
  memory-mapped.  A failure raises :class:`BartError` (exit code and stderr), which the server
  turns into an error text for the client.
* :func:`run_bart`: one command in a session of its own.

The cfl format (docs/spiral.md §9.2): a text header ``# Dimensions`` followed by the sizes, and raw
little-endian complex64 values in Fortran (column-major) order.  Read arrays drop trailing
singleton dimensions (a header always lists 16).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from _errors import MrdError

log = logging.getLogger(__name__)

BART_DIMS = 16
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # BART colours its error lines


class BartError(MrdError):
    """A BART command failed: ``returncode`` (negative: killed by that signal) and ``stderr``."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        self.args_list = list(args)
        self.returncode = returncode
        self.stderr = stderr
        lines = [line.strip() for line in _ANSI.sub("", stderr).splitlines() if line.strip()]
        detail = lines[-1] if lines else "no error output"
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


def read_cfl(base: str | Path, memmap: bool = False) -> np.ndarray:
    """Read ``base.hdr``/``base.cfl`` as complex64, trailing singleton dimensions dropped
    (memory-mapped read-only with ``memmap``: the mapping outlives the file's deletion)."""
    lines = Path(f"{base}.hdr").read_text().splitlines()
    try:
        dims = [int(d) for d in lines[lines.index("# Dimensions") + 1].split()]
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{base}.hdr has no '# Dimensions' line") from exc
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    data = (np.memmap(f"{base}.cfl", dtype=np.complex64, mode="r") if memmap
            else np.fromfile(f"{base}.cfl", dtype=np.complex64))
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{base}.cfl holds {data.size} values, header says {dims}")
    return data.reshape(dims, order="F")


def find_bart(configured: str | None = None) -> str:
    """Path of the ``bart`` executable; BartError (exit code 127) when there is none.

    An explicit choice (``configured``, else ``$BART_BINARY``) must exist; otherwise ``bart`` is
    looked up on ``PATH``, in ``$TOOLBOX_PATH`` and in ``$BART_TOOLBOX_PATH``.
    """
    explicit = configured or os.environ.get("BART_BINARY")
    if explicit:
        candidates = [explicit]
    else:
        candidates = [shutil.which("bart")] + [str(Path(os.environ[v]) / "bart")
                                               for v in ("TOOLBOX_PATH", "BART_TOOLBOX_PATH") if os.environ.get(v)]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise BartError(["version"], 127, "no bart executable (config key, $BART_BINARY, PATH, $TOOLBOX_PATH, "
                                      f"$BART_TOOLBOX_PATH); looked at {[c for c in candidates if c]}")


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What one BART installation supports."""

    version: str
    gpu: bool
    nlinv_x: bool  # nlinv -x (sensitivity grid size); 0.8: no
    nufft_x: bool  # nufft -x (image dimensions); 0.8: no, use -d


def _usage(binary: str, tool: str) -> str:
    done = subprocess.run([binary, tool, "-h"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return next((line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Usage:")), "")


@functools.lru_cache(maxsize=8)
def capabilities(binary: str) -> Capabilities:
    """Probe ``binary`` once: version, GPU support (a tiny ``pics -g`` run), ``nlinv -x``, ``nufft -x``."""
    version = subprocess.run([binary, "version"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bart-probe-") as tmp:
        write_cfl(Path(tmp) / "k", np.ones((4, 4, 1, 1), np.complex64))
        write_cfl(Path(tmp) / "s", np.ones((4, 4, 1, 1), np.complex64))
        gpu = subprocess.run([binary, "pics", "-g", "-i", "1", "k", "s", "x"], cwd=tmp, capture_output=True,
                             stdin=subprocess.DEVNULL).returncode == 0
    caps = Capabilities(version, gpu, "[-x" in _usage(binary, "nlinv"), "[-x" in _usage(binary, "nufft"))
    log.info("BART %s at %s: %s", version, binary, caps)
    return caps


class BartSession:
    """A temporary folder for one session's BART calls; use as a context manager.

    ``stdout`` and ``stderr`` hold what the last :meth:`run` printed (tools such as ``estdims``
    answer on stdout).
    """

    def __init__(self, binary: str | None = None, threads: int | None = None) -> None:
        self.binary = find_bart(binary)
        self.threads = threads
        self.stdout = ""
        self.stderr = ""
        self._tmp = tempfile.TemporaryDirectory(prefix="bart-")
        self.folder = Path(self._tmp.name)
        self._call = itertools.count()

    def __enter__(self) -> "BartSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._tmp.cleanup()

    @property
    def capabilities(self) -> Capabilities:
        return capabilities(self.binary)

    def run(self, tool_args: Sequence[str], inputs: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run ``bart *tool_args`` with ``inputs`` written first; return the cfl files it created.

        Names (letters, digits, ``_``) refer to the session folder; each call works in a
        subfolder of its own, so names never clash between calls.
        """
        inputs = dict(inputs or {})
        for name in inputs:
            if not _NAME.match(name):
                raise ValueError(f"invalid cfl name {name!r}")
        args = [str(a) for a in tool_args]
        folder = self.folder / f"call{next(self._call)}"
        folder.mkdir()
        for name, array in inputs.items():
            write_cfl(folder / name, array)
        env = dict(os.environ)
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = str(int(self.threads))
        log.debug("bart %s", " ".join(args))
        try:
            proc = subprocess.run([self.binary, *args], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        except OSError as exc:
            raise BartError(args, 127, f"cannot run {self.binary}: {exc}") from exc
        stdout = self.stdout = proc.stdout.decode("utf-8", errors="replace")
        stderr = self.stderr = proc.stderr.decode("utf-8", errors="replace")
        for line in (stdout + stderr).splitlines():
            log.debug("bart %s: %s", args[0] if args else "", line)
        if proc.returncode != 0:
            raise BartError(args, proc.returncode, stderr or stdout)
        return {p.stem: read_cfl(p.with_suffix(""), memmap=True) for p in sorted(folder.glob("*.cfl"))
                if p.stem not in inputs}


def run_bart(tool_args: Sequence[str], inputs: Mapping[str, np.ndarray] | None = None,
             threads: int | None = None) -> dict[str, np.ndarray]:
    """One BART command in a session of its own (see :meth:`BartSession.run`); outputs are read
    into memory.  Raises :class:`BartError` on a failure or a missing binary."""
    with BartSession(threads=threads) as session:
        return {name: np.array(array) for name, array in session.run(tool_args, inputs).items()}
