"""What the client shows a user: progress bars in a terminal that log lines never glue onto, and a clean
Ctrl-C (exit 130, one line, what arrived kept) that the server logs as a disconnect, not as an error."""
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import h5py
import pytest

from conftest import REPO, ServerProcess, generate_phantom

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - ")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - ")
BAR = re.compile(r"\d+%\||\| *\d+/\d+| msg/s| images/s|it/s")
CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def client_cmd(port, *args):
    return [sys.executable, str(REPO / "client.py"), "-a", "127.0.0.1", "-p", str(port), *args]


def run_in_terminal(cmd, cwd, timeout=60.0, columns=120):
    """Run ``cmd`` with stdin, stdout and stderr on a pseudo-terminal; returns (exit status, bytes shown)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, close_fds=True)
    os.close(slave)
    shown = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.wait(10), bytes(shown)


def screen_lines(raw: bytes) -> list[str]:
    """The lines a terminal ends up showing: carriage returns overwrite, escape sequences dropped."""
    lines, row, col = [], [], 0
    for ch in CSI.sub("", raw.decode("utf-8", errors="replace")):
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(row).rstrip())
            row, col = [], 0
        else:
            if col < len(row):
                row[col] = ch
            else:
                row.append(ch)
            col += 1
    if row:
        lines.append("".join(row).rstrip())
    return lines


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return generate_phantom(tmp_path_factory.mktemp("data") / "p.h5", "-m", "64", "-c", "4", "-n", "0", "-r", "2")


def test_log_lines_never_share_a_line_with_the_progress_bar(server, phantom, tmp_path):
    # The server logs a text while the client is still sending, then sends 3 series slowly: log lines
    # ("Server: ...", "Series k arriving") come while the send bar and then the receive bar are shown.
    (tmp_path / "paced.json").write_text(json.dumps({"parameters": {
        "read_delay": 0.004, "text_at": 20, "series": 3, "images": 4, "send_delay": 0.08}}))
    status, raw = run_in_terminal(client_cmd(server.port, "-c", "paced", "-o", str(tmp_path / "o.h5"),
                                             str(phantom)), cwd=tmp_path)
    lines = screen_lines(raw)
    assert status == 0, "\n".join(lines)
    assert any(line.startswith("Sending") and BAR.search(line) for line in lines), lines
    assert any(line.startswith("Receiving") and "image" in line for line in lines), lines
    logs = [line for line in lines if TIMESTAMP.search(line)]
    assert any("Server: INFO" in line and "paced: 20 items read" in line for line in logs), lines
    assert sum("arriving" in line for line in logs) == 3
    for line in logs:
        assert LOG_LINE.match(line), f"a log line starts after other text: {line!r}"
        assert not BAR.search(line), f"a log line shares its line with the progress bar: {line!r}"
        assert len(TIMESTAMP.findall(line)) == 1, f"two log lines on one line: {line!r}"


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(what)


def read_until(proc, text, timeout=20.0):
    """Lines of ``proc.stdout`` up to the first that contains ``text``."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if text in line:
                return seen
    raise TimeoutError(f"{text!r} not in {seen}")


@pytest.mark.parametrize("phase", ["sending", "receiving"])
def test_ctrl_c_is_one_line_exit_130_and_an_info_line_on_the_server(tmp_path, phase):
    srv = ServerProcess(tmp_path)
    try:
        if phase == "sending":  # 32 MB against a module that reads 50 items/s: the client blocks in send
            data = generate_phantom(tmp_path / "big.h5", "-m", "256", "-c", "16", "-r", "2")
            params = {"read_delay": 0.02, "series": 1, "images": 1}
            marker = "Sending"
        else:  # the module sends one image every 0.25 s after CLOSE
            data = generate_phantom(tmp_path / "small.h5", "-m", "32", "-c", "2")
            params = {"series": 1, "images": 60, "send_delay": 0.25}
            marker = "Series 0 arriving"
        (tmp_path / "paced.json").write_text(json.dumps({"parameters": params}))
        out = tmp_path / "out.h5"
        proc = subprocess.Popen(client_cmd(srv.port, "-c", "paced", "-o", str(out), "-G", "g", str(data)),
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        before = read_until(proc, marker)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
        assert proc.returncode == 130
        assert "Traceback" not in stdout + stderr and stderr == ""
        after = stdout.splitlines()
        assert len([line for line in after if "Interrupted" in line]) == 1 and len(after) == 1, before + after
        assert re.search(r"Interrupted \(Ctrl-C\) after \d+ of \d+ items sent; \d+ images received", after[0])
        if phase == "receiving":
            count = int(re.search(r"; (\d+) images received", after[0]).group(1))
            assert count >= 3
            with h5py.File(out, "r") as f:  # what arrived before Ctrl-C is kept
                assert f["g/image_0/data"].shape[0] == count
        wait_for(lambda: "The client disconnected" in srv.log_text(), what="the server noticing the disconnect")
        log = srv.log_text()
        (line,) = [line for line in log.splitlines() if "The client disconnected" in line]
        assert re.match(r"\S+ \S+ - INFO - [0-9a-f]{6} - The client disconnected .* while module 'paced' ran", line)
        assert "Error in module" not in log and " - ERROR - " not in log
    finally:
        assert srv.stop() == 0
