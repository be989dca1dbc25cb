"""client.py --retries over real sockets: a session that failed before anything came back (connection
refused, the connection closed or reset, the server busy under --max-sessions) is tried again on a new
connection; never once results arrived, after a module's error, or for bad input. Servers are main.py
subprocesses (tests/legacy_modules: paced, raises) and small fake servers on raw sockets."""
import json
import re
import select
import socket
import subprocess
import sys
import threading
import time

import h5py
import ismrmrd
import numpy as np
import pytest

from conftest import LEGACY_MODULES, REPO, ServerProcess, free_port, generate_phantom, images_of, nrmse, rss, run_client
from connection import MessageWriter
from tools import _server_harness as harness

ATTEMPT = re.compile(r" - Attempt (\d+) of (\d+) in ([0-9.]+) s: (.*)$", re.M)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Noise-free 64x64 phantom, 4 coils, 2 repetitions (2 images)."""
    return generate_phantom(tmp_path_factory.mktemp("data") / "phantom.h5", "-m", "64", "-c", "4", "-n", "0",
                            "-r", "2")


@pytest.fixture(scope="module")
def truth(phantom):
    with h5py.File(phantom, "r") as f:
        return rss(f["dataset/coil_images"][0])


@pytest.fixture(scope="module")
def reference(server, phantom, tmp_path_factory):
    """The images of one plain ``-c simplefft`` session (v1), and of one ``--format v2`` session."""
    out = tmp_path_factory.mktemp("reference") / "ref.h5"
    images = {}
    for fmt in ("v1", "v2"):
        result = run_client(server.port, "-c", "simplefft", "--format", fmt, "-o", str(out), "-G", fmt, str(phantom))
        assert result.returncode == 0, result.stdout
        images[fmt] = images_of(out, fmt)[0]
    return images


def attempts(stdout):
    """(attempt, of, wait seconds, reason) of each retry line."""
    return [(int(a), int(n), float(w), reason) for a, n, w, reason in ATTEMPT.findall(stdout)]


def image_groups(path, group):
    with h5py.File(path, "r") as f:
        return sorted(k for k in f[group] if k.startswith("image_")) if group in f else []


def check_images(out, group, expected, truth):
    """The output group holds exactly one session's images: equal to a plain session's, and right."""
    assert image_groups(out, group) == ["image_0"]
    images, _, _ = images_of(out, group)
    assert images.shape == (2, 1, 1, 64, 64)
    assert np.array_equal(images, expected)
    assert nrmse(images[0, 0, 0], truth) <= 0.01


class FakeServer:
    """A listener on 127.0.0.1 whose n-th connection is served by ``handlers[n]`` (the last one repeats),
    each in its own thread; ``connections`` counts what it accepted."""

    def __init__(self, *handlers):
        self.handlers = handlers
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.errors = []
        self._stop = threading.Event()
        self._threads = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(60)
            handler = self.handlers[min(self.connections, len(self.handlers) - 1)]
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(handler, conn), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, handler, conn):
        try:
            with conn:
                handler(conn)
        except Exception as exc:  # reported by close()
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def close(self):
        self._stop.set()
        self._accepter.join(5)
        self.listener.close()
        for thread in self._threads:
            thread.join(10)
        assert not self.errors, self.errors


def close_after_header(conn):
    """Read the start of the session (the configuration and the header: more than 2 KB) and hang up."""
    got = 0
    while got < 2048:
        chunk = conn.recv(2048 - got)
        if not chunk:
            return
        got += len(chunk)


def forward_to(port):
    """A handler that relays the connection to 127.0.0.1:``port`` both ways."""
    def handler(conn):
        with socket.create_connection(("127.0.0.1", port), timeout=60) as upstream:
            def pump(src, dst):
                while chunk := src.recv(1 << 16):
                    dst.sendall(chunk)
                dst.shutdown(socket.SHUT_WR)
            back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
            back.start()
            pump(conn, upstream)
            back.join(60)
    return handler


SENT_IMAGE = np.arange(32 * 32, dtype=np.float32).reshape(32, 32)


def one_image_then_hang_up(conn):
    """Read the whole session (to the client's end of stream), send one valid image, close without CLOSE."""
    while conn.recv(1 << 16):
        pass
    image = ismrmrd.Image.from_array(SENT_IMAGE, transpose=False)
    MessageWriter.for_socket(conn).send_image(image)
    conn.shutdown(socket.SHUT_WR)


def test_connection_refused_is_retried_until_the_server_listens(phantom, truth, reference, tmp_path):
    port = free_port()
    started = {}

    def start_later():
        time.sleep(1.0)
        started["server"] = harness.ServerProcess("--modules", str(LEGACY_MODULES), port=port,
                                                  log=tmp_path / "server.log", cwd=tmp_path, timeout=30)

    thread = threading.Thread(target=start_later)
    thread.start()
    try:
        out = tmp_path / "out.h5"
        result = run_client(port, "-c", "simplefft", "--retries", "3", "-o", str(out), "-G", "g", str(phantom))
        thread.join(30)
        assert result.returncode == 0, result.stdout
        tries = attempts(result.stdout)
        assert tries and tries[0][:3] == (2, 4, 1.0), result.stdout
        assert all(f"could not connect to 127.0.0.1:{port}" in r and "Connection refused" in r for *_, r in tries)
        assert [w for _, _, w, _ in tries] == [1.0, 2.0, 4.0][:len(tries)]  # doubling
        assert "Connecting to" not in result.stdout  # with --retries each attempt connects once
        check_images(out, "g", reference["v1"], truth)
    finally:
        thread.join(30)
        if "server" in started:
            assert started["server"].stop() == 0


def test_connecting_gives_up_after_the_last_attempt(phantom, tmp_path):
    port = free_port()  # nothing listens
    start = time.monotonic()
    result = run_client(port, "-c", "simplefft", "--retries", "2", "--retry-wait", "0.2", "-o",
                        str(tmp_path / "o.h5"), str(phantom))
    assert result.returncode == 1, result.stdout
    assert [t[:3] for t in attempts(result.stdout)] == [(2, 3, 0.2), (3, 3, 0.4)]
    assert f"could not connect to 127.0.0.1:{port}: [Errno 111] Connection refused (3 attempts)" in result.stdout
    assert time.monotonic() - start < 5  # not 5 connection attempts 1 s apart per attempt


def test_retry_wait_doubles_up_to_ten_seconds():
    import client
    assert [client.retry_wait(1.0, k) for k in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert [client.retry_wait(15.0, k) for k in (1, 2)] == [15, 15]
    assert client.build_parser().parse_args(["f.h5"]).retries == 0


def read_until(proc, text, timeout=30.0):
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if text in line:
                return seen
    raise TimeoutError(f"{text!r} not in {seen}")


@pytest.mark.parametrize("fmt", ["v1", "v2"])
def test_a_busy_server_is_retried_until_its_session_ends(phantom, truth, reference, tmp_path, fmt):
    srv = ServerProcess(tmp_path, "--max-sessions", "1")
    time.sleep(0.5)  # the start-up probe's session has ended
    busy_dir = tmp_path / "busy"
    busy_dir.mkdir()
    (busy_dir / "paced.json").write_text(json.dumps({"parameters": {"series": 1, "images": 16, "send_delay": 0.25}}))
    long = subprocess.Popen([sys.executable, str(REPO / "client.py"), "-a", "127.0.0.1", "-p", str(srv.port), "-c",
                             "paced", "-o", str(busy_dir / "o.h5"), str(phantom)], cwd=busy_dir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        read_until(long, "Series 0 arriving")  # its session runs for about 4 s more
        refused = run_client(srv.port, "-c", "simplefft", "--format", fmt, "-o", str(tmp_path / "refused.h5"), "-G",
                             "g", str(phantom))
        assert refused.returncode == 1, refused.stdout
        assert "Server: ERROR    server busy: 1 session(s) running (--max-sessions); try again later" in refused.stdout
        assert not attempts(refused.stdout) and image_groups(tmp_path / "refused.h5", "g") == []

        out = tmp_path / "out.h5"
        result = run_client(srv.port, "-c", "simplefft", "--format", fmt, "--retries", "3", "-o", str(out), "-G",
                            "g", str(phantom))
        assert result.returncode == 0, result.stdout
        tries = attempts(result.stdout)
        assert tries and tries[0][:3] == (2, 4, 1.0), result.stdout
        assert all(r == "server busy: 1 session(s) running (--max-sessions); try again later" for *_, r in tries)
        check_images(out, "g", reference[fmt], truth)
        rest, _ = long.communicate(timeout=30)
        assert long.returncode == 0, rest
        assert "received 16 images" in rest  # the running session was not disturbed
    finally:
        if long.poll() is None:
            long.kill()
            long.wait()
        assert srv.stop() == 0


@pytest.mark.parametrize("fmt", ["v1", "v2"])
def test_a_connection_closed_after_the_header_is_retried_once(server, phantom, truth, reference, tmp_path, fmt):
    fake = FakeServer(close_after_header, forward_to(server.port))
    try:
        out = tmp_path / "out.h5"
        result = run_client(fake.port, "-c", "simplefft", "--format", fmt, "--retries", "2", "--retry-wait", "0.5",
                            "-o", str(out), "-G", "g", str(phantom))
        assert result.returncode == 0, result.stdout
        ((attempt, of, wait, reason),) = attempts(result.stdout)
        assert (attempt, of, wait) == (2, 3, 0.5)
        assert ("the server closed the connection without CLOSE" in reason or "receiving failed" in reason), reason
        assert fake.connections == 2
        check_images(out, "g", reference[fmt], truth)
    finally:
        fake.close()


def test_results_then_a_lost_connection_is_not_retried_and_the_image_is_kept(phantom, tmp_path):
    fake = FakeServer(one_image_then_hang_up)
    try:
        out = tmp_path / "out.h5"
        result = run_client(fake.port, "-c", "simplefft", "--retries", "3", "--retry-wait", "0.2", "-o", str(out),
                            "-G", "g", str(phantom))
        assert result.returncode == 1, result.stdout
        assert "the server closed the connection without CLOSE" in result.stdout
        assert "received 1 images (1 in series 0)" in result.stdout
        assert not attempts(result.stdout) and fake.connections == 1
        assert "Not retried: 1 result item(s) had arrived" in result.stdout
        images, _, _ = images_of(out, "g")
        assert images.shape == (1, 1, 1, 32, 32) and np.array_equal(images[0, 0, 0], SENT_IMAGE)
    finally:
        fake.close()


def test_a_module_error_is_not_retried(server, phantom, tmp_path):
    before = server.log_text().count("Running module 'raises'")
    result = run_client(server.port, "-c", "raises", "--retries", "2", "--retry-wait", "0.2", "-o",
                        str(tmp_path / "o.h5"), str(phantom))
    assert result.returncode == 1, result.stdout
    assert "deliberate failure after 3 acquisitions" in result.stdout and not attempts(result.stdout)
    assert server.log_text().count("Running module 'raises'") == before + 1


def test_unreadable_input_is_exit_2_at_once_without_retries(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an HDF5 file\n" * 64)
    start = time.monotonic()
    result = run_client(free_port(), "-c", "simplefft", "--retries", "3", "-o", str(tmp_path / "o.h5"), str(bad))
    assert result.returncode == 2, result.stdout
    (line,) = result.stdout.splitlines()
    assert f"Cannot read input {bad}" in line and not attempts(result.stdout)
    assert time.monotonic() - start < 5
