"""invertcontrast: inverts the contrast of images, or of images reconstructed from raw data.

Raw input: readouts grouped per slice as in ``simplefft`` (noise, calibration,
navigator and phase-correction readouts left out), FFT, root-sum-of-squares,
int16 scaled to ``BitsStored``, then inverted (``max - x``).
Image input: images are grouped while ``image_series_index`` stays the same;
magnitude images (image_type 1 or unset 0) of a group are scaled together to
``BitsStored`` and inverted; other images are returned unchanged with
``Keep_image_geometry = 1``.

JSON options (``invertcontrast.json``): ``options`` = "" | "complex" | "rgb" |
"roi" | "colormap", ``sendOriginal`` (image input), ``colormap`` (for "rgb").
"""
import logging

import ismrmrd

import _images
import _recon
import constants

log = logging.getLogger(__name__)

HISTORY = ["PYTHON", "INVERT"]
DESCRIPTION = "FIRE"


def invert_slice(kspace, metadata, image_index, opts):
    """One inverted int16 image from a finished :class:`_recon.SliceKspace`."""
    max_value = 2 ** _recon.bits_stored(metadata) - 1
    pixels = max_value - _recon.to_int16(kspace.rss_image(), max_value)
    image = _recon.image_from_readout(pixels, kspace.centre_readout(), metadata, image_index)
    image.meta = _recon.display_meta(image, max_value, HISTORY)
    image.meta["SequenceDescriptionAdditional"] = DESCRIPTION
    return _images.decorate(image, opts, max_value)


def process(connection, config, metadata):
    opts = _images.ImageOptions.from_config(config)
    slices = _recon.SliceGrouper(metadata)
    images = []
    image_index = 0

    def send_images():
        connection.send_image(_images.process_group(images, metadata, opts, HISTORY, DESCRIPTION, _images.invert))

    try:
        for item in connection:
            if item is None:
                break
            if isinstance(item, ismrmrd.Acquisition):
                done = slices.add(item)
                if done is not None:
                    image_index += 1
                    connection.send_image(invert_slice(done, metadata, image_index, opts))
            elif isinstance(item, ismrmrd.Image):
                if images and item.image_series_index != images[-1].image_series_index:
                    send_images()
                    images = []
                images.append(item)
            else:
                log.info("invertcontrast ignores %s", type(item).__name__)
        done = slices.flush()
        if done is not None:
            image_index += 1
            connection.send_image(invert_slice(done, metadata, image_index, opts))
            if opts.send_original:
                connection.send_logging(constants.MRD_LOGGING_WARNING, "sendOriginal applies to image input only")
        if images:
            send_images()
    finally:
        connection.send_close()
