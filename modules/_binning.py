"""Respiratory and cardiac binning of spiral arms from physiological waveforms (never dispatched).

Pure NumPy functions for the XD-GRASP-style reconstruction (docs/spiral.md §8.2-§8.4): pilot-tone
decoding, ECG trigger times (time stamps in 2.5 ms ticks), trigger shifts (a delay shorter than
one sample moves nothing), cyclic respiratory amplitude bins, cardiac bins after each trigger, and
the arms kept after the start and end discards (a discard of 0 s keeps everything at that end).

Bins are integer arrays with one entry per arm; -1 means "in no bin".
"""
from __future__ import annotations

import numpy as np

PILOT_TONE_ID = 1025
ECG_ID = 0
ECG_TRIGGER_CHANNEL = 4
TICK_S = 2.5e-3
_OFFSET = 2 ** 31


def decode_pilot_tone(samples: np.ndarray) -> np.ndarray:
    """Waveform-1025 channels ``[5, n]`` (uint32, x -> x/max|x|*(2^31-1) + 2^31) as float signals in [-1, 1].

    Rows: 0 respiration, 1 cardiac, 2 cardiac triggers, 3 cardiac derivative, 4 derivative triggers.
    """
    return (np.asarray(samples, dtype=np.float64) - _OFFSET) / (_OFFSET - 1)


def triggers_from(signal: np.ndarray) -> np.ndarray:
    """0/1 trigger vector of a decoded trigger channel (any non-zero value is a trigger)."""
    return (np.abs(signal) > 0.5).astype(np.int8)


def shift_triggers(triggers: np.ndarray, delay_s: float, sample_s: float) -> np.ndarray:
    """Triggers moved ``delay_s`` earlier (whole samples; nothing moves when the delay is shorter
    than one sample); triggers shifted out of the start are dropped."""
    steps = int(delay_s // sample_s) if sample_s > 0 else 0
    if steps <= 0:
        return triggers.copy()
    out = np.zeros_like(triggers)
    out[:-steps] = triggers[steps:]
    return out


def ecg_triggers(trigger_times_s: np.ndarray, arm_times_s: np.ndarray) -> np.ndarray:
    """0/1 vector over arms: 1 at the arm nearest to each ECG trigger time (both in seconds)."""
    out = np.zeros(len(arm_times_s), dtype=np.int8)
    inside = (trigger_times_s >= arm_times_s[0]) & (trigger_times_s <= arm_times_s[-1])
    nearest = np.abs(arm_times_s[None, :] - trigger_times_s[inside, None]).argmin(axis=1)
    out[nearest] = 1
    return out


def ecg_trigger_times(waveforms: list, first_arm_stamp: int) -> np.ndarray:
    """Times (s, relative to the first arm) of the R waves in ECG waveforms (id 0, channel 4 > 0)."""
    times = []
    for wav in waveforms:
        if wav.waveform_id != ECG_ID:
            continue
        hits = np.flatnonzero(wav.data[ECG_TRIGGER_CHANNEL] > 0)
        start = (wav.time_stamp - first_arm_stamp) * TICK_S
        times.append(start + hits * wav.sample_time_us * 1e-6)
    return np.concatenate(times) if times else np.zeros(0)


def respiratory_bins(resp: np.ndarray, n_bins: int, discard: float) -> np.ndarray:
    """Cyclic amplitude bins: 0 ... n/2-1 rising (inspiration) levels, n/2 ... n-1 falling levels.

    The extreme ``discard`` fraction of amplitudes (half at each end, i.e. outside [low, high])
    goes to no bin.  Levels are ``round((n/2 - 1) * (r - low) / (high - low))``; falling samples
    map to ``n - 1 - level``.
    """
    if n_bins < 2 or n_bins % 2:
        raise ValueError(f"n_respiratory_bins = {n_bins} must be even and >= 2")
    r = np.asarray(resp, dtype=np.float64)
    rising = np.diff(r, prepend=r[0]) >= 0
    ordered = np.sort(r)
    cut = int(len(r) * discard) // 2
    low, high = ordered[cut], ordered[len(r) - 1 - cut]
    half = n_bins // 2
    level = (half - 1) * (r - low) / max(high - low, np.finfo(float).tiny)
    bins = np.rint(level).astype(np.int64)
    bins[(level < 0) | (level > half - 1)] = -1
    falling = ~rising & (bins >= 0)
    bins[falling] = n_bins - 1 - bins[falling]
    return bins


def cardiac_bins(triggers: np.ndarray, n_bins: int) -> np.ndarray:
    """Bins after each trigger: a window of ``0.9 * shortest RR`` arms (a multiple of ``n_bins``)
    split into ``n_bins`` equal parts; arms before the first or after the last trigger, or past
    the window, are in no bin."""
    peaks = np.flatnonzero(triggers)
    bins = np.full(len(triggers), -1, dtype=np.int64)
    if len(peaks) < 2:
        return bins
    window = (int(0.9 * np.diff(peaks).min()) // n_bins) * n_bins
    per = window // n_bins
    if per == 0:
        raise ValueError(f"heartbeats of {np.diff(peaks).min()} arms are too short for {n_bins} cardiac bins")
    offsets = np.arange(window)
    for start in peaks[:-1]:
        bins[start + offsets] = offsets // per
    return bins


def discard_counts(n_arms: int, pre_s: float, post_s: float, tr_s: float) -> slice:
    """The arms kept after dropping ``pre_s`` seconds at the start and ``post_s`` at the end (0 allowed)."""
    pre, post = (int(np.floor(seconds / tr_s + 1e-9)) for seconds in (pre_s, post_s))
    if pre + post >= n_arms:
        raise ValueError(f"discarding {pre} + {post} arms leaves none of {n_arms}")
    return slice(pre, n_arms - post)
