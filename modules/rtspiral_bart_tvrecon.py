"""rtspiral_bart_tvrecon: spiral frames by BART compressed sensing with temporal total variation.

All arms are collected until CLOSE; consecutive groups of ``arms_per_frame`` arms form the frames.
Coil maps come from ``bart nlinv`` on all arms together, the data scale from an adjoint NUFFT
(``bart nufft -a``); the frames are reconstructed with ``bart pics`` (ADMM, that fixed scale) and
finite differences along time (``-R T:1024:1024:lambda``), in ``num_chunks`` chunks overlapping by
3 frames, and each chunk's frames are sent as soon as it is done; received waveforms are echoed
before CLOSE (docs/spiral.md §7).  Settings, trajectory, BART arrays and images: ``_spiral_io`` and
``_spiral_bart``.  Configuration: ``configs/rtspiral_bart_tvrecon_config.toml``; missing keys take
the defaults below.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

import _bart
import _spiral_io
from _errors import ConfigError
from _spiral_bart import bart_arrays, coil_maps, gpu_option  # bart_arrays: also bench/bench_bart.py's tv.bart_arrays
from _spiral_io import SpiralSettings

log = logging.getLogger(__name__)

HISTORY = ["FIRE", "PYTHON", "BART"]
OVERLAP_FRAMES = 3


@dataclasses.dataclass
class TvConfig(SpiralSettings):
    """TOML keys (top level and ``[reconstruction]``): those of every spiral module and these."""

    CONFIG_NAME = "rtspiral_bart_tvrecon_config.toml"

    bart_binary: str = ""
    arms_per_frame: int = 7
    num_recon_frames: int = 0  # 0: as many as the arms allow
    num_chunks: int = 1
    reg_lambda: float = 0.0002
    num_iter: int = 120

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.arms_per_frame < 1 or self.num_chunks < 1 or self.num_iter < 1 or self.num_recon_frames < 0:
            raise ConfigError("arms_per_frame, num_chunks, num_iter must be >= 1")


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


def process(connection, config, metadata):
    try:
        cfg = TvConfig.load(config, connection)
        meta = _spiral_io.trajectory_meta(metadata, cfg.metafile_paths)
        arms, waves = _spiral_io.collect(connection)
        frames = len(arms) // cfg.arms_per_frame
        if cfg.num_recon_frames:
            frames = min(frames, cfg.num_recon_frames)
        if frames < 1:
            raise ConfigError(f"{len(arms)} arms are fewer than arms_per_frame = {cfg.arms_per_frame}")
        trajectory = _spiral_io.trajectory(meta, cfg, metadata, arms[0])
        m = trajectory.m
        kspace, traj = bart_arrays(arms, trajectory.coord, meta.pre_discard, trajectory.arms, frames,
                                   cfg.arms_per_frame)
        with _bart.BartSession(cfg.bart_binary or None) as session:
            sens = coil_maps(session, kspace, traj, m)
            scale = data_scale(session, kspace, traj, sens, m)
            gpu = gpu_option(session, cfg.gpu_device)
            log.info("TV recon: %d frames of %d arms, matrix %d, %d chunk(s), BART %s%s", frames,
                     cfg.arms_per_frame, m, cfg.num_chunks, session.capabilities.version, " on GPU" if gpu else "")
            for first, end, keep_first, keep_end in chunks(frames, cfg.num_chunks):
                n = end - first
                images = session.run(["pics", *gpu, "-m", "-w", f"{scale:g}", "-S", "-e",
                                      "-R", f"T:1024:1024:{cfg.reg_lambda * n}",
                                      "-i", str(cfg.num_iter), "-t", "traj", "k", "s", "x"],
                                     {"traj": traj[..., first:end], "k": kspace[..., first:end], "s": sens})["x"]
                images = np.abs(np.asarray(images).reshape(m, m, n))
                connection.send_image([_spiral_io.frame_image(images[:, :, f - first],
                                                              arms[(f + 1) * cfg.arms_per_frame - 1], metadata,
                                                              trajectory.fov, f, HISTORY, repetition=f)
                                       for f in range(keep_first, keep_end)])
        for wave in waves:
            connection.send_waveform(wave)
    finally:
        connection.send_close()
