"""filterimage: invertcontrast with Pillow's FIND_EDGES filter instead of the inversion.

Image input: images are grouped while ``image_series_index`` stays the same;
magnitude images of a group are scaled together to ``BitsStored``; each 2-D
plane is then scaled to 0-255 uint8 (``round(x * 255 / maxVal)``, as Pillow
filters 8-bit images), filtered with ``PIL.ImageFilter.FIND_EDGES`` and scaled
back to the ``maxVal`` range (``round(e * maxVal / 255)``) in the input's data
type.  Other images come back unchanged.  Raw input: each slice is
reconstructed as in ``invertcontrast`` (k-space flipped as upstream's, header of
the centre line, ``image_index`` from 0), then filtered.  History ``[PYTHON,
FINDEDGES]``, ``SequenceDescriptionAdditional = FINDEDGES``.

JSON options: those of invertcontrast (``options``, ``sendOriginal``, ``colormap``).
"""
import logging

import numpy as np
from PIL import Image, ImageFilter

import _images

log = logging.getLogger(__name__)

HISTORY = ["PYTHON", "FINDEDGES"]
DESCRIPTION = "FINDEDGES"
LEVELS = 255


def find_edges(pixels: np.ndarray, max_value) -> np.ndarray:
    """FIND_EDGES of each ``[y, x]`` plane of ``pixels`` ``[..., y, x]``, on an 8-bit copy."""
    scale = LEVELS / max_value if max_value else 0.0
    planes = np.clip(np.around(pixels.reshape(-1, *pixels.shape[-2:]) * scale), 0, LEVELS).astype(np.uint8)
    edges = np.stack([np.asarray(Image.fromarray(p).filter(ImageFilter.FIND_EDGES)) for p in planes])
    out = edges.reshape(pixels.shape) * (max_value / LEVELS)
    return (np.around(out) if np.issubdtype(pixels.dtype, np.integer) else out).astype(pixels.dtype)


def edge_slice(kspace, metadata, image_index, opts):
    """One edge image from a finished :class:`_recon.SliceKspace`."""
    image = _images.slice_image(kspace, metadata, image_index - 1, HISTORY, find_edges, ice=True)
    image.meta["SequenceDescriptionAdditional"] = DESCRIPTION
    return _images.decorate(image, opts)


def process(connection, config, metadata):
    try:
        opts = _images.ImageOptions.from_config(config)
        _images.serve(
            connection, metadata,
            on_slice=lambda kspace, index: edge_slice(kspace, metadata, index, opts),
            on_group=lambda images: _images.process_group(images, metadata, opts, HISTORY, DESCRIPTION,
                                                          find_edges))
    finally:
        connection.send_close()
