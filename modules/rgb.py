"""rgb: colours images (or images reconstructed from raw data) with a matplotlib colour map.

The colouring of python-ismrmrd-server's ``invertcontrast`` with ``options = rgb``,
without the inversion.  Image input: images are grouped while
``image_series_index`` stays the same; magnitude images of a group are scaled
together to ``BitsStored``, mapped in float32 from the group's lowest to its
highest value onto 0-1, coloured, multiplied by 255 and truncated to 3-channel
uint16 RGB images, image_type 6, with window keys removed, ``InternalSend = 1``,
``SequenceDescriptionAdditional = FIRE_RGB`` and ``RGB`` appended to the history;
other images are returned unchanged.  Raw input: each slice is reconstructed as
in ``invertcontrast`` (k-space flipped as upstream's, header of the centre line,
``image_index`` from 0), then coloured.

JSON options: ``colormap`` (a matplotlib colour map name, default ``jet``),
``sendOriginal`` (image input: the inputs also come back, in series 99).
"""
import logging

import mrdhelper

import _images

log = logging.getLogger(__name__)

RAW_HISTORY = ["FIRE", "PYTHON"]
IMAGE_HISTORY = ["PYTHON"]
DESCRIPTION = "FIRE_RGB"


def unchanged(pixels, max_value):
    """The identity pixel operation: colour only."""
    return pixels


def process(connection, config, metadata):
    try:
        opts = _images.ImageOptions(
            options="rgb", colormap=mrdhelper.get_json_config_param(config, "colormap", "jet", "str"),
            send_original=mrdhelper.get_json_config_param(config, "sendOriginal", False, "bool"))
        _images.serve(
            connection, metadata,
            on_slice=lambda kspace, index: _images.decorate(
                _images.slice_image(kspace, metadata, index - 1, RAW_HISTORY, ice=True), opts),
            on_group=lambda images: _images.process_group(images, metadata, opts, IMAGE_HISTORY, DESCRIPTION,
                                                          unchanged))
    finally:
        connection.send_close()
