"""analyzeflow: background removal and velocity scaling of phase-contrast images.

As python-ismrmrd-server's analyzeflow (tests/test_upstream_parity.py).  Input: phase
images (image_type 2) carrying the MetaAttribute ``FlowDirDisplay`` (``FlowVelocity``,
the VENC, is kept when present), int16 or uint16 with zero velocity at 2048.  Other
images (magnitude) are returned unchanged.  The phase images of the whole session are
collected and analysed at its end, one flow direction (distinct ``FlowDirDisplay``, in
sorted order; images without one last) after the other, each slice's cardiac phases
(``phase`` counter) stacked in time order.  Background: a pixel whose mean absolute
third-order difference over the phases, ``mean_t |x[t+3] - 3 x[t+2] + 3 x[t+1] - x[t]|``,
exceeds 250 (upstream's ``np.diff(data, 3)``: the phase of noise jumps at random from frame
to frame, velocity in tissue and vessels changes smoothly); it is set to 2048 (zero
velocity).  Fewer than four phases give no such difference: nothing is background.  The
result ``(x - 2048) * maxVal / 2048`` (maxVal = 2**BitsStored - 1) is sent as int16 in
series 10, 11, ... (one per direction) with ``image_index = phase + slice * nPhases``
(nPhases over all phase images), the input's header and MetaAttributes plus ``DataRole``,
``ImageProcessingHistory = [FIRE, PYTHON]``, ``WindowCenter``/``WindowWidth`` ``(maxVal+1)/2``
and ``maxVal+1`` (upstream's), ``Keep_image_geometry = 1`` and ``ImageRowDir``/``ImageColumnDir``
where missing.  Raw data is ignored (one INFO text for the whole session).
"""
import logging

import ismrmrd
import numpy as np

import _images
import _recon
import mrdhelper

log = logging.getLogger(__name__)

ZERO_VELOCITY = 2048
NOISE_THRESHOLD = 250
DIFFERENCE_ORDER = 3
FIRST_SERIES = 10
HISTORY = ["FIRE", "PYTHON"]


def remove_background(phases: np.ndarray) -> np.ndarray:
    """float64 copy of a ``[phase, cha, z, y, x]`` stack with noise pixels set to 2048.

    Noise: ``mean_t |third-order difference over t| > 250``, per pixel and channel, computed in
    float64, so that uint16 input does not wrap around.
    """
    out = phases.astype(np.float64)
    if len(out) > DIFFERENCE_ORDER:
        noise = np.abs(np.diff(out, n=DIFFERENCE_ORDER, axis=0)).mean(axis=0) > NOISE_THRESHOLD
        out[:, noise] = ZERO_VELOCITY
    return out


def to_velocity(pixels: np.ndarray, max_value: int) -> np.ndarray:
    """Signed int16 velocity scale ``(x - 2048) * max_value / 2048``, rounded."""
    return np.around((pixels - ZERO_VELOCITY) * max_value / ZERO_VELOCITY).astype(np.int16)


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
    meta.update({"DataRole": "Image", "ImageProcessingHistory": HISTORY,
                 "WindowCenter": str((max_value + 1) / 2), "WindowWidth": str(max_value + 1),
                 "Keep_image_geometry": "1"})
    if "ImageRowDir" not in meta:
        meta["ImageRowDir"] = ["{:.18f}".format(v) for v in head.read_dir]
    if "ImageColumnDir" not in meta:
        meta["ImageColumnDir"] = ["{:.18f}".format(v) for v in head.phase_dir]
    image.meta = meta
    return image


def analyze(phase: list, metadata) -> list:
    """The velocity images of each flow direction of the session's phase images."""
    max_value = _recon.max_value_of(metadata)
    directions = sorted(dict.fromkeys(flow_direction(im) for im in phase),
                        key=lambda d: (d is None, str(d)))
    if None in directions:
        log.warning("Phase images without FlowDirDisplay are treated as one more flow direction")
    n_phases = 1 + max((im.phase for im in phase), default=0)
    out = []
    for number, direction in enumerate(directions):
        chosen = [im for im in phase if flow_direction(im) == direction]
        for slice_ in sorted({im.slice for im in chosen}):
            frames = sorted((im for im in chosen if im.slice == slice_), key=lambda im: im.phase)
            velocity = to_velocity(remove_background(np.stack([im.data for im in frames])), max_value)
            out += [velocity_image(im, data, FIRST_SERIES + number, im.phase + slice_ * n_phases, max_value)
                    for im, data in zip(frames, velocity)]
    return out


def process(connection, config, metadata):
    phase = []

    def take(images):
        """Phase images are kept for the end; the others go back unchanged."""
        phase.extend(im for im in images if im.image_type == ismrmrd.IMTYPE_PHASE)
        return [im for im in images if im.image_type != ismrmrd.IMTYPE_PHASE]

    try:
        _images.serve(connection, metadata, on_group=take)
        if phase:
            connection.send_image(analyze(phase, metadata))
    finally:
        connection.send_close()
