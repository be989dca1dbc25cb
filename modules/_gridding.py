"""Kaiser-Bessel gridding of non-Cartesian arms, and the image of a gridded sum (never dispatched).

The adjoint NUFFT of sigpy (``sigpy.nufft_adjoint``: oversampling 1.25, kernel
width 4, its beta, scaling and apodization) is split in two steps so that a
sliding window grids each arm once:

1. :meth:`ArmGridder.grid_arms` - gridding: the rows of a precomputed sparse
   matrix that belong to the chosen arms map their samples onto the oversampled
   grid ``[G0*G1]`` (all arms and coils in one sparse x dense product);
2. :meth:`ArmGridder.image` - centred inverse FFT of a grid sum, crop to
   ``[m, m]``, scaling and apodization.

Because gridding is linear, the image of the gridded arms equals the sum of
``sigpy.nufft_adjoint`` over the arms (to float rounding).  The kernel is the
exact ``I0(beta * sqrt(1 - x^2))`` (scipy.special.i0); sigpy evaluates the
same function by a polynomial approximation (relative difference ~1e-7).
Reference: Beatty, Nishimura, Pauly, IEEE TMI 24(6), 2005 (kernel and beta).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import scipy.sparse
import scipy.special

from _backend import Backend
from _coils import rss

OVERSAMPLING = 1.25
WIDTH = 4
BETA = math.pi * (((WIDTH / OVERSAMPLING) * (OVERSAMPLING - 0.5)) ** 2 - 0.8) ** 0.5


def kaiser_bessel(x: np.ndarray) -> np.ndarray:
    """Kernel value at normalised distance ``x`` (|x| <= 1 inside), 0 outside."""
    inside = np.abs(x) <= 1
    return np.where(inside, scipy.special.i0(BETA * np.sqrt(np.clip(1 - x ** 2, 0, None))), 0.0)


def _sparse_weights(coord: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (grid index), columns (sample index) and weights of one arm's gridding matrix.

    ``coord`` is ``[Ns, 2]`` on the oversampled grid (already scaled and shifted).
    Each sample touches the grid points from ceil(c - W/2) to floor(c + W/2) per
    axis (periodic), as in sigpy's gridding.
    """
    ns = coord.shape[0]
    steps = np.arange(WIDTH + 1)
    axes = []
    for a in range(2):
        c = coord[:, a:a + 1]
        idx = np.ceil(c - WIDTH / 2) + steps  # [Ns, W+1]
        w = np.where(idx <= np.floor(c + WIDTH / 2), kaiser_bessel((idx - c) / (WIDTH / 2)), 0.0)
        axes.append((idx.astype(np.int64) % grid[a], w))
    (i0, w0), (i1, w1) = axes
    rows = (i0[:, :, None] * grid[1] + i1[:, None, :]).reshape(ns, -1)
    weights = (w0[:, :, None] * w1[:, None, :]).reshape(ns, -1) / WIDTH ** 2
    cols = np.broadcast_to(np.arange(ns)[:, None], rows.shape)
    keep = weights != 0
    return rows[keep], cols[keep], weights[keep]


class ArmGridder:
    """Gridding matrix of all arms of a trajectory, and the image of gridded samples.

    ``coord`` is ``[arms, Ns, 2]`` in grid units (-m/2 ... m/2; coordinate 0
    drives image axis 0), as for sigpy.  The matrix is stored sample-major,
    ``[arms * Ns, G0 * G1]`` (CSR), so the rows of any set of arms are one cheap
    row selection; ``dcf`` ``[Ns]`` (density compensation) is folded into it, and so
    are the ``pre_discard`` samples that start each readout (zero columns), so arms
    are gridded as received.  Samples are passed as ``[coils, arms * (pre_discard + Ns)]``
    (arm after arm); images are ``[coils, m, m]``.
    """

    def __init__(self, coord: np.ndarray, m: int, backend: Backend, dcf: np.ndarray | None = None,
                 pre_discard: int = 0) -> None:
        self.m = m
        self.backend = backend
        ns = coord.shape[1]
        self.samples = pre_discard + ns  # per arm, as received: the first pre_discard get weight 0
        self.grid = (math.ceil(OVERSAMPLING * m), math.ceil(OVERSAMPLING * m))
        scaled = coord.astype(np.float64) * (self.grid[0] / m) + self.grid[0] // 2
        rows, cols, weights = _sparse_weights(scaled.reshape(-1, 2), self.grid)
        # For even grid sizes, (-1)^(g0+g1) on the grid and (-1)^(n0+n1) on the image turn the plain
        # inverse FFT into the centred one (shift theorem), saving the two shift copies.
        self._signed = self.grid[0] % 2 == 0
        if self._signed:
            weights = weights * (1 - 2 * ((rows // self.grid[1] + rows % self.grid[1]) % 2))
        if dcf is not None:  # density compensation folded into the matrix: sample s of every arm
            weights = weights * np.asarray(dcf, dtype=np.float64)[cols % ns]
        cols = cols // ns * self.samples + pre_discard + cols % ns
        matrix = scipy.sparse.csr_matrix((weights.astype(np.complex64), (cols, rows)),
                                         shape=(scaled.shape[0] * self.samples, self.grid[0] * self.grid[1]))
        matrix.sum_duplicates()
        self.matrix = matrix if backend.gpu < 0 else backend.sparse.csr_matrix(matrix)
        self._operators: dict[tuple[int, ...], object] = {}
        self._all_arms = None
        self._buffer = None
        self._apod = backend.xp.asarray(self._apodization(), dtype=backend.xp.float32)
        self._abs_apod = abs(self._apod)

    def _apodization(self) -> np.ndarray:
        """sigpy's scaling times its deapodization, ``[m, m]`` (times the output sign pattern)."""
        idx = np.arange(self.m)
        apod = (BETA ** 2 - (np.pi * WIDTH * (idx - self.m // 2) / self.grid[0]) ** 2) ** 0.5
        apod = apod / np.sinh(apod)
        scale = (self.grid[0] * self.grid[1]) / float(self.m * self.m) ** 0.5
        window = scale * np.outer(apod, apod)
        if self._signed:
            n = np.arange(self.m) + self.grid[0] // 2 - self.m // 2
            window *= 1 - 2 * (np.add.outer(n, n) % 2)
        return window

    def _rows(self, arms: Sequence[int]) -> object:
        xp = self.backend.xp
        return (xp.asarray(arms, dtype=xp.int64)[:, None] * self.samples + xp.arange(self.samples)).ravel()

    def prepare_runs(self, lengths: Sequence[int]) -> None:
        """GPU only: precompute the grid-major matrices of every run of consecutive arms
        (``a, a+1, ...`` modulo the arm count) of the given lengths, the sets a sliding window
        grids when arms arrive in order, so that gridding them is one sparse product."""
        if self.backend.gpu < 0:
            return
        arms = self.matrix.shape[0] // self.samples
        for length in set(lengths) - {0}:
            for start in range(arms):
                run = tuple((start + i) % arms for i in range(length))
                self._operators[run] = self.matrix[self._rows(run)].T.tocsr()

    def grid_arms(self, arms: Sequence[int], samples: object) -> object:
        """Grid sum ``[G0*G1, coils]`` of arms ``arms`` with samples ``[coils, len(arms) * (pre_discard + Ns)]``."""
        xp = self.backend.xp
        operator = self._operators.get(tuple(int(a) for a in arms))
        if operator is not None:
            return operator @ samples.T
        rows = self._rows(arms)
        if self.backend.gpu < 0:
            return self.matrix[rows].T @ samples.T
        # GPU, other arm sets: the grid-major matrix of all arms times a buffer holding only these
        # arms (cuSPARSE multiplies that faster than it selects and converts rows).
        if self._all_arms is None:
            self._all_arms = self.matrix.T.tocsr()
        if self._buffer is None or self._buffer.shape[1] != samples.shape[0]:
            self._buffer = xp.zeros((self.matrix.shape[0], samples.shape[0]), dtype=xp.complex64)
        # an arm may occur twice in a window (linear ordering); CuPy adds at indices on real views only
        xp.add.at(self._buffer.view(xp.float32), rows, xp.ascontiguousarray(samples.T).view(xp.float32))
        grid_sum = self._all_arms @ self._buffer
        self._buffer[rows] = 0
        return grid_sum

    def _cropped_ifft(self, grid_sum: object) -> object:
        """Centred inverse FFT of a grid sum ``[G0*G1, coils]``, cropped: ``[coils, m, m]`` (before apodization)."""
        fft = self.backend.fft
        k = grid_sum.T.reshape(grid_sum.shape[1], *self.grid)  # no copy for cuSPARSE's column-major output
        if not self._signed:
            k = fft.ifftshift(k, axes=(1, 2))
        img = fft.ifft2(k, axes=(1, 2), **self.backend.fft_options)
        if not self._signed:
            img = fft.fftshift(img, axes=(1, 2))
        start = self.grid[0] // 2 - self.m // 2
        return img[:, start:start + self.m, start:start + self.m]

    def image(self, grid_sum: object) -> object:
        """Coil images ``[coils, m, m]`` (complex64) of a grid sum ``[G0*G1, coils]``."""
        return self._cropped_ifft(grid_sum) * self._apod

    def rss(self, grid_sum: object) -> object:
        """Root-sum-of-squares over coils of :meth:`image`, ``[m, m]`` float32.

        The apodization is real, so it is applied after the coil sum; on the GPU
        the sum is one fused reduction kernel.
        """
        img = self._cropped_ifft(grid_sum)
        if self.backend.gpu >= 0:
            return _gpu_rss_kernel()(img, axis=0) * self._abs_apod
        return rss(img) * self._abs_apod


def _gpu_rss_kernel() -> object:
    """``sqrt(sum |x|^2)`` over an axis as one CuPy reduction kernel (created once)."""
    global _RSS_KERNEL
    if _RSS_KERNEL is None:
        import cupy
        _RSS_KERNEL = cupy.ReductionKernel("complex64 x", "float32 y", "x.real() * x.real() + x.imag() * x.imag()",
                                           "a + b", "y = sqrt(a)", "0", "mrd_rss")
    return _RSS_KERNEL


_RSS_KERNEL = None
