"""Pytest fixtures: repository imports, a real server subprocess on 127.0.0.1, client runs, NRMSE."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LEGACY_MODULES = Path(__file__).resolve().parent / "legacy_modules"
GENERATOR = REPO / "tools" / "generate_cartesian_shepp_logan_dataset.py"
# The GIRF files ship with the repository (GIRF/README.md); configs name the first by its relative path.
GIRF_DIR = REPO / "GIRF"
GIRF_FILE = GIRF_DIR / "GIRF_20200221_Duyn_method_coil2.mat"
GIRF_REFERENCE_FILE = GIRF_DIR / "girf_matlab.mat"


def compute_devices() -> list[int]:
    """``gpu_device`` values to test: -1 (the CPU) always, and 0 where CuPy finds a GPU (the device
    machine), so that the GPU path runs the CPU path's tests."""
    sys.path.insert(0, str(REPO / "modules"))
    import _backend
    return [-1, 0] if _backend.select(0).gpu == 0 else [-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"server did not listen on {port}")


class ServerProcess:
    """``python main.py`` on a free port of 127.0.0.1, with the test modules folder added."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        self.port = free_port()
        self.log = tmp / f"server-{self.port}.log"
        self.savedir = tmp / "saved"
        cmd = [sys.executable, str(REPO / "main.py"), "-v", "-H", "127.0.0.1", "-p", str(self.port),
               "-S", str(self.savedir), "--modules", str(LEGACY_MODULES), "-l", str(self.log), *extra]
        self.proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_port(self.port, self.proc)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def log_text(self) -> str:
        return self.log.read_text()


# --- servers that are not our children (started by the FIRE scripts in the background) ------------

def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (the server is not our child: no waitpid)."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_listening(port: int, pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise RuntimeError(f"server pid {pid} exited before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"server pid {pid} did not listen on {port}")


def stop(pid: int, timeout: float = 30.0) -> None:
    if not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            raise TimeoutError(f"server pid {pid} ignored SIGTERM for {timeout} s")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("server"))
    yield srv
    assert srv.stop() == 0


def run_client(port: int, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run client.py against 127.0.0.1:port; returns the finished process (text output)."""
    cmd = [sys.executable, str(REPO / "client.py"), "-a", "127.0.0.1", "-p", str(port), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def generate_phantom(path: Path, *args: str) -> Path:
    subprocess.run([sys.executable, str(GENERATOR), "-o", str(path), *args], check=True, capture_output=True)
    return path


def open_saved_session(port: int, phantom: Path, count: int):
    """A ``savedataonly`` session that sends the first ``count`` acquisitions of ``phantom`` and stays
    connected; returns (socket, the acquisitions sent as an ``mrdfile.AcquisitionBlock``)."""
    import mrdfile
    from connection import MessageWriter

    with h5py.File(phantom, "r") as f:
        xml = mrdfile.read_xml(f["dataset"])
        block = next(mrdfile.iter_acquisition_blocks(f["dataset/data"], rows=count))
    sock = socket.create_connection(("127.0.0.1", port))
    writer = MessageWriter.for_socket(sock)
    writer.send_config_file("savedataonly")
    writer.send_header(xml)
    for i in range(count):
        writer.send_acquisition_parts(block.heads[i:i + 1].tobytes(), block.traj[i], block.data[i])
    return sock, block


def nrmse(image: np.ndarray, reference: np.ndarray) -> float:
    """Normalised RMS error after fitting one real scale (output scaling is arbitrary)."""
    image = np.asarray(image, dtype=np.float64).ravel()
    reference = np.asarray(reference, dtype=np.float64).ravel()
    scale = image @ reference / (reference @ reference)
    return float(np.linalg.norm(image - scale * reference) / np.linalg.norm(scale * reference))


def rss(coil_images: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.sqrt((np.abs(coil_images) ** 2).sum(axis=axis))


def images_of(path, group, series="image_0"):
    """Pixels, headers and attribute strings of one image series of an MRD HDF5 file."""
    with h5py.File(path, "r") as f:
        return f[group][series]["data"][...], f[group][series]["header"][...], list(f[group][series]["attributes"])
