"""What one synthetic spiral scan is (helper of ``generate_spiral_dataset.py``, never run directly).

:class:`SpiralScan` holds every choice of the command line but where the files go.  The
constants are those the trajectory, the readouts and the waveforms share: ``PRE_DISCARD`` samples
at k = 0 before every arm, ``NOISE_READOUTS`` noise readouts first, time stamps in 2.5 ms ticks
from 10:00:00, one measurement UID, the slice thickness and 0.55 T.
"""
from __future__ import annotations

from dataclasses import dataclass

PRE_DISCARD = 10
NOISE_READOUTS = 5
TICK_S = 2.5e-3
TIME_STAMP_START = 14_400_000  # 10:00:00 in 2.5 ms ticks since midnight
MEASUREMENT_UID = 12345
SLICE_THICKNESS_MM = 8.0
FIELD_STRENGTH_T = 0.55


@dataclass(frozen=True)
class SpiralScan:
    """The scan: trajectory, coils and readouts, noise, motion, physiology, GIRF and phantom.

    Trajectory: ``fov_cm``, ``res_mm`` (matrix ``10·fov/res``), ``interleaves`` unique arms in
    linear or ``golden_angle`` order (``ga_deg``), ``dt_us`` dwell time, ``samples`` per arm (None:
    the gradient-limited minimum).  ``arms`` readouts per slice, ``slices``, ``tr_ms``.  ``noise``
    relative to the object maximum (``seed``).  Motion ``motion_px·sin(2π·motion_hz·t)``;
    respiration ``resp_hz`` / cardiac ``card_hz`` (0 = off) with their shifts per unit signal
    (``resp_px``, ``card_px``) and start phases in cycles; ``waveforms``: ECG and pilot tone.
    ``girf``: GIRF file to simulate at the predicted trajectory (None: nominal); ``bart``: BART's
    phantom.  Every field is the option of its name; the defaults are the command line's
    (``generate_spiral_dataset.parse_args``).
    """

    fov_cm: float
    res_mm: float
    interleaves: int
    golden_angle: bool
    ga_deg: float
    dt_us: float
    samples: int | None
    coils: int
    arms: int
    slices: int
    noise: float
    motion_px: float
    motion_hz: float
    tr_ms: float
    resp_hz: float
    card_hz: float
    resp_px: float
    card_px: float
    resp_phase: float
    card_phase: float
    waveforms: bool
    girf: str | None
    bart: bool
    seed: int

    @property
    def matrix(self) -> int:
        """Image matrix m = round(10·fov_cm/res_mm)."""
        return int(round(10 * self.fov_cm / self.res_mm))

    @property
    def dt_s(self) -> float:
        return self.dt_us * 1e-6

    @property
    def tr_s(self) -> float:
        return self.tr_ms * 1e-3

    @property
    def readouts(self) -> int:
        """Imaging readouts over all slices."""
        return self.arms * self.slices

    @property
    def repetitions(self) -> int:
        """Passes over the unique arms per slice, ``ceil(arms/interleaves)``."""
        return -(-self.arms // self.interleaves)

    @property
    def physiology(self) -> bool:
        """Whether respiratory and cardiac signals are simulated (and their truth written)."""
        return self.resp_hz > 0 or self.card_hz > 0 or self.waveforms
