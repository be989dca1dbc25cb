"""filter: invertcontrast's image path followed by a median filter (the custom module example).

Images are grouped while ``image_series_index`` stays the same; magnitude
images of a group are scaled together to ``BitsStored``, inverted (``max - x``)
and median filtered; other images come back unchanged.  The filter runs on each
image separately over its (y, x) axes (``size = (1, ..., 1, N, N)``), so
neighbouring images, channels and partitions never mix.  Output: history ``[PYTHON, FILT]``, ``SequenceDescriptionAdditional =
FILT``, ``ImageComments`` = "Median filter size N" and the ``comments`` option,
joined by a newline.  Raw data is ignored (one INFO text).

JSON options (``filter.json``): ``filterSize`` (int, 0 = no filtering, default 3),
``comments``, and those of invertcontrast: ``options``, ``sendOriginal``, ``colormap``.
"""
import dataclasses
import functools
import logging

import numpy as np
import scipy.ndimage

import _images
import mrdhelper
from _errors import ConfigError

log = logging.getLogger(__name__)

HISTORY = ["PYTHON", "FILT"]
DESCRIPTION = "FILT"


@dataclasses.dataclass
class FilterOptions:
    """filter_size: median window edge in pixels (0: off); comments: appended to ImageComments."""

    filter_size: int = 3
    comments: str = ""

    def __post_init__(self) -> None:
        if self.filter_size < 0:
            raise ConfigError(f"filterSize {self.filter_size} must be 0 (off) or a positive size")

    @classmethod
    def from_config(cls, config) -> "FilterOptions":
        return cls(mrdhelper.get_json_config_param(config, "filterSize", cls.filter_size, "int"),
                   mrdhelper.get_json_config_param(config, "comments", "", "str"))

    def image_comments(self) -> str:
        parts = [f"Median filter size {self.filter_size}" if self.filter_size else "", self.comments]
        return "\n".join(part for part in parts if part)


def invert_and_filter(pixels: np.ndarray, max_value, filter_size: int) -> np.ndarray:
    """``max_value - x``, then a median filter of ``filter_size`` over the last two (y, x) axes."""
    inverted = _images.invert(pixels, max_value)
    if not filter_size:
        return inverted
    return scipy.ndimage.median_filter(inverted, size=(1,) * (inverted.ndim - 2) + (filter_size, filter_size))


def process(connection, config, metadata):
    try:
        opts = _images.ImageOptions.from_config(config)
        filt = FilterOptions.from_config(config)
        comments = filt.image_comments()
        pixel_op = functools.partial(invert_and_filter, filter_size=filt.filter_size)
        _images.serve(connection, metadata, on_group=lambda images: _images.process_group(
            images, metadata, opts, HISTORY, DESCRIPTION, pixel_op,
            extra_meta={"ImageComments": comments} if comments else None))
    finally:
        connection.send_close()
