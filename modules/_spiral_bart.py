"""BART arrays and calls shared by the two BART spiral modules (never dispatched: leading ``_``).

``rtspiral_bart_tvrecon`` and ``spiral_xdgrasp_recon`` arrange arms in BART's dimension order
(docs/spiral.md §9.1: k-space ``(1, Ns, arms, coils, ...)``, trajectories ``(3, Ns, arms, ...)`` in
grid units with z = 0), estimate coil maps with ``nlinv`` from all arms as one frame
(docs/spiral.md §7.2 step 4) and run ``pics`` on the GPU when asked and supported.
"""
from __future__ import annotations

from typing import Sequence

import ismrmrd
import numpy as np

import _bart
import _spiral_io

TIME_DIM = 10  # BART's TIME dimension; TIME2 is the next


def arm_samples(arms: Sequence[ismrmrd.Acquisition], pre_discard: int) -> np.ndarray:
    """The samples of ``arms`` after ``pre_discard``, ``[Ns, arms, coils]``."""
    return np.stack([a.data[:, pre_discard:] for a in arms]).transpose(2, 0, 1)


def arm_coordinates(arms: Sequence[ismrmrd.Acquisition], coord: np.ndarray, interleaves: int) -> np.ndarray:
    """The coordinates of ``arms`` (their columns of ``coord``, :func:`_spiral_io.arm_of`), ``[2, Ns, arms]``."""
    return coord[[_spiral_io.arm_of(a, interleaves) for a in arms]].transpose(2, 1, 0)


def bart_arrays(arms: list[ismrmrd.Acquisition], coord: np.ndarray, pre_discard: int, interleaves: int,
                frames: int, per_frame: int) -> tuple[np.ndarray, np.ndarray]:
    """k-space ``(1, Ns, A, coils, 1..., F)`` and trajectory ``(3, Ns, A, 1..., F)`` (BART dims, TIME = 10)
    of the first ``F * A`` arms: frame f holds arms ``f*A ... f*A + A - 1``."""
    used = arms[:frames * per_frame]
    samples = arm_samples(used, pre_discard)  # [Ns, F*A, coils]
    ns, ncoil = samples.shape[0], samples.shape[2]
    kspace = samples.reshape(ns, frames, per_frame, ncoil).transpose(0, 2, 3, 1)  # [Ns, A, coils, F]
    traj = np.zeros((3, ns, per_frame, frames), np.complex64)
    traj[:2] = arm_coordinates(used, coord, interleaves).reshape(2, ns, frames, per_frame).transpose(0, 1, 3, 2)
    shape_k = (1, ns, per_frame, ncoil) + (1,) * (TIME_DIM - 4) + (frames,)
    shape_t = (3, ns, per_frame) + (1,) * (TIME_DIM - 3) + (frames,)
    return kspace.reshape(shape_k).astype(np.complex64), traj.reshape(shape_t)


def coil_maps(session: _bart.BartSession, kspace: np.ndarray, traj: np.ndarray, m: int) -> np.ndarray:
    """``nlinv`` maps of all arms as one frame, ``[m, m, 1, coils]``, unit norm over coils.

    BART versions without ``nlinv -x`` (0.8) return maps on the 2x oversampled grid; the central
    ``m x m`` is cut out.
    """
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


def gpu_option(session: _bart.BartSession, gpu_device: int) -> list[str]:
    """``["-g"]`` for ``pics`` when a GPU is asked for (``gpu_device >= 0``) and this BART has GPU support."""
    return ["-g"] if gpu_device >= 0 and session.capabilities.gpu else []
