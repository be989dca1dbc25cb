"""Session inputs shared by the spiral modules (never dispatched: leading ``_``): the trajectory
metafile named by the header, and the collection of a whole scan's arms and waveforms."""
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
