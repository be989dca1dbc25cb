"""simplenufft1arm: real-time spiral reconstruction by sliding-window view sharing (CPU or GPU).

Spiral arms stream in; every ``window_shift`` arms a frame made of exactly the last
``arms_per_frame`` arms of the slice is gridded, Fourier transformed, coil-combined and sent at
once (docs/spiral.md §6).  Arms are placed by ``kspace_encode_step_1``, a new slice starts a new
window, noise/calibration/navigator readouts are not gridded, and CLOSE is always sent.
Configuration: ``configs/rtspiral_vs_config.toml`` (see there), read at every session; the
trajectory comes from ``<metafile_paths>/<tSequenceVariant>.mat``.  Output: int16 magnitude scaled
per frame to ``BitsStored`` (or complex64 with ``save_complex``), orientation ``flip_x(image)ᵀ``,
the field of view scaled with the matrix (``_spiral_io``, which also holds the settings base, the
trajectory and the image building this module shares with the BART ones).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
from typing import Any

import ismrmrd
import numpy as np

import _backend
import _coils
import _gpu_gridding
import _recon
import _spiral
import _spiral_io
from mrdsave import SessionRecorder
from _errors import ConfigError
from _gridding import shared_gridder
from _spiral_io import SpiralSettings
from _view_sharing import SlidingWindow

log = logging.getLogger(__name__)

HISTORY = ["FIRE", "PYTHON", "simplenufft1arm"]


@dataclasses.dataclass
class SpiralConfig(SpiralSettings):
    """The TOML settings (top level and ``[reconstruction]``): those of every spiral module and these."""

    CONFIG_NAME = "rtspiral_vs_config.toml"

    gpu_device: int = 0
    save_raw: bool = False
    arms_per_frame: int = 55
    window_shift: int = 17
    coil_combine: str = "rssq"
    save_complex: bool = False
    ignore_arms_per_frame: bool = False
    kspace_filter: str = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.arms_per_frame < 1 or self.window_shift < 1:
            raise ConfigError("arms_per_frame and window_shift must be >= 1")
        if self.kspace_filter not in ("none", "hann"):
            raise ConfigError(f"kspace_filter = {self.kspace_filter!r} is not none or hann")
        if self.coil_combine not in ("rssq", "adaptive"):
            raise ConfigError(f"coil_combine = {self.coil_combine!r} is not rssq or adaptive")


class ViewSharingRecon:
    """Trajectory, gridder and window of one session, built from its first imaging arm."""

    def __init__(self, cfg: SpiralConfig, meta: _spiral.SpiralMeta, metadata: Any, first: ismrmrd.Acquisition,
                 backend: _backend.Backend) -> None:
        self.cfg = cfg
        self.trajectory = trajectory = _spiral_io.trajectory(meta, cfg, metadata, first)
        self.m = trajectory.m
        coord = trajectory.coord
        dcf, pre_discard = np.asarray(meta.w, dtype=np.float64).ravel(), meta.pre_discard
        samples = coord.shape[1]
        if first.number_of_samples - pre_discard / 2 == samples / 2:  # readout oversampling already removed
            coord, dcf, pre_discard = coord[:, ::2], dcf[::2], pre_discard // 2
        if cfg.kspace_filter == "hann":  # radial Hann window 0.5 + 0.5 cos(pi |k| / kmax), less ringing
            radius = np.hypot(coord[0, :, 0], coord[0, :, 1]) / (self.m / 2)
            dcf = dcf * np.where(radius < 1, 0.5 + 0.5 * np.cos(np.pi * np.minimum(radius, 1)), 0)
        apf, shift = cfg.arms_per_frame, cfg.window_shift
        if cfg.ignore_arms_per_frame:
            apf = shift = trajectory.arms
        self.window = SlidingWindow(shared_gridder(coord, self.m, backend, dcf, pre_discard), apf, shift)
        self.backend = backend
        self.maps = None
        self.meta = {"NumArmsPerFrame": str(apf), "GriddingWindowShift": str(shift)}
        log.info("View sharing on %s: matrix %d, %d arms per frame, a frame every %d arms, %s",
                 backend.name, self.m, apf, shift, cfg.coil_combine)

    def new_slice(self) -> None:
        self.window.reset()
        self.maps = None

    def add(self, acq: ismrmrd.Acquisition) -> bool:
        return self.window.add(_spiral_io.arm_of(acq, self.trajectory.arms), acq.data)

    def frame(self) -> np.ndarray:
        """The current frame, combined over coils, ``[m, m]`` on the host (complex or magnitude)."""
        if self.cfg.coil_combine == "adaptive":
            images = self.window.coil_images()
            if self.maps is None:
                self.maps = _coils.inati_maps(images)
            combined = _coils.combine(images, self.maps)
            return self.backend.to_host(combined if self.cfg.save_complex else abs(combined))
        return self.window.rss()

    def frame_image(self, arm: ismrmrd.Acquisition, metadata: Any, index: int, repetition: int) -> ismrmrd.Image:
        """The MRD image of the current frame, header from its last arm ``arm`` (docs/spiral.md §6.3)."""
        return _spiral_io.frame_image(self.frame(), arm, metadata, self.trajectory.fov, index, HISTORY,
                                      window="percentile", keep_geometry=False, meta=self.meta, repetition=repetition)


class _LogOnly:
    """Where the TOML reader's warnings go at start-up, when there is no client: the log alone."""

    def send_logging(self, level: str, text: str) -> None:
        pass


def warm_up() -> None:
    """Called once at server start-up (``Server.preload``, threads mode): when the default
    configuration reconstructs on a GPU and CuPy is installed, CUDA starts on that device and the
    gridding kernels and cuFFT are made ready now, so the first session's first frame does not wait
    for them.  Nothing happens (and nothing is logged) without CuPy."""
    if importlib.util.find_spec("cupy") is None:
        return
    cfg = SpiralConfig.load(None, _LogOnly())
    backend = _backend.select(cfg.gpu_device)
    if backend.gpu >= 0:
        _gpu_gridding.warm_up()
        log.info("GPU %d ready for %s (CUDA, kernels, cuFFT)", backend.gpu, __name__)


def process(connection, config, metadata):
    try:
        cfg = SpiralConfig.load(config, connection)
        meta = _spiral_io.trajectory_meta(metadata, cfg.metafile_paths)
        backend = _backend.select(cfg.gpu_device)
        if cfg.save_raw and connection.recorder is None:
            connection.recorder = SessionRecorder.start(connection.savedataFolder, "simplenufft1arm", True, None,
                                                        ismrmrd.xsd.ToXML(metadata, encoding="utf-8"))
        recon, slice_, repetition, frames = None, None, 0, 0
        for item in connection:
            if item is None:
                break
            if not isinstance(item, ismrmrd.Acquisition) or not _recon.is_imaging_readout(item):
                continue
            if recon is None:
                recon = ViewSharingRecon(cfg, meta, metadata, item, backend)
            if item.idx.slice != slice_:
                slice_, repetition = item.idx.slice, 0
                recon.new_slice()
            if recon.add(item):
                frames += 1
                connection.send_image(recon.frame_image(item, metadata, frames, repetition))
                repetition += 1
        log.info("simplenufft1arm sent %d frame(s)", frames)
    finally:
        connection.send_close()
