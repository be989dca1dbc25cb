"""filterkspace: simplefft with a Hanning window applied to k-space (the raw k-space filter example).

Each slice's k-space ``[cha, ky, kx]`` (readout oversampling included) is
multiplied by the separable window ``sqrt(outer(hanning(ny), hanning(nx)))``
before the FFT, which lowers ringing at the cost of resolution; the rest is
``simplefft``: root-sum-of-squares, int16 scaled to ``BitsStored``, readout
oversampling cropped.  ``_recon.SliceKspace`` stores k-space as measured, so
the window is applied to the stored array directly.  Images that arrive are ignored.
"""
import logging

import numpy as np

import _images

log = logging.getLogger(__name__)

HISTORY = ["FIRE", "PYTHON", "HANNING"]


def hanning_window(ny: int, nx: int) -> np.ndarray:
    """float32 ``[ny, nx]`` window ``sqrt(hanning(ny) x hanning(nx))`` (outer product)."""
    return np.sqrt(np.outer(np.hanning(ny), np.hanning(nx))).astype(np.float32)


def filtered_slice(kspace, metadata, image_index):
    """Window the slice's k-space in place, then reconstruct it as simplefft does."""
    kspace.kspace *= hanning_window(*kspace.kspace.shape[1:])
    return _images.slice_image(kspace, metadata, image_index, HISTORY)


def process(connection, config, metadata):
    try:
        _images.serve(connection, metadata,
                      on_slice=lambda kspace, index: filtered_slice(kspace, metadata, index))
    finally:
        connection.send_close()
