"""invertcontrast: inverts the contrast of images, or of images reconstructed from raw data.

Raw input: readouts grouped per slice as in ``simplefft`` (noise, calibration,
navigator and phase-correction readouts left out), k-space flipped in readout
and phase before the FFT as python-ismrmrd-server's invertcontrast does ("to be
consistent with ICE": the image is simplefft's rotated by 180 degrees about the
centre pixel, ``y[n] = x[(N - n) mod N]``), root-sum-of-squares, int16 scaled
to ``BitsStored``, then inverted (``max - x``).  The header comes from the
readout nearest the centre line ``idx.user[5]``; ``image_index`` is 0 for the
first slice, then 1, 2, ...
Image input: images are grouped while ``image_series_index`` stays the same;
magnitude images (image_type 1 or unset 0) of a group are scaled together to
``BitsStored`` and inverted; other images are returned unchanged with
``Keep_image_geometry = 1``.

JSON options (``invertcontrast.json``): ``options`` = "" | "complex" | "rgb" |
"roi" | "colormap", ``sendOriginal`` (image input), ``colormap`` (for "rgb").
``complex``: float32 ``max - x`` without rescaling (raw input: the RSS in ICE's
scale, multiplied by the number of k-space elements); ``rgb``: the inverted
image coloured from its lowest to its highest value (jet by default).
"""
import logging

import _images
import constants

log = logging.getLogger(__name__)

HISTORY = ["PYTHON", "INVERT"]
DESCRIPTION = "FIRE"


def invert_slice(kspace, metadata, image_index, opts):
    """One inverted image from a finished :class:`_recon.SliceKspace` (the first slice is index 0,
    as upstream's, which numbers the images of a slice by their cardiac phase)."""
    image = _images.slice_image(kspace, metadata, image_index - 1, HISTORY, _images.invert, ice=True,
                                as_float=opts.options == "complex")
    image.meta["SequenceDescriptionAdditional"] = DESCRIPTION
    return _images.decorate(image, opts)


def process(connection, config, metadata):
    try:
        opts = _images.ImageOptions.from_config(config)
        got = _images.serve(
            connection, metadata,
            on_slice=lambda kspace, index: invert_slice(kspace, metadata, index, opts),
            on_group=lambda images: _images.process_group(images, metadata, opts, HISTORY, DESCRIPTION,
                                                          _images.invert))
        if got.slices and opts.send_original:
            connection.send_logging(constants.MRD_LOGGING_WARNING, "sendOriginal applies to image input only")
    finally:
        connection.send_close()


# Siemens OpenRecon user interface (docs/modules.md §14): read, never imported, by
# docker/openrecon/build_openrecon.py; the scanner sends the chosen values as JSON parameters.
OPENRECON_UI = [
    {"id": "options", "label": "Output", "type": "choice", "default": "",
     "values": {"": "inverted image", "complex": "float image, not rescaled (image input)",
                "rgb": "colour image (RGB)", "roi": "with an example ROI", "colormap": "with a colour table"},
     "information": "What the inverted images carry"},
    {"id": "sendOriginal", "label": "Send original images", "type": "boolean", "default": False,
     "information": "Image input: also return the unmodified images, in series 99"},
    {"id": "colormap", "label": "RGB colour map", "type": "choice", "default": "jet",
     "values": ["jet", "viridis", "gray", "hot", "bone"], "information": "The matplotlib colour map of the RGB output"},
]
