"""Tests of modules/_spiral.py: metafile I/O, grid coordinates, Hoge DCF, rotations and the GIRF
prediction against the MATLAB reference vector of GIRF/girf_matlab.mat (docs/spiral.md §2–§4)."""
import sys
from pathlib import Path

import ismrmrd.xsd
import numpy as np
import pytest
import scipy.io

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))
import _spiral  # noqa: E402
from conftest import GIRF_FILE, GIRF_REFERENCE_FILE  # noqa: E402

HASH = "0123456789abcdef0123456789abcdef"


def relative_errors(result, reference):
    """‖diff‖/‖ref‖ over the whole array, and the worst per-arm max|diff|/max|ref| (arms: axis 1)."""
    diff = result - reference
    whole = np.linalg.norm(diff) / np.linalg.norm(reference)
    per_arm = np.abs(diff).max(axis=(0, 2)) / np.abs(reference).max(axis=(0, 2))
    return whole, per_arm.max()


@pytest.fixture(scope="module")
def reference():
    ref = scipy.io.loadmat(str(GIRF_REFERENCE_FILE))
    return {"g_tot": ref["g_tot"], "R": ref["sR"]["R"][0, 0], "dt": float(ref["dt"][0, 0]),
            "tRR": float(ref["tRR"][0, 0]), "g_predicted": ref["g_predicted"],
            "k_predicted": ref["k_predicted"].astype(np.float64)}


@pytest.fixture(scope="module")
def girf():
    return _spiral.load_girf(GIRF_FILE)


def archimedean_spiral(ns=3000, turns=8, kmax=250.0, pre_discard=10, arms=1):
    """k(θ) = kmax·θ/θmax·e^{iθ} at constant angular rate, after ``pre_discard`` samples at k = 0,
    arms rotated by 2π/arms; returns kx, ky (pre_discard + ns, arms)."""
    theta = 2 * np.pi * turns * np.arange(1, ns + 1) / ns
    k = np.concatenate([np.zeros(pre_discard), kmax * theta / theta[-1] * np.exp(1j * theta)])
    k = k[:, None] * np.exp(2j * np.pi * np.arange(arms) / arms)
    return k.real, k.imag


def smooth_gradients(ns=600, arms=3):
    """Logical gradients (ns, arms, 2) mT/m: a few low-frequency cycles under a Hann envelope, ending at 0."""
    t = np.arange(ns) / ns
    env = np.hanning(ns)[:, None]
    phase = 2 * np.pi * np.arange(arms) / arms
    return np.stack([10 * env * np.cos(6 * np.pi * t[:, None] + phase),
                     10 * env * np.sin(6 * np.pi * t[:, None] + phase)], axis=-1)


# --- GIRF prediction against girf_matlab.mat ----------------------------------------------------

def test_girf_file_has_unit_dc_at_row_1900(girf):
    assert girf.shape == (3800, 3)
    np.testing.assert_allclose(girf[1900].real, [0.998, 0.9998, 0.999], atol=1e-3)
    np.testing.assert_allclose(girf[1900].imag, 0, atol=1e-7)


def test_predicted_gradients_match_matlab_reference(reference, girf):
    pred = _spiral.predict_gradients(reference["g_tot"], girf, reference["R"], reference["dt"],
                                     reference["tRR"])
    assert pred.shape == reference["g_predicted"].shape == (1970, 21, 3)
    whole, per_arm = relative_errors(pred, reference["g_predicted"])
    assert whole <= 1e-5 and per_arm <= 1e-5, (whole, per_arm)


def test_predicted_kspace_matches_matlab_reference(reference, girf):
    pred = _spiral.predict_gradients(reference["g_tot"], girf, reference["R"], reference["dt"],
                                     reference["tRR"])
    k = _spiral.predicted_kspace(pred, reference["dt"])
    whole, per_arm = relative_errors(k, reference["k_predicted"])
    assert whole <= 1e-5 and per_arm <= 1e-5, (whole, per_arm)


def test_reference_kspace_needs_the_precise_gyromagnetic_ratio(reference):
    """k_predicted was made with γ̄ = 42.577478… MHz/T; the rounded 42.58 MHz/T would fail 1e-5."""
    cumulative = np.cumsum(reference["g_predicted"], axis=0) * reference["dt"] * 1e-4
    assert relative_errors(cumulative * _spiral.GAMMA_BAR_HZ_PER_T, reference["k_predicted"])[0] < 1e-6
    assert relative_errors(cumulative * 42.58e6, reference["k_predicted"])[0] > 1e-5


def test_girf_dc_one_bin_off_fails_the_reference(reference, girf):
    args = (reference["g_tot"], reference["R"], reference["dt"], reference["tRR"])
    g_ref = reference["g_predicted"]
    good = relative_errors(_spiral.predict_gradients(args[0], girf, *args[1:]), g_ref)
    shifted = relative_errors(_spiral.predict_gradients(args[0], np.roll(girf, 1, axis=0), *args[1:]), g_ref)
    assert shifted[0] >= 10 * good[0] and shifted[1] >= 10 * good[1], (good, shifted)
    assert shifted[1] > 1e-5  # the per-arm criterion rejects the fork's off-by-one placement


def test_predicted_gradients_batch_equals_single_arms(reference, girf):
    g = reference["g_tot"][:, :4]
    batch = _spiral.predict_gradients(g, girf, reference["R"], reference["dt"], reference["tRR"])
    single = _spiral.predict_gradients(g[:, 2:3], girf, reference["R"], reference["dt"], reference["tRR"])
    np.testing.assert_allclose(batch[:, 2:3], single, rtol=0, atol=1e-12)


def test_unit_girf_without_shift_leaves_coordinates_nominal():
    """dt = 10 µs: the 3800-row unit GIRF covers every bin; τ = 0 → the prediction is the identity."""
    dt = 10e-6
    kx, ky = archimedean_spiral(ns=400, turns=3, pre_discard=1, arms=4)
    t_rr = -(_spiral.ADC_SHIFT_S + dt / 2) / dt
    coords = _spiral.girf_coordinates(kx, ky, np.ones((3800, 3)), np.eye(3), dt, 128, t_rr_samples=t_rr)
    np.testing.assert_allclose(coords, _spiral.grid_coordinates(kx, ky, 128), rtol=0, atol=1e-4)


def test_adc_shift_advances_gradients_by_whole_samples():
    """Positive τ = 3·dt reads the gradient 3 samples later: g_pred[n] = g_nom[n + 3] (the sign that
    reproduces the MATLAB reference)."""
    dt = 10e-6
    g = smooth_gradients()
    t_rr = 3 - (_spiral.ADC_SHIFT_S + dt / 2) / dt
    R = _spiral.rotation_matrix([1, 0, 0], [0, 1, 0], [0, 0, 1], "HFS")
    pred = _spiral.predict_gradients(g, np.ones((3800, 3)), R, dt, t_rr)
    np.testing.assert_allclose(pred[:-3, :, :2], g[3:], rtol=0, atol=1e-9)
    np.testing.assert_allclose(pred[..., 2], 0, atol=1e-9)


def test_girf_coordinates_reach_half_matrix_and_move_samples(girf):
    dt = 2e-6
    kx, ky = archimedean_spiral(ns=750, turns=4, arms=8)
    R = _spiral.rotation_matrix([0, 1, 0], [1, 0, 0], [0, 0, 1], "HFS")
    coords = _spiral.girf_coordinates(kx, ky, girf, R, dt, 128)
    nominal = _spiral.grid_coordinates(kx, ky, 128)
    assert coords.shape == (8, 760, 2) and coords.dtype == np.float32
    assert np.hypot(coords[..., 0], coords[..., 1]).max() == pytest.approx(64, rel=1e-6)
    shift = np.hypot(*(coords - nominal).transpose(2, 0, 1))
    assert 0.05 < shift.max() < 5  # a visible correction of a fraction of a pixel to a few pixels


def test_coarse_dwell_uses_the_tapered_central_girf(girf):
    """dt = 20 µs (L = 1900 < 3800 rows): central GIRF rows with zero, tapered edges; a smooth
    waveform is predicted as on the 10 µs raster (τ = 0 on both)."""
    response = _spiral._girf_response(girf, 1900)
    assert response.shape == (1900, 3)
    np.testing.assert_array_equal(response[[0, -1]], 0)
    np.testing.assert_array_equal(response[5:-5], girf[1900 - 950 + 5:1900 + 950 - 5])

    def predicted(dt, duration=6e-3):
        t = np.arange(int(round(duration / dt)))[:, None] * dt
        env, phase = 10 * np.sin(np.pi * t / duration) ** 2, 2 * np.pi * np.arange(3) / 3
        g = np.stack([env * np.cos(6 * np.pi * t / duration + phase),
                      env * np.sin(6 * np.pi * t / duration + phase)], axis=-1)
        return _spiral.predict_gradients(g, girf, np.eye(3), dt, -(_spiral.ADC_SHIFT_S + dt / 2) / dt)

    fine, coarse = predicted(10e-6), predicted(20e-6)
    assert np.linalg.norm(coarse - fine[::2]) / np.linalg.norm(fine) < 1e-5


def test_readouts_longer_than_the_girf_window_are_rejected():
    dt = 2e-6
    with pytest.raises(ValueError, match="GIRF window"):
        _spiral.predict_gradients(np.zeros((19000, 1, 2)), np.ones((3800, 3)), np.eye(3), dt, 0.0)
    assert _spiral.predict_gradients(np.zeros((18000, 1, 2)), np.ones((3800, 3)), np.eye(3), dt, 0.0).shape \
        == (18000, 1, 3)


# --- coordinates, gradients, DCF ---------------------------------------------------------------

def test_grid_coordinates_put_outermost_sample_at_half_matrix_with_y_negated():
    kx = np.array([[0.0, 0.0], [10.0, -50.0], [30.0, 0.0]])
    ky = np.array([[0.0, 0.0], [-20.0, 100.0], [40.0, 0.0]])
    coords = _spiral.grid_coordinates(kx, ky, 96)
    assert coords.shape == (2, 3, 2) and coords.dtype == np.float32
    scale = 0.5 * 96 / np.hypot(-50.0, 100.0)
    np.testing.assert_allclose(coords[1, 1], [-50 * scale, -100 * scale], rtol=1e-6)
    np.testing.assert_allclose(coords[0, 2], [30 * scale, -40 * scale], rtol=1e-6)
    assert np.hypot(coords[..., 0], coords[..., 1]).max() == pytest.approx(48, rel=1e-6)


def test_nominal_gradients_are_finite_differences_in_mT_per_m_with_y_negated():
    dt = 2e-6
    n = np.arange(5, dtype=float)[:, None]
    kx, ky = 3.0 * n * np.ones((1, 2)), -7.0 * n * np.ones((1, 2))
    g = _spiral.nominal_gradients(kx, ky, dt)
    assert g.shape == (5, 2, 2)
    np.testing.assert_array_equal(g[0], 0)
    unit = 1e3 / (dt * _spiral.GAMMA_BAR_HZ_PER_T)
    np.testing.assert_allclose(g[1:, :, 0], 3 * unit)
    np.testing.assert_allclose(g[1:, :, 1], 7 * unit)


def test_hoge_dcf_is_positive_normalised_with_flat_tail_and_linear_in_radius():
    pre, ns = 10, 3000
    kx, ky = archimedean_spiral(ns=ns, turns=8, pre_discard=pre, arms=3)
    w = _spiral.hoge_dcf(kx, ky, 2e-6, pre)
    assert w.shape == (ns,)
    assert w.max() == pytest.approx(1.0) and np.all(w > 0)
    tail = (ns + pre) // 2
    np.testing.assert_array_equal(w[-tail:], w[-tail])
    radius = np.hypot(kx[pre:, 0], ky[pre:, 0])
    head = slice(5, ns - tail)
    ratio = w[head] / radius[head]
    assert np.ptp(ratio) / ratio.mean() < 1e-3
    np.testing.assert_array_equal(_spiral.hoge_dcf(kx[:, 0], ky[:, 0], 2e-6, pre), w)


# --- metafile and header ------------------------------------------------------------------------

def test_metafile_round_trip(tmp_path):
    kx, ky = archimedean_spiral(ns=200, turns=2, pre_discard=0, arms=5)
    w = np.linspace(0.1, 1, 200)
    path = tmp_path / f"{HASH}.mat"
    _spiral.write_metafile(path, _spiral.SpiralMeta(kx, ky, w, fov_cm=25.6, res_mm=2.0, repetitions=5, interleaves=5,
                                                    ga_rotation_deg=72.0, pre_discard=10, arm_ordering="linear",
                                                    dt_s=2e-6))
    meta = _spiral.load_metafile(path)
    np.testing.assert_array_equal(meta.kx, kx)
    np.testing.assert_array_equal(meta.ky, ky)
    np.testing.assert_array_equal(meta.w, w)
    assert (meta.fov_cm, meta.res_mm, meta.repetitions, meta.interleaves) == (25.6, 2.0, 5, 5)
    assert (meta.ga_rotation_deg, meta.pre_discard) == (72.0, 10)
    assert (meta.arm_ordering, meta.dt_s) == ("linear", 2e-6)
    assert _spiral.matrix_size(meta) == 128 and _spiral.matrix_size(meta, 1.5) == 192
    raw = scipy.io.loadmat(str(path))
    assert raw["w"].shape == (1, 200) and raw["kz"].shape == (200, 5) and not raw["kz"].any()
    assert raw["param"]["fov"][0, 0][0, 0] == 25.6
    np.testing.assert_array_equal(raw["param"]["matrix_size"][0, 0], [[128, 128]])


def test_metafile_without_dwell_time_and_with_more_repetitions(tmp_path):
    kx, ky = archimedean_spiral(ns=50, turns=1, pre_discard=0, arms=6)
    path = tmp_path / "meta.mat"
    _spiral.write_metafile(path, _spiral.SpiralMeta(kx, ky, np.ones(50), fov_cm=22.2, res_mm=1.5, repetitions=6,
                                                    interleaves=3, ga_rotation_deg=222.4969, pre_discard=10,
                                                    arm_ordering="ga", dt_s=None))
    meta = _spiral.load_metafile(path)
    assert meta.dt_s is None and meta.repetitions == 6 and meta.interleaves == 3
    assert meta.arm_ordering == "ga" and meta.ga_rotation_deg == 222.4969
    assert _spiral.matrix_size(meta) == 148  # 10·22.2/1.5 = 147.99999999999997 in floating point


def test_find_metafile_takes_first_hit_and_names_hash_and_paths(tmp_path):
    first, second, empty = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder in (first, second, empty):
        folder.mkdir()
    (second / f"{HASH}.mat").write_bytes(b"")
    (first / f"{HASH}.mat").write_bytes(b"")
    assert _spiral.find_metafile(HASH, [empty, str(first), second]) == first / f"{HASH}.mat"
    with pytest.raises(FileNotFoundError) as err:
        _spiral.find_metafile("f" * 32, [empty, second])
    assert "f" * 32 in str(err.value) and str(empty) in str(err.value) and str(second) in str(err.value)


HEADER_XML = """<?xml version="1.0" encoding="UTF-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <measurementInformation><patientPosition>HFS</patientPosition></measurementInformation>
  <experimentalConditions><H1resonanceFrequency_Hz>23500000</H1resonanceFrequency_Hz></experimentalConditions>
  <encoding>
    <encodedSpace><matrixSize><x>128</x><y>128</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>256</x><y>256</y><z>8</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>128</x><y>128</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>256</x><y>256</y><z>8</z></fieldOfView_mm></reconSpace>
    <encodingLimits></encodingLimits>
    <trajectory>spiral</trajectory>
  </encoding>
  <userParameters>{strings}</userParameters>
</ismrmrdHeader>
"""


def header_with(*entries):
    strings = "".join(f"<userParameterString><name>{n}</name><value>{v}</value></userParameterString>"
                      for n, v in entries)
    return ismrmrd.xsd.CreateFromDocument(HEADER_XML.format(strings=strings))


def test_sequence_hash_from_named_entry_cut_to_32_characters():
    header = header_with(("Other", "x"), ("Something", "y"), ("tSequenceVariant", HASH + "/OSP"))
    assert _spiral.sequence_hash(header) == HASH


def test_sequence_hash_falls_back_to_second_entry():
    assert _spiral.sequence_hash(header_with(("First", "x"), ("SeqHash", HASH + "/OSP"))) == HASH
    assert _spiral.sequence_hash(header_with(("Only", HASH))) is None


def test_sequence_hash_is_none_without_parsed_header_or_parameters():
    assert _spiral.sequence_hash("<ismrmrdHeader>not parsed</ismrmrdHeader>") is None
    xml = HEADER_XML.replace("<userParameters>{strings}</userParameters>", "")
    header = ismrmrd.xsd.CreateFromDocument(xml)
    assert _spiral.sequence_hash(header) is None


# --- rotation -----------------------------------------------------------------------------------

def test_rotation_for_hfs_with_identity_directions():
    R = _spiral.rotation_matrix([1, 0, 0], [0, 1, 0], [0, 0, 1], "HFS")
    A = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]])
    S = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(R, np.diag([1, -1, -1]) @ A @ S)
    np.testing.assert_array_equal(R, np.diag([1, 1, -1]))


@pytest.mark.parametrize("position", ["HFS", "HFP", "FFS", "FFP", "HFDR", "HFDL", "FFDR", "FFDL", "XYZ", ""])
def test_rotation_is_orthonormal_for_every_patient_position(position):
    q, _ = np.linalg.qr(np.random.default_rng(7).normal(size=(3, 3)))
    R = _spiral.rotation_matrix(q[0], q[1], q[2], position)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)


def test_patient_position_accepts_the_header_enum():
    header = header_with(("tSequenceVariant", HASH))
    position = header.measurementInformation.patientPosition
    np.testing.assert_array_equal(_spiral.rotation_matrix([1, 0, 0], [0, 1, 0], [0, 0, 1], position),
                                  np.diag([1, 1, -1]))


def test_unknown_patient_position_means_identity_p():
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    np.testing.assert_array_equal(_spiral.rotation_matrix(q[0], q[1], q[2], "other"),
                                  _spiral.rotation_matrix(q[0], q[1], q[2], "FFP"))
