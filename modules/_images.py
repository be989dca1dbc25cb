"""Shared image-processing steps of the image modules (never dispatched: leading ``_``).

``invertcontrast`` and ``filter`` process a series group the same way: pick the
magnitude images, scale them together to ``BitsStored``, apply the module's
pixel operation, decorate the result (ROI, colour table or RGB, per the JSON
``options``), and optionally send the originals back in series 99.  Options are
read once into :class:`ImageOptions`; bad values raise :class:`ConfigError`.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import ismrmrd
import matplotlib
import numpy as np

import mrdhelper
from connection import MrdError

import _recon

log = logging.getLogger(__name__)

OPTION_CHOICES = ("", "complex", "rgb", "roi", "colormap")
MAGNITUDE_TYPES = (0, ismrmrd.IMTYPE_MAGNITUDE)
ORIGINALS_SERIES = 99
COLOUR_TABLE = "MicroDeltaHotMetal.pal"
WINDOW_KEYS = ("WindowCenter", "WindowWidth")


class ConfigError(MrdError):
    """A module option has a value the module cannot use."""


@dataclasses.dataclass
class ImageOptions:
    """JSON options of the image modules (``parameters`` of the JSON text; strings on the wire).

    options:       "" (int16), "complex" (float32, no rescaling), "rgb", "roi" or "colormap"
    send_original: also return the unmodified input images, in series 99 (image input only)
    colormap:      matplotlib colour map used by "rgb"
    """

    options: str = ""
    send_original: bool = False
    colormap: str = "jet"

    def __post_init__(self) -> None:
        if self.options not in OPTION_CHOICES:
            raise ConfigError(f"options '{self.options}' is not one of {', '.join(map(repr, OPTION_CHOICES))}")
        if self.colormap not in matplotlib.colormaps:
            raise ConfigError(f"colormap '{self.colormap}' is not a matplotlib colour map")

    @classmethod
    def from_config(cls, config: Any, send_original: bool = False) -> "ImageOptions":
        """Options from the module's ``config`` argument (name, text or JSON dict)."""
        return cls(options=mrdhelper.get_json_config_param(config, "options", "", "str"),
                   send_original=mrdhelper.get_json_config_param(config, "sendOriginal", send_original, "bool"),
                   colormap=mrdhelper.get_json_config_param(config, "colormap", "jet", "str"))


def to_rgb(gray: np.ndarray, max_value: int, colormap: str = "jet") -> np.ndarray:
    """RGB of a single-channel ``[1, z, y, x]`` array: ``[3, z, y, x]`` uint16 in 0-255."""
    if gray.shape[0] != 1:
        raise ConfigError(f"RGB output needs single-channel images, got {gray.shape[0]} channels")
    colours = matplotlib.colormaps[colormap](np.clip(gray[0] / max_value, 0.0, 1.0))[..., :3]
    return np.moveaxis(np.around(colours * 255), -1, 0).astype(np.uint16)


def example_roi(nx: int, ny: int) -> list[str]:
    """A red heart-shaped polygon near the bottom-right corner, 10 % of the image size (``ROI_example``)."""
    t = np.linspace(0, 2 * np.pi, 25)
    hx = 16 * np.sin(t) ** 3
    hy = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    x = 0.75 * nx + hx / 32 * 0.1 * nx
    y = 0.75 * ny + hy / 32 * 0.1 * ny
    return mrdhelper.create_roi(x.tolist(), y.tolist(), rgb=(1, 0, 0), thickness=1)


def decorate(image: ismrmrd.Image, opts: ImageOptions, max_value: int) -> ismrmrd.Image:
    """Apply the ``roi``, ``colormap`` or ``rgb`` option to an output image."""
    if opts.options == "roi":
        image.meta["ROI_example"] = example_roi(image.matrix_size[0], image.matrix_size[1])
    elif opts.options == "colormap":
        image.meta["LUTFileName"] = COLOUR_TABLE
    elif opts.options == "rgb":
        head = image.getHead()
        head.image_type = ismrmrd.IMTYPE_RGB
        head.data_type = ismrmrd.DATATYPE_USHORT
        rgb = ismrmrd.Image(head, data=to_rgb(image.data, max_value, opts.colormap))
        meta = ismrmrd.Meta({k: v for k, v in image.meta.items() if k not in WINDOW_KEYS})
        meta["InternalSend"] = "1"
        meta["SequenceDescriptionAdditional"] = "FIRE_RGB"
        meta["ImageProcessingHistory"] = list(meta.get("ImageProcessingHistory", [])) + ["RGB"]
        rgb.meta = meta
        return rgb
    return image


def originals(images: list[ismrmrd.Image]) -> list[ismrmrd.Image]:
    """Unmodified copies of the inputs, moved to series 99 with ``Keep_image_geometry``."""
    out = []
    for im in images:
        head = im.getHead()
        head.image_series_index = ORIGINALS_SERIES
        copy = ismrmrd.Image(head, data=im.data.copy())
        copy.meta = ismrmrd.Meta(im.meta)
        copy.meta["Keep_image_geometry"] = "1"
        out.append(copy)
    return out


def process_group(images: list[ismrmrd.Image], metadata: Any, opts: ImageOptions, history: list[str],
                  description: str, pixel_op: Callable[[np.ndarray, int], np.ndarray]) -> list[ismrmrd.Image]:
    """Process one series group; ``pixel_op(stack, max_value)`` maps ``[n, cha, z, y, x]`` pixels.

    Magnitude images (image_type 1 or unset) are scaled together so the group
    maximum becomes ``2**BitsStored - 1`` and stored as int16 (float32 without
    rescaling for ``options = complex``); other images are returned unchanged
    with ``Keep_image_geometry = 1``.  With ``send_original`` the inputs come
    first, in series 99.
    """
    max_value = 2 ** _recon.bits_stored(metadata) - 1
    out = originals(images) if opts.send_original else []
    magnitude = [im for im in images if im.image_type in MAGNITUDE_TYPES]
    for im in images:
        if im.image_type not in MAGNITUDE_TYPES:
            im.meta["Keep_image_geometry"] = "1"
            out.append(im)
    if not magnitude:
        return out
    stack = np.abs(np.stack([im.data for im in magnitude]))
    if opts.options == "complex":
        pixels = pixel_op(stack.astype(np.float32), float(stack.max()))
        data_type = ismrmrd.DATATYPE_FLOAT
    else:
        pixels = pixel_op(_recon.to_int16(stack, max_value), max_value)
        data_type = ismrmrd.DATATYPE_SHORT
    for im, data in zip(magnitude, pixels):
        head = im.getHead()
        head.data_type = data_type
        if opts.options != "complex":
            head.image_type = ismrmrd.IMTYPE_MAGNITUDE
        result = ismrmrd.Image(head, data=data)
        meta = ismrmrd.Meta(im.meta)
        meta.update(_recon.display_meta(result, max_value, history))
        meta["SequenceDescriptionAdditional"] = description
        result.meta = meta
        out.append(decorate(result, opts, max_value))
    return out


def invert(pixels: np.ndarray, max_value: float) -> np.ndarray:
    """Contrast inversion ``max_value - x`` in the input's data type."""
    return (max_value - pixels).astype(pixels.dtype)
