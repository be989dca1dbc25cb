"""analyzeflow: background removal and velocity scaling of phase-contrast images.

Input: phase images (image_type 2) carrying the MetaAttribute ``FlowDirDisplay``
(``FlowVelocity``, the VENC, is kept when present), int16 or uint16 with zero
velocity at 2048.  Images are grouped while ``image_series_index`` stays the same.
Within a group, each flow direction (distinct ``FlowDirDisplay``, in order of
arrival) is handled per slice: its phases (cardiac phases, ``phase`` counter)
are stacked in time order and a pixel whose mean absolute difference between
consecutive phases exceeds 250 is background (the phase of noise jumps at random
from frame to frame, the velocity in tissue and vessels changes smoothly): it is
set to 2048 (zero velocity).  The result ``(x - 2048) * maxVal / 2048`` (maxVal = 2**BitsStored - 1)
is sent as int16 in series 10, 11, ... (one per direction) with
``image_index = phase + slice * nPhases``.  A single phase gives no temporal
information: nothing is then treated as background.  Other images (magnitude)
are returned unchanged with ``Keep_image_geometry = 1``.  Raw data is ignored
(one INFO text for the whole session).
"""
import logging

import ismrmrd
import numpy as np

import _images
import mrdhelper

log = logging.getLogger(__name__)

ZERO_VELOCITY = 2048
NOISE_THRESHOLD = 250
FIRST_SERIES = 10
HISTORY = ["PYTHON", "ANALYZEFLOW"]


def remove_background(phases: np.ndarray) -> np.ndarray:
    """float32 copy of a ``[phase, cha, z, y, x]`` stack with noise pixels set to 2048.

    Noise: ``mean_t |x[t+1] - x[t]| > 250``, per pixel and channel.
    """
    out = phases.astype(np.float32)
    if len(out) > 1:
        noise = np.abs(np.diff(out, axis=0)).mean(axis=0) > NOISE_THRESHOLD
        out[:, noise] = ZERO_VELOCITY
    return out


def to_velocity(pixels: np.ndarray, max_value: int) -> np.ndarray:
    """Signed int16 velocity scale ``(x - 2048) * max_value / 2048``, rounded."""
    return np.around((pixels - ZERO_VELOCITY) * (max_value / ZERO_VELOCITY)).astype(np.int16)


def flow_direction(image: ismrmrd.Image):
    """``FlowDirDisplay`` of an image (None when absent), hashable."""
    value = mrdhelper.get_meta_value(image.meta, "FlowDirDisplay")
    return tuple(value) if isinstance(value, list) else value


def velocity_image(source: ismrmrd.Image, pixels: np.ndarray, series: int, index: int,
                   max_value: int) -> ismrmrd.Image:
    """An int16 velocity image with the geometry and meta of ``source``."""
    head = source.getHead()
    head.data_type = ismrmrd.DATATYPE_SHORT
    head.image_series_index = series
    head.image_index = index
    image = ismrmrd.Image(head, data=pixels)
    meta = ismrmrd.Meta(source.meta)
    meta.update({"DataRole": "Image", "ImageProcessingHistory": HISTORY, "Keep_image_geometry": "1",
                 "WindowCenter": "0", "WindowWidth": str(2 * (max_value + 1))})
    image.meta = meta
    return image


def analyze_group(images: list, metadata) -> list:
    """Pass-through images first, then the velocity images of each flow direction."""
    max_value = _images.max_value_of(metadata)
    phase = [im for im in images if im.image_type == ismrmrd.IMTYPE_PHASE]
    out = [im for im in images if im.image_type != ismrmrd.IMTYPE_PHASE]
    for im in out:
        im.meta["Keep_image_geometry"] = "1"
    directions = list(dict.fromkeys(flow_direction(im) for im in phase))
    if None in directions:
        log.warning("Phase images without FlowDirDisplay are treated as one more flow direction")
    for number, direction in enumerate(directions):
        chosen = [im for im in phase if flow_direction(im) == direction]
        n_phases = 1 + max(im.phase for im in chosen)
        for slice_ in sorted({im.slice for im in chosen}):
            frames = sorted((im for im in chosen if im.slice == slice_), key=lambda im: im.phase)
            velocity = to_velocity(remove_background(np.stack([im.data for im in frames])), max_value)
            out += [velocity_image(im, data, FIRST_SERIES + number, im.phase + slice_ * n_phases, max_value)
                    for im, data in zip(frames, velocity)]
    return out


def process(connection, config, metadata):
    try:
        _images.serve(connection, metadata, on_group=lambda images: analyze_group(images, metadata))
    finally:
        connection.send_close()
