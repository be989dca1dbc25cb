"""modules/_binning.py on synthetic physiology with known frequencies (docs/spiral.md §11.6)."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))
import _binning  # noqa: E402

TR, DURATION, F_RESP, F_CARD = 0.005, 60.0, 0.25, 1.1
T = np.arange(int(DURATION / TR)) * TR


def encode(x):
    return np.uint32(np.rint(x / np.abs(x).max() * (2 ** 31 - 1) + 2 ** 31))


def test_pilot_tone_decoding_inverts_the_encoding():
    r = np.sin(2 * np.pi * F_RESP * T)
    decoded = _binning.decode_pilot_tone(encode(r)[None, :])[0]
    assert np.max(np.abs(decoded - r)) < 1e-8


def test_respiratory_bins_follow_the_known_phase():
    r = np.sin(2 * np.pi * F_RESP * T)
    n_bins, discard = 12, 0.1
    bins = _binning.respiratory_bins(r, n_bins, discard)
    rising = np.cos(2 * np.pi * F_RESP * T) >= 0  # the analytic derivative's sign
    ordered = np.sort(r)
    cut = int(len(r) * discard) // 2
    low, high = ordered[cut], ordered[-1 - cut]
    level = np.rint(5 * (r - low) / (high - low)).astype(int)
    expected = np.where(rising, level, 11 - level)
    expected[(r < low) | (r > high)] = -1
    assert np.mean(bins == expected) >= 0.95
    assert np.mean(np.isin(bins[rising & (bins >= 0)], range(6))) >= 0.99  # rising levels first
    # time in an amplitude band [a, b] of a sinusoid: (arcsin b - arcsin a) / pi of the kept samples
    kept = bins >= 0
    band = (bins == 2) | (bins == 9)
    a, b = (low + (high - low) * 1.5 / 5), (low + (high - low) * 2.5 / 5)
    assert abs(band.sum() / len(r) - (np.arcsin(b) - np.arcsin(a)) / np.pi) < 0.01
    assert kept.mean() == pytest.approx(1 - discard, abs=0.05)


def test_cardiac_bins_give_each_bin_per_arms_per_complete_beat():
    peaks = np.rint(np.arange(0.2, DURATION, 1 / F_CARD) / TR).astype(int)
    triggers = np.zeros(len(T), np.int8)
    triggers[peaks] = 1
    n_bins = 20
    bins = _binning.cardiac_bins(triggers, n_bins)
    rr = np.diff(peaks).min()
    window = (int(0.9 * rr) // n_bins) * n_bins
    per = window // n_bins
    counts = np.bincount(bins[bins >= 0], minlength=n_bins)
    assert np.all(counts == per * (len(peaks) - 1))
    expected = np.full(len(T), -1)
    for p in peaks[:-1]:
        expected[p:p + window] = np.arange(window) // per  # the bin the known cardiac phase says
    assert np.mean(bins == expected) == 1.0


def test_trigger_delay_shorter_than_a_sample_moves_nothing_and_longer_moves_whole_samples():
    trig = np.zeros(100, np.int8)
    trig[[20, 50, 80]] = 1
    assert np.array_equal(_binning.shift_triggers(trig, 0.001, 0.005), trig)
    shifted = _binning.shift_triggers(trig, 0.012, 0.005)
    assert list(np.flatnonzero(shifted)) == [18, 48, 78]


def test_ecg_triggers_snap_to_arms_using_2_5_ms_ticks():
    class Wave:
        waveform_id = 0
        sample_time_us = 2500.0

        def __init__(self, stamp, hits):
            self.time_stamp = stamp
            self.data = np.zeros((5, 400), np.uint32)
            self.data[4, hits] = 1

    first_stamp = 1000
    waves = [Wave(first_stamp, [10, 300]), Wave(first_stamp + 400, [100])]  # the second starts 1 s later
    times = _binning.ecg_trigger_times(waves, first_stamp)
    assert np.allclose(times, [0.025, 0.75, 1.25])
    arms = _binning.ecg_triggers(times, np.arange(400) * 0.005)
    assert list(np.flatnonzero(arms)) == [5, 150, 250]


def test_discard_allows_zero_and_rejects_everything():
    assert _binning.discard_counts(1000, 0.5, 0.0, 0.005) == slice(100, 1000)
    with pytest.raises(ValueError):
        _binning.discard_counts(100, 0.3, 0.3, 0.005)


def test_generator_waveforms_bin_by_their_known_phases(tmp_path):
    import importlib.util

    import h5py
    import ismrmrd
    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("gen", repo / "tools" / "generate_spiral_dataset.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    data = tmp_path / "w.h5"
    assert gen.main(["-o", str(data), "--metafile-dir", str(tmp_path / "meta"), "--fov-cm", "19.2", "--res-mm", "3",
                     "--interleaves", "16", "--coils", "2", "--arms", "6000", "--resp-hz", "0.25", "--card-hz", "1.1",
                     "--waveforms"]) == 0
    dset = ismrmrd.Dataset(str(data), "dataset", mode="r")
    waves = [dset.read_waveform(i) for i in range(dset.number_of_waveforms())]
    dset.close()
    with h5py.File(data, "r") as f:
        resp_truth, trigger_arms = f["dataset/truth_resp"][...], f["dataset/truth_trigger_arms"][...]
    pilot = np.concatenate([w.data for w in waves if w.waveform_id == 1025], axis=1)
    signals = _binning.decode_pilot_tone(pilot)
    resp = _binning.respiratory_bins(signals[0], 12, 0.1)
    assert np.mean(resp == _binning.respiratory_bins(resp_truth, 12, 0.1)) >= 0.95
    triggers = _binning.triggers_from(signals[2])
    assert list(np.flatnonzero(triggers)) == list(trigger_arms)
    expected = np.zeros(len(triggers), np.int8)
    expected[trigger_arms] = 1
    card = _binning.cardiac_bins(triggers, 20)
    assert np.array_equal(card, _binning.cardiac_bins(expected, 20))
    counts = np.bincount(card[card >= 0], minlength=20)
    assert len(set(counts)) == 1 and counts[0] > 0  # every cardiac bin gets per x beats arms


@pytest.mark.parametrize("fill", [True, False])
def test_bins_are_padded_without_measurements_or_cropped_to_the_smallest(fill):
    import ismrmrd
    import spiral_xdgrasp_recon as xd
    from _errors import ConfigError
    ns, pre, coils, interleaves = 6, 2, 2, 4
    coord = np.arange(interleaves * ns * 2, dtype=np.float32).reshape(interleaves, ns, 2)
    arms = []
    for i in range(7):
        acq = ismrmrd.Acquisition.from_array(np.full((coils, pre + ns), i + 1, np.complex64))
        acq.idx.kspace_encode_step_1 = i
        arms.append(acq)
    resp = np.array([0, 0, 0, 1, 1, 0, 1])
    card = np.array([0, 1, 0, 0, 1, 1, 0])  # bins (r, c): (0,0) arms 0 2, (0,1) 1 5, (1,0) 3 6, (1,1) 4
    cfg = xd.XdGraspConfig(n_respiratory_bins=2, n_cardiac_bins=2, fill_small_bins=fill)
    kspace, traj, pattern = xd.binned_arrays(arms, coord, pre, interleaves, resp, card, cfg)
    n = 2 if fill else 1
    assert kspace.shape == (1, ns, n, coils, 1, 1, 1, 1, 1, 1, 2, 2) and pattern.shape[2] == n
    first_arm = {(0, 0): 0, (0, 1): 1, (1, 0): 3, (1, 1): 4}
    for (r, c), arm in first_arm.items():
        assert np.all(kspace[0, :, 0, :, 0, 0, 0, 0, 0, 0, r, c] == arm + 1)
        np.testing.assert_array_equal(traj[:2, :, 0, 0, 0, 0, 0, 0, 0, 0, r, c], coord[arm % interleaves].T)
    if fill:  # the single-arm bin (1, 1) is padded: no data, no trajectory, pattern 0
        assert pattern[0, :, :, 0, 0, 0, 0, 0, 0, 0, 1, 1].tolist() == [[1, 0]] * ns
        assert not kspace[..., 1, :, 0, 0, 0, 0, 0, 0, 1, 1].any()
        assert pattern[..., 0, 0].all() and np.all(kspace[0, :, 1, :, 0, 0, 0, 0, 0, 0, 0, 0] == 3)
    else:
        assert pattern.all()
        with pytest.raises(ConfigError, match="bin is empty"):
            xd.binned_arrays(arms[:4], coord, pre, interleaves, resp[:4], card[:4], cfg)
