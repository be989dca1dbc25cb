"""report: renders the session's header parameters as a text table image.

Reads the whole session (raw data or images are only counted), then sends one
512x512 float32 magnitude image, white text (255) on black, tabulating the
protocol name, the scanner (vendor, model, field strength), the recon field of
view and matrix, and the number of input items.  The same texts are stored as
the MetaAttributes ``protocolName``, ``scanner``, ``fieldOfView``, ``matrixSize``
and ``inputData``.  Missing header sections, or a header that did not parse
(``metadata`` is then the raw text), give ``N/A``.  The image takes its
orientation from the first input item and has 1 mm pixels.
"""
import logging

import ismrmrd
import numpy as np
from PIL import Image, ImageDraw, ImageFont

import _images
import _recon

log = logging.getLogger(__name__)

SIZE = 512
MARGIN = 24
LABEL_WIDTH = 150
FONT_SIZE = 18
LINE_HEIGHT = FONT_SIZE + 8
TEXT_VALUE = 255
NA = "N/A"
HISTORY = ["PYTHON", "REPORT"]
LABELS = {"protocolName": "Protocol", "scanner": "Scanner", "fieldOfView": "Field of view",
          "matrixSize": "Matrix size", "inputData": "Input data"}
GEOMETRY = ("position", "read_dir", "phase_dir", "slice_dir", "patient_table_position")


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


def report_values(metadata, received: _images.Received) -> dict:
    """The table's texts, keyed by their MetaAttribute names."""
    system = ("acquisitionSystemInformation",)
    field = header_value(metadata, *system, "systemFieldStrength_T")
    scanner = [header_value(metadata, *system, "systemVendor"), header_value(metadata, *system, "systemModel"),
               None if field is None else f"{field:g} T"]
    fov = header_value(metadata, "encoding", 0, "reconSpace", "fieldOfView_mm")
    matrix = header_value(metadata, "encoding", 0, "reconSpace", "matrixSize")
    return {
        "protocolName": str(header_value(metadata, "measurementInformation", "protocolName") or NA),
        "scanner": " ".join(str(part) for part in scanner if part) or NA,
        "fieldOfView": NA if fov is None else f"{fov.x:g} x {fov.y:g} x {fov.z:g} mm",
        "matrixSize": NA if matrix is None else f"{matrix.x} x {matrix.y} x {matrix.z}",
        "inputData": f"{received.acquisitions} acquisitions, {received.images} images",
    }


def wrap(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> list:
    """``text`` in lines no wider than ``width`` pixels: broken between words, inside over-long words."""
    def fits(line: str) -> bool:
        return draw.textlength(line, font=font) <= width
    lines = [""]
    for word in text.split():
        candidate = f"{lines[-1]} {word}".strip()
        if fits(candidate) or not lines[-1]:
            lines[-1] = candidate
        else:
            lines.append(word)
        while not fits(lines[-1]) and len(lines[-1]) > 1:
            cut = max((n for n in range(1, len(lines[-1])) if fits(lines[-1][:n])), default=1)
            lines[-1:] = [lines[-1][:cut], lines[-1][cut:]]
    return lines


def render_table(values: dict) -> np.ndarray:
    """float32 ``[SIZE, SIZE]`` picture of the label/value table."""
    canvas = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_SIZE)
    y = MARGIN
    draw.line((MARGIN, y - 6, SIZE - MARGIN, y - 6), fill=TEXT_VALUE // 2)
    for key, label in LABELS.items():
        draw.text((MARGIN, y), label, fill=TEXT_VALUE, font=font)
        for line in wrap(draw, values[key], font, SIZE - 2 * MARGIN - LABEL_WIDTH):
            draw.text((MARGIN + LABEL_WIDTH, y), line, fill=TEXT_VALUE, font=font)
            y += LINE_HEIGHT
        draw.line((MARGIN, y - 6, SIZE - MARGIN, y - 6), fill=TEXT_VALUE // 2)
    column = MARGIN + LABEL_WIDTH - 10
    draw.line((column, MARGIN - 6, column, y - 6), fill=TEXT_VALUE // 2)
    return np.asarray(canvas, dtype=np.float32)


def report_image(values: dict, first_item) -> ismrmrd.Image:
    """The float32 report image with the values as MetaAttributes."""
    image = ismrmrd.Image.from_array(render_table(values), transpose=False)
    head = image.getHead()
    head.read_dir, head.phase_dir, head.slice_dir = (1, 0, 0), (0, 1, 0), (0, 0, 1)
    for field in GEOMETRY if first_item is not None else ():
        setattr(head, field, getattr(first_item.getHead(), field))
    head.field_of_view = (float(SIZE), float(SIZE), 1.0)
    head.image_type = ismrmrd.IMTYPE_MAGNITUDE
    head.image_index = 1
    image.setHead(head)
    image.meta = _recon.display_meta(image, TEXT_VALUE, HISTORY)
    image.meta.update(values)
    return image


def process(connection, config, metadata):
    received, first_item = _images.Received(), None
    try:
        for item in connection:
            if item is None:
                break
            if isinstance(item, (ismrmrd.Acquisition, ismrmrd.Image)):
                first_item = item if first_item is None else first_item
                received.acquisitions += isinstance(item, ismrmrd.Acquisition)
                received.images += isinstance(item, ismrmrd.Image)
        values = report_values(metadata, received)
        log.info("report: %s", values)
        connection.send_image(report_image(values, first_item))
    finally:
        connection.send_close()
