"""MRD v2 sessions against independent peers: mrd-python's phantom, its reader and its reconstruction.

* ``python -m mrd.tools.phantom | main.py --stream -c simplefft | tools/stream_to_mrdhdf5.py`` as a
  real pipe; ``mrd.BinaryMrdReader`` reads our output stream, and our simplefft image matches
  ``mrd.tools.stream_recon``'s (NRMSE <= 0.01 after one scale factor);
* the same phantom over TCP: ``client.py --format v2`` and ``client.py`` (v1, from the phantom
  converted with ``tools/stream_to_mrdhdf5.py``) get identical images;
* the module comes from the header's user parameter string ``config``, else from ``-d``;
* ``tools/mrdhdf5_to_stream.py --format v2`` writes a stream mrd-python reads.
"""
import subprocess
import sys

import h5py
import mrd
import numpy as np
import pytest

import mrdfile
from conftest import REPO, ServerProcess, nrmse, run_client
from mrdv2 import convert

PHANTOM_ARGS = ["-m", "64", "-c", "4", "-n", "0"]  # no noise: every run writes the same phantom


def v2_items(path):
    """(header, [item values]) of an MRD v2 stream file, read by mrd-python."""
    reader = mrd.BinaryMrdReader(str(path))
    header = reader.read_header()
    items = [item.value for item in reader.read_data()]
    reader.close()
    return header, items


@pytest.fixture(scope="module")
def v2_phantom(tmp_path_factory):
    path = tmp_path_factory.mktemp("v2") / "phantom.bin"
    subprocess.run([sys.executable, "-m", "mrd.tools.phantom", *PHANTOM_ARGS, "-o", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def v1_phantom(v2_phantom):
    """The v2 phantom as an MRD HDF5 file (v1 layout), through tools/stream_to_mrdhdf5.py."""
    path = v2_phantom.with_suffix(".h5")
    subprocess.run([sys.executable, str(REPO / "tools" / "stream_to_mrdhdf5.py"), str(path), "-i", str(v2_phantom)],
                   check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("v2_server"), "-d", "invertcontrast")
    yield srv
    assert srv.stop() == 0


def test_pipe_from_the_mrd_phantom_matches_mrd_stream_recon(v2_phantom, tmp_path):
    out_stream, out_h5, reference = tmp_path / "out.bin", tmp_path / "out.h5", tmp_path / "recon.bin"
    pipe = (f"set -o pipefail; {sys.executable} -m mrd.tools.phantom {' '.join(PHANTOM_ARGS)} "
            f"| {sys.executable} {REPO / 'main.py'} --stream -c simplefft | tee {out_stream} "
            f"| {sys.executable} {REPO / 'tools' / 'stream_to_mrdhdf5.py'} {out_h5}")
    done = subprocess.run(["bash", "-c", pipe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "MRD v2 stream" in done.stderr
    header, items = v2_items(out_stream)  # mrd-python reads what we wrote
    assert header.encoding[0].encoded_space.matrix_size.x == 128 and len(items) == 1
    ours = items[0]
    assert isinstance(ours, mrd.Image) and ours.data.dtype == np.int16
    subprocess.run([sys.executable, "-m", "mrd.tools.stream_recon", "-i", str(v2_phantom), "-o", str(reference)],
                   check=True)
    _, (theirs,) = v2_items(reference)
    assert ours.data.shape == theirs.data.shape == (1, 1, 64, 64)
    assert nrmse(np.abs(ours.data), np.abs(theirs.data)) <= 0.01
    with h5py.File(out_h5, "r") as f:  # the stream in the usual layout, the same pixels
        stored = mrdfile.read_image_series(f["dataset"], "image_0")
        assert convert.header_from_xml(mrdfile.read_xml(f["dataset"])).encoding[0].trajectory == mrd.Trajectory.CARTESIAN
    assert np.array_equal(stored.data[0], ours.data)


def test_v2_over_tcp_gives_the_images_of_v1(server, v1_phantom, tmp_path):
    outputs = {}
    for fmt in ("v1", "v2"):
        out = tmp_path / f"{fmt}.h5"
        done = run_client(server.port, "-c", "simplefft", "--format", fmt, str(v1_phantom), "-o", str(out), "-G", "g")
        assert done.returncode == 0, done.stdout + done.stderr
        with h5py.File(out, "r") as f:
            outputs[fmt] = mrdfile.read_image_series(f["g"], "image_0")
    v1, v2 = outputs["v1"], outputs["v2"]
    assert len(v1.heads) == 1
    assert np.array_equal(v1.data, v2.data)
    assert v1.heads.tobytes() == v2.heads.tobytes()
    assert list(v1.attributes) == list(v2.attributes)
    assert "MRD v2 stream" in server.log_text()


def test_module_from_the_header_config_parameter_else_the_default(server, v1_phantom, tmp_path):
    """client.py --format v2 -c simplefft puts 'config' in the header; a v2 stream without it gets -d."""
    done = run_client(server.port, "-c", "simplefft", "--format", "v2", str(v1_phantom), "-o", str(tmp_path / "a.h5"))
    assert done.returncode == 0
    assert "Running module 'simplefft' (requested config 'simplefft')" in server.log_text()
    plain = tmp_path / "plain.bin"  # no config parameter: mrdhdf5_to_stream writes the file's own header
    subprocess.run([sys.executable, str(REPO / "tools" / "mrdhdf5_to_stream.py"), str(v1_phantom), "--format", "v2",
                    "-o", str(plain)], check=True, capture_output=True)
    header, items = v2_items(plain)
    assert header.user_parameters is None or not any(
        p.name == "config" for p in header.user_parameters.user_parameter_string)
    assert len(items) == 96 and all(isinstance(item, mrd.Acquisition) for item in items)
    import socket
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(plain.read_bytes())
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(1 << 16):
            reply += chunk
    (tmp_path / "reply.bin").write_bytes(reply)
    _, images = v2_items(tmp_path / "reply.bin")
    assert len(images) == 1 and isinstance(images[0], mrd.Image)
    assert "Running module 'invertcontrast'" in server.log_text()


def test_a_header_v2_cannot_carry_is_refused_by_the_client(server, v1_phantom, tmp_path):
    """v2 carries the header as structured fields: a file whose XML is no ISMRMRD header is refused with
    one clear line and exit 2 (it still goes as v1, where the module gets the raw text)."""
    bad = tmp_path / "bad.h5"
    bad.write_bytes(v1_phantom.read_bytes())
    with h5py.File(bad, "a") as f:
        mrdfile.write_xml(f["dataset"], "<notIsmrmrd><x>1</x></notIsmrmrd>")
    done = run_client(server.port, "-c", "simplefft", "--format", "v2", str(bad), "-o", str(tmp_path / "o.h5"))
    assert done.returncode == 2
    said = done.stdout + done.stderr
    assert "not a valid ISMRMRD header" in said and "Traceback" not in said


def test_header_with_config_sets_one_config_parameter_and_keeps_the_rest(v1_phantom):
    """The client's v2 header: the file's header, one 'config' user parameter (replacing any), the
    others kept; no config: the header as the converter makes it."""
    from mrdv2.stream import config_of, header_with_config
    with h5py.File(v1_phantom) as f:
        xml = mrdfile.read_xml(f["dataset"])
    assert header_with_config(xml, "") == convert.header_from_xml(xml)
    header = header_with_config(xml, "simplefft")
    assert config_of(header) == "simplefft"
    header.user_parameters.user_parameter_string.append(mrd.UserParameterStringType(name="keep", value="me"))
    again = header_with_config(convert.header_to_xml(header), "null")
    names = [(p.name, p.value) for p in again.user_parameters.user_parameter_string]
    assert names.count(("keep", "me")) == 1 and [n for n in names if n[0] == "config"] == [("config", "null")]
    assert again.encoding == header.encoding and again.acquisition_system_information == \
        header.acquisition_system_information
