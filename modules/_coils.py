"""Coil combination: root-sum-of-squares and Inati's iterative adaptive maps (never dispatched).

Works on NumPy or CuPy arrays alike (the array module is the input's, ``_backend.array_module``).
Inati's method: Inati, Hansen, Kellman, "A fast optimal method for coil
sensitivity estimation and adaptive coil combination for complex images",
ISMRM 2014 p. 4407 (the iteration of Gadgetron's ``coil_map_Inati_Iter``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

import _backend

SMOOTHING = 32
ITERATIONS = 5
THRESHOLD = 1e-3


def rss(coil_images: Any) -> Any:
    """``sqrt(sum_c |x_c|^2)`` over axis 0 of ``[coils, ...]``."""
    xp = _backend.array_module(coil_images)
    power = coil_images.real ** 2
    power += coil_images.imag ** 2
    return xp.sqrt(power.sum(axis=0))


def tukey(length: int, alpha: float) -> np.ndarray:
    """Symmetric Tukey (tapered cosine) window, as ``scipy.signal.windows.tukey(length, alpha)``.

    Written out because importing ``scipy.signal`` takes about 0.7 s (it imports
    ``scipy.stats``), which a real-time session would pay before its first frame.
    """
    if length == 1:
        return np.ones(1)
    x = np.arange(length) / (length - 1)
    rising = 0.5 * (1 + np.cos(np.pi * (2 * x / alpha - 1)))
    falling = 0.5 * (1 + np.cos(np.pi * (2 * x / alpha - 2 / alpha + 1)))
    return np.where(x < alpha / 2, rising, np.where(x > 1 - alpha / 2, falling, 1.0))


def _lowpass_window(shape: tuple[int, ...], xp: Any) -> Any:
    """Separable k-space window: a Tukey window (alpha 0.8) of min(32, n) points, zero-padded to n per axis."""
    window = None
    for n in shape:
        length = min(SMOOTHING, n)
        taper = tukey(length, 0.8)
        before = (n - length) // 2
        axis = np.pad(taper, (before, n - length - before))
        window = axis if window is None else np.multiply.outer(window, axis)
    return xp.asarray(window, dtype=xp.float32)


def _smooth(maps: Any, window: Any, xp: Any) -> Any:
    """Low-pass each coil map in k-space (centred FFT over the spatial axes)."""
    axes = tuple(range(1, maps.ndim))
    k = xp.fft.fftshift(xp.fft.fftn(xp.fft.ifftshift(maps, axes=axes), axes=axes), axes=axes)
    return xp.fft.fftshift(xp.fft.ifftn(xp.fft.ifftshift(k * window, axes=axes), axes=axes), axes=axes)


def inati_maps(coil_images: Any) -> Any:
    """Adaptive coil maps ``[coils, ...]`` (unit norm over coils) of complex coil images ``[coils, ...]``."""
    xp = _backend.array_module(coil_images)
    im = coil_images.astype(xp.complex128)
    eps = np.finfo(np.float64).eps * float(xp.abs(im).mean())
    window = _lowpass_window(im.shape[1:], xp)
    spatial = tuple(range(1, im.ndim))
    d = im.sum(axis=spatial)
    d = d / xp.linalg.norm(d)
    combined = xp.tensordot(d.conj(), im, axes=1)
    maps = im
    for _ in range(ITERATIONS):
        previous = combined
        maps = _smooth(im * combined.conj(), window, xp)
        maps = maps / (xp.sqrt(xp.sum(xp.abs(maps) ** 2, axis=0)) + eps)
        combined = xp.sum(im * maps.conj(), axis=0)
        d = (maps * combined).sum(axis=spatial)
        d = d / xp.linalg.norm(d)
        phase = xp.tensordot(d.conj(), maps, axes=1)
        phase = phase / (xp.abs(phase) + eps)
        combined = combined * phase
        maps = maps * phase.conj()
        if float(xp.linalg.norm(combined - previous) / xp.linalg.norm(combined)) < THRESHOLD:
            break
    return maps


def combine(coil_images: Any, maps: Any) -> Any:
    """Complex combination ``sum_c conj(M_c) x_c``."""
    xp = _backend.array_module(coil_images)
    return xp.sum(maps.conj() * coil_images, axis=0)
