"""invertcontrast: inverts the contrast of images, or of images reconstructed from raw data.

Raw input: readouts grouped per slice as in ``simplefft`` (noise, calibration,
navigator and phase-correction readouts left out), FFT, root-sum-of-squares,
int16 scaled to ``BitsStored``, then inverted (``max - x``).
Image input: images are grouped while ``image_series_index`` stays the same;
magnitude images (image_type 1 or unset 0) of a group are scaled together to
``BitsStored`` and inverted; other images are returned unchanged with
``Keep_image_geometry = 1``.  Text messages are logged and otherwise ignored.
"""
import logging

import ismrmrd
import numpy as np

import _recon

log = logging.getLogger(__name__)

HISTORY = ["PYTHON", "INVERT"]
MAGNITUDE_TYPES = (0, ismrmrd.IMTYPE_MAGNITUDE)


def invert_slice(kspace, metadata, image_index):
    """One inverted int16 image from a finished :class:`_recon.SliceKspace`."""
    max_value = 2 ** _recon.bits_stored(metadata) - 1
    pixels = max_value - _recon.to_int16(kspace.rss_image(), max_value)
    image = _recon.image_from_readout(pixels, kspace.centre_readout(), metadata, image_index)
    image.meta = _recon.display_meta(image, max_value, HISTORY)
    image.meta["SequenceDescriptionAdditional"] = "FIRE"
    return image


def invert_image_group(images, metadata):
    """Inverted copies of the magnitude images of one series; other images pass through."""
    max_value = 2 ** _recon.bits_stored(metadata) - 1
    magnitude = [im for im in images if im.image_type in MAGNITUDE_TYPES]
    others = [im for im in images if im.image_type not in MAGNITUDE_TYPES]
    for im in others:
        im.meta["Keep_image_geometry"] = "1"
    if not magnitude:
        return others
    stack = np.abs(np.stack([im.data for im in magnitude]).astype(np.float64))
    inverted = max_value - _recon.to_int16(stack, max_value)
    out = []
    for im, pixels in zip(magnitude, inverted):
        head = im.getHead()
        head.data_type = ismrmrd.DATATYPE_SHORT
        head.image_type = ismrmrd.IMTYPE_MAGNITUDE
        result = ismrmrd.Image(head, data=pixels)
        meta = ismrmrd.Meta(im.meta)
        meta.update(_recon.display_meta(result, max_value, HISTORY))
        meta["SequenceDescriptionAdditional"] = "FIRE"
        result.meta = meta
        out.append(result)
    return others + out


def process(connection, config, metadata):
    slices = _recon.SliceGrouper(metadata)
    images = []
    image_index = 0
    try:
        for item in connection:
            if item is None:
                break
            if isinstance(item, ismrmrd.Acquisition):
                done = slices.add(item)
                if done is not None:
                    image_index += 1
                    connection.send_image(invert_slice(done, metadata, image_index))
            elif isinstance(item, ismrmrd.Image):
                if images and item.image_series_index != images[-1].image_series_index:
                    connection.send_image(invert_image_group(images, metadata))
                    images = []
                images.append(item)
            else:
                log.info("invertcontrast ignores %s", type(item).__name__)
        done = slices.flush()
        if done is not None:
            image_index += 1
            connection.send_image(invert_slice(done, metadata, image_index))
        if images:
            connection.send_image(invert_image_group(images, metadata))
    finally:
        connection.send_close()
