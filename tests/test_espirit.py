"""modules/espirit.py: BART ecalib + pics (l1-wavelet) on accelerated Cartesian data, over real sockets
(main.py and client.py subprocesses) on the generator's data and on BART-made data (tests/test_grappa.py's
helpers): R = 2 and 3 with 24 embedded ACS lines and noise (pre-whitened) within NRMSE 0.08 of the fully
sampled RSS inside the object while simplefft on the same data is above 0.2; the calibration region,
the settings and the errors."""
import shutil

import numpy as np
import pytest

from conftest import ServerProcess, nrmse, rss
from test_grappa import NOISE, bart_dataset, bart_phantom, generate, read_session, reconstruct, run_module  # noqa: F401

import _errors  # noqa: E402  (modules/ is on sys.path through test_grappa)
import espirit  # noqa: E402

LIMIT = 0.08
pytestmark = pytest.mark.skipif(shutil.which("bart") is None, reason="needs the bart binary (make test installs it)")


def test_settings_from_json_and_their_errors():
    assert espirit.Settings.from_config("espirit") == espirit.Settings(0.005, 30, 24, True)
    got = espirit.Settings.from_config({"parameters": {"espirit_lambda": "0.01", "espirit_iterations": "12",
                                                       "espirit_calibration": "16", "prewhiten": "false"}})
    assert got == espirit.Settings(0.01, 12, 16, False)
    for key, value, message in [("espirit_lambda", "-1", ">= 0"), ("espirit_iterations", "0", "1 to 10000"),
                                ("espirit_calibration", "2", "4 to 512")]:
        with pytest.raises(_errors.ConfigError, match=message):
            espirit.Settings.from_config({"parameters": {key: value}})


def test_calibration_region_is_the_fully_sampled_centre():
    measured = np.zeros((1, 64), dtype=bool)
    measured[0, ::2] = True
    measured[0, 20:44] = True                    # 24 ACS lines around line 32
    assert espirit.calibration_size(measured, (1, 2), 128, 24) == (24, 24, 1)
    assert espirit.calibration_size(measured, (1, 2), 128, 16) == (16, 16, 1)
    volume = np.zeros((16, 64), dtype=bool)
    volume[4:12, 24:40] = True
    assert espirit.calibration_size(volume, (2, 2), 64, 24) == (16, 16, 8)
    with pytest.raises(ValueError, match="ESPIRiT needs ACS lines"):
        espirit.calibration_size(np.tile(np.arange(64) % 2 == 0, (1, 1)), (1, 2), 128, 24)


def test_no_calibration_lines_is_an_error(tmp_path):
    path = tmp_path / "nocal.h5"
    generate(path, "-m", "64", "--accel", "2")
    acqs, header = read_session(path)
    with pytest.raises(ValueError, match="ESPIRiT needs ACS lines"):
        run_module(espirit, acqs, header)


@pytest.fixture(scope="module")
def espirit_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("espirit_server")
    srv = ServerProcess(tmp, "--dependency-folder", str(tmp / "deps"))
    yield srv
    assert srv.stop() == 0


@pytest.mark.parametrize("accel", ["2", "3"], ids=["R2", "R3"])
def test_espirit_on_generated_data_over_a_socket(espirit_server, tmp_path, accel):
    path = tmp_path / "gen.h5"
    truth = generate(path, "-m", "128", "-n", NOISE, "--accel", accel, "--acs", "24")
    mask, reference = truth["phantom"][0] > 0, rss(truth["coil_images"][0])
    ours, heads = reconstruct(espirit_server.port, path, "espirit", tmp_path)
    theirs, _ = reconstruct(espirit_server.port, path, "simplefft", tmp_path)
    error, aliased = nrmse(ours[0, 0][mask], reference[mask]), nrmse(theirs[0, 0][mask], reference[mask])
    print(f"R {accel}, 24 ACS: espirit {error:.4f}, simplefft {aliased:.4f}")
    assert error <= LIMIT and aliased > 0.2, (error, aliased)
    assert len(heads) == 1 and tuple(heads[0]["matrix_size"]) == (128, 128, 1)
    assert (heads[0]["image_series_index"], heads[0]["image_index"]) == (0, 1)


@pytest.mark.parametrize("accel", [2, 3], ids=["R2", "R3"])
def test_espirit_on_bart_data_over_a_socket(espirit_server, bart_phantom, tmp_path, accel):  # noqa: F811
    kspace, reference, mask = bart_phantom
    path = bart_dataset(tmp_path / "bart.h5", kspace, accel, 24)
    ours, _ = reconstruct(espirit_server.port, path, "espirit", tmp_path)
    theirs, _ = reconstruct(espirit_server.port, path, "simplefft", tmp_path)
    error, plain = nrmse(ours[0, 0][mask], reference[mask]), nrmse(theirs[0, 0][mask], reference[mask])
    print(f"BART R {accel}, 24 ACS: espirit {error:.4f}, simplefft {plain:.4f}")
    assert error <= LIMIT and plain > 0.2, (error, plain)


def test_slices_are_one_batch_with_grappas_geometry(espirit_server, tmp_path):
    path = tmp_path / "slices.h5"
    truth = generate(path, "-m", "64", "-n", NOISE, "--slices", "3", "--accel", "2", "--acs", "24")
    images, heads = reconstruct(espirit_server.port, path, "espirit", tmp_path)
    assert [tuple(h["position"]) for h in heads] == [(0.0, 0.0, -5.0), (0.0, 0.0, 0.0), (0.0, 0.0, 5.0)]
    assert [h["slice"] for h in heads] == [0, 1, 2] and [h["image_index"] for h in heads] == [1, 2, 3]
    assert images.max() == 4095  # one peak for the session
    for s in range(3):
        mask = truth["phantom"][s] > 0
        assert nrmse(images[s, 0][mask], rss(truth["coil_images"][s])[mask]) <= LIMIT
