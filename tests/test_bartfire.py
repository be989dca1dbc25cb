"""modules/bartfire.py and the ``bart`` Python call (modules/bart.py): BART's calling convention on
Debian's binary, deferring to BART's own Python folder, the phantom reconstructed over real sockets,
and upstream's bartfire.py, run unchanged from a module folder, giving the same images."""
import importlib.util
import logging
import shutil
import sys

import h5py
import ismrmrd
import numpy as np
import pytest

from conftest import REPO, ServerProcess, generate_phantom, nrmse, rss, run_client

sys.path.insert(0, str(REPO / "modules"))
import _bart  # noqa: E402

SHIM = REPO / "modules" / "bart.py"
UPSTREAM = REPO / "tests" / "upstream" / "bartfire.py"
LAST_IN_SLICE = np.uint64(1 << (ismrmrd.ACQ_LAST_IN_SLICE - 1))
NOISE = np.uint64(1 << (ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1))


def load_shim(name="bart_shim_under_test"):
    """A fresh import of modules/bart.py (it chooses its ``bart`` when imported)."""
    spec = importlib.util.spec_from_file_location(name, SHIM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_toolbox(monkeypatch):
    for variable in ("BART_TOOLBOX_PATH", "TOOLBOX_PATH"):
        monkeypatch.delenv(variable, raising=False)


def centred_ifft2(x):
    axes = (0, 1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


def test_bart_call_follows_barts_convention_on_the_binary(no_toolbox):
    bart = load_shim().bart
    assert bart.__name__ == "binary_bart"
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((6, 4, 3)) + 1j * rng.standard_normal((6, 4, 3))).astype(np.complex64)
    image = bart(1, "fft -u -i 3", x)  # one output: the array
    assert type(image) is np.ndarray and image.shape == x.shape and image.dtype == np.complex64
    assert np.allclose(image, centred_ifft2(x), atol=1e-5)
    u, s, vh = bart(3, "svd", x[:, :, 0])  # several: a list, as BART's own returns
    assert np.allclose((u[:, :4] * s) @ vh, x[:, :, 0], atol=1e-4)
    assert bart(0, "version") is None and bart.ERR == 0 and bart.stdout.startswith("v")
    traj = bart(1, "traj -x 16 -y 8")
    kspace = bart(1, "phantom -k -s 2", t=traj)  # a keyword array is an option: -t <file>
    assert kspace.shape == (1, 16, 8, 2) and np.abs(kspace).max() > 0
    with pytest.raises(_bart.BartError, match="nosuchtool"):
        bart(1, "nosuchtool", x)
    assert bart.ERR != 0
    with pytest.raises(ValueError):
        bart(1.0, "version")


def test_bart_call_defers_to_barts_own_python_folder(tmp_path, monkeypatch, no_toolbox, caplog):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the shim adds the toolbox folder
    python = tmp_path / "toolbox" / "python"
    python.mkdir(parents=True)
    (python / "cfl.py").write_text("ORIGIN = 'toolbox cfl'\n")
    (python / "bart.py").write_text("import cfl\n\ndef bart(nargout, cmd, *args, **kwargs):\n"
                                    "    return (cfl.ORIGIN, nargout, cmd)\n")
    for variable in ("TOOLBOX_PATH", "BART_TOOLBOX_PATH"):
        monkeypatch.setenv(variable, str(tmp_path / "toolbox"))
        assert load_shim().bart(1, "fft 3") == ("toolbox cfl", 1, "fft 3")
        monkeypatch.delenv(variable)
    (python / "bart.py").write_text("import no_such_module\n")
    monkeypatch.setenv("BART_TOOLBOX_PATH", str(tmp_path / "toolbox"))
    with caplog.at_level(logging.WARNING):
        assert load_shim().bart.__name__ == "binary_bart"  # a broken folder: the binary still serves
    assert "does not import" in caplog.text


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """A noise-free 64x64 phantom, 4 coils, 2 slices; and a noisy one turned into 2 cardiac phases of one
    slice (idx.phase = repetition, one LAST_IN_SLICE) with the centre line 32 in idx.user[5]."""
    folder = tmp_path_factory.mktemp("phantoms")
    plain = generate_phantom(folder / "plain.h5", "-m", "64", "-c", "4", "-n", "0", "--slices", "2")
    phases = generate_phantom(folder / "phases.h5", "-m", "64", "-c", "4", "-r", "2")
    with h5py.File(phases, "r+") as f:
        rows = f["dataset/data"][...]
        head = rows["head"]
        imaging = (head["flags"] & NOISE) == 0
        head["idx"]["phase"][imaging] = head["idx"]["repetition"][imaging]
        head["idx"]["repetition"][imaging] = 0
        head["idx"]["user"][imaging, 5] = 32
        last = np.flatnonzero(imaging & ((head["flags"] & LAST_IN_SLICE) != 0))
        head["flags"][last[:-1]] &= ~LAST_IN_SLICE
        f["dataset/data"][...] = rows
    return {"plain": plain, "phases": phases}


@pytest.fixture(scope="module")
def upstream_server(tmp_path_factory):
    """A server whose extra module folder holds upstream's bartfire.py, copied byte for byte."""
    tmp = tmp_path_factory.mktemp("upstream")
    folder = tmp / "modules"
    folder.mkdir()
    shutil.copyfile(UPSTREAM, folder / "bartfire.py")
    assert (folder / "bartfire.py").read_bytes() == UPSTREAM.read_bytes()
    srv = ServerProcess(tmp, "--modules", str(folder))
    yield srv
    assert srv.stop() == 0


def reconstruct(port, raw, out):
    result = run_client(port, "-c", "bartfire", "-o", str(out), "-G", "g", str(raw))
    assert result.returncode == 0, result.stdout + result.stderr
    with h5py.File(out, "r") as f:
        assert list(f["g"]) == ["image_0", "xml"]
        series = f["g/image_0"]
        return series["data"][...], series["header"][...], [ismrmrd.Meta.deserialize(a) for a in series["attributes"]]


def test_bartfire_reconstructs_the_phantom(server, phantoms, tmp_path):
    data, heads, metas = reconstruct(server.port, phantoms["plain"], tmp_path / "out.h5")
    assert data.shape == (2, 1, 1, 64, 64) and data.dtype == np.int16 and data.max() == 4095
    assert list(heads["slice"]) == [0, 1] and list(heads["image_index"]) == [0, 0]  # image_index = phase
    assert metas[0]["ImageProcessingHistory"] == ["PYTHON", "BART"] and metas[0]["WindowWidth"] == "4096"
    with h5py.File(phantoms["plain"], "r") as f:
        coil_images = f["dataset/coil_images"][...]
    for image, head in zip(data[:, 0, 0], heads):
        reference = rss(coil_images[head["slice"]])
        # k-space flipped before the FFT (as Siemens ICE orients it): the image turned by 180 degrees
        # about the centre pixel, i.e. pixel j shows the phantom's pixel (64 - j) mod 64 in both axes.
        assert nrmse(image, np.roll(np.flip(reference), 1, axis=(0, 1))) <= 0.005


def test_upstream_bartfire_runs_unchanged_and_gives_the_same_images(server, upstream_server, phantoms, tmp_path):
    """Same: identical int16 pixels, every header field and every attribute (both run the same BART
    binary on the same k-space; our shim serves upstream's ``from bart import bart``)."""
    for name, images in (("plain", 2), ("phases", 2)):
        ours = reconstruct(server.port, phantoms[name], tmp_path / f"ours_{name}.h5")
        upstream = reconstruct(upstream_server.port, phantoms[name], tmp_path / f"upstream_{name}.h5")
        assert len(ours[0]) == images and np.array_equal(ours[0], upstream[0])
        for field in ours[1].dtype.names:
            assert np.array_equal(ours[1][field], upstream[1][field]), field
        assert ours[2] == upstream[2]
    assert "Calling BART FFT" in upstream_server.log_text()  # upstream's code ran
    heads = ours[1]
    assert list(heads["phase"]) == [0, 1] and list(heads["image_index"]) == [0, 1]
    with h5py.File(phantoms["phases"], "r") as f:
        head = f["dataset/data"]["head"]
        centre = head[(head["idx"]["kspace_encode_step_1"] == 32) & ((head["flags"] & NOISE) == 0)]
    assert list(heads["acquisition_time_stamp"]) == list(centre["acquisition_time_stamp"])  # geometry from line 32
