"""What the phantom generators share (helper, never run directly): the modified Shepp-Logan ellipse
table and complex Gaussian noise, white or correlated between coils with a known covariance.

Toft's modified Shepp-Logan phantom: one row per ellipse, (intensity, semi-axis a along x,
semi-axis b along y, centre x0, centre y0, rotation angle in degrees), in a [-1, 1] square.
"""
from __future__ import annotations

import numpy as np

MODIFIED_SHEPP_LOGAN = (
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
)


def complex_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Complex Gaussian noise, complex64 of ``shape``, with ``E|n|^2 = sigma^2`` (float32 draws)."""
    parts = rng.standard_normal(shape + (2,), dtype=np.float32)
    parts *= np.float32(sigma / np.sqrt(2.0))
    return parts.view(np.complex64)[..., 0]


def coil_noise_covariance(coils: int, sigma: float, correlation: float = 0.0, spread: float = 1.0) -> np.ndarray:
    """The coil noise covariance ``C = E[n n^H]`` of one k-space sample; complex128 ``[coils, coils]``.

    ``C = sigma^2 * G R G / mean(diag(G R G))`` with ``R[i, j] = correlation^|i-j| * exp(0.5j * (i - j))``
    (Hermitian, positive definite for ``0 <= correlation < 1``) and ``G`` the diagonal of per-coil noise
    gains ``spread^(c / (coils - 1) - 1/2)``: the noisiest coil's noise amplitude is ``spread`` times the
    quietest's; the mean noise power per coil stays ``sigma^2``.  ``correlation = 0``, ``spread = 1`` is
    white noise, ``sigma^2 * I``.
    """
    index = np.arange(coils)
    lag = index[:, np.newaxis] - index[np.newaxis, :]
    r = correlation ** np.abs(lag) * np.exp(0.5j * lag)
    gains = spread ** (index / max(coils - 1, 1) - 0.5)
    cov = gains[:, np.newaxis] * r * gains[np.newaxis, :]
    return sigma**2 * cov / np.mean(np.diag(cov).real)


def correlated_noise(rng: np.random.Generator, shape: tuple[int, ...], covariance: np.ndarray) -> np.ndarray:
    """Complex Gaussian noise, complex64 ``shape = (..., coils, samples)``, whose coil vectors ``n`` (axis -2)
    have ``E[n n^H] = covariance``: ``L @ w`` with ``L`` the lower Cholesky factor and ``w`` unit white noise."""
    lower = np.linalg.cholesky(covariance).astype(np.complex64)
    white = complex_noise(rng, shape, 1.0)
    return np.matmul(lower, white).astype(np.complex64, copy=False)
