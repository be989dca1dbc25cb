"""Sliding-window view sharing over spiral arms (never dispatched: leading ``_``).

Arms arrive one by one and are copied once to the device, as received (the
gridding matrix skips their ``pre_discard`` samples), and stay there until gridded.  A frame is ready after
every ``window_shift`` arms once ``arms_per_frame`` arms have arrived, and holds
exactly the last ``arms_per_frame`` arms of the slice: frame k (0-based) covers
arms ``[k * shift, k * shift + arms_per_frame)``.

Frames start at multiples of ``window_shift``, so a frame is ``q = apf // shift``
whole blocks of ``shift`` consecutive arms plus the first ``r = apf % shift`` arms
of the next block.  Each whole block is gridded once, when it is complete, and
its grid kept (the last ``q``), and the sum of the last ``q`` block grids is made
then too; at a frame only the ``r`` extra arms are gridded and that sum added, in
the same call, so the frame's last arm waits for one addition, not ``q``.
Nothing is subtracted, so nothing drifts.
(Density compensation is part of the gridding matrix, see :class:`ArmGridder`.)
"""
from __future__ import annotations

import collections
from typing import Any

import numpy as np

from _gridding import ArmGridder


class SlidingWindow:
    """Gridded blocks and the arms of the current block, for one slice."""

    def __init__(self, gridder: ArmGridder, arms_per_frame: int, window_shift: int) -> None:
        self.gridder = gridder
        self.arms_per_frame = arms_per_frame
        self.window_shift = window_shift
        self._blocks_per_frame = arms_per_frame // window_shift
        self._block_arms = window_shift if self._blocks_per_frame else arms_per_frame
        self._blocks: collections.deque[Any] = collections.deque(maxlen=max(self._blocks_per_frame, 1))
        self._block_sum: Any = None  # grid sum of the last q blocks, once there are q
        self._current: collections.deque[tuple[int, Any]] = collections.deque(maxlen=self._block_arms)
        self.arms_seen = 0
        self._coils = 0
        self._dtype = gridder.backend.xp.complex64
        self._rss_frames = gridder.rss_frames()

    def reset(self) -> None:
        """Forget all arms (a new slice starts)."""
        self._blocks.clear()
        self._block_sum = None
        self._current.clear()
        self.arms_seen = 0

    def frame_args(self) -> tuple[list[int], list[Any], list[Any]]:
        """``(arms, samples, add)`` of the frame now, the arguments of ``ArmGridder.grid_arms``: the
        current block's arms and their samples, and the stored sum of the last ``q`` blocks."""
        return ([arm for arm, _ in self._current], [s for _, s in self._current],
                [] if self._block_sum is None else [self._block_sum])

    def add(self, arm: int, data: Any) -> bool:
        """Keep one arm as received (``data`` ``[coils, pre_discard + Ns]``, complex64, host or device);
        True when a frame is ready.  An arm that does not fit the trajectory raises ValueError (on
        the GPU it would be read out of bounds)."""
        coils, samples = data.shape
        if samples != self.gridder.samples or not 0 <= arm < self.gridder.arms:
            raise ValueError(f"readout of {samples} samples for arm {arm}: the trajectory has "
                             f"{self.gridder.arms} arms of {self.gridder.samples} samples")
        if coils != self._coils:
            if self.arms_seen:
                raise ValueError(f"readout with {coils} coils after readouts with {self._coils}")
            self._coils = coils
        self._current.append((arm, self.gridder.backend.to_device(data, self._dtype)))
        self.arms_seen += 1
        if self._blocks_per_frame and len(self._current) == self.window_shift:
            arms, samples, _ = self.frame_args()
            self._blocks.append(self.gridder.grid_arms(arms, samples))
            self._current.clear()
            if len(self._blocks) == self._blocks_per_frame:
                blocks = list(self._blocks)
                self._block_sum = blocks[0] if len(blocks) == 1 else self.gridder.grid_arms([], [], blocks)
        excess = self.arms_seen - self.arms_per_frame
        return excess >= 0 and excess % self.window_shift == 0

    def _grid_sum(self) -> Any:
        return self.gridder.grid_arms(*self.frame_args())

    def coil_images(self) -> Any:
        """Coil images ``[coils, m, m]`` of the frame's arms (device array, complex64)."""
        return self.gridder.image(self._grid_sum())

    def rss(self) -> np.ndarray:
        """Root-sum-of-squares image ``[m, m]`` of the frame's arms, on the host (NumPy, float32): on
        the GPU gridding, FFT, RSS and the copy are one CUDA graph (``_gpu_frames``)."""
        return self._rss_frames(*self.frame_args())
