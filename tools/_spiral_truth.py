"""The ground truth of a ``generate_spiral_dataset.py`` file, frame by frame (helper, never run directly).

Orientation: every truth array in the file is in BART/sigpy order, first image axis = coordinate
0, pixel n at ``x = (n − m//2)/m`` of the FOV.  A module's output pixels are
``flip_x(truth)ᵀ`` = ``truth[::-1].T`` (docs/spiral.md §6.3); :func:`truth_frame` returns that
orientation.

Comparing a reconstruction with the truth: the truth is the sharp phantom sampled on the pixel
grid, the data are band-limited to the k-space disk |k| ≤ m/2, and a spiral's FOV is a circle.
A DCF-gridded, fully sampled frame (m = 64 … 120) therefore reaches an NRMSE (after least-squares
scaling) of only about 0.23–0.34 against ``truth_image``, about 0.19 against
``truth_frame(..., window="disk")`` inside the inscribed circle, and about 0.09–0.12 when the same
Hann window weights the data and the truth (``window="hann"``) inside that circle.
"""
from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np


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
