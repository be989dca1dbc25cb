"""What the phantom generators share (helper, never run directly): the modified Shepp-Logan ellipse
table and complex Gaussian noise.

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
