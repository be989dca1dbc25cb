"""report: renders header parameters of the session as a text image, one per group of input.

As python-ismrmrd-server's report (tests/test_upstream_parity.py): every slice of raw data
(its imaging readouts, until ``LAST_IN_SLICE``) and every series group of magnitude images
gives one 512 x 512 float32 image; other images (phase, ...) are returned unchanged with
``Keep_image_geometry = 1``.  The image shows five lines ``<key padded to 12>  <value>``,
white monospace 12-point text drawn by matplotlib (100 dpi, the first line 25.6 pixels from the
top and left, 21 pixels apart) on black, converted to grey with the CCIR 601 weights; the same
texts are stored as the MetaAttributes:

* ``protocolName``: ``measurementInformation.protocolName`` (``None`` when that element is missing);
* ``scanner``: ``<vendor> <model> <field strength>T``, the field strength with one decimal above
  1 T and two at or below;
* ``fieldOfView``: encoded field of view, ``<x> x <y> x <z> mm^3`` with one decimal;
* ``matrixSize``: encoded matrix ``<x> x <y> x <z>``;
* ``inputData``: ``<n> readouts`` or ``<n> images`` of the group.

A value the header does not give (no ``measurementInformation``, no
``acquisitionSystemInformation`` or field strength, no encoding, a header that did not parse) is
``N/A``.  Header: read, phase and slice directions x, y, z, field of view 512 x 512
x 1 mm, ``patient_table_position`` and ``acquisition_time_stamp`` of the group's first item,
series 0, ``image_index`` 0, magnitude.
"""
import logging

import ismrmrd
import numpy as np

import _images

log = logging.getLogger(__name__)

SIZE = 512
DPI = 100
FONT_SIZE = 12
LINE_SPACING = 1.75
MARGIN = 0.05  # of the image size
LUMA = (0.2989, 0.5870, 0.1140)  # CCIR 601
NA = "N/A"
HISTORY = ["FIRE", "PYTHON"]


def header_value(metadata, *path):
    """``metadata.<path>`` (ints index lists); None when a link is missing or the header is text."""
    value = metadata
    for step in path:
        try:
            value = value[step] if isinstance(step, int) else getattr(value, step)
        except (AttributeError, IndexError, TypeError):
            return None
        if value is None:
            return None
    return value


def _scanner(metadata) -> str:
    system = header_value(metadata, "acquisitionSystemInformation")
    field = header_value(system, "systemFieldStrength_T")
    if field is None:
        return NA
    decimals = 1 if field > 1 else 2
    return f"{system.systemVendor} {system.systemModel} {field:.{decimals}f}T"


def report_values(metadata, count: int, unit: str) -> dict:
    """The report's texts, keyed by their MetaAttribute names, for a group of ``count`` ``unit``."""
    measurement = header_value(metadata, "measurementInformation")
    fov = header_value(metadata, "encoding", 0, "encodedSpace", "fieldOfView_mm")
    matrix = header_value(metadata, "encoding", 0, "encodedSpace", "matrixSize")
    return {
        "protocolName": NA if measurement is None else str(measurement.protocolName),
        "scanner": _scanner(metadata),
        "fieldOfView": NA if fov is None else f"{fov.x:.1f} x {fov.y:.1f} x {fov.z:.1f} mm^3",
        "matrixSize": NA if matrix is None else f"{matrix.x} x {matrix.y} x {matrix.z}",
        "inputData": f"{count} {unit}",
    }


def render(values: dict) -> np.ndarray:
    """float32 ``[SIZE, SIZE]`` grey picture of the ``key  value`` lines.

    A figure of its own (matplotlib's object interface, Agg), so that sessions in other threads
    and matplotlib's global style are never touched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(SIZE / DPI, SIZE / DPI), dpi=DPI, frameon=False)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(np.zeros((SIZE, SIZE, 3), dtype=np.uint8))  # black, and pixel coordinates for the text
    axes.axis("off")
    width = max(len(key) for key in values)
    for row, (key, value) in enumerate(values.items()):
        axes.text(SIZE * MARGIN, SIZE * MARGIN + row * FONT_SIZE * LINE_SPACING, f"{key:{width}}  {value}",
                  va="center", fontsize=FONT_SIZE, color="white", fontfamily="monospace")
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.dot(rgba[..., :3], LUMA).astype(np.float32)


def report_image(values: dict, first_item) -> ismrmrd.Image:
    """The float32 report image with the values as MetaAttributes."""
    image = ismrmrd.Image.from_array(render(values), transpose=False)
    head = image.getHead()
    head.field_of_view = (float(SIZE), float(SIZE), 1.0)
    head.read_dir, head.phase_dir, head.slice_dir = (1, 0, 0), (0, 1, 0), (0, 0, 1)
    head.patient_table_position = first_item.getHead().patient_table_position
    head.acquisition_time_stamp = first_item.getHead().acquisition_time_stamp
    head.image_type = ismrmrd.IMTYPE_MAGNITUDE
    head.image_series_index = 0
    head.image_index = 0
    image.setHead(head)
    meta = ismrmrd.Meta({"DataRole": "Image", "ImageProcessingHistory": HISTORY, "Keep_image_geometry": "1"})
    meta["ImageRowDir"] = ["{:.18f}".format(v) for v in head.read_dir]
    meta["ImageColumnDir"] = ["{:.18f}".format(v) for v in head.phase_dir]
    meta.update(values)
    image.meta = meta
    return image


def report_slice(kspace, metadata):
    values = report_values(metadata, len(kspace), "readouts")
    log.info("report: %s", values)
    return report_image(values, kspace.first_readout())


def report_group(images, metadata):
    """Non-magnitude images back unchanged, then the report of the magnitude images."""
    magnitude = [im for im in images if im.image_type in _images.MAGNITUDE_TYPES]
    out = [im for im in images if im.image_type not in _images.MAGNITUDE_TYPES]
    for im in out:
        im.meta["Keep_image_geometry"] = "1"
    if magnitude:
        values = report_values(metadata, len(magnitude), "images")
        log.info("report: %s", values)
        out.append(report_image(values, magnitude[0]))
    return out


def process(connection, config, metadata):
    try:
        _images.serve(connection, metadata, on_slice=lambda kspace, index: report_slice(kspace, metadata),
                      on_group=lambda images: report_group(images, metadata))
    finally:
        connection.send_close()
