"""Cluster bench: sessions/s and median session time with 1 and 3 instances behind HAProxy (not a test).

``python bench/bench_cluster.py [--instances 1,3] [--clients 12] [--repeats 3] [--wait 0.5]
[--matrix 256 --coils 8 --repetitions 2]``

Starts one cluster per instance count, ``python tools/cluster.py --instances N --port 0 --host 127.0.0.1
-- --modules bench/modules`` (HAProxy in TCP mode, leastconn, /healthz checks), and waits for its ready
line (``cluster: MRD on HOST:PORT -> ...``). Then, for each repeat, each module and each cluster in
turn (so that the ratios come from rounds run side by side), one round: ``--clients`` ``client.py``
processes started at once against the cluster's front port, every one on the same input file.

Modules:

* ``wait_device`` (bench/modules): reads the session, then sleeps ``--wait`` seconds holding a lock of
  its server process, as a GPU reconstruction on the server's one GPU: the sessions of one instance
  take turns, those of different instances do not. Work that is not CPU-bound and not shareable
  within one server: the case for more instances.
* ``wait_remote``: the same wait without the lock, as a call to a remote BART or inference server:
  one instance already overlaps these sessions in its threads.
* ``simplefft``: CPU-bound (reading, FFTs, HDF5 on the client side too): more instances cannot help
  beyond the machine's CPUs, and on a 2-CPU machine no scaling is expected.

The waiting modules get a small phantom (``-m 64 -c 4 -r 1``, one image back), simplefft the phantom
of ``--matrix/--coils/--repetitions`` (one image per repetition). Figures per module and instance
count: sessions/s = clients / wall of a round (from the first client's start until the last exits,
client start-up included), median of ``--repeats``; and clients / the round's session span (from the
first client's "Sending" log line, once its interpreter started and its input is open, to the last
client's summary line), which leaves out most of the start-up of 12 Python processes; session time =
each client's own "s in all" (connect to the last result: queueing in HAProxy or in an instance
included), median over every session of every round; sessions per instance from HAProxy's log. After one untimed warm-up round per module
and cluster. Every client must exit 0 with its images, and every cluster must exit 0 after SIGTERM,
else the bench stops with exit status 2.

Exit status: 0 when the bench ran (there are no targets), 2 when it broke.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_DIR / "bench"), str(REPO_DIR)]

from bench_core import BenchError, count_images, machine_description, phantom_data  # noqa: E402
from bench_load import int_list  # noqa: E402

CLUSTER = REPO_DIR / "tools" / "cluster.py"
MODULES_DIR = REPO_DIR / "bench" / "modules"
WAIT_ENV = "BENCH_WAIT_S"  # read by bench/modules/_waiting.py in every instance
READY = re.compile(r"cluster: MRD on (\S+):(\d+) -> ")
SESSION_TIME = re.compile(r"; ([0-9.]+) s in all; output ")
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - (Sending|Sent) ", re.M)
HAPROXY_SERVER = re.compile(r" mrd/(s\d+) ")
CLUSTER_START_TIMEOUT_S = 90.0
CLIENT_TIMEOUT_S = 300.0
MODULES = ("wait_device", "wait_remote", "simplefft")
SMALL_PHANTOM = ("-m", "64", "-c", "4", "-r", "1")


class Cluster:
    """``tools/cluster.py`` as our child, started and ready (its front port parsed from the ready line)."""

    def __init__(self, instances: int, tmp: Path, wait: float) -> None:
        self.instances = instances
        self.workdir = tmp / f"cluster-{instances}"
        self.output = tmp / f"cluster-{instances}.out"
        cmd = [sys.executable, str(CLUSTER), "--instances", str(instances), "--port", "0", "--host", "127.0.0.1",
               "--workdir", str(self.workdir), "--shutdown-grace", "10", "--", "--modules", str(MODULES_DIR)]
        self._out = open(self.output, "wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO_DIR, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, env={**os.environ, WAIT_ENV: f"{wait:g}"})
        deadline = time.monotonic() + CLUSTER_START_TIMEOUT_S
        while True:
            match = READY.search(self.output.read_text(errors="replace"))
            if match:
                self.port = int(match.group(2))
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"tools/cluster.py --instances {instances} did not get ready (exit status "
                                 f"{self.proc.returncode}):\n{self.output_tail()}")
            time.sleep(0.1)

    def output_tail(self, lines: int = 30) -> str:
        return "".join(self.output.read_text(errors="replace").splitlines(True)[-lines:])

    def served(self) -> dict[str, int]:
        """Sessions per instance so far, from HAProxy's log (one line per session)."""
        try:
            text = (self.workdir / "haproxy.log").read_text(errors="replace")
        except OSError:
            return {}
        return dict(sorted(collections.Counter(HAPROXY_SERVER.findall(text)).items()))

    def stop(self) -> int:
        """SIGTERM (cluster.py drains), wait; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


def _log_time(stamp: str) -> float:
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def run_round(port: int, module: str, data: str, images: int, clients: int,
              tmp: Path) -> tuple[float, float, list[float]]:
    """``clients`` client.py at once; (wall seconds until the last exits, seconds from the first session's
    start to the last one's end, each session's own time)."""
    outs = [tmp / f"out-{module}-{i}.h5" for i in range(clients)]
    for out in outs:
        out.unlink(missing_ok=True)
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, str(REPO_DIR / "client.py"), "-a", "127.0.0.1", "-p", str(port),
                               "-c", module, "-o", str(out), "-G", "g", data], cwd=tmp, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for out in outs]
    try:
        outputs = [p.communicate(timeout=CLIENT_TIMEOUT_S)[0].decode(errors="replace") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    wall = time.perf_counter() - start
    times, starts, ends = [], [], []
    for p, out, text in zip(procs, outs, outputs):
        if p.returncode != 0:
            raise BenchError(f"client -c {module} exited {p.returncode}:\n{text[-2000:]}")
        got = count_images(out)
        if got != images:
            raise BenchError(f"{module} returned {got} images, expected {images}")
        match = SESSION_TIME.search(text)
        if not match:
            raise BenchError(f"no session time in the client's summary:\n{text[-2000:]}")
        times.append(float(match.group(1)))
        stamps = {what: _log_time(stamp) for stamp, what in LOG_TIME.findall(text)}
        if set(stamps) != {"Sending", "Sent"}:
            raise BenchError(f"no start or end line in the client's log:\n{text[-2000:]}")
        starts.append(stamps["Sending"])
        ends.append(stamps["Sent"])
    return wall, max(ends) - min(starts), times


def run(args: argparse.Namespace, tmp: Path, command: str) -> int:
    if not CLUSTER.is_file():
        raise BenchError(f"{CLUSTER} is not there (issue 17 part 2)")
    load_before = os.getloadavg()
    big, n_acq, nbytes = phantom_data(args, tmp)
    small = str(tmp / "small.h5")
    subprocess.run([sys.executable, "tools/generate_cartesian_shepp_logan_dataset.py", "-o", small, *SMALL_PHANTOM],
                   cwd=REPO_DIR, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    inputs = {"wait_device": (small, 1), "wait_remote": (small, 1), "simplefft": (big, args.repetitions)}

    clusters: dict[int, Cluster] = {}
    walls: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
    spans: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
    times: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
    served: dict[int, dict[str, int]] = {}
    statuses: dict[int, int] = {}
    try:
        for n in args.instances:
            clusters[n] = Cluster(n, tmp, args.wait)
            print(f"{n} instance(s): HAProxy on port {clusters[n].port}", flush=True)
        for module in MODULES:  # warm-up: every instance imports the module, the page cache holds the input
            for n, cluster in clusters.items():
                run_round(cluster.port, module, *inputs[module], args.clients, tmp)
        before = {n: cluster.served() for n, cluster in clusters.items()}
        for r in range(args.repeats):
            for module in MODULES:
                for n, cluster in clusters.items():
                    wall, span, session_times = run_round(cluster.port, module, *inputs[module], args.clients,
                                                          tmp)
                    walls[module, n].append(wall)
                    spans[module, n].append(span)
                    times[module, n].extend(session_times)
                    print(f"round {r + 1}: {module}, {n} instance(s): {wall:.2f} s, span {span:.2f} s, sessions "
                          f"{min(session_times):.2f}-{max(session_times):.2f} s", flush=True)
        for n, cluster in clusters.items():
            after = cluster.served()
            served[n] = {name: count - before[n].get(name, 0) for name, count in after.items()}
    finally:
        for n, cluster in clusters.items():
            statuses[n] = cluster.stop()
    for n, status in statuses.items():
        if status != 0:
            raise BenchError(f"tools/cluster.py --instances {n} exited {status} after SIGTERM:\n"
                             f"{clusters[n].output_tail()}")

    first = args.instances[0]
    print()
    print(f"date (UTC):  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S}")
    print(f"machine:     {machine_description()}")
    print(f"command:     {command}")
    print(f"load:        1-minute load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after (other "
          f"work on the machine disturbs the absolute figures; the ratios come from rounds side by side)")
    print(f"clusters:    python tools/cluster.py --instances N --port 0 --host 127.0.0.1 -- --modules bench/modules "
          f"(HAProxy TCP leastconn, /healthz checks); {WAIT_ENV}={args.wait:g}")
    print(f"data:        wait_*: phantom {' '.join(SMALL_PHANTOM)} (1 image back); simplefft: {big} ({n_acq} "
          f"acquisitions, {nbytes / 1e6:.1f} MB, {args.repetitions} images back); every client reads the same file")
    print(f"rounds:      {args.clients} client.py at once per round, {args.repeats} timed rounds per module and "
          f"cluster after 1 warm-up round, clusters taking turns")
    print()
    print("| module | instances | sessions/s (round wall) | sessions/s (session span) | median session (s) | "
          "round walls (s) | session spans (s) |")
    print("|---|---|---|---|---|---|---|")
    rate = {key: args.clients / statistics.median(w) for key, w in walls.items()}
    span_rate = {key: args.clients / statistics.median(w) for key, w in spans.items()}
    median_time = {key: statistics.median(t) for key, t in times.items()}
    for module in MODULES:
        for n in args.instances:
            key = (module, n)
            print(f"| {module} | {n} | {rate[key]:.2f} | {span_rate[key]:.2f} | {median_time[key]:.2f} | "
                  f"{', '.join(f'{w:.2f}' for w in walls[key])} | {', '.join(f'{w:.2f}' for w in spans[key])} |")
    print()
    print("sessions per instance (timed rounds, HAProxy's log): " + "; ".join(
        f"{n} instance(s): " + ", ".join(f"{name} {count}" for name, count in served[n].items())
        for n in args.instances))
    print()
    print("| module | ratio | sessions/s (round wall) | sessions/s (session span) | median session time |")
    print("|---|---|---|---|---|")
    for module in MODULES:
        for n in args.instances[1:]:
            print(f"| {module} | {n} / {first} instance(s) | {rate[module, n] / rate[module, first]:.2f} | "
                  f"{span_rate[module, n] / span_rate[module, first]:.2f} | "
                  f"{median_time[module, n] / median_time[module, first]:.2f} |")
    print()
    print(f"simplefft is CPU-bound: with {os.cpu_count()} logical CPUs for the clients, HAProxy and every "
          f"instance, more instances add no CPU, and no scaling is expected where the CPUs are few.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", help="MRD raw-data file for simplefft (default: a phantom generated into a temp "
                                       "folder)")
    parser.add_argument("--matrix", type=int, default=256, help="simplefft phantom matrix size")
    parser.add_argument("--coils", type=int, default=8, help="simplefft phantom coils")
    parser.add_argument("--repetitions", type=int, default=2,
                        help="simplefft phantom repetitions (also the number of images it must return)")
    parser.add_argument("--instances", type=int_list, default=[1, 3],
                        help="instance counts, one cluster each; ratios against the first")
    parser.add_argument("--clients", type=int, default=12, help="concurrent clients per round")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per module and cluster")
    parser.add_argument("--wait", type=float, default=0.5, help="seconds each wait_* session waits")
    return parser


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(raw)
    if args.repeats < 1 or args.clients < 1 or args.wait < 0:
        print("--repeats and --clients must be at least 1, --wait at least 0", file=sys.stderr)
        return 2
    command = shlex.join(["python", "bench/bench_cluster.py", *raw])
    with tempfile.TemporaryDirectory(prefix="bench_cluster_") as tmp:
        try:
            return run(args, Path(tmp), command)
        except (BenchError, subprocess.SubprocessError, OSError) as exc:
            print(f"BENCH BROKEN: {exc}", file=sys.stderr)
            for log in sorted(Path(tmp).glob("cluster-*/s*.log")):
                print(f"--- {log.parent.name}/{log.name} (tail) ---\n" + "".join(
                    log.read_text(errors="replace").splitlines(True)[-20:]), file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
