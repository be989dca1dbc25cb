"""Saving incoming data (-s, savedataonly): complete files after broken sessions, a full disk, SIGTERM."""
import resource
import signal
import time

import h5py
import numpy as np
import pytest

from conftest import ServerProcess, generate_phantom, open_saved_session, run_client
from tools._server_harness import ServerProcess as MainServer
from connection import MessageReader


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return generate_phantom(tmp_path_factory.mktemp("data") / "p.h5", "-m", "64", "-c", "4", "-r", "2")


def send_partial_session(port, phantom, count, cut_last=False):
    """savedataonly session that sends ``count`` acquisitions (the last one cut short) and vanishes."""
    sock, block = open_saved_session(port, phantom, count)
    if cut_last:
        sock.sendall(b"\xf0\x03" + block.heads[0:1].tobytes()[:100])  # ID 1008 and a third of a header
    sock.close()
    return block


def wait_for_saved(folder, pattern="ShepLoganPhantom_*.h5", timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob(pattern))
        if found:
            return found
        time.sleep(0.1)
    raise TimeoutError(f"nothing saved in {folder}")


@pytest.mark.parametrize("cut_last", [False, True])
def test_client_vanishing_mid_session_leaves_a_complete_file(phantom, tmp_path, cut_last):
    srv = ServerProcess(tmp_path)
    try:
        block = send_partial_session(srv.port, phantom, 50, cut_last)
        saved = wait_for_saved(srv.savedir)
    finally:
        assert srv.stop() == 0
    with h5py.File(saved[0], "r") as f:
        data = f["dataset/data"]
        assert data.shape == (50,)
        assert np.array_equal(data["head"], block.heads)
        assert np.array_equal(data[49]["data"].view(np.complex64), block.data[49].ravel())


def test_sigterm_while_saving_finishes_the_file(phantom, tmp_path):
    srv = ServerProcess(tmp_path, "-m", "--shutdown-grace", "1")
    try:
        sock, _ = open_saved_session(srv.port, phantom, 40)
        with sock:
            time.sleep(0.5)
            srv.proc.send_signal(signal.SIGTERM)  # the client stays connected and silent
            assert srv.proc.wait(30) == 0
            assert MessageReader(sock.makefile("rb")).read()[0] == 4
    finally:
        srv.stop()
    saved = wait_for_saved(srv.savedir)
    with h5py.File(saved[0], "r") as f:
        assert f["dataset/data"].shape == (40,)


def test_full_disk_gives_error_text_clean_close_and_server_keeps_serving(phantom, tmp_path):
    limit = 256 << 10  # files may not grow beyond 256 kB: writes fail like on a full disk

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    srv = MainServer("-S", str(tmp_path / "saved"), cwd=tmp_path, preexec_fn=small_files, timeout=20.0)
    port = srv.port
    try:
        assert phantom.stat().st_size > 2 * limit
        result = run_client(port, "-c", "savedataonly", "-o", str(tmp_path / "o.h5"), str(phantom))
        assert result.returncode == 1
        assert "Saving incoming data" in result.stdout and "saving stopped" in result.stdout
        ok = run_client(port, "-c", "simplefft", "-o", str(tmp_path / "ok.h5"), "-G", "g", str(phantom))
        assert ok.returncode == 0
    finally:
        assert srv.stop() == 0
