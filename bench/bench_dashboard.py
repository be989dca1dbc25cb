"""Dashboard bench: what 20 browsers on the dashboard cost 4 concurrent sessions (not a test).

``python bench/bench_dashboard.py [--data FILE] [--matrix 256 --coils 16 --repetitions 8] [--sessions 4]
[--browsers 20] [--repeats 10]``

One server ``python main.py -H 127.0.0.1 -p PORT --http-port HTTP`` (the dashboard on, so the sessions
send their events, progress and thumbnails) is started once. After one untimed warm-up round, each
round starts ``--sessions`` ``client.py -c simplefft`` processes at once on the same input file, either
with no browser connected or with ``--browsers`` websocket clients connected to ``/ws``; the rounds
alternate (without, with, with, without, ...) so that drift of the machine falls on both alike.

The browsers run in one separate process at ``nice 19``, started once and idle in the rounds without
them (real browsers run on other machines: the figure is the server's cost of serving them, not the
cost of rendering), and do what the page does: read every message, parse it, and fetch a session's
thumbnail whenever its version changes. Each "with" round starts only once every browser has its
snapshot and the thumbnails of the earlier sessions (what a page does when it is opened), and ends
a second after the sessions (the last flush); the bench checks that each browser received events and
thumbnails.

Figures per configuration, medians over ``--repeats`` rounds: the session time (the sum over the
round's sessions of the duration the server measured, from ``/api/sessions``: what a browser could
slow), the client wall time (start of the first client until the last exits, start-up included), and
the CPU time of the server process and of its ``dashboard`` thread meanwhile (from /proc: the web
server's own work, nearly free of the machine's noise). The target: session time with browsers /
without <= 1.05. Every client must exit 0 with one image per repetition, and the server must exit 0
after SIGTERM.

Exit status: 0 the target passes, 1 it fails, 2 the bench broke.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_DIR / "bench"), str(REPO_DIR)]

from bench_core import BenchError, add_data_arguments, machine_description, phantom_data  # noqa: E402
from bench_load import run_clients  # noqa: E402
from tools._server_harness import ServerError, ServerProcess, free_port  # noqa: E402

TARGET_RATIO = 1.05
SERVER_START_TIMEOUT_S = 30.0
BROWSERS_READY_TIMEOUT_S = 60.0
BROWSER_NICE = 19
LAST_FLUSH_S = 1.0  # after the sessions ended, before the browsers disconnect (the dashboard flushes every 0.2 s)


# -- the browsers (a separate process) -------------------------------------------------------------
async def _browse(url: str, n: int, commands) -> None:
    """Serve the bench's commands: "connect" (n websockets, each loaded: snapshot and the thumbnails in
    it; answers "ready"), "disconnect" (answers what they received meanwhile), "quit"."""
    import aiohttp

    loop = asyncio.get_running_loop()
    counts: dict[str, float] = {}
    loaded = asyncio.Event()
    connected = 0

    async def browser(http: aiohttp.ClientSession) -> None:
        nonlocal connected
        versions: dict[str, int] = {}
        async with http.ws_connect(url + "/ws") as ws:
            async for message in ws:
                data = json.loads(message.data)
                counts["frames"] += 1
                counts["bytes"] += len(message.data)
                items = data["messages"] if data["type"] == "batch" else [data]
                counts["messages"] += len(items)
                sessions = [s for item in items for s in item.get("sessions") or [item.get("session")] if s]
                for session in sessions:
                    if session["thumbnail"] and versions.get(session["id"]) != session["thumbnail"]:
                        versions[session["id"]] = session["thumbnail"]
                        path = f"/api/sessions/{session['id']}/thumbnail.png?v={session['thumbnail']}"
                        async with http.get(url + path) as response:
                            await response.read()
                            counts["thumbnails"] += response.status == 200
                if data["type"] == "snapshot" and not loaded.is_set():
                    connected += 1
                    if connected == n:
                        loaded.set()

    async with aiohttp.ClientSession() as http:
        tasks: list[asyncio.Task] = []
        while True:
            command = await loop.run_in_executor(None, commands.recv)
            if command == "connect":
                connected = 0
                loaded.clear()
                counts.update(frames=0, messages=0, snapshots=0, thumbnails=0, bytes=0)
                tasks = [asyncio.create_task(browser(http)) for _ in range(n)]
                await loaded.wait()
                usage = resource.getrusage(resource.RUSAGE_SELF)
                counts.update(frames=0, messages=0, thumbnails=0, bytes=0, cpu_s=-(usage.ru_utime + usage.ru_stime))
                commands.send("ready")
            elif command == "disconnect":
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                usage = resource.getrusage(resource.RUSAGE_SELF)
                counts["cpu_s"] += usage.ru_utime + usage.ru_stime
                commands.send(dict(counts))
            else:
                return


def _browsers_main(url: str, n: int, commands) -> None:
    os.nice(BROWSER_NICE)
    asyncio.run(_browse(url, n, commands))


class Browsers:
    """``n`` websocket clients on the dashboard, in one child process (started once, idle when
    disconnected, so that the rounds without browsers have the same processes on the machine)."""

    def __init__(self, url: str, n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.n = n
        self.commands, child_end = ctx.Pipe()
        self.proc = ctx.Process(target=_browsers_main, args=(url, n, child_end), daemon=True)
        self.proc.start()

    def connect(self) -> None:
        """Connect all and return once each has its snapshot and its thumbnails."""
        self.commands.send("connect")
        if not self.commands.poll(BROWSERS_READY_TIMEOUT_S):
            raise BenchError(f"{self.n} browsers did not all load within {BROWSERS_READY_TIMEOUT_S:g} s")
        self.commands.recv()

    def disconnect(self) -> dict:
        """Close all websockets; what they received since connect(), and the CPU seconds they used."""
        self.commands.send("disconnect")
        if not self.commands.poll(30):
            raise BenchError("the browsers did not disconnect")
        return self.commands.recv()

    def close(self) -> None:
        self.commands.send("quit")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


# -- the rounds ---------------------------------------------------------------------------------
def _cpu_s(stat: Path) -> float:
    """User + system CPU seconds from a /proc ``stat`` file."""
    return sum(int(v) for v in stat.read_text().rsplit(")", 1)[1].split()[11:13]) / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int, thread: str) -> tuple[float, float]:
    """CPU seconds used so far by the process ``pid`` and by its threads called ``thread``."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == thread:
                total += _cpu_s(task / "stat")
        except (OSError, ValueError):  # a session thread that just ended
            continue
    return _cpu_s(Path(f"/proc/{pid}/stat")), total


def _sessions(http_url: str) -> list[dict]:
    with urllib.request.urlopen(http_url + "/api/sessions", timeout=10) as response:
        return json.loads(response.read())["sessions"]


def one_round(server: ServerProcess, http_url: str, data: str, tmp: Path, args: argparse.Namespace,
              browsers: Browsers | None) -> tuple[float, float, float, float, dict | None]:
    """(summed server-side session seconds, client wall seconds, CPU seconds of the server and of its
    dashboard thread while the clients ran, what the browsers received); ``browsers`` None: none."""
    before = {s["id"] for s in _sessions(http_url)}
    if browsers is not None:
        browsers.connect()
    try:
        cpu0 = cpu_s(server.proc.pid, "dashboard")
        wall = run_clients(server.port, data, args.sessions, tmp, args.repetitions)
        cpu1 = cpu_s(server.proc.pid, "dashboard")
        # the last events (ended) reach the board right after the CLOSE; wait for them. Connections that
        # sent no header (the harness's probe whether the port listens) are not the round's sessions.
        deadline = time.monotonic() + 10
        while True:
            new = [s for s in _sessions(http_url) if s["id"] not in before and s["protocol"]]
            if len(new) == args.sessions and all(s["state"] in ("done", "error") for s in new):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"the dashboard shows {len(new)} of {args.sessions} sessions ended")
            time.sleep(0.05)
        time.sleep(LAST_FLUSH_S)  # the browsers get the last events a flush later
    finally:
        counts = browsers.disconnect() if browsers is not None else None
    if any(s["state"] != "done" for s in new):
        raise BenchError(f"a session ended in error: {[s['texts'] for s in new if s['state'] != 'done']}")
    if counts is not None and (counts["messages"] < browsers.n or counts["thumbnails"] < browsers.n):
        raise BenchError(f"the browsers received no events or thumbnails: {counts}")
    return sum(s["elapsed"] for s in new), wall, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], counts


def run(args: argparse.Namespace, tmp: Path, command: str) -> int:
    data, n_acq, nbytes = phantom_data(args, tmp)
    http_port = free_port()
    http_url = f"http://127.0.0.1:{http_port}"
    log_path = tmp / "server.log"
    server = ServerProcess("--http-port", str(http_port), "-S", str(tmp / "saved"), output=log_path, cwd=REPO_DIR,
                           timeout=SERVER_START_TIMEOUT_S)
    rows: dict[int, list[tuple[float, float, float, float]]] = {0: [], args.browsers: []}
    received: list[dict] = []
    watchers = None
    try:
        watchers = Browsers(http_url, args.browsers)
        warm = one_round(server, http_url, data, tmp, args, None)
        print(f"warm-up: sessions {warm[0]:.2f} s, wall {warm[1]:.2f} s", flush=True)
        order = [0, args.browsers, args.browsers, 0]
        for i in range(2 * args.repeats):
            browsers = order[i % 4]
            session_s, wall, server_cpu, web_cpu, counts = one_round(server, http_url, data, tmp, args,
                                                                     watchers if browsers else None)
            rows[browsers].append((session_s, wall, server_cpu, web_cpu))
            if counts:
                received.append(counts)
            print(f"{browsers:2d} browsers: sessions {session_s:.2f} s (sum of {args.sessions}), wall {wall:.2f} s, "
                  f"server CPU {server_cpu:.2f} s, of it dashboard thread {web_cpu * 1000:.0f} ms"
                  + (f"; browsers got {counts['frames']} frames, {counts['messages']} messages, "
                     f"{counts['thumbnails']} thumbnails, "
                     f"used {counts['cpu_s']:.2f} s CPU"
                     if counts else ""), flush=True)
    finally:
        if watchers is not None:
            watchers.close()
        status = server.stop(timeout=60)
    if status != 0:
        raise BenchError(f"server exited {status} after SIGTERM; see {log_path}")

    med = {b: tuple(statistics.median(r[k] for r in runs) for k in range(4)) for b, runs in rows.items()}
    ratio = med[args.browsers][0] / med[0][0]
    wall_ratio = med[args.browsers][1] / med[0][1]
    ok = ratio <= TARGET_RATIO
    print()
    print(f"date (UTC):  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S}")
    print(f"machine:     {machine_description()}")
    print(f"command:     {command}")
    print(f"data:        {data} ({n_acq} acquisitions, {nbytes / 1e6:.1f} MB of headers + data, "
          f"{args.repetitions} images per session); {args.sessions} client.py -c simplefft at once per round")
    print(f"browsers:    {args.browsers} websocket clients in one process at nice {BROWSER_NICE}, fetching each new "
          f"thumbnail; per round about {statistics.median(c['frames'] for c in received):.0f} frames with "
          f"{statistics.median(c['messages'] for c in received):.0f} messages and "
          f"{statistics.median(c['thumbnails'] for c in received):.0f} thumbnails in all")
    print(f"timing:      medians of {args.repeats} rounds each, alternating; session time = sum of the server's "
          "session durations (/api/sessions)")
    print()
    print("| browsers | session time (s) | client wall (s) | server CPU (s) | dashboard thread CPU (ms) | "
          "all rounds: session time (s) |")
    print("|---|---|---|---|---|---|")
    for b, runs in rows.items():
        print(f"| {b} | {med[b][0]:.2f} | {med[b][1]:.2f} | {med[b][2]:.2f} | {med[b][3] * 1000:.0f} | "
              f"{', '.join(f'{r[0]:.2f}' for r in runs)} |")
    print()
    print(f"session time with / without browsers: {ratio:.3f} (target <= {TARGET_RATIO}: "
          f"{'PASS' if ok else 'FAIL'}); client wall: {wall_ratio:.3f}; server CPU: {med[args.browsers][2] / med[0][2]:.3f}"
          f" (dashboard thread {med[args.browsers][3] / med[args.browsers][2]:.1%} of it); "
          f"server exit after SIGTERM: {status}")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(parser, coils=16, repetitions=8)
    parser.add_argument("--sessions", type=int, default=4, help="concurrent sessions per round")
    parser.add_argument("--browsers", type=int, default=20, help="websocket clients in the rounds with browsers")
    parser.add_argument("--repeats", type=int, default=10, help="rounds of each configuration; medians reported")
    return parser


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(raw)
    if args.repeats < 1 or args.sessions < 1 or args.browsers < 1:
        print("--repeats, --sessions and --browsers must be at least 1", file=sys.stderr)
        return 2
    command = shlex.join(["python", "bench/bench_dashboard.py", *raw])
    with tempfile.TemporaryDirectory(prefix="bench_dashboard_") as tmp:
        try:
            return run(args, Path(tmp), command)
        except (BenchError, ServerError, subprocess.SubprocessError, OSError) as exc:
            print(f"BENCH BROKEN: {exc}", file=sys.stderr)
            log = Path(tmp) / "server.log"
            if log.exists():
                print("--- server.log (tail) ---\n" + "".join(log.read_text(errors="replace").splitlines(True)[-40:]),
                      file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
