"""Protocol fuzzer: throws malformed MRD sessions at a real server and checks that it survives.

``python tools/fuzz_server.py [--cases 10000] [--seed 0] [-m] [--timeout 5] [--check-every 500] [--save DIR]``

Starts ``python main.py -H 127.0.0.1 -p PORT`` (threads, or ``-m`` for a forked process per
session) in a temporary folder, generates a 32x32, 2-coil noise-free phantom with
``tools/generate_cartesian_shepp_logan_dataset.py``, and sends ``--cases`` cases, each over a
fresh TCP connection to 127.0.0.1:

* mutated valid sessions (CONFIG_FILE ``simplefft``/``invertcontrast``/``null``, the phantom's
  XML header, optional JSON/TEXT/WAVEFORM/IMAGE/NDARRAY messages, acquisitions, CLOSE), with
  one to three mutations: truncation at a random byte, flipped bytes, a length/size field set
  to zero or a huge value, a random message ID inserted, a message duplicated, deleted or
  swapped;
* random bytes, random bytes after a valid configuration and header, an empty connection,
  and a connection aborted (RST) part-way through a session.

A case sends its bytes, shuts down its sending side and reads the reply until EOF, at most
``--timeout`` seconds. Each case is drawn from ``numpy.random.default_rng([seed, case])``,
so ``--only N`` replays one case exactly (``--save DIR`` writes it, and every case that
misbehaved, as ``case-N.bin``).

After every case the server process must be alive (a death is counted, the case saved and
the server restarted); every ``--check-every`` cases and at the end a normal ``simplefft``
session must return the right image (NRMSE against the root-sum-of-squares of the
phantom's coil images <= 0.01). Reported: cases, server deaths, hangs (no EOF within
``--timeout`` after the case was sent), replies that are not a well-formed MRD stream ending
in one CLOSE, the server's peak RSS (VmHWM of the server process; with ``-m`` that is the
parent only, sessions run in children), thread and file-descriptor counts, and the data sent.

Exit status: 0 when there were no deaths, no hangs and every check passed; 1 otherwise;
2 when the fuzzer itself could not run (phantom or server start failed).
"""
from __future__ import annotations

import argparse
import ctypes
import io
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import ismrmrd
import numpy as np

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))

from connection import MessageReader, MessageWriter, MrdError  # noqa: E402
from constants import MessageID  # noqa: E402
from main import DefaultsHelpFormatter  # noqa: E402
from tools._server_harness import ServerProcess  # noqa: E402

CONFIGS = ("simplefft", "invertcontrast", "null")
EXTRAS = ("json", "text", "waveform", "image", "ndarray")
GENERATOR = REPO_DIR / "tools" / "generate_cartesian_shepp_logan_dataset.py"
PHANTOM_ARGS = ("-m", "32", "-c", "2", "-n", "0")
NOISE_READOUTS_SENT = 2
NRMSE_LIMIT = 0.01
SERVER_START_TIMEOUT_S = 30.0
MAX_REPLY_BYTES = 64 << 20
MAX_PAYLOAD_BYTES = 4 << 20
RSS_JUMP_BYTES = 20 << 20  # cases that raise the server's VmHWM by this much are listed
# IDs worth inserting: valid ones (with whatever follows), the unused legacy range, boundaries.
INTERESTING_IDS = (0, 1, 2, 3, 4, 5, 6, 999, 1000, 1001, 1007, 1008, 1012, 1022, 1026, 1030, 1031, 4096,
                   0x7FFF, 0x8000, 0xFFFF)


def _field(struct_type, name: str, fmt: str, index: int = 0) -> tuple[str, int, str]:
    return (name if not index else f"{name}[{index}]", getattr(struct_type, name).offset + index * struct.calcsize(fmt),
            fmt)


_ACQ = ismrmrd.AcquisitionHeader
_IDX = _ACQ.idx.offset
# (name, byte offset inside the message, i.e. after the 2-byte ID, struct format) of size fields.
SIZE_FIELDS: dict[int, tuple[tuple[str, int, str], ...]] = {
    MessageID.CONFIG_TEXT: (("length", 2, "<I"),),
    MessageID.HEADER: (("length", 2, "<I"),),
    MessageID.TEXT: (("length", 2, "<I"),),
    MessageID.ACQUISITION: tuple((n, 2 + o, f) for n, o, f in (
        _field(_ACQ, "number_of_samples", "<H"), _field(_ACQ, "active_channels", "<H"),
        _field(_ACQ, "trajectory_dimensions", "<H"), _field(_ACQ, "center_sample", "<H"),
        _field(_ACQ, "flags", "<Q"),
        ("idx.kspace_encode_step_1", _IDX + ismrmrd.EncodingCounters.kspace_encode_step_1.offset, "<H"),
        ("idx.slice", _IDX + ismrmrd.EncodingCounters.slice.offset, "<H"),
        ("idx.repetition", _IDX + ismrmrd.EncodingCounters.repetition.offset, "<H"))),
    MessageID.IMAGE: tuple((n, 2 + o, f) for n, o, f in (
        _field(ismrmrd.ImageHeader, "matrix_size", "<H", 0), _field(ismrmrd.ImageHeader, "matrix_size", "<H", 1),
        _field(ismrmrd.ImageHeader, "matrix_size", "<H", 2), _field(ismrmrd.ImageHeader, "channels", "<H"),
        _field(ismrmrd.ImageHeader, "data_type", "<H"), _field(ismrmrd.ImageHeader, "attribute_string_len", "<I"),
        ("attribute length", 2 + ctypes.sizeof(ismrmrd.ImageHeader), "<Q"))),
    MessageID.WAVEFORM: tuple((n, 2 + o, f) for n, o, f in (
        _field(ismrmrd.WaveformHeader, "number_of_samples", "<H"), _field(ismrmrd.WaveformHeader, "channels", "<H"))),
    MessageID.NDARRAY: (("data_type", 2, "<H"), ("ndim", 6, "<H"), ("dims[0]", 8, "<Q"), ("dims[1]", 16, "<Q")),
}


def size_fields(message: bytes) -> tuple[tuple[str, int, str], ...]:
    """The size fields of one serialised message that lie inside it (none for unknown IDs)."""
    if len(message) < 2:
        return ()
    msg_id = struct.unpack_from("<H", message)[0]
    return tuple(f for f in SIZE_FIELDS.get(msg_id, ()) if f[1] + struct.calcsize(f[2]) <= len(message))


# Phantom and valid sessions ----------------------------------------------------------------------
@dataclass
class Phantom:
    xml: str
    heads: list[bytes]
    trajs: list[np.ndarray]
    datas: list[np.ndarray]
    imaging: list[int]  # indices of imaging readouts (noise readouts excluded)
    reference: np.ndarray  # root-sum-of-squares of the noise-free coil images of slice 0

    @classmethod
    def generate(cls, folder: Path) -> "Phantom":
        path = folder / "fuzz_phantom.h5"
        subprocess.run([sys.executable, str(GENERATOR), "-o", str(path), *PHANTOM_ARGS], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> "Phantom":
        with h5py.File(path, "r") as f:
            xml = f["dataset/xml"][0]
            records = f["dataset/data"][...]
            coil_images = f["dataset/coil_images"][0]
        heads = [records["head"][i].tobytes() for i in range(len(records))]
        flags = records["head"]["flags"]
        noise = np.uint64(1) << np.uint64(ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1)
        imaging = [i for i in range(len(records)) if not (int(flags[i]) & int(noise))]
        return cls(xml.decode() if isinstance(xml, bytes) else str(xml), heads, list(records["traj"]),
                   [d.view(np.complex64) for d in records["data"]], imaging, np.sqrt((np.abs(coil_images) ** 2).sum(axis=0)))


def _serialise(send) -> bytes:
    buf = io.BytesIO()
    send(MessageWriter.for_stream(buf, text_nul=True))
    return buf.getvalue()


def _small_image() -> ismrmrd.Image:
    image = ismrmrd.Image.from_array(np.arange(16, dtype=np.int16).reshape(4, 4))
    image.image_series_index = 7
    meta = ismrmrd.Meta()
    meta["Keep"] = "1"
    image.attribute_string = meta.serialize()
    return image


def build_session(phantom: Phantom, config: str, extras: tuple[str, ...] = (), close: bool = True) -> list[bytes]:
    """A valid session as a list of serialised messages (each starts with its 2-byte ID)."""
    messages = [_serialise(lambda w: w.send_config_file(config)), _serialise(lambda w: w.send_header(phantom.xml))]
    if "json" in extras:
        messages.append(_serialise(lambda w: w.send_text('{"version": "1.1.0", "parameters": {"x": 1}}')))
    noise = [i for i in range(len(phantom.heads)) if i not in set(phantom.imaging)][:NOISE_READOUTS_SENT]
    acqs = [_serialise(lambda w, i=i: w.send_acquisition_parts(phantom.heads[i], phantom.trajs[i], phantom.datas[i]))
            for i in noise + phantom.imaging]
    middle = []
    if "text" in extras:
        middle.append(_serialise(lambda w: w.send_text("fuzz text")))
    if "waveform" in extras:
        wav = ismrmrd.Waveform.from_array(np.arange(10, dtype=np.uint32).reshape(2, 5), waveform_id=1025)
        middle.append(_serialise(lambda w: w.send_waveform(wav)))
    if "image" in extras:
        image = _small_image()
        middle.append(_serialise(lambda w: w.send_image(image)))
    if "ndarray" in extras:
        middle.append(_serialise(lambda w: w.send_ndarray(np.arange(6, dtype=np.float32).reshape(2, 3))))
    half = len(acqs) // 2
    messages += acqs[:half] + middle + acqs[half:]
    if close:
        messages.append(_serialise(lambda w: w.send_close()))
    return messages


# Mutations: each takes explicit parameters, so the tool's RNG and hypothesis drive the same code --
def apply_ops(messages: list[bytes], ops: list[tuple]) -> bytes:
    """Apply mutation ops in order; byte-level ops (truncate, flip) join the messages into one blob.

    Indices are taken modulo the current length, so any integers are valid parameters.
    Ops: ("truncate", at), ("flip", [(pos, xor), ...]), ("flip_msg", msg, offset, xor),
    ("set_field", msg, field, value),
    ("insert_id", msg, id, tail_bytes), ("duplicate", msg), ("delete", msg), ("swap", i, j).
    """
    msgs = list(messages)
    for op in ops:
        kind = op[0]
        if kind in ("truncate", "flip"):
            blob = bytearray(b"".join(msgs))
            if kind == "truncate":
                blob = blob[:op[1] % (len(blob) + 1)]
            elif blob:
                for pos, xor in op[1]:
                    blob[pos % len(blob)] ^= (xor & 0xFF) or 0xFF
            msgs = [bytes(blob)]
            continue
        if not msgs:
            msgs = [b""]
        i = op[1] % len(msgs)
        if kind == "set_field":
            fields = size_fields(msgs[i])
            if fields:
                _, offset, fmt = fields[op[2] % len(fields)]
                value = op[3] % (1 << (8 * struct.calcsize(fmt)))
                raw = bytearray(msgs[i])
                struct.pack_into(fmt, raw, offset, value)
                msgs[i] = bytes(raw)
        elif kind == "flip_msg":
            if msgs[i]:
                raw = bytearray(msgs[i])
                raw[op[2] % len(raw)] ^= (op[3] & 0xFF) or 0xFF
                msgs[i] = bytes(raw)
        elif kind == "insert_id":
            msgs.insert(i, struct.pack("<H", op[2] & 0xFFFF) + bytes(op[3]))
        elif kind == "duplicate":
            msgs.insert(i, msgs[i])
        elif kind == "delete":
            del msgs[i]
        elif kind == "swap":
            j = op[2] % len(msgs)
            msgs[i], msgs[j] = msgs[j], msgs[i]
        else:
            raise ValueError(f"unknown mutation {kind!r}")
    return b"".join(msgs)


@dataclass
class Case:
    index: int
    description: str
    payload: bytes
    mode: str = "send"  # send | abort (close with RST after payload) | empty (connect, shut down, read)


def _random_op(rng: np.random.Generator, messages: list[bytes]) -> tuple:
    kind = rng.choice(["truncate", "flip", "set_field", "set_field", "insert_id", "duplicate", "delete", "swap"])
    total = sum(len(m) for m in messages)
    n = len(messages)
    if kind == "truncate":
        return ("truncate", int(rng.integers(0, total + 1)))
    if kind == "flip":
        flips = []
        for _ in range(int(rng.integers(1, 9))):
            if rng.random() < 0.7:  # favour headers and framing over sample data
                m = int(rng.integers(0, n))
                start = sum(len(x) for x in messages[:m])
                pos = start + int(rng.integers(0, min(len(messages[m]), 360)))
            else:
                pos = int(rng.integers(0, max(total, 1)))
            flips.append((pos, int(rng.integers(1, 256))))
        return ("flip", flips)
    if kind == "set_field":
        value = int(rng.choice([0, 1, 2, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32, (1 << 63) - 1, (1 << 64) - 1,
                                int(rng.integers(0, 1 << 62))]))
        return ("set_field", int(rng.integers(0, n)), int(rng.integers(0, 16)), value)
    if kind == "insert_id":
        msg_id = int(rng.choice(INTERESTING_IDS)) if rng.random() < 0.7 else int(rng.integers(0, 1 << 16))
        tail = rng.bytes(int(rng.choice([0, 0, 4, 8, 64, 1024])))
        return ("insert_id", int(rng.integers(0, n + 1)), msg_id, tail)
    if kind == "swap":
        return ("swap", int(rng.integers(0, n)), int(rng.integers(0, n)))
    return (str(kind), int(rng.integers(0, n)))


def _short(op: tuple) -> str:
    if op[0] == "insert_id":
        return f"insert_id(at={op[1]}, id={op[2]}, tail={len(op[3])} B)"
    if op[0] == "flip":
        return f"flip({len(op[1])} bytes at {[p for p, _ in op[1]][:4]}...)"
    return f"{op[0]}{op[1:]}"


def make_case(phantom: Phantom, seed: int, index: int, sessions: dict | None = None) -> Case:
    """Case ``index`` of run ``seed`` (independent of every other case)."""
    rng = np.random.default_rng([seed, index])
    roll = rng.random()
    if roll < 0.06:
        return Case(index, "random bytes", rng.bytes(int(rng.integers(1, 4097))))
    if roll < 0.10:
        config = str(rng.choice(CONFIGS))
        prefix = b"".join(build_session(phantom, config, close=False)[:2])
        return Case(index, f"{config} config + header + random bytes", prefix + rng.bytes(int(rng.integers(1, 2049))))
    if roll < 0.12:
        return Case(index, "empty connection", b"", mode="empty")
    config = str(rng.choice(CONFIGS))
    extras = tuple(e for e in EXTRAS if rng.random() < 0.3)
    key = (config, extras)
    if sessions is not None and key in sessions:
        messages = sessions[key]
    else:
        messages = build_session(phantom, config, extras)
        if sessions is not None:
            sessions[key] = messages
    if roll < 0.16:
        payload = b"".join(messages)
        at = int(rng.integers(0, len(payload) + 1))
        return Case(index, f"{config}{list(extras)} aborted (RST) after {at} bytes", payload[:at], mode="abort")
    ops = [_random_op(rng, messages) for _ in range(int(rng.integers(1, 4)))]
    payload = apply_ops(messages, ops)[:MAX_PAYLOAD_BYTES]
    return Case(index, f"{config}{list(extras)}: " + ", ".join(_short(op) for op in ops), payload)


# Talking to the server -----------------------------------------------------------------------------
@dataclass
class Outcome:
    status: str  # eof | timeout | reset | refused
    reply: bytes = b""
    seconds: float = 0.0

    def parse(self) -> tuple[list[tuple[int, object]], str | None]:
        """(messages, error): the reply as MRD messages; error names what is not well formed."""
        reader = MessageReader(io.BytesIO(self.reply))
        messages = []
        try:
            while True:
                msg_id, item = reader.read()
                if msg_id is None:
                    break
                messages.append((msg_id, item))
        except MrdError as exc:
            return messages, f"reply does not parse: {exc}"
        closes = sum(1 for msg_id, _ in messages if msg_id == MessageID.CLOSE)
        if closes != 1 or messages[-1][0] != MessageID.CLOSE:
            return messages, f"reply has {closes} CLOSE message(s), last ID {messages[-1][0] if messages else None}"
        return messages, None


def send_case(port: int, case: Case, timeout: float) -> Outcome:
    """Send one case over a fresh connection; read the reply until EOF or ``timeout``."""
    start = time.monotonic()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return Outcome("refused", seconds=time.monotonic() - start)
    reply = bytearray()
    try:
        if case.mode == "abort":
            if case.payload:
                sock.sendall(case.payload)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return Outcome("reset", seconds=time.monotonic() - start)
        try:
            if case.payload:
                sock.sendall(case.payload)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server gave up on the stream early; its reply may still be readable
        deadline = start + timeout
        while len(reply) < MAX_REPLY_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                return Outcome("timeout", bytes(reply), time.monotonic() - start)
            sock.settimeout(left)
            chunk = sock.recv(1 << 16)
            if not chunk:
                return Outcome("eof", bytes(reply), time.monotonic() - start)
            reply += chunk
        return Outcome("eof", bytes(reply), time.monotonic() - start)
    except socket.timeout:
        return Outcome("timeout", bytes(reply), time.monotonic() - start)
    except (ConnectionResetError, BrokenPipeError):
        return Outcome("reset", bytes(reply), time.monotonic() - start)
    finally:
        sock.close()


def nrmse(image: np.ndarray, reference: np.ndarray) -> float:
    """Normalised RMS error after fitting one real scale (as tests/conftest.py)."""
    image = np.asarray(image, dtype=np.float64).ravel()
    reference = np.asarray(reference, dtype=np.float64).ravel()
    scale = image @ reference / (reference @ reference)
    return float(np.linalg.norm(image - scale * reference) / np.linalg.norm(scale * reference))


def check_simplefft(port: int, phantom: Phantom, timeout: float = 30.0) -> str | None:
    """Run one normal simplefft session; None when its image is right, else what went wrong."""
    case = Case(-1, "valid simplefft", b"".join(build_session(phantom, "simplefft")))
    outcome = send_case(port, case, timeout)
    if outcome.status != "eof":
        return f"normal session ended with {outcome.status}"
    messages, error = outcome.parse()
    if error:
        return f"normal session: {error}"
    images = [item for msg_id, item in messages if msg_id == MessageID.IMAGE]
    texts = [item for msg_id, item in messages if msg_id == MessageID.TEXT]
    if len(images) != 1:
        return f"normal session returned {len(images)} images (texts: {texts})"
    pixels = np.asarray(images[0].data).reshape(phantom.reference.shape)
    err = nrmse(pixels, phantom.reference)
    return None if err <= NRMSE_LIMIT else f"normal session image NRMSE {err:.4f} > {NRMSE_LIMIT}"


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM/VmRSS (bytes), Threads and open file descriptors of a process (empty when it is gone)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) * 1024
            elif key == "Threads":
                out[key] = int(value)
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        children = Path(f"/proc/{pid}/task/{pid}/children")
        out["children"] = len(children.read_text().split()) if children.exists() else 0
    except (OSError, ValueError):
        pass
    return out


class Server:
    """``python main.py -H 127.0.0.1 -p PORT [-m]`` in ``folder``, logging to a file there; ``start()``
    again after a death starts a fresh one (``server-<n>.log``) on a new port."""

    def __init__(self, folder: Path, multiprocessing: bool) -> None:
        self.folder = folder
        self.multiprocessing = multiprocessing
        self.server: ServerProcess | None = None
        self.starts = 0

    def start(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.starts += 1
        self.server = ServerProcess("-S", str(self.folder / "saved"), *(["-m"] if self.multiprocessing else []),
                                    log=self.folder / f"server-{self.starts}.log", cwd=self.folder,
                                    timeout=SERVER_START_TIMEOUT_S)

    @property
    def proc(self) -> subprocess.Popen:
        return self.server.proc

    @property
    def port(self) -> int:
        return self.server.port

    def alive(self) -> bool:
        return self.server is not None and self.server.alive()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "".join(self.server.log_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        return None if self.server is None else self.server.stop(timeout=timeout)


# Main loop -------------------------------------------------------------------------------------------
@dataclass
class Report:
    cases: int = 0
    deaths: list[int] = field(default_factory=list)
    hangs: list[int] = field(default_factory=list)
    malformed: list[int] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    bytes_sent: int = 0
    peak_rss: int = 0
    slowest: tuple[float, int] = (0.0, -1)
    rss_jumps: list[tuple[int, int, str]] = field(default_factory=list)  # (VmHWM increase, case, description)


def save_case(folder: Path | None, case: Case, why: str) -> None:
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"case-{case.index}.bin").write_bytes(case.payload)
    (folder / f"case-{case.index}.txt").write_text(f"{why}\nmode={case.mode}\n{case.description}\n")


def checkpoint(server: Server, phantom: Phantom, report: Report, label: str, verbose: bool) -> None:
    status = proc_status(server.proc.pid)
    error = None if server.alive() else "server is not running"
    error = error or check_simplefft(server.port, phantom)
    status = proc_status(server.proc.pid) or status
    report.peak_rss = max(report.peak_rss, status.get("VmHWM", 0))
    if error:
        report.failed_checks.append(f"{label}: {error}")
    if verbose or error:
        print(f"[{label}] check {'FAILED: ' + error if error else 'ok'}; VmHWM {status.get('VmHWM', 0) / 1e6:.1f} MB, "
              f"VmRSS {status.get('VmRSS', 0) / 1e6:.1f} MB, threads {status.get('Threads', '?')}, "
              f"fds {status.get('fds', '?')}, children {status.get('children', '?')}", flush=True)


def run(args: argparse.Namespace, tmp: Path) -> int:
    phantom = Phantom.generate(tmp)
    save_dir = Path(args.save).resolve() if args.save else None
    server = Server(tmp, args.multiprocessing)
    server.start()
    report = Report(peak_rss=proc_status(server.proc.pid).get("VmHWM", 0))
    sessions: dict = {}
    indices = [args.only] if args.only is not None else range(args.cases)
    valid_size = len(b"".join(build_session(phantom, "simplefft")))
    start = time.monotonic()
    print(f"fuzzing 127.0.0.1:{server.port} ({'-m, process per session' if args.multiprocessing else 'threads'}), "
          f"seed {args.seed}, {len(indices)} case(s), timeout {args.timeout:g} s", flush=True)
    try:
        for n, index in enumerate(indices, 1):
            case = make_case(phantom, args.seed, index, sessions)
            if args.only is not None:
                print(f"case {index}: mode={case.mode}, {len(case.payload)} bytes: {case.description}")
                save_case(save_dir, case, "requested with --only")
            outcome = send_case(server.port, case, args.timeout)
            hwm = proc_status(server.proc.pid).get("VmHWM", 0)
            if hwm - report.peak_rss >= RSS_JUMP_BYTES and report.peak_rss:
                report.rss_jumps.append((hwm - report.peak_rss, index, case.description))
                if args.verbose:
                    print(f"case {index}: server VmHWM +{(hwm - report.peak_rss) / 1e6:.0f} MB to {hwm / 1e6:.0f} MB "
                          f"after: {case.description}", flush=True)
            report.peak_rss = max(report.peak_rss, hwm)
            report.cases += 1
            report.bytes_sent += len(case.payload)
            report.statuses[outcome.status] = report.statuses.get(outcome.status, 0) + 1
            report.slowest = max(report.slowest, (outcome.seconds, index))
            problem = None
            if outcome.status == "timeout":
                report.hangs.append(index)
                problem = f"no EOF within {args.timeout:g} s ({len(outcome.reply)} reply bytes)"
            elif outcome.status == "eof":
                _, error = outcome.parse()
                if error:
                    report.malformed.append(index)
                    problem = error
            elif outcome.status == "refused":
                problem = "connection refused"
            if not server.alive():
                report.deaths.append(index)
                problem = f"server died (exit {server.proc.returncode})"
                print(f"case {index}: SERVER DIED (exit {server.proc.returncode}) after: {case.description}\n"
                      f"--- server log tail ---\n{server.log_tail()}", flush=True)
                server.start()
            if problem:
                save_case(save_dir, case, problem)
                if args.verbose or outcome.status != "eof":
                    print(f"case {index}: {problem}: mode={case.mode}, {len(case.payload)} B, {case.description}",
                          flush=True)
            if n % args.check_every == 0:
                checkpoint(server, phantom, report, f"{n} cases, {time.monotonic() - start:.0f} s", True)
        time.sleep(0.5)  # let the last sessions end before counting threads
        checkpoint(server, phantom, report, "end", True)
    finally:
        exit_status = server.stop()
    elapsed = time.monotonic() - start
    print()
    print(f"cases:                {report.cases} in {elapsed:.1f} s ({report.cases / max(elapsed, 1e-9):.0f}/s), seed "
          f"{args.seed}, {'-m (process per session)' if args.multiprocessing else 'threads'}")
    print(f"outcomes:             {dict(sorted(report.statuses.items()))} "
          f"(reset: aborted by us, or the server reset the connection)")
    print(f"server deaths:        {len(report.deaths)} {report.deaths[:20]}")
    print(f"hangs (>{args.timeout:g} s):       {len(report.hangs)} {report.hangs[:20]}")
    print(f"malformed replies:    {len(report.malformed)} {report.malformed[:20]}")
    print(f"slowest case:         {report.slowest[0]:.2f} s (case {report.slowest[1]})")
    print(f"checks:               {'all passed' if not report.failed_checks else report.failed_checks}")
    print(f"server peak RSS:      {report.peak_rss / 1e6:.1f} MB (VmHWM{', parent process' if args.multiprocessing else ''})")
    for jump, index, description in sorted(report.rss_jumps, reverse=True)[:5]:
        print(f"  VmHWM +{jump / 1e6:.0f} MB at case {index}: {description}")
    print(f"data sent:            {report.bytes_sent / 1e6:.1f} MB in total; a valid session is {valid_size} bytes "
          f"(phantom {' '.join(PHANTOM_ARGS)})")
    print(f"server exit status:   {exit_status} (SIGTERM)")
    ok = not report.deaths and not report.hangs and not report.failed_checks
    print("RESULT:               " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--cases", type=int, default=10000, help="number of cases")
    parser.add_argument("--seed", type=int, default=0, help="seed; case N is drawn from default_rng([seed, N])")
    parser.add_argument("-m", "--multiprocessing", action="store_true", help="start the server with -m")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per connection until EOF")
    parser.add_argument("--check-every", type=int, default=500, help="run a normal simplefft session every N cases")
    parser.add_argument("--only", type=int, help="run only case N (printed, and saved with --save)")
    parser.add_argument("--save", help="folder for the payloads of cases that misbehaved")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case that misbehaved")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cases < 0 or args.check_every < 1 or args.timeout <= 0:
        print("--cases must be >= 0, --check-every >= 1 and --timeout > 0", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fuzz_server_") as tmp:
        try:
            return run(args, Path(tmp))
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            print(f"FUZZER BROKEN: {exc}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
