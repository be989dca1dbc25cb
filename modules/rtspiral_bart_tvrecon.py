"""rtspiral_bart_tvrecon: spiral frames by BART compressed sensing with temporal total variation.

All arms are collected until CLOSE; consecutive groups of ``arms_per_frame`` arms form the frames.
Coil maps come from ``bart nlinv`` on all arms together (on BART 0.8, without ``-x``, the maps of
the 2x oversampled grid are cropped to the central matrix and normalised over the coils), the data
scale from an adjoint NUFFT (``bart nufft -a``); the frames are reconstructed with ``bart pics``
(ADMM, that fixed scale) and finite differences along time
(``-R T:1024:1024:lambda``), in ``num_chunks`` chunks overlapping by 3 frames, and each chunk's
frames are sent as soon as it is done; received waveforms are echoed before CLOSE (docs/spiral.md §7).
Configuration: ``configs/rtspiral_bart_tvrecon_config.toml``; missing keys take the defaults below.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import ismrmrd
import numpy as np

import _bart
import _recon
import _spiral
import _spiral_io
import _toml
from _errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_NAME = "rtspiral_bart_tvrecon_config.toml"
HISTORY = ["FIRE", "PYTHON", "BART"]
OVERLAP_FRAMES = 3
TIME_DIM = 10


@dataclasses.dataclass
class TvConfig:
    """TOML keys (top level and ``[reconstruction]``)."""

    metafile_paths: list = dataclasses.field(default_factory=lambda: ["seq_meta", "/tmp/share/seq_meta"])
    girf_file: str = "GIRF/GIRF_20200221_Duyn_method_coil2.mat"
    bart_binary: str = ""
    apply_girf: bool = False
    arms_per_frame: int = 7
    num_recon_frames: int = 0  # 0: as many as the arms allow
    num_chunks: int = 1
    fov_oversampling: float = 1.0
    reg_lambda: float = 0.0002
    num_iter: int = 120
    gpu_device: int = -1  # used when the installed BART supports GPUs

    def __post_init__(self) -> None:
        if self.arms_per_frame < 1 or self.num_chunks < 1 or self.num_iter < 1 or self.num_recon_frames < 0:
            raise ConfigError("arms_per_frame, num_chunks, num_iter must be >= 1")


def bart_arrays(arms: list[ismrmrd.Acquisition], coord: np.ndarray, pre_discard: int, interleaves: int,
                frames: int, per_frame: int) -> tuple[np.ndarray, np.ndarray]:
    """k-space ``(1, Ns, A, coils, 1..., F)`` and trajectory ``(3, Ns, A, 1..., F)`` (BART dims, TIME = 10)."""
    used = arms[:frames * per_frame]
    data = np.stack([a.data[:, pre_discard:] for a in used])  # [arms, coils, Ns]
    index = [_spiral_io.arm_of(a, interleaves) for a in used]
    ns, ncoil = data.shape[2], data.shape[1]
    kspace = data.reshape(frames, per_frame, ncoil, ns).transpose(3, 1, 2, 0)  # [Ns, A, coils, F]
    traj = np.zeros((3, ns, per_frame, frames), np.complex64)
    traj[:2] = coord[index].reshape(frames, per_frame, ns, 2).transpose(3, 2, 1, 0)
    shape_k = (1, ns, per_frame, ncoil) + (1,) * (TIME_DIM - 4) + (frames,)
    shape_t = (3, ns, per_frame) + (1,) * (TIME_DIM - 3) + (frames,)
    return kspace.reshape(shape_k).astype(np.complex64), traj.reshape(shape_t)


def coil_maps(session: _bart.BartSession, kspace: np.ndarray, traj: np.ndarray, m: int) -> np.ndarray:
    """``nlinv`` maps of all arms as one frame, ``[m, m, 1, coils]``, unit norm over coils."""
    ns, arms, ncoil = kspace.shape[1], kspace.shape[2] * kspace.shape[-1], kspace.shape[3]
    ksp_all = np.moveaxis(kspace, -1, 2).reshape(1, ns, arms, ncoil)
    traj_all = np.moveaxis(traj, -1, 2).reshape(3, ns, arms)
    grid = ["-x", f"{m}:{m}:1"] if session.capabilities.nlinv_x else []
    sens = session.run(["nlinv", "-d4", "-i", "13", *grid, "-t", "traj", "ksp", "img", "sens"],
                       {"traj": traj_all, "ksp": ksp_all})["sens"]
    sens = np.asarray(sens).reshape(sens.shape[0], sens.shape[1], ncoil)
    start = sens.shape[0] // 2 - m // 2  # without -x the maps cover the 2x oversampled grid
    sens = sens[start:start + m, start:start + m]
    sens = sens / np.maximum(np.sqrt((np.abs(sens) ** 2).sum(-1, keepdims=True)), np.finfo(np.float32).tiny)
    return sens.reshape(m, m, 1, ncoil).astype(np.complex64)


def data_scale(session: _bart.BartSession, kspace: np.ndarray, traj: np.ndarray, sens: np.ndarray, m: int) -> float:
    """The inverse data scale for ``pics -w`` (docs/spiral.md §7.2 step 5): adjoint NUFFT of frames 5 ... n-1
    (all when fewer), coil-combined with the maps; the 90th percentile of the magnitude if the image
    is not dominated by a few bright pixels (max - p90 < 2 (p90 - median)), else the maximum."""
    first = 5 if kspace.shape[-1] > 5 else 0
    grid = ["-x", f"{m}:{m}:1"] if session.capabilities.nufft_x else ["-d", f"{m}:{m}:1"]
    adjoint = session.run(["nufft", "-a", *grid, "traj", "k", "x"],
                          {"traj": traj[..., first:], "k": kspace[..., first:]})["x"]
    adjoint = np.asarray(adjoint).reshape(m, m, sens.shape[-1], -1)
    combined = np.abs((np.conj(sens.reshape(m, m, -1, 1)) * adjoint).sum(axis=2))
    p90, median, peak = np.percentile(combined, 90), np.median(combined), combined.max()
    return float(p90 if peak - p90 < 2 * (p90 - median) else peak)


def chunks(frames: int, count: int) -> list[tuple[int, int, int, int]]:
    """(first, end, keep_first, keep_end) frame ranges of ``count`` chunks overlapping by 3 frames."""
    size = -(-frames // count)
    out = []
    for first in range(0, frames, size):
        end = min(first + size, frames)
        out.append((max(first - OVERLAP_FRAMES, 0), min(end + OVERLAP_FRAMES, frames), first, end))
    return out


def frame_image(pixels: np.ndarray, arm: ismrmrd.Acquisition, metadata: Any, fov: tuple[float, float, float],
                index: int) -> ismrmrd.Image:
    """int16 magnitude image ``flip_x(pixels)ᵀ`` scaled to BitsStored; header from the frame's last arm."""
    max_value = _recon.max_value_of(metadata)
    image = _recon.image_from_readout(_recon.to_int16(np.abs(pixels)[::-1].T, max_value), arm, metadata, index)
    head = image.getHead()
    head.repetition = index
    head.field_of_view = fov
    image.setHead(head)
    image.meta = _recon.display_meta(image, max_value, HISTORY)
    return image


def process(connection, config, metadata):
    try:
        cfg = _toml.load(TvConfig, config, CONFIG_NAME, connection)
        meta = _spiral_io.trajectory_meta(metadata, cfg.metafile_paths)
        arms, waves = _spiral_io.collect(connection)
        frames = len(arms) // cfg.arms_per_frame
        if cfg.num_recon_frames:
            frames = min(frames, cfg.num_recon_frames)
        if frames < 1:
            raise ConfigError(f"{len(arms)} arms are fewer than arms_per_frame = {cfg.arms_per_frame}")
        m = _spiral.matrix_size(meta, cfg.fov_oversampling)
        interleaves = _spiral_io.arm_count(meta)
        fov = _spiral_io.image_fov(metadata, meta, m)
        kx, ky = meta.kx[:, :interleaves], meta.ky[:, :interleaves]
        if cfg.apply_girf:
            first = arms[0]
            rotation = _spiral.rotation_matrix(first.read_dir, first.phase_dir, first.slice_dir,
                                               metadata.measurementInformation.patientPosition.value)
            coord = _spiral.girf_coordinates(kx, ky, _spiral.load_girf(_toml.resolve(cfg.girf_file)), rotation,
                                             meta.dt_s or first.sample_time_us * 1e-6, m)
        else:
            coord = _spiral.grid_coordinates(kx, ky, m)
        kspace, traj = bart_arrays(arms, coord, meta.pre_discard, interleaves, frames, cfg.arms_per_frame)
        with _bart.BartSession(cfg.bart_binary or None) as session:
            sens = coil_maps(session, kspace, traj, m)
            scale = data_scale(session, kspace, traj, sens, m)
            gpu = ["-g"] if cfg.gpu_device >= 0 and session.capabilities.gpu else []
            log.info("TV recon: %d frames of %d arms, matrix %d, %d chunk(s), BART %s%s", frames,
                     cfg.arms_per_frame, m, cfg.num_chunks, session.capabilities.version, " on GPU" if gpu else "")
            for first, end, keep_first, keep_end in chunks(frames, cfg.num_chunks):
                n = end - first
                images = session.run(["pics", *gpu, "-m", "-w", f"{scale:g}", "-S", "-e",
                                      "-R", f"T:1024:1024:{cfg.reg_lambda * n}",
                                      "-i", str(cfg.num_iter), "-t", "traj", "k", "s", "x"],
                                     {"traj": traj[..., first:end], "k": kspace[..., first:end], "s": sens})["x"]
                images = np.asarray(images).reshape(m, m, n)
                connection.send_image([frame_image(images[:, :, f - first], arms[(f + 1) * cfg.arms_per_frame - 1],
                                                   metadata, fov, f) for f in range(keep_first, keep_end)])
        for wave in waves:
            connection.send_waveform(wave)
    finally:
        connection.send_close()
