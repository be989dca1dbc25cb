"""Tests of tools/dicom2mrd.py and tools/mrd2dicom.py on pydicom's real MR files, and through the server.

References come from pydicom reading the source files (pixels, geometry, UIDs), from the ISMRMRD
schema parser and from arithmetic on the source pixels, never from the converters themselves.
"""
import subprocess
import sys
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

import mrdfile
from conftest import REPO, run_client
from tools import dicom2mrd, mrd2dicom

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
DICOMDIR_TREE = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892003"
MR700 = DICOMDIR_TREE / "MR700"
GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")


def mr_small() -> Dataset:
    """MR_small.dcm: 64 x 64 int16, axial, PixelSpacing 0.3125, without network access."""
    return pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))


def save(ds: Dataset, folder: Path, name: str = "image.dcm") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / name)
    return folder


def sources(folder: Path) -> list[Dataset]:
    """The DICOM files of a folder (any name), read by pydicom, in InstanceNumber order."""
    return sorted((pydicom.dcmread(p) for p in folder.iterdir() if p.is_file()), key=lambda d: int(d.InstanceNumber))


def to_mrd(folder: Path, h5: Path, *args: str) -> Path:
    assert dicom2mrd.main([str(folder), "-o", str(h5), *args]) == 0
    return h5


def to_dicom(h5: Path, outdir: Path, *args: str) -> list[Dataset]:
    """mrd2dicom output read back, ordered by series, instance number, then file name."""
    assert mrd2dicom.main([str(h5), "-o", str(outdir), *args]) == 0
    paths = sorted(outdir.rglob("*.dcm"))
    return sorted((pydicom.dcmread(p) for p in paths), key=lambda d: (int(d.SeriesNumber), int(d.InstanceNumber)))


def read_series(h5: Path, group: str = "dataset") -> tuple[str, list[mrdfile.ImageSeries]]:
    with h5py.File(h5, "r") as f:
        return mrdfile.read_xml(f[group]), [mrdfile.read_image_series(f[group], n)
                                            for n in mrdfile.image_series_names(f[group])]


def assert_valid_mr_image(out: Dataset, ref: Dataset) -> None:
    """A valid MR Image Storage file of the reference's study and frame of reference, in a new series."""
    assert out.SOPClassUID == MR_IMAGE_STORAGE == out.file_meta.MediaStorageSOPClassUID
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.SOPInstanceUID == out.file_meta.MediaStorageSOPInstanceUID != ref.SOPInstanceUID
    assert out.StudyInstanceUID == ref.StudyInstanceUID
    assert out.FrameOfReferenceUID == ref.FrameOfReferenceUID
    assert out.SeriesInstanceUID and out.SeriesInstanceUID != ref.SeriesInstanceUID
    assert out.Modality == "MR"
    assert out.PatientName == ref.PatientName and out.PatientID == ref.PatientID


def assert_same_geometry(out: Dataset, ref: Dataset) -> None:
    assert (out.Rows, out.Columns) == (ref.Rows, ref.Columns)
    for keyword in GEOMETRY:
        np.testing.assert_allclose(np.array(out[keyword].value, dtype=float),
                                   np.array(ref[keyword].value, dtype=float), atol=1e-4, err_msg=keyword)
    assert float(out.SliceThickness) == pytest.approx(float(ref.SliceThickness))


def test_mr_small_round_trip_restores_pixels_geometry_and_original_header(tmp_path):
    ref = mr_small()
    h5 = to_mrd(save(ref, tmp_path / "in"), tmp_path / "small.h5")
    (out,) = to_dicom(h5, tmp_path / "out")
    np.testing.assert_array_equal(out.pixel_array, ref.pixel_array)
    assert out.pixel_array.dtype == np.int16 and out.PixelRepresentation == 1
    assert_same_geometry(out, ref)
    assert_valid_mr_image(out, ref)
    assert str(out.PatientName) == "CompressedSamples^MR1"
    assert (out.Manufacturer, out.PatientSex, out.ImageComments) == ("TOSHIBA_MEC", "F", "Uncompressed")
    assert (float(out.WindowCenter), float(out.WindowWidth)) == (600.0, 1600.0)
    assert list(out.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]
    assert "SmallestImagePixelValue" not in out and "LargestImagePixelValue" not in out


def test_mrd_header_has_centre_position_and_fov_from_column_and_row_spacing(tmp_path):
    ref = mr_small()
    ref.PixelData = np.ascontiguousarray(ref.pixel_array[:, :32]).tobytes()
    ref.Columns, ref.PixelSpacing = 32, [0.5, 0.25]  # row spacing 0.5 mm, column spacing 0.25 mm
    h5 = to_mrd(save(ref, tmp_path / "in"), tmp_path / "crop.h5")
    _, (series,) = read_series(h5)
    head = series.heads[0]
    assert tuple(head["matrix_size"]) == (32, 64, 1)
    np.testing.assert_allclose(head["field_of_view"], (0.25 * 32, 0.5 * 64, 0.8), rtol=1e-6)
    ipp = np.array(ref.ImagePositionPatient, dtype=float)
    np.testing.assert_allclose(head["position"], ipp + [31 / 2 * 0.25, 63 / 2 * 0.5, 0], atol=1e-4)
    np.testing.assert_allclose(head["slice_dir"], (0, 0, 1))
    assert (head["data_type"], head["image_type"], head["image_index"]) == (ismrmrd.DATATYPE_SHORT,
                                                                            ismrmrd.IMTYPE_MAGNITUDE, 1)
    np.testing.assert_array_equal(series.data[0, 0, 0], ref.pixel_array)
    (out,) = to_dicom(h5, tmp_path / "out")
    assert_same_geometry(out, ref)


def test_mr700_oblique_series_round_trips_every_file_and_header_parses(tmp_path):
    refs = sources(MR700)
    h5 = to_mrd(MR700, tmp_path / "mr700.h5")
    xml, (series,) = read_series(h5)
    header = ismrmrd.xsd.CreateFromDocument(xml)
    assert header.measurementInformation.measurementID == refs[0].SeriesInstanceUID
    assert header.measurementInformation.protocolName == refs[0].SeriesDescription
    assert header.studyInformation.studyInstanceUID == refs[0].StudyInstanceUID
    assert header.acquisitionSystemInformation.systemFieldStrength_T == pytest.approx(1.5)
    assert header.experimentalConditions.H1resonanceFrequency_Hz == round(float(refs[0].ImagingFrequency) * 1e6)
    assert header.sequenceParameters.TR == [30.0] and header.sequenceParameters.flipAngle_deg == [35.0]
    assert list(series.heads["image_index"]) == [int(d.InstanceNumber) for d in refs] == list(range(1, 8))
    outs = to_dicom(h5, tmp_path / "out")
    assert len(outs) == 7 and len({o.SeriesInstanceUID for o in outs}) == 1
    for out, ref in zip(outs, refs):
        np.testing.assert_array_equal(out.pixel_array, ref.pixel_array)
        assert_same_geometry(out, ref)
        assert_valid_mr_image(out, ref)
        assert out.InstanceNumber == ref.InstanceNumber and out.SeriesDescription == ref.SeriesDescription


def test_dicomdir_tree_converts_files_without_extension_and_skips_dicomdir(tmp_path):
    images = [p for p in DICOMDIR_TREE.rglob("*") if p.is_file() and "PixelData" in pydicom.dcmread(p)]
    h5 = to_mrd(DICOMDIR_TREE, tmp_path / "tree.h5", "-g", "tree")
    _, series = read_series(h5, "tree")
    assert sum(len(s.heads) for s in series) == len(images) == 17
    for index, s in enumerate(series):
        assert set(s.heads["image_series_index"]) == {index}
    assert [len(s.heads) for s in series][-1] == 7  # MR700, highest series number, last


def test_non_ascii_patient_name_survives_into_the_xml_and_back(tmp_path):
    ref = mr_small()
    ref.SpecificCharacterSet = "ISO_IR 100"
    ref.PatientName = "Müller^Jörg"
    h5 = to_mrd(save(ref, tmp_path / "in"), tmp_path / "name.h5")
    with h5py.File(h5, "r") as f:
        assert "Müller^Jörg".encode("utf-8") in f["dataset/xml"][0]
    xml, _ = read_series(h5)
    assert ismrmrd.xsd.CreateFromDocument(xml).subjectInformation.patientName == "Müller^Jörg"
    (out,) = to_dicom(h5, tmp_path / "out")
    assert str(out.PatientName) == "Müller^Jörg"


def test_without_dicom_json_patient_and_study_come_from_the_xml_header(tmp_path):
    ref = mr_small()
    ref.SpecificCharacterSet = "ISO_IR 100"
    ref.PatientName = "Müller^Jörg"
    h5 = to_mrd(save(ref, tmp_path / "in"), tmp_path / "name.h5")
    with h5py.File(h5, "a") as f:
        attributes = f["dataset/image_0/attributes"]
        meta = ismrmrd.Meta.deserialize(attributes[0])
        del meta["DicomJson"]
        attributes[0] = meta.serialize()
    (out,) = to_dicom(h5, tmp_path / "out")
    assert str(out.PatientName) == "Müller^Jörg"
    assert (out.PatientID, out.PatientSex, out.StudyDate, out.StudyTime) == ("4MR1", "F", "20040826", "185059")
    assert out.Manufacturer == "TOSHIBA_MEC"
    assert_valid_mr_image(out, ref)
    assert_same_geometry(out, ref)
    np.testing.assert_array_equal(out.pixel_array, ref.pixel_array)


def test_acquisition_and_trigger_times_become_2_5_ms_ticks_and_come_back(tmp_path):
    ref = mr_small()
    ref.AcquisitionTime, ref.TriggerTime = "101530.25", "125.0"
    h5 = to_mrd(save(ref, tmp_path / "in"), tmp_path / "time.h5")
    _, (series,) = read_series(h5)
    assert series.heads["acquisition_time_stamp"][0] == round((10 * 3600 + 15 * 60 + 30.25) / 0.0025)
    assert series.heads["physiology_time_stamp"][0, 0] == 50
    (out,) = to_dicom(h5, tmp_path / "out")
    assert out.AcquisitionTime == "101530.250000"
    assert float(out.TriggerTime) == 125.0


def enhanced_mr(ipps: list[list[float]], iop: list[float]) -> Dataset:
    """A 3-frame enhanced MR dataset made from MR_small, geometry only in the per-frame groups."""
    ds = mr_small()
    frames = np.stack([ds.pixel_array + 100 * k for k in range(len(ipps))]).astype(np.int16)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    ds.NumberOfFrames = len(ipps)
    ds.PixelData = frames.tobytes()
    for keyword in GEOMETRY + ("SliceThickness", "SmallestImagePixelValue", "LargestImagePixelValue"):
        del ds[keyword]
    groups = []
    for ipp in ipps:
        position, orientation, measures, item = Dataset(), Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = ipp
        orientation.ImageOrientationPatient = iop
        measures.PixelSpacing, measures.SliceThickness = [0.5, 0.25], 2.5
        item.PlanePositionSequence = [position]
        item.PlaneOrientationSequence = [orientation]
        item.PixelMeasuresSequence = [measures]
        groups.append(item)
    ds.PerFrameFunctionalGroupsSequence = groups
    return ds


def test_enhanced_multiframe_gives_one_image_per_frame_at_its_own_position(tmp_path):
    iop = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # sagittal: slice_dir = read x phase = (-1, 0, 0)
    ipps = [[10.0 + 2.5 * k, -20.0, 30.0] for k in range(3)]
    ref = enhanced_mr(ipps, iop)
    h5 = to_mrd(save(ref, tmp_path / "in"), tmp_path / "enhanced.h5")
    _, (series,) = read_series(h5)
    assert len(series.heads) == 3
    centre = np.array([0.0, 63 / 2 * 0.25, -63 / 2 * 0.5])
    np.testing.assert_allclose(series.heads["position"], np.array(ipps) + centre, atol=1e-4)
    np.testing.assert_allclose(series.heads["slice_dir"], [[-1, 0, 0]] * 3)
    assert list(series.heads["slice"]) == [2, 1, 0]  # x increases against slice_dir
    assert list(series.heads["image_index"]) == [1, 2, 3]
    np.testing.assert_array_equal(series.data[:, 0, 0], ref.pixel_array)
    outs = to_dicom(h5, tmp_path / "out")
    assert len(outs) == 3
    for k, out in enumerate(outs):
        assert out.SOPClassUID == MR_IMAGE_STORAGE and "NumberOfFrames" not in out
        assert "PerFrameFunctionalGroupsSequence" not in out
        np.testing.assert_allclose(np.array(out.ImagePositionPatient, dtype=float), ipps[k], atol=1e-4)
        np.testing.assert_allclose(np.array(out.ImageOrientationPatient, dtype=float), iop, atol=1e-6)
        assert [float(v) for v in out.PixelSpacing] == [0.5, 0.25] and float(out.SliceThickness) == 2.5
        np.testing.assert_array_equal(out.pixel_array, ref.pixel_array[k])


def write_mrd(path: Path, pixels: np.ndarray, data_type: int, image_type: int, meta: dict | None = None) -> Path:
    """One image ``[cha, z, y, x]``: FOV (60, 40, 9) mm, axial, centred at (5, 6, 7)."""
    heads = np.zeros(1, dtype=mrdfile.IMAGE_HEADER_DTYPE)
    heads["version"], heads["data_type"], heads["image_type"] = 1, data_type, image_type
    heads["matrix_size"] = (pixels.shape[3], pixels.shape[2], pixels.shape[1])
    heads["channels"] = pixels.shape[0]
    heads["field_of_view"] = (60, 40, 9)
    heads["position"], heads["read_dir"] = (5, 6, 7), (1, 0, 0)
    heads["phase_dir"], heads["slice_dir"] = (0, 1, 0), (0, 0, 1)
    heads["image_index"] = 4
    with h5py.File(path, "w") as f:
        mrdfile.append_images(f.create_group("g"), heads, [ismrmrd.Meta(meta or {}).serialize()], [pixels])
    return path


def test_complex_multislice_image_is_split_and_scaled_into_int16_slices(tmp_path):
    y, x = np.mgrid[0:4, 0:6]
    pixels = np.stack([(x + 1j * y) * 0.37 * (k + 1) for k in range(3)])[None].astype(np.complex64)
    h5 = write_mrd(tmp_path / "complex.h5", pixels, ismrmrd.DATATYPE_CXFLOAT, ismrmrd.IMTYPE_COMPLEX)
    outs = to_dicom(h5, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "image_0").iterdir()) == [
        "00_004_000.dcm", "00_004_001.dcm", "00_004_002.dcm"]
    peak = float(np.abs(pixels).max())
    for k, out in enumerate(outs):
        assert out.pixel_array.dtype == np.int16 and out.pixel_array.shape == (4, 6)
        physical = out.pixel_array * float(out.RescaleSlope) + float(out.RescaleIntercept)
        np.testing.assert_allclose(physical, np.abs(pixels[0, k]), atol=peak / 32767)
        assert [float(v) for v in out.PixelSpacing] == [10.0, 10.0] and float(out.SliceThickness) == 3.0
        np.testing.assert_allclose(np.array(out.ImagePositionPatient, dtype=float),
                                   [5 - 2.5 * 10, 6 - 1.5 * 10, 7 + 3.0 * (k - 1)], atol=1e-4)


def test_rgb_image_is_written_as_8_bit_rgb(tmp_path):
    rgb = (np.arange(3 * 4 * 6).reshape(3, 1, 4, 6) * 3).astype(np.uint16)
    h5 = write_mrd(tmp_path / "rgb.h5", rgb, ismrmrd.DATATYPE_USHORT, ismrmrd.IMTYPE_RGB,
                   {"SequenceDescription": "MAP", "SequenceDescriptionAdditional": "FIRE_RGB"})
    (out,) = to_dicom(h5, tmp_path / "out")
    assert (out.SamplesPerPixel, out.PhotometricInterpretation, out.PlanarConfiguration) == (3, "RGB", 0)
    assert (out.BitsAllocated, out.BitsStored, out.HighBit) == (8, 8, 7)
    np.testing.assert_array_equal(out.pixel_array, rgb[:, 0].transpose(1, 2, 0))
    assert out.SeriesDescription == "MAP_FIRE_RGB"


def test_bad_inputs_return_2(tmp_path):
    (tmp_path / "empty").mkdir()
    assert dicom2mrd.main([str(tmp_path / "missing"), "-o", str(tmp_path / "a.h5")]) == 2
    assert dicom2mrd.main([str(tmp_path / "empty"), "-o", str(tmp_path / "a.h5")]) == 2
    h5 = to_mrd(save(mr_small(), tmp_path / "in"), tmp_path / "small.h5")
    assert mrd2dicom.main([str(tmp_path / "missing.h5")]) == 2
    assert mrd2dicom.main([str(h5), "-g", "nonexistent"]) == 2


def test_invertcontrast_over_the_server_inverts_the_series_and_keeps_geometry(server, tmp_path):
    refs = sources(MR700)
    h5 = to_mrd(MR700, tmp_path / "mr700.h5")
    result = run_client(server.port, "-c", "invertcontrast", "-o", str(tmp_path / "out.h5"), "-G", "g", str(h5),
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    outs = to_dicom(tmp_path / "out.h5", tmp_path / "dicom", "-g", "g")
    assert len(outs) == 7
    max_value = 4095  # BitsStored 12; the series is scaled as one stack, then inverted
    stack = np.abs(np.stack([d.pixel_array for d in refs]).astype(np.float64))
    expected = max_value - np.around(stack * (max_value / stack.max()))
    np.testing.assert_allclose(np.stack([o.pixel_array for o in outs]), expected, atol=1)
    for out, ref in zip(outs, refs):
        assert out.InstanceNumber == ref.InstanceNumber
        assert_same_geometry(out, ref)
        assert_valid_mr_image(out, ref)
        assert out.SeriesDescription == f"{ref.SeriesDescription}_FIRE"
        assert (float(out.WindowCenter), float(out.WindowWidth)) == (2048.0, 4096.0)


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess:
    """One of the DICOM tools as a subprocess; asserts exit status 0."""
    result = subprocess.run([sys.executable, str(REPO / "tools" / name), *args], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def variant(offset: int, sop_uid: str, instance: int | None, series_uid: str | None = None) -> Dataset:
    """MR_small with its pixels raised by ``offset`` (so each file is recognisable), a SOPInstanceUID and an
    InstanceNumber (None: removed)."""
    ds = mr_small()
    ds.PixelData = (ds.pixel_array + offset).astype(np.int16).tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    if instance is None:
        del ds.InstanceNumber
    else:
        ds.InstanceNumber = instance
    if series_uid is not None:
        ds.SeriesInstanceUID = series_uid
    return ds


def assert_each_input_once(outputs: list[np.ndarray], inputs: list[np.ndarray]) -> None:
    """Every input pixel array is found in exactly one output, and there is one output per input."""
    assert len(outputs) == len(inputs)
    for pixels in inputs:
        assert sum(np.array_equal(pixels, out) for out in outputs) == 1


def test_repeated_instance_numbers_in_one_series_keep_every_file_as_its_own_image(tmp_path):
    uid = "1.2.826.0.1.3680043.8.498.{}"
    # Same series in two subfolders (InstanceNumber 1 twice, the later path with the lower UID), one file without
    # InstanceNumber (sorted last) and one with InstanceNumber 0 (first).
    files = {"a/x.dcm": variant(0, uid.format(9), 1), "b/x.dcm": variant(10, uid.format(2), 1),
             "a/nonumber.dcm": variant(20, uid.format(1), None), "b/zero.dcm": variant(30, uid.format(5), 0)}
    for name, ds in files.items():
        save(ds, tmp_path / "in" / Path(name).parent, Path(name).name)
    h5 = tmp_path / "dup.h5"
    result = run_tool("dicom2mrd.py", str(tmp_path / "in"), "-o", str(h5))
    assert "image numbers repeat" in result.stderr
    _, (series,) = read_series(h5)
    assert list(series.heads["image_index"]) == [1, 2, 3, 4]
    expected = [files[n].pixel_array for n in ("b/zero.dcm", "b/x.dcm", "a/x.dcm", "a/nonumber.dcm")]
    for image, pixels in zip(series.data, expected):  # InstanceNumber, then SOPInstanceUID, none last
        np.testing.assert_array_equal(image[0, 0], pixels)
    run_tool("dicom2mrd.py", str(tmp_path / "in"), "-o", str(tmp_path / "again.h5"))
    _, (again,) = read_series(tmp_path / "again.h5")
    np.testing.assert_array_equal(again.data, series.data)

    run_tool("mrd2dicom.py", str(h5), "-o", str(tmp_path / "out"))
    paths = sorted((tmp_path / "out" / "image_0").iterdir())
    assert [p.name for p in paths] == ["00_001.dcm", "00_002.dcm", "00_003.dcm", "00_004.dcm"]
    outs = [pydicom.dcmread(p) for p in paths]
    assert [int(o.InstanceNumber) for o in outs] == [1, 2, 3, 4]
    assert len({o.SOPInstanceUID for o in outs}) == 4
    assert_each_input_once([o.pixel_array for o in outs], [ds.pixel_array for ds in files.values()])


def test_two_series_with_the_same_instance_numbers_in_one_folder_stay_apart(tmp_path):
    folder = tmp_path / "in"
    inputs = []
    for k, series_uid in enumerate(("1.2.826.0.1.3680043.8.498.100", "1.2.826.0.1.3680043.8.498.200")):
        for instance in (1, 2, 3):
            ds = variant(100 * k + instance, f"{series_uid}.{instance}", instance, series_uid)
            ds.SeriesNumber = 5 + k
            save(ds, folder, f"s{k}_{instance}.dcm")
            inputs.append(ds.pixel_array)
    h5 = tmp_path / "two.h5"
    result = run_tool("dicom2mrd.py", str(folder), "-o", str(h5))
    assert "repeat" not in result.stderr
    _, series = read_series(h5)
    assert [list(s.heads["image_index"]) for s in series] == [[1, 2, 3], [1, 2, 3]]
    assert_each_input_once([image[0, 0] for s in series for image in s.data], inputs)
    np.testing.assert_array_equal(series[1].data[0, 0, 0], inputs[3])  # SeriesNumber 6 second
    outs = to_dicom(h5, tmp_path / "out")
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 6
    assert_each_input_once([o.pixel_array for o in outs], inputs)


def test_mrd2dicom_numbers_images_1_to_n_when_image_index_repeats(tmp_path):
    pixels = [np.full((1, 1, 4, 6), 7 * k, dtype=np.int16) for k in range(3)]
    heads = np.zeros(3, dtype=mrdfile.IMAGE_HEADER_DTYPE)
    heads["version"], heads["data_type"], heads["channels"] = 1, ismrmrd.DATATYPE_SHORT, 1
    heads["matrix_size"], heads["field_of_view"] = (6, 4, 1), (60, 40, 5)
    heads["read_dir"], heads["phase_dir"], heads["slice_dir"] = (1, 0, 0), (0, 1, 0), (0, 0, 1)
    heads["image_index"] = 0  # e.g. a reconstruction that leaves image_index unset
    h5 = tmp_path / "same_index.h5"
    with h5py.File(h5, "w") as f:
        mrdfile.append_images(f.create_group("g"), heads, [""] * 3, pixels)
    result = run_tool("mrd2dicom.py", str(h5), "-o", str(tmp_path / "out"))
    assert "wrote 3 file(s)" in result.stderr
    paths = sorted((tmp_path / "out" / "image_0").iterdir())
    assert [p.name for p in paths] == ["00_001.dcm", "00_002.dcm", "00_003.dcm"]
    for k, path in enumerate(paths):
        out = pydicom.dcmread(path)
        assert int(out.InstanceNumber) == k + 1
        np.testing.assert_array_equal(out.pixel_array, pixels[k][0, 0])
