"""Several MRD servers behind one HAProxy on this machine: a local scale-out cluster (issue 17).

Usage::

    python tools/cluster.py --instances 3 --port 9002 [--host 0.0.0.0] [--http-base-port 9080]
        [--workdir DIR] [--shutdown-grace S] [--restart-delay S] [--haproxy PATH] [--template FILE]
        [--ready-timeout S] [-- SERVER FLAGS ...]

    python tools/cluster.py --instances 3 --port 9002 -- -v -d simplefft -S /data/saved

Starts ``--instances`` servers (``main.py -H 127.0.0.1 -p <free port> --http-port <free port or
--http-base-port + i> -l <workdir>/sK.log --shutdown-grace S`` and the SERVER FLAGS after ``--``),
renders ``deploy/haproxy.cfg`` (``--template``) with one ``server`` line per instance into
``<workdir>/haproxy.cfg`` and runs ``haproxy -f <workdir>/haproxy.cfg -db`` in the foreground as
its child, MRD on ``--host:--port`` (0: a free port).  The balancing, the health checks (each
instance's ``/healthz``) and the retries are HAProxy's alone; this script only starts, watches and
stops processes.  Once every instance is ready and HAProxy's first health check of each has
passed, one line is logged::

    cluster: MRD on 127.0.0.1:9002 -> s1 127.0.0.1:41233 (http 38411, pid 1201), s2 ...; HAProxy pid 1199,
    stats socket /tmp/mrd-cluster-x/haproxy.sock, workdir /tmp/mrd-cluster-x

The workdir (default: a new temporary folder; kept afterwards) holds each instance's log
(``sK.log``) and stderr (``sK.err``), the rendered ``haproxy.cfg``, HAProxy's output
(``haproxy.log``: one line per session, which server served it, health changes) and HAProxy's admin
socket (``haproxy.sock``: ``echo "show stat" | socat - UNIX:<workdir>/haproxy.sock``).

While running:

* an instance that exits (a crash, SIGKILL, or SIGTERM to that one instance: a rolling restart) is
  started again on the same ports after ``--restart-delay`` seconds (longer when it keeps dying),
  logged as ``instance s2 exited with -9; restarting in 2.0 s``; HAProxy takes it back after two
  good health checks;
* HAProxy's view of each instance (UP, DOWN, MAINT ...) is logged when it changes;
* SIGTERM or Ctrl-C drains: HAProxy stops accepting (soft stop: its running sessions go on), every
  instance gets SIGTERM and may finish its running sessions for ``--shutdown-grace`` seconds, then
  HAProxy stops; the exit status is 0 when every instance ended cleanly.  A second SIGTERM/Ctrl-C
  ends the running sessions at once (exit status 1).

Children run in their own process group (a Ctrl-C in the terminal reaches this script only, which
then drains in order) and get SIGTERM should this script die.
"""
from __future__ import annotations

import argparse
import csv
import ctypes
import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Sequence

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))

from tools._server_harness import free_port  # noqa: E402

log = logging.getLogger("cluster")

MAIN = REPO_DIR / "main.py"
TEMPLATE = REPO_DIR / "deploy" / "haproxy.cfg"
BACKEND = "mrd"  # the backend's name in the template
BEGIN_MARKER = "# --- instances"
END_MARKER = "# --- end of instances"
INSTANCE_HOST = "127.0.0.1"  # instances are reachable from this machine only; HAProxy listens on --host
POLL_S = 0.1
STATS_POLL_S = 0.5
MAX_RESTART_DELAY_S = 60.0
STABLE_S = 60.0  # an instance that ran this long restarts after --restart-delay again, not the longer back-off
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes
# Flags cluster.py gives each instance itself.
OWN_SERVER_FLAGS = ("-p", "--port", "-H", "--host", "--http-port", "--http-host", "-l", "--logfile", "--stream",
                    "--shutdown-grace")


class ClusterError(RuntimeError):
    """The cluster could not be started (an instance or HAProxy exited, or was not ready in time)."""


@dataclass
class Instance:
    """One ``main.py`` of the cluster, with fixed ports for its whole life (restarts included)."""

    name: str
    mrd_port: int
    http_port: int
    log_path: Path
    err_path: Path
    cmd: list[str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # when it is to be started again, while it is down
    delay: float = 0.0  # the back-off of its next restart
    exits: list[int] = field(default_factory=list)

    def server_line(self, maxconn: int | None = None) -> str:
        """Its line in HAProxy's backend: MRD port to balance, dashboard port to health-check."""
        extra = f" maxconn {maxconn}" if maxconn else ""
        return f"    server {self.name} {INSTANCE_HOST}:{self.mrd_port} port {self.http_port}{extra}"

    def describe(self) -> str:
        pid = self.proc.pid if self.proc is not None else "-"
        return f"{self.name} {INSTANCE_HOST}:{self.mrd_port} (http {self.http_port}, pid {pid})"

    def ready(self) -> bool:
        """Whether this run of it listens on its MRD port (its log says so; a TCP probe would be a session)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return False
        return f"Server pid {self.proc.pid} ready" in text

    def tail(self, lines: int = 15) -> str:
        parts = []
        for path in (self.err_path, self.log_path):
            try:
                text = "".join(path.read_text(errors="replace").splitlines(True)[-lines:])
            except FileNotFoundError:
                continue
            if text.strip():
                parts.append(f"--- {path} ---\n{text}")
        return "\n".join(parts)


def render(template: str, servers: Iterable[str]) -> str:
    """The template with the lines from its instances marker to its end marker replaced by ``servers``
    (each a complete ``server`` line); ValueError when the markers are missing."""
    lines = template.splitlines(keepends=True)
    begin = next((i for i, line in enumerate(lines) if line.strip().startswith(BEGIN_MARKER)), None)
    end = next((i for i, line in enumerate(lines) if line.strip().startswith(END_MARKER)), None)
    if begin is None or end is None or end < begin:
        raise ValueError(f"the template has no '{BEGIN_MARKER} ...' and '{END_MARKER} ...' lines")
    body = [line.rstrip("\n") + "\n" for line in servers]
    return "".join(lines[:begin + 1] + body + lines[end:])


def stats_command(sock_path: Path | str, command: str, timeout: float = 2.0) -> str:
    """One command on HAProxy's admin socket (``show stat``, ``show servers state``, ...) and its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(sock_path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def server_stats(sock_path: Path | str, backend: str = BACKEND) -> dict[str, dict[str, str]]:
    """``show stat`` of the backend's servers: name -> the CSV fields (``status`` UP/DOWN/MAINT/"UP 1/2"...,
    ``check_status`` L7OK/L7STS/L4CON..., ``scur`` running sessions, ``stot`` sessions so far, ...)."""
    text = stats_command(sock_path, "show stat")
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return {row["svname"]: row for row in rows
            if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND")}


def _child_setup() -> None:
    """In each child: SIGTERM when this script dies (Linux), so that nothing outlives it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _max_sessions(flags: Sequence[str]) -> int | None:
    """The ``--max-sessions N`` among the server flags (HAProxy then queues instead: ``maxconn N``)."""
    value = None
    for i, flag in enumerate(flags):
        if flag == "--max-sessions" and i + 1 < len(flags):
            value = flags[i + 1]
        elif flag.startswith("--max-sessions="):
            value = flag.split("=", 1)[1]
    try:
        return int(value) if value is not None and int(value) > 0 else None
    except ValueError:
        return None


class Cluster:
    """The instances and HAProxy: :meth:`start`, then :meth:`run` until :meth:`request_stop`."""

    def __init__(self, instances: int, port: int, host: str, workdir: Path, server_flags: Sequence[str],
                 http_base_port: int | None = None, shutdown_grace: float = 30.0, restart_delay: float = 2.0,
                 haproxy: str = "haproxy", template: Path = TEMPLATE, ready_timeout: float = 60.0) -> None:
        self.host = host
        self.port = port or free_port()
        self.workdir = workdir
        self.shutdown_grace = shutdown_grace
        self.restart_delay = restart_delay
        self.haproxy_cmd = haproxy
        self.template = template
        self.ready_timeout = ready_timeout
        self.maxconn = _max_sessions(server_flags)
        self.config_path = workdir / "haproxy.cfg"
        self.haproxy_log = workdir / "haproxy.log"
        sock = workdir / "haproxy.sock"
        if len(str(sock)) > SOCKET_PATH_MAX:  # too long for a Unix socket's address
            sock = Path(tempfile.mkdtemp(prefix="mrd-cluster-sock-")) / "haproxy.sock"
        self.stats_socket = sock
        self.instances: list[Instance] = []
        taken: set[int] = {self.port}
        if http_base_port:
            taken.update(range(http_base_port, http_base_port + instances))
        for k in range(1, instances + 1):
            name = f"s{k}"
            mrd_port = self._pick_port(taken)
            http_port = http_base_port + k - 1 if http_base_port else self._pick_port(taken)
            log_path, err_path = workdir / f"{name}.log", workdir / f"{name}.err"
            cmd = [sys.executable, str(MAIN), "-H", INSTANCE_HOST, "-p", str(mrd_port), "--http-port", str(http_port),
                   "-l", str(log_path), "--shutdown-grace", f"{shutdown_grace:g}", *server_flags]
            self.instances.append(Instance(name, mrd_port, http_port, log_path, err_path, cmd, delay=restart_delay))
        self.haproxy: subprocess.Popen | None = None
        self._haproxy_out: IO[bytes] | None = None
        self._stop = threading.Event()
        self._stop_requests = 0
        self._states: dict[str, str] = {}
        self._next_stats = 0.0

    @staticmethod
    def _pick_port(taken: set[int]) -> int:
        while (port := free_port()) in taken:
            pass
        taken.add(port)
        return port

    # --- processes ---------------------------------------------------------------------------------

    def _spawn(self, inst: Instance) -> None:
        with open(inst.err_path, "ab") as err:
            inst.proc = subprocess.Popen(inst.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True, preexec_fn=_child_setup)
        inst.started_at = time.monotonic()
        inst.restart_at = None

    def _start_haproxy(self) -> None:
        servers = [inst.server_line(self.maxconn) for inst in self.instances]
        self.config_path.write_text(render(self.template.read_text(), servers))
        env = {**os.environ, "MRD_BIND": f"{self.host}:{self.port}", "HAPROXY_STATS_SOCKET": str(self.stats_socket)}
        self._haproxy_out = open(self.haproxy_log, "ab")
        self.haproxy = subprocess.Popen([self.haproxy_cmd, "-f", str(self.config_path), "-db"], env=env,
                                        stdin=subprocess.DEVNULL, stdout=self._haproxy_out,
                                        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_child_setup)

    def haproxy_tail(self, lines: int = 15) -> str:
        try:
            return "".join(self.haproxy_log.read_text(errors="replace").splitlines(True)[-lines:])
        except FileNotFoundError:
            return ""

    def stats(self) -> dict[str, dict[str, str]]:
        return server_stats(self.stats_socket)

    def start(self) -> None:
        """Start the instances, then HAProxy; return once HAProxy's first health check of every instance
        passed.  ClusterError (everything stopped again) when something exits or it takes too long."""
        deadline = time.monotonic() + self.ready_timeout
        try:
            for inst in self.instances:
                self._spawn(inst)
            while not all(inst.ready() for inst in self.instances):
                for inst in self.instances:
                    if inst.proc.poll() is not None:
                        raise ClusterError(f"instance {inst.name} exited with {inst.proc.returncode} while starting: "
                                           f"{' '.join(inst.cmd)}\n{inst.tail()}")
                self._wait_until(deadline, "the instances to listen")
            self._start_haproxy()
            while True:
                if self.haproxy.poll() is not None:
                    raise ClusterError(f"haproxy exited with {self.haproxy.returncode} while starting:\n"
                                       f"{self.haproxy_tail()}")
                try:
                    stats = self.stats()
                except OSError:
                    stats = {}
                if len(stats) == len(self.instances) and all(
                        row["status"] == "UP" and row["check_status"] == "L7OK" for row in stats.values()):
                    break
                self._wait_until(deadline, "HAProxy to find every instance healthy")
        except BaseException:
            self._kill_all()
            raise
        self._states = {name: "UP" for name in stats}

    def _wait_until(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {self.ready_timeout:g} s waiting for {what}\n"
                               + "\n".join(inst.tail() for inst in self.instances) + "\n" + self.haproxy_tail())
        if self._stop.wait(POLL_S):
            raise ClusterError("stopped while starting")

    def ready_line(self) -> str:
        return (f"cluster: MRD on {self.host}:{self.port} -> " + ", ".join(i.describe() for i in self.instances)
                + f"; HAProxy pid {self.haproxy.pid}, stats socket {self.stats_socket}, workdir {self.workdir}")

    # --- running ------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """From the signal handler: the first call drains, the second ends the sessions at once."""
        self._stop_requests += 1
        self._stop.set()

    def run(self) -> int:
        """Watch until a stop request, then drain; the exit status."""
        while not self._stop.is_set():
            if self.haproxy.poll() is not None:
                log.error("haproxy exited with %d; stopping the instances\n%s", self.haproxy.returncode,
                          self.haproxy_tail())
                self._drain(haproxy_gone=True)
                return 1
            now = time.monotonic()
            for inst in self.instances:
                self._watch(inst, now)
            if now >= self._next_stats:
                self._next_stats = now + STATS_POLL_S
                self._log_state_changes()
            self._stop.wait(POLL_S)
        return self._drain()

    def _watch(self, inst: Instance, now: float) -> None:
        if inst.restart_at is not None:
            if now >= inst.restart_at:
                self._spawn(inst)
                log.info("instance %s restarted: pid %d, MRD %s:%d, http %d", inst.name, inst.proc.pid,
                         INSTANCE_HOST, inst.mrd_port, inst.http_port)
            return
        code = inst.proc.poll()
        if code is None:
            return
        inst.exits.append(code)
        # Back-off: an instance that keeps dying soon after its start waits twice as long each time.
        if now - inst.started_at >= STABLE_S:
            inst.delay = self.restart_delay
        log.warning("instance %s exited with %d; restarting in %.1f s%s", inst.name, code, inst.delay,
                    "" if code in (0, -signal.SIGKILL, -signal.SIGTERM) else f"\n{inst.tail()}")
        inst.restart_at = now + inst.delay
        inst.delay = min(inst.delay * 2, MAX_RESTART_DELAY_S)

    def _log_state_changes(self) -> None:
        try:
            stats = self.stats()
        except OSError:
            return
        for name, row in stats.items():
            state = row["status"]
            if self._states.get(name) != state:
                log.info("HAProxy: %s is %s (check %s)", name, state, row.get("check_status") or "-")
                self._states[name] = state

    # --- stopping -----------------------------------------------------------------------------------

    def _drain(self, haproxy_gone: bool = False) -> int:
        running = [inst for inst in self.instances if inst.proc is not None and inst.proc.poll() is None]
        log.info("draining: HAProxy accepts no new sessions; SIGTERM to %d instance(s), which get up to %g s "
                 "for their running sessions (stop again to end them at once)", len(running), self.shutdown_grace)
        if not haproxy_gone and self.haproxy.poll() is None:
            self.haproxy.send_signal(signal.SIGUSR1)  # soft stop: unbind, let the forwarded sessions go on
        for inst in running:
            inst.proc.send_signal(signal.SIGTERM)
        forced = self._stop_requests > 1
        deadline = time.monotonic() + self.shutdown_grace + 10.0
        while any(inst.proc.poll() is None for inst in running):
            if self._stop_requests > 1 and not forced:
                forced = True
                log.warning("stopping again: ending the running sessions now")
                for inst in running:
                    if inst.proc.poll() is None:
                        inst.proc.send_signal(signal.SIGTERM)  # main.py's second SIGTERM: forced stop
            if time.monotonic() > deadline:
                for inst in running:
                    if inst.proc.poll() is None:
                        log.error("instance %s did not stop; killing it", inst.name)
                        inst.proc.kill()
                break
            time.sleep(POLL_S)
        codes = {inst.name: inst.proc.wait() for inst in running}
        self._stop_haproxy()
        bad = {name: code for name, code in codes.items() if code != 0}
        if bad:
            log.warning("stopped; instances that did not end cleanly: %s",
                        ", ".join(f"{n} ({c})" for n, c in bad.items()))
        else:
            log.info("stopped: %d instance(s) drained", len(running))
        return 1 if bad or forced or haproxy_gone else 0

    def _stop_haproxy(self) -> None:
        if self.haproxy is None:
            return
        try:
            self.haproxy.wait(5.0)  # the soft stop ends once the last forwarded session has
        except subprocess.TimeoutExpired:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(5.0)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
                self.haproxy.wait()
        if self._haproxy_out is not None:
            self._haproxy_out.close()

    def _kill_all(self) -> None:
        """After a failed start: nothing is served yet, so no draining."""
        for proc in [inst.proc for inst in self.instances] + [self.haproxy]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in [inst.proc for inst in self.instances] + [self.haproxy]:
            if proc is not None:
                try:
                    proc.wait(10.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._haproxy_out is not None:
            self._haproxy_out.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run several MRD servers (main.py) behind one HAProxy (deploy/haproxy.cfg) on this machine",
        epilog="Flags after '--' go to every main.py, e.g. -- -v -d simplefft -S /data/saved.")
    parser.add_argument("--instances", type=int, default=2, metavar="N", help="number of servers (default: 2)")
    parser.add_argument("--port", type=int, default=9002, metavar="P",
                        help="MRD port of HAProxy (default: 9002; 0: a free port)")
    parser.add_argument("--host", default="0.0.0.0", help="address HAProxy listens on (default: 0.0.0.0); "
                        "the instances listen on 127.0.0.1")
    parser.add_argument("--http-base-port", type=int, metavar="PORT",
                        help="dashboard (and /healthz) of instance k on PORT+k-1 (default: free ports)")
    parser.add_argument("--workdir", type=Path, metavar="DIR",
                        help="logs, rendered haproxy.cfg, admin socket (default: a new temporary folder)")
    parser.add_argument("--shutdown-grace", type=float, default=30.0, metavar="S",
                        help="each instance's --shutdown-grace: how long running sessions may take after "
                             "SIGTERM (default: 30)")
    parser.add_argument("--restart-delay", type=float, default=2.0, metavar="S",
                        help="wait before starting an instance that exited; doubled while it keeps dying "
                             "(default: 2)")
    parser.add_argument("--haproxy", default="haproxy", metavar="PATH", help="the haproxy program (default: haproxy)")
    parser.add_argument("--template", type=Path, default=TEMPLATE, metavar="FILE",
                        help="HAProxy configuration template (default: deploy/haproxy.cfg)")
    parser.add_argument("--ready-timeout", type=float, default=60.0, metavar="S",
                        help="how long start-up may take (default: 60)")
    return parser


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Our flags, and the server flags after the first ``--``."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    ours, server_flags = split_argv(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(ours)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(levelname)s - %(name)s - %(message)s")
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    own = [f for f in server_flags if f.split("=", 1)[0] in OWN_SERVER_FLAGS]
    if own:
        parser.error(f"cluster.py sets {', '.join(own)} for each instance itself (use its own options)")
    if shutil.which(args.haproxy) is None:
        log.error("haproxy not found (%s): apt-get install haproxy, or --haproxy PATH", args.haproxy)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mrd-cluster-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    log.info("workdir %s (instance logs, haproxy.cfg, haproxy.log)", workdir)
    cluster = Cluster(args.instances, args.port, args.host, workdir, server_flags,
                      http_base_port=args.http_base_port, shutdown_grace=args.shutdown_grace,
                      restart_delay=args.restart_delay, haproxy=args.haproxy, template=args.template,
                      ready_timeout=args.ready_timeout)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("Received %s", signal.Signals(signum).name)
        cluster.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster.start()
    except ClusterError as exc:
        log.error("%s", exc)
        return 1
    except (OSError, ValueError) as exc:
        log.error("cannot start the cluster: %s", exc)
        return 1
    log.info("%s", cluster.ready_line())
    return cluster.run()


if __name__ == "__main__":
    sys.exit(main())
