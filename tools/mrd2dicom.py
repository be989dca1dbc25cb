"""Write the image series of an MRD HDF5 group as DICOM MR Image Storage files.

One sub-folder per series (``image_<n>``) and one single-frame file per 2-D frame: the slices of a
multi-slice image and the channels of a multi-channel image are split into separate files.  Pixels:
uint16 and int16 are written as they are; other real or complex data (complex as magnitude) is
written as int16 when the values are integers that fit, else scaled to the int16 range with the
factor folded into RescaleSlope; RGB images (image_type 6, 3 channels) become 8-bit RGB.  When an
image carries ``DicomJson`` (from dicom2mrd) its original header is the starting point; otherwise the
XML header provides patient, study and system fields.  Geometry, pixel module, time stamps (2.5 ms
ticks), window, rescale and descriptions then come from the MRD header and attributes
(docs/modules.md §13.2; conventions in tools/_dicom_mrd.py).  Every file gets a new
SOPInstanceUID and each series a new SeriesInstanceUID; the StudyInstanceUID and
FrameOfReferenceUID are kept from the source (else generated once per run).

Usage: ``python tools/mrd2dicom.py in.h5 [-g GROUP (default: last)] [-o FOLDER (default: input path
without .h5)]``; files are named ``<SeriesNumber:02d>_<InstanceNumber:03d>[_<frame:03d>].dcm``, the
InstanceNumber being the ``image_index``, or 1..N in file order when these repeat within a series (so
that no file overwrites another).
Exit status 0, or 2 for a missing file or group, or a group without images.
"""
from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ismrmrd  # noqa: E402
import numpy as np  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402
from pydicom.valuerep import DSfloat  # noqa: E402

import mrdfile  # noqa: E402
from tools import _cli  # noqa: E402
from tools._dicom_mrd import (IMAGE_TYPE_LETTERS, IMTYPE_RGB, MR_IMAGE_STORAGE, MULTIFRAME_KEYWORDS,  # noqa: E402
                              PIXEL_KEYWORDS, corner_to_centre, decode_dicom_json, ticks_to_seconds,
                              unique_numbers)

log = logging.getLogger("mrd2dicom")

# Elements whose source values no longer describe the written pixels; rewritten from the MRD image.
STALE_KEYWORDS = MULTIFRAME_KEYWORDS + PIXEL_KEYWORDS + (
    "PlanarConfiguration", "SmallestImagePixelValue", "LargestImagePixelValue", "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries", "PixelPaddingValue", "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation",
    "RescaleSlope", "RescaleIntercept")
LO_MAX = 64


def ds_number(value: float) -> DSfloat:
    """A decimal string value that fits the 16-character DS limit."""
    return DSfloat(float(value), auto_format=True)


def shortest(value: np.float32) -> float:
    """The shortest decimal that reads back as the same float32 (e.g. 1.2, not 1.2000000476837158)."""
    return float(str(np.float32(value)))


def meta_list(meta: ismrmrd.Meta, *keys: str) -> list[str]:
    """Values of the first present key as a list of strings (empty when none is present)."""
    for key in keys:
        if key in meta:
            value = meta[key]
            return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return []


def parse_header(xml: str | None) -> Any:
    """The parsed ISMRMRD header, or None when absent or invalid."""
    if not xml:
        return None
    try:
        return ismrmrd.xsd.CreateFromDocument(xml)
    except Exception as exc:  # xsdata raises several unrelated types
        log.warning("XML header not parsed (%s); patient and study fields left empty", exc)
        return None


def header_dataset(header: Any) -> Dataset:
    """Patient, study, series and system elements from the parsed XML header."""
    ds = Dataset()
    if header is None:
        return ds
    subject, study, measurement, system, sequence = (getattr(header, name, None) for name in (
        "subjectInformation", "studyInformation", "measurementInformation", "acquisitionSystemInformation",
        "sequenceParameters"))
    position = getattr(measurement, "patientPosition", None)
    values = {
        "PatientName": getattr(subject, "patientName", None), "PatientID": getattr(subject, "patientID", None),
        "PatientBirthDate": str(getattr(subject, "patientBirthdate", None) or "").replace("-", ""),
        "PatientSex": getattr(subject, "patientGender", None),
        "StudyDate": str(getattr(study, "studyDate", None) or "").replace("-", ""),
        "StudyTime": str(getattr(study, "studyTime", None) or "").replace(":", ""),
        "StudyID": getattr(study, "studyID", None), "AccessionNumber": getattr(study, "accessionNumber", None),
        "StudyDescription": getattr(study, "studyDescription", None),
        "StudyInstanceUID": getattr(study, "studyInstanceUID", None),
        "PatientPosition": getattr(position, "value", None), "ProtocolName": getattr(measurement, "protocolName", None),
        "FrameOfReferenceUID": getattr(measurement, "frameOfReferenceUID", None),
        "Manufacturer": getattr(system, "systemVendor", None),
        "ManufacturerModelName": getattr(system, "systemModel", None),
        "InstitutionName": getattr(system, "institutionName", None),
        "StationName": getattr(system, "stationName", None),
    }
    for keyword, value in values.items():
        if value is not None and value != "":
            setattr(ds, keyword, str(value))
    numbers = {"MagneticFieldStrength": [getattr(system, "systemFieldStrength_T", None)],
               "RepetitionTime": getattr(sequence, "TR", None) or [], "EchoTime": getattr(sequence, "TE", None) or [],
               "FlipAngle": getattr(sequence, "flipAngle_deg", None) or []}
    for keyword, value in numbers.items():
        if value and value[0] is not None:
            setattr(ds, keyword, ds_number(value[0]))
    return ds


def base_dataset(template: Dataset, meta: ismrmrd.Meta) -> Dataset:
    """The XML-derived elements updated with the image's original DICOM header (``DicomJson``)."""
    ds = copy.deepcopy(template)
    if "DicomJson" in meta:
        ds.update(decode_dicom_json(meta["DicomJson"]))
    for keyword in STALE_KEYWORDS:
        if keyword in ds:
            del ds[keyword]
    return ds


def stored_pixels(frame: np.ndarray, rgb: bool) -> tuple[np.ndarray, float]:
    """DICOM pixel values of one frame (``[y, x]``, or ``[y, x, 3]`` uint8 for RGB) and the factor
    that maps them back to the MRD values (1 unless the values had to be scaled to int16)."""
    if rgb:
        return np.clip(np.rint(np.moveaxis(frame.real, 0, -1)), 0, 255).astype(np.uint8), 1.0
    if frame.dtype in (np.uint16, np.int16):
        return frame, 1.0
    values = np.nan_to_num(np.abs(frame) if np.iscomplexobj(frame) else frame.astype(np.float64))
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if np.array_equal(values, np.rint(values)) and -32768 <= low and high <= 32767:
        return values.astype(np.int16), 1.0
    factor = max(abs(low), abs(high)) / 32767 or 1.0
    return np.rint(values / factor).astype(np.int16), factor


def frame_dataset(base: Dataset, head: np.void, meta: ismrmrd.Meta, pixels: np.ndarray, position: np.ndarray,
                  thickness: float, instance: int) -> Dataset:
    """One MR Image Storage dataset for a 2-D frame (``pixels`` ``[y, x]`` or ``[3, y, x]`` RGB) with
    InstanceNumber ``instance``."""
    ds = copy.deepcopy(base)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.SeriesNumber = int(head["image_series_index"])
    ds.InstanceNumber = instance
    image_type = int(head["image_type"])
    ds.ImageType = meta_list(meta, "ImageType") or ["ORIGINAL", "PRIMARY", IMAGE_TYPE_LETTERS.get(image_type, "M")]

    nx, ny = int(head["matrix_size"][0]), int(head["matrix_size"][1])
    spacing = (shortest(head["field_of_view"][1] / ny), shortest(head["field_of_view"][0] / nx))
    row_dir = [float(v) for v in meta_list(meta, "ImageRowDir")] or [float(v) for v in head["read_dir"]]
    col_dir = [float(v) for v in meta_list(meta, "ImageColumnDir")] or [float(v) for v in head["phase_dir"]]
    if not any(row_dir) or not any(col_dir):
        row_dir, col_dir = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    ds.ImageOrientationPatient = [ds_number(v) for v in row_dir + col_dir]
    if all(spacing):
        ds.PixelSpacing = [ds_number(v) for v in spacing]
        position = position - corner_to_centre(row_dir, col_dir, ny, nx, spacing)
    ds.ImagePositionPatient = [ds_number(v) for v in position]
    if thickness > 0:
        ds.SliceThickness = ds_number(thickness)

    if head["acquisition_time_stamp"]:
        seconds = ticks_to_seconds(int(head["acquisition_time_stamp"])) % 86400
        ds.AcquisitionTime = f"{int(seconds // 3600):02d}{int(seconds % 3600 // 60):02d}{seconds % 60:09.6f}"
    if head["physiology_time_stamp"][0]:
        ds.TriggerTime = ds_number(ticks_to_seconds(int(head["physiology_time_stamp"][0])) * 1000)
    description = meta_list(meta, "SeriesDescription", "SequenceDescription") or [str(ds.get("ProtocolName", ""))]
    extra = meta_list(meta, "SequenceDescriptionAdditional", "SeriesDescriptionAdditional")
    ds.SeriesDescription = "_".join(v for v in description + extra if v)[:LO_MAX]
    comments = meta_list(meta, "ImageComments", "ImageComment")
    if comments:
        ds.ImageComments = "_".join(comments)
    for keyword in ("WindowCenter", "WindowWidth", "EchoTime", "InversionTime"):
        if keyword in meta:
            setattr(ds, keyword, ds_number(meta_list(meta, keyword)[0]))

    rgb = image_type == IMTYPE_RGB and pixels.ndim == 3
    stored, factor = stored_pixels(pixels, rgb)
    slope = float((meta_list(meta, "RescaleSlope") or ["1"])[0]) * factor
    if "RescaleSlope" in meta or "RescaleIntercept" in meta or factor != 1.0:
        ds.RescaleSlope = ds_number(slope)
        ds.RescaleIntercept = ds_number(float((meta_list(meta, "RescaleIntercept") or ["0"])[0]))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_pixel_data(stored, "RGB" if rgb else "MONOCHROME2", stored.dtype.itemsize * 8, generate_instance_uid=False)
    return ds


def image_frames(head: np.void, data: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(pixels, centre position, slice thickness) of each 2-D frame of one ``[cha, z, y, x]`` image.

    RGB images keep their 3 channels in one frame per slice; slice ``k`` of ``nz`` is centred at
    ``position + slice_dir * (k - (nz - 1) / 2) * fov_z / nz``.
    """
    nz = data.shape[1]
    thickness = shortest(head["field_of_view"][2] / nz)
    slice_dir = np.asarray(head["slice_dir"], dtype=np.float64)
    if not slice_dir.any():
        slice_dir = np.cross(np.asarray(head["read_dir"], dtype=np.float64), head["phase_dir"])
    centre = np.asarray(head["position"], dtype=np.float64)
    rgb = int(head["image_type"]) == IMTYPE_RGB and data.shape[0] == 3
    frames = []
    for k in range(nz):
        position = centre + slice_dir * (k - (nz - 1) / 2) * thickness
        channels = [data[:, k]] if rgb else list(data[:, k])
        frames.extend((pixels, position, thickness) for pixels in channels)
    return frames


def write_series(series: mrdfile.ImageSeries, template: Dataset, folder: Path) -> int:
    """Write every frame of one MRD series into ``folder``; returns the number of files."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    instances = unique_numbers(series.heads["image_index"])
    if not np.array_equal(instances, series.heads["image_index"]):
        log.info("%s: image_index values repeat; InstanceNumbers 1..%d in file order instead", series.name,
                 len(instances))
    written = 0
    for head, attributes, data, instance in zip(series.heads, series.attributes, series.data, instances):
        meta = ismrmrd.Meta.deserialize(attributes) if attributes.strip() else ismrmrd.Meta()
        base = base_dataset(template, meta)
        frames = image_frames(head, data)
        for number, (pixels, position, thickness) in enumerate(frames):
            ds = frame_dataset(base, head, meta, pixels, position, thickness, int(instance))
            ds.SeriesInstanceUID = series_uid
            suffix = f"_{number:03d}" if len(frames) > 1 else ""
            ds.save_as(folder / f"{ds.SeriesNumber:02d}_{ds.InstanceNumber:03d}{suffix}.dcm", enforce_file_format=True)
            written += 1
    return written


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("filename", type=Path, help="MRD HDF5 input file")
    parser.add_argument("-g", "--in-group", dest="group", help="group (default: last group of the file)")
    parser.add_argument("-o", "--outdir", type=Path, help="output folder (default: input path without .h5)")
    return parser.parse_args(argv)


def convert(args: argparse.Namespace) -> int:
    """Write every image series of the chosen group; 0, or ToolError."""
    outdir = args.outdir or args.filename.with_suffix("")
    with _cli.image_group(args.filename, args.group) as (group, grp, names):
        if not names:
            raise _cli.ToolError(f"group {group} of {args.filename} holds no image series")
        template = header_dataset(parse_header(mrdfile.read_xml(grp)))
        template.StudyInstanceUID = template.get("StudyInstanceUID") or generate_uid()
        template.FrameOfReferenceUID = template.get("FrameOfReferenceUID") or generate_uid()
        for name in names:
            count = write_series(mrdfile.read_image_series(grp, name), template, outdir / name)
            log.info("wrote %d file(s) of %s/%s to %s", count, group, name, outdir / name)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    return _cli.exit_status(log, convert, _cli.start(parse_args, argv))


if __name__ == "__main__":
    sys.exit(main())
