"""bartfire: Cartesian images through BART's FFT, as python-ismrmrd-server's module of that name.

The imaging readouts of one slice (up to ``LAST_IN_SLICE``, or CLOSE) fill a zero k-space of the
header's encoded matrix, ``[line, readout, phase, channel]`` (BART's dimension order), by
``kspace_encode_step_1`` and ``idx.phase``; a readout shorter than the encoded readout is
right-aligned (an asymmetric echo is zero-filled at its start), lines outside the matrix are
left out with a warning.  Then, as upstream does:

1. k-space is flipped along line and readout (the orientation Siemens ICE gives), and
   ``bart fft -u -i 3`` (centred, unitary inverse FFT over both) runs through ``modules/_bart.py``;
2. the coils are combined by root-sum-of-squares, all phases are scaled together so that their
   maximum is ``2**BitsStored - 1``, rounded to int16, and cropped to the recon matrix (readout and
   phase oversampling removed).

One image per phase: ``image_index`` = the phase (from 0, as upstream numbers them), series 0,
geometry and counters of the phase's readout nearest the centre line (which Siemens data give in
``idx.user[5]``), the recon-space field of view, ``ImageProcessingHistory = [PYTHON, BART]`` and
the display window.  Images and waveforms that arrive are ignored (one log line).
"""
from __future__ import annotations

import logging
from typing import Any

import ismrmrd
import numpy as np

import _bart
import _recon

log = logging.getLogger(__name__)

HISTORY = ["PYTHON", "BART"]
CENTRE_LINE_USER = 5  # idx.user[5]: the centre line of k-space in Siemens data


def representative_readouts(readouts: list[ismrmrd.Acquisition]) -> dict[int, ismrmrd.Acquisition]:
    """Per phase, the first readout whose line is nearest the centre line ``idx.user[5]``."""
    chosen: dict[int, tuple[int, ismrmrd.Acquisition]] = {}
    for acq in readouts:
        distance = abs(acq.idx.kspace_encode_step_1 - acq.idx.user[CENTRE_LINE_USER])
        if acq.idx.phase not in chosen or distance < chosen[acq.idx.phase][0]:
            chosen[acq.idx.phase] = (distance, acq)
    return {phase: acq for phase, (_, acq) in sorted(chosen.items())}


def collect(readouts: list[ismrmrd.Acquisition], metadata: Any) -> np.ndarray:
    """Zero-filled k-space ``[line, readout, phase, channel]`` (complex64) of the header's encoded matrix."""
    (nx, ny), _, _ = _recon.matrix_sizes(metadata)
    lines = np.array([acq.idx.kspace_encode_step_1 for acq in readouts])
    phases = np.array([acq.idx.phase for acq in readouts])
    samples = np.array([acq.number_of_samples for acq in readouts])
    nx, ny = nx or int(samples.max()), ny or int(lines.max()) + 1
    if samples.max() > nx:
        raise ValueError(f"readouts of {samples.max()} samples do not fit the encoded matrix's {nx}")
    inside = lines < ny
    if not inside.all():
        log.warning("%d readout(s) on lines beyond the encoded matrix (%d lines) left out", (~inside).sum(), ny)
    kspace = np.zeros((ny, nx, int(phases.max()) + 1, readouts[0].data.shape[0]), dtype=np.complex64)
    for n in np.unique(samples[inside]):  # readouts of one length at a time, right-aligned
        chosen = np.flatnonzero(inside & (samples == n))
        data = np.stack([readouts[i].data for i in chosen])  # [readout, channel, sample]
        kspace[lines[chosen], nx - n:, phases[chosen]] = data.transpose(0, 2, 1)
    return kspace


def crop(pixels: np.ndarray, size: int, axis: int) -> np.ndarray:
    """The central ``size`` entries along ``axis`` (starting at ``(n - size) // 2``); all when 0 or larger."""
    n = pixels.shape[axis]
    if not 0 < size < n:
        return pixels
    start = (n - size) // 2
    return np.take(pixels, np.arange(start, start + size), axis=axis)


def reconstruct(readouts: list[ismrmrd.Acquisition], metadata: Any) -> list[ismrmrd.Image]:
    """The int16 images (one per phase) of one slice's readouts."""
    kspace = np.flip(collect(readouts, metadata), axis=(0, 1))
    images = _bart.run_bart(["fft", "-u", "-i", "3", "kspace", "image"], {"kspace": kspace})["image"]
    images = images.reshape(kspace.shape)  # BART drops trailing singleton dimensions
    # Magnitude first, then squared, as upstream computes it, so that the int16 pixels are identical.
    magnitude = np.sqrt(np.square(np.abs(images)).sum(axis=3))  # [line, readout, phase]
    max_value = _recon.max_value_of(metadata)
    pixels = _recon.to_int16(magnitude, max_value)
    _, (rx, ry), _ = _recon.matrix_sizes(metadata)
    pixels = crop(crop(pixels, rx, axis=1), ry, axis=0)
    out = []
    for phase, readout in representative_readouts(readouts).items():
        image = _recon.image_from_readout(np.ascontiguousarray(pixels[:, :, phase]), readout, metadata, phase)
        image.meta = _recon.display_meta(image, max_value, HISTORY)
        out.append(image)
    log.info("bartfire: %d readouts, k-space [line, readout, phase, channel] %s, %d image(s) of %dx%d",
             len(readouts), kspace.shape, len(out), pixels.shape[1], pixels.shape[0])
    return out


def process(connection: Any, config: Any, metadata: Any) -> None:
    ignored = 0

    def ignore(item: Any) -> None:
        nonlocal ignored
        ignored += isinstance(item, (ismrmrd.Image, ismrmrd.Waveform))

    try:
        for readouts in _recon.readout_slices(connection, ignore):
            connection.send_image(reconstruct(readouts, metadata))
        if ignored:
            log.info("bartfire takes raw data only: %d image(s) and waveform(s) ignored", ignored)
    finally:
        connection.send_close()
