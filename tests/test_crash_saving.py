"""Saved data survives a crash: SIGKILL of the server (or, with -m, of the session process) in the middle of
a saved 270 MB session leaves a file that plain h5py opens read-only, holding every acquisition up to the
last batch; the server reports (and renames) such files at start-up and when a session process died."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import mrdfile
from conftest import REPO, ServerProcess, generate_phantom, open_saved_session, run_client
from connection import MessageReader

SENT_BEFORE_KILL = 1200  # of the 2048 readouts (131 kB each): about 157 MB
SETTLE_S = 4.0  # > mrdsave's 2 s batch age + the time to write and fsync a batch


@pytest.fixture(scope="module")
def big_phantom(tmp_path_factory):
    """268 MB of raw data: 2048 readouts of 512 samples x 32 coils."""
    return generate_phantom(tmp_path_factory.mktemp("big") / "big.h5", "-m", "256", "-c", "32", "-r", "8")


def assert_holds_the_first(path: Path, block: mrdfile.AcquisitionBlock, count: int) -> None:
    with h5py.File(path, "r") as f:  # plain h5py, read-only, no h5clear
        data = f["dataset/data"]
        assert data.shape == (count,)
        assert np.array_equal(data["head"], block.heads[:count])
        for i in (0, count // 2, count - 1):
            assert np.array_equal(data[i]["data"].view(np.complex64), block.data[i].ravel())
        assert "ShepLoganPhantom" in mrdfile.read_xml(f["dataset"])


def child_pids(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_sigkill_of_the_server_leaves_a_readable_file_with_every_saved_acquisition(big_phantom, tmp_path):
    srv = ServerProcess(tmp_path)
    sock, block = open_saved_session(srv.port, big_phantom, SENT_BEFORE_KILL)
    time.sleep(SETTLE_S)
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    sock.close()
    (left,) = srv.savedir.glob("MRD_input_*.h5")
    assert_holds_the_first(left, block, SENT_BEFORE_KILL)

    again = ServerProcess(tmp_path)  # the next start reports the file and gives it its final name
    try:
        (kept,) = srv.savedir.glob("ShepLoganPhantom_*_incomplete.h5")
        assert not left.exists() and kept.name.endswith(left.name.removeprefix("MRD_input_").replace(".h5",
                                                                                                 "_incomplete.h5"))
        assert f"{left.name} was left by a crash: {SENT_BEFORE_KILL} acquisitions" in again.log_text()
        assert_holds_the_first(kept, block, SENT_BEFORE_KILL)
    finally:
        assert again.stop() == 0


def test_sigkill_mid_stream_still_leaves_a_readable_prefix(big_phantom, tmp_path):
    srv = ServerProcess(tmp_path)
    sock, block = open_saved_session(srv.port, big_phantom, 2048)  # the server is killed while it receives
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    sock.close()
    (left,) = srv.savedir.glob("MRD_input_*.h5")
    with h5py.File(left, "r") as f:
        count = f["dataset/data"].shape[0]
    assert count > 0
    assert_holds_the_first(left, block, count)


def test_killed_session_process_is_reported_and_its_file_kept_while_the_server_goes_on(big_phantom, tmp_path):
    srv = ServerProcess(tmp_path, "-m")
    try:
        sock, block = open_saved_session(srv.port, big_phantom, SENT_BEFORE_KILL)
        time.sleep(SETTLE_S)
        (child,) = child_pids(srv.proc.pid)
        os.kill(child, signal.SIGKILL)
        reader = MessageReader(sock.makefile("rb"))
        text_id, text = reader.read()
        assert text_id == 5 and "the session process was killed by signal 9" in text
        sock.close()
        deadline = time.monotonic() + 10
        while not list(srv.savedir.glob("ShepLoganPhantom_*_incomplete.h5")) and time.monotonic() < deadline:
            time.sleep(0.1)
        (kept,) = srv.savedir.glob("ShepLoganPhantom_*_incomplete.h5")
        assert_holds_the_first(kept, block, SENT_BEFORE_KILL)
        assert "was left by a crash" in srv.log_text()
        small = generate_phantom(tmp_path / "small.h5", "-m", "32", "-c", "2")
        result = run_client(srv.port, "-c", "savedataonly", "-o", str(tmp_path / "o.h5"), str(small))
        assert result.returncode == 0, result.stdout  # the server goes on
    finally:
        assert srv.stop() == 0


def test_a_file_that_a_live_session_writes_is_never_taken_even_without_hdf5_locking(tmp_path):
    # HDF5_USE_FILE_LOCKING=FALSE (common advice on NFS) switches HDF5's own lock off; the recorder's
    # POSIX lock still tells the recovery that the file is in use.
    env = {**os.environ, "HDF5_USE_FILE_LOCKING": "FALSE", "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c",
                               "import sys, time, mrdsave; mrdsave.SessionRecorder.start(sys.argv[1], 'x', True, None, "
                               "'<protocolName>P</protocolName>'); print('ready', flush=True); time.sleep(60)",
                               str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True)
    recover = [sys.executable, "-c", "import sys, mrdsave; print(len(mrdsave.recover_crashed(sys.argv[1])))",
               str(tmp_path)]
    try:
        assert writer.stdout.readline() == "ready\n"
        (live,) = tmp_path.glob("MRD_input_*.h5")
        assert subprocess.run(recover, env=env, capture_output=True, text=True).stdout == "0\n"
        assert live.exists()
    finally:
        writer.kill()
        writer.wait()
    assert subprocess.run(recover, env=env, capture_output=True, text=True).stdout == "1\n"
    assert [p.name for p in tmp_path.glob("P_*_incomplete.h5")] == [live.name.replace("MRD_input_", "P_")
                                                                     .replace(".h5", "_incomplete.h5")]


def test_files_without_a_protocol_name_are_told_apart_from_crashed_ones(tmp_path):
    # Without <protocolName> a finished file keeps its MRD_input_ name, as upstream's does.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    save = ("import sys, mrdsave; rec = mrdsave.SessionRecorder.start(sys.argv[1], 'x', True, None, '<x/>'); "
            "print(rec.close() if sys.argv[2] == 'close' else rec.path, flush=True); "
            "import os; os._exit(0)")  # 'crash': the process ends without closing the file
    finished = Path(subprocess.run([sys.executable, "-c", save, str(tmp_path), "close"], env=env,
                                   capture_output=True, text=True, check=True).stdout.strip())
    crashed = Path(subprocess.run([sys.executable, "-c", save, str(tmp_path), "crash"], env=env,
                                  capture_output=True, text=True, check=True).stdout.strip())
    assert finished.name.startswith("MRD_input_") and crashed.name.startswith("MRD_input_")
    recover = [sys.executable, "-c", "import sys, mrdsave; print([p.name for p in mrdsave.recover_crashed(sys.argv[1])])",
               str(tmp_path)]
    first = subprocess.run(recover, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert first == str([crashed.stem + "_incomplete.h5"])
    assert subprocess.run(recover, env=env, capture_output=True, text=True, check=True).stdout.strip() == "[]"
    assert finished.exists()
