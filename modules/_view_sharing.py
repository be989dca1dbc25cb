"""Sliding-window view sharing over spiral arms (never dispatched: leading ``_``).

Arms arrive one by one; each is density-compensated and moved to the device
once.  A frame is ready after every ``window_shift`` arms once
``arms_per_frame`` arms have arrived, and holds exactly the last
``arms_per_frame`` arms of the slice: frame k (0-based) covers arms
``[k * shift, k * shift + arms_per_frame)``.

Frames start at multiples of ``window_shift``, so a frame is ``q = apf // shift``
whole blocks of ``shift`` consecutive arms plus the first ``r = apf % shift`` arms
of the next block.  Each whole block is gridded once, when it is complete, and
its grid kept (the last ``q``); at a frame only the ``r`` extra arms are gridded
and the ``q`` block grids added.  Nothing is subtracted, so nothing drifts.
"""
from __future__ import annotations

import collections
from typing import Any

import numpy as np

from _gridding import ArmGridder


class SlidingWindow:
    """Gridded blocks and the arms of the current block, for one slice."""

    def __init__(self, gridder: ArmGridder, arms_per_frame: int, window_shift: int,
                 dcf: np.ndarray, pre_discard: int) -> None:
        self.gridder = gridder
        self.arms_per_frame = arms_per_frame
        self.window_shift = window_shift
        self.pre_discard = pre_discard
        self._dcf = dcf.astype(np.float32)
        self._blocks_per_frame = arms_per_frame // window_shift
        self._blocks: collections.deque[Any] = collections.deque(maxlen=max(self._blocks_per_frame, 1))
        self._current: list[tuple[int, Any]] = []
        self.arms_seen = 0

    def reset(self) -> None:
        """Forget all arms (a new slice starts)."""
        self._blocks.clear()
        self._current = []
        self.arms_seen = 0

    def _grid(self, arms: list[tuple[int, Any]]) -> Any:
        xp = self.gridder.backend.xp
        return self.gridder.grid_arms([arm for arm, _ in arms], xp.stack([s for _, s in arms]))

    def add(self, arm: int, data: np.ndarray) -> bool:
        """Keep one arm (``data`` ``[coils, pre_discard + Ns]``); True when a frame is ready."""
        samples = self.gridder.backend.to_device(data[:, self.pre_discard:] * self._dcf)
        self._current.append((arm, samples))
        self.arms_seen += 1
        if len(self._current) == self.window_shift:
            if self._blocks_per_frame:
                self._blocks.append(self._grid(self._current))
            self._current = []
        excess = self.arms_seen - self.arms_per_frame
        return excess >= 0 and excess % self.window_shift == 0

    def _grid_sum(self) -> Any:
        parts = list(self._blocks)[-self._blocks_per_frame:] if self._blocks_per_frame else []
        extra = len(self._current) if self._blocks_per_frame else self.arms_per_frame
        if extra:
            parts.append(self._grid(self._current[-extra:]))
        grid_sum = parts[0]
        for part in parts[1:]:
            grid_sum = grid_sum + part
        return grid_sum

    def coil_images(self) -> Any:
        """Coil images ``[coils, m, m]`` of the frame's arms (device array, complex64)."""
        return self.gridder.image(self._grid_sum())

    def rss(self) -> Any:
        """Root-sum-of-squares image ``[m, m]`` of the frame's arms (device array, float32)."""
        return self.gridder.rss(self._grid_sum())
