"""Tests of tools/generate_spiral_dataset.py and modules/_bart.py: real files, value checks.

The k-space checks are independent of the project's reconstruction code: sigpy's adjoint NUFFT
grids the data, and the result is compared with the stored truth (BART's or the own phantom
image, sampled on the pixel grid) over the spiral's circular FOV, both sides band-limited by the
same Hann window (the data's sharp-edged phantom is otherwise not comparable pixel by pixel).
"""
import hashlib
import importlib.util
import shutil
import sys
from pathlib import Path

import h5py
import ismrmrd
import ismrmrd.xsd
import numpy as np
import pytest
import scipy.io

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "modules"))

import _bart  # noqa: E402
import _spiral  # noqa: E402
from connection import MrdError  # noqa: E402

TOOL = REPO / "tools" / "generate_spiral_dataset.py"
_spec = importlib.util.spec_from_file_location("generate_spiral_dataset", TOOL)
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

HAVE_BART = shutil.which("bart") is not None
needs_bart = pytest.mark.skipif(not HAVE_BART, reason="bart not installed")

GAMMA = 42.577478518e6
# m = 10 * 19.2 / 3 = 64; golden angle over 8 unique arms; 2 slices of 20 arms.
FOV_CM, RES_MM, NI, COILS, ARMS, SLICES, TR_MS = 19.2, 3.0, 8, 3, 20, 2, 5.0
M = 64
SMALL = ["--fov-cm", str(FOV_CM), "--res-mm", str(RES_MM), "--interleaves", str(NI), "--golden-angle",
         "--coils", str(COILS), "--arms", str(ARMS), "--slices", str(SLICES), "--tr-ms", str(TR_MS)]


def generate(tmp_path, name, *args):
    path = tmp_path / f"{name}.h5"
    assert gen.main(["-o", str(path), "--metafile-dir", str(tmp_path / "seq_meta"), *args]) == 0
    return path


def read_all(path):
    """Header and acquisitions through ismrmrd.Dataset (independent of mrdfile)."""
    dset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        xml = dset.read_xml_header()
        acqs = [dset.read_acquisition(i) for i in range(dset.number_of_acquisitions())]
    finally:
        dset.close()
    return ismrmrd.xsd.CreateFromDocument(xml), acqs


def nrmse(recon, truth):
    """NRMSE of ``recon`` against ``truth`` after least-squares scaling of ``recon``."""
    scale = np.vdot(recon, truth).real / np.vdot(recon, recon).real
    return float(np.linalg.norm(scale * recon - truth) / np.linalg.norm(truth))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spiral")
    path = generate(tmp, "small", *SMALL, "--noise", "0.01")
    hdr, acqs = read_all(path)
    return tmp, path, hdr, acqs


def test_header_parses_with_hash_as_second_user_string(small):
    tmp, _, hdr, _ = small
    strings = hdr.userParameters.userParameterString
    assert strings[0].name == "SequenceName"
    assert strings[1].name == "tSequenceVariant"
    seq_hash = strings[1].value
    assert len(seq_hash) == 32 and int(seq_hash, 16) >= 0
    assert (tmp / "seq_meta" / f"{seq_hash}.mat").is_file()
    assert _spiral.sequence_hash(hdr) == seq_hash
    assert hdr.acquisitionSystemInformation.receiverChannels == COILS
    enc = hdr.encoding[0]
    assert enc.trajectory.value == "spiral"
    assert (enc.reconSpace.matrixSize.x, enc.reconSpace.matrixSize.y) == (M, M)
    assert enc.reconSpace.fieldOfView_mm.x == pytest.approx(10 * FOV_CM)
    assert enc.encodedSpace.matrixSize.x == M
    assert (enc.encodingLimits.slice.minimum, enc.encodingLimits.slice.maximum) == (0, SLICES - 1)
    assert enc.encodingLimits.kspace_encoding_step_1.maximum == NI - 1
    info = hdr.measurementInformation
    assert info.measurementID == "XXX_12345" and int(info.measurementID.split("_")[-1]) == 12345
    assert info.patientPosition.value == "HFS" and info.protocolName == "spiral_phantom"
    assert hdr.sequenceParameters.TR[0] == pytest.approx(TR_MS)
    assert hdr.experimentalConditions.H1resonanceFrequency_Hz > 0


def test_metafile_has_the_documented_variables_and_trajectory(small):
    tmp, _, hdr, acqs = small
    seq_hash = hdr.userParameters.userParameterString[1].value
    mat = scipy.io.loadmat(str(tmp / "seq_meta" / f"{seq_hash}.mat"))
    kx, ky, kz, w = mat["kx"], mat["ky"], mat["kz"], mat["w"]
    ns = acqs[0].data.shape[1] - 10
    assert kx.shape == ky.shape == kz.shape == (ns, NI) and not kz.any()
    assert w.shape == (1, ns) and w.max() == pytest.approx(1.0) and w.min() >= 0
    assert hashlib.md5(kx.tobytes() + ky.tobytes()).hexdigest() == seq_hash
    param = mat["param"]
    value = lambda name: param[name][0, 0].ravel()[0]  # noqa: E731
    assert value("fov") == pytest.approx(FOV_CM) and value("spatial_resolution") == pytest.approx(RES_MM)
    assert value("interleaves") == NI and value("repetitions") == NI
    assert value("ga_rotation") == pytest.approx(222.4969) and value("arm_ordering") == "ga"
    assert value("pre_discard") == 10 and value("dt") == pytest.approx(2e-6)
    assert list(param["matrix_size"][0, 0].ravel()) == [M, M]
    k = kx + 1j * ky
    assert abs(k[0]).max() == 0.0  # first kept sample at k = 0
    assert np.abs(k).max() == pytest.approx(1 / (2 * RES_MM * 1e-3), rel=1e-9)
    # Arm i is arm 0 rotated by (i * GA) mod 360.
    angles = np.rad2deg(np.angle(k[ns // 2] / k[ns // 2, 0])) % 360
    np.testing.assert_allclose(angles, (np.arange(NI) * 222.4969) % 360, atol=1e-6)
    # Gradient and slew limits of the whole readout (pre-discard samples at k = 0 included).
    full = np.concatenate([np.zeros(10), k[:, 0]])
    grad = np.diff(full) / (GAMMA * 2e-6)
    slew = np.diff(grad) / 2e-6
    assert np.abs(grad).max() <= 24e-3 * 1.001 and np.abs(grad).max() > 23e-3
    assert np.abs(slew).max() <= 150 * 1.01


def test_acquisitions_counters_flags_and_dc(small):
    _, path, _, acqs = small
    assert len(acqs) == 5 + ARMS * SLICES
    noise, arms = acqs[:5], acqs[5:]
    assert all(a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) and a.scan_counter == 0 for a in noise)
    assert not any(a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) for a in arms)
    assert [a.scan_counter for a in arms] == list(range(1, ARMS * SLICES + 1))
    assert [a.idx.slice for a in arms] == [s for s in range(SLICES) for _ in range(ARMS)]
    assert [a.idx.kspace_encode_step_1 for a in arms] == [i % NI for _ in range(SLICES) for i in range(ARMS)]
    stamps = np.array([a.acquisition_time_stamp for a in arms])
    assert set(np.diff(stamps)) == {round(TR_MS / 2.5)}
    ns_total = arms[0].data.shape[1]
    for a in acqs:
        assert a.data.shape == (COILS, ns_total) and a.data.dtype == np.complex64
        assert a.sample_time_us == pytest.approx(2.0) and a.number_of_samples == ns_total
        np.testing.assert_allclose(np.array([a.read_dir, a.phase_dir, a.slice_dir]), np.eye(3))
    assert arms[0].is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE)
    assert arms[-1].is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    # Noise readouts: E|n|^2 = (noise * m)^2.
    power = np.mean(np.abs(np.stack([a.data for a in noise])) ** 2)
    assert power == pytest.approx((0.01 * M) ** 2, rel=0.1)
    # Pre-discard samples sit at k = 0: their value is the sum of each coil image (noise aside).
    with h5py.File(path, "r") as f:
        coil_sums = f["dataset/truth_coil_images"][...].sum(axis=(1, 2))
    dc = np.stack([a.data[:, :11].mean(axis=1) for a in arms])
    np.testing.assert_allclose(dc.mean(axis=0), coil_sums, rtol=0.02, atol=0.02 * np.abs(coil_sums).max())


def test_truth_arrays_shapes_and_coil_normalisation(small):
    _, path, _, _ = small
    with h5py.File(path, "r") as f:
        grp = f["dataset"]
        image, maps = grp["truth_image"][...], grp["coil_maps"][...]
        coil_images = grp["truth_coil_images"][...]
        assert image.shape == (M, M) and coil_images.shape == maps.shape == (COILS, M, M)
        assert grp["truth_shift_px"].shape == (ARMS * SLICES, 2) and not grp["truth_shift_px"][...].any()
        assert grp["truth_coordinates"].shape[::2] == (NI, 2)
    assert np.abs(image).max() == pytest.approx(1.0)
    assert np.sqrt((np.abs(maps) ** 2).sum(axis=0)).max() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(coil_images, maps * image, rtol=1e-5, atol=1e-6)


def _gridded_nrmse(path, coord=None):
    """sigpy adjoint NUFFT of the DCF- and Hann-weighted first Ni arms, RSS, vs the band-limited truth
    RSS inside the circular FOV; also the NRMSE against the truth flipped along axis 0."""
    sigpy = pytest.importorskip("sigpy")
    _, acqs = read_all(path)
    with h5py.File(path, "r") as f:
        grp = f["dataset"]
        meta = _spiral.load_metafile(grp.attrs["metafile"])
        truth = grp["truth_coil_images"][...]
    m = truth.shape[-1]
    if coord is None:
        coord = _spiral.grid_coordinates(meta.kx, meta.ky, m)
    data = np.stack([a.data[:, 10:] for a in acqs[5:5 + meta.interleaves]], axis=1)  # (nc, Ni, Ns)
    hann = gen.kspace_window(np.hypot(coord[..., 0], coord[..., 1]) / (m / 2), "hann")
    images = sigpy.nufft_adjoint(data * meta.w * hann, coord, oshape=truth.shape)
    rss = np.sqrt((np.abs(images) ** 2).sum(axis=0))
    reference = np.sqrt((np.abs(gen.bandlimit(truth, "hann")) ** 2).sum(axis=0))
    x = (np.arange(m) - m // 2) / m
    fov = np.hypot(x[:, None], x[None, :]) <= 0.5
    return nrmse(rss[fov], reference[fov]), nrmse(rss[fov], reference[::-1][fov])


@pytest.mark.parametrize("phantom", ["bart", "own"])
def test_kspace_matches_truth_through_an_independent_nufft(tmp_path, phantom):
    if phantom == "bart" and not HAVE_BART:
        pytest.skip("bart not installed")
    args = ["--fov-cm", str(FOV_CM), "--res-mm", str(RES_MM), "--interleaves", "12", "--arms", "12",
            "--coils", "4"] + (["--bart"] if phantom == "bart" else [])
    path = generate(tmp_path, phantom, *args)
    error, flipped = _gridded_nrmse(path)
    assert error <= 0.15
    assert flipped > 2 * error  # orientation: axis 0 of the truth is coordinate 0


def test_motion_shift_follows_the_formula_and_moves_the_kspace(tmp_path):
    args = ["--fov-cm", str(FOV_CM), "--res-mm", str(RES_MM), "--interleaves", str(NI), "--coils", "2",
            "--arms", "16", "--tr-ms", str(TR_MS)]
    static = generate(tmp_path, "static", *args)
    moving = generate(tmp_path, "moving", *args, "--motion-px", "3", "--motion-hz", "50")
    with h5py.File(moving, "r") as f:
        shift = f["dataset/truth_shift_px"][...]
        coord = f["dataset/truth_coordinates"][...]
    t = np.arange(16) * TR_MS * 1e-3
    np.testing.assert_allclose(shift[:, 0], 3 * np.sin(2 * np.pi * 50 * t), atol=1e-12)
    assert not shift[:, 1].any()
    _, acq_static = read_all(static)
    _, acq_moving = read_all(moving)
    for i in (1, 2, 7, 13):
        phase = np.exp(-2j * np.pi * coord[i % NI, :, 0] * shift[i, 0] / M)
        np.testing.assert_allclose(acq_moving[5 + i].data[:, 10:], acq_static[5 + i].data[:, 10:] * phase,
                                   rtol=1e-4, atol=1e-4 * np.abs(acq_static[5 + i].data).max())
        np.testing.assert_array_equal(acq_moving[5 + i].data[:, :10], acq_static[5 + i].data[:, :10])
    # truth_frame: module orientation flip_x(truth)^T, moved by the frame's mean shift.
    with h5py.File(moving, "r") as f:
        truth = f["dataset/truth_image"][...]
    np.testing.assert_array_equal(gen.truth_frame(moving, 0, 1), truth[::-1].T)
    # Arm 1 (t = 5 ms, a quarter period at 50 Hz) is moved by exactly 3 pixels along axis 0.
    np.testing.assert_allclose(gen.truth_frame(moving, 1, 1), np.roll(truth, 3, axis=0)[::-1].T, atol=1e-4)
    # Arms 1..3 (+3, 0, -3 px) average to no shift.
    np.testing.assert_allclose(gen.truth_frame(moving, 1, 3), truth[::-1].T, atol=1e-4)
    with pytest.raises(ValueError):
        gen.truth_frame(moving, 10, 7)


def test_girf_option_simulates_on_the_predicted_trajectory(tmp_path):
    pytest.importorskip("sigpy")
    # A synthetic GIRF: Gaussian low-pass (sigma 8 kHz) on all three axes, DC at row 1900.
    freq = (np.arange(3800) - 1900) / (3800 * 10e-6)
    girf = np.repeat(np.exp(-0.5 * (freq / 8e3) ** 2)[:, None], 3, axis=1).astype(np.complex64)
    girf_file = tmp_path / "girf.mat"
    scipy.io.savemat(str(girf_file), {"GIRF": girf})
    args = ["--fov-cm", str(FOV_CM), "--res-mm", str(RES_MM), "--interleaves", "12", "--arms", "12",
            "--coils", "4"]
    path = generate(tmp_path, "girf", *args, "--girf", str(girf_file))
    with h5py.File(path, "r") as f:
        coord = f["dataset/truth_coordinates"][...]
        meta = _spiral.load_metafile(f["dataset"].attrs["metafile"])
    nominal = _spiral.grid_coordinates(meta.kx, meta.ky, M)
    assert np.abs(coord - nominal).max() > 0.2  # the metafile keeps the nominal trajectory
    rot = _spiral.rotation_matrix((1, 0, 0), (0, 1, 0), (0, 0, 1), "HFS")
    np.testing.assert_allclose(coord, _spiral.girf_coordinates(meta.kx, meta.ky, girf, rot, 2e-6, M),
                               atol=1e-5)
    with_girf, _ = _gridded_nrmse(path, coord)
    without, _ = _gridded_nrmse(path, nominal)
    assert with_girf <= 0.2 and without > 1.5 * with_girf


def test_spiral_design_limits_and_samples_option():
    arm = gen.spiral_arm(24, 2, 16, 2e-6)
    assert arm[0] == 0 and abs(arm[-1]) == pytest.approx(250.0)
    slow = gen.spiral_arm(24, 2, 16, 2e-6, samples=arm.size + 300)
    assert slow.size == arm.size + 300 and abs(slow[-1]) == pytest.approx(250.0)
    for k in (arm, slow):
        grad = np.diff(k) / (GAMMA * 2e-6)
        assert np.abs(grad).max() <= 24e-3 * 1.001
        assert np.abs(np.diff(grad) / 2e-6).max() <= 150 * 1.01
    with pytest.raises(ValueError, match="minimum"):
        gen.spiral_arm(24, 2, 16, 2e-6, samples=arm.size - 5)


def test_main_rejects_bad_arguments(tmp_path):
    out = str(tmp_path / "x.h5")
    assert gen.main(["-o", out, "--metafile-dir", str(tmp_path), "--samples", "10"]) == 1
    with pytest.raises(SystemExit):
        gen.main(["-o", out, "--fov-cm", "25", "--res-mm", "3"])  # 10 * 25 / 3 is not an integer


def test_cfl_files_are_fortran_ordered_complex64(tmp_path):
    array = (np.arange(24) + 1j * np.arange(24)[::-1]).reshape(2, 3, 4)
    _bart.write_cfl(tmp_path / "a", array)
    raw = np.fromfile(tmp_path / "a.cfl", dtype=np.complex64)
    assert raw[0] == array[0, 0, 0] and raw[1] == array[1, 0, 0] and raw[2] == array[0, 1, 0]
    lines = (tmp_path / "a.hdr").read_text().splitlines()
    assert lines[0] == "# Dimensions" and lines[1].split() == ["2", "3", "4"] + ["1"] * 13
    np.testing.assert_array_equal(_bart.read_cfl(tmp_path / "a"), array.astype(np.complex64))


@needs_bart
def test_run_bart_round_trips_through_bart_scale():
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((5, 7, 3)) + 1j * rng.standard_normal((5, 7, 3))).astype(np.complex64)
    out = _bart.run_bart(["scale", "2", "x", "y"], {"x": array})
    assert list(out) == ["y"]
    np.testing.assert_allclose(out["y"], 2 * array, rtol=1e-6)


@needs_bart
def test_run_bart_raises_bart_error_with_stderr():
    with pytest.raises(_bart.BartError) as info:
        _bart.run_bart(["no_such_tool", "x"], {"x": np.zeros(3)})
    assert isinstance(info.value, MrdError)
    assert info.value.returncode != 0 and info.value.stderr.strip()
    with pytest.raises(_bart.BartError) as info:
        _bart.run_bart(["scale", "2", "missing", "y"])  # input file absent
    assert info.value.returncode != 0


def test_run_bart_reports_a_missing_binary(monkeypatch):
    monkeypatch.setenv("BART_BINARY", "/nonexistent/bart")
    with pytest.raises(_bart.BartError) as info:
        _bart.run_bart(["version"])
    assert info.value.returncode == 127
