"""Physiological signals of tools/generate_spiral_dataset.py: pilot tone (1025), ECG (0), truth, motion.

Every expectation is computed here from the closed forms of docs/spiral.md §11.6 (r, c, the R-wave and
derivative-maximum times) and its §8.2 decoding, never from the generator's own helpers; the files
are read back with ``ismrmrd.Dataset`` and sent through a real server with ``client.py -w``.
"""
import importlib.util
import math
import sys
from pathlib import Path

import h5py
import ismrmrd
import ismrmrd.xsd
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "modules"))

from conftest import run_client  # noqa: E402

_spec = importlib.util.spec_from_file_location("generate_spiral_dataset", REPO / "tools" / "generate_spiral_dataset.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

# m = 10 * 19.2 / 6 = 32; 2 slices of 300 arms at TR 10 ms: 6 s, about 6.6 heart beats, 1.5 breaths.
ARMS, SLICES, TR_MS, M = 300, 2, 10.0, 32
TR = TR_MS * 1e-3
N = ARMS * SLICES
F_R, PHI_R, F_C, PHI_C = 0.25, 0.1, 1.1, 0.2
RESP_PX, CARD_PX = 2.5, 1.5
BASE = ["--fov-cm", "19.2", "--res-mm", "6", "--interleaves", "8", "--coils", "2", "--arms", str(ARMS),
        "--slices", str(SLICES), "--tr-ms", str(TR_MS)]
PHYSIO = ["--resp-hz", str(F_R), "--resp-phase", str(PHI_R), "--card-hz", str(F_C), "--card-phase", str(PHI_C)]
HALF = 2 ** 31
T = np.arange(N) * TR


def resp(t):
    return np.sin(2 * np.pi * (F_R * t + PHI_R))


def card(t):
    return np.exp(-(((np.mod(F_C * t + PHI_C, 1.0) - 0.3) / 0.05) ** 2))


def event_times(at_phase):
    """Times in [0, (N - 1)·TR] where frac(F_C·t + PHI_C) = at_phase."""
    k = np.arange(-2, int(F_C * N * TR) + 3)
    times = (k + at_phase - PHI_C) / F_C
    return times[(times >= 0) & (times <= (N - 1) * TR)]


R_WAVES = event_times(0.3)
SLOPE_MAXIMA = event_times(0.3 - 0.05 / math.sqrt(2))


def nearest_arm(times):
    return np.rint(times / TR).astype(int)


def generate(tmp, name, *args):
    path = tmp / f"{name}.h5"
    assert gen.main(["-o", str(path), "--metafile-dir", str(tmp / "seq_meta"), *BASE, *args]) == 0
    return path


def read_file(path):
    """Header text, imaging acquisitions and waveforms through ismrmrd.Dataset."""
    dset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        xml = dset.read_xml_header()
        acqs = [dset.read_acquisition(i) for i in range(dset.number_of_acquisitions())]
        waves = [dset.read_waveform(i) for i in range(dset.number_of_waveforms())] if _has_waves(path) else []
    finally:
        dset.close()
    return xml, [a for a in acqs if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)], waves


def _has_waves(path):
    with h5py.File(path, "r") as f:
        return "waveforms" in f["dataset"]


def decode(values, peak):
    """docs/spiral.md §8.2 decoding of one row: (v − 2^31)/2^31 · max|x|."""
    return (values.astype(np.float64) - HALF) / HALF * peak


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("physio")
    moving = generate(tmp, "moving", *PHYSIO, "--resp-px", str(RESP_PX), "--card-px", str(CARD_PX), "--waveforms")
    static = generate(tmp, "static")
    return tmp, moving, static, read_file(moving)


def pilot_tone(waves):
    return [w for w in waves if w.waveform_id == 1025]


def ecg(waves):
    return [w for w in waves if w.waveform_id == 0]


def test_pilot_tone_headers_one_waveform_per_slice(files):
    _, _, _, (_, acqs, waves) = files
    pt = pilot_tone(waves)
    assert len(pt) == SLICES
    for slc, wav in enumerate(pt):
        first = acqs[slc * ARMS]
        assert (wav.channels, wav.number_of_samples, wav.data.shape) == (5, ARMS, (5, ARMS))
        assert wav.data.dtype == np.uint32
        assert wav.sample_time_us == pytest.approx(TR_MS * 1000)
        assert wav.time_stamp == first.acquisition_time_stamp
        assert wav.scan_counter == first.scan_counter == slc * ARMS + 1
        assert wav.measurement_uid == first.measurement_uid
    # ECG chunks come first in the file (the reference extraction wants them first).
    ids = [w.waveform_id for w in waves]
    assert ids == [0] * len(ecg(waves)) + [1025] * SLICES


def test_pilot_tone_decodes_to_the_closed_form_signals(files):
    _, _, _, (_, _, waves) = files
    pt = pilot_tone(waves)
    derivative = np.gradient(card(T), TR)
    for slc, wav in enumerate(pt):
        part = slice(slc * ARMS, (slc + 1) * ARMS)
        for channel, truth in ((0, resp(T[part])), (1, card(T[part])), (3, derivative[part])):
            peak = np.abs(truth).max()
            np.testing.assert_allclose(decode(wav.data[channel], peak), truth, rtol=0, atol=1e-6 * peak)
        # Trigger rows: 0 -> 2^31, 1 -> 2^32 - 1 exactly.
        for channel in (2, 4):
            assert set(np.unique(wav.data[channel])) <= {HALF, 2 ** 32 - 1}
    assert np.unique(pt[0].data[0]).size > 100  # a real signal, not a constant


def test_pilot_tone_triggers_at_the_known_peaks(files):
    _, _, _, (_, _, waves) = files
    pt = pilot_tone(waves)
    triggers = np.concatenate([np.flatnonzero(w.data[2] != HALF) + s * ARMS for s, w in enumerate(pt)])
    slopes = np.concatenate([np.flatnonzero(w.data[4] != HALF) + s * ARMS for s, w in enumerate(pt)])
    assert abs(len(triggers) - N * TR * F_C) <= 1
    np.testing.assert_array_equal(triggers, nearest_arm(R_WAVES))
    np.testing.assert_array_equal(slopes, nearest_arm(SLOPE_MAXIMA))
    # RR interval 1/(f_c·TR) arms; the trigger is the pulse's sampled maximum, the derivative trigger
    # the finite difference's maximum (to one arm) and it precedes the R wave by 0.05/√2 cycles.
    assert np.all(np.abs(np.diff(triggers) - 1 / (F_C * TR)) <= 1)
    c, dc = card(T), np.gradient(card(T), TR)
    for arm in triggers:
        assert c[arm] >= c[max(arm - 1, 0)] and c[arm] >= c[min(arm + 1, N - 1)] and c[arm] > 0.98
    for arm in slopes:
        assert abs(int(np.argmax(dc[max(arm - 5, 0):arm + 6])) + max(arm - 5, 0) - arm) <= 1
    np.testing.assert_allclose((triggers - slopes) * TR, 0.05 / math.sqrt(2) / F_C, atol=TR)


def test_ecg_chunks_stamps_and_r_waves(files):
    _, _, _, (_, acqs, waves) = files
    chunks = ecg(waves)
    sizes = [w.number_of_samples for w in chunks]
    assert sum(sizes) == math.ceil(N * TR / 2.5e-3) and all(s == 400 for s in sizes[:-1])
    first = acqs[0].acquisition_time_stamp
    assert chunks[0].time_stamp == first
    assert [w.time_stamp for w in chunks] == [first + 400 * i for i in range(len(chunks))]
    for wav in chunks:
        assert wav.channels == 5 and wav.data.dtype == np.uint32 and wav.sample_time_us == pytest.approx(2500)
        following = [a.scan_counter for a in acqs if a.acquisition_time_stamp >= wav.time_stamp][0]
        assert wav.scan_counter == following
    trace = np.concatenate([w.data for w in chunks], axis=1)
    # The reference extraction (docs/spiral.md §8.3): t = n·dt − (acq0.stamp − ecg0.stamp)·2.5 ms.
    ecg_times = np.flatnonzero(trace[4] > 0) * 2.5e-3 - (first - chunks[0].time_stamp) * 2.5e-3
    np.testing.assert_allclose(ecg_times, R_WAVES, atol=1.25e-3 + 1e-12)
    pt = pilot_tone(waves)
    pt_triggers = np.concatenate([np.flatnonzero(w.data[2] != HALF) + s * ARMS for s, w in enumerate(pt)])
    assert len(ecg_times) == len(pt_triggers)
    assert np.all(np.abs(ecg_times - pt_triggers * TR) <= TR)
    # Lead 0: baseline 2048, QRS spike of 1000 at each R wave.
    r_samples = np.flatnonzero(trace[4])
    assert np.all(np.abs(trace[0, r_samples].astype(float) - 3048) <= 20)
    assert np.median(trace[0]) == 2048


def test_truth_datasets_follow_the_closed_forms(files):
    _, moving, _, (_, _, waves) = files
    with h5py.File(moving, "r") as f:
        grp = f["dataset"]
        truth_resp, truth_card = grp["truth_resp"][...], grp["truth_card"][...]
        phase, trigger_arms = grp["truth_card_phase"][...], grp["truth_trigger_arms"][...]
        slope_arms = grp["truth_derivative_trigger_arms"][...]
    assert truth_resp.shape == phase.shape == (N,) and truth_resp.dtype == phase.dtype == np.float64
    np.testing.assert_allclose(truth_resp, resp(T), atol=1e-12)
    np.testing.assert_allclose(truth_card, card(T), atol=1e-12)
    assert np.all((phase >= 0) & (phase < 1))
    expected = np.mod(F_C * T + PHI_C - 0.3, 1.0)
    cyclic = np.abs((phase - expected + 0.5) % 1.0 - 0.5)
    assert cyclic.max() <= 1e-9
    assert np.issubdtype(trigger_arms.dtype, np.integer)
    np.testing.assert_array_equal(trigger_arms, nearest_arm(R_WAVES))
    np.testing.assert_array_equal(slope_arms, nearest_arm(SLOPE_MAXIMA))
    # At a trigger arm the cardiac phase is within half a TR of 0 (cyclically).
    at_trigger = np.minimum(phase[trigger_arms], 1 - phase[trigger_arms])
    assert at_trigger.max() <= F_C * TR / 2 + 1e-9
    pt = pilot_tone(waves)
    decoded = np.concatenate([np.flatnonzero(w.data[2] != HALF) + s * ARMS for s, w in enumerate(pt)])
    np.testing.assert_array_equal(decoded, trigger_arms)


def test_shift_follows_resp_and_card_and_moves_the_kspace(files):
    _, moving, static, (_, acq_moving, _) = files
    with h5py.File(moving, "r") as f:
        shift = f["dataset/truth_shift_px"][...]
        coord = f["dataset/truth_coordinates"][...]
        truth = f["dataset/truth_image"][...]
    np.testing.assert_allclose(shift[:, 0], RESP_PX * resp(T), atol=1e-12)
    np.testing.assert_allclose(shift[:, 1], CARD_PX * card(T), atol=1e-12)
    _, acq_static, _ = read_file(static)
    peak = nearest_arm(R_WAVES)[1]
    for i in (0, 7, peak, 333, N - 1):
        k = coord[acq_moving[i].idx.kspace_encode_step_1]
        ramp = np.exp(-2j * np.pi * (k[:, 0] * shift[i, 0] + k[:, 1] * shift[i, 1]) / M)
        expected = acq_static[i].data[:, 10:] * ramp
        np.testing.assert_allclose(acq_moving[i].data[:, 10:], expected, rtol=1e-4,
                                   atol=1e-4 * np.abs(acq_static[i].data).max())
    # truth_frame keeps working: the object at the R wave is moved by (resp_px·r, card_px·c).
    np.testing.assert_allclose(gen.truth_frame(moving, peak, 1),
                               gen.shift_image(truth, shift[peak])[::-1].T, atol=1e-6)
    assert shift[peak, 1] > 0.98 * CARD_PX


def test_default_px_and_motion_add_up(tmp_path):
    args = ["--resp-hz", "2", "--card-hz", "3", "--motion-px", "1", "--motion-hz", "5", "--arms", "40",
            "--slices", "1"]
    path = tmp_path / "d.h5"
    assert gen.main(["-o", str(path), "--metafile-dir", str(tmp_path), *BASE, *args]) == 0
    with h5py.File(path, "r") as f:
        grp = f["dataset"]
        shift = grp["truth_shift_px"][...]
        assert "waveforms" not in grp and "truth_resp" in grp  # truth without --waveforms
    t = np.arange(40) * TR
    c = np.exp(-(((np.mod(3 * t, 1.0) - 0.3) / 0.05) ** 2))
    np.testing.assert_allclose(shift[:, 0], 1 * np.sin(2 * np.pi * 5 * t) + 3 * np.sin(2 * np.pi * 2 * t), atol=1e-12)
    np.testing.assert_allclose(shift[:, 1], 1 * c, atol=1e-12)


def test_without_the_new_options_nothing_changes(files):
    _, _, static, _ = files
    with h5py.File(static, "r") as f:
        grp = f["dataset"]
        assert sorted(grp) == ["coil_maps", "data", "truth_coil_images", "truth_coordinates", "truth_image",
                               "truth_shift_px", "xml"]
        assert not grp["truth_shift_px"][...].any()
        assert "resp_hz" not in grp.attrs
        xml = grp["xml"][0]
    hdr = ismrmrd.xsd.CreateFromDocument(xml)
    assert hdr.waveformInformation == []


def test_header_describes_both_waveforms(files):
    _, _, _, (xml, _, _) = files
    hdr = ismrmrd.xsd.CreateFromDocument(xml)
    info = {w.waveformName: w for w in hdr.waveformInformation}
    assert set(info) == {"ECG", "PilotTone"}
    assert info["ECG"].waveformType.value == "ecg"
    ids = {name: w.userParameters.userParameterLong[0].value for name, w in info.items()}
    assert ids == {"ECG": 0, "PilotTone": 1025}
    assert hdr.userParameters.userParameterString[1].name == "tSequenceVariant"


def test_pilot_tone_split_above_65535_readouts():
    count = 70_000
    physio = gen.physio_signals(count, 0.005, 0.25, 1.1)
    stamps = 1000 + np.rint(np.arange(count) * 2).astype(np.int64)
    waves = gen.pilot_tone_waveforms(physio, stamps, count, 1)
    assert [w.number_of_samples for w in waves] == [65535, count - 65535]
    assert [w.time_stamp for w in waves] == [1000, 1000 + 2 * 65535]
    assert [w.scan_counter for w in waves] == [1, 65536]
    t = np.arange(count) * 0.005
    r = np.sin(2 * np.pi * 0.25 * t)
    for wav, part in zip(waves, (slice(0, 65535), slice(65535, count))):
        peak = np.abs(r[part]).max()
        np.testing.assert_allclose(decode(wav.data[0], peak), r[part], atol=1e-6 * peak)
    triggers = np.concatenate([np.flatnonzero(waves[0].data[2] != HALF),
                               65535 + np.flatnonzero(waves[1].data[2] != HALF)])
    assert abs(len(triggers) - count * 0.005 * 1.1) <= 1


def test_encoding_of_extremes_and_zero_rows():
    rows = np.array([[0.0, 1.0, 0.0], [-2.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    enc = gen.encode_pilot_tone_rows(rows)
    assert enc.dtype == np.uint32
    np.testing.assert_array_equal(enc, [[HALF, 2 ** 32 - 1, HALF], [1, HALF, 2 ** 32 - 1], [HALF] * 3])


def test_bad_frequencies_are_rejected(tmp_path):
    out = ["-o", str(tmp_path / "x.h5"), "--metafile-dir", str(tmp_path)]
    for bad in (["--card-hz", "-1"], ["--resp-hz", "50", "--tr-ms", "10"]):
        with pytest.raises(SystemExit):
            gen.main(out + bad)


def test_waveforms_round_trip_through_a_server(server, files, tmp_path):
    _, moving, _, (_, acqs, waves) = files
    before = set(server.savedir.glob("*.h5")) if server.savedir.exists() else set()
    result = run_client(server.port, "-w", "-c", "savedataonly", "-o", str(tmp_path / "o.h5"), str(moving))
    assert result.returncode == 0, result.stdout + result.stderr
    saved = sorted(set(server.savedir.glob("*.h5")) - before)
    assert len(saved) == 1
    dset = ismrmrd.Dataset(str(saved[0]), "dataset", create_if_needed=False)
    try:
        assert dset.number_of_waveforms() == len(waves) == len(ecg(waves)) + SLICES
        for i, wav in enumerate(waves):
            assert dset.read_waveform(i) == wav
        assert dset.number_of_acquisitions() == 5 + N
    finally:
        dset.close()
