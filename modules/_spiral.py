"""Spiral trajectory maths shared by the spiral modules (never dispatched: leading ``_``).

Pure array functions (file loading excepted) for the trajectory metafile of
rtspiral_pypulseq, the recon's grid coordinates, the Hoge density compensation
and the GIRF (gradient impulse response) trajectory prediction.  Shapes follow
the metafile: trajectories are ``(Ns, arms)`` with samples first; coordinates
handed to the NUFFT are ``(arms, Ns, 2)`` in grid units (outermost sample at
radius ``m/2``).  Units: k in 1/m, gradients in mT/m, times in s.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.fft
import scipy.io

# Proton gyromagnetic ratio / 2pi (CODATA 2018).  The absolute value cancels in every
# coordinate (they are normalised), but girf_matlab.mat's ``k_predicted`` was computed with
# this precise value: 42.577e6 is 1.1e-5 off it, 42.58e6 5.9e-5.
GAMMA_BAR_HZ_PER_T = 42.577478518e6

GIRF_DT_S = 10e-6          # time raster of the GIRF file
GIRF_ROWS = 3800           # rows of the GIRF file, DC at row GIRF_ROWS // 2
ADC_SHIFT_S = 0.85e-6      # fixed part of the ADC timing shift tau
RAMP_SAMPLES = 200         # descending half of a 400-point Hann window after the readout

_PATIENT_POSITION = {
    "HFS": np.diag([1.0, -1.0, -1.0]),
    "HFP": np.diag([-1.0, 1.0, -1.0]),
    "FFS": np.diag([-1.0, -1.0, 1.0]),
    "FFP": np.eye(3),
    "HFDR": np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, -1]]),
    "HFDL": np.array([[0.0, -1, 0], [-1, 0, 0], [0, 0, -1]]),
    "FFDR": np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]),
    "FFDL": np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]]),
}
_SWAP_XY = np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])


@dataclass
class SpiralMeta:
    """Content of a trajectory metafile (docs/spiral.md §2.2).

    ``kx``, ``ky``: (Ns, nTR) float64 in 1/m, pre-discard samples already removed;
    ``w``: (Ns,) float64 DCF of arm 0, max 1; ``fov_cm``, ``res_mm``; ``repetitions`` = nTR;
    ``interleaves`` = distinct arms; ``ga_rotation_deg``; ``pre_discard`` samples dropped at
    the start of each ADC; ``arm_ordering`` (``ga``, ``linear``, ``linear_custom``);
    ``dt_s`` ADC dwell time in s, None when the file has none.
    """
    kx: np.ndarray
    ky: np.ndarray
    w: np.ndarray
    fov_cm: float
    res_mm: float
    repetitions: int
    interleaves: int
    ga_rotation_deg: float
    pre_discard: int
    arm_ordering: str
    dt_s: float | None


def sequence_hash(metadata: Any) -> str | None:
    """Sequence hash (first 32 characters) from ``userParameterString``.

    The entry named ``tSequenceVariant`` wins; otherwise the second entry, whatever its
    name.  None for an unparsed (text) header, no user parameters, or an empty value.  The
    32-character cut drops a ``/OSP`` suffix.
    """
    try:
        entries = list(metadata.userParameters.userParameterString)
    except (AttributeError, TypeError):
        return None
    named = [e for e in entries if getattr(e, "name", None) == "tSequenceVariant"]
    entry = named[0] if named else (entries[1] if len(entries) > 1 else None)
    value = str(getattr(entry, "value", "") or "").strip()[:32]
    return value or None


def find_metafile(seq_hash: str, paths: Sequence[str | Path]) -> Path:
    """First existing ``<path>/<seq_hash>.mat`` over ``paths``; FileNotFoundError otherwise."""
    for folder in paths:
        candidate = Path(folder) / f"{seq_hash}.mat"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"trajectory metafile {seq_hash}.mat not found in {[str(p) for p in paths]}")


def _scalar(value: Any) -> Any:
    return np.asarray(value).ravel()[0]


def load_metafile(path: str | Path) -> SpiralMeta:
    """Read a metafile written by rtspiral_pypulseq (``scipy.io.savemat``, docs/spiral.md §2.2).

    Missing optional ``param`` fields default to: repetitions = nTR, ga_rotation =
    360/interleaves, pre_discard = 0, arm_ordering = "", dt = None.
    """
    data = scipy.io.loadmat(str(path))
    kx = np.asarray(data["kx"], dtype=np.float64)
    ky = np.asarray(data["ky"], dtype=np.float64)
    w = np.asarray(data["w"], dtype=np.float64).ravel()
    if kx.shape != ky.shape or kx.ndim != 2 or w.size != kx.shape[0]:
        raise ValueError(f"{path}: inconsistent shapes kx {kx.shape}, ky {ky.shape}, w {w.shape}")
    param = data["param"]
    fields = param.dtype.names or ()

    def get(name: str, default: Any = None) -> Any:
        if name not in fields or np.asarray(param[name][0, 0]).size == 0:
            return default
        return _scalar(param[name][0, 0])

    interleaves = int(get("interleaves", kx.shape[1]))
    dt = get("dt")
    return SpiralMeta(
        kx=kx, ky=ky, w=w, fov_cm=float(get("fov")), res_mm=float(get("spatial_resolution")),
        repetitions=int(get("repetitions", kx.shape[1])), interleaves=interleaves,
        ga_rotation_deg=float(get("ga_rotation", 360.0 / interleaves)),
        pre_discard=int(get("pre_discard", 0)), arm_ordering=str(get("arm_ordering", "")),
        dt_s=None if dt is None else float(dt))


def write_metafile(path: str | Path, meta: SpiralMeta) -> None:
    """Write ``meta`` as ``kx, ky, kz (zeros), w (1, Ns), param`` like rtspiral_pypulseq (docs/spiral.md §2.2).

    The inverse of :func:`load_metafile`: ``meta.kx``, ``meta.ky`` (Ns, nTR) in 1/m (1-D means one
    TR); ``matrix_size`` = [N, N] with N = round(10·fov_cm/res_mm); ``dt`` omitted when ``dt_s`` is None.
    """
    kx = np.asarray(meta.kx, dtype=np.float64)
    kx = kx.reshape(-1, 1) if kx.ndim == 1 else kx
    ky = np.asarray(meta.ky, dtype=np.float64).reshape(kx.shape)
    n = int(round(10 * meta.fov_cm / meta.res_mm))
    param = {"fov": float(meta.fov_cm), "spatial_resolution": float(meta.res_mm),
             "repetitions": int(meta.repetitions), "interleaves": int(meta.interleaves),
             "ga_rotation": float(meta.ga_rotation_deg), "matrix_size": np.array([n, n], dtype=np.float64),
             "pre_discard": int(meta.pre_discard), "arm_ordering": str(meta.arm_ordering)}
    if meta.dt_s is not None:
        param["dt"] = float(meta.dt_s)
    scipy.io.savemat(str(path), {"kx": kx, "ky": ky, "kz": np.zeros_like(kx),
                                 "w": np.asarray(meta.w, dtype=np.float64).reshape(1, -1), "param": param})


def matrix_size(meta: SpiralMeta, fov_oversampling: float = 1.0) -> int:
    """``int(fov_oversampling · 10 · fov_cm / res_mm)``, e.g. 10·25.6/2 = 128.

    The quotient is rounded to 9 decimals before truncation so that floating-point noise
    (147.99999999997) does not lose a pixel.
    """
    return int(round(fov_oversampling * 10.0 * meta.fov_cm / meta.res_mm, 9))


def grid_coordinates(kx: np.ndarray, ky: np.ndarray, m: int) -> np.ndarray:
    """NUFFT coordinates (arms, Ns, 2) float32 of a trajectory ``kx, ky`` (Ns, arms) in 1/m.

    ``coord = [kx, −ky] · 0.5 · m / kmax`` with ``kmax = max |kx + i·ky|`` over all samples
    and arms, so the outermost sample lies at radius m/2 (docs/spiral.md §3).
    """
    kx = np.asarray(kx, dtype=np.float64)
    ky = np.asarray(ky, dtype=np.float64)
    kmax = float(np.max(np.hypot(kx, ky)))
    if not kmax > 0:
        raise ValueError("trajectory has no sample off k = 0")
    coord = np.stack([kx.T, -ky.T], axis=-1) * (0.5 * m / kmax)
    return coord.astype(np.float32)


def hoge_dcf(kx_full: np.ndarray, ky_full: np.ndarray, dt_s: float, pre_discard: int) -> np.ndarray:
    """Analytic (Hoge) density compensation (Ns,) of arm 0, normalised to max 1 (docs/spiral.md §2.2).

    ``kx_full``, ``ky_full``: arm 0 **including** the ``pre_discard`` samples, (Ns_total,) or
    (Ns_total, arms) of which column 0 is used.  ``g = (dk/dn) / (dt·γ̄)`` by central
    differences (``np.gradient``, one-sided at the ends), ``w = |k|·|g|·|cos(∠k − ∠g)|``
    (|k| times the radial gradient); the first ``pre_discard`` values are dropped and the
    last ``Ns_total // 2`` set to the value where that tail starts.  Central rather than
    rtspiral's backward differences: the chord ``k[n] − k[n−1]`` has a curvature term
    ``|k|·δ²/2`` (δ = angle per sample) in its radial part that biases w away from the
    continuous formula (``w ∝ |k|`` exactly for an Archimedean spiral).
    """
    kx = np.asarray(kx_full, dtype=np.float64)
    ky = np.asarray(ky_full, dtype=np.float64)
    kx, ky = (kx[:, 0], ky[:, 0]) if kx.ndim == 2 else (kx, ky)
    gx = np.gradient(kx) / (dt_s * GAMMA_BAR_HZ_PER_T)
    gy = np.gradient(ky) / (dt_s * GAMMA_BAR_HZ_PER_T)
    w = np.hypot(kx, ky) * np.hypot(gx, gy) * np.abs(np.cos(np.arctan2(kx, ky) - np.arctan2(gx, gy)))
    n_total = kx.size
    w = w[pre_discard:].copy()
    tail = n_total // 2
    if 0 < tail < w.size:
        w[-tail:] = w[-tail]
    peak = float(w.max()) if w.size else 0.0
    if not peak > 0:
        raise ValueError("density compensation is zero everywhere")
    return w / peak


def rotation_matrix(read_dir: Sequence[float], phase_dir: Sequence[float],
                    slice_dir: Sequence[float], patient_position: str) -> np.ndarray:
    """Logical → physical rotation ``R = P·A·S`` (3, 3) (docs/spiral.md §4.2).

    ``A`` has rows ``phase_dir, −read_dir, slice_dir``; ``S`` swaps the first two axes; ``P``
    is the patient-position matrix (HFS, HFP, FFS, FFP, HFDR, HFDL, FFDR, FFDL, as a string or
    the header enum; identity for anything else).
    """
    a = np.array([phase_dir, -np.asarray(read_dir, dtype=np.float64), slice_dir], dtype=np.float64)
    name = getattr(patient_position, "value", patient_position)  # xsd enum or plain string
    p = _PATIENT_POSITION.get(str(name or "").strip().upper(), np.eye(3))
    return p @ a @ _SWAP_XY


def nominal_gradients(kx: np.ndarray, ky: np.ndarray, dt_s: float) -> np.ndarray:
    """Nominal gradients (Ns, arms, 2) in mT/m from k (Ns, arms) in 1/m (docs/spiral.md §4.3).

    ``g[0] = 0``, ``g[n] = 1e3·(k[n] − k[n−1]) / (dt·γ̄)``, returned as ``[gx, −gy]`` (the
    y flip of the grid coordinates is built in).
    """
    k = np.stack([np.asarray(kx, dtype=np.float64), -np.asarray(ky, dtype=np.float64)], axis=-1)
    k = k.reshape(k.shape[0], -1, 2)
    g = np.zeros_like(k)
    g[1:] = np.diff(k, axis=0) * (1e3 / (dt_s * GAMMA_BAR_HZ_PER_T))
    return g


def load_girf(path: str | Path) -> np.ndarray:
    """Variable ``GIRF`` of a .mat file as complex128 (3800, 3): centred spectrum, DC at row
    1900, rows spaced 1/(3800·10 µs), columns the physical x, y, z axes."""
    girf = np.asarray(scipy.io.loadmat(str(path))["GIRF"], dtype=np.complex128)
    if girf.shape != (GIRF_ROWS, 3):
        raise ValueError(f"{path}: GIRF has shape {girf.shape}, expected ({GIRF_ROWS}, 3)")
    return girf


def _girf_response(girf: np.ndarray, n: int) -> np.ndarray:
    """GIRF on a centred grid of ``n`` bins with DC at bin ``n // 2`` (docs/spiral.md §4.4 step 4)."""
    centre = GIRF_ROWS // 2
    if n >= GIRF_ROWS:
        out = np.zeros((n, 3), dtype=np.complex128)
        out[n // 2 - centre:n // 2 - centre + GIRF_ROWS] = girf
        return out
    out = girf[centre - n // 2:centre - n // 2 + n].copy()
    hann = np.hanning(10)  # zero end points: first and last rows become 0
    out[:5] *= hann[:5, None]
    out[-5:] *= hann[5:, None]
    return out


def predict_gradients(g_nominal: np.ndarray, girf: np.ndarray, R: np.ndarray, dt_s: float,
                      t_rr_samples: float) -> np.ndarray:
    """GIRF-predicted gradients (Ns, arms, 3) in mT/m, logical frame (docs/spiral.md §4.4, 1–6).

    ``g_nominal`` (Ns, arms, 2) logical [gx, gy] in mT/m; ``girf`` (3800, 3); ``R`` (3, 3)
    logical → physical.  With ``L = round(38 ms / dt)`` and the ADC shift
    ``τ = 0.85 µs + dt/2 + t_rr_samples·dt``: ``G = R·[gx, gy, 0]`` embedded at
    ``L//2 − Ns//2 + n`` followed by a 200-sample Hann ramp from the last value to 0;
    ``G_pred = Rᵀ · Re F⁻¹{F{G} · GIRF_L(f) · exp(i·2π·f·τ)}`` at the embedding positions,
    ``f = (j − L//2)/(L·dt)`` and GIRF DC on bin ``L//2`` (no off-by-one).  All arms and axes
    go through one real FFT (the real part of the inverse equals the inverse real FFT of
    the Hermitian part of the filter).  ValueError when the readout plus ramp exceeds L.
    """
    g_nominal = np.asarray(g_nominal, dtype=np.float64)
    ns, arms = g_nominal.shape[:2]
    n = int(round(GIRF_DT_S * GIRF_ROWS / dt_s))
    if ns + RAMP_SAMPLES > n:
        raise ValueError(f"readout of {ns * dt_s * 1e3:.2f} ms (+{RAMP_SAMPLES} ramp samples) exceeds "
                         f"the GIRF window of {GIRF_DT_S * GIRF_ROWS * 1e3:.0f} ms")
    R = np.asarray(R, dtype=np.float64)
    physical = np.concatenate([g_nominal, np.zeros((ns, arms, 1))], axis=-1) @ R.T
    start = n // 2 - ns // 2
    embedded = np.zeros((n, arms, 3))
    embedded[start:start + ns] = physical
    ramp = np.hanning(2 * RAMP_SAMPLES)[RAMP_SAMPLES:]
    embedded[start + ns:start + ns + RAMP_SAMPLES] = ramp[:, None, None] * physical[-1]
    tau = ADC_SHIFT_S + dt_s / 2 + t_rr_samples * dt_s
    freq = (np.arange(n) - n // 2) / (n * dt_s)
    response = _girf_response(np.asarray(girf, dtype=np.complex128), n)
    response = np.fft.ifftshift(response * np.exp(2j * np.pi * freq * tau)[:, None], axes=0)
    bins = np.arange(n // 2 + 1)
    hermitian = 0.5 * (response[bins] + np.conj(response[-bins % n]))
    spectrum = scipy.fft.rfft(embedded, axis=0, workers=-1)
    spectrum *= hermitian[:, None, :]
    predicted = scipy.fft.irfft(spectrum, n=n, axis=0, workers=-1)[start:start + ns]
    return predicted @ R


def predicted_kspace(g_predicted: np.ndarray, dt_s: float) -> np.ndarray:
    """``cumsum(g, axis=0) · dt · γ̄ · 1e-4`` (same shape; scale as girf_matlab's k_predicted)."""
    return np.cumsum(g_predicted, axis=0) * (dt_s * GAMMA_BAR_HZ_PER_T * 1e-4)


def girf_coordinates(kx: np.ndarray, ky: np.ndarray, girf: np.ndarray, R: np.ndarray, dt_s: float,
                     m: int, t_rr_samples: float | None = None) -> np.ndarray:
    """GIRF-corrected NUFFT coordinates (arms, Ns, 2) float32 (docs/spiral.md §4.4, 7–8).

    ``kx, ky`` (Ns, arms) in 1/m → :func:`nominal_gradients` → :func:`predict_gradients`
    (``t_rr_samples`` defaults to 3 µs/dt) → :func:`predicted_kspace` → ``[x, y]`` scaled by
    ``0.5·m / max|k_x + i·k_y|`` of the predicted trajectory (outermost sample at m/2).
    """
    t_rr = 3e-6 / dt_s if t_rr_samples is None else t_rr_samples
    g = predict_gradients(nominal_gradients(kx, ky, dt_s), girf, R, dt_s, t_rr)
    k = predicted_kspace(g[..., :2], dt_s)
    kmax = float(np.max(np.hypot(k[..., 0], k[..., 1])))
    if not kmax > 0:
        raise ValueError("predicted trajectory has no sample off k = 0")
    return (k.transpose(1, 0, 2) * (0.5 * m / kmax)).astype(np.float32)
