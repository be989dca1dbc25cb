"""rgb: colours images (or images reconstructed from raw data) with a matplotlib colour map.

Image input: images are grouped while ``image_series_index`` stays the same;
magnitude images of a group are scaled together to ``BitsStored`` and mapped
through the colour map to 3-channel uint16 (0-255) RGB images, image_type 6,
with window keys removed, ``InternalSend = 1``, ``SequenceDescriptionAdditional =
FIRE_RGB`` and ``RGB`` appended to the history; other images are returned
unchanged.  Raw input: each slice is reconstructed as in ``simplefft``, then
coloured.

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
        max_value = _images.max_value_of(metadata)
        _images.serve(
            connection, metadata,
            on_slice=lambda kspace, index: _images.decorate(
                _images.slice_image(kspace, metadata, index, RAW_HISTORY), opts, max_value),
            on_group=lambda images: _images.process_group(images, metadata, opts, IMAGE_HISTORY, DESCRIPTION,
                                                          unchanged))
    finally:
        connection.send_close()
