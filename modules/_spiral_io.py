"""Session inputs shared by the spiral modules (never dispatched: leading ``_``): the trajectory
metafile named by the header, the arm a readout belongs to, the field of view of the output
images, and the collection of a whole scan's arms and waveforms."""
from __future__ import annotations

from typing import Any, Sequence

import ismrmrd

import _recon
import _spiral
import _toml
from _errors import ConfigError


def trajectory_meta(metadata: Any, metafile_paths: Sequence[str]) -> _spiral.SpiralMeta:
    """The metafile ``<tSequenceVariant>.mat`` from the configured folders; ConfigError without a hash."""
    seq_hash = _spiral.sequence_hash(metadata)
    if seq_hash is None:
        raise ConfigError("the header has no tSequenceVariant user parameter (sequence hash)")
    return _spiral.load_metafile(_spiral.find_metafile(seq_hash, [_toml.resolve(p) for p in metafile_paths]))


def arm_count(meta: _spiral.SpiralMeta) -> int:
    """The distinct arms of the trajectory, ``param.interleaves``: the first that many metafile
    columns are the arms, and a readout's arm is ``kspace_encode_step_1 mod interleaves``
    (:func:`arm_of`).

    Why interleaves and not ``param.repetitions`` (nTR, one column per TR): the sequence labels TR i
    with ``kspace_encode_step_1 = i mod interleaves`` and repeats its arms with that period, so the
    columns after the first ``interleaves`` repeat them and no label points past them (a label taken
    modulo nTR names the same column).  All three spiral modules use this rule.  ValueError when the
    metafile holds fewer columns than ``interleaves``.
    """
    columns = meta.kx.shape[1]
    if meta.interleaves > columns:
        raise ValueError(f"the metafile holds {columns} trajectory columns for {meta.interleaves} interleaves")
    return meta.interleaves


def arm_of(acq: ismrmrd.Acquisition, arms: int) -> int:
    """The trajectory column of a readout: ``kspace_encode_step_1 mod arms`` (see :func:`arm_count`; the
    modulo keeps a label that counts on past the interleaves on its arm)."""
    return acq.idx.kspace_encode_step_1 % arms


def image_fov(metadata: Any, meta: _spiral.SpiralMeta, m: int) -> tuple[float, float, float]:
    """Field of view (mm) of an ``m x m`` image: the header's recon FOV, x and y scaled by
    ``m / matrix_size(meta)`` (= ``fov_oversampling`` when that gives a whole matrix), so that
    FOV / matrix stays the prescribed resolution; z as given (zeros without a parsed header)."""
    fov = _recon.recon_fov(metadata)
    scale = m / _spiral.matrix_size(meta)
    return (fov[0] * scale, fov[1] * scale, fov[2])


def collect(connection: Any) -> tuple[list[ismrmrd.Acquisition], list[ismrmrd.Waveform]]:
    """Every imaging arm and every waveform until CLOSE (noise, calibration, navigator readouts left out)."""
    arms, waves = [], []
    for item in connection:
        if item is None:
            break
        if isinstance(item, ismrmrd.Acquisition) and _recon.is_imaging_readout(item):
            arms.append(item)
        elif isinstance(item, ismrmrd.Waveform):
            waves.append(item)
    return arms, waves
