"""simplefft: Cartesian 2-D FFT reconstruction with root-sum-of-squares coil combination.

Readouts are grouped per slice (until ``LAST_IN_SLICE``); noise, calibration,
navigator and phase-correction readouts are left out.  Each group gives one
int16 magnitude image scaled to ``BitsStored`` (default 12 bits), cropped to the
recon matrix (readout oversampling removed).  As python-ismrmrd-server's
simplefft: k-space is transformed as measured (no flip), the header is the
slice's first readout's (without its flags), no ``Keep_image_geometry``;
``image_index`` counts the slices from 1.  Images that arrive are ignored
(one INFO text says so); a group left open at CLOSE is reconstructed as well.
With the JSON parameter ``prewhiten`` true, every readout is first pre-whitened with the session's noise
readouts or its Noise dependency (``_noise.PrewhitenedConnection``, docs/modules.md §20).
"""
import logging

import mrdhelper

import _images
import _noise

log = logging.getLogger(__name__)

HISTORY = ["FIRE", "PYTHON"]


def reconstruct_slice(kspace, metadata, image_index):
    """One int16 image from a finished :class:`_recon.SliceKspace`."""
    return _images.slice_image(kspace, metadata, image_index, HISTORY)


def process(connection, config, metadata):
    try:
        if mrdhelper.get_json_config_param(config, "prewhiten", False, "bool"):
            connection = _noise.PrewhitenedConnection(connection, metadata)
        got = _images.serve(connection, metadata,
                            on_slice=lambda kspace, index: reconstruct_slice(kspace, metadata, index))
        log.info("simplefft sent %d image(s)", got.slices)
    finally:
        connection.send_close()
