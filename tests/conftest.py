"""Pytest fixtures: repository imports, a real server subprocess on 127.0.0.1, client runs, NRMSE."""
import json
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tools import _server_harness as harness  # noqa: E402
from tools._server_harness import free_port, pid_alive, stop, wait_listening  # noqa: E402,F401

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


# The one server harness (tools/_server_harness.py); these names are the tests' API.
wait_for_port = wait_listening  # (port, Popen or pid, timeout)


class ServerProcess(harness.ServerProcess):
    """``python main.py`` on a free port of 127.0.0.1, with the test modules folder added: ``-v``,
    saving into ``<tmp>/saved`` (``savedir``), logging to ``<tmp>/server-<port>.log`` (``log``)."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        port = free_port()
        self.savedir = tmp / "saved"
        super().__init__("-v", "-S", str(self.savedir), "--modules", str(LEGACY_MODULES), *extra, port=port,
                         log=tmp / f"server-{port}.log", cwd=tmp, timeout=20.0)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("server"))
    yield srv
    assert srv.stop() == 0


def run_client(port: int, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run client.py against 127.0.0.1:port; returns the finished process (text output)."""
    cmd = [sys.executable, str(REPO / "client.py"), "-a", "127.0.0.1", "-p", str(port), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def run_module_client(port: int, path: Path, module: str, cwd: Path,
                      parameters: dict) -> tuple[Path, subprocess.CompletedProcess]:
    """``client.py -c <module> -G g`` on ``path``; with ``parameters``, from a folder of its own below
    ``cwd`` that holds ``<module>.json`` with them (the client sends the JSON of the module's name from its
    working directory).  Returns the output file's path and the finished client."""
    if parameters:
        cwd = cwd / "_".join([module] + [f"{k}-{v}" for k, v in sorted(parameters.items())])
        cwd.mkdir(exist_ok=True)
        (cwd / f"{module}.json").write_text(json.dumps({"parameters": parameters}))
    out = cwd / f"{path.stem}_{module}.h5"
    return out, run_client(port, "-c", module, "-o", str(out), "-G", "g", str(path), cwd=cwd)


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
