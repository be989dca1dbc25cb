"""simplefft: Cartesian 2-D FFT reconstruction with root-sum-of-squares coil combination.

Readouts are grouped per slice (until ``LAST_IN_SLICE``); noise, calibration,
navigator and phase-correction readouts are left out.  Each group gives one
int16 magnitude image scaled to ``BitsStored`` (default 12 bits), cropped to the
recon matrix (readout oversampling removed).  Images and text that arrive are
ignored; a group left open at CLOSE is reconstructed as well.
"""
import logging

import ismrmrd

import _recon

log = logging.getLogger(__name__)

HISTORY = ["FIRE", "PYTHON"]


def reconstruct_slice(kspace, metadata, image_index):
    """One int16 image from a finished :class:`_recon.SliceKspace`."""
    max_value = 2 ** _recon.bits_stored(metadata) - 1
    pixels = _recon.to_int16(kspace.rss_image(), max_value)
    image = _recon.image_from_readout(pixels, kspace.centre_readout(), metadata, image_index)
    image.meta = _recon.display_meta(image, max_value, HISTORY)
    return image


def process(connection, config, metadata):
    slices = _recon.SliceGrouper(metadata)
    image_index = 0
    try:
        for item in connection:
            if item is None:
                break
            done = slices.add(item) if isinstance(item, ismrmrd.Acquisition) else None
            if done is not None:
                image_index += 1
                connection.send_image(reconstruct_slice(done, metadata, image_index))
        done = slices.flush()
        if done is not None:
            image_index += 1
            connection.send_image(reconstruct_slice(done, metadata, image_index))
        log.info("simplefft sent %d image(s)", image_index)
    finally:
        connection.send_close()
