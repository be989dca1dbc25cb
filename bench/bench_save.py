"""Saving bench: ``savedataonly`` against plain sequential writes to the same folder (run by hand).

``python bench/bench_save.py [--data FILE] [--matrix 256 --coils 32 --repetitions 8] [--repeats 3]``

In one run, each figure the median of ``--repeats`` runs:

(a) plain write: the bytes of the raw data (340-byte headers + data, as sent on the
    wire) written to a file in the save folder in 1 MB ``write`` calls, then ``fsync``;
(b) ``client.py -c savedataonly`` against ``main.py -S <save folder>``: the server's
    session time (from "Session ... started" to "... ended" in its log, which includes
    writing the HDF5 file and its ``fsync``), and the wall time of the client process
    (Python start-up included);
(c) the floor of receiving: ``client.py -c null`` against the same server, its session
    time (the same bytes received and parsed, nothing saved).

Prints the save speed (b) as a fraction of the plain write speed (a) (target >= 0.9, issue 18),
the client's end-to-end speed as a fraction of (a) (target >= 0.7), and, because a session cannot
save faster than it receives, (b) against the slower of writing and receiving, max((a), (c)):
on a machine whose disk writes faster than loopback TCP delivers, that is the figure the code can
move.  The saved file must hold every acquisition (checked).  Exit status 0 pass, 1 fail, 2 the
bench broke.

The two targets are about keeping up with the disk.  Where the disk is faster than that (a local
NVMe, a VM's cached disk), ``bench/slow_disk.sh MB_PER_S FOLDER python bench/bench_save.py`` (root)
runs the bench with its writes throttled to a given disk speed, e.g. the 450-600 MB/s the targets
were set for.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import (BenchError, ServerError, client_once, machine_description, phantom_data,  # noqa: E402
                        start_server, verdict)

TARGET_FRACTION = 0.9
TARGET_END_TO_END = 0.7
WRITE_CHUNK = 1 << 20
SESSION_LINE = re.compile(r"Session from \('127\.0\.0\.1', (\d+)\) ended after ([0-9.]+) s")


def plain_write_once(folder: Path, nbytes: int) -> float:
    """Seconds to write ``nbytes`` in 1 MB writes and fsync them."""
    chunk = os.urandom(WRITE_CHUNK)
    path = folder / "plain_write.bin"
    start = time.perf_counter()
    with open(path, "wb") as f:
        for offset in range(0, nbytes, WRITE_CHUNK):
            f.write(chunk[:min(WRITE_CHUNK, nbytes - offset)])
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - start
    path.unlink()
    return elapsed


def last_session_seconds(log_path: Path) -> float:
    found = SESSION_LINE.findall(log_path.read_text(errors="replace"))
    if not found:
        raise BenchError(f"no session end in {log_path}")
    return float(found[-1][1])


def check_saved(folder: Path, count: int) -> None:
    saved = sorted(folder.glob("*.h5"))
    if len(saved) != 1:
        raise BenchError(f"expected one saved file in {folder}, found {len(saved)}")
    with h5py.File(saved[0], "r") as h5:
        stored = h5["dataset/data"].shape[0]
    saved[0].unlink()
    if stored != count:
        raise BenchError(f"saved file holds {stored} of {count} acquisitions")


def run(args: argparse.Namespace, tmp: Path) -> int:
    data, count, nbytes = phantom_data(args, tmp)
    save_dir = tmp / "saved"
    save_dir.mkdir()
    server = start_server(tmp / "server.log", "-S", str(save_dir))
    plain, session, client, receive = [], [], [], []
    try:
        for i in range(args.repeats):
            plain.append(plain_write_once(save_dir, nbytes))
            client.append(client_once(server.port, "savedataonly", data, tmp / "out.h5"))
            session.append(last_session_seconds(server.output))
            check_saved(save_dir, count)
            client_once(server.port, "null", data, tmp / "out.h5")
            receive.append(last_session_seconds(server.output))
            print(f"repeat {i + 1}/{args.repeats}: plain {plain[-1]:.3f} s  session {session[-1]:.3f} s  "
                  f"client {client[-1]:.3f} s  receive only {receive[-1]:.3f} s", flush=True)
    finally:
        status = server.stop(timeout=60)
    a, b, c = statistics.median(plain), statistics.median(session), statistics.median(client)
    r = statistics.median(receive)
    mb = nbytes / 1e6
    fraction, end_to_end, of_floor = a / b, a / c, max(a, r) / b
    print(f"\ndate (UTC):        {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S}")
    print(f"machine:           {machine_description()}")
    print(f"data:              {data} ({count} acquisitions, {mb:.1f} MB)")
    print(f"repeats:           {args.repeats} (medians; all runs: plain={_list(plain)}, session={_list(session)}, "
          f"client={_list(client)}, receive={_list(receive)})")
    print(f"(a) plain write:   {a:.3f} s ({mb / a:.0f} MB/s)  1 MB writes + fsync, same folder")
    print(f"(b) savedataonly:  {b:.3f} s ({mb / b:.0f} MB/s)  server session incl. HDF5 write + fsync")
    print(f"    client wall:   {c:.3f} s ({mb / c:.0f} MB/s)  end to end incl. Python start-up")
    print(f"(c) receive only:  {r:.3f} s ({mb / r:.0f} MB/s)  server session of -c null (nothing saved)")
    print(f"server exit:       {status}")
    print(f"target save speed >= {TARGET_FRACTION:.0%} of plain   {fraction:.2f}  {verdict(fraction >= TARGET_FRACTION)}")
    print(f"target end to end >= {TARGET_END_TO_END:.0%} of plain   {end_to_end:.2f}  "
          f"{verdict(end_to_end >= TARGET_END_TO_END)}")
    print(f"(save speed against the slower of writing and receiving, max((a), (c)) / (b): {of_floor:.2f})")
    ok = fraction >= TARGET_FRACTION and end_to_end >= TARGET_END_TO_END and status == 0
    return 0 if ok else 1


def _list(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="MRD raw-data file (default: a generated phantom)")
    parser.add_argument("--matrix", type=int, default=256)
    parser.add_argument("--coils", type=int, default=32)
    parser.add_argument("--repetitions", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        print("--repeats must be at least 1", file=sys.stderr)
        return 2
    if args.data is not None and not Path(args.data).is_file():
        print(f"bench failed: --data {args.data}: no such file", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_save_", dir=args.data and Path(args.data).parent) as tmp:
        try:
            return run(args, Path(tmp))
        except (BenchError, ServerError, subprocess.SubprocessError, OSError) as exc:
            print(f"bench failed: {exc}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
