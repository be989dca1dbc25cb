"""What the server logs: per session the config and module, the JSON text and a header summary, a short
session id on every line (threads and -m), no third-party debug chatter; a second SIGTERM forces the exit."""
import json
import re
import signal
import socket
import subprocess
import sys
import time

import h5py
import ismrmrd
import pytest

import mrdfile
from conftest import REPO, ServerProcess, generate_phantom, run_client
from connection import MessageReader, MessageWriter

LINE = re.compile(r"^\S+ \S+ - (?P<level>[A-Z]+) - (?P<who>\S+) - (?P<text>.*)$")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return generate_phantom(tmp_path_factory.mktemp("data") / "p.h5", "-m", "32", "-c", "2", "-n", "0")


def parsed(log: str) -> list[dict]:
    return [m.groupdict() for m in map(LINE.match, log.splitlines()) if m]


def session_lines(log: str) -> dict[str, list[dict]]:
    """Log lines by session id, of the sessions that ran a module (not the probes of wait_for_port)."""
    lines = parsed(log)
    ids = {line["who"] for line in lines if line["text"].startswith("Running module")}
    return {sid: [line for line in lines if line["who"] == sid] for sid in ids}


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_session_lines_carry_a_short_id_and_say_config_module_json_and_header(phantom, tmp_path, mode):
    srv = ServerProcess(tmp_path, *(["-m"] if mode == "processes" else []))
    try:
        (tmp_path / "legacy_echo.json").write_text(json.dumps({"parameters": {"marker": "json-text-17"}}))
        result = run_client(srv.port, "-c", "legacy_echo", "-o", str(tmp_path / "o.h5"), str(phantom), cwd=tmp_path)
        assert result.returncode == 0, result.stdout
        assert run_client(srv.port, "-c", "simplefft", "-o", str(tmp_path / "o.h5"), str(phantom)).returncode == 0
    finally:
        assert srv.stop() == 0
    sessions = session_lines(srv.log_text())
    assert len(sessions) == 2 and all(re.fullmatch(r"[0-9a-f]{6}", sid) for sid in sessions)
    echo = next(lines for lines in sessions.values() if any("legacy_echo" in x["text"] for x in lines))
    texts = [x["text"] for x in echo]
    assert "Running module 'legacy_echo' (requested config 'legacy_echo')" in texts
    assert any(t.startswith("JSON configuration text") and "json-text-17" in t for t in texts)
    with h5py.File(phantom, "r") as f:
        header = ismrmrd.xsd.CreateFromDocument(mrdfile.read_xml(f["dataset"]))
    system, enc = header.acquisitionSystemInformation, header.encoding[0]
    m, fov = enc.encodedSpace.matrixSize, enc.encodedSpace.fieldOfView_mm
    summary = (f"Header: {system.systemVendor}, {system.systemModel}, {system.systemFieldStrength_T:g} T, "
               f"protocol '{header.measurementInformation.protocolName}', cartesian, encoded {m.x}x{m.y}x{m.z}, "
               f"FOV {fov.x:g}x{fov.y:g}x{fov.z:g} mm, {system.receiverChannels} coils")
    assert summary in texts
    assert any(t.startswith("Session from") and "ended after" in t for t in texts)
    assert not any(x["who"] == "MainThread" for x in parsed(srv.log_text()))


def test_verbose_log_has_no_third_party_debug_chatter(tmp_path, phantom):
    srv = ServerProcess(tmp_path)  # -v
    try:
        (tmp_path / "rgb.json").write_text(json.dumps({"parameters": {"colormap": "viridis"}}))
        images = run_client(srv.port, "-c", "simplefft", "-o", str(tmp_path / "img.h5"), "-G", "g", str(phantom))
        assert images.returncode == 0
        result = run_client(srv.port, "-c", "rgb", "-o", str(tmp_path / "rgb.h5"), "-G", "g", "-g", "g",
                            str(tmp_path / "img.h5"), cwd=tmp_path)  # matplotlib colour map, Pillow
        assert result.returncode == 0, result.stdout
    finally:
        assert srv.stop() == 0
    log = srv.log_text()
    assert " - DEBUG - " in log  # -v is on: our own debug lines are there
    for chatter in ("matplotlib data path", "CONFIGDIR", "CACHEDIR", "font search path", "STREAM b'", "loaded modules"):
        assert chatter not in log


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_second_sigterm_in_the_grace_period_forces_the_exit_after_telling_the_clients(tmp_path, mode):
    srv = ServerProcess(tmp_path, "--shutdown-grace", "60", *(["-m"] if mode == "processes" else []))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        writer = MessageWriter.for_socket(sock)
        writer.send_config_file("sleeps")  # sleeps 120 s
        writer.send_header("<x/>")
        writer.send_close()
        time.sleep(1.0)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert srv.proc.poll() is None  # the first SIGTERM waits for the running session
        start = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(15) == 1
        assert time.monotonic() - start < 10
        reader = MessageReader(sock.makefile("rb"))
        replies = [reader.read() for _ in range(2)]
    assert replies[0][0] == 5 and replies[0][1].startswith("ERROR") and "forced shutdown" in replies[0][1]
    assert replies[1][0] == 4
    log = srv.log_text()
    assert "Received SIGTERM again: ending the running sessions now" in log and "Server stopped (forced)" in log


def test_main_rejects_a_port_out_of_range():
    result = subprocess.run([sys.executable, str(REPO / "main.py"), "-p", "99999"], capture_output=True, text=True)
    assert result.returncode == 2 and "99999 is not a TCP port" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("script", ["main.py", "client.py", "tools/mrd2gif.py", "tools/mrd2dicom.py",
                                    "tools/dicom2mrd.py", "tools/mrdhdf5_to_stream.py", "tools/stream_to_mrdhdf5.py",
                                    "tools/generate_cartesian_shepp_logan_dataset.py",
                                    "tools/generate_spiral_dataset.py", "tools/fuzz_server.py"])
def test_help_names_each_default_once(script):
    result = subprocess.run([sys.executable, str(REPO / script), "--help"], capture_output=True, text=True,
                            env={"COLUMNS": "1000", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    options = re.split(r"\n  (?=-)", result.stdout)
    for option in options:
        flat = " ".join(option.split())
        assert flat.count("(default") <= 1 and flat.count("default:") <= 1, flat
        assert "(default: None)" not in flat and "(default: False)" not in flat, flat
