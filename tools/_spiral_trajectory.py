"""The spiral trajectory of ``generate_spiral_dataset.py`` and its metafile (helper, never run directly).

Arm 0 is the constant-density spiral ``k(θ) = A·θ·e^{iθ}``, ``A = Ni/(2π·FOV)``, integrated
numerically under the gradient limits (24 mT/m, 150 T/m/s) and sampled at ``t_n = n·dt`` until
``kmax = 1/(2·res)`` (``samples`` slows it down to exactly that many samples).  Arm i is rotated by
``360°·i/Ni`` (linear) or ``(i·GA) mod 360°`` (golden angle).  The metafile contents
(:class:`_spiral.SpiralMeta`, docs/spiral.md §2.2) are the Ni unique arms without the pre-discard
samples and the Hoge DCF of the readout with them; the sequence hash is the MD5 hex digest of the
float64 bytes of ``kx`` then ``ky``.  The data are simulated at the grid coordinates of the
metafile (``_spiral.grid_coordinates``) or, with a GIRF file, at the GIRF-predicted ones (identity
directions, HFS).
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

import _spiral
from tools._spiral_scan import PRE_DISCARD, SpiralScan

GAMMA_BAR = _spiral.GAMMA_BAR_HZ_PER_T
GMAX_T_PER_M = 24e-3
SMAX_T_PER_M_S = 150.0


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


class Design(NamedTuple):
    """The designed trajectory: the metafile contents and the sequence hash that names the metafile."""

    meta: _spiral.SpiralMeta
    seq_hash: str

    @property
    def samples(self) -> int:
        """Samples per arm after the pre-discard ones."""
        return self.meta.kx.shape[0]


def design(scan: SpiralScan) -> Design:
    """The Ni unique arms of ``scan``, their Hoge DCF and hash (ValueError for too few samples)."""
    arm0 = spiral_arm(scan.fov_cm, scan.res_mm, scan.interleaves, scan.dt_s, scan.samples)
    kx, ky = rotate_arms(arm0, arm_angles_deg(scan.interleaves, scan.golden_angle, scan.ga_deg))
    full0 = np.concatenate([np.zeros(PRE_DISCARD, dtype=complex), arm0])
    meta = _spiral.SpiralMeta(
        kx=kx, ky=ky, w=_spiral.hoge_dcf(full0.real, full0.imag, scan.dt_s, PRE_DISCARD),
        fov_cm=scan.fov_cm, res_mm=scan.res_mm, repetitions=scan.interleaves, interleaves=scan.interleaves,
        ga_rotation_deg=scan.ga_deg if scan.golden_angle else 360.0 / scan.interleaves,
        pre_discard=PRE_DISCARD, arm_ordering="ga" if scan.golden_angle else "linear", dt_s=scan.dt_s)
    return Design(meta, trajectory_hash(kx, ky))


def write_metafile(designed: Design, folder: str | Path) -> Path:
    """``<folder>/<hash>.mat`` (the folder created if needed, the file overwritten); its path."""
    path = Path(folder) / f"{designed.seq_hash}.mat"
    path.parent.mkdir(parents=True, exist_ok=True)
    _spiral.write_metafile(path, designed.meta)
    return path


def simulation_coordinates(designed: Design, scan: SpiralScan) -> np.ndarray:
    """Grid coordinates (Ni, Ns, 2) float32 the data are simulated at: nominal, or GIRF-predicted."""
    meta, m = designed.meta, scan.matrix
    if scan.girf is None:
        return _spiral.grid_coordinates(meta.kx, meta.ky, m)
    rot = _spiral.rotation_matrix((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), "HFS")
    return _spiral.girf_coordinates(meta.kx, meta.ky, _spiral.load_girf(scan.girf), rot, scan.dt_s, m)


def readout_coordinates(coord: np.ndarray) -> np.ndarray:
    """Coordinates (Ni, PRE_DISCARD + Ns, 2) of whole readouts: the pre-discard samples at k = 0, then the arm."""
    return np.concatenate([np.zeros((len(coord), PRE_DISCARD, 2), np.float32), coord], axis=1)
