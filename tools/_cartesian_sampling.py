"""The phase-encoding pattern and the settings of the Cartesian generator (helper, never run directly): parallel-imaging
undersampling, calibration (ACS) lines and partial Fourier, along ``kspace_encode_step_1`` (ky) and, for
3-D data, ``kspace_encode_step_2`` (kz).

* Undersampling by ``accel``: the lines ``k`` with ``(k - n//2) % accel == 0``, so the centre line
  ``n//2`` is always acquired; in 3-D the same factor along kz.
* ACS: the ``acs`` central lines ``n//2 - acs//2 … n//2 - acs//2 + acs - 1`` (in 3-D a block of ``acs``
  ky lines by ``min(acs, partitions)`` kz lines). Embedded (default): every ACS line is acquired once, in
  the image's line order; as Siemens raw data have it, the ACS lines on the undersampling grid are
  flagged ``ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING`` and those between its lines
  ``ACQ_IS_PARALLEL_CALIBRATION`` (an image reconstruction that leaves calibration readouts out sees the
  plain undersampled grid; a parallel-imaging one uses both, and keeps both in the image). Separate
  (``acs_separate``): the image has the undersampling grid only, and the ACS block is acquired once
  more, flagged ``ACQ_IS_PARALLEL_CALIBRATION``, before all image data.
* Partial Fourier ``partial_fourier = F``: only the last ``round(F * n)`` ky lines (``n - round(F * n)``
  … ``n - 1``) are acquired, the first ones are left out (plus ACS lines wherever they lie).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sampling:
    """What is acquired of the phase-encoding plane; the defaults are a fully sampled scan."""

    accel: int = 1
    acs: int = 0
    acs_separate: bool = False
    partial_fourier: float = 1.0

    @property
    def parallel(self) -> bool:
        """Whether the header gets ``parallelImaging`` (undersampled or with ACS lines)."""
        return self.accel > 1 or self.acs > 0


@dataclass(frozen=True)
class Pattern:
    """The acquired ``(kz, ky)`` lines of one image and of the separate calibration, in acquisition order
    (kz, then ky, ascending); ``calibration`` marks the image's lines inside the ACS block, ``on_grid``
    those on the undersampling grid."""

    image: np.ndarray        # int [lines, 2]: (kz, ky)
    calibration: np.ndarray  # bool [lines]: in the ACS block (flagged PARALLEL_CALIBRATION[_AND_IMAGING])
    on_grid: np.ndarray      # bool [lines]: on the undersampling grid
    separate: np.ndarray     # int [lines, 2]: the separate ACS block, flagged PARALLEL_CALIBRATION

    def limits(self, axis: int) -> tuple[int, int]:
        """(lowest, highest) line acquired along axis 0 (kz) or 1 (ky), image and calibration together."""
        lines = np.concatenate([self.image[:, axis], self.separate[:, axis]])
        return int(lines.min()), int(lines.max())


@dataclass(frozen=True)
class Options:
    """The generator's settings beyond matrix, coils, oversampling, repetitions, noise and slices; the
    defaults give the original fully sampled 2-D dataset."""

    sampling: Sampling = Sampling()
    averages: int = 1
    contrasts: int = 1
    partitions: int = 1            # > 1: a 3-D slab of that many kz partitions (one slab)
    correlation: float = 0.0       # coil noise correlation (tools/_phantom.coil_noise_covariance)
    spread: float = 1.0            # noisiest / quietest coil noise amplitude
    noise_readouts: bool = True    # write the noise readouts (they are drawn in any case)
    noise_only: bool = False       # write the noise readouts only
    measurement_id: str | None = None
    noise_dependency: str | None = None

    @property
    def three_d(self) -> bool:
        return self.partitions > 1


@dataclass
class Readouts:
    """Readouts in file order: their headers, and which k-space line each one holds (indices into the
    ``[contrast, slice, coil, kz, ky, kx]`` k-space)."""

    heads: np.ndarray
    contrast: np.ndarray
    slice: np.ndarray
    kz: np.ndarray
    ky: np.ndarray


def grid_lines(n: int, accel: int, first: int = 0) -> np.ndarray:
    """The lines ``first … n-1`` of the undersampling grid: ``(k - n//2) % accel == 0``."""
    lines = np.arange(first, n)
    return lines[(lines - n // 2) % accel == 0]


def acs_lines(n: int, count: int) -> np.ndarray:
    """The ``count`` central lines of ``n`` (``n//2`` is line ``count//2`` of the block)."""
    count = min(count, n)
    start = n // 2 - count // 2
    return np.arange(start, start + count)


def first_line(n: int, partial_fourier: float) -> int:
    """The first ky line of a partial-Fourier acquisition of ``round(F * n)`` lines."""
    return n - int(round(partial_fourier * n))


def pattern(matrix: int, partitions: int, sampling: Sampling) -> Pattern:
    """The lines acquired for a ``matrix`` (ky) by ``partitions`` (kz; 1 for 2-D) encoding plane."""
    grid_y = grid_lines(matrix, sampling.accel, first_line(matrix, sampling.partial_fourier))
    grid_z = grid_lines(partitions, sampling.accel) if partitions > 1 else np.zeros(1, dtype=int)
    acs_y = acs_lines(matrix, sampling.acs) if sampling.acs else np.zeros(0, dtype=int)
    acs_z = acs_lines(partitions, sampling.acs) if partitions > 1 else np.zeros(1, dtype=int)
    on_grid = np.zeros((partitions, matrix), dtype=bool)
    on_grid[np.ix_(grid_z, grid_y)] = True
    in_acs = np.zeros((partitions, matrix), dtype=bool)
    in_acs[np.ix_(acs_z, acs_y)] = True
    acquired = on_grid if sampling.acs_separate else on_grid | in_acs
    image = np.argwhere(acquired)  # row-major: kz, then ky, ascending
    calibration = np.zeros(len(image), dtype=bool) if sampling.acs_separate else in_acs[image[:, 0], image[:, 1]]
    separate = np.argwhere(in_acs) if sampling.acs_separate else np.zeros((0, 2), dtype=int)
    return Pattern(image, calibration, on_grid[image[:, 0], image[:, 1]], separate)
