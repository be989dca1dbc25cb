"""simplenufft1arm: real-time spiral reconstruction by sliding-window view sharing (CPU or GPU).

Spiral arms stream in; every ``window_shift`` arms a frame made of the last
``arms_per_frame`` arms of the slice is gridded, Fourier transformed,
coil-combined and sent at once (docs/spiral.md §6, with its quirks fixed (§10):
exact frame footprint, arms placed by ``kspace_encode_step_1``, slices never
mixed, noise/calibration/navigator readouts not gridded, CLOSE always sent).
Configuration: ``configs/rtspiral_vs_config.toml`` (see there), read at every
session; the trajectory comes from ``<metafile_paths>/<tSequenceVariant>.mat``.
Output: int16 magnitude scaled per frame to ``BitsStored`` (or complex64 with
``save_complex``), orientation ``flip_x(image)ᵀ``, FOV x ``fov_oversampling``.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import ismrmrd
import numpy as np

import _backend
import _coils
import _recon
import _spiral
import _spiral_io
import _toml
from mrdsave import SessionRecorder
from _errors import ConfigError
from _gridding import shared_gridder
from _view_sharing import SlidingWindow

log = logging.getLogger(__name__)

CONFIG_NAME = "rtspiral_vs_config.toml"
HISTORY = ["FIRE", "PYTHON", "simplenufft1arm"]


@dataclasses.dataclass
class SpiralConfig:
    """The TOML settings (top level and ``[reconstruction]``), with their defaults."""

    metafile_paths: list = dataclasses.field(default_factory=lambda: ["seq_meta", "/tmp/share/seq_meta"])
    girf_file: str = "GIRF/GIRF_20200221_Duyn_method_coil2.mat"
    save_raw: bool = False
    apply_girf: bool = False
    arms_per_frame: int = 55
    window_shift: int = 17
    fov_oversampling: float = 1.0
    gpu_device: int = 0
    coil_combine: str = "rssq"
    save_complex: bool = False
    ignore_arms_per_frame: bool = False
    kspace_filter: str = "none"

    def __post_init__(self) -> None:
        if self.arms_per_frame < 1 or self.window_shift < 1:
            raise ConfigError("arms_per_frame and window_shift must be >= 1")
        if self.fov_oversampling < 1:
            raise ConfigError(f"fov_oversampling = {self.fov_oversampling} must be >= 1")
        if self.kspace_filter not in ("none", "hann"):
            raise ConfigError(f"kspace_filter = {self.kspace_filter!r} is not none or hann")
        if self.coil_combine not in ("rssq", "adaptive"):
            raise ConfigError(f"coil_combine = {self.coil_combine!r} is not rssq or adaptive")

    @classmethod
    def load(cls, config: Any, connection: Any) -> "SpiralConfig":
        return _toml.load(cls, config, CONFIG_NAME, connection)


class ViewSharingRecon:
    """Trajectory, gridder and window of one session, built from its first imaging arm."""

    def __init__(self, cfg: SpiralConfig, meta: _spiral.SpiralMeta, metadata: Any, first: ismrmrd.Acquisition,
                 backend: _backend.Backend) -> None:
        self.cfg = cfg
        self.metadata = metadata
        self.interleaves = _spiral_io.arm_count(meta)
        self.m = _spiral.matrix_size(meta, cfg.fov_oversampling)
        self.fov = _spiral_io.image_fov(metadata, meta, self.m)
        kx, ky = meta.kx[:, :self.interleaves], meta.ky[:, :self.interleaves]
        if cfg.apply_girf:
            girf = _spiral.load_girf(_toml.resolve(cfg.girf_file))
            rotation = _spiral.rotation_matrix(first.read_dir, first.phase_dir, first.slice_dir,
                                               metadata.measurementInformation.patientPosition.value)
            dt = meta.dt_s or first.sample_time_us * 1e-6
            coord = _spiral.girf_coordinates(kx, ky, girf, rotation, dt, self.m)
        else:
            coord = _spiral.grid_coordinates(kx, ky, self.m)
        dcf, pre_discard = np.asarray(meta.w, dtype=np.float64).ravel(), meta.pre_discard
        samples = coord.shape[1]
        if first.number_of_samples - pre_discard / 2 == samples / 2:  # readout oversampling already removed
            coord, dcf, pre_discard = coord[:, ::2], dcf[::2], pre_discard // 2
        if cfg.kspace_filter == "hann":  # radial Hann window 0.5 + 0.5 cos(pi |k| / kmax), less ringing
            radius = np.hypot(coord[0, :, 0], coord[0, :, 1]) / (self.m / 2)
            dcf = dcf * np.where(radius < 1, 0.5 + 0.5 * np.cos(np.pi * np.minimum(radius, 1)), 0)
        apf, shift = cfg.arms_per_frame, cfg.window_shift
        if cfg.ignore_arms_per_frame:
            apf = shift = meta.interleaves
        self.window = SlidingWindow(shared_gridder(coord, self.m, backend, dcf, pre_discard), apf, shift)
        self.backend = backend
        self.maps = None
        log.info("View sharing on %s: matrix %d, %d arms per frame, a frame every %d arms, %s",
                 backend.name, self.m, apf, shift, cfg.coil_combine)

    def new_slice(self) -> None:
        self.window.reset()
        self.maps = None

    def add(self, acq: ismrmrd.Acquisition) -> bool:
        return self.window.add(_spiral_io.arm_of(acq, self.interleaves), acq.data)

    def frame(self) -> np.ndarray:
        """The current frame, combined over coils, ``[m, m]`` on the host (complex or magnitude)."""
        if self.cfg.coil_combine == "adaptive":
            images = self.window.coil_images()
            if self.maps is None:
                self.maps = _coils.inati_maps(images)
            combined = _coils.combine(images, self.maps)
            return self.backend.to_host(combined if self.cfg.save_complex else abs(combined))
        return self.backend.to_host(self.window.rss())


def frame_image(pixels: np.ndarray, arm: ismrmrd.Acquisition, metadata: Any, fov: tuple[float, float, float],
                window: SlidingWindow, index: int, repetition: int) -> ismrmrd.Image:
    """MRD image of one frame: ``flip_x(pixels)ᵀ``, header from the frame's last arm."""
    oriented = np.ascontiguousarray(pixels[::-1, :].T)
    max_value = _recon.max_value_of(metadata)
    meta = {"DataRole": "Image", "ImageProcessingHistory": HISTORY,
            "NumArmsPerFrame": str(window.arms_per_frame), "GriddingWindowShift": str(window.window_shift)}
    if np.iscomplexobj(oriented):
        data, image_type = oriented.astype(np.complex64), ismrmrd.IMTYPE_COMPLEX
    else:
        scale = max_value / float(oriented.max()) if oriented.max() > 0 else 0.0
        data, image_type = np.around(oriented * scale).astype(np.int16), ismrmrd.IMTYPE_MAGNITUDE
        p1, p99 = np.percentile(data, (1, 99))
        meta.update({"ImageScaleFactor": str(scale), "WindowCenter": str(float((p99 + p1) // 2)),
                     "WindowWidth": str(float(p99 - p1))})
    image = _recon.image_from_readout(data, arm, metadata, index)
    head = image.getHead()
    head.image_type = image_type
    head.repetition = repetition
    head.field_of_view = fov
    image.setHead(head)
    image.meta = ismrmrd.Meta(meta)
    image.meta["ImageRowDir"] = ["{:.18f}".format(v) for v in head.read_dir]
    image.meta["ImageColumnDir"] = ["{:.18f}".format(v) for v in head.phase_dir]
    return image


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
                connection.send_image(frame_image(recon.frame(), item, metadata, recon.fov, recon.window,
                                                  frames, repetition))
                repetition += 1
        log.info("simplenufft1arm sent %d frame(s)", frames)
    finally:
        connection.send_close()
