"""Server limits over real sockets: idle timeout, --max-sessions, --allow, size limits."""
import socket
import struct
import time

import ismrmrd
import numpy as np

from conftest import ServerProcess, run_client
from connection import MessageReader, MessageWriter


def replies(sock):
    reader = MessageReader(sock.makefile("rb"))
    out = []
    while True:
        msg_id, item = reader.read()
        out.append((msg_id, item))
        if msg_id in (None, 4):
            return out


def test_idle_client_is_ended_with_an_error_text(tmp_path):
    srv = ServerProcess(tmp_path, "--idle-timeout", "1")
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            MessageWriter.for_socket(sock).send_config_file("simplefft")  # then silence
            start = time.monotonic()
            got = replies(sock)
            assert time.monotonic() - start < 10
        assert got[-1][0] == 4 and "idle timeout" in got[0][1]
    finally:
        assert srv.stop() == 0


def test_sessions_beyond_max_sessions_get_a_busy_error_and_later_ones_are_served(tmp_path):
    srv = ServerProcess(tmp_path, "--max-sessions", "1")
    time.sleep(0.5)  # the start-up probe's session has ended
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as first:
            MessageWriter.for_socket(first).send_config_file("null")
            time.sleep(0.5)
            with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as second:
                got = replies(second)
            assert got[-1][0] == 4 and "server busy: 1 session(s) running" in got[0][1]
            writer = MessageWriter.for_socket(first)
            writer.send_header("<x/>")
            writer.send_close()
            assert replies(first)[-1][0] == 4
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as third:
            writer = MessageWriter.for_socket(third)
            writer.send_config_file("null")
            writer.send_header("<x/>")
            writer.send_close()
            assert replies(third) == [(4, None)]
    finally:
        assert srv.stop() == 0


def test_allow_refuses_other_networks_and_logs_it(tmp_path):
    srv = ServerProcess(tmp_path, "--allow", "10.0.0.0/8,192.168.0.0/16")
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            (text_id, text), close = replies(sock)  # told why, as --max-sessions does, then CLOSE
        assert text_id == 5 and text.startswith("ERROR") and "127.0.0.1 refused" in text and "--allow" in text
        assert close == (4, None)
        result = run_client(srv.port, "-c", "simplefft", "-o", str(tmp_path / "o.h5"), str(_tiny_phantom(tmp_path)))
        assert result.returncode == 1 and "--allow" in result.stdout
    finally:
        assert srv.stop() == 0
    assert "Refused a connection from 127.0.0.1" in srv.log_text()
    allowed = ServerProcess(tmp_path, "--allow", "127.0.0.0/8")
    try:
        with socket.create_connection(("127.0.0.1", allowed.port), timeout=30) as sock:
            writer = MessageWriter.for_socket(sock)
            writer.send_config_file("null")
            writer.send_header("<x/>")
            writer.send_close()
            assert replies(sock) == [(4, None)]
    finally:
        assert allowed.stop() == 0


def test_messages_over_the_limits_get_an_error_and_no_allocation(tmp_path):
    srv = ServerProcess(tmp_path, "--max-text-mb", "0.01", "--max-message-mb", "1")
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            writer = MessageWriter.for_socket(sock)
            writer.send_config_file("simplefft")
            sock.sendall(struct.pack("<HI", 3, 4_000_000_000))  # a 4 GB header is announced
            got = replies(sock)
        assert got[-1][0] == 4 and "exceeds the limit of 10485 bytes" in got[0][1]
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            writer = MessageWriter.for_socket(sock)
            writer.send_config_file("simplefft")
            writer.send_header("<x/>")
            big = ismrmrd.Acquisition.from_array(np.zeros((32, 8192), np.complex64))  # 2 MB
            writer.send_acquisition(big)
            got = replies(sock)
        assert got[-1][0] == 4 and "acquisition of 2097152 bytes exceeds the limit" in got[0][1]
        ok = run_client(srv.port, "-c", "null", "-o", str(tmp_path / "o.h5"), str(_tiny_phantom(tmp_path)))
        assert ok.returncode == 0
    finally:
        assert srv.stop() == 0


def _tiny_phantom(tmp_path):
    from conftest import generate_phantom
    return generate_phantom(tmp_path / "tiny.h5", "-m", "32", "-c", "2")


def test_module_running_past_the_timeout_gets_an_error_and_the_server_goes_on(tmp_path):
    srv = ServerProcess(tmp_path, "--module-timeout", "1", "--shutdown-grace", "1")
    try:
        start = time.monotonic()
        result = run_client(srv.port, "-c", "sleeps", "-o", str(tmp_path / "o.h5"), str(_tiny_phantom(tmp_path)))
        assert result.returncode == 1 and time.monotonic() - start < 20
        assert "[module 'sleeps'] TimeoutError: still running after 1 s (--module-timeout)" in result.stdout
        ok = run_client(srv.port, "-c", "simplefft", "-o", str(tmp_path / "ok.h5"), str(_tiny_phantom(tmp_path)))
        assert ok.returncode == 0
    finally:
        assert srv.stop() == 0


def test_session_process_that_dies_is_reported_to_its_client(tmp_path):
    srv = ServerProcess(tmp_path, "-m")
    try:
        result = run_client(srv.port, "-c", "kills", "-o", str(tmp_path / "o.h5"), str(_tiny_phantom(tmp_path)))
        assert result.returncode == 1
        assert "the session process was killed by signal 9" in result.stdout
        ok = run_client(srv.port, "-c", "simplefft", "-o", str(tmp_path / "ok.h5"), str(_tiny_phantom(tmp_path)))
        assert ok.returncode == 0
    finally:
        assert srv.stop() == 0


def test_non_ascii_header_written_by_ismrmrd_round_trips(server, tmp_path):
    import shutil

    import h5py
    import ismrmrd.xsd

    import mrdfile
    source = tmp_path / "umlaut.h5"
    shutil.copy(_tiny_phantom(tmp_path), source)
    with h5py.File(source, "a") as f:
        xml = mrdfile.read_xml(f["dataset"]).replace("ShepLoganPhantom", "Prüfung_Müller")
        # ismrmrd 1.15 renders with an encoding="ascii" declaration in front of UTF-8 text
        mrdfile.write_xml(f["dataset"], ismrmrd.xsd.ToXML(ismrmrd.xsd.CreateFromDocument(xml)))
    out = tmp_path / "o.h5"
    result = run_client(server.port, "-c", "report", "-o", str(out), "-G", "g", str(source))
    assert result.returncode == 0, result.stdout
    with h5py.File(out, "r") as f:
        name = next(iter(f["g"].keys() - {"xml"}))
        meta = ismrmrd.Meta.deserialize(f["g"][name]["attributes"][0])
        assert meta["protocolName"] == "Prüfung_Müller"
        assert "Prüfung_Müller" in mrdfile.read_xml(f["g"])


def test_a_failing_session_does_not_touch_concurrent_ones(tmp_path):
    import subprocess
    import sys

    from conftest import REPO
    data = _tiny_phantom(tmp_path)
    for extra in ((), ("-m",)):
        srv = ServerProcess(tmp_path, "--shutdown-grace", "1", *extra)
        try:
            configs = ["raises", "simplefft", "kills" if extra else "sleeps", "simplefft", "simplefft"]
            procs = [subprocess.Popen([sys.executable, str(REPO / "client.py"), "-a", "127.0.0.1", "-p", str(srv.port),
                                       "-c", c, "-o", str(tmp_path / f"{i}{extra}.h5"), str(data)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i, c in enumerate(configs)]
            codes = [p.wait(60) if c != "sleeps" else None for p, c in zip(procs, configs)]
            assert codes[0] == 1 and codes[1] == codes[3] == codes[4] == 0
        finally:
            for p in procs:
                p.kill()
            assert srv.stop() == 0
