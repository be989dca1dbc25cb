"""Convert a folder of DICOM images into an MRD HDF5 file of image series.

Reads every ``*.dcm``/``*.ima`` file below FOLDER (any case) and every extension-less file that is
DICOM with pixel data (e.g. a DICOMDIR tree); groups them into series by SeriesInstanceUID (else
SeriesNumber) and matrix size, ordered by SeriesNumber (``image_series_index`` 0, 1, ...), images by
InstanceNumber, then SOPInstanceUID, then file path (files without InstanceNumber last); every file
becomes an image, duplicates included.  ``image_index`` is ``(InstanceNumber - 1) * frames + frame + 1``
(the InstanceNumber of a single-frame file), or 1..N in image order when these numbers repeat within a
series (e.g. the same series copied twice, or no InstanceNumbers).  Each frame (enhanced
multi-frame included) becomes one MRD image ``[cha, 1, y, x]`` of the stored values (uint16/int16
kept, else float32; no rescale applied), with MRD geometry (position = image centre, FOV = (col
spacing * Columns, row spacing * Rows, SliceThickness); see tools/_dicom_mrd.py), 2.5 ms time
stamps and attributes ImageType, ImageComments, SequenceDescription, window, rescale,
ImageRowDir/ImageColumnDir and DicomJson (base64 DICOM JSON without bulk data).  One ISMRMRD XML
header, from the first dataset, goes to ``/<group>/xml``.

Usage: ``python tools/dicom2mrd.py FOLDER [-o out.h5 (default <folder name>.h5)] [-g dataset]``;
the output file is overwritten.  Exit status 0, or 2 for a missing folder or one without images.
"""
from __future__ import annotations

import argparse
import logging
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402
import ismrmrd  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.errors import InvalidDicomError  # noqa: E402
from pydicom.multival import MultiValue  # noqa: E402
from pydicom.valuerep import DA, DT, TM  # noqa: E402

import mrdfile  # noqa: E402
from constants import IMAGE_DTYPES  # noqa: E402
from tools import _cli  # noqa: E402
from tools._dicom_mrd import (IMTYPE_RGB, PIXEL_KEYWORDS, corner_to_centre, encode_dicom_json,  # noqa: E402
                              seconds_to_ticks, unique_numbers)

log = logging.getLogger("dicom2mrd")

SUFFIXES = (".dcm", ".ima")
DATA_TYPES = {np.dtype(np.uint16): ismrmrd.DATATYPE_USHORT, np.dtype(np.int16): ismrmrd.DATATYPE_SHORT}
IMAGE_TYPES = {"M": 1, "MAGNITUDE": 1, "P": 2, "PHASE": 2, "R": 3, "REAL": 3, "I": 4, "IMAGINARY": 4}
PATIENT_POSITIONS = ("HFP", "HFS", "HFDR", "HFDL", "FFP", "FFS", "FFDR", "FFDL")
GAMMA_HZ_PER_T = 42.577478e6
XML_NAMESPACE = "http://www.ismrm.org/ISMRMRD"


def as_list(value: Any) -> list[str]:
    """A DICOM value as a list of strings (empty for no value)."""
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, (MultiValue, list, tuple)) else [str(value)]


def as_float(value: Any) -> float | None:
    """First value of a DICOM number as float, None when empty."""
    values = as_list(value)
    return float(values[0]) if values and values[0].strip() else None


def functional(ds: Dataset, frame: int, sequence: str, keyword: str) -> Any:
    """``keyword`` of one frame: per-frame functional group, then shared group, then the top level."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    for items, index in ((per_frame, frame), (shared, 0)):
        if index < len(items) and items[index].get(sequence):
            value = items[index].get(sequence)[0].get(keyword)
            if value is not None and value != "":
                return value
    value = ds.get(keyword)
    return None if value is None or value == "" else value


def find_datasets(folder: Path) -> list[Dataset]:
    """DICOM datasets with decodable pixel data below ``folder``, in path order."""
    datasets = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix and path.suffix.lower() not in SUFFIXES:
            continue
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            log.debug("skipping %s: %s", path, exc)
            continue
        if not any(k in ds for k in PIXEL_KEYWORDS):
            log.debug("skipping %s: no pixel data", path)
            continue
        try:
            ds.pixel_array
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            log.warning("skipping %s: pixel data cannot be decoded (%s)", path, exc)
            continue
        datasets.append(ds)
    return datasets


def instance_order(ds: Dataset) -> tuple[bool, float, str, str]:
    """Sort key of the images of a series: InstanceNumber (none last), SOPInstanceUID, file path."""
    number = as_float(ds.get("InstanceNumber"))
    return number is None, number or 0.0, str(ds.get("SOPInstanceUID") or ""), str(ds.filename or "")


def group_series(datasets: Iterable[Dataset]) -> list[list[Dataset]]:
    """Datasets grouped by series (and matrix size), ordered by SeriesNumber (then series UID and matrix),
    images by :func:`instance_order`."""
    series: dict[tuple, list[Dataset]] = {}
    for ds in datasets:
        uid = str(ds.get("SeriesInstanceUID") or f"number {ds.get('SeriesNumber')}")
        key = (uid, int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1)), ds.pixel_array.dtype.str)
        series.setdefault(key, []).append(ds)
    for members in series.values():
        members.sort(key=instance_order)
    return [series[key] for key in sorted(series, key=lambda k: (as_float(series[k][0].get("SeriesNumber")) or 0, k))]


def seconds_of_day(ds: Dataset, frame: int) -> float | None:
    """Acquisition time of a frame in seconds since midnight (FrameAcquisitionDateTime or AcquisitionTime)."""
    stamp = functional(ds, frame, "FrameContentSequence", "FrameAcquisitionDateTime")
    try:
        moment = DT(str(stamp)) if stamp else TM(str(ds.get("AcquisitionTime") or ""))
    except ValueError:
        return None
    if moment is None:
        return None
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


def image_type(ds: Dataset, frame: int) -> int:
    """MRD image type of a frame from ComplexImageComponent or ImageType[2]; magnitude by default."""
    component = functional(ds, frame, "MRImageFrameTypeSequence", "ComplexImageComponent")
    letters = [str(component)] if component else as_list(ds.get("ImageType"))[2:3]
    return IMAGE_TYPES.get(letters[0].upper(), ismrmrd.IMTYPE_MAGNITUDE) if letters else ismrmrd.IMTYPE_MAGNITUDE


def frame_fields(ds: Dataset, frame: int, n_frames: int) -> dict[str, Any]:
    """ImageHeader fields of one frame (geometry, type, index, time stamps)."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    spacing = [float(v) for v in functional(ds, frame, "PixelMeasuresSequence", "PixelSpacing") or (1.0, 1.0)]
    thickness = as_float(functional(ds, frame, "PixelMeasuresSequence", "SliceThickness")) or 0.0
    iop = [float(v) for v in functional(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient")
           or (1, 0, 0, 0, 1, 0)]
    ipp = [float(v) for v in functional(ds, frame, "PlanePositionSequence", "ImagePositionPatient") or (0, 0, 0)]
    read, phase = np.array(iop[:3]), np.array(iop[3:])
    channels = int(ds.get("SamplesPerPixel", 1))
    instance = int(as_float(ds.get("InstanceNumber")) or 1)
    acquired = seconds_of_day(ds, frame)
    trigger = as_float(functional(ds, frame, "CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime")
                       or ds.get("TriggerTime"))
    return {
        "version": 1, "data_type": DATA_TYPES.get(ds.pixel_array.dtype, ismrmrd.DATATYPE_FLOAT),
        "matrix_size": (cols, rows, 1), "field_of_view": (spacing[1] * cols, spacing[0] * rows, thickness),
        "channels": channels, "position": np.array(ipp) + corner_to_centre(read, phase, rows, cols, spacing),
        "read_dir": read, "phase_dir": phase, "slice_dir": np.cross(read, phase),
        "image_type": IMTYPE_RGB if channels == 3 else image_type(ds, frame),
        "image_index": min((instance - 1) * n_frames + frame + 1, 0xFFFF),
        "acquisition_time_stamp": seconds_to_ticks(acquired) if acquired is not None else 0,
        "physiology_time_stamp": (seconds_to_ticks(trigger / 1000) if trigger else 0, 0, 0),
    }


def frame_meta(ds: Dataset, frame: int, fields: dict[str, Any], json_text: str) -> str:
    """MetaAttributes XML of one frame."""
    meta = ismrmrd.Meta()
    for key, value in (("ImageType", as_list(ds.get("ImageType"))),
                       ("ImageComments", as_list(ds.get("ImageComments"))),
                       ("SequenceDescription", as_list(ds.get("SeriesDescription")))):
        if value:
            meta[key] = value
    for sequence, keywords in (("FrameVOILUTSequence", ("WindowCenter", "WindowWidth")),
                               ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept"))):
        for keyword in keywords:
            value = as_float(functional(ds, frame, sequence, keyword))
            if value is not None:
                meta[keyword] = str(value)
    meta["ImageRowDir"] = ["{:.18f}".format(v) for v in fields["read_dir"]]
    meta["ImageColumnDir"] = ["{:.18f}".format(v) for v in fields["phase_dir"]]
    meta["DicomJson"] = json_text
    return meta.serialize()


def rank(values: np.ndarray) -> np.ndarray:
    """Index of each value among the sorted unique values (compared to 1e-3)."""
    rounded = np.round(np.asarray(values, dtype=np.float64), 3)
    return np.searchsorted(np.unique(rounded), rounded)


def series_images(members: list[Dataset], series_index: int) -> tuple[np.ndarray, list[str], list[np.ndarray]]:
    """Headers, attributes and ``[cha, 1, y, x]`` pixels of every frame of one series."""
    records, attributes, pixels = [], [], []
    for ds in members:
        n_frames = int(as_float(ds.get("NumberOfFrames")) or 1)
        json_text = encode_dicom_json(ds)
        channels = int(ds.get("SamplesPerPixel", 1))
        stack = ds.pixel_array.reshape(n_frames, int(ds.Rows), int(ds.Columns), channels).transpose(0, 3, 1, 2)
        for frame in range(n_frames):
            fields = frame_fields(ds, frame, n_frames)
            records.append(fields)
            attributes.append(frame_meta(ds, frame, fields, json_text))
            dtype = IMAGE_DTYPES[fields["data_type"]]
            pixels.append(np.ascontiguousarray(stack[frame][:, None], dtype=dtype))
    heads = np.zeros(len(records), dtype=mrdfile.IMAGE_HEADER_DTYPE)
    for i, fields in enumerate(records):
        for name, value in fields.items():
            heads[name][i] = value
    heads["image_series_index"] = series_index
    numbers = unique_numbers(heads["image_index"])
    if not np.array_equal(numbers, heads["image_index"]):
        log.info("series %d: image numbers repeat; images numbered 1..%d in order instead", series_index, len(heads))
        heads["image_index"] = numbers
    heads["slice"] = rank(np.einsum("ij,ij->i", heads["position"], heads["slice_dir"]))
    heads["phase"] = rank(heads["physiology_time_stamp"][:, 0])
    return heads, attributes, pixels


def iso(value: Any, kind: type) -> str | None:
    """A DICOM DA or TM value (``kind``) as xs:date or xs:time text; None when empty or invalid."""
    try:
        parsed = kind(str(value)) if value else None
    except ValueError:
        return None
    return parsed.isoformat() if parsed else None


def larmor_hz(ds: Dataset) -> int:
    """Proton resonance frequency: transmitter/imaging frequency, else field strength x gamma, else 0."""
    mhz = as_float(functional(ds, 0, "MRImagingModifierSequence", "TransmitterFrequency")
                   or ds.get("ImagingFrequency"))
    if mhz:
        return int(round(mhz * 1e6))
    return int(round((as_float(ds.get("MagneticFieldStrength")) or 0.0) * GAMMA_HZ_PER_T))


def section(parent: ET.Element, tag: str, items: Iterable[tuple[str, Any]]) -> None:
    """Add ``<tag>`` with one child per non-empty (name, value) item; nothing when all are empty."""
    items = [(name, value) for name, value in items if value is not None and value != ""]
    if items:
        element = ET.SubElement(parent, tag)
        for name, value in items:
            ET.SubElement(element, name).text = str(value)


def header_xml(ds: Dataset) -> str:
    """ISMRMRD XML header text (UTF-8 declaration) describing the dataset ``ds``."""
    text = {k: str(ds.get(k) or "") for k in ("PatientSex", "AccessionNumber", "PatientPosition")}
    position = text["PatientPosition"].strip().upper()
    if position not in PATIENT_POSITIONS:
        log.info("patient position %r is not an MRD value; HFS written", position)
        position = "HFS"
    rows, cols = int(ds.Rows), int(ds.Columns)
    fields = frame_fields(ds, 0, 1)
    root = ET.Element("ismrmrdHeader", xmlns=XML_NAMESPACE)
    section(root, "subjectInformation", [
        ("patientName", str(ds.get("PatientName") or "")), ("patientID", ds.get("PatientID")),
        ("patientBirthdate", iso(ds.get("PatientBirthDate"), DA)),
        ("patientGender", text["PatientSex"] if text["PatientSex"] in ("M", "F", "O") else None)])
    section(root, "studyInformation", [
        ("studyDate", iso(ds.get("StudyDate"), DA)), ("studyTime", iso(ds.get("StudyTime"), TM)),
        ("studyID", ds.get("StudyID")),
        ("accessionNumber", text["AccessionNumber"] if text["AccessionNumber"].isdigit() else None),
        ("studyDescription", ds.get("StudyDescription")), ("studyInstanceUID", ds.get("StudyInstanceUID"))])
    section(root, "measurementInformation", [
        ("measurementID", ds.get("SeriesInstanceUID")), ("patientPosition", position),
        ("protocolName", ds.get("SeriesDescription")), ("frameOfReferenceUID", ds.get("FrameOfReferenceUID"))])
    section(root, "acquisitionSystemInformation", [
        ("systemVendor", ds.get("Manufacturer")), ("systemModel", ds.get("ManufacturerModelName")),
        ("systemFieldStrength_T", as_float(ds.get("MagneticFieldStrength"))),
        ("institutionName", ds.get("InstitutionName")), ("stationName", ds.get("StationName"))])
    section(root, "experimentalConditions", [("H1resonanceFrequency_Hz", larmor_hz(ds))])
    encoding = ET.SubElement(root, "encoding")
    for space in ("encodedSpace", "reconSpace"):
        element = ET.SubElement(encoding, space)
        section(element, "matrixSize", zip("xyz", (cols, rows, 1)))
        section(element, "fieldOfView_mm", zip("xyz", (float(v) for v in fields["field_of_view"])))
    limits = ET.SubElement(encoding, "encodingLimits")
    section(limits, "kspace_encoding_step_1", [("minimum", 0), ("maximum", rows - 1), ("center", rows // 2)])
    ET.SubElement(encoding, "trajectory").text = "cartesian"
    section(root, "sequenceParameters", [
        ("TR", as_float(functional(ds, 0, "MRTimingAndRelatedParametersSequence", "RepetitionTime"))),
        ("TE", as_float(functional(ds, 0, "MREchoSequence", "EffectiveEchoTime") or ds.get("EchoTime"))),
        ("TI", as_float(functional(ds, 0, "MRModifierSequence", "InversionTimes") or ds.get("InversionTime"))),
        ("flipAngle_deg", as_float(functional(ds, 0, "MRTimingAndRelatedParametersSequence", "FlipAngle")))])
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder searched recursively for DICOM files")
    parser.add_argument("-o", "--outfile", type=Path, help="output MRD file (default: <folder name>.h5)")
    parser.add_argument("-g", "--out-group", dest="group", default="dataset", help="output group")
    return parser.parse_args(argv)


def convert(args: argparse.Namespace) -> int:
    """Write every DICOM series below the folder as an MRD image series; 0, or ToolError."""
    if not args.folder.is_dir():
        raise _cli.ToolError(f"no such folder: {args.folder}")
    series = group_series(find_datasets(args.folder))
    if not series:
        raise _cli.ToolError(f"no DICOM image with readable pixel data below {args.folder}")
    outfile = args.outfile or Path(args.folder.resolve().name + ".h5")
    with h5py.File(outfile, "w") as h5:
        group = h5.create_group(args.group)
        mrdfile.write_xml(group, header_xml(series[0][0]))
        for index, members in enumerate(series):
            heads, attributes, pixels = series_images(members, index)
            mrdfile.append_images(group, heads, attributes, pixels)
            log.info("series %d (%s): %d image(s)", index, members[0].get("SeriesDescription", ""), len(heads))
    log.info("wrote %d series to %s/%s", len(series), outfile, args.group)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    return _cli.exit_status(log, convert, _cli.start(parse_args, argv))


if __name__ == "__main__":
    sys.exit(main())
