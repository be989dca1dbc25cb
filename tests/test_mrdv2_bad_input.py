"""Bad MRD v2 input over real sockets against a real ``main.py``, and in ``--stream`` mode.

For each kind of bad stream (a wrong magic after ``ya``, format version 2, a schema that is not
MRD's, a stream cut inside the preamble, the header or an acquisition, an absurd array or string
length, an allowed array that never arrives (no memory made resident for it), an over-long varint) the server logs one clear line naming the fault, ends the connection
at once (EOF within a few seconds, the reply empty or a v2 stream mrd-python reads), logs no
traceback, and keeps serving. A stream whose only items are ones v1 has no message for
(``AcquisitionBucket``, ``ArrayComplexFloat``) is a normal session: they are skipped with one
warning. A valid stream whose client keeps its sending side open gets its reply, over TCP and on
stdin (the reader does not wait for more bytes than the stream holds). Afterwards a v1
``simplefft`` session and a v2 one (``client.py --format v2``) still give the phantom's image.
``main.py --stream`` with a bad v2 stream on stdin exits 1 with the fault on stderr.
"""
import io
import re
import socket
import subprocess
import sys
import time

import h5py
import mrd
import pytest

from conftest import REPO, ServerProcess, generate_phantom, images_of, nrmse, rss, run_client
from tools import fuzz_server as fz

EOF_WITHIN_S = 5.0
LOG_WAIT_S = 5.0
HUGE_COUNT = 1 << 40


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """The fuzzer's 32x32, 2-coil noise-free phantom (its MRD HDF5 file and loaded arrays)."""
    return fz.Phantom.generate(tmp_path_factory.mktemp("v2_bad_data"))


@pytest.fixture(scope="module")
def segments(phantom):
    """A valid v2 simplefft session as segments: magic, version, schema, header, items, end."""
    return fz.build_v2_session(phantom, "simplefft")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("v2_bad_server"))
    yield srv
    assert srv.stop() == 0


def joined(segments) -> bytes:
    return b"".join(s.data for s in segments)


def first_acquisition(segments) -> int:
    return next(i for i, s in enumerate(segments) if s.kind == "item")


def log_bytes(server) -> bytes:
    return server.log.read_bytes()


def send(server, payload: bytes, keep_open: bool = False) -> bytes:
    """Send ``payload`` over a fresh connection (then shut down the sending side unless ``keep_open``)
    and read the reply until EOF, which must come within EOF_WITHIN_S."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=EOF_WITHIN_S) as sock:
        try:
            sock.sendall(payload)
            if not keep_open:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server gave up early; its reply may still be readable
        reply = bytearray()
        deadline = time.monotonic() + EOF_WITHIN_S
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(1 << 16)
            except socket.timeout:
                pytest.fail(f"no EOF within {EOF_WITHIN_S} s ({len(reply)} reply bytes)")
            if not chunk:
                return bytes(reply)
            reply += chunk


def without_debug(text: str) -> str:
    """The log records above DEBUG (the server runs with -v: it logs the traceback of an error caused
    by bad input at DEBUG, and the error itself in one line)."""
    records = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - )", text)
    return "\n".join(r for r in records if " - DEBUG - " not in r.split("\n", 1)[0])


def session_log(server, payload: bytes, expected: str, keep_open: bool = False) -> tuple[bytes, str]:
    """(reply, the log records of this session above DEBUG) once ``expected`` is in them; no traceback
    allowed."""
    start = len(log_bytes(server))
    reply = send(server, payload, keep_open)
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        text = without_debug(log_bytes(server)[start:].decode(errors="replace"))
        if (expected in text and "ended after" in text) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert expected in text, f"{expected!r} not in the server log:\n{text}"
    assert "Traceback" not in text, text
    assert server.alive(), "server died"
    items, error = fz.parse_v2_reply(reply)
    assert error is None, error
    return reply, text


def the_line(text: str, expected: str) -> str:
    """The one log line that holds ``expected`` (besides the "Module text:" line: v2 has no text
    message, so the server logs the ERROR text a v1 client would get, the same message again)."""
    lines = [line for line in text.splitlines() if expected in line and " - Module text: " not in line]
    assert len(lines) == 1, lines
    return lines[0]


# Bad preamble ------------------------------------------------------------------------------------
@pytest.mark.parametrize("tail", [b"rdm", b"XYZ", b"\x00\x00\x00"])
def test_wrong_magic_after_ya(server, segments, tail):
    payload = b"ya" + tail + joined(segments)[5:]
    _, text = session_log(server, payload, "not an MRD stream")
    line = the_line(text, "not an MRD stream")
    assert " - ERROR - " in line and repr(b"ya" + tail) in line and "MRD v2 magic b'yardl'" in line


@pytest.mark.parametrize("version", [2, 0, -1])
def test_unsupported_format_version(server, segments, version):
    payload = fz.apply_v2_ops(segments, [("version", version)])
    _, text = session_log(server, payload, f"MRD v2 binary format version {version} is not supported (only 1)")
    assert " - ERROR - " in the_line(text, "binary format version")


@pytest.mark.parametrize("schema", [
    mrd.BinaryMrdReader.schema.replace('"Mrd"', '"NotMrd"', 1).encode(),
    b'{"protocol":{"name":"Other","sequence":[]},"types":[]}',
    b"",
], ids=["renamed", "other", "empty"])
def test_schema_that_is_not_mrds(server, segments, schema):
    payload = fz.apply_v2_ops(segments, [("schema", schema)])
    _, text = session_log(server, payload, "the stream's yardl schema is not MRD's")
    assert " - ERROR - " in the_line(text, "schema is not MRD's")


def test_schema_length_beyond_the_limit(server, segments):
    payload = fz.apply_v2_ops(segments, [("set_varint", "schema length", 0, 1 << 30)])
    _, text = session_log(server, payload, "MRD v2 schema of 1073741824 bytes exceeds the limit of 1048576 bytes")
    assert " - ERROR - " in the_line(text, "schema of")


# Truncated streams -------------------------------------------------------------------------------
@pytest.mark.parametrize("at, what", [(1, "magic"), (4, "magic"), (7, "format version"), (9, "schema length"),
                                      (12, "schema"), (5000, "schema")])
def test_truncated_inside_the_preamble(server, segments, at, what):
    _, text = session_log(server, joined(segments)[:at], f"bytes of its {what})")
    line = the_line(text, "The client disconnected")
    assert "MRD v2 stream ended after" in line and " - ERROR - " not in text


@pytest.mark.parametrize("into", [1, 50, -1])
def test_truncated_inside_the_header(server, segments, into):
    preamble = fz.v2_preamble(segments)
    header = segments[3].data
    at = len(preamble) + (into if into > 0 else len(header) + into)
    _, text = session_log(server, joined(segments)[:at], "MRD v2 stream ended inside its header")
    assert "The client disconnected" in the_line(text, "ended inside its header") and " - ERROR - " not in text


@pytest.mark.parametrize("where", ["after the block count", "after the union index", "in the acquisition header",
                                   "between the data dimensions", "in the samples", "before the last byte"])
def test_truncated_inside_an_acquisition(server, segments, where):
    """Cut inside the fourth acquisition (two noise readouts and one imaging readout came whole)."""
    index = first_acquisition(segments) + 3
    item = segments[index]
    dims = dict(item.varints)
    into = {"after the block count": 1, "after the union index": 2, "in the acquisition header": 60,
            "between the data dimensions": dims["acquisition data dim 1"],
            "in the samples": dims["acquisition data dim 1"] + 400, "before the last byte": len(item.data) - 1}[where]
    assert 0 < into < len(item.data)
    at = len(joined(segments[:index])) + into
    _, text = session_log(server, joined(segments)[:at], "MRD v2 stream ended inside an item")
    line = the_line(text, "ended inside an item")
    assert "The client disconnected" in line and "3 acquisitions" in line and " - ERROR - " not in text


# Absurd lengths ----------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["acquisition data dim 1", "acquisition data dim 0",
                                   "acquisition trajectory dim 0"])
def test_absurd_array_length(server, segments, field):
    payload = fz.apply_v2_ops(segments, [("set_varint", field, 2, HUGE_COUNT)])
    _, text = session_log(server, payload, "exceeds the limit of 1073741824 bytes")
    line = the_line(text, "exceeds the limit")
    assert " - ERROR - " in line and "malformed MRD v2 stream" in line and "an array of" in line


def test_array_just_beyond_the_limit_is_refused_before_it_is_allocated(server, segments):
    """2**27 samples x 2 coils x 8 bytes = 2 GiB, twice the server's 1 GiB limit: refused at once,
    without allocating it (the server's peak RSS stays far below)."""
    payload = fz.apply_v2_ops(segments, [("set_varint", "acquisition data dim 1", 0, 1 << 27)])
    _, text = session_log(server, payload, "an array of 2147483648 bytes exceeds the limit of 1073741824 bytes")
    assert server.peak_rss() < 1 << 30


def test_an_allowed_array_that_never_arrives_makes_no_memory_resident(server, segments):
    """2**25 samples x 2 coils x 8 bytes = 512 MiB, within the 1 GiB limit, then the stream ends: the
    array is allocated but never zero-filled, so the server's peak RSS does not grow by it."""
    before = server.peak_rss()
    payload = fz.apply_v2_ops(segments, [("set_varint", "acquisition data dim 1", 0, 1 << 25)])
    session_log(server, payload, "MRD v2 stream ended inside an item")
    assert server.peak_rss() < before + (128 << 20)


def test_absurd_string_length_in_the_header(server, segments):
    """The header's first string (after its optional flag and the first optional fields) gets a length of 2**40."""
    header = bytearray(segments[3].data)
    name = b"Synthetic"  # the phantom's systemVendor
    at = header.find(name)
    assert at > 0 and header[at - 1] == len(name)
    bad = bytes(header[:at - 1]) + fz.varint(1 << 40) + bytes(header[at:])
    payload = fz.v2_preamble(segments) + bad + joined(segments[4:])
    _, text = session_log(server, payload, "a string of 1099511627776 bytes exceeds the limit")
    assert " - ERROR - " in the_line(text, "a string of")


def test_overlong_varint(server, segments):
    """A block count of 100,000 bytes >= 0x80 is refused at its 11th byte (decoding it took quadratic time)."""
    payload = fz.v2_preamble(segments) + segments[3].data + b"\xff" * 100_000
    _, text = session_log(server, payload, "a varint (a count, length or integer) longer than 10 bytes")
    assert " - ERROR - " in the_line(text, "longer than 10 bytes")


# Items v1 has no message for ---------------------------------------------------------------------
@pytest.mark.parametrize("extra, name", [("bucket", "AcquisitionBucket"), ("array", "ArrayComplexFloat")])
def test_unsupported_item_only_is_skipped(server, phantom, extra, name):
    """A stream whose only item is one v1 has no message for: one warning, and a normal end."""
    segments = fz.build_v2_session(phantom, "null", (extra,))
    acquisition = 0  # StreamItem.Acquisition's union index
    payload = joined([s for s in segments if s.kind != "item" or s.data[s.union] != acquisition])
    reply, text = session_log(server, payload, f"1 StreamItem.{name} item(s) skipped")
    assert " - WARNING - " in the_line(text, "item(s) skipped")
    assert " - ERROR - " not in text and "disconnected" not in text
    assert "received 0 acquisitions, 0 images, 0 waveforms" in text
    reader = mrd.BinaryMrdReader(io.BytesIO(reply))  # a whole stream, with its final 0 count
    assert reader.read_header() is not None and list(reader.read_data()) == []


# The reader does not wait for bytes that are not coming -------------------------------------------
def test_valid_stream_with_the_sending_side_left_open_gets_its_reply(server, phantom, segments):
    reply, text = session_log(server, joined(segments), "Session from", keep_open=True)
    reader = mrd.BinaryMrdReader(io.BytesIO(reply))
    assert reader.read_header() is not None
    images = [item.value for item in reader.read_data()]
    assert len(images) == 1
    assert nrmse(images[0].data.reshape(phantom.reference.shape), phantom.reference) <= 0.01


# Stream mode -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mutation, expected", [
    ([("magic", b"rdm")], "not an MRD stream: it starts with b'yardm'"),
    ([("version", 2)], "MRD v2 binary format version 2 is not supported (only 1)"),
    ([("schema", b"{}")], "the stream's yardl schema is not MRD's"),
    ([("set_varint", "acquisition data dim 1", 0, HUGE_COUNT)], "exceeds the limit of"),
    ([("truncate", 30000)], "MRD v2 stream ended inside an item"),
], ids=["magic", "version", "schema", "array", "truncated"])
def test_stream_mode_exits_1_on_bad_v2_input(segments, tmp_path, mutation, expected):
    payload = fz.apply_v2_ops(segments, mutation)
    done = subprocess.run([sys.executable, str(REPO / "main.py"), "--stream", "-c", "simplefft"], input=payload,
                          capture_output=True, timeout=60, cwd=tmp_path)
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 1, stderr
    assert len([line for line in stderr.splitlines() if expected in line]) >= 1, stderr
    assert "Traceback" not in stderr, stderr
    assert fz.parse_v2_reply(done.stdout)[1] is None


def test_stream_mode_ends_at_the_final_count_with_stdin_left_open(segments, phantom, tmp_path):
    """The session ends at the stream's final 0 count, not when stdin closes (stdin's 8 KiB buffer:
    the reader does not wait to fill its own 64 KiB one)."""
    proc = subprocess.Popen([sys.executable, str(REPO / "main.py"), "--stream", "-c", "simplefft"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        proc.stdin.write(joined(segments))
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
        reader = mrd.BinaryMrdReader(io.BytesIO(proc.stdout.read()))
        assert reader.read_header() is not None
        images = [item.value for item in reader.read_data()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    assert len(images) == 1
    assert nrmse(images[0].data.reshape(phantom.reference.shape), phantom.reference) <= 0.01


# The server still works --------------------------------------------------------------------------
def test_normal_v1_and_v2_sessions_still_work(server, tmp_path):
    """After all of the above on the same server: client.py (v1) and client.py --format v2 with a
    phantom of tools/generate_cartesian_shepp_logan_dataset.py give its image."""
    data = generate_phantom(tmp_path / "phantom.h5", "-m", "64", "-c", "4", "-n", "0")
    with h5py.File(data, "r") as f:
        reference = rss(f["dataset/coil_images"][0])
    for fmt in ("v1", "v2"):
        out = tmp_path / f"out_{fmt}.h5"
        done = run_client(server.port, "-c", "simplefft", "--format", fmt, "-o", str(out), "-G", "recon", str(data))
        assert done.returncode == 0, done.stdout + done.stderr
        pixels, _, _ = images_of(out, "recon")
        assert pixels.shape[0] == 1
        assert nrmse(pixels[0, 0, 0], reference) <= 0.01, fmt
    assert server.alive()
    assert "Traceback" not in without_debug(server.log_text(errors="replace"))
