"""Load bench: sessions/s and MB/s with 1, 2, 4 and 8 concurrent clients, threads and ``-m`` (not a test).

``python bench/bench_load.py [--data FILE] [--matrix 256 --coils 16 --repetitions 3] [--clients 1,2,4,8]
[--modes threads,processes] [--repeats 3]``

For each mode a server ``python main.py -H 127.0.0.1 -p PORT [-m]`` is started once (through a
small wrapper process that reports ``ru_maxrss`` of its reaped children: the largest RSS of the
server or of any one session process it forked and reaped). After one untimed warm-up session,
for each client count N, N ``client.py -c simplefft`` processes are started at once on the same
input file; the wall time from the first start until the last exit (Python start-up and imports
of every client included) is measured ``--repeats`` times and the median reported as
sessions/s = N / wall and MB/s = N x data / wall. Every client must exit 0 and its output must
hold one image per repetition, else the bench stops with exit status 2.

Memory per mode: the largest RSS of one process (VmHWM of the server in threads mode; with
``-m`` the largest of the server and each session child, from ``ru_maxrss``), and the peak of
the summed PSS (``/proc/PID/smaps_rollup``) of the server and its session children, sampled
every 50 ms.

Without ``--data`` a phantom is generated into a temporary folder with
``tools/generate_cartesian_shepp_logan_dataset.py`` (default -m 256 -c 16 -r 3: 52.7 MB of
acquisition headers + data, 3 images per session).

Exit status: 0 when the bench ran (there are no targets), 2 when it broke.
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_DIR / "bench"), str(REPO_DIR)]

from bench_core import BenchError, add_data_arguments, count_images, machine_description, phantom_data  # noqa: E402
from tools._server_harness import ServerError, ServerProcess, children, proc_bytes  # noqa: E402

SERVER_START_TIMEOUT_S = 30.0
CLIENT_TIMEOUT_S = 300.0
SAMPLE_PERIOD_S = 0.05
MODE_ARGS = {"threads": [], "processes": ["-m"]}

# Runs the server as its child; on exit writes ru_maxrss (KiB) of the reaped children, which Linux
# takes as the maximum over the server and every descendant the server reaped.
WRAPPER = """import resource, signal, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
rc = proc.wait()
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(rc)
"""


class LoadServer:
    """The server under the wrapper, with a thread sampling the summed PSS of the server tree."""

    def __init__(self, mode: str, tmp: Path) -> None:
        self.log_path = tmp / f"server-{mode}.log"
        self.maxrss_path = tmp / f"maxrss-{mode}.txt"
        self.wrapper = ServerProcess(*MODE_ARGS[mode], prefix=(sys.executable, "-c", WRAPPER, str(self.maxrss_path)),
                                     output=self.log_path, cwd=REPO_DIR, timeout=SERVER_START_TIMEOUT_S)
        self.port = self.wrapper.port
        self.peak_pss = 0
        self.server_hwm = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    @property
    def server_pid(self) -> int | None:
        pids = children(self.wrapper.proc.pid)
        return pids[0] if pids else None

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_PERIOD_S):
            pid = self.server_pid
            if pid is None:
                continue
            self.server_hwm = max(self.server_hwm, proc_bytes(pid, "VmHWM"))
            pss = sum(proc_bytes(p, "Pss", "smaps_rollup") for p in (pid, *children(pid)))
            self.peak_pss = max(self.peak_pss, pss)

    def stop(self) -> tuple[int, int]:
        """SIGTERM; returns (exit status, largest RSS of the server or one reaped session process, bytes)."""
        pid = self.server_pid
        if pid is not None:
            self.server_hwm = max(self.server_hwm, proc_bytes(pid, "VmHWM"))
        self._stop.set()
        status = self.wrapper.stop(timeout=60)
        try:
            maxrss = int(self.maxrss_path.read_text()) * 1024
        except (OSError, ValueError):
            maxrss = 0
        return status, max(maxrss, self.server_hwm)


def run_clients(port: int, data: str, n: int, tmp: Path, repetitions: int) -> float:
    """Start n clients at once; wall seconds until the last exits. Checks exit status and image count."""
    outs = [tmp / f"out{i}.h5" for i in range(n)]
    for out in outs:
        out.unlink(missing_ok=True)
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "client.py", "-a", "127.0.0.1", "-p", str(port), "-c", "simplefft",
                               "-o", str(out), "-q", data], cwd=REPO_DIR, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for out in outs]
    try:
        outputs = [p.communicate(timeout=CLIENT_TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    elapsed = time.perf_counter() - start
    for p, out, text in zip(procs, outs, outputs):
        if p.returncode != 0:
            raise BenchError(f"client exited {p.returncode}:\n{text.decode(errors='replace')[-2000:]}")
        images = count_images(out)
        if images != repetitions:
            raise BenchError(f"simplefft returned {images} images, expected {repetitions}")
    return elapsed


def run(args: argparse.Namespace, tmp: Path, command: str) -> int:
    data, n_acq, nbytes = phantom_data(args, tmp)
    mb = nbytes / 1e6

    rows = []  # (mode, clients, median wall, all walls)
    memory = {}  # mode -> (largest process RSS, peak summed PSS, exit status)
    for mode in args.modes:
        server = LoadServer(mode, tmp)
        try:
            warm = run_clients(server.port, data, 1, tmp, args.repetitions)
            print(f"{mode}: warm-up {warm:.2f} s", flush=True)
            for n in args.clients:
                walls = [run_clients(server.port, data, n, tmp, args.repetitions) for _ in range(args.repeats)]
                rows.append((mode, n, statistics.median(walls), walls))
                print(f"{mode}: {n} client(s): " + ", ".join(f"{w:.2f}" for w in walls) + " s", flush=True)
        finally:
            status, largest = server.stop()
        if status != 0:
            raise BenchError(f"{mode} server exited {status} after SIGTERM; see {server.log_path}")
        memory[mode] = (largest, server.peak_pss, status)

    print()
    print(f"date (UTC):  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S}")
    print(f"machine:     {machine_description()}")
    print(f"command:     {command}")
    print(f"data:        {data} ({n_acq} acquisitions, {mb:.1f} MB of headers + data, "
          f"{args.repetitions} images per session); every client reads the same file")
    print(f"timing:      wall from starting N client.py processes until the last exits (client start-up "
          f"included), median of {args.repeats}")
    print()
    print("| mode | clients | wall (s) | sessions/s | MB/s | all runs (s) |")
    print("|---|---|---|---|---|---|")
    for mode, n, wall, walls in rows:
        print(f"| {mode} | {n} | {wall:.2f} | {n / wall:.2f} | {n * mb / wall:.0f} | "
              f"{', '.join(f'{w:.2f}' for w in walls)} |")
    print()
    print("| mode | peak RSS, largest process | peak PSS, server + sessions (sampled every 50 ms) | exit after SIGTERM |")
    print("|---|---|---|---|")
    for mode, (largest, pss, status) in memory.items():
        print(f"| {mode} | {largest / 1e6:.0f} MB = {largest / nbytes:.2f} x data | {pss / 1e6:.0f} MB | {status} |")
    return 0


def int_list(text: str) -> list[int]:
    """argparse type: a comma-separated list of positive integers."""
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def _mode_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or any(v not in MODE_ARGS for v in values):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(MODE_ARGS)}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(parser, coils=16, repetitions=3)
    parser.add_argument("--clients", type=int_list, default=[1, 2, 4, 8], help="concurrent client counts")
    parser.add_argument("--modes", type=_mode_list, default=["threads", "processes"],
                        help="server modes (processes: -m)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per client count; the median is reported")
    return parser


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(raw)
    if args.repeats < 1:
        print("--repeats must be at least 1", file=sys.stderr)
        return 2
    command = shlex.join(["python", "bench/bench_load.py", *raw])
    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp:
        try:
            return run(args, Path(tmp), command)
        except (BenchError, ServerError, subprocess.SubprocessError, OSError) as exc:
            print(f"BENCH BROKEN: {exc}", file=sys.stderr)
            for log in sorted(Path(tmp).glob("server-*.log")):
                print(f"--- {log.name} (tail) ---\n" + "".join(log.read_text(errors="replace")
                                                             .splitlines(True)[-40:]), file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
