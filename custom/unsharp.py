"""unsharp: the example module of the custom image (custom/Dockerfile), written as a user would.

It is not shipped in the server image: custom/Dockerfile adds it, with ``unsharp.json``, to the
code folder, where the server finds it by name (``-c unsharp``) as python-ismrmrd-server does.
Every incoming image is sharpened with an unsharp mask, ``x + amount * (x - gaussian(x, sigma))``
over its (y, x) axes, clipped to its data type and sent back with its header; raw data is ignored.
JSON options: ``sigma`` (pixels, default 1.0) and ``amount`` (default 1.0).
"""
import logging

import ismrmrd
import numpy as np
import scipy.ndimage

import mrdhelper


def sharpened(image: ismrmrd.Image, sigma: float, amount: float) -> ismrmrd.Image:
    """The unsharp-masked copy of one image, same header and data type."""
    pixels = image.data.astype(np.float64)
    blurred = scipy.ndimage.gaussian_filter(pixels, sigma=(0,) * (pixels.ndim - 2) + (sigma, sigma))
    out = pixels + amount * (pixels - blurred)
    if np.issubdtype(image.data.dtype, np.integer):
        limits = np.iinfo(image.data.dtype)
        out = np.clip(np.round(out), limits.min, limits.max)
    result = ismrmrd.Image(image.getHead(), data=out.astype(image.data.dtype))
    meta = ismrmrd.Meta.deserialize(image.attribute_string) if image.attribute_string else ismrmrd.Meta()
    meta["ImageProcessingHistory"] = list(meta.get("ImageProcessingHistory") or []) + ["UNSHARP"]
    result.attribute_string = meta.serialize()
    return result


def process(connection, config, metadata):
    sigma = mrdhelper.get_json_config_param(config, "sigma", 1.0, "float")
    amount = mrdhelper.get_json_config_param(config, "amount", 1.0, "float")
    logging.info("unsharp: sigma %g, amount %g", sigma, amount)
    try:
        for item in connection:
            if item is None:
                break
            if isinstance(item, ismrmrd.Image):
                connection.send_image(sharpened(item, sigma, amount))
    finally:
        connection.send_close()
