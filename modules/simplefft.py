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


def reconstruct_group(readouts, metadata, image_index):
    """One int16 image from the readouts of one slice."""
    max_value = 2 ** _recon.bits_stored(metadata) - 1
    kspace = _recon.assemble_kspace(readouts, metadata)
    pixels = _recon.to_int16(_recon.reconstruct_rss(kspace, metadata), max_value)
    centre = readouts[len(readouts) // 2]
    image = _recon.image_from_readout(pixels, centre, metadata, image_index)
    image.meta = _recon.display_meta(image, max_value, HISTORY)
    return image


def process(connection, config, metadata):
    readouts = []
    image_index = 0
    try:
        for item in connection:
            if item is None:
                break
            if not isinstance(item, ismrmrd.Acquisition) or not _recon.is_imaging_readout(item):
                continue
            readouts.append(item)
            if item.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE):
                image_index += 1
                connection.send_image(reconstruct_group(readouts, metadata, image_index))
                readouts = []
        if readouts:
            image_index += 1
            connection.send_image(reconstruct_group(readouts, metadata, image_index))
        log.info("simplefft sent %d image(s)", image_index)
    finally:
        connection.send_close()
