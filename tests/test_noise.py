"""modules/_noise.py: coil noise covariance, pre-whitening (Gadgetron's conventions), the bandwidth scale,
the noise dependency store; over real sockets: pre-whitening lowers the error on correlated-noise data
(grappa and simplefft with ``prewhiten``), and a noise session followed by an image session naming it gives
the images of one session carrying its own noise scans."""
import sys

import h5py
import ismrmrd
import ismrmrd.xsd
import numpy as np
import pytest
import scipy.linalg

from conftest import REPO, ServerProcess, images_of, nrmse, rss, run_module_client

sys.path.insert(0, str(REPO / "modules"))
import _noise  # noqa: E402
from tools import generate_cartesian_shepp_logan_dataset as gen  # noqa: E402


COILS = 8


def random_covariance(rng, n=COILS):
    a = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    return a @ a.conj().T / n + 0.1 * np.eye(n)


def noise_with(rng, covariance, samples):
    lower = np.linalg.cholesky(covariance)
    white = (rng.standard_normal((covariance.shape[0], samples)) + 1j * rng.standard_normal((covariance.shape[0],
                                                                                             samples))) / np.sqrt(2)
    return lower @ white


def header(**fields):
    """A parsed header: a measurement ID, Noise dependencies, a receiver noise bandwidth."""
    info = ismrmrd.xsd.measurementInformationType(
        measurementID=fields.get("measurement_id"), patientPosition=ismrmrd.xsd.patientPositionType.HFS,
        measurementDependency=[ismrmrd.xsd.measurementDependencyType(dependencyType=t, measurementID=i)
                               for t, i in fields.get("dependencies", ())])
    system = ismrmrd.xsd.acquisitionSystemInformationType(
        relativeReceiverNoiseBandwidth=fields.get("bandwidth"), receiverChannels=COILS)
    return ismrmrd.xsd.ismrmrdHeader(
        measurementInformation=info, acquisitionSystemInformation=system,
        experimentalConditions=ismrmrd.xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000))


def noise_readout(data, dwell=5.0):
    acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data, dtype=np.complex64))
    acq.sample_time_us = dwell
    acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    return acq


# ------------------------------------------------------------------------------------------- conventions

def test_accumulated_covariance_is_the_sample_covariance_over_n_minus_1():
    rng = np.random.default_rng(0)
    readouts = [noise_with(rng, random_covariance(rng), 64) for _ in range(3)]
    acc = _noise.NoiseAccumulator()
    for r in readouts:
        acc.add(r, 2.5)
    cov = acc.covariance("M")
    stacked = np.concatenate(readouts, axis=1)
    np.testing.assert_allclose(cov.matrix, stacked @ stacked.conj().T / (192 - 1), rtol=1e-10)
    np.testing.assert_allclose(_noise.covariance_of(np.stack(readouts)), cov.matrix, rtol=1e-10)
    assert (cov.samples, cov.dwell_time_us, cov.measurement_id, cov.channels) == (192, 2.5, "M", COILS)
    with pytest.raises(ValueError, match="channels"):
        acc.add(np.zeros((4, 8)))


def test_prewhitener_is_the_inverse_cholesky_factor_and_whitens_to_identity():
    rng = np.random.default_rng(1)
    cov = random_covariance(rng)
    w = _noise.prewhitener(cov)
    np.testing.assert_allclose(w @ cov @ w.conj().T, np.eye(COILS), atol=1e-10)  # W C W^H = I
    upper = scipy.linalg.cholesky(cov, lower=False)                               # C = U^H U
    np.testing.assert_allclose(w, np.linalg.inv(upper).conj().T, atol=1e-10)      # W = (U^-1)^H = L^-1
    assert np.allclose(np.triu(w, 1), 0)                                          # lower triangular
    # Gadgetron's layout: D [samples, channels] times inv(upper Cholesky factor of D^H D / (N-1)).
    noise = noise_with(rng, cov, 20000)
    d = noise.T
    m = d.conj().T @ d / (d.shape[0] - 1)
    gadgetron = d @ np.linalg.inv(scipy.linalg.cholesky(m, lower=False))
    ours = _noise.prewhitener(_noise.covariance_of(noise)) @ noise
    np.testing.assert_allclose(gadgetron, ours.T, atol=1e-8)
    np.testing.assert_allclose(_noise.covariance_of(ours), np.eye(COILS), atol=1e-10)  # the noise scans: I
    fresh = _noise.prewhitener(cov) @ noise_with(rng, cov, 20000)  # other noise of that covariance: about I
    np.testing.assert_allclose(_noise.covariance_of(fresh), np.eye(COILS), atol=0.05)
    scaled = _noise.prewhitener(cov, 1.5)
    np.testing.assert_allclose(scaled @ cov @ scaled.conj().T, 2.25 * np.eye(COILS), atol=1e-10)
    with pytest.raises(np.linalg.LinAlgError):
        _noise.prewhitener(np.zeros((2, 2)))


def test_bandwidth_scale_and_receiver_noise_bandwidth():
    assert _noise.bandwidth_scale(5.0, 5.0, 0.793) == pytest.approx(np.sqrt(2 * 0.793))
    assert _noise.bandwidth_scale(10.0, 2.5, 0.5) == pytest.approx(np.sqrt(2 * 4 * 0.5))
    assert _noise.bandwidth_scale(0.0, 5.0, 0.793) == 1.0 and _noise.bandwidth_scale(5.0, 0.0, 0.793) == 1.0
    assert _noise.receiver_noise_bandwidth(header(bandwidth=0.6)) == 0.6
    assert _noise.receiver_noise_bandwidth(header()) == 0.793
    assert _noise.receiver_noise_bandwidth("<not parsed/>") == 0.793


def test_noise_dependency_type_is_case_insensitive_and_other_types_are_ignored():
    hdr = header(measurement_id="IMG_1", dependencies=[("SenMap", "S_1"), ("nOiSe", "N_1"), ("Noise", "N_2")])
    assert _noise.noise_dependency(hdr) == "N_1"
    assert _noise.measurement_id(hdr) == "IMG_1"
    assert _noise.noise_dependency(header(dependencies=[("SenMap", "S_1")])) is None
    assert _noise.noise_dependency("raw xml") is None and _noise.measurement_id("raw xml") is None


# ------------------------------------------------------------------------------------------- store

def test_store_round_trip_odd_ids_and_bad_files(tmp_path):
    store = _noise.DependencyStore(tmp_path / "deps")
    rng = np.random.default_rng(2)
    cov = _noise.NoiseCovariance(random_covariance(rng), 4096, 5.0, "45/67:../x")
    path = store.save(cov)
    assert path.parent == tmp_path / "deps" and path.name == "NoiseCovariance_45_67_.._x.npz"
    back = store.load("45/67:../x")
    np.testing.assert_array_equal(back.matrix, cov.matrix)
    assert (back.samples, back.dwell_time_us, back.measurement_id) == (4096, 5.0, "45/67:../x")
    assert store.load("45_67_.._x") is None   # same file name, another ID
    assert store.load("absent") is None
    store.path("broken").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="not a noise covariance"):
        store.load("broken")
    assert [p.name for p in (tmp_path / "deps").iterdir() if p.name.startswith(".tmp")] == []


def texts_of(adjust):
    got = []
    adjust.notify = lambda level, text: got.append(f"{level.strip()} {text}")
    return got


def test_session_noise_wins_then_dependency_then_warning(tmp_path):
    rng = np.random.default_rng(3)
    own, stored = random_covariance(rng), random_covariance(rng)
    _noise.DependencyStore(tmp_path).save(_noise.NoiseCovariance(stored, 1000, 5.0, "N_1"))
    hdr = header(dependencies=[("Noise", "N_1")])

    with_own = _noise.NoiseAdjust(hdr, tmp_path)
    with_own.add_noise(noise_readout(noise_with(rng, own, 5000)))
    w = with_own.whitener(5.0)
    assert with_own.source == "session"
    np.testing.assert_allclose(w, _noise.prewhitener(with_own.noise.covariance().matrix, np.sqrt(2 * 0.793)),
                               rtol=1e-5)

    from_store = _noise.NoiseAdjust(hdr, tmp_path)
    texts = texts_of(from_store)
    w = from_store.whitener(10.0)  # twice the noise dwell time: scale sqrt(2 * 2 * 0.793)
    assert from_store.source == "dependency N_1" and texts == []
    np.testing.assert_allclose(w, _noise.prewhitener(stored, np.sqrt(4 * 0.793)), rtol=1e-5)

    missing = _noise.NoiseAdjust(header(dependencies=[("Noise", "N_9")]), tmp_path)
    texts = texts_of(missing)
    assert missing.whitener(5.0) is None
    assert texts == [f"WARNING Noise dependency 'N_9' not found in {tmp_path}: no pre-whitening"]
    data = np.ones((COILS, 4), np.complex64)
    assert missing.whiten(data, 5.0) is data

    neither = _noise.NoiseAdjust(header(), tmp_path)
    texts = texts_of(neither)
    assert neither.whitener(5.0) is None and texts == []


def test_channel_mismatch_is_one_warning_and_the_data_are_left_alone(tmp_path):
    rng = np.random.default_rng(4)
    adjust = _noise.NoiseAdjust(header(), tmp_path)
    texts = texts_of(adjust)
    adjust.add_noise(noise_readout(noise_with(rng, random_covariance(rng), 500)))
    data = np.ones((4, 16), np.complex64)
    assert adjust.whiten(data, 5.0) is data and adjust.whiten(data, 5.0) is data
    assert texts == ["WARNING noise covariance has 8 channels, the data 4: readouts not pre-whitened"]


def test_noise_only_session_stores_its_covariance_under_its_measurement_id(tmp_path):
    rng = np.random.default_rng(5)
    adjust = _noise.NoiseAdjust(header(measurement_id="NOISE_5"), tmp_path)
    texts = texts_of(adjust)
    adjust.add_noise(noise_readout(noise_with(rng, random_covariance(rng), 300), dwell=2.5))
    path = adjust.finish()
    assert path == tmp_path / "NoiseCovariance_NOISE_5.npz" and len(texts) == 1
    assert texts[0].startswith("INFO Noise covariance of measurement 'NOISE_5' stored (8 channels, 300 samples)")
    stored = _noise.DependencyStore(tmp_path).load("NOISE_5")
    np.testing.assert_allclose(stored.matrix, adjust.noise.covariance().matrix)
    assert stored.dwell_time_us == 2.5

    anonymous = _noise.NoiseAdjust(header(), tmp_path / "other")
    texts = texts_of(anonymous)
    anonymous.add_noise(noise_readout(noise_with(rng, random_covariance(rng), 300)))
    assert anonymous.finish() is None and not (tmp_path / "other").exists()
    assert texts == ["WARNING noise-only session without measurementID: its noise covariance is not stored"]

    imaging = _noise.NoiseAdjust(header(measurement_id="IMG"), tmp_path / "img")
    imaging.add_noise(noise_readout(noise_with(rng, random_covariance(rng), 300)))
    imaging.whiten(np.ones((COILS, 4), np.complex64), 5.0)
    assert imaging.finish() is None and not (tmp_path / "img").exists()


class FakeConnection:
    """What PrewhitenedConnection and _images.serve use of a connection."""

    def __init__(self, items, folder):
        self.items, self.dependencyFolder, self.texts, self.images = items, str(folder), [], []

    def __iter__(self):
        yield from self.items
        yield None

    def send_logging(self, level, text):
        self.texts.append(f"{level.strip()} {text}")

    def send_image(self, image):
        self.images.append(image)


def test_prewhitened_connection_whitens_every_readout_in_place_and_delegates(tmp_path):
    rng = np.random.default_rng(6)
    cov = random_covariance(rng)
    noise = [noise_readout(noise_with(rng, cov, 256)) for _ in range(4)]
    data = noise_with(rng, cov, 32).astype(np.complex64)
    imaging = ismrmrd.Acquisition.from_array(data.copy())
    imaging.sample_time_us = 5.0
    conn = FakeConnection(noise + [imaging], tmp_path)
    wrapped = _noise.PrewhitenedConnection(conn, header())
    items = list(wrapped)
    assert items[-1] is None and items[:4] == noise
    acc = _noise.NoiseAccumulator()
    for n in noise:
        acc.add(n.data)
    expected = _noise.prewhitener(acc.covariance().matrix, np.sqrt(2 * 0.793)) @ data
    np.testing.assert_allclose(items[4].data, expected, rtol=1e-4, atol=1e-5)
    wrapped.send_image("x")
    assert conn.images == ["x"] and wrapped.dependencyFolder == str(tmp_path)


# ------------------------------------------------------------------------------------------- over sockets

@pytest.fixture(scope="module")
def noise_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("noise_server")
    srv = ServerProcess(tmp, "--dependency-folder", str(tmp / "deps"))
    srv.deps = tmp / "deps"
    yield srv
    assert srv.stop() == 0


def reconstruct(port, path, module, cwd, ok=True, **parameters):
    """``client.py -c <module>`` on ``path``; with ``parameters``, from a folder of its own that holds
    ``<module>.json`` with them (the client sends the JSON of the module's name from its working directory).
    Returns the pixels ``[N, y, x]`` (None unless ``ok``) and the client's output."""
    out, result = run_module_client(port, path, module, cwd, parameters)
    log = result.stdout + result.stderr
    assert "Unknown config" not in log and ("JSON config: none" in log) != bool(parameters), log
    if not ok:
        return None, log
    assert result.returncode == 0, log
    return images_of(out, "g")[0][:, 0, 0].astype(float), log


@pytest.fixture(scope="module")
def correlated(tmp_path_factory):
    """R = 3, 24 ACS lines, 128 x 128, 8 coils whose noise is correlated (0.7) with a 4x spread of levels."""
    path = tmp_path_factory.mktemp("corr") / "corr.h5"
    assert gen.main(["-o", str(path), "-m", "128", "-c", str(COILS), "-n", "0.003", "--accel", "3", "--acs", "24",
                     "--coil-correlation", "0.7", "--noise-spread", "4", "--seed", "11"]) == 0
    with h5py.File(path, "r") as f:
        coil_images, phantom = f["dataset/coil_images"][0], f["dataset/phantom"][0]
        covariance = f["dataset/noise_covariance"][...]
    return path, coil_images, phantom > 0, covariance


def test_prewhitening_lowers_the_error_on_correlated_noise(noise_server, correlated, tmp_path):
    """Each reconstruction against its own noise-free image: RSS of the coil images, pre-whitened with the
    true covariance (the whitened RSS weights every coil by its SNR) or not."""
    path, coil_images, mask, covariance = correlated
    white_ref = rss(np.tensordot(_noise.prewhitener(covariance), coil_images, axes=1))[mask]
    plain_ref = rss(coil_images)[mask]
    on, log = reconstruct(noise_server.port, path, "grappa", tmp_path)
    off, _ = reconstruct(noise_server.port, path, "grappa", tmp_path, prewhiten="false")
    e_on, e_off = nrmse(on[0][mask], white_ref), nrmse(off[0][mask], plain_ref)
    print(f"grappa R = 3 pre-whitened {e_on:.4f}, not {e_off:.4f}")
    assert e_on < 0.8 * e_off and e_on < 0.06, (e_on, e_off)
    # simplefft: the same data fully sampled in the centre only; pre-whitening on request, off by default
    full = path.with_name("corr_full.h5")
    assert gen.main(["-o", str(full), "-m", "128", "-c", str(COILS), "-n", "0.003", "--coil-correlation", "0.7",
                     "--noise-spread", "4", "--seed", "12"]) == 0
    s_on, _ = reconstruct(noise_server.port, full, "simplefft", tmp_path, prewhiten="true")
    s_off, _ = reconstruct(noise_server.port, full, "simplefft", tmp_path)
    e_on, e_off = nrmse(s_on[0][mask], white_ref), nrmse(s_off[0][mask], plain_ref)
    print(f"simplefft pre-whitened {e_on:.4f}, not {e_off:.4f}")
    assert e_on < 0.8 * e_off, (e_on, e_off)


def test_noise_dependency_pair_gives_the_images_of_one_session_with_its_own_noise(noise_server, tmp_path):
    common = ["-m", "128", "-c", str(COILS), "-n", "0.003", "--coil-correlation", "0.5", "--noise-spread", "3",
              "--seed", "21", "--accel", "3", "--acs", "24"]
    together, noise_only, image_only = (tmp_path / f"{n}.h5" for n in ("together", "noise", "image"))
    assert gen.main(["-o", str(together)] + common) == 0
    assert gen.main(["-o", str(noise_only), "--noise-only", "--measurement-id", "NOISE_21"] + common) == 0
    assert gen.main(["-o", str(image_only), "--no-noise-readouts", "--noise-dependency", "NOISE_21"] + common) == 0
    _, log = reconstruct(noise_server.port, noise_only, "grappa", tmp_path, ok=False)  # no image: client exit 1
    assert "Noise covariance of measurement 'NOISE_21' stored (8 channels, 8192 samples)" in log
    assert (noise_server.deps / "NoiseCovariance_NOISE_21.npz").is_file()
    reference, _ = reconstruct(noise_server.port, together, "grappa", tmp_path)
    dependent, log = reconstruct(noise_server.port, image_only, "grappa", tmp_path)
    np.testing.assert_array_equal(dependent, reference)
    assert "WARNING" not in log
    # A dependency nobody stored: one WARNING text, the images of a session without pre-whitening.
    missing = tmp_path / "missing.h5"
    assert gen.main(["-o", str(missing), "--no-noise-readouts", "--noise-dependency", "NOISE_NONE"] + common) == 0
    unwhitened, log = reconstruct(noise_server.port, missing, "grappa", tmp_path)
    assert f"WARNING  Noise dependency 'NOISE_NONE' not found in {noise_server.deps}: no pre-whitening" in log
    off, _ = reconstruct(noise_server.port, together, "grappa", tmp_path, prewhiten="false")
    np.testing.assert_array_equal(unwhitened, off)
