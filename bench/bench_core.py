"""Core throughput/memory bench of the MRD client and server (not a test; run by hand).

``python bench/bench_core.py [--data FILE] [--matrix 256 --coils 32 --repetitions 8] [--repeats 3] [--warmup 1]``

Measures in one run, each figure the median of ``--repeats`` runs (after
``--warmup`` untimed rounds, default 1, which absorb the page cache and the
server's first import of the simplefft module; their times are printed too):

(a) baseline: bulk-read ``/dataset/data`` and ``/dataset/xml`` with h5py and
    push each acquisition as one buffer (340-byte header + data, the bytes a
    client sends) with ``socket.sendall`` over loopback TCP to a sink process
    that ``recv_into``s a preallocated buffer until EOF; timed from the start
    of the file read until the sink saw EOF.
(b) ``python client.py -p PORT -c null -o OUT DATA`` against one
    ``python main.py -p PORT`` server started once for the whole bench; wall
    time of the client subprocess (Python start-up and imports included).
(c) the same with ``-c simplefft``; the output must hold one image per
    repetition, else the bench stops with exit status 2.
(d) ``python client.py -p PORT -c null --format v2 -o OUT DATA``: (b) with the
    data sent as an MRD v2 (yardl binary) stream, which the server reads with
    ``mrdv2.stream.V2Reader``; its ingest rate is given as a ratio to (b)'s,
    v2/v1 = (b)/(d), both measured in the same rounds.

Then it reads the server's peak RSS (VmHWM, over the whole session), stops
the server with SIGTERM (it must exit 0) and prints the figures with the
targets (issue 18's): (b)/(a) <= 1.2, (c)/(a) <= 1.4, (c) <= 2 s, peak RSS
<= 0.6 x data size, v2/v1 ingest rate >= 0.7.  Without
``--data`` a phantom is generated into a temporary folder with
``tools/generate_cartesian_shepp_logan_dataset.py``.

Exit status: 0 all targets pass, 1 a target fails, 2 the bench itself broke
(server or client failed, wrong image count).
"""
from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))

from tools._server_harness import ServerError, ServerProcess  # noqa: E402

SINK_BUFFER_BYTES = 4 << 20
SERVER_START_TIMEOUT_S = 30.0
CLIENT_TIMEOUT_S = 600.0

TARGET_RATIO_NULL = 1.2
TARGET_RATIO_SIMPLEFFT = 1.4
TARGET_SIMPLEFFT_S = 2.0
TARGET_RSS_RATIO = 0.6
TARGET_V2_RATE_RATIO = 0.7


class BenchError(RuntimeError):
    """The bench could not measure (a process failed or the recon output is wrong)."""


def machine_description() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
            f"processor={platform.processor() or '?'}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def raw_data_bytes(path: str) -> tuple[int, int]:
    """(acquisition count, bytes of 340-byte headers + data + trajectories) of /dataset/data."""
    with h5py.File(path, "r") as h5:
        records = h5["dataset/data"][...]
    n = len(records)
    payload = sum(d.nbytes for d in records["data"]) + sum(t.nbytes for t in records["traj"])
    return n, n * records.dtype["head"].itemsize + payload


# (a) baseline -------------------------------------------------------------------------------
def _sink(listener: socket.socket) -> None:
    """Accept one connection, recv_into a fixed buffer until EOF, then answer one byte."""
    conn, _ = listener.accept()
    buf = bytearray(SINK_BUFFER_BYTES)
    view = memoryview(buf)
    total = 0
    while True:
        n = conn.recv_into(view)
        if not n:
            break
        total += n
    conn.sendall(total.to_bytes(8, "little"))
    conn.close()


def baseline_once(path: str) -> tuple[float, int]:
    """Seconds from the start of the file read until the sink got EOF; bytes pushed."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    sink = multiprocessing.get_context("fork").Process(target=_sink, args=(listener,), daemon=True)
    sink.start()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.perf_counter()
    with h5py.File(path, "r") as h5:
        group = h5["dataset"]
        xml = group["xml"][0]
        records = group["data"][...]
    heads = records["head"].tobytes()
    size = records.dtype["head"].itemsize
    sent = 0
    for i, (traj, data) in enumerate(zip(records["traj"], records["data"])):
        buf = b"".join((heads[i * size:(i + 1) * size], traj, data))
        sock.sendall(buf)
        sent += len(buf)
    sock.shutdown(socket.SHUT_WR)
    reply = b""
    while len(reply) < 8:
        chunk = sock.recv(8 - len(reply))
        if not chunk:
            break
        reply += chunk
    elapsed = time.perf_counter() - start
    sock.close()
    sink.join(10)
    listener.close()
    received = int.from_bytes(reply, "little") if len(reply) == 8 else -1
    if received != sent or not xml:
        raise BenchError(f"baseline sink received {received} of {sent} bytes")
    return elapsed, sent


# (b), (c) client + server ---------------------------------------------------------------------
def start_server(log_path: Path, *extra_args: str) -> ServerProcess:
    """``python main.py -p PORT`` (a free port) in the repository folder, its output to ``log_path``;
    returns once it accepts connections."""
    return ServerProcess(*extra_args, host=None, output=log_path, cwd=REPO_DIR, timeout=SERVER_START_TIMEOUT_S)


def client_once(port: int, config: str, data: str, out: Path, *extra: str) -> float:
    """Wall seconds of one client subprocess (``extra``: more client options); raises BenchError when it fails."""
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "client.py", "-p", str(port), "-c", config, *extra, "-o", str(out), data]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=CLIENT_TIMEOUT_S)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout.decode(errors='replace')}")
    return elapsed


def count_images(out: Path) -> int:
    with h5py.File(out, "r") as h5:
        return sum(group[name]["data"].shape[0]
                   for group in (h5[k] for k in h5.keys() if isinstance(h5[k], h5py.Group))
                   for name in group.keys() if name.startswith("image_") and "data" in group[name])


# main -------------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def phantom_data(args: argparse.Namespace, tmp: Path) -> tuple[str, int, int]:
    """``--data``, or a phantom generated into ``tmp`` from ``--matrix/--coils/--repetitions``:
    (absolute path, acquisition count, raw bytes)."""
    data = args.data
    if data is None:
        data = str(tmp / "phantom.h5")
        gen = [sys.executable, "tools/generate_cartesian_shepp_logan_dataset.py", "-o", data,
               "-m", str(args.matrix), "-c", str(args.coils), "-r", str(args.repetitions)]
        print("Generating:", " ".join(gen), flush=True)
        subprocess.run(gen, cwd=REPO_DIR, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data = str(Path(data).resolve())
    return (data, *raw_data_bytes(data))


def run(args: argparse.Namespace, tmp: Path) -> int:
    data, n_acq, nbytes = phantom_data(args, tmp)
    mb = nbytes / 1e6

    times: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": []}
    server = start_server(tmp / "server.log")
    port = server.port
    exit_code = None
    try:
        for rep in range(args.warmup + args.repeats):
            t_a, _ = baseline_once(data)
            t_b = client_once(port, "null", data, tmp / "out_null.h5")
            t_d = client_once(port, "null", data, tmp / "out_null_v2.h5", "--format", "v2")
            out_c = tmp / "out_simplefft.h5"
            t_c = client_once(port, "simplefft", data, out_c)
            images = count_images(out_c)
            if images != args.repetitions:
                raise BenchError(f"simplefft returned {images} images, expected {args.repetitions}")
            label = f"warm-up {rep + 1}/{args.warmup}" if rep < args.warmup else \
                f"repeat {rep - args.warmup + 1}/{args.repeats}"
            print(f"{label}: (a) {t_a:.3f} s  (b) {t_b:.3f} s  (c) {t_c:.3f} s  ({images} images)  "
                  f"(d) {t_d:.3f} s", flush=True)
            if rep >= args.warmup:
                for key, value in zip("abcd", (t_a, t_b, t_c, t_d)):
                    times[key].append(value)
        peak = server.peak_rss()
        if not peak:
            raise BenchError("no VmHWM in /proc/<pid>/status")
    finally:
        exit_code = server.stop(timeout=60)
    if exit_code != 0:
        raise BenchError(f"server exited {exit_code} after SIGTERM; see log {server.output}")

    a, b, c, d = (statistics.median(times[k]) for k in "abcd")
    rss_ratio = peak / nbytes
    v2_ratio = b / d  # (mb / d) / (mb / b): v2 ingest rate over v1's
    checks = [
        (f"(b)/(a) <= {TARGET_RATIO_NULL}", b / a <= TARGET_RATIO_NULL, f"{b / a:.2f}"),
        (f"(c)/(a) <= {TARGET_RATIO_SIMPLEFFT}", c / a <= TARGET_RATIO_SIMPLEFFT, f"{c / a:.2f}"),
        (f"(c) <= {TARGET_SIMPLEFFT_S} s", c <= TARGET_SIMPLEFFT_S, f"{c:.2f} s"),
        (f"peak RSS <= {TARGET_RSS_RATIO} x data", rss_ratio <= TARGET_RSS_RATIO, f"{rss_ratio:.2f} x"),
        (f"v2/v1 ingest rate >= {TARGET_V2_RATE_RATIO}", v2_ratio >= TARGET_V2_RATE_RATIO, f"{v2_ratio:.2f}"),
    ]
    print()
    print(f"date (UTC):          {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S}")
    print(f"machine:             {machine_description()}")
    print(f"data:                {data} ({n_acq} acquisitions, {mb:.1f} MB of headers + data)")
    print(f"repeats:             {args.repeats} after {args.warmup} warm-up round(s) (medians; all runs: "
          + ", ".join(f"{k}=[{', '.join(f'{t:.2f}' for t in v)}]" for k, v in times.items()) + ")")
    print(f"(a) baseline:        {a:.3f} s  ({mb / a:.0f} MB/s)  h5py bulk read + sendall to loopback sink")
    print(f"(b) client -c null:  {b:.3f} s  ({mb / b:.0f} MB/s)  ratio (b)/(a) = {b / a:.2f}")
    print(f"(c) -c simplefft:    {c:.3f} s  ({mb / c:.0f} MB/s)  ratio (c)/(a) = {c / a:.2f}")
    print(f"(d) -c null, MRD v2: {d:.3f} s  ({mb / d:.0f} MB/s)  ingest rate v2/v1 = (b)/(d) = {v2_ratio:.2f}")
    print(f"server peak RSS:     {peak / 1e6:.1f} MB = {rss_ratio:.2f} x data (VmHWM over the whole session)")
    print(f"server exit status:  {exit_code} (SIGTERM)")
    for name, ok, value in checks:
        print(f"target {name:<28} {value:>10}  {verdict(ok)}")
    return 0 if all(ok for _, ok, _ in checks) else 1


def add_data_arguments(parser: argparse.ArgumentParser, coils: int, repetitions: int) -> None:
    """``--data`` or the phantom's ``--matrix/--coils/--repetitions`` (what ``phantom_data`` reads)."""
    parser.add_argument("--data", help="MRD raw-data file (default: a phantom generated into a temp folder)")
    parser.add_argument("--matrix", type=int, default=256, help="phantom matrix size")
    parser.add_argument("--coils", type=int, default=coils, help="phantom coils")
    parser.add_argument("--repetitions", type=int, default=repetitions,
                        help="phantom repetitions (also the number of images simplefft must return)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(parser, coils=32, repetitions=8)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the median is reported")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds first (page cache, the server's first import of simplefft/scipy)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        print("--repeats must be at least 1 and --warmup at least 0", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_core_") as tmp:
        try:
            return run(args, Path(tmp))
        except (BenchError, ServerError, subprocess.SubprocessError, OSError) as exc:
            print(f"BENCH BROKEN: {exc}", file=sys.stderr)
            log = Path(tmp) / "server.log"
            if log.is_file():
                print("--- server log (tail) ---\n" + "".join(log.read_text(errors="replace")
                                                              .splitlines(True)[-40:]), file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
