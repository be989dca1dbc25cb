"""modules/_bart.py against the real bart binary: discovery, capabilities, sessions, errors."""
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))
import _bart  # noqa: E402

BART = shutil.which("bart")


def test_bart_is_found_on_path_in_toolbox_path_and_by_configuration(tmp_path, monkeypatch):
    assert BART, "make test installs Debian's bart"
    monkeypatch.delenv("BART_BINARY", raising=False)
    assert _bart.find_bart() == BART
    toolbox = tmp_path / "toolbox"
    toolbox.mkdir()
    (toolbox / "bart").symlink_to(BART)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    for variable in ("TOOLBOX_PATH", "BART_TOOLBOX_PATH"):
        monkeypatch.setenv(variable, str(toolbox))
        assert _bart.find_bart() == str(toolbox / "bart")
        monkeypatch.delenv(variable)
    with pytest.raises(_bart.BartError) as info:
        _bart.find_bart()
    assert info.value.returncode == 127
    assert _bart.find_bart(str(toolbox / "bart")) == str(toolbox / "bart")
    with pytest.raises(_bart.BartError):
        _bart.find_bart(str(tmp_path / "missing" / "bart"))


def test_capabilities_of_the_installed_bart():
    caps = _bart.capabilities(BART)
    assert caps.version.startswith("v")
    if caps.version.startswith("v0.8"):  # Debian bookworm: CPU only, no -x options
        assert (caps.gpu, caps.nlinv_x, caps.nufft_x) == (False, False, False)


def test_session_runs_tools_in_its_own_folder_logs_output_and_cleans_up(caplog):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 3, 2)) + 1j * rng.standard_normal((4, 3, 2))).astype(np.complex64)
    with caplog.at_level(logging.DEBUG, logger="_bart"), _bart.BartSession() as session:
        folder = session.folder
        first = session.run(["scale", "2", "x", "y"], {"x": x})["y"]
        second = session.run(["fft", "-u", "3", "x", "y"], {"x": x})["y"]  # same names, no clash
        assert np.allclose(first, 2 * x)
        centred = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(0, 1)), axes=(0, 1), norm="ortho"), axes=(0, 1))
        assert np.allclose(second, centred, atol=1e-5)  # BART's fft is centred
        assert isinstance(first, np.memmap)
    assert not folder.exists()
    assert "bart scale 2 x y" in caplog.text


def test_failures_raise_bart_error_with_stderr():
    with _bart.BartSession() as session, pytest.raises(_bart.BartError) as info:
        session.run(["pics", "-g", "k", "s", "x"], {"k": np.ones((4, 4)), "s": np.ones((4, 4))})
    if not _bart.capabilities(session.binary).gpu:
        assert info.value.returncode != 0 and "GPU" in str(info.value)
    assert isinstance(info.value, _bart.MrdError)
