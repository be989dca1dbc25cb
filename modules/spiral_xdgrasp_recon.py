"""spiral_xdgrasp_recon: respiratory x cardiac binned spiral reconstruction with BART (XD-GRASP-like).

All arms and waveforms are collected until CLOSE.  Respiration comes from the pilot tone (waveform
1025, channel 0); cardiac triggers from the pilot tone (channel 2, ``pilottone``; channel 4,
``pilottone_derivative``) or the ECG (waveform 0, ``ecg``).  Arms are binned (``modules/_binning.py``),
the first/last ``arm_discard_pre/post`` seconds dropped (0 allowed), coil maps estimated with
``bart nlinv`` from all kept arms, and ``bart pics`` reconstructs every (respiratory, cardiac) bin
with total variation along both bin dimensions (BART TIME and TIME2).  One int16 image per bin is
sent (``image_index = set = respiratory bin``, ``phase = cardiac bin``, one global scale), then the
waveforms are echoed and CLOSE follows (docs/spiral.md §8).  Settings, trajectory (GIRF-predicted
with ``apply_girf``), BART arrays and images: ``_spiral_io`` and ``_spiral_bart``.
Configuration: ``configs/spiral_xdgrasp_config.toml``; missing keys take the defaults below.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

import _bart
import _binning
import _spiral_bart
import _spiral_io
import constants
from _errors import ConfigError
from _spiral_io import SpiralSettings

log = logging.getLogger(__name__)

HISTORY = ["FIRE", "PYTHON", "BART", "XDGRASP"]
TRIGGER_SOURCES = ("pilottone", "pilottone_derivative", "ecg")


@dataclasses.dataclass
class XdGraspConfig(SpiralSettings):
    """TOML keys (top level, ``[reconstruction]`` and ``[binning]``): those of every spiral module and these."""

    CONFIG_NAME = "spiral_xdgrasp_config.toml"

    bart_binary: str = ""
    arm_discard_pre: float = 0.0  # s
    arm_discard_post: float = 0.0  # s
    reg_lambda_resp: float = 0.0005
    reg_lambda_card: float = 0.0005
    num_iter: int = 100
    n_respiratory_bins: int = 4
    n_cardiac_bins: int = 8
    trigger_source: str = "pilottone"
    ecg_pilottone_delay: float = 0.0  # s
    resp_discard: float = 0.1
    fill_small_bins: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.trigger_source not in TRIGGER_SOURCES:
            raise ConfigError(f"trigger_source = {self.trigger_source!r} is not one of {', '.join(TRIGGER_SOURCES)}")
        if self.n_respiratory_bins < 2 or self.n_respiratory_bins % 2 or self.n_cardiac_bins < 1:
            raise ConfigError("n_respiratory_bins must be even >= 2, n_cardiac_bins >= 1")


def pilot_tone(waves: list, count: int) -> np.ndarray:
    """Decoded waveform-1025 channels ``[5, count]``, the messages joined in arrival order."""
    parts = [w.data for w in waves if w.waveform_id == _binning.PILOT_TONE_ID]
    if not parts:
        raise ConfigError("no pilot-tone waveform (id 1025) received; it gives the respiratory signal")
    signals = _binning.decode_pilot_tone(np.concatenate(parts, axis=1))
    if signals.shape[1] < count:
        raise ConfigError(f"pilot tone has {signals.shape[1]} samples for {count} arms")
    return signals[:, :count]


def bins_of(arms: list, waves: list, cfg: XdGraspConfig) -> tuple[np.ndarray, np.ndarray]:
    """Respiratory and cardiac bin of every arm (-1: none)."""
    times = (np.array([a.acquisition_time_stamp for a in arms], dtype=np.float64) - arms[0].acquisition_time_stamp)
    times *= _binning.TICK_S
    tr = float(np.median(np.diff(times))) if len(arms) > 1 else 1.0
    signals = pilot_tone(waves, len(arms))
    if cfg.trigger_source == "ecg":
        triggers = _binning.ecg_triggers(_binning.ecg_trigger_times(waves, arms[0].acquisition_time_stamp), times)
    else:
        channel = 2 if cfg.trigger_source == "pilottone" else 4
        triggers = _binning.shift_triggers(_binning.triggers_from(signals[channel]), cfg.ecg_pilottone_delay, tr)
    resp = _binning.respiratory_bins(signals[0], cfg.n_respiratory_bins, cfg.resp_discard)
    card = _binning.cardiac_bins(triggers, cfg.n_cardiac_bins)
    keep = _binning.discard_counts(len(arms), cfg.arm_discard_pre, cfg.arm_discard_post, tr)
    outside = np.ones(len(arms), bool)
    outside[keep] = False
    resp[outside] = -1
    card[outside] = -1
    return resp, card


def binned_arrays(arms: list, coord: np.ndarray, pre: int, interleaves: int, resp: np.ndarray, card: np.ndarray,
                  cfg: XdGraspConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-space ``(1, Ns, n, coils, 1.., nR, nC)``, trajectory ``(3, Ns, n, 1.., nR, nC)`` and sampling
    pattern ``(1, Ns, n, 1.., nR, nC)``.  With ``fill_small_bins`` every bin is padded to the largest
    with pattern 0, so that ``pics -p`` takes the padding as not measured; otherwise bins are cropped
    to the smallest (an empty bin is then a ConfigError)."""
    nr, ncard = cfg.n_respiratory_bins, cfg.n_cardiac_bins
    members = [[np.flatnonzero((resp == r) & (card == c)) for c in range(ncard)] for r in range(nr)]
    counts = [len(i) for row in members for i in row]
    if min(counts) == 0 and not cfg.fill_small_bins:
        raise ConfigError("a (respiratory, cardiac) bin is empty; set fill_small_bins = true")
    n = max(counts) if cfg.fill_small_bins else min(counts)
    ncoil, ns = arms[0].data.shape[0], coord.shape[1]
    kspace = np.zeros((1, ns, n, ncoil) + (1,) * 6 + (nr, ncard), np.complex64)
    traj = np.zeros((3, ns, n) + (1,) * 7 + (nr, ncard), np.complex64)
    pattern = np.zeros((1, ns, n) + (1,) * 7 + (nr, ncard), np.complex64)
    for r in range(nr):
        for c in range(ncard):
            chosen = [arms[i] for i in members[r][c][:n]]
            if chosen:
                kspace[0, :, :len(chosen), :, 0, 0, 0, 0, 0, 0, r, c] = _spiral_bart.arm_samples(chosen, pre)
                traj[:2, :, :len(chosen), 0, 0, 0, 0, 0, 0, 0, r, c] = _spiral_bart.arm_coordinates(chosen, coord,
                                                                                                  interleaves)
                pattern[0, :, :len(chosen), 0, 0, 0, 0, 0, 0, 0, r, c] = 1
    return kspace, traj, pattern


def process(connection, config, metadata):
    try:
        cfg = XdGraspConfig.load(config, connection)
        meta = _spiral_io.trajectory_meta(metadata, cfg.metafile_paths)
        arms, waves = _spiral_io.collect(connection)
        resp, card = bins_of(arms, waves, cfg)
        trajectory = _spiral_io.trajectory(meta, cfg, metadata, arms[0])
        m, interleaves = trajectory.m, trajectory.arms
        kspace, traj, pattern = binned_arrays(arms, trajectory.coord, meta.pre_discard, interleaves, resp, card, cfg)
        kept = np.flatnonzero((resp >= 0) & (card >= 0))
        all_k, all_t = _spiral_bart.bart_arrays([arms[i] for i in kept], trajectory.coord, meta.pre_discard,
                                                interleaves, 1, len(kept))
        with _bart.BartSession(cfg.bart_binary or None) as session:
            sens = _spiral_bart.coil_maps(session, all_k, all_t, m)
            gpu = _spiral_bart.gpu_option(session, cfg.gpu_device)
            log.info("XD-GRASP: %d x %d bins of up to %d arms (%d arms kept of %d), matrix %d", cfg.n_respiratory_bins,
                     cfg.n_cardiac_bins, kspace.shape[2], len(kept), len(arms), m)
            images = session.run(["pics", *gpu, "-e", "-R", f"T:1024:0:{cfg.reg_lambda_resp}",
                                  "-R", f"T:2048:0:{cfg.reg_lambda_card}", "-i", str(cfg.num_iter),
                                  "-p", "pat", "-t", "traj", "k", "s", "x"],
                                 {"traj": traj, "k": kspace, "s": sens, "pat": pattern})["x"]
        images = np.abs(np.asarray(images).reshape(m, m, cfg.n_respiratory_bins, cfg.n_cardiac_bins))
        peak = float(images.max())  # one scale for all bins
        connection.send_logging(constants.MRD_LOGGING_INFO, "Reconstruction is finished. Sending images...")
        last = arms[kept[-1]]
        for r in range(cfg.n_respiratory_bins):
            for c in range(cfg.n_cardiac_bins):
                connection.send_image(_spiral_io.frame_image(images[:, :, r, c], last, metadata, trajectory.fov, r,
                                                             HISTORY, peak=peak, phase=c, set=r))
        for wave in waves:
            connection.send_waveform(wave)
    finally:
        connection.send_close()
