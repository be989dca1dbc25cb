"""Property-based fuzzing of one live server (threads mode): malformed sessions never break it.

Hypothesis generates mutations of valid sessions (the mutation code of tools/fuzz_server.py:
truncation, flipped bytes, size fields set to any value, inserted message IDs, duplicated,
deleted and swapped messages) and random byte strings. For every example the server must
answer with a well-formed MRD stream that ends in exactly one CLOSE and then closes the
connection (no hang), stay alive and still accept connections; afterwards a normal session
must still give the right image and the server's peak RSS must stay bounded. The same for MRD v2
sessions (``fz.build_v2_session``/``fz.apply_v2_ops``: varint counts and lengths set to any value,
union indices, magic, format version, schema, segments duplicated, deleted or swapped), whose
replies must be empty or a v2 stream that mrd-python reads (``fz.parse_v2_reply``); and the tool
itself, ``tools/fuzz_server.py`` with 200 cases of each format.
"""
import socket
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from conftest import REPO, ServerProcess
from tools import fuzz_server as fz

REPLY_TIMEOUT_S = 5.0
# Idle server ~90 MB; a mutated message may not make it allocate beyond its limits (e.g. a readout
# with kspace_encode_step_1 = 65535 is refused, not given a 65536-line k-space), and what stays
# resident afterwards must be small (no leak).
MAX_SERVER_PEAK_BYTES = 300e6
MAX_SERVER_RESIDENT_BYTES = 300e6

WIDE = st.integers(min_value=0, max_value=2 ** 64 - 1)
FIELD_VALUES = st.one_of(st.sampled_from([0, 1, 2, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2 ** 32, 2 ** 63,
                                          2 ** 64 - 1]), WIDE)
OPS = st.one_of(
    st.tuples(st.just("truncate"), WIDE),
    st.tuples(st.just("flip"), st.lists(st.tuples(WIDE, st.integers(1, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("flip_msg"), WIDE, st.integers(0, 400), st.integers(1, 255)),
    st.tuples(st.just("set_field"), WIDE, st.integers(0, 15), FIELD_VALUES),
    st.tuples(st.just("insert_id"), WIDE, st.one_of(st.sampled_from(fz.INTERESTING_IDS), st.integers(0, 0xFFFF)),
              st.binary(max_size=64)),
    st.tuples(st.sampled_from(["duplicate", "delete"]), WIDE),
    st.tuples(st.just("swap"), WIDE, WIDE),
)
EXTRA_SETS = st.lists(st.sampled_from(fz.EXTRAS), unique=True, max_size=3).map(lambda e: tuple(sorted(e)))
V2_VARINT_NAMES = ("schema length", "block count", "end count", "acquisition data dim 0", "acquisition data dim 1",
                   "acquisition trajectory dim 0", "acquisition trajectory dim 1", "image data dim 2",
                   "waveform data dim 1", "bucket data count", "array ndim", "array dim 0")
V2_OPS = st.one_of(
    st.tuples(st.just("truncate"), WIDE),
    st.tuples(st.just("flip"), st.lists(st.tuples(WIDE, st.integers(1, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("set_varint"), st.sampled_from(V2_VARINT_NAMES), WIDE,
              st.one_of(st.sampled_from(fz.V2_VARINT_VALUES), st.integers(0, 2 ** 70))),
    st.tuples(st.just("union"), WIDE, st.integers(0, 255)),
    st.tuples(st.just("magic"), st.binary(min_size=0, max_size=4)),
    st.tuples(st.just("version"), st.integers(-2 ** 31, 2 ** 31 - 1)),
    st.tuples(st.just("schema"), st.binary(max_size=64)),
    st.tuples(st.sampled_from(["duplicate", "delete"]), WIDE),
    st.tuples(st.just("swap"), WIDE, WIDE),
)
V2_EXTRA_SETS = st.lists(st.sampled_from(fz.V2_EXTRAS), unique=True, max_size=2).map(lambda e: tuple(sorted(e)))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return fz.Phantom.generate(tmp_path_factory.mktemp("fuzz_data"))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("fuzz_server"))
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def sessions(phantom):
    cache = {}

    def get(config, extras):
        if (config, extras) not in cache:
            cache[config, extras] = fz.build_session(phantom, config, extras)
        return cache[config, extras]
    return get


@pytest.fixture(scope="module")
def v2_sessions(phantom):
    cache = {}

    def get(config, extras):
        if (config, extras) not in cache:
            cache[config, extras] = fz.build_v2_session(phantom, config, extras)
        return cache[config, extras]
    return get


def assert_survives(live, payload: bytes) -> None:
    case = fz.Case(0, "hypothesis", payload)
    outcome = fz.send_case(live.port, case, REPLY_TIMEOUT_S)
    assert outcome.status == "eof", f"no EOF from the server within {REPLY_TIMEOUT_S} s ({outcome.status})"
    error = fz.reply_error(case, outcome)
    assert error is None, error
    assert live.proc.poll() is None, "server died"
    with socket.create_connection(("127.0.0.1", live.port), timeout=5):
        pass


@settings(max_examples=150, deadline=None)
@given(config=st.sampled_from(fz.CONFIGS), extras=EXTRA_SETS, ops=st.lists(OPS, min_size=1, max_size=3))
def test_mutated_sessions_never_break_the_server(live, sessions, config, extras, ops):
    assert_survives(live, fz.apply_ops(sessions(config, extras), ops))


@settings(max_examples=150, deadline=None)
@given(prefix=st.sampled_from(["none", "config", "config+header"]), config=st.sampled_from(fz.CONFIGS),
       data=st.binary(max_size=4096))
def test_random_bytes_never_break_the_server(live, sessions, prefix, config, data):
    messages = sessions(config, ())
    head = {"none": b"", "config": messages[0], "config+header": messages[0] + messages[1]}[prefix]
    assert_survives(live, head + data)


@settings(max_examples=100, deadline=None)
@given(config=st.sampled_from(fz.V2_CONFIGS), extras=V2_EXTRA_SETS, ops=st.lists(V2_OPS, min_size=1, max_size=3))
def test_mutated_v2_sessions_never_break_the_server(live, v2_sessions, config, extras, ops):
    assert_survives(live, fz.apply_v2_ops(v2_sessions(config, extras), ops))


@settings(max_examples=50, deadline=None)
@given(prefix=st.sampled_from(["y", "preamble", "preamble+header"]), data=st.binary(max_size=4096))
def test_random_bytes_after_a_v2_start_never_break_the_server(live, v2_sessions, prefix, data):
    segments = v2_sessions("simplefft", ())
    head = {"y": b"y", "preamble": fz.v2_preamble(segments),
            "preamble+header": fz.v2_preamble(segments) + segments[3].data}[prefix]
    assert_survives(live, head + data)


def test_v2_reply_judge():
    """parse_v2_reply: empty and whole streams are well formed, also without the final 0 count after a
    whole item; a stream cut inside an item or followed by more bytes is not."""
    import io

    import mrd
    buf = io.BytesIO()
    writer = mrd.BinaryMrdWriter(buf)
    writer.write_header(None)
    writer.write_data([mrd.StreamItem.ArrayComplexFloat(fz.np.ones((2, 3), fz.np.complex64))])
    writer.close()
    whole = buf.getvalue()
    assert fz.parse_v2_reply(b"") == ([], None)
    assert fz.parse_v2_reply(whole)[1] is None and len(fz.parse_v2_reply(whole)[0]) == 1
    assert fz.parse_v2_reply(whole[:-1])[1] is None  # no final 0 count: an error ended the stream
    assert "does not parse" in fz.parse_v2_reply(whole[:-2])[1]
    assert "does not parse" in fz.parse_v2_reply(b"yardl")[1]
    assert "after the end" in fz.parse_v2_reply(whole + b"\x00")[1]


def test_server_still_reconstructs_after_fuzzing(live, phantom):
    assert fz.check_simplefft(live.port, phantom) is None
    assert fz.check_simplefft_v2(live.port, phantom) is None
    assert live.proc.poll() is None
    status = fz.proc_status(live.proc.pid)
    assert status["VmHWM"] < MAX_SERVER_PEAK_BYTES, f"server VmHWM {status['VmHWM'] / 1e6:.0f} MB"
    assert status["VmRSS"] < MAX_SERVER_RESIDENT_BYTES, f"server VmRSS {status['VmRSS'] / 1e6:.0f} MB"


def test_fuzz_tool_200_cases_exits_zero():
    done = subprocess.run([sys.executable, str(REPO / "tools" / "fuzz_server.py"), "--cases", "200",
                           "--check-every", "100"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "server deaths:        0" in done.stdout


def test_fuzz_tool_v2_200_cases_exits_zero():
    done = subprocess.run([sys.executable, str(REPO / "tools" / "fuzz_server.py"), "--format", "v2", "--cases", "200",
                           "--check-every", "100"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "MRD v2" in done.stdout
    assert "server deaths:        0" in done.stdout
    assert "hangs (>5 s):       0" in done.stdout
    assert "malformed replies:    0" in done.stdout
