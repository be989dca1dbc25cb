"""Protocol fuzzer: throws malformed MRD sessions at a real server and checks that it survives.

``python tools/fuzz_server.py [--format v1|v2] [--cases 10000] [--seed 0] [-m] [--timeout 5] [--check-every 500]
[--save DIR]``

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

``--format v2`` (v1 is the default) sends MRD v2 (yardl binary) sessions instead, each built with
``mrd.BinaryMrdWriter``: the preamble (``yardl``, format version 1, MRD's schema), the phantom's
header (``mrdv2.convert.header_from_xml``) with the user parameter string ``config`` set to
``simplefft``/``invertcontrast``/``null`` or absent (the server's default module), the
acquisitions (``mrdv2.convert.item_to_v2``) each in a block of one, optionally a waveform, an
image and items v1 has no message for (an ``AcquisitionBucket``, an ``ArrayComplexFloat``), and
the final 0 count; mutated with one to three of: truncation at a random byte, flipped bytes, a
varint count or length (the schema's length, a block count, the final count, an array dimension)
set to zero or a huge value (up to an 11-byte varint), a random union index (or the header's
optional flag), a wrong magic after ``ya``, an unsupported format version, a schema that is not
MRD's, a segment (preamble part, header, item) duplicated, deleted or swapped; and ``y`` followed
by random bytes, random bytes after the preamble or after preamble and header, and connections
aborted (RST) part-way. The server answers in the format that the payload's first byte selects.
A v2 reply is well formed when it is empty or when ``mrd.BinaryMrdReader`` reads it completely:
MRD's preamble, the optional header and whole items, ending with the final 0 count, or without it
right after a whole item (v2 has no error message: an error ends the stream, and a reply cut
after an item is accepted); a reply cut inside an item, or with bytes after its end, is
malformed. A reply to a payload that does not start with ``y`` is judged as a v1 reply.

A case sends its bytes, shuts down its sending side and reads the reply until EOF, at most
``--timeout`` seconds. Each case is drawn from ``numpy.random.default_rng([seed, case])``,
so ``--only N`` replays one case exactly (``--save DIR`` writes it, and every case that
misbehaved, as ``case-N.bin``).

After every case the server process must be alive (a death is counted, the case saved and
the server restarted); every ``--check-every`` cases and at the end a normal ``simplefft``
session (v1, and with ``--format v2`` also a v2 one) must return the right image (NRMSE
against the root-sum-of-squares of the phantom's coil images <= 0.01). Reported: cases,
server deaths, hangs (no EOF within ``--timeout`` after the case was sent), replies that are
not well formed (v1: an MRD stream ending in one CLOSE; v2: as above), the server's peak RSS
(VmHWM of the server process; with ``-m`` that is the parent only, sessions run in children),
thread and file-descriptor counts, and the data sent.

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
from typing import Any

import h5py
import ismrmrd
import mrd
import numpy as np

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))

from connection import MessageReader, MessageWriter, MrdError  # noqa: E402
from constants import MessageID  # noqa: E402
from main import DefaultsHelpFormatter  # noqa: E402
from mrdv2._acquisition_codec import varint  # noqa: E402
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


# MRD v2 sessions (--format v2) -------------------------------------------------------------------
V2_CONFIGS = CONFIGS + ("",)  # "": no user parameter ``config``, the server's default module
V2_EXTRAS = ("waveform", "image", "bucket", "array")  # bucket, array: items v1 has no message for
V2_MAGIC_TAILS = (b"rdm", b"RDL", b"\x00\x00\x00", b"yard", b"rd", b"rdl!")  # after b"ya"
V2_VERSIONS = (0, 2, 3, -1, 0x7FFFFFFF, -0x80000000, 0x100)
V2_VARINT_VALUES = (0, 1, 2, 0x7F, 0x80, 0xFFFF, 1 << 31, 1 << 32, 1 << 40, (1 << 63) - 1, (1 << 64) - 1,
                    1 << 70)  # 1 << 70: an 11-byte varint, longer than any 64-bit value
V2_UNION_VALUES = tuple(range(16)) + (0x7F, 0x80, 0xFF)  # 0..13 are StreamItem cases, 14.. none


@dataclass
class Segment:
    """One piece of a v2 session: ``magic``, ``version``, ``schema``, ``header``, ``item`` (a block of
    one stream item), ``end`` (the final 0 count), or ``blob`` (after a byte-level mutation)."""
    kind: str
    data: bytes
    varints: tuple[tuple[str, int], ...] = ()  # (name, offset in data) of the varint counts and lengths
    union: int | None = None  # offset of the union index (items) or the optional's flag (header)


def _varint_end(data: bytes, offset: int) -> int:
    end = offset
    while end < len(data) and data[end] >= 0x80:
        end += 1
    return min(end + 1, len(data))


def _elements(array: np.ndarray) -> bytes:
    """The elements of an array as yardl writes them: integers as varints (signed ones zigzag
    encoded), floating-point and complex numbers as their little-endian bytes."""
    if array.dtype.kind == "u":
        return b"".join(varint(int(v)) for v in array.flat)
    if array.dtype.kind == "i":
        return b"".join(varint((int(v) << 1) ^ (int(v) >> 63)) for v in array.flat)
    return array.tobytes()


def _array_fields(data: bytes, name: str, array: np.ndarray, at: int | None = None) -> tuple[list, int]:
    """(varint fields of the shape of ``array`` serialised in ``data``, offset after its elements);
    the shape is found just before the array's elements, or at ``at``."""
    shape = [varint(int(d)) for d in array.shape]
    elements = _elements(array)
    if at is None:
        at = data.find(b"".join(shape) + elements)
    if at < 0 or data[at:at + sum(map(len, shape))] != b"".join(shape):
        return [], -1
    fields, offset = [], at
    for axis, raw in enumerate(shape):
        fields.append((f"{name} dim {axis}", offset))
        offset += len(raw)
    return fields, offset + len(elements)


def _item_fields(data: bytes, item: Any) -> list[tuple[str, int]]:
    """The array shapes inside one serialised item block (found by their bytes)."""
    value = item.value
    if isinstance(value, mrd.Acquisition):
        fields, end = _array_fields(data, "acquisition data", value.data)
        if end > 0:
            fields += _array_fields(data, "acquisition trajectory", value.trajectory, at=end)[0]
        return fields
    if isinstance(value, (mrd.Image, mrd.Waveform)):
        return _array_fields(data, f"{type(value).__name__.lower()} data", value.data)[0]
    if isinstance(value, np.ndarray):  # ArrayComplexFloat: ndim, then the shape
        fields, _ = _array_fields(data, "array", value)
        return [("array ndim", fields[0][1] - 1)] + fields if fields else []
    if isinstance(value, mrd.AcquisitionBucket):
        return [("bucket data count", 1 + len(varint(1)))]
    return []


def _v2_items(phantom: Phantom, extras: tuple[str, ...]) -> list:
    from mrdv2 import convert
    acqs = []
    noise = [i for i in range(len(phantom.heads)) if i not in set(phantom.imaging)][:NOISE_READOUTS_SENT]
    for i in noise + phantom.imaging:
        acq = ismrmrd.Acquisition(ismrmrd.AcquisitionHeader.from_buffer_copy(phantom.heads[i]))
        acq.data[...] = phantom.datas[i].reshape(acq.data.shape)
        if acq.traj.size:
            acq.traj[...] = phantom.trajs[i].reshape(acq.traj.shape)
        acqs.append(convert.item_to_v2(acq))
    middle = []
    if "waveform" in extras:
        middle.append(convert.item_to_v2(ismrmrd.Waveform.from_array(np.arange(10, dtype=np.uint32).reshape(2, 5),
                                                                     waveform_id=1025)))
    if "image" in extras:
        middle.append(convert.item_to_v2(_small_image()))
    if "bucket" in extras:
        middle.append(mrd.StreamItem.AcquisitionBucket(mrd.AcquisitionBucket(data=[acqs[-1].value])))
    if "array" in extras:
        middle.append(mrd.StreamItem.ArrayComplexFloat(np.arange(6, dtype=np.complex64).reshape(2, 3)))
    half = len(acqs) // 2
    return acqs[:half] + middle + acqs[half:]


def build_v2_session(phantom: Phantom, config: str, extras: tuple[str, ...] = (), close: bool = True) -> list[Segment]:
    """A valid MRD v2 session (mrd.BinaryMrdWriter: preamble, the phantom's header with ``config`` as
    its user parameter string, each item a block of one, the final 0 count) as segments."""
    from mrdv2.stream import header_with_config
    buf = io.BytesIO()
    writer = mrd.BinaryMrdWriter(buf)
    writer.write_header(header_with_config(phantom.xml, config))
    writer._stream.flush()
    start = buf.getvalue()
    schema = mrd.BinaryMrdReader.schema.encode()
    schema_end = 9 + len(varint(len(schema))) + len(schema)
    segments = [Segment("magic", start[:5]), Segment("version", start[5:9]),
                Segment("schema", start[9:schema_end], varints=(("schema length", 0),)),
                Segment("header", start[schema_end:], union=0)]
    for item in _v2_items(phantom, extras):
        at = buf.tell()
        writer.write_data([item])
        writer._stream.flush()
        data = buf.getvalue()[at:]
        segments.append(Segment("item", data, varints=(("block count", 0), *_item_fields(data, item)), union=1))
    if close:
        segments.append(Segment("end", b"\x00", varints=(("end count", 0),)))
    return segments


def v2_preamble(segments: list[Segment]) -> bytes:
    return b"".join(s.data for s in segments if s.kind in ("magic", "version", "schema"))


def apply_v2_ops(segments: list[Segment], ops: list[tuple]) -> bytes:
    """Apply v2 mutation ops in order (indices modulo the current lengths; a field or segment that is
    not there makes the op do nothing). Ops: ("truncate", at), ("flip", [(pos, xor), ...]) (both join
    the segments into one blob), ("set_varint", name, k, value) (the k-th varint field of that name
    re-encoded), ("union", k, value) (the k-th union index or optional flag), ("magic", tail),
    ("version", value), ("schema", text), ("duplicate", i), ("delete", i), ("swap", i, j)."""
    segs = list(segments)
    for op in ops:
        kind = op[0]
        if kind in ("truncate", "flip"):
            blob = bytearray(b"".join(s.data for s in segs))
            if kind == "truncate":
                blob = blob[:op[1] % (len(blob) + 1)]
            elif blob:
                for pos, xor in op[1]:
                    blob[pos % len(blob)] ^= (xor & 0xFF) or 0xFF
            segs = [Segment("blob", bytes(blob))]
        elif kind == "set_varint":
            where = [(i, off) for i, s in enumerate(segs) for name, off in s.varints if name == op[1]]
            if where:
                i, off = where[op[2] % len(where)]
                data = segs[i].data
                segs[i] = Segment(segs[i].kind, data[:off] + varint(op[3]) + data[_varint_end(data, off):])
        elif kind == "union":
            where = [i for i, s in enumerate(segs) if s.union is not None and s.union < len(s.data)]
            if where:
                i = where[op[1] % len(where)]
                raw = bytearray(segs[i].data)
                raw[segs[i].union] = op[2] & 0xFF
                segs[i] = Segment(segs[i].kind, bytes(raw))
        elif kind in ("magic", "version", "schema"):
            for i, s in enumerate(segs):
                if s.kind == kind:
                    data = (b"ya" + bytes(op[1]) if kind == "magic" else struct.pack("<i", op[1]) if kind == "version"
                            else varint(len(op[1])) + bytes(op[1]))
                    segs[i] = Segment(kind, data)
        elif kind in ("duplicate", "delete", "swap"):
            if not segs:
                continue
            i = op[1] % len(segs)
            if kind == "duplicate":
                segs.insert(i, segs[i])
            elif kind == "delete":
                del segs[i]
            else:
                j = op[2] % len(segs)
                segs[i], segs[j] = segs[j], segs[i]
        else:
            raise ValueError(f"unknown v2 mutation {kind!r}")
    return b"".join(s.data for s in segs)


def other_schemas(rng: np.random.Generator) -> bytes:
    """A schema that is not MRD's: MRD's renamed or cut, another protocol's, empty, or noise."""
    schema = mrd.BinaryMrdReader.schema
    choice = int(rng.integers(0, 6))
    if choice == 0:
        return schema.replace('"Mrd"', '"NotMrd"', 1).encode()
    if choice == 1:
        return schema[:int(rng.integers(0, len(schema)))].encode()
    if choice == 2:
        return (b'{"protocol":{"name":"Other","sequence":[{"name":"data","type":{"stream":{"items":"int32"}}}]},'
                b'"types":[]}')
    if choice == 3:
        return b""
    if choice == 4:
        return (schema + " ").encode()
    return rng.bytes(int(rng.integers(1, 256)))


def _random_v2_op(rng: np.random.Generator, segments: list[Segment]) -> tuple:
    kind = str(rng.choice(["truncate", "flip", "set_varint", "set_varint", "set_varint", "union", "union", "magic",
                           "version", "schema", "duplicate", "delete", "swap"]))
    total = sum(len(s.data) for s in segments)
    n = len(segments)
    if kind == "truncate":
        return ("truncate", int(rng.integers(0, total + 1)))
    if kind == "flip":
        flips = []
        for _ in range(int(rng.integers(1, 9))):
            if rng.random() < 0.7:  # favour the header and the item headers over the schema and the samples
                m = int(rng.integers(3, n)) if n > 3 else int(rng.integers(0, n))
                start = sum(len(s.data) for s in segments[:m])
                pos = start + int(rng.integers(0, min(len(segments[m].data), 400)))
            else:
                pos = int(rng.integers(0, max(total, 1)))
            flips.append((pos, int(rng.integers(1, 256))))
        return ("flip", flips)
    if kind == "set_varint":
        names = sorted({name for s in segments for name, _ in s.varints})
        value = int(rng.choice(V2_VARINT_VALUES)) if rng.random() < 0.8 else int(rng.integers(0, 1 << 62))
        return ("set_varint", str(rng.choice(names)), int(rng.integers(0, 1 << 16)), value)
    if kind == "union":
        value = int(rng.choice(V2_UNION_VALUES)) if rng.random() < 0.7 else int(rng.integers(0, 256))
        return ("union", int(rng.integers(0, 1 << 16)), value)
    if kind == "magic":
        return ("magic", V2_MAGIC_TAILS[int(rng.integers(0, len(V2_MAGIC_TAILS)))]
                if rng.random() < 0.7 else rng.bytes(3))
    if kind == "version":
        return ("version", int(rng.choice(V2_VERSIONS)))
    if kind == "schema":
        return ("schema", other_schemas(rng))
    if kind == "swap":
        return ("swap", int(rng.integers(0, n)), int(rng.integers(0, n)))
    return (kind, int(rng.integers(0, n)))


def _short_v2(op: tuple) -> str:
    if op[0] == "flip":
        return f"flip({len(op[1])} bytes at {[p for p, _ in op[1]][:4]}...)"
    if op[0] == "schema":
        return f"schema({len(op[1])} B: {bytes(op[1][:24])!r}...)"
    return f"{op[0]}{op[1:]}"


def make_v2_case(phantom: Phantom, seed: int, index: int, sessions: dict | None = None) -> Case:
    """Case ``index`` of run ``seed`` in ``--format v2`` (independent of every other case)."""
    rng = np.random.default_rng([seed, index])
    roll = rng.random()
    if roll < 0.05:
        return Case(index, "v2: 'y' + random bytes", b"y" + rng.bytes(int(rng.integers(0, 4097))))
    config = str(rng.choice(V2_CONFIGS))
    extras = tuple(e for e in V2_EXTRAS if rng.random() < 0.3)
    key = ("v2", config, extras)
    if sessions is not None and key in sessions:
        segments = sessions[key]
    else:
        segments = build_v2_session(phantom, config, extras)
        if sessions is not None:
            sessions[key] = segments
    label = f"v2 {config or '(default)'}{list(extras)}"
    if roll < 0.12:
        with_header = roll >= 0.085
        prefix = v2_preamble(segments) + (segments[3].data if with_header else b"")
        return Case(index, f"{label}: preamble{' + header' if with_header else ''} + random bytes",
                    prefix + rng.bytes(int(rng.integers(1, 4097))))
    if roll < 0.15:
        payload = b"".join(s.data for s in segments)
        at = int(rng.integers(0, len(payload) + 1))
        return Case(index, f"{label} aborted (RST) after {at} bytes", payload[:at], mode="abort")
    ops = [_random_v2_op(rng, segments) for _ in range(int(rng.integers(1, 4)))]
    payload = apply_v2_ops(segments, ops)[:MAX_PAYLOAD_BYTES]
    return Case(index, f"{label}: " + ", ".join(_short_v2(op) for op in ops), payload)


def parse_v2_reply(reply: bytes) -> tuple[list, str | None]:
    """(stream items, error) of a v2 reply; error names what is not well formed (see the docstring):
    the reply must be empty, or an MRD v2 stream (MRD's preamble, the optional header, whole items)
    that ends with the final 0 count, or without it right after a whole item; nothing may follow."""
    if not reply:
        return [], None
    failure = None
    for data in (reply, reply + b"\x00"):  # the second: an error cut the stream after a whole item
        source = io.BytesIO(data)
        try:
            reader = mrd.BinaryMrdReader(source)
            reader.read_header()
            items = list(reader.read_data())
        except Exception as exc:  # noqa: BLE001 - mrd raises RuntimeError, EOFError, ValueError, ...
            failure = failure or f"v2 reply does not parse: {type(exc).__name__}: {exc}"
            continue
        left = len(data) - source.tell() + (reader._stream._last_read_count - reader._stream._offset)
        return items, f"{left} bytes after the end of the v2 reply" if left else None
    return [], failure


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


def check_simplefft_v2(port: int, phantom: Phantom, timeout: float = 30.0) -> str | None:
    """Run one normal MRD v2 simplefft session; None when its image is right, else what went wrong."""
    case = Case(-1, "valid v2 simplefft", b"".join(s.data for s in build_v2_session(phantom, "simplefft")))
    outcome = send_case(port, case, timeout)
    if outcome.status != "eof":
        return f"normal v2 session ended with {outcome.status}"
    items, error = parse_v2_reply(outcome.reply)
    if error or not outcome.reply:
        return f"normal v2 session: {error or 'empty reply'}"
    images = [item.value for item in items if isinstance(item.value, mrd.Image)]
    if len(images) != 1:
        return f"normal v2 session returned {len(images)} images"
    pixels = np.asarray(images[0].data).reshape(phantom.reference.shape)
    err = nrmse(pixels, phantom.reference)
    return None if err <= NRMSE_LIMIT else f"normal v2 session image NRMSE {err:.4f} > {NRMSE_LIMIT}"


def reply_error(case: Case, outcome: Outcome) -> str | None:
    """What is not well formed in the reply to ``case``: the server answers in the format that the
    payload's first byte selects (b"y": MRD v2, parse_v2_reply; else v1, Outcome.parse)."""
    if case.payload[:1] == b"y":
        return parse_v2_reply(outcome.reply)[1]
    return outcome.parse()[1]


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


def checkpoint(server: Server, phantom: Phantom, report: Report, label: str, verbose: bool, v2: bool = False) -> None:
    """A normal v1 simplefft session (and with ``v2`` a v2 one) must give the right image."""
    status = proc_status(server.proc.pid)
    error = None if server.alive() else "server is not running"
    error = error or check_simplefft(server.port, phantom)
    if v2:
        error = error or check_simplefft_v2(server.port, phantom)
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
    v2 = args.format == "v2"
    valid_size = len(b"".join(s.data for s in build_v2_session(phantom, "simplefft")) if v2
                     else b"".join(build_session(phantom, "simplefft")))
    new_case = make_v2_case if v2 else make_case
    start = time.monotonic()
    print(f"fuzzing 127.0.0.1:{server.port} ({'-m, process per session' if args.multiprocessing else 'threads'}), "
          f"MRD {args.format}, seed {args.seed}, {len(indices)} case(s), timeout {args.timeout:g} s", flush=True)
    try:
        for n, index in enumerate(indices, 1):
            case = new_case(phantom, args.seed, index, sessions)
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
                error = reply_error(case, outcome)
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
                checkpoint(server, phantom, report, f"{n} cases, {time.monotonic() - start:.0f} s", True, v2)
        time.sleep(0.5)  # let the last sessions end before counting threads
        checkpoint(server, phantom, report, "end", True, v2)
    finally:
        exit_status = server.stop()
    elapsed = time.monotonic() - start
    print()
    print(f"cases:                {report.cases} in {elapsed:.1f} s ({report.cases / max(elapsed, 1e-9):.0f}/s), MRD "
          f"{args.format}, seed {args.seed}, {'-m (process per session)' if args.multiprocessing else 'threads'}")
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
    print(f"data sent:            {report.bytes_sent / 1e6:.1f} MB in total; a valid {args.format} session is "
          f"{valid_size} bytes (phantom {' '.join(PHANTOM_ARGS)})")
    print(f"server exit status:   {exit_status} (SIGTERM)")
    ok = not report.deaths and not report.hangs and not report.failed_checks
    print("RESULT:               " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--cases", type=int, default=10000, help="number of cases")
    parser.add_argument("--format", choices=("v1", "v2"), default="v1",
                        help="the sessions to mutate: MRD v1 messages, or MRD v2 (yardl binary) streams")
    parser.add_argument("--seed", type=int, default=0, help="seed; case N is drawn from default_rng([seed, N])")
    parser.add_argument("-m", "--multiprocessing", action="store_true", help="start the server with -m")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per connection until EOF")
    parser.add_argument("--check-every", type=int, default=500,
                        help="run a normal simplefft session every N cases (v1; with --format v2 also a v2 one)")
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
