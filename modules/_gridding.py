"""Kaiser-Bessel gridding of non-Cartesian arms, and the image of a gridded sum (never dispatched).

The adjoint NUFFT of sigpy (``sigpy.nufft_adjoint``: oversampling 1.25, kernel
width 4, its beta, scaling and apodization) is split in two steps so that a
sliding window grids each arm once:

1. :meth:`ArmGridder.grid_arms` - gridding: precomputed tables map the samples
   of the chosen arms onto the oversampled grid ``[G0*G1]`` and add grid sums
   already made (a sliding window's blocks): :class:`CpuArmTables` (one sparse
   product for all arms and coils) or ``_gpu_gridding.GpuArmTables`` (one CUDA
   kernel), as the backend picks;
2. :meth:`ArmGridder.image` - centred inverse FFT of a grid sum, crop to
   ``[m, m]``, scaling and apodization.

Because gridding is linear, the image of the gridded arms equals the sum of
``sigpy.nufft_adjoint`` over the arms (to float rounding).  The kernel is the
exact ``I0(beta * sqrt(1 - x^2))`` (scipy.special.i0); sigpy evaluates the
same function by a polynomial approximation (relative difference ~1e-7).
Reference: Beatty, Nishimura, Pauly, IEEE TMI 24(6), 2005 (kernel and beta).
"""
from __future__ import annotations

import collections
import hashlib
import math
import threading
from typing import Sequence

import numpy as np
import scipy.fft
import scipy.sparse
import scipy.special

from _backend import Backend
from _coils import rss
from _gpu_gridding import GpuArmTables  # CuPy is imported only when used

OVERSAMPLING = 1.25
WIDTH = 4
BETA = math.pi * (((WIDTH / OVERSAMPLING) * (OVERSAMPLING - 0.5)) ** 2 - 0.8) ** 0.5
KEPT_GRIDDERS = 2  # trajectories whose gridding matrices stay in memory between sessions


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


class CpuArmTables:
    """The gridding matrix of all arms on the CPU, with the interface of ``_gpu_gridding.GpuArmTables``.

    One sample-major CSR ``[arms * samples, grid_points]`` (float32): the rows of any set of arms are
    one cheap row selection for SciPy's sparse product, which grids all coils at once.  ``rows``,
    ``cols`` (sample index within the arm as received) and ``weights`` are the entries of all arms'
    gridding matrices, ``arm`` the arm of each.
    """

    def __init__(self, arm: np.ndarray, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray,
                 arms: int, grid_points: int, samples: int) -> None:
        self.grid_points = grid_points
        self.samples = samples
        self.matrix = scipy.sparse.csr_matrix((weights.astype(np.float32), (arm * samples + cols, rows)),
                                              shape=(arms * samples, grid_points))
        self.matrix.sum_duplicates()

    def grid(self, arms: Sequence[int], samples: Sequence[np.ndarray], add: Sequence[np.ndarray] = ()) -> np.ndarray:
        """``[coils, grid_points]`` complex64: the sum of the grids ``add`` (same shape) and the
        gridded ``samples`` (``[coils, samples]`` each) of ``arms``; always a new array."""
        if len(arms):
            rows = (np.asarray(arms, dtype=np.int64)[:, None] * self.samples + np.arange(self.samples)).ravel()
            grid_sum = (self.matrix[rows].T @ np.concatenate(samples, axis=1).T).T
        else:
            grid_sum = np.zeros_like(add[0])
        for part in add:
            grid_sum += part
        return grid_sum

    @staticmethod
    def ifft2(images: np.ndarray) -> np.ndarray:
        """Unnormalised inverse FFT over the last two axes of ``[n, G0, G1]``, overwriting the input."""
        return scipy.fft.ifft2(images, axes=(1, 2), norm="forward", overwrite_x=True, workers=-1)

    @staticmethod
    def crop_rss(images: np.ndarray, apod: np.ndarray, m: int) -> np.ndarray:
        """``apod * sqrt(sum_c |x_c|^2)`` of the centre ``[m, m]`` of ``[coils, G, G]`` images (float32)."""
        start = images.shape[1] // 2 - m // 2
        return rss(images[:, start:start + m, start:start + m]) * apod


class ArmGridder:
    """Gridding matrix of all arms of a trajectory, and the image of gridded samples.

    ``coord`` is ``[arms, Ns, 2]`` in grid units (-m/2 ... m/2; coordinate 0
    drives image axis 0), as for sigpy.  ``dcf`` ``[Ns]`` (density compensation)
    is folded into the matrix, and so are the ``pre_discard`` samples that start
    each readout (weight 0), so arms are gridded as received, ``[coils, pre_discard + Ns]``.
    Grid sums are ``[coils, G0 * G1]``; images ``[coils, m, m]``.

    The matrix lives in ``tables``, the backend's choice of :class:`CpuArmTables` (one
    sample-major CSR) or ``_gpu_gridding.GpuArmTables`` (one grid-major CSR per arm, gathered by
    one kernel per window); both grid, transform and combine through the same three methods, so
    this class has one body for both devices.
    """

    def __init__(self, coord: np.ndarray, m: int, backend: Backend, dcf: np.ndarray | None = None,
                 pre_discard: int = 0) -> None:
        self.m = m
        self.backend = backend
        arms, ns = coord.shape[:2]
        self.arms = arms
        self.samples = pre_discard + ns  # per arm, as received: the first pre_discard get weight 0
        self.grid = (math.ceil(OVERSAMPLING * m), math.ceil(OVERSAMPLING * m))
        scaled = coord.astype(np.float64) * (self.grid[0] / m) + self.grid[0] // 2
        rows, cols, weights = _sparse_weights(scaled.reshape(-1, 2), self.grid)
        # For even grid sizes, (-1)^(g0+g1) on the grid and (-1)^(n0+n1) on the image turn the plain
        # inverse FFT into the centred one (shift theorem), saving the two shift copies.
        self._signed = self.grid[0] % 2 == 0
        if self._signed:
            weights = weights * (1 - 2 * ((rows // self.grid[1] + rows % self.grid[1]) % 2))
        arm, sample = np.divmod(cols, ns)
        if dcf is not None:  # density compensation folded into the matrix: sample s of every arm
            weights = weights * np.asarray(dcf, dtype=np.float64)[sample]
        received = pre_discard + sample  # index in the arm as received
        tables = backend.pick(CpuArmTables, GpuArmTables)
        self.tables = tables(arm, rows, received, weights, arms, self.grid[0] * self.grid[1], self.samples)
        self._apod = backend.xp.asarray(self._apodization(), dtype=backend.xp.float32)
        self._abs_apod = abs(self._apod)

    def _apodization(self) -> np.ndarray:
        """sigpy's scaling times its deapodization over the unnormalised inverse FFT, ``[m, m]``
        (times the output sign pattern)."""
        idx = np.arange(self.m)
        apod = (BETA ** 2 - (np.pi * WIDTH * (idx - self.m // 2) / self.grid[0]) ** 2) ** 0.5
        apod = apod / np.sinh(apod)
        window = np.outer(apod, apod) / self.m  # sigpy: (G0 * G1) / m scaling, 1 / (G0 * G1) from its ifft
        if self._signed:
            n = np.arange(self.m) + self.grid[0] // 2 - self.m // 2
            window *= 1 - 2 * (np.add.outer(n, n) % 2)
        return window

    def grid_arms(self, arms: Sequence[int], samples: Sequence[object], add: Sequence[object] = ()) -> object:
        """Grid sum ``[coils, G0 * G1]`` of arms ``arms`` (their samples ``[coils, pre_discard + Ns]``,
        one array per arm, on the backend's device) plus the grid sums ``add``; always a new array."""
        return self.tables.grid(arms, samples, add)

    def _ifft(self, grid_sum: object) -> object:
        """Unnormalised centred inverse FFT of a grid sum ``[coils, G0 * G1]``: ``[coils, G0, G1]``,
        computed in the grid sum's memory (a fresh array from :meth:`grid_arms`, used up here)."""
        k = grid_sum.reshape(grid_sum.shape[0], *self.grid)  # a view on the GPU, a copy of SciPy's output
        if self._signed:
            return self.tables.ifft2(k)
        fft = self.backend.fft
        return fft.fftshift(self.tables.ifft2(fft.ifftshift(k, axes=(1, 2))), axes=(1, 2))

    def _crop(self, img: object) -> object:
        start = self.grid[0] // 2 - self.m // 2
        return img[:, start:start + self.m, start:start + self.m]

    def image(self, grid_sum: object) -> object:
        """Coil images ``[coils, m, m]`` (complex64) of a grid sum ``[coils, G0 * G1]`` (overwritten)."""
        return self._crop(self._ifft(grid_sum)) * self._apod

    def rss(self, grid_sum: object) -> object:
        """Root-sum-of-squares over coils of :meth:`image`, ``[m, m]`` float32 (``grid_sum`` is overwritten).

        The apodization is real, so it is applied after the coil sum; on the GPU
        crop, sum, root and apodization are one kernel.
        """
        return self.tables.crop_rss(self._ifft(grid_sum), self._abs_apod, self.m)


_kept: collections.OrderedDict[tuple, ArmGridder] = collections.OrderedDict()
_kept_lock = threading.Lock()


def shared_gridder(coord: np.ndarray, m: int, backend: Backend, dcf: np.ndarray | None = None,
                   pre_discard: int = 0) -> ArmGridder:
    """An :class:`ArmGridder` for these arguments, reused from an earlier session when they are equal.

    Building the matrices takes about a second for a 144-arm, 240² trajectory; a repeated scan
    (same metafile, settings and device) gets the last ones back at once.  Gridders hold no
    per-session state, so concurrent sessions may share one.  The last ``KEPT_GRIDDERS`` are kept.
    """
    digest = hashlib.sha1(np.ascontiguousarray(coord, dtype=np.float64).tobytes())
    if dcf is not None:
        digest.update(np.ascontiguousarray(dcf, dtype=np.float64).tobytes())
    key = (digest.hexdigest(), coord.shape, m, backend.gpu, pre_discard, dcf is None)
    with _kept_lock:
        if key in _kept:
            _kept.move_to_end(key)
            return _kept[key]
    gridder = ArmGridder(coord, m, backend, dcf, pre_discard)
    with _kept_lock:
        _kept[key] = gridder
        while len(_kept) > KEPT_GRIDDERS:
            _kept.popitem(last=False)
    return gridder
