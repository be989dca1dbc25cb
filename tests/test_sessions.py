"""End-to-end sessions over real sockets: main.py and client.py as subprocesses, values checked."""
import json
import shutil
import signal
import socket
import struct
import subprocess
import sys

import h5py
import ismrmrd
import numpy as np
import pytest

import mrdfile
from conftest import REPO, ServerProcess, generate_phantom, images_of, nrmse, rss, run_client
from connection import MessageReader, MessageWriter


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Noise-free 64x64 phantom, 4 coils, 2 slices, 2 repetitions (4 images)."""
    path = tmp_path_factory.mktemp("data") / "phantom.h5"
    return generate_phantom(path, "-m", "64", "-c", "4", "-n", "0", "-r", "2", "--slices", "2")


def test_simplefft_matches_rss_of_noise_free_coil_images(server, phantom, tmp_path):
    out = tmp_path / "out.h5"
    result = run_client(server.port, "-c", "simplefft", "-o", str(out), "-G", "recon", str(phantom))
    assert result.returncode == 0, result.stdout + result.stderr
    data, heads, attrs = images_of(out, "recon")
    with h5py.File(phantom, "r") as f:
        coil_images = f["dataset/coil_images"][...]
    assert data.shape == (4, 1, 1, 64, 64) and data.dtype == np.int16
    for image, head in zip(data[:, 0, 0], heads):
        assert nrmse(image, rss(coil_images[head["slice"]])) <= 0.01
    assert data.max() == 4095
    assert set(heads["image_type"]) == {1}
    meta = ismrmrd.Meta.deserialize(attrs[0])
    assert meta["ImageProcessingHistory"] == ["FIRE", "PYTHON"] and meta["WindowWidth"] == "4096"
    dset = ismrmrd.Dataset(str(out), "recon", mode="r")  # the file is readable by ismrmrd itself
    assert dset.read_image("image_0", 3).slice == heads["slice"][3]
    dset.close()


def test_simplefft_reconstructs_debian_ismrmrd_phantom(server, tmp_path):
    tool = shutil.which("ismrmrd_generate_cartesian_shepp_logan")
    assert tool, "make test installs ismrmrd-tools"
    raw = tmp_path / "debian.h5"
    subprocess.run([tool, "-o", str(raw), "-m", "64", "-c", "4", "-n", "0"], check=True, capture_output=True)
    out = tmp_path / "out.h5"
    result = run_client(server.port, "-c", "simplefft", "-o", str(out), "-G", "g", str(raw))
    assert result.returncode == 0, result.stdout + result.stderr
    data, _, _ = images_of(out, "g")
    with h5py.File(raw, "r") as f:
        stored = f["dataset/coil_images"][0]
    coil_images = stored["real"] + 1j * stored["imag"]  # [coil, y, oversampled x]
    reference = rss(coil_images)[:, 32:96]
    assert nrmse(data[0, 0, 0], reference) <= 0.01


def test_invertcontrast_inverts_raw_and_image_input(server, phantom, tmp_path):
    fft_out, inv_out, img_out = tmp_path / "fft.h5", tmp_path / "inv.h5", tmp_path / "img.h5"
    assert run_client(server.port, "-c", "simplefft", "-o", str(fft_out), "-G", "g", str(phantom)).returncode == 0
    assert run_client(server.port, "-c", "invertcontrast", "-o", str(inv_out), "-G", "g",
                      str(phantom)).returncode == 0
    reference, _, _ = images_of(fft_out, "g")
    inverted_raw, _, _ = images_of(inv_out, "g")
    # From raw data invertcontrast flips k-space in readout and phase before the FFT, as
    # python-ismrmrd-server's does (tests/test_upstream_parity.py): its image is simplefft's reversed
    # about the centre pixel, y[n] = x[(N - n) mod N] on the full grid. Rows: N = 64. Columns: the
    # 64 of the recon matrix are the middle of 128 oversampled ones, so column j > 0 is simplefft's
    # 64 - j, and column 0 is simplefft's oversampled column 96, outside its crop (background here).
    flipped = reference[..., (64 - np.arange(64)) % 64, :][..., :0:-1]
    assert np.array_equal(4095 - inverted_raw[..., 1:], flipped)
    assert (4095 - inverted_raw[..., 0]).max() < 0.02 * 4095
    assert np.abs((4095 - inverted_raw).astype(int) - reference).max() > 1000  # the orientation does differ
    result = run_client(server.port, "-c", "invertcontrast", "-o", str(img_out), "-G", "g", "-g", "g", str(fft_out))
    assert result.returncode == 0, result.stdout + result.stderr
    inverted_images, heads, attrs = images_of(img_out, "g")
    assert np.array_equal(inverted_images, 4095 - reference)
    assert ismrmrd.Meta.deserialize(attrs[0])["ImageProcessingHistory"] == ["PYTHON", "INVERT"]


def test_legacy_style_module_runs_unchanged_and_gets_json_config(server, phantom, tmp_path):
    (tmp_path / "legacy_echo.json").write_text(json.dumps({"version": "1.1.0", "parameters": {"option": "x"}}))
    out = tmp_path / "out.h5"
    result = run_client(server.port, "-c", "legacy_echo", "-o", str(out), "-G", "g", str(phantom), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "config={'version': '1.1.0', 'parameters': {'option': 'x'}}" in result.stdout
    data, heads, attrs = images_of(out, "g", "image_7")
    with h5py.File(phantom, "r") as f:
        acq = f["dataset/data"][32]
    expected = np.abs(acq["data"].view(np.complex64).reshape(4, -1)).mean(axis=0)
    assert data.shape[0] == 4 and np.allclose(data[0, 0, 0, 0], expected, rtol=1e-5)
    assert ismrmrd.Meta.deserialize(attrs[0])["TestLong"] == "42"


def test_config_local_is_sent_as_config_text(server, phantom, tmp_path):
    conf = tmp_path / "conf.txt"
    conf.write_text("legacy_echo")
    result = run_client(server.port, "-C", str(conf), "-o", str(tmp_path / "o.h5"), str(phantom))
    assert result.returncode == 0 and "config=legacy_echo" in result.stdout


def test_module_that_raises_reports_error_and_server_keeps_serving(server, phantom, tmp_path):
    result = run_client(server.port, "-c", "raises", "-o", str(tmp_path / "o.h5"), str(phantom))
    assert result.returncode == 1
    assert "[module 'raises'] ValueError: deliberate failure after 3 acquisitions" in result.stdout
    again = run_client(server.port, "-c", "simplefft", "-o", str(tmp_path / "ok.h5"), "-G", "g", str(phantom))
    assert again.returncode == 0
    assert images_of(tmp_path / "ok.h5", "g")[0].shape[0] == 4


@pytest.mark.parametrize("name", ["no_such_module", "os", "../main", "<xml/>", "main", "numpy"])
def test_unknown_or_unsafe_module_names_fall_back_to_default(server, phantom, tmp_path, name):
    out = tmp_path / "o.h5"
    result = run_client(server.port, "-c", name, "-o", str(out), "-G", "g", str(phantom))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "using the default module 'invertcontrast'" in result.stdout
    assert images_of(out, "g")[0].shape == (4, 1, 1, 64, 64)


def test_null_config_returns_nothing_and_closes(server, phantom, tmp_path):
    result = run_client(server.port, "-c", "null", "-o", str(tmp_path / "o.h5"), str(phantom))
    assert result.returncode == 0 and "received 0 images" in result.stdout


def test_savedataonly_saves_a_replayable_file(server, phantom, tmp_path):
    before = set(server.savedir.glob("*.h5")) if server.savedir.exists() else set()
    assert run_client(server.port, "-c", "savedataonly", "-o", str(tmp_path / "o.h5"), str(phantom)).returncode == 0
    saved = sorted(set(server.savedir.glob("*.h5")) - before)
    assert len(saved) == 1 and saved[0].name.startswith("ShepLoganPhantom_")
    with h5py.File(saved[0], "r") as f, h5py.File(phantom, "r") as g:
        assert f["dataset/config_file"][0] == b"savedataonly"
        assert np.array_equal(f["dataset/data"]["head"], g["dataset/data"]["head"])
        assert all(np.array_equal(a, b) for a, b in zip(f["dataset/data"]["data"], g["dataset/data"]["data"]))
    out = tmp_path / "replay.h5"
    assert run_client(server.port, "-c", "simplefft", "-o", str(out), "-G", "g", str(saved[0])).returncode == 0
    assert images_of(out, "g")[0].shape[0] == 4


def raw_session(port, send):
    """Open a socket, let ``send(writer, sock)`` write, then collect replies until CLOSE/EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        send(MessageWriter.for_socket(sock), sock)
        reader = MessageReader(sock.makefile("rb"))
        replies = []
        while True:
            msg_id, item = reader.read()
            replies.append((msg_id, item))
            if msg_id in (None, 4):
                sock.shutdown(socket.SHUT_RDWR)
                return replies


def test_data_before_configuration_gets_error_and_close(server):
    replies = raw_session(server.port, lambda w, s: w.send_text("not a config"))
    assert replies[-1][0] == 4
    assert "expected a configuration message" in replies[0][1]


def test_unknown_message_id_mid_session_gets_error_and_close(server, phantom):
    def send(writer, sock):
        writer.send_config_file("simplefft")
        writer.send_header("<bad xml")
        sock.sendall(struct.pack("<H", 777) + b"junk")
    replies = raw_session(server.port, send)
    assert replies[-1][0] == 4
    assert any("unknown message ID 777" in str(item) for _, item in replies)


def test_invalid_json_text_is_reported_and_ignored(server):
    def send(writer, sock):
        writer.send_config_file("legacy_echo")
        writer.send_header("<bad xml")
        writer.send_text("{not json")
        writer.send_text("ping")
        writer.send_close()
    texts = [item for msg_id, item in raw_session(server.port, send) if msg_id == 5]
    assert texts[0].startswith("WARNING  JSON configuration text ignored")
    assert "config=legacy_echo" in texts[1] and texts[2] == "echo ping"


def test_connection_closed_without_data_is_logged(server):
    socket.create_connection(("127.0.0.1", server.port)).close()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        MessageWriter.for_socket(sock).send_config_file("simplefft")
        MessageWriter.for_socket(sock).send_close()
        assert MessageReader(sock.makefile("rb")).read()[0] in (4, None)


def test_sigterm_lets_running_session_finish_and_exits_zero(phantom, tmp_path):
    srv = ServerProcess(tmp_path, "-m")
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            writer = MessageWriter.for_socket(sock)
            reader = MessageReader(sock.makefile("rb"))
            writer.send_config_file("legacy_echo")
            with h5py.File(phantom, "r") as f:
                writer.send_header(f["dataset/xml"][0].decode())
            writer.send_text('{"parameters": {}}')
            assert reader.read() == (5, "INFO     config={'parameters': {}}")  # the session is running
            srv.proc.send_signal(signal.SIGTERM)
            writer.send_text("still here")
            writer.send_close()
            assert reader.read() == (5, "echo still here")
            assert reader.read()[0] == 4
            sock.shutdown(socket.SHUT_RDWR)
        assert srv.proc.wait(30) == 0
    finally:
        srv.stop()
    assert "SIGTERM" in srv.log_text()


def test_client_exits_nonzero_when_nothing_comes_back(server, phantom, tmp_path):
    images = tmp_path / "images.h5"
    assert run_client(server.port, "-c", "simplefft", "-o", str(images), "-G", "g", str(phantom)).returncode == 0
    result = run_client(server.port, "-c", "simplefft", "-o", str(tmp_path / "o.h5"), "-g", "g", str(images))
    assert result.returncode == 1 and "nothing came back from 'simplefft'" in result.stdout


def test_client_exits_nonzero_when_server_is_unreachable(phantom, tmp_path):
    from conftest import free_port
    result = run_client(free_port(), "-c", "simplefft", "-o", str(tmp_path / "o.h5"), str(phantom))
    assert result.returncode == 1 and "could not connect" in result.stdout


def test_savedata_flag_saves_every_session(phantom, tmp_path):
    srv = ServerProcess(tmp_path, "-s")
    try:
        result = run_client(srv.port, "-c", "simplefft", "-o", str(tmp_path / "o.h5"), str(phantom))
        assert result.returncode == 0
    finally:
        assert srv.stop() == 0
    saved = list(srv.savedir.glob("ShepLoganPhantom_*.h5"))
    assert len(saved) == 1
    with h5py.File(saved[0], "r") as f:
        assert f["dataset/data"].shape[0] == 32 + 4 * 64 and f["dataset/config_file"][0] == b"simplefft"


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_concurrent_sessions_give_the_serial_result(phantom, tmp_path, mode):
    srv = ServerProcess(tmp_path, *(["-m"] if mode == "processes" else []))
    try:
        serial = tmp_path / "serial.h5"
        assert run_client(srv.port, "-c", "simplefft", "-o", str(serial), "-G", "g", str(phantom)).returncode == 0
        cmd_outs = [tmp_path / f"c{i}.h5" for i in range(3)]
        procs = [subprocess.Popen([sys.executable, "client.py", "-a", "127.0.0.1", "-p", str(srv.port), "-c", "simplefft",
                                   "-o", str(out), "-G", "g", str(phantom)], cwd=str(REPO),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for out in cmd_outs]
        assert [p.wait(120) for p in procs] == [0, 0, 0]
    finally:
        assert srv.stop() == 0
    expected = images_of(serial, "g")[0]
    for out in cmd_outs:
        assert np.array_equal(images_of(out, "g")[0], expected)


def test_waveforms_are_sent_with_w_and_saved(server, phantom, tmp_path):
    source = tmp_path / "with_waves.h5"
    shutil.copy(phantom, source)
    waves = [ismrmrd.Waveform.from_array(np.arange(10, dtype=np.uint32).reshape(2, 5) + i, waveform_id=1025,
                                         time_stamp=i) for i in range(3)]
    with h5py.File(source, "a") as f:
        mrdfile.append_waveforms(f["dataset"], waves)
    before = set(server.savedir.glob("*.h5")) if server.savedir.exists() else set()
    result = run_client(server.port, "-w", "-c", "savedataonly", "-o", str(tmp_path / "o.h5"), str(source))
    assert result.returncode == 0, result.stdout
    saved = sorted(set(server.savedir.glob("*.h5")) - before)
    dset = ismrmrd.Dataset(str(saved[0]), "dataset", mode="r")
    assert dset.number_of_waveforms() == 3
    assert dset.read_waveform(2) == waves[2]
    dset.close()


def test_file_without_header_sends_dummy_header_and_module_gets_raw_text(server, phantom, tmp_path):
    source = tmp_path / "no_xml.h5"
    shutil.copy(phantom, source)
    with h5py.File(source, "a") as f:
        del f["dataset/xml"]
    result = run_client(server.port, "-c", "simplefft", "-o", str(tmp_path / "o.h5"), "-G", "g", str(source))
    assert result.returncode == 0, result.stdout
    # without a header the 128x64 encoded matrix is not cropped: the readout keeps its oversampling
    assert images_of(tmp_path / "o.h5", "g")[0].shape == (4, 1, 1, 64, 128)
