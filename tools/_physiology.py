"""Motion, respiration, heart beat and their waveforms for ``generate_spiral_dataset.py`` (helper).

Signals at the imaging readouts ``t = i·TR`` (i 0-based over all slices; docs/spiral.md §11.6):
respiration ``r(t) = sin(2π·(f_r·t + φ_r))`` (0 when f_r = 0) and a cardiac pulse train
``c(t) = exp(−((frac(f_c·t + φ_c) − 0.3)/0.05)²)`` (0 when f_c = 0), phases in cycles.  The pulse
peaks (R waves) are at ``frac(f_c·t + φ_c) = 0.3``, the maxima of ``ċ`` at ``0.3 − 0.05/√2``; only
those inside ``[0, (readouts − 1)·TR]`` count.  The object moves rigidly by
``motion_px·sin(2π·motion_hz·t)`` plus ``resp_px·r(t)`` along coordinate 0 and ``card_px·c(t)``
along coordinate 1 (pixels).

Waveforms (ECG first, as they are replayed in file order):

* ECG, ``waveform_id`` 0: 5 uint32 channels at 2500 µs in 1 s chunks (400 samples) from the first
  imaging readout's stamp on, each with its own ``time_stamp`` (2.5 ms ticks) and the
  ``scan_counter`` of the readout at or after it; channels 0–3 a synthetic trace (baseline 2048,
  QRS spike at each R wave and a T wave 0.25 s later, lead gains 1, 0.7, −0.5, 0.3 × 1000),
  channel 4 = 1 at the sample nearest to each R wave, else 0.  The recording covers
  ``ceil(readouts·TR/2.5 ms)`` samples.
* Pilot tone, ``waveform_id`` 1025 (docs/spiral.md §8.2): one sample per imaging readout, one
  waveform per slice (split every 65,535 readouts), channels 0 r, 1 c, 2 cardiac triggers (1 at
  the readout nearest each R wave), 3 ``ċ`` (``numpy.gradient`` of c over the whole scan, per s),
  4 derivative triggers; each row of each waveform encoded as ``uint32(x/max|x|·(2³¹ − 1) + 2³¹)``
  (2³¹ for an all-zero row); ``sample_time_us = TR``, ``time_stamp`` and ``scan_counter`` those of
  its first readout.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import ismrmrd
import numpy as np

from tools._spiral_scan import MEASUREMENT_UID, TICK_S, SpiralScan

PULSE_CENTRE, PULSE_WIDTH = 0.3, 0.05  # cardiac pulse c(t): centre and width in cycles
ECG_WAVEFORM_ID, PT_WAVEFORM_ID = 0, 1025
ECG_SAMPLE_TIME_S = 2.5e-3
ECG_CHUNK_SAMPLES = 400  # 1 s per ECG waveform
ECG_BASELINE = 2048
ECG_LEAD_GAINS = (1.0, 0.7, -0.5, 0.3)
MAX_WAVEFORM_SAMPLES = 65535


class Physio(NamedTuple):
    """Respiratory and cardiac signals at the imaging readouts ``t = i·TR`` (see the module doc)."""

    tr_s: float
    resp: np.ndarray                  # r(t_i)
    card: np.ndarray                  # c(t_i)
    card_derivative: np.ndarray       # numpy.gradient(c, TR), 1/s
    card_phase: np.ndarray            # frac(f_c·t_i + φ_c − 0.3) in [0, 1)
    peak_times_s: np.ndarray          # R waves (pulse peaks) inside [0, (count − 1)·TR]
    derivative_peak_times_s: np.ndarray  # maxima of dc/dt inside [0, (count − 1)·TR]
    trigger_arms: np.ndarray          # nearest readout of every R wave
    derivative_trigger_arms: np.ndarray

    @property
    def count(self) -> int:
        return self.resp.size


def _event_times(card_hz: float, card_phase: float, at_phase: float, end_s: float) -> np.ndarray:
    """Times ``t ∈ [0, end_s]`` with ``frac(f_c·t + φ_c) = at_phase``."""
    if card_hz <= 0:
        return np.zeros(0)
    first = math.ceil(card_phase - at_phase - 1e-12)
    last = math.floor(card_hz * end_s + card_phase - at_phase + 1e-12)
    times = (np.arange(first, last + 1) + at_phase - card_phase) / card_hz
    return times[(times >= 0) & (times <= end_s)]


def cardiac_pulse(phase: np.ndarray) -> np.ndarray:
    """The pulse ``exp(−((frac(phase) − 0.3)/0.05)²)`` of the cardiac cycle phase (cycles)."""
    frac = np.asarray(phase, dtype=np.float64) % 1.0
    return np.exp(-(((frac - PULSE_CENTRE) / PULSE_WIDTH) ** 2))


def physio_signals(count: int, tr_s: float, resp_hz: float = 0.0, card_hz: float = 0.0,
                   resp_phase: float = 0.0, card_phase: float = 0.0) -> Physio:
    """Respiratory and cardiac signals of ``count`` readouts at ``t_i = i·TR`` (phases in cycles)."""
    t = np.arange(count) * tr_s
    resp = np.sin(2 * math.pi * (resp_hz * t + resp_phase)) if resp_hz > 0 else np.zeros(count)
    if card_hz > 0:
        card = cardiac_pulse(card_hz * t + card_phase)
        cycle = card_hz * t + card_phase - PULSE_CENTRE
        phase = cycle - np.floor(cycle)
        phase[phase >= 1.0] = 0.0
    else:
        card, phase = np.zeros(count), np.zeros(count)
    derivative = np.gradient(card, tr_s) if count >= 2 else np.zeros(count)
    end = (count - 1) * tr_s
    peaks = _event_times(card_hz, card_phase, PULSE_CENTRE, end)
    slopes = _event_times(card_hz, card_phase, PULSE_CENTRE - PULSE_WIDTH / math.sqrt(2.0), end)
    nearest = lambda times: np.clip(np.rint(times / tr_s), 0, count - 1).astype(np.int64)  # noqa: E731
    return Physio(tr_s, resp, card, derivative, phase, peaks, slopes, nearest(peaks), nearest(slopes))


def scan_physiology(scan: SpiralScan) -> Physio | None:
    """The signals of ``scan``'s imaging readouts; None when it simulates none (``scan.physiology``)."""
    if not scan.physiology:
        return None
    return physio_signals(scan.readouts, scan.tr_s, scan.resp_hz, scan.card_hz, scan.resp_phase, scan.card_phase)


def displacement_px(count: int, tr_s: float, motion_px: float, motion_hz: float) -> np.ndarray:
    """Object shift (count, 2) in pixels of imaging readout i at ``t = i·TR``; only axis 0 moves."""
    shift = np.zeros((count, 2))
    shift[:, 0] = motion_px * np.sin(2 * math.pi * motion_hz * tr_s * np.arange(count))
    return shift


def object_shifts(scan: SpiralScan, physio: Physio | None) -> np.ndarray:
    """Object shift (readouts, 2) in pixels: the motion plus the respiratory and cardiac shifts."""
    shifts = displacement_px(scan.readouts, scan.tr_s, scan.motion_px, scan.motion_hz)
    if physio is not None and scan.resp_hz > 0:
        shifts[:, 0] += scan.resp_px * physio.resp
    if physio is not None and scan.card_hz > 0:
        shifts[:, 1] += scan.card_px * physio.card
    return shifts


def encode_pilot_tone_rows(rows: np.ndarray) -> np.ndarray:
    """``uint32(x/max|x|·(2³¹ − 1) + 2³¹)`` per row of ``rows`` (channels, samples) (docs/spiral.md §8.2);
    an all-zero row becomes 2³¹."""
    rows = np.asarray(rows, dtype=np.float64)
    peak = np.abs(rows).max(axis=-1, keepdims=True)
    scaled = np.divide(rows, peak, out=np.zeros_like(rows), where=peak > 0)
    return (scaled * float(2 ** 31 - 1) + float(2 ** 31)).astype(np.uint32)


def pilot_tone_waveforms(physio: Physio, stamps: np.ndarray, arms: int, slices: int) -> list[ismrmrd.Waveform]:
    """Waveforms 1025 of every slice (split every 65,535 readouts); ``stamps`` the imaging readouts'
    ``acquisition_time_stamp`` (arms·slices)."""
    rows = np.zeros((5, physio.count))
    rows[0], rows[1], rows[3] = physio.resp, physio.card, physio.card_derivative
    rows[2, physio.trigger_arms] = 1.0
    rows[4, physio.derivative_trigger_arms] = 1.0
    waves = []
    for slc in range(slices):
        for start in range(slc * arms, (slc + 1) * arms, MAX_WAVEFORM_SAMPLES):
            stop = min(start + MAX_WAVEFORM_SAMPLES, (slc + 1) * arms)
            waves.append(ismrmrd.Waveform.from_array(
                encode_pilot_tone_rows(rows[:, start:stop]), waveform_id=PT_WAVEFORM_ID,
                measurement_uid=MEASUREMENT_UID, scan_counter=start + 1, time_stamp=int(stamps[start]),
                sample_time_us=physio.tr_s * 1e6))
    return waves


def ecg_trace(physio: Physio) -> np.ndarray:
    """The synthetic ECG (5, n) uint32 at 2.5 ms from the first imaging readout on (module doc)."""
    n = max(1, math.ceil(physio.count * physio.tr_s / ECG_SAMPLE_TIME_S - 1e-9))
    t = np.arange(n) * ECG_SAMPLE_TIME_S
    shape = np.zeros(n)
    half = int(0.5 / ECG_SAMPLE_TIME_S)
    for peak in physio.peak_times_s:
        centre = int(round(peak / ECG_SAMPLE_TIME_S))
        part = slice(max(centre - half, 0), min(centre + 2 * half, n))
        dt = t[part] - peak
        shape[part] += np.exp(-((dt / 0.01) ** 2)) + 0.3 * np.exp(-(((dt - 0.25) / 0.04) ** 2))
    trace = np.zeros((5, n), dtype=np.uint32)
    for lead, gain in enumerate(ECG_LEAD_GAINS):
        trace[lead] = np.rint(ECG_BASELINE + 1000.0 * gain * shape).astype(np.uint32)
    samples = np.clip(np.rint(physio.peak_times_s / ECG_SAMPLE_TIME_S), 0, n - 1).astype(np.int64)
    trace[4, samples] = 1
    return trace


def ecg_waveforms(physio: Physio, stamps: np.ndarray) -> list[ismrmrd.Waveform]:
    """ECG (waveform 0) in 1 s chunks; the first chunk's stamp is the first imaging readout's."""
    trace = ecg_trace(physio)
    ticks_per_sample = ECG_SAMPLE_TIME_S / TICK_S
    waves = []
    for start in range(0, trace.shape[1], ECG_CHUNK_SAMPLES):
        stamp = int(stamps[0]) + int(round(start * ticks_per_sample))
        following = min(int(np.searchsorted(stamps, stamp)), len(stamps) - 1)
        waves.append(ismrmrd.Waveform.from_array(
            np.ascontiguousarray(trace[:, start:start + ECG_CHUNK_SAMPLES]), waveform_id=ECG_WAVEFORM_ID,
            measurement_uid=MEASUREMENT_UID, scan_counter=following + 1, time_stamp=stamp,
            sample_time_us=ECG_SAMPLE_TIME_S * 1e6))
    return waves


def scan_waveforms(physio: Physio, stamps: np.ndarray, arms: int, slices: int) -> list[ismrmrd.Waveform]:
    """The ECG, then the pilot-tone waveforms, of imaging readouts with ``stamps``."""
    return ecg_waveforms(physio, stamps) + pilot_tone_waveforms(physio, stamps, arms, slices)
