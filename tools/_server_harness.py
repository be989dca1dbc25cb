"""One harness for real ``main.py`` servers: the tests (tests/conftest.py), the benches (bench/) and the
fuzzer (tools/fuzz_server.py) start, probe, measure and stop servers with it.

* ``ServerProcess``: ``python main.py -H 127.0.0.1 -p <free port> [flags]`` as our child; the constructor
  returns once the port accepts connections, or raises ``ServerError`` with the exit status and the
  last lines of the server's output (the process stopped); ``stop()`` sends SIGTERM (or another
  signal), waits, then kills; ``peak_rss()`` is its VmHWM; ``log_text()`` its log; a context manager.
* ``free_port``, ``wait_listening``, ``pid_alive``, ``stop``: also for servers that are not our
  children (those the FIRE start scripts leave in the background).
* ``proc_bytes``, ``children``: /proc figures of any process.

Only the standard library is imported: the benches time process start-up.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Callable, Iterable

REPO = Path(__file__).resolve().parents[1]
MAIN = REPO / "main.py"
POLL_S = 0.05


class ServerError(RuntimeError):
    """A server exited before it listened, or did not listen in time."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (works for processes that are not our children:
    no waitpid)."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_listening(port: int, server: subprocess.Popen | int, timeout: float = 30.0) -> None:
    """Return once 127.0.0.1:``port`` accepts a connection; ``server`` (our child, or the pid of any
    process) must stay alive meanwhile. Raises ``ServerError`` when it exits or ``timeout`` passes."""
    if isinstance(server, subprocess.Popen):
        who, exited = "server", lambda: None if server.poll() is None else f"exited with {server.returncode}"
    else:
        who, exited = f"server pid {server}", lambda: None if pid_alive(server) else "exited"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        why = exited()
        if why:
            raise ServerError(f"{who} {why} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(POLL_S)
    raise ServerError(f"{who} did not listen on {port} within {timeout:g} s")


def stop(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM to a process that is not our child, then wait until it is gone; SIGKILL and
    ``TimeoutError`` when it ignores SIGTERM for ``timeout`` seconds."""
    if not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            raise TimeoutError(f"server pid {pid} ignored SIGTERM for {timeout} s")
        time.sleep(POLL_S)


def proc_bytes(pid: int, key: str, name: str = "status") -> int:
    """The ``key:  N kB`` line of /proc/<pid>/<name> in bytes (VmHWM, VmRSS of ``status``; Pss of
    ``smaps_rollup``); 0 when the process or the line is not there."""
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def children(pid: int) -> list[int]:
    """Pids of the children of ``pid`` (its main thread's); empty when it is gone."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _tail(text: str, lines: int) -> str:
    return "".join(text.splitlines(True)[-lines:])


class ServerProcess:
    """``python MAIN -H HOST -p PORT [-l LOG] *args`` as a child process, listening when constructed.

    ``host`` None leaves ``-H`` out (main.py's default, all interfaces); ``port`` None takes a free
    one; ``log`` is passed as ``-l`` (the server's log file, what ``log_text()`` reads); ``output``
    gets the server's stdout and stderr (``log_text()`` reads it when there is no ``log``), else
    stdout goes to /dev/null and stderr to a temporary file, whose tail a start-up failure shows.
    ``prefix``: words before ``python MAIN`` (a wrapper that runs the server as its child).
    """

    def __init__(self, *args: str, main: Path | str = MAIN, host: str | None = "127.0.0.1",
                 port: int | None = None, log: Path | None = None, output: Path | None = None,
                 cwd: Path | str | None = None, env: dict[str, str] | None = None, prefix: Iterable[str] = (),
                 preexec_fn: Callable[[], None] | None = None, timeout: float = 30.0) -> None:
        self.port = free_port() if port is None else port
        self.log = log
        self.output = output
        self.cmd = [*prefix, sys.executable, str(main), *(["-H", host] if host else []), "-p", str(self.port),
                    *(["-l", str(log)] if log else []), *args]
        self._out: IO[bytes] = open(output, "wb") if output else tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(self.cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                         stdout=self._out if output else subprocess.DEVNULL,
                                         stderr=subprocess.STDOUT if output else self._out, preexec_fn=preexec_fn)
        except BaseException:
            self._out.close()
            raise
        try:
            wait_listening(self.port, self.proc, timeout)
        except ServerError as exc:
            self._end(signal.SIGTERM, 5.0)
            tail = self.output_tail()
            self._out.close()
            raise ServerError(f"{exc}: {' '.join(self.cmd)}" + (f"\n--- its last output ---\n{tail}" if tail else "")
                              ) from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` (when it still runs), wait ``timeout`` seconds, then SIGKILL; the exit status
        (negative: the signal that ended it). Closes the output file; calling it again is harmless."""
        self._end(sig, timeout)
        self._out.close()
        return self.proc.returncode

    def _end(self, sig: int, timeout: float) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def peak_rss(self) -> int:
        """VmHWM of the server process in bytes (0 once it is gone)."""
        return proc_bytes(self.proc.pid, "VmHWM")

    def log_text(self, errors: str = "strict") -> str:
        """The server's log file (``log``), else its output file."""
        return Path(self.log or self.output).read_text(errors=errors)

    def output_tail(self, lines: int = 30) -> str:
        """The last lines of the server's stdout and stderr (``output``) or of its stderr."""
        if self.output:
            return _tail(Path(self.output).read_text(errors="replace"), lines)
        if self._out.closed:  # the temporary file is gone once stop() closed it
            return ""
        self._out.seek(0)
        return _tail(self._out.read().decode(errors="replace"), lines)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
