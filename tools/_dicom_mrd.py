"""DICOM <-> MRD conventions shared by ``dicom2mrd.py`` and ``mrd2dicom.py`` (helper, not a tool).

Geometry: DICOM ImagePositionPatient (IPP) is the centre of the top-left voxel, MRD ``position``
the centre of the image (docs/protocol.md §5.2); both in patient coordinates (LPS, mm).
ImageOrientationPatient is ``read_dir + phase_dir`` (row direction: increasing column index,
then column direction: increasing row index) and PixelSpacing is ``[row spacing, column
spacing]``, i.e. ``[spacing along phase_dir, spacing along read_dir]``.
Time: MRD time stamps count 2.5 ms ticks (docs/protocol.md §5.6).
Numbers: the images of one series get distinct numbers (``image_index``, InstanceNumber), their own
when these are distinct, else 1..N in series order (:func:`unique_numbers`).
``DicomJson`` attribute: base64 of the UTF-8 DICOM JSON (PS3.18 F) of the source header, without
pixel data, multi-frame functional groups, trailing padding and binary values over 1 KiB.
"""
from __future__ import annotations

import base64
import json
from typing import Sequence

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
TICK_S = 2.5e-3
IMAGE_TYPE_LETTERS = {1: "M", 2: "P", 3: "R", 4: "I"}
IMTYPE_RGB = 6
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Multi-frame elements that describe frames a single-frame MRD image (and its DICOM file) no longer has.
MULTIFRAME_KEYWORDS = ("NumberOfFrames", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence",
                       "DimensionIndexSequence", "DimensionOrganizationSequence", "FrameIncrementPointer")
BULK_VRS = ("OB", "OD", "OF", "OL", "OV", "OW", "UN")
BULK_BYTES = 1024
TRAILING_PADDING = 0xFFFCFFFC


def corner_to_centre(read_dir: Sequence[float], phase_dir: Sequence[float], rows: int, cols: int,
                     pixel_spacing: Sequence[float]) -> np.ndarray:
    """Vector (mm) from the top-left voxel centre (DICOM IPP) to the image centre (MRD position).

    ``read_dir * (cols - 1) / 2 * pixel_spacing[1] + phase_dir * (rows - 1) / 2 * pixel_spacing[0]``.
    """
    read = np.asarray(read_dir, dtype=np.float64)
    phase = np.asarray(phase_dir, dtype=np.float64)
    return read * (cols - 1) / 2 * float(pixel_spacing[1]) + phase * (rows - 1) / 2 * float(pixel_spacing[0])


def unique_numbers(numbers: Sequence[int]) -> np.ndarray:
    """``numbers`` when no two are equal, else ``1, 2, ... N`` in their order.

    The image numbers of one series (MRD ``image_index``, DICOM InstanceNumber) name the files of
    mrd2dicom and order the images of viewers, so a repeated number would overwrite or mix images.
    """
    values = np.asarray(numbers, dtype=np.int64)
    return values if len(np.unique(values)) == len(values) else np.arange(1, len(values) + 1)


def seconds_to_ticks(seconds: float) -> int:
    """2.5 ms ticks of a duration or time of day in seconds, rounded."""
    return int(round(seconds / TICK_S))


def ticks_to_seconds(ticks: int) -> float:
    """Seconds of a number of 2.5 ms ticks."""
    return float(ticks) * TICK_S


def _is_bulk(elem: DataElement) -> bool:
    return (elem.keyword in PIXEL_KEYWORDS + MULTIFRAME_KEYWORDS or elem.tag == TRAILING_PADDING
            or (elem.VR in BULK_VRS and elem.value is not None and len(elem.value) > BULK_BYTES))


def encode_dicom_json(ds: Dataset) -> str:
    """The ``DicomJson`` text of a dataset's header (non-ASCII text kept as UTF-8)."""
    header = Dataset()
    for elem in ds:
        if not _is_bulk(elem):
            header.add(elem)
    text = json.dumps(header.to_json_dict(suppress_invalid_tags=True), ensure_ascii=False)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def decode_dicom_json(text: str) -> Dataset:
    """The header dataset of a ``DicomJson`` text."""
    return Dataset.from_json(json.loads(base64.b64decode(text).decode("utf-8")))
