"""Generate a synthetic multi-coil 2-D spiral raw-data file (MRD HDF5) and its trajectory metafile.

Built as docs/spiral.md §11 recommends, so that it does not test the reconstruction with itself:
the k-space comes from an analytic phantom evaluated exactly at the trajectory points (no NUFFT).

Trajectory: a constant-density spiral ``k(θ) = A·θ·e^{iθ}``, ``A = Ni/(2π·FOV)``, integrated
numerically under the gradient limits (24 mT/m, 150 T/m/s) and sampled at ``t_n = n·dt`` until
``kmax = 1/(2·res)`` (``--samples`` slows it down to exactly that many samples).  Arm i is rotated by
``360°·i/Ni`` (linear) or ``(i·GA) mod 360°`` (``--golden-angle``); ``pre_discard = 10`` samples at
k = 0 precede every readout.  The metafile ``<metafile-dir>/<hash>.mat`` (docs/spiral.md §2.2, written by
``_spiral.write_metafile``) holds the Ni unique arms without the pre-discard samples and the Hoge DCF;
``<hash>`` is the MD5 hex digest of the float64 bytes of ``kx`` then ``ky``.

File, group ``/<group>`` (default ``dataset``): XML header (``tSequenceVariant = <hash>`` is the
second ``userParameterString``), 5 noise readouts (flag IS_NOISE_MEASUREMENT, ``scan_counter`` 0),
then for each slice ``--arms`` arms (``scan_counter`` 1, 2, … over all slices, so that modules
that start their clock at 1 work; ``kspace_encode_step_1 = arm mod Ni``), each ``[coils,
pre_discard + Ns]`` complex64, plus the ground truth:

* ``truth_image``        complex64 [m, m]           object (maximum 1)
* ``truth_coil_images``  complex64 [coils, m, m]    ``coil_maps * truth_image`` (static, noise-free)
* ``coil_maps``          complex64 [coils, m, m]    sensitivities (largest root-sum-of-squares 1)
* ``truth_shift_px``     float64   [arms·slices, 2] object displacement of every imaging readout
* ``truth_coordinates``  float32   [Ni, Ns, 2]      grid coordinates the data were simulated at
  (``_spiral.grid_coordinates`` of the metafile, or GIRF-predicted with ``--girf``)

Orientation: every truth array is in BART/sigpy order, first image axis = coordinate 0, pixel n at
``x = (n − m//2)/m`` of the FOV.  A module's output pixels are ``flip_x(truth)ᵀ`` = ``truth[::-1].T``
(docs/spiral.md §6.3); ``truth_frame()`` returns that orientation.  Scaling: the data are the
unnormalised Fourier transform of the coil images, ``Σ_n truth_coil[n]·exp(−i2π·k·(n − m//2)/m)``
with k in grid units (up to the sampling of the phantom's sharp edges: the k-space is analytic).

Object: with ``--bart`` the BART Shepp-Logan (``bart phantom -k -t`` / ``-x m``), otherwise this
file's own modified Shepp-Logan ellipses (analytic FT via ``scipy.special.j1``, oriented to look
upright in the module output).  Coil maps are sums of 9 plane waves ``e^{i2π f·x}`` with
f ∈ {−½, 0, ½}² cycles/FOV (least-squares fits of coils on a circle around the object), so coil
k-space is ``Σ_f a_cf·O(k − f)``: the object spectrum is evaluated at 9 shifted copies of the
trajectory.  (BART 0.8's own ``phantom -s`` allows at most 8 coils and needs minutes.)

Motion: rigid shift along coordinate 0 by ``dx(t) = motion_px·sin(2π·motion_hz·t)`` pixels,
``t = i·TR`` for imaging readout i (0-based, over all slices), applied as
``exp(−i2π·k0·dx/m)``.  Noise: complex Gaussian with ``E|n|² = (noise·m)²`` per sample (an image noise
of about ``noise`` relative to the object maximum for Nyquist-rate sampling); noise readouts carry
the same noise (zeros with ``--noise 0``).  The output file and metafile are overwritten.

Physiological signals (docs/spiral.md §11.6; off by default): respiration
``r(t) = sin(2π·(f_r·t + φ_r))`` (``--resp-hz``, ``--resp-phase`` in cycles; 0 when f_r = 0) and
a cardiac pulse train ``c(t) = exp(−((frac(f_c·t + φ_c) − 0.3)/0.05)²)`` (``--card-hz``,
``--card-phase``; 0 when f_c = 0), at the same ``t = i·TR``.  The object moves with them: the shift
above gains ``resp_px·r(t)`` along coordinate 0 and ``card_px·c(t)`` along coordinate 1
(``--resp-px`` 3, ``--card-px`` 1), so ``truth_shift_px`` and ``truth_frame`` include them.  The pulse
peaks (R waves) are at ``frac(f_c·t + φ_c) = 0.3``, the maxima of ``ċ`` at ``0.3 − 0.05/√2``; only
those inside ``[0, (arms·slices − 1)·TR]`` count.  With any of these options the group also holds

* ``truth_resp``, ``truth_card``     float64 [arms·slices]  r and c at every imaging readout
* ``truth_card_phase``               float64 [arms·slices]  ``frac(f_c·t + φ_c − 0.3)`` ∈ [0, 1):
  the cardiac phase since the last R wave (0 everywhere when f_c = 0)
* ``truth_trigger_arms``             int64   [beats]        readout nearest to each R wave
* ``truth_derivative_trigger_arms``  int64   [beats]        readout nearest to each maximum of ċ

``--waveforms`` writes ``/<group>/waveforms`` (ECG first, as the reference client replays them in file
order and the usc-mrel ECG extraction wants them first), and a ``waveformInformation`` entry for each
ID in the XML header:

* ECG, ``waveform_id`` 0: 5 uint32 channels at 2500 µs in 1 s chunks (400 samples) from the first
  imaging readout's stamp on, each with its own ``time_stamp`` (2.5 ms ticks); channels 0–3 a
  synthetic trace (baseline 2048, QRS spike at each R wave and a T wave 0.25 s later, lead gains
  1, 0.7, −0.5, 0.3 × 1000), channel 4 = 1 at the sample nearest to each R wave, else 0.  The
  recording covers ``ceil(arms·slices·TR/2.5 ms)`` samples.
* Pilot tone, ``waveform_id`` 1025 (docs/spiral.md §8.2): one sample per imaging readout, one waveform per
  slice (split every 65,535 readouts), channels 0 r, 1 c, 2 cardiac triggers (1 at
  ``truth_trigger_arms``), 3 ``ċ`` (``numpy.gradient`` of c over the whole scan, per s), 4 derivative
  triggers; each row of each waveform encoded as ``uint32(x/max|x|·(2³¹ − 1) + 2³¹)`` (2³¹ for an
  all-zero row); ``sample_time_us = TR``, ``time_stamp`` and ``scan_counter`` those of its first
  readout.

Comparing a reconstruction with the truth: the truth is the sharp phantom sampled on the pixel
grid, the data are band-limited to the k-space disk |k| ≤ m/2, and a spiral's FOV is a circle.
A DCF-gridded, fully sampled frame (m = 64 … 120) therefore reaches an NRMSE (after least-squares
scaling) of only about 0.23–0.34 against ``truth_image``, about 0.19 against
``truth_frame(..., window="disk")`` inside the inscribed circle, and about 0.09–0.12 when the same
Hann window weights the data and the truth (``window="hann"``) inside that circle.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "modules"))

import h5py  # noqa: E402
import ismrmrd  # noqa: E402
import numpy as np  # noqa: E402
import scipy.special  # noqa: E402

import _bart  # noqa: E402
import _spiral  # noqa: E402
import mrdfile  # noqa: E402
from tools._phantom import MODIFIED_SHEPP_LOGAN  # noqa: E402

log = logging.getLogger("generate_spiral_dataset")

GAMMA_BAR = _spiral.GAMMA_BAR_HZ_PER_T
GMAX_T_PER_M = 24e-3
SMAX_T_PER_M_S = 150.0
PRE_DISCARD = 10
NOISE_READOUTS = 5
TICK_S = 2.5e-3
TIME_STAMP_START = 14_400_000  # 10:00:00 in 2.5 ms ticks since midnight
MEASUREMENT_UID = 12345
SLICE_THICKNESS_MM = 8.0
FIELD_STRENGTH_T = 0.55
COIL_FREQUENCIES = np.array([(a, b) for a in (-0.5, 0.0, 0.5) for b in (-0.5, 0.0, 0.5)])
POINTS_PER_TASK = 400_000  # trajectory points per worker task (times 9 shifted copies)
PULSE_CENTRE, PULSE_WIDTH = 0.3, 0.05  # cardiac pulse c(t): centre and width in cycles
ECG_WAVEFORM_ID, PT_WAVEFORM_ID = 0, 1025
ECG_SAMPLE_TIME_S = 2.5e-3
ECG_CHUNK_SAMPLES = 400  # 1 s per ECG waveform
ECG_BASELINE = 2048
ECG_LEAD_GAINS = (1.0, 0.7, -0.5, 0.3)
MAX_WAVEFORM_SAMPLES = 65535

# The modified Shepp-Logan ellipses (tools/_phantom.py) are placed at (x0, x1) = (-x/2, -y/2) of the
# FOV so that flip_x(image)^T is upright.


# ---------------------------------------------------------------------------------------------
# Trajectory
# ---------------------------------------------------------------------------------------------

def spiral_arm(fov_cm: float, res_mm: float, interleaves: int, dt_s: float,
               samples: int | None = None) -> np.ndarray:
    """Arm 0 of the constant-density spiral, complex k (Ns,) in 1/m, k[0] = 0, |k[-1]| = kmax.

    ``θ(t)`` is integrated on a fine raster (dt/16): the largest ``θ̈`` allowed by the slew limit
    (the positive root of ``|k''·θ̇² + k'·θ̈| = γ̄·smax``), ``θ̇`` capped by ``|k'|·θ̇ ≤ γ̄·gmax``.
    The minimum readout takes ``T`` s; ``Ns = samples or ceil(T/dt) + 1`` samples are spread over
    ``[0, T]`` (a slightly slower spiral, still inside the limits) so that the last one is kmax.
    ValueError when ``samples`` is below the minimum.
    """
    fov_m, kmax = fov_cm * 1e-2, 1.0 / (2.0 * res_mm * 1e-3)
    a = interleaves / (2.0 * math.pi * fov_m)
    theta_max = kmax / a
    h = dt_s / 16.0
    g_lim, s_lim = GAMMA_BAR * GMAX_T_PER_M, GAMMA_BAR * SMAX_T_PER_M_S
    theta, omega = 0.0, 0.0
    thetas = [0.0]
    while theta < theta_max:
        d1 = a * a * (1.0 + theta * theta)                 # |k'|²
        b = a * a * theta * omega * omega                  # Re(conj(k')·k'')·θ̇²
        c = a * a * (4.0 + theta * theta) * omega ** 4 - s_lim * s_lim
        accel = (-b + math.sqrt(max(b * b - d1 * c, 0.0))) / d1
        new_omega = min(omega + accel * h, g_lim / math.sqrt(d1))
        theta += 0.5 * (omega + new_omega) * h
        omega = new_omega
        thetas.append(theta)
    thetas = np.asarray(thetas)
    t_fine = np.arange(thetas.size) * h
    t_end = float(np.interp(theta_max, thetas, t_fine))
    minimum = math.ceil(t_end / dt_s - 1e-9) + 1
    if samples is None:
        samples = minimum
    elif samples < minimum:
        raise ValueError(f"{samples} samples are below the gradient-limited minimum of {minimum}")
    theta_n = np.interp(np.linspace(0.0, t_end, samples), t_fine, thetas)
    return a * theta_n * np.exp(1j * theta_n)


def arm_angles_deg(interleaves: int, golden: bool, ga_deg: float) -> np.ndarray:
    """Rotation of each unique arm: ``(i·GA) mod 360`` or ``360·i/Ni``."""
    i = np.arange(interleaves)
    return np.mod(i * ga_deg, 360.0) if golden else 360.0 * i / interleaves


def rotate_arms(arm: np.ndarray, angles_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``kx, ky`` (Ns, Ni) float64 of ``arm`` rotated by each angle."""
    k = arm[:, np.newaxis] * np.exp(1j * np.deg2rad(angles_deg))[np.newaxis, :]
    return np.ascontiguousarray(k.real), np.ascontiguousarray(k.imag)


def trajectory_hash(kx: np.ndarray, ky: np.ndarray) -> str:
    """MD5 hex digest (32 characters) of the float64 bytes of ``kx`` then ``ky``."""
    md5 = hashlib.md5(np.ascontiguousarray(kx, dtype=np.float64).tobytes())
    md5.update(np.ascontiguousarray(ky, dtype=np.float64).tobytes())
    return md5.hexdigest()


# ---------------------------------------------------------------------------------------------
# Object, coils, k-space
# ---------------------------------------------------------------------------------------------

def _ellipses() -> list[tuple[float, float, float, np.ndarray, float]]:
    """(intensity, a, b, centre (x0, x1), angle rad) in FOV units."""
    return [(rho, a / 2, b / 2, np.array([-x / 2, -y / 2]), math.radians(phi))
            for rho, a, b, x, y, phi in MODIFIED_SHEPP_LOGAN]


def pixel_positions(m: int) -> np.ndarray:
    """Positions ``(n − m//2)/m`` of the pixel centres along one axis, in FOV units."""
    return (np.arange(m) - m // 2) / m


def own_phantom_image(m: int) -> np.ndarray:
    """The own Shepp-Logan object sampled at the pixel centres, complex64 [m, m] (axis 0 = x0)."""
    x0, x1 = np.meshgrid(pixel_positions(m), pixel_positions(m), indexing="ij")
    image = np.zeros((m, m))
    for rho, a, b, c, phi in _ellipses():
        d0, d1 = x0 - c[0], x1 - c[1]
        u = d0 * math.cos(phi) + d1 * math.sin(phi)
        v = -d0 * math.sin(phi) + d1 * math.cos(phi)
        image += rho * ((u / a) ** 2 + (v / b) ** 2 <= 1.0)
    return image.astype(np.complex64)


def own_phantom_kspace(coord: np.ndarray, m: int, shifts: np.ndarray | None = None) -> np.ndarray:
    """Analytic spectrum of the own object at ``coord − f`` for every shift f, times m².

    ``coord`` (P, 2) in grid units (cycles per FOV), ``shifts`` (J, 2) (default: none) → (J, P).
    An ellipse with semi-axes a, b, angle φ, centre c has ``a·b·J1(2π|q|)/|q|·e^{−i2π k·c}``,
    ``q = diag(a, b)·Rᵀ(φ)·k`` (limit π at q = 0).  The phase of ``k − f`` is that of k times
    the constant ``e^{i2π f·c}``.
    """
    shifts = np.zeros((1, 2)) if shifts is None else np.asarray(shifts, dtype=np.float64)
    k0, k1 = coord[:, 0].astype(np.float64), coord[:, 1].astype(np.float64)
    out = np.zeros((len(shifts), k0.size), dtype=np.complex128)
    for rho, a, b, c, phi in _ellipses():
        cos, sin = math.cos(phi), math.sin(phi)
        u, v = a * (k0 * cos + k1 * sin), b * (-k0 * sin + k1 * cos)
        phase = np.exp(-2j * math.pi * (k0 * c[0] + k1 * c[1]))
        for j, (f0, f1) in enumerate(shifts):
            q = np.hypot(u - a * (f0 * cos + f1 * sin), v - b * (-f0 * sin + f1 * cos))
            small = q < 1e-9
            jinc = np.where(small, math.pi, scipy.special.j1(2 * math.pi * q) / np.where(small, 1.0, q))
            out[j] += (rho * a * b * np.exp(2j * math.pi * (f0 * c[0] + f1 * c[1]))) * jinc * phase
    return out * (m * m)


def bart_phantom_image(m: int) -> np.ndarray:
    """``bart phantom -x m`` as complex64 [m, m]."""
    return _bart.run_bart(["phantom", "-x", str(m), "img"])["img"].reshape(m, m)


def bart_phantom_kspace(coord: np.ndarray, m: int, threads: int | None = None) -> np.ndarray:
    """``bart phantom -k -t traj`` at ``coord`` (..., 2) (grid units), times m² (BART's phantom
    spectrum is normalised to a unit FOV, i.e. the image sum divided by m²)."""
    flat = coord.reshape(-1, 2)
    traj = np.zeros((3, flat.shape[0], 1), dtype=np.complex64)
    traj[0, :, 0], traj[1, :, 0] = flat[:, 0], flat[:, 1]
    ksp = _bart.run_bart(["phantom", "-k", "-t", "traj", "ksp"], {"traj": traj}, threads=threads)["ksp"]
    return (ksp.reshape(coord.shape[:-1]) * (m * m)).astype(np.complex128)


def coil_coefficients(coils: int, m: int) -> np.ndarray:
    """Plane-wave coefficients (coils, 9) of the coil maps (see :func:`coil_maps`).

    Least-squares fit over the FOV of coils on a circle of radius 0.75 FOV around the centre,
    magnitude ``1/(1 + 2·d²/r²)`` (d = distance to the coil) and phase the direction from the
    coil; scaled so that the largest root-sum-of-squares over the m×m grid is 1.
    """
    grid = pixel_positions(32)
    x0, x1 = np.meshgrid(grid, grid, indexing="ij")
    theta = 2 * math.pi * np.arange(coils) / coils
    d0 = x0[np.newaxis] - 0.75 * np.cos(theta)[:, None, None]
    d1 = x1[np.newaxis] - 0.75 * np.sin(theta)[:, None, None]
    target = np.exp(1j * np.arctan2(d1, d0)) / (1.0 + 2.0 * (d0 ** 2 + d1 ** 2) / 0.75 ** 2)
    basis = _plane_waves(x0, x1)
    coef = np.linalg.lstsq(basis.reshape(len(COIL_FREQUENCIES), -1).T,
                           target.reshape(coils, -1).T, rcond=None)[0].T
    rss = np.sqrt(np.sum(np.abs(_maps_from(coef, m)) ** 2, axis=0)).max()
    return coef / rss


def _plane_waves(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    f = COIL_FREQUENCIES
    return np.exp(2j * math.pi * (f[:, 0, None, None] * x0[None] + f[:, 1, None, None] * x1[None]))


def _maps_from(coef: np.ndarray, m: int) -> np.ndarray:
    x0, x1 = np.meshgrid(pixel_positions(m), pixel_positions(m), indexing="ij")
    return np.einsum("cj,jxy->cxy", coef, _plane_waves(x0, x1))


def coil_maps(coils: int, m: int) -> np.ndarray:
    """Coil sensitivities complex64 [coils, m, m]: ``Σ_f a_cf·e^{i2π f·x}`` at the pixel centres."""
    return _maps_from(coil_coefficients(coils, m), m).astype(np.complex64)


def coil_kspace(coord: np.ndarray, coef: np.ndarray, m: int, use_bart: bool,
                threads: int | None = None) -> np.ndarray:
    """K-space of every coil at ``coord`` (P, 2): complex64 (coils, P) = ``Σ_f a_cf·O(k − f)``."""
    if use_bart:
        obj = bart_phantom_kspace(coord[np.newaxis].astype(np.float64) - COIL_FREQUENCIES[:, None, :],
                                  m, threads)
    else:
        obj = own_phantom_kspace(coord, m, COIL_FREQUENCIES)
    return (coef @ obj).astype(np.complex64)


def displacement_px(count: int, tr_s: float, motion_px: float, motion_hz: float) -> np.ndarray:
    """Object shift (count, 2) in pixels of imaging readout i at ``t = i·TR``; only axis 0 moves."""
    shift = np.zeros((count, 2))
    shift[:, 0] = motion_px * np.sin(2 * math.pi * motion_hz * tr_s * np.arange(count))
    return shift


# ---------------------------------------------------------------------------------------------
# Physiological signals and waveforms
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# MRD header and acquisitions
# ---------------------------------------------------------------------------------------------

XML_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <measurementInformation>
    <measurementID>XXX_{uid}</measurementID>
    <patientPosition>HFS</patientPosition>
    <protocolName>spiral_phantom</protocolName>
  </measurementInformation>
  <acquisitionSystemInformation>
    <systemVendor>Synthetic</systemVendor>
    <systemModel>generate_spiral_dataset</systemModel>
    <systemFieldStrength_T>{field}</systemFieldStrength_T>
    <receiverChannels>{coils}</receiverChannels>
  </acquisitionSystemInformation>
  <experimentalConditions>
    <H1resonanceFrequency_Hz>{larmor}</H1resonanceFrequency_Hz>
  </experimentalConditions>
  <encoding>
    <encodedSpace>
      <matrixSize><x>{m}</x><y>{m}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{fov}</x><y>{fov}</y><z>{thickness}</z></fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize><x>{m}</x><y>{m}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{fov}</x><y>{fov}</y><z>{thickness}</z></fieldOfView_mm>
    </reconSpace>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>{max_arm}</maximum><center>0</center>
      </kspace_encoding_step_1>
      <kspace_encoding_step_2><minimum>0</minimum><maximum>0</maximum><center>0</center>
      </kspace_encoding_step_2>
      <slice><minimum>0</minimum><maximum>{max_slice}</maximum><center>0</center></slice>
      <repetition><minimum>0</minimum><maximum>{max_rep}</maximum><center>0</center></repetition>
    </encodingLimits>
    <trajectory>spiral</trajectory>
  </encoding>
  <sequenceParameters>
    <TR>{tr_ms}</TR>
    <TE>1.0</TE>
    <flipAngle_deg>15.0</flipAngle_deg>
  </sequenceParameters>
  <userParameters>
    <userParameterString><name>SequenceName</name><value>rtspiral_synthetic</value></userParameterString>
    <userParameterString><name>tSequenceVariant</name><value>{hash}</value></userParameterString>
  </userParameters>
</ismrmrdHeader>
"""


WAVEFORM_INFORMATION = """  <waveformInformation>
    <waveformName>ECG</waveformName>
    <waveformType>ecg</waveformType>
    <userParameters>
      <userParameterLong><name>waveform_id</name><value>0</value></userParameterLong>
    </userParameters>
  </waveformInformation>
  <waveformInformation>
    <waveformName>PilotTone</waveformName>
    <waveformType>other</waveformType>
    <userParameters>
      <userParameterLong><name>waveform_id</name><value>1025</value></userParameterLong>
    </userParameters>
  </waveformInformation>
"""


def header_xml(seq_hash: str, m: int, fov_mm: float, coils: int, interleaves: int, slices: int,
               repetitions: int, tr_ms: float, waveforms: bool = False) -> str:
    """The ISMRMRD XML header text (with ``waveforms``, ``waveformInformation`` for IDs 0 and 1025)."""
    text = XML_TEMPLATE.format(
        uid=MEASUREMENT_UID, field=FIELD_STRENGTH_T, coils=coils,
        larmor=int(round(FIELD_STRENGTH_T * GAMMA_BAR)), m=m, fov=fov_mm, thickness=SLICE_THICKNESS_MM,
        max_arm=interleaves - 1, max_slice=slices - 1, max_rep=min(repetitions - 1, 65535),
        tr_ms=tr_ms, hash=seq_hash)
    if waveforms:
        text = text.replace("</ismrmrdHeader>", WAVEFORM_INFORMATION + "</ismrmrdHeader>")
    return text


def _bit(flag: int) -> np.uint64:
    return np.uint64(1 << (flag - 1))


def acquisition_headers(arms: int, slices: int, interleaves: int, coils: int, samples: int,
                        dt_us: float, tr_s: float) -> np.ndarray:
    """Headers of all readouts in file order (noise, then slice > arm); ``ACQ_HEADER_DTYPE``."""
    count = NOISE_READOUTS + arms * slices
    heads = np.zeros(count, dtype=mrdfile.ACQ_HEADER_DTYPE)
    heads["version"] = 1
    heads["measurement_uid"] = MEASUREMENT_UID
    heads["number_of_samples"] = samples
    heads["available_channels"] = coils
    heads["active_channels"] = coils
    heads["channel_mask"] = np.array([(1 << min(max(coils - 64 * w, 0), 64)) - 1 for w in range(16)],
                                    dtype=np.uint64)
    heads["center_sample"] = PRE_DISCARD
    heads["sample_time_us"] = dt_us
    heads["read_dir"] = (1.0, 0.0, 0.0)
    heads["phase_dir"] = (0.0, 1.0, 0.0)
    heads["slice_dir"] = (0.0, 0.0, 1.0)
    heads["acquisition_time_stamp"][:NOISE_READOUTS] = TIME_STAMP_START
    heads["flags"][:NOISE_READOUTS] = _bit(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)

    img = heads[NOISE_READOUTS:]
    index = np.arange(arms * slices)
    slc, arm = index // arms, index % arms
    img["scan_counter"] = index + 1
    img["acquisition_time_stamp"] = TIME_STAMP_START + 1 + np.round(index * tr_s / TICK_S).astype(np.int64)
    img["idx"]["kspace_encode_step_1"] = arm % interleaves
    img["idx"]["repetition"] = np.minimum(arm // interleaves, 65535)
    img["idx"]["slice"] = slc
    img["position"][:, 2] = (slc - (slices - 1) / 2.0) * SLICE_THICKNESS_MM
    flags = np.zeros(len(img), dtype=np.uint64)
    flags[arm == 0] |= _bit(ismrmrd.ACQ_FIRST_IN_SLICE)
    flags[arm == arms - 1] |= _bit(ismrmrd.ACQ_LAST_IN_SLICE)
    flags[-1] |= _bit(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    img["flags"] = flags
    return heads


def complex_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Complex Gaussian noise, complex64, ``E|n|² = sigma²``."""
    parts = rng.standard_normal(shape + (2,), dtype=np.float32)
    parts *= np.float32(sigma / math.sqrt(2.0))
    return parts.view(np.complex64)[..., 0]


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------

def _simulate_arms(coord_full: np.ndarray, shift: np.ndarray, coef: np.ndarray, m: int,
                   use_bart: bool, threads: int | None) -> np.ndarray:
    """Data (arms, coils, samples) complex64 of arms with coordinates (arms, samples, 2) and shifts."""
    n_arms, samples = coord_full.shape[:2]
    ksp = coil_kspace(coord_full.reshape(-1, 2), coef, m, use_bart, threads)
    ksp = ksp.reshape(len(coef), n_arms, samples).transpose(1, 0, 2)
    phase = coord_full[..., 0] * shift[:, 0, None] + coord_full[..., 1] * shift[:, 1, None]
    if np.any(phase):
        ksp = ksp * np.exp(-2j * math.pi / m * phase)[:, np.newaxis, :].astype(np.complex64)
    return np.ascontiguousarray(ksp, dtype=np.complex64)


def generate(path: str | Path, metafile_dir: str | Path = "seq_meta", fov_cm: float = 24.0,
             res_mm: float = 2.0, interleaves: int = 16, golden_angle: bool = False,
             ga_deg: float = 222.4969, dt_us: float = 2.0, samples: int | None = None, coils: int = 8,
             arms: int = 200, slices: int = 1, noise: float = 0.0, motion_px: float = 0.0,
             motion_hz: float = 0.25, tr_ms: float = 5.0, girf: str | Path | None = None,
             use_bart: bool = False, seed: int = 0, group: str = "dataset",
             workers: int | None = None, resp_hz: float = 0.0, card_hz: float = 0.0,
             resp_px: float = 3.0, card_px: float = 1.0, resp_phase: float = 0.0,
             card_phase: float = 0.0, waveforms: bool = False) -> dict:
    """Write the metafile and the raw-data file; returns a summary (hash, paths, shapes).

    ``resp_hz``/``card_hz`` (0 = off), ``resp_px``/``card_px``, phases (cycles) and ``waveforms``:
    physiological motion, truth and waveforms (module doc)."""
    dt_s, tr_s = dt_us * 1e-6, tr_ms * 1e-3
    m = int(round(10 * fov_cm / res_mm))
    arm0 = spiral_arm(fov_cm, res_mm, interleaves, dt_s, samples)
    ns = arm0.size
    kx, ky = rotate_arms(arm0, arm_angles_deg(interleaves, golden_angle, ga_deg))
    seq_hash = trajectory_hash(kx, ky)
    full0 = np.concatenate([np.zeros(PRE_DISCARD, dtype=complex), arm0])
    w = _spiral.hoge_dcf(full0.real, full0.imag, dt_s, PRE_DISCARD)
    metafile = Path(metafile_dir) / f"{seq_hash}.mat"
    metafile.parent.mkdir(parents=True, exist_ok=True)
    _spiral.write_metafile(metafile, kx, ky, w, fov_cm, res_mm, interleaves,
                           ga_deg if golden_angle else 360.0 / interleaves, PRE_DISCARD,
                           "ga" if golden_angle else "linear", dt_s)

    if girf is not None:
        rot = _spiral.rotation_matrix((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), "HFS")
        coord = _spiral.girf_coordinates(kx, ky, _spiral.load_girf(girf), rot, dt_s, m)
    else:
        coord = _spiral.grid_coordinates(kx, ky, m)
    # Every readout: pre_discard samples at k = 0, then the arm.
    coord_full = np.concatenate([np.zeros((interleaves, PRE_DISCARD, 2), np.float32), coord], axis=1)

    total = arms * slices
    shifts = displacement_px(total, tr_s, motion_px, motion_hz)
    physio = None
    if resp_hz > 0 or card_hz > 0 or waveforms:
        physio = physio_signals(total, tr_s, resp_hz, card_hz, resp_phase, card_phase)
        if resp_hz > 0:
            shifts[:, 0] += resp_px * physio.resp
        if card_hz > 0:
            shifts[:, 1] += card_px * physio.card
    coef = coil_coefficients(coils, m)
    image = bart_phantom_image(m) if use_bart else own_phantom_image(m)
    maps = _maps_from(coef, m).astype(np.complex64)
    heads = acquisition_headers(arms, slices, interleaves, coils, PRE_DISCARD + ns, dt_us, tr_s)
    sigma = noise * m
    rng = np.random.default_rng(seed)
    empty_traj = np.zeros((PRE_DISCARD + ns, 0), dtype=np.float32)

    workers = workers or os.cpu_count() or 1
    per_task = max(1, min(total, POINTS_PER_TASK // (PRE_DISCARD + ns)))
    tasks = [(start, min(start + per_task, total)) for start in range(0, total, per_task)]
    threads = 1 if use_bart and workers > 1 else None

    def task(bounds: tuple[int, int]) -> np.ndarray:
        start, stop = bounds
        arm_index = np.arange(start, stop) % arms % interleaves
        return _simulate_arms(coord_full[arm_index], shifts[start:stop], coef, m, use_bart, threads)

    with h5py.File(path, "w") as f:
        grp = f.create_group(group)
        mrdfile.write_xml(grp, header_xml(seq_hash, m, 10.0 * fov_cm, coils, interleaves, slices,
                                          -(-arms // interleaves), tr_ms, waveforms))
        noise_data = complex_noise(rng, (NOISE_READOUTS, coils, PRE_DISCARD + ns), sigma)
        mrdfile.append_acquisitions(grp, mrdfile.AcquisitionBlock(
            heads[:NOISE_READOUTS], list(noise_data), [empty_traj] * NOISE_READOUTS))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            for (start, stop), data in zip(tasks, pool.map(task, tasks)):
                if sigma > 0:
                    data += complex_noise(rng, data.shape, sigma)
                rows = heads[NOISE_READOUTS + start:NOISE_READOUTS + stop]
                mrdfile.append_acquisitions(grp, mrdfile.AcquisitionBlock(
                    rows, list(data), [empty_traj] * len(rows)))
        grp.create_dataset("truth_image", data=image)
        grp.create_dataset("truth_coil_images", data=maps * image[np.newaxis])
        grp.create_dataset("coil_maps", data=maps)
        grp.create_dataset("truth_shift_px", data=shifts)
        grp.create_dataset("truth_coordinates", data=coord)
        grp.attrs.update({"phantom": "bart" if use_bart else "own", "girf": str(girf or ""),
                          "metafile": str(metafile), "matrix": m, "pre_discard": PRE_DISCARD})
        waves = []
        if physio is not None:
            grp.create_dataset("truth_resp", data=physio.resp)
            grp.create_dataset("truth_card", data=physio.card)
            grp.create_dataset("truth_card_phase", data=physio.card_phase)
            grp.create_dataset("truth_trigger_arms", data=physio.trigger_arms)
            grp.create_dataset("truth_derivative_trigger_arms", data=physio.derivative_trigger_arms)
            grp.attrs.update({"resp_hz": resp_hz, "card_hz": card_hz, "resp_px": resp_px,
                              "card_px": card_px, "resp_phase": resp_phase, "card_phase": card_phase})
        if waveforms:
            stamps = heads["acquisition_time_stamp"][NOISE_READOUTS:].astype(np.int64)
            waves = ecg_waveforms(physio, stamps) + pilot_tone_waveforms(physio, stamps, arms, slices)
            mrdfile.append_waveforms(grp, waves)
    return {"hash": seq_hash, "metafile": metafile, "matrix": m, "samples": ns,
            "acquisitions": len(heads), "interleaves": interleaves, "waveforms": len(waves),
            "triggers": 0 if physio is None else len(physio.trigger_arms)}


def to_module_orientation(image: np.ndarray) -> np.ndarray:
    """``flip_x(image)ᵀ`` over the last two axes: BART/sigpy order → module output pixels."""
    return np.swapaxes(np.flip(image, axis=-2), -1, -2)


def shift_image(image: np.ndarray, shift_px: np.ndarray) -> np.ndarray:
    """``image`` (…, m, m) moved by ``shift_px`` (axis 0, axis 1) pixels with a Fourier phase ramp."""
    m0, m1 = image.shape[-2:]
    f0 = np.fft.fftfreq(m0)[:, np.newaxis]
    f1 = np.fft.fftfreq(m1)[np.newaxis, :]
    ramp = np.exp(-2j * math.pi * (f0 * shift_px[0] + f1 * shift_px[1]))
    return np.fft.ifft2(np.fft.fft2(image, axes=(-2, -1)) * ramp, axes=(-2, -1)).astype(np.complex64)


def bandlimit(image: np.ndarray, window: str = "disk") -> np.ndarray:
    """``image`` (…, m, m) low-pass filtered to the spiral's k-space disk |k| ≤ m/2.

    ``window``: ``disk`` (ideal low-pass: the best any recon of the data can do) or ``hann``
    (``0.5 + 0.5·cos(π·|k|/(m/2))``; apply the same window to the data, e.g. before an adjoint
    NUFFT, for a comparison free of Gibbs ringing).
    """
    m0, m1 = image.shape[-2:]
    radius = np.hypot(np.fft.fftfreq(m0)[:, np.newaxis] * m0, np.fft.fftfreq(m1)[np.newaxis, :] * m1)
    weight = kspace_window(radius / (min(m0, m1) / 2), window)
    return np.fft.ifft2(np.fft.fft2(image, axes=(-2, -1)) * weight, axes=(-2, -1)).astype(np.complex64)


def kspace_window(r: np.ndarray, window: str) -> np.ndarray:
    """Radial window at ``r = |k|/(m/2)``: ``disk`` 1, ``hann`` 0.5 + 0.5·cos(π·r); 0 for r > 1."""
    if window == "disk":
        return (r <= 1.0).astype(np.float64)
    if window == "hann":
        return np.where(r < 1.0, 0.5 + 0.5 * np.cos(np.pi * np.minimum(r, 1.0)), 0.0)
    raise ValueError(f"unknown window {window!r} (disk, hann)")


def truth_frame(path: str | Path, first_arm: int, n_arms: int, group: str = "dataset",
                coil_images: bool = False, window: str | None = None) -> np.ndarray:
    """Ground truth of a frame of imaging readouts ``first_arm … first_arm + n_arms − 1``.

    Readouts count from 0 over all slices in file order (``scan_counter − 1``).  The static truth
    (``truth_image``, or ``truth_coil_images`` with ``coil_images``) moved by the mean displacement
    of those readouts (the frame's average position, not the average of moved images), optionally
    :func:`bandlimit`-ed with ``window``, in module output orientation ``flip_x(·)ᵀ``; complex64
    (m, m) or (coils, m, m).
    """
    with h5py.File(path, "r") as f:
        grp = f[group]
        shifts = grp["truth_shift_px"][...]
        static = grp["truth_coil_images" if coil_images else "truth_image"][...]
    if not (0 <= first_arm and n_arms >= 1 and first_arm + n_arms <= len(shifts)):
        raise ValueError(f"readouts {first_arm}..{first_arm + n_arms - 1} outside 0..{len(shifts) - 1}")
    mean = shifts[first_arm:first_arm + n_arms].mean(axis=0)
    moved = shift_image(static, mean) if np.any(mean) else static
    if window is not None:
        moved = bandlimit(moved, window)
    return np.ascontiguousarray(to_module_orientation(moved))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="output MRD HDF5 file (overwritten)")
    parser.add_argument("--metafile-dir", default="seq_meta", help="folder of the <hash>.mat metafile")
    parser.add_argument("--fov-cm", type=float, default=24.0, help="field of view in cm")
    parser.add_argument("--res-mm", type=float, default=2.0, help="resolution in mm (m = 10·fov/res)")
    parser.add_argument("--interleaves", type=int, default=16, help="unique arms Ni (GA_steps)")
    parser.add_argument("--golden-angle", action="store_true", help="golden-angle instead of linear order")
    parser.add_argument("--ga-deg", type=float, default=222.4969, help="golden-angle increment in degrees")
    parser.add_argument("--dt-us", type=float, default=2.0, help="ADC dwell time in µs")
    parser.add_argument("--samples", type=int, help="samples per arm after pre-discard "
                        "(default: the gradient-limited minimum; more makes a slower spiral)")
    parser.add_argument("--coils", type=int, default=8, help="receive coils")
    parser.add_argument("--arms", type=int, default=200, help="arms (readouts) per slice")
    parser.add_argument("--slices", type=int, default=1, help="slices (identical objects)")
    parser.add_argument("--noise", type=float, default=0.0, help="noise, relative to the object maximum")
    parser.add_argument("--motion-px", type=float, default=0.0, help="translation amplitude in pixels")
    parser.add_argument("--motion-hz", type=float, default=0.25, help="translation frequency in Hz")
    parser.add_argument("--tr-ms", type=float, default=5.0, help="repetition time in ms")
    parser.add_argument("--resp-hz", type=float, default=0.0,
                        help="respiration r(t) = sin(2π(f·t + phase)) in Hz (0 = off)")
    parser.add_argument("--card-hz", type=float, default=0.0,
                        help="heart rate of the cardiac pulse train c(t) in Hz (0 = off)")
    parser.add_argument("--resp-px", type=float, default=3.0,
                        help="shift along coordinate 0 in pixels per unit r(t)")
    parser.add_argument("--card-px", type=float, default=1.0,
                        help="shift along coordinate 1 in pixels per unit c(t)")
    parser.add_argument("--resp-phase", type=float, default=0.0, help="respiratory phase at t = 0, cycles")
    parser.add_argument("--card-phase", type=float, default=0.0, help="cardiac phase at t = 0, cycles")
    parser.add_argument("--waveforms", action="store_true",
                        help="write ECG (waveform 0) and pilot-tone (waveform 1025) waveforms")
    parser.add_argument("--girf", help="GIRF .mat file: simulate at the GIRF-predicted trajectory")
    parser.add_argument("--bart", action="store_true", help="BART's Shepp-Logan instead of the own one")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the noise")
    parser.add_argument("-g", "--group", default="dataset", help="HDF5 group name")
    args = parser.parse_args(argv)
    if not (args.fov_cm > 0 and args.res_mm > 0 and args.dt_us > 0 and args.tr_ms > 0):
        parser.error("fov, resolution, dwell time and TR must be positive")
    matrix = 10 * args.fov_cm / args.res_mm
    if abs(matrix - round(matrix)) > 1e-6 or round(matrix) < 4:
        parser.error(f"10·fov/res = {matrix:g} must be an integer matrix size of at least 4")
    if not (1 <= args.interleaves <= 65535 and 1 <= args.arms and 1 <= args.slices <= 65535):
        parser.error("need 1 <= interleaves <= 65535, arms >= 1 and 1 <= slices <= 65535")
    if not 1 <= args.coils <= 1024:
        parser.error("coils must be between 1 and 1024")
    if args.noise < 0:
        parser.error("noise must not be negative")
    nyquist = 0.5 / (args.tr_ms * 1e-3)
    if not (0 <= args.resp_hz < nyquist and 0 <= args.card_hz < nyquist):
        parser.error(f"respiratory and cardiac frequencies must be in [0, {nyquist:g}) Hz (1/(2·TR))")
    if args.girf and not Path(args.girf).is_file():
        parser.error(f"GIRF file {args.girf} not found")
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        info = generate(args.output, args.metafile_dir, args.fov_cm, args.res_mm, args.interleaves,
                        args.golden_angle, args.ga_deg, args.dt_us, args.samples, args.coils, args.arms,
                        args.slices, args.noise, args.motion_px, args.motion_hz, args.tr_ms, args.girf,
                        args.bart, args.seed, args.group, resp_hz=args.resp_hz, card_hz=args.card_hz,
                        resp_px=args.resp_px, card_px=args.card_px, resp_phase=args.resp_phase,
                        card_phase=args.card_phase, waveforms=args.waveforms)
    except (ValueError, _bart.BartError) as exc:
        log.error("%s", exc)
        return 1
    log.info("wrote %d acquisitions (%d coils, %d arms x %d slice(s), %d+%d samples, matrix %d, "
             "%s phantom) to %s:/%s and metafile %s in %.1f s", info["acquisitions"], args.coils,
             args.arms, args.slices, PRE_DISCARD, info["samples"], info["matrix"],
             "BART" if args.bart else "own", args.output, args.group, info["metafile"],
             time.perf_counter() - started)
    if args.waveforms or args.resp_hz > 0 or args.card_hz > 0:
        log.info("physiological signals: respiration %g Hz, heart %g Hz (%d R waves), %d waveforms",
                 args.resp_hz, args.card_hz, info["triggers"], info["waveforms"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
