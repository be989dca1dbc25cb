"""Object, coils and their k-space for ``generate_spiral_dataset.py`` (helper, never run directly).

Object: BART's Shepp-Logan (``bart phantom -k -t`` / ``-x m``), or the modified Shepp-Logan
ellipses of ``tools/_phantom.py`` placed at ``(x0, x1) = (−x/2, −y/2)`` of the FOV, so that the
module output ``flip_x(image)ᵀ`` shows it upright, with the analytic Fourier transform of each
ellipse (``scipy.special.j1``).  Coil maps are sums of 9 plane waves ``e^{i2π f·x}`` with
f ∈ {−½, 0, ½}² cycles/FOV (least-squares fits of coils on a circle around the object), so coil
k-space is ``Σ_f a_cf·O(k − f)``: the object spectrum at 9 shifted copies of the trajectory, no
NUFFT.  (BART 0.8's own ``phantom -s`` allows at most 8 coils and needs minutes.)

Positions: pixel n of an axis is at ``x = (n − m//2)/m`` of the FOV, first image axis =
coordinate 0 (BART/sigpy order).  Scale: the data are the unnormalised Fourier transform of the
coil images, ``Σ_n coil_image[n]·exp(−i2π·k·(n − m//2)/m)`` with k in grid units.  Motion: a shift
``dx`` (pixels, per readout) is the phase ``exp(−i2π·k·dx/m)``.
"""
from __future__ import annotations

import concurrent.futures
import math
import os
from typing import Iterator, NamedTuple

import numpy as np
import scipy.special

import _bart
from tools._phantom import MODIFIED_SHEPP_LOGAN

COIL_FREQUENCIES = np.array([(a, b) for a in (-0.5, 0.0, 0.5) for b in (-0.5, 0.0, 0.5)])
POINTS_PER_TASK = 400_000  # trajectory points per worker task (times 9 shifted copies)


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


class Phantom(NamedTuple):
    """Object and coils of a scan: plane-wave coefficients, the object image and the coil maps."""

    coef: np.ndarray     # (coils, 9)
    image: np.ndarray    # complex64 [m, m]
    maps: np.ndarray     # complex64 [coils, m, m]
    bart: bool

    @property
    def matrix(self) -> int:
        return self.image.shape[-1]


def make_phantom(coils: int, m: int, bart: bool) -> Phantom:
    """BART's (``bart``) or the own object with ``coils`` plane-wave coil maps on an m×m grid."""
    coef = coil_coefficients(coils, m)
    image = bart_phantom_image(m) if bart else own_phantom_image(m)
    return Phantom(coef, image, _maps_from(coef, m).astype(np.complex64), bart)


def simulate_arms(phantom: Phantom, coord_full: np.ndarray, shift: np.ndarray,
                  threads: int | None = None) -> np.ndarray:
    """Data (arms, coils, samples) complex64 of arms with coordinates (arms, samples, 2) and shifts (arms, 2)."""
    m = phantom.matrix
    n_arms, samples = coord_full.shape[:2]
    ksp = coil_kspace(coord_full.reshape(-1, 2), phantom.coef, m, phantom.bart, threads)
    ksp = ksp.reshape(len(phantom.coef), n_arms, samples).transpose(1, 0, 2)
    phase = coord_full[..., 0] * shift[:, 0, None] + coord_full[..., 1] * shift[:, 1, None]
    if np.any(phase):
        ksp = ksp * np.exp(-2j * math.pi / m * phase)[:, np.newaxis, :].astype(np.complex64)
    return np.ascontiguousarray(ksp, dtype=np.complex64)


def simulate_readouts(phantom: Phantom, coord_full: np.ndarray, shifts: np.ndarray, arms: int,
                      workers: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """Noise-free imaging readouts in file order, as blocks ``(start, stop, data)``.

    Readout i (0-based over all slices) is unique arm ``i mod arms mod Ni`` of ``coord_full``
    (Ni, samples, 2) moved by ``shifts[i]``; blocks of about ``POINTS_PER_TASK`` points are
    simulated by ``workers`` threads (default: one per CPU) and yielded in order.
    """
    total, samples = len(shifts), coord_full.shape[1]
    workers = workers or os.cpu_count() or 1
    per_task = max(1, min(total, POINTS_PER_TASK // samples))
    tasks = [(start, min(start + per_task, total)) for start in range(0, total, per_task)]
    threads = 1 if phantom.bart and workers > 1 else None

    def task(bounds: tuple[int, int]) -> np.ndarray:
        start, stop = bounds
        arm_index = np.arange(start, stop) % arms % len(coord_full)
        return simulate_arms(phantom, coord_full[arm_index], shifts[start:stop], threads)

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for (start, stop), data in zip(tasks, pool.map(task, tasks)):
            yield start, stop, data
