"""mrdv2/convert.py: MRD v1 (ismrmrd) ↔ MRD v2 (mrd) objects, field by field, both ways.

Headers: a v2 header with every field set (built by walking the v2 types) survives v2 → XML → v2,
and the XML headers of the generators and of the mrd phantom survive XML → v2 → XML.
Acquisitions, waveforms and images (every pixel type): every header field set to distinct
non-zero values, converted both ways, compared field by field; data bit-identical.
"""
from __future__ import annotations

import base64
import ctypes
import dataclasses
import datetime
import enum
import io
import subprocess
import sys
import time
import typing
from pathlib import Path

import h5py
import ismrmrd
import ismrmrd.xsd
import mrd
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import connection  # noqa: E402
import mrdfile  # noqa: E402
from mrdv2 import convert  # noqa: E402

PY = sys.executable
Time = mrd.yardl_types.Time


def _parse(xml: str) -> ismrmrd.xsd.ismrmrdHeader:
    return ismrmrd.xsd.CreateFromDocument(connection.XML_DECLARATION.sub("", xml, count=1))


# --------------------------------------------------------------------------------------------
# A v2 header with every field set
# --------------------------------------------------------------------------------------------

class _Values:
    """Distinct values for every v2 header field, walking the type annotations."""

    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n

    def build(self, cls: type) -> object:
        hints = typing.get_type_hints(cls, include_extras=True)
        kwargs = {}
        for name, tp in hints.items():
            if cls is mrd.UserParameterBase64Type and name == "value":
                kwargs[name] = base64.b64encode(bytes(range(self.next() % 200, 256))).decode()
            else:
                kwargs[name] = self.value(tp)
        return cls(**kwargs)

    def value(self, tp: object) -> object:
        origin = typing.get_origin(tp)
        if origin is typing.Union:
            (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
            return self.value(inner)
        if origin is list:
            (inner,) = typing.get_args(tp)
            return [self.value(inner), self.value(inner)]
        if origin is typing.Annotated:
            base, kind = typing.get_args(tp)
            k = self.next()
            if base is float:
                return k + 0.125 if kind == "Float32" else k / 7
            if kind == "Int64":
                return -(1 << 40) - k
            if kind == "UInt64":
                return (1 << 60) + k
            return 1000 + k
        if tp is str:
            return f"text {self.next()} äöü <&>"
        if tp is datetime.date:
            k = self.next()
            return datetime.date(1950 + k % 70, 1 + k % 12, 1 + k % 28)
        if tp is Time:
            k = self.next()
            return Time.from_components(k % 24, k % 60, (k * 7) % 60, 123456789 + k)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            members = [m for m in tp if m not in convert._V2_ONLY_MEMBERS]
            return members[self.next() % len(members)]
        if isinstance(tp, type) and tp.__module__ == "mrd.types":
            return self.build(tp)
        raise AssertionError(f"no test value for {tp}")


def _full_header() -> mrd.Header:
    return _Values().build(mrd.Header)


def _assert_xsd_populated(obj: object, path: str = "ismrmrdHeader") -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        assert value is not None and value != [], f"{path}.{f.name} is empty"
        for item in value if isinstance(value, list) else [value]:
            if dataclasses.is_dataclass(item):
                _assert_xsd_populated(item, f"{path}.{f.name}")


def test_header_plan_pairs_every_field_of_both_models():
    convert.header_plan()
    x_module = sys.modules[ismrmrd.xsd.ismrmrdHeader.__module__]
    x_classes = {c for c in vars(x_module).values() if dataclasses.is_dataclass(c)}
    assert {p.x_cls for p in convert._PLANS.values()} == x_classes
    for v2_cls, plan in convert._PLANS.items():
        assert [f[0] for f in plan.fields] == list(typing.get_type_hints(v2_cls))
        assert sorted(f[1] for f in plan.fields) == sorted(f.name for f in dataclasses.fields(plan.x_cls))
    names = {(p.v2_cls.__name__, v, x) for p in convert._PLANS.values() for v, x, _, _ in p.fields}
    for pair in [("EncodingSpaceType", "field_of_view_mm", "fieldOfView_mm"),
                 ("Header", "measurement_information", "measurementInformation"),
                 ("SequenceParametersType", "t_r", "TR"),
                 ("ExperimentalConditionsType", "h1resonance_frequency_hz", "H1resonanceFrequency_Hz"),
                 ("ReferencedImageSequenceType", "referenced_sop_instance_uid", "referencedSOPInstanceUID")]:
        assert pair in names


def test_full_header_round_trip_v2_xml_v2():
    header = _full_header()
    xsd = convert.header_to_xsd(header)
    _assert_xsd_populated(xsd)
    xml = convert.header_to_xml(header)
    back = convert.header_from_xml(xml)
    assert mrd.structural_equal(header, back), f"{header!r}\n!=\n{back!r}"
    # and XML → v2 → XML of that complete XML
    assert _parse(convert.header_to_xml(back)) == _parse(xml)


def test_header_values_are_the_xml_values():
    header = _full_header()
    header.subject_information.patient_gender = mrd.PatientGender.F
    header.measurement_information.patient_position = mrd.PatientPosition.F_FDR
    header.encoding[0].trajectory = mrd.Trajectory.GOLDENANGLE
    header.encoding[0].parallel_imaging.multiband.calibration = mrd.Calibration.SEPARABLE_2D
    header.sequence_parameters.diffusion_dimension = mrd.DiffusionDimension.USER_3
    header.study_information.study_time = Time.from_components(7, 8, 9, 500_000_000)
    header.study_information.study_date = datetime.date(2024, 2, 29)
    header.user_parameters.user_parameter_base64[0].value = base64.b64encode(b"MRD v2").decode()
    x = convert.header_to_xsd(header)
    assert x.subjectInformation.patientGender == "F"
    assert x.measurementInformation.patientPosition.value == "FFDR"
    assert x.encoding[0].trajectory.value == "goldenangle"
    assert x.encoding[0].parallelImaging.multiband.calibration.value == "separable2D"
    assert x.sequenceParameters.diffusionDimension.value == "user_3"
    assert str(x.studyInformation.studyTime) == "07:08:09.500"
    assert str(x.studyInformation.studyDate) == "2024-02-29"
    assert x.userParameters.userParameterBase64[0].value == b"MRD v2"
    xml = convert.header_to_xml(header)
    assert "<userParameterBase64>" in xml and base64.b64encode(b"MRD v2").decode() in xml
    assert "<H1resonanceFrequency_Hz>" in xml and "<fieldOfView_mm>" in xml and "<TR>" in xml


def test_header_values_v1_cannot_hold():
    header = _full_header()
    header.encoding[0].parallel_imaging.calibration_mode = mrd.CalibrationMode.NOACCELERATION
    assert convert.header_to_xsd(header).encoding[0].parallelImaging.calibrationMode is None
    header.encoding[0].trajectory = mrd.Trajectory(42)
    with pytest.raises(ValueError, match="trajectory"):
        convert.header_to_xml(header)
    with pytest.raises(ValueError, match="not a valid ISMRMRD XML header"):
        convert.header_from_xml("<ismrmrdHeader><bogus/></ismrmrdHeader>")


def test_time_zone_offset_keeps_the_clock_reading():
    header = mrd.Header(study_information=mrd.StudyInformationType(study_time=Time.from_components(1, 2, 3)))
    xml = convert.header_to_xml(header).replace("01:02:03", "01:02:03+02:00")
    assert convert.header_from_xml(xml).study_information.study_time == Time.from_components(1, 2, 3)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("mrdv2_convert")
    cart, spiral, phantom = tmp / "cart.h5", tmp / "spiral.h5", tmp / "phantom.bin"
    subprocess.run([PY, str(REPO / "tools" / "generate_cartesian_shepp_logan_dataset.py"), "-o", str(cart),
                    "-m", "32", "-c", "4", "-r", "2"], check=True, capture_output=True)
    subprocess.run([PY, str(REPO / "tools" / "generate_spiral_dataset.py"), "-o", str(spiral),
                    "--metafile-dir", str(tmp), "--coils", "2", "--arms", "4", "--waveforms"],
                   check=True, capture_output=True)
    subprocess.run([PY, "-m", "mrd.tools.phantom", "-o", str(phantom), "-m", "32", "-c", "4", "-r", "1"],
                   check=True, capture_output=True)
    return {"cart": cart, "spiral": spiral, "phantom": phantom}


def _phantom(path: Path) -> tuple[mrd.Header, list]:
    with open(path, "rb") as f:
        reader = mrd.BinaryMrdReader(f)
        header = reader.read_header()
        items = list(reader.read_data())
    return header, items


@pytest.mark.parametrize("name", ["cart", "spiral"])
def test_generator_headers_round_trip_xml_v2_xml(datasets, name):
    with h5py.File(datasets[name], "r") as h5:
        xml = mrdfile.read_xml(h5["dataset"])
    header = convert.header_from_xml(xml)
    assert header.encoding and header.experimental_conditions.h1resonance_frequency_hz > 0
    assert _parse(convert.header_to_xml(header)) == _parse(xml)
    # the v2 header is writable as MRD v2
    stream = io.BytesIO()
    writer = mrd.BinaryMrdWriter(stream)
    writer.write_header(header)
    writer.write_data([])
    writer.close()
    assert mrd.BinaryMrdReader(io.BytesIO(stream.getvalue())).read_header() is not None


def test_phantom_header_round_trips_both_ways(datasets):
    header, _ = _phantom(datasets["phantom"])
    xml = convert.header_to_xml(header)
    assert mrd.structural_equal(convert.header_from_xml(xml), header)
    assert _parse(convert.header_to_xml(convert.header_from_xml(xml))) == _parse(xml)


# --------------------------------------------------------------------------------------------
# Acquisitions
# --------------------------------------------------------------------------------------------

IDX_NAMES = ["kspace_encode_step_1", "kspace_encode_step_2", "average", "slice", "contrast",
             "phase", "repetition", "set", "segment"]
ACQ_OPTIONAL = ["scan_counter", "acquisition_time_stamp", "discard_pre", "discard_post",
                "center_sample", "encoding_space_ref", "sample_time_us"]
VECTORS = ["position", "read_dir", "phase_dir", "slice_dir", "patient_table_position"]


def _v1_acquisition(rng: np.random.Generator, channels: list[int], ns: int = 97, td: int = 3) -> ismrmrd.Acquisition:
    h = ismrmrd.AcquisitionHeader()
    h.version = 1
    h.flags = int(rng.integers(1, 1 << 63)) | (1 << 63)
    h.measurement_uid, h.scan_counter, h.acquisition_time_stamp = (int(v) for v in rng.integers(1, 1 << 32, 3))
    h.physiology_time_stamp[:] = [int(v) for v in rng.integers(1, 1 << 32, 3)]
    h.number_of_samples, h.active_channels, h.available_channels = ns, len(channels), len(channels)
    for c in channels:
        h.channel_mask[c // 64] |= 1 << (c % 64)
    h.discard_pre, h.discard_post, h.center_sample, h.encoding_space_ref = (int(v) for v in rng.integers(1, 65536, 4))
    h.trajectory_dimensions = td
    h.sample_time_us = float(np.float32(rng.uniform(1, 10)))
    for name in VECTORS:
        getattr(h, name)[:] = [float(v) for v in rng.standard_normal(3).astype(np.float32)]
    for name in IDX_NAMES:
        setattr(h.idx, name, int(rng.integers(1, 65536)))
    h.idx.user[:] = [int(v) for v in rng.integers(1, 65536, 8)]
    h.user_int[:] = [int(v) for v in rng.integers(-(1 << 31), 1 << 31, 8)]
    h.user_float[:] = [float(v) for v in rng.standard_normal(8).astype(np.float32)]
    acq = ismrmrd.Acquisition(h)
    acq.data[:] = (rng.standard_normal((len(channels), ns)) + 1j * rng.standard_normal((len(channels), ns)))
    acq.traj[:] = rng.standard_normal((ns, td))
    return acq


def _assert_acq_fields(v1: ismrmrd.Acquisition, v2: mrd.Acquisition, channels: list[int]) -> None:
    h, a = v2.head, v1._head
    assert int(h.flags) == a.flags and isinstance(h.flags, mrd.AcquisitionFlags)
    for name in ["measurement_uid"] + ACQ_OPTIONAL:
        assert getattr(h, name) == getattr(a, name), name
    assert h.physiology_time_stamp == list(a.physiology_time_stamp)
    assert h.channel_order == sorted(channels)
    for name in VECTORS:
        assert getattr(h, name).tolist() == list(getattr(a, name)), name
        assert getattr(h, name).dtype == np.float32 and getattr(h, name).shape == (3,)
    for name in IDX_NAMES:
        assert getattr(h.idx, name) == getattr(a.idx, name), name
    assert h.idx.user == list(a.idx.user)
    assert h.user_int == list(a.user_int) and h.user_float == list(a.user_float)
    assert v2.data.dtype == np.complex64 and v2.data.tobytes() == v1.data.tobytes()
    assert v2.trajectory.dtype == np.float32 and v2.trajectory.shape == (a.trajectory_dimensions, a.number_of_samples)
    assert np.ascontiguousarray(v2.trajectory.T).tobytes() == v1.traj.tobytes()


@pytest.mark.parametrize("channels", [list(range(16)), [0, 3, 5, 63, 64, 200, 1023], [7]])
def test_acquisition_v1_v2_v1_field_by_field(channels):
    rng = np.random.default_rng(len(channels))
    v1 = _v1_acquisition(rng, channels)
    v2 = convert.acquisition_to_v2(v1)
    _assert_acq_fields(v1, v2, channels)
    back = convert.acquisition_to_v1(v2)
    assert bytes(back._head) == bytes(v1._head)
    assert back.data.tobytes() == v1.data.tobytes() and back.traj.tobytes() == v1.traj.tobytes()
    assert back == v1
    # one copy each way: the objects do not share arrays
    v2.data[...] = 0
    assert back.data.tobytes() == v1.data.tobytes() and not np.shares_memory(back.data, v2.data)


def test_acquisition_without_mask_or_trajectory():
    rng = np.random.default_rng(5)
    v1 = _v1_acquisition(rng, [0, 1], td=0)
    v1._head.channel_mask[:] = [0] * 16
    v2 = convert.acquisition_to_v2(v1)
    assert v2.head.channel_order == [] and v2.trajectory.shape == (0, 97)
    assert bytes(convert.acquisition_to_v1(v2)._head) == bytes(v1._head)
    v2.trajectory = np.zeros((0, 0), dtype=np.float32)  # what mrd.Acquisition() holds
    back = convert.acquisition_to_v1(v2)
    assert back.traj.shape == (97, 0) and back.trajectory_dimensions == 0


def _v2_acquisition(rng: np.random.Generator) -> mrd.Acquisition:
    ints = iter(int(v) for v in rng.integers(1, 65536, 100))
    return mrd.Acquisition(
        head=mrd.AcquisitionHeader(
            flags=mrd.AcquisitionFlags.FIRST_IN_SLICE | mrd.AcquisitionFlags.IS_REVERSE | mrd.AcquisitionFlags(1 << 60),
            idx=mrd.EncodingCounters(**{n: next(ints) for n in IDX_NAMES}, user=[next(ints) for _ in range(8)]),
            measurement_uid=next(ints), scan_counter=next(ints) << 15, acquisition_time_stamp=next(ints) << 16,
            physiology_time_stamp=[next(ints) << 16 for _ in range(3)], channel_order=[0, 1, 2, 5, 70],
            discard_pre=next(ints), discard_post=next(ints), center_sample=next(ints),
            encoding_space_ref=next(ints), sample_time_us=2.5,
            **{n: rng.standard_normal(3).astype(np.float32) for n in VECTORS},
            user_int=[-next(ints) for _ in range(8)], user_float=[float(np.float32(next(ints) / 3)) for _ in range(8)]),
        data=(rng.standard_normal((5, 64)) + 1j * rng.standard_normal((5, 64))).astype(np.complex64),
        trajectory=rng.standard_normal((2, 64)).astype(np.float32))


def test_acquisition_v2_v1_v2_is_equal():
    v2 = _v2_acquisition(np.random.default_rng(1))
    v1 = convert.acquisition_to_v1(v2)
    assert v1.version == 1 and v1.active_channels == 5 and v1.available_channels == 5
    assert v1.number_of_samples == 64 and v1.trajectory_dimensions == 2
    assert v1.flags == int(v2.head.flags)
    assert list(v1.channel_mask)[:2] == [0b100111, 1 << 6]
    v2.head.channel_order = np.array([0, 1, 2, 5, 70], dtype=np.uint32)  # numpy numbers work too
    assert list(convert.acquisition_to_v1(v2).channel_mask)[:2] == [0b100111, 1 << 6]
    v2.head.channel_order = [0, 1, 2, 5, 70]
    assert mrd.structural_equal(convert.acquisition_to_v2(v1), v2)
    # and it is writable as MRD v2
    stream = io.BytesIO()
    writer = mrd.BinaryMrdWriter(stream)
    writer.write_header(mrd.Header())
    writer.write_data([convert.item_to_v2(v1)])
    writer.close()
    reader = mrd.BinaryMrdReader(io.BytesIO(stream.getvalue()))
    reader.read_header()
    (item,) = list(reader.read_data())
    assert mrd.structural_equal(item.value, v2)


def test_acquisition_none_and_short_lists_become_zeros():
    acq = mrd.Acquisition(head=mrd.AcquisitionHeader(physiology_time_stamp=[7], user_float=[1.5]),
                          data=np.ones((1, 4), dtype=np.complex64))
    v1 = convert.acquisition_to_v1(acq)
    assert v1.scan_counter == 0 and v1.sample_time_us == 0 and v1.idx.slice == 0
    assert list(v1.physiology_time_stamp) == [7, 0, 0] and list(v1.user_float) == [1.5] + [0.0] * 7
    back = convert.acquisition_to_v2(v1).head
    assert back.scan_counter == 0 and back.idx.slice == 0 and back.physiology_time_stamp == [7, 0, 0]


@pytest.mark.parametrize("change, message", [
    (lambda a: setattr(a.head, "physiology_time_stamp", [1, 2, 3, 4]), "physiology_time_stamp has 4"),
    (lambda a: setattr(a.head, "user_int", list(range(9))), "user_int has 9"),
    (lambda a: setattr(a.head, "user_float", [0.5] * 9), "user_float has 9"),
    (lambda a: setattr(a.head.idx, "user", list(range(9))), "idx.user has 9"),
    (lambda a: setattr(a.head, "channel_order", [0, 1024]), "channel_mask"),
    (lambda a: setattr(a.head, "channel_order", [-1]), "channel_mask"),
    (lambda a: setattr(a.head.idx, "slice", 70000), "idx.slice = 70000"),
    (lambda a: setattr(a.head, "center_sample", -1), "center_sample = -1"),
    (lambda a: setattr(a.head, "scan_counter", 1 << 32), "scan_counter"),
    (lambda a: setattr(a.head, "position", np.zeros(4, np.float32)), "position has 4"),
    (lambda a: (setattr(a, "data", np.zeros((2, 70000), np.complex64)),
                setattr(a, "trajectory", np.zeros((0, 0), np.float32))), "number_of_samples = 70000"),
    (lambda a: setattr(a, "data", np.zeros((2, 3, 4), np.complex64)), "expected \\[coils, samples\\]"),
    (lambda a: setattr(a, "trajectory", np.zeros((2, 63), np.float32)), "trajectory has shape"),
])
def test_acquisition_v1_cannot_hold_raises(change, message):
    acq = _v2_acquisition(np.random.default_rng(2))
    change(acq)
    with pytest.raises(ValueError, match=message):
        convert.acquisition_to_v1(acq)


def test_flags_are_the_same_bits():
    for name in dir(ismrmrd):
        if name.startswith("ACQ_") and not name.startswith(("ACQ_COMPRESSION", "ACQ_USER")):
            member = next(m for m in mrd.AcquisitionFlags if m.name.replace("_", "") == name[4:].replace("_", ""))
            assert member.value == 1 << (getattr(ismrmrd, name) - 1), name
        if name.startswith("IMAGE_") and not name.startswith("IMAGE_USER") and isinstance(getattr(ismrmrd, name), int):
            member = next(m for m in mrd.ImageFlags if m.name == name[6:])
            assert member.value == 1 << (getattr(ismrmrd, name) - 1), name
    assert len(mrd.AcquisitionFlags) == 31 and len(mrd.ImageFlags) == 13
    v1 = ismrmrd.Acquisition.from_array(np.zeros((1, 2), np.complex64))
    v1.set_flag(ismrmrd.ACQ_USER8)
    v1.set_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    flags = convert.acquisition_to_v2(v1).head.flags
    assert flags & mrd.AcquisitionFlags.LAST_IN_MEASUREMENT and int(flags) == (1 << 63) | (1 << 24)


def test_generator_acquisitions_and_waveforms_round_trip(datasets):
    for name in ("cart", "spiral"):
        with h5py.File(datasets[name], "r") as h5:
            block = mrdfile.read_acquisitions(h5["dataset"])
            waves = mrdfile.read_waveforms(h5["dataset"]) if "waveforms" in h5["dataset"] else []
        for head, data, traj in zip(block.heads, block.data, block.traj):
            v1 = ismrmrd.Acquisition(head.tobytes(), np.ascontiguousarray(data), np.ascontiguousarray(traj))
            v2 = convert.acquisition_to_v2(v1)
            assert v2.head.channel_order == list(range(v1.active_channels))
            back = convert.acquisition_to_v1(v2)
            assert bytes(back._head) == bytes(v1._head) and back == v1
        for w in waves:
            back = convert.waveform_to_v1(convert.waveform_to_v2(w))
            assert bytes(back._head) == bytes(w._head) and back.data.tobytes() == w.data.tobytes()
    assert len(waves) == 2  # ECG and pilot tone of the spiral set


def test_phantom_acquisitions_convert_with_identical_data(datasets):
    _, items = _phantom(datasets["phantom"])
    acquisitions = [i.value for i in items if isinstance(i, mrd.StreamItem.Acquisition)]
    assert len(acquisitions) == 32 + 32
    for i, acq in enumerate(acquisitions):
        v1 = convert.item_to_v1(mrd.StreamItem.Acquisition(acq))
        assert isinstance(v1, ismrmrd.Acquisition)
        assert v1.data.tobytes() == acq.data.tobytes() and v1.data.shape == (4, 64)
        assert v1.trajectory_dimensions == 0 and v1.traj.shape == (64, 0)
        assert v1.flags == int(acq.head.flags) and v1.scan_counter == acq.head.scan_counter == i
        assert v1.active_channels == 4 and list(v1.channel_mask)[0] == 0b1111
        assert v1.center_sample == acq.head.center_sample and list(v1.read_dir) == [1.0, 0.0, 0.0]
        assert v1.idx.kspace_encode_step_1 == (acq.head.idx.kspace_encode_step_1 or 0)
        assert v1.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) == (i < 32)
        back = convert.acquisition_to_v2(v1)
        assert back.head.channel_order == acq.head.channel_order
        assert back.data.tobytes() == acq.data.tobytes()


def test_acquisition_conversion_is_fast():
    rng = np.random.default_rng(3)
    v1 = _v1_acquisition(rng, list(range(16)), ns=256, td=2)
    v2 = convert.acquisition_to_v2(v1)
    n = 10_000
    start = time.perf_counter()
    for _ in range(n):
        convert.acquisition_to_v2(v1)
    middle = time.perf_counter()
    for _ in range(n):
        convert.acquisition_to_v1(v2)
    end = time.perf_counter()
    assert middle - start < 5.0 and end - middle < 5.0, (middle - start, end - middle)


# --------------------------------------------------------------------------------------------
# Waveforms
# --------------------------------------------------------------------------------------------

def test_waveform_both_ways_field_by_field():
    rng = np.random.default_rng(4)
    h = ismrmrd.WaveformHeader()
    h.version, h.flags, h.measurement_uid, h.scan_counter, h.time_stamp = 1, (1 << 64) - 3, 123456, 7890123, 4000000000
    h.number_of_samples, h.channels, h.sample_time_us, h.waveform_id = 50, 3, 2.5, 1025
    w = ismrmrd.Waveform(h)
    w.data[:] = rng.integers(0, 1 << 32, (3, 50), dtype=np.uint32)
    v2 = convert.waveform_to_v2(w)
    assert (v2.flags, v2.measurement_uid, v2.scan_counter, v2.time_stamp, v2.sample_time_us, v2.waveform_id) == \
        (h.flags, 123456, 7890123, 4000000000, 2.5, 1025)
    assert v2.data.dtype == np.uint32 and v2.data.tobytes() == w.data.tobytes()
    assert v2.channels() == 3 and v2.number_of_samples() == 50
    item = convert.item_to_v2(w)
    assert isinstance(item, mrd.StreamItem.WaveformUint32)
    back = convert.item_to_v1(item)
    assert isinstance(back, ismrmrd.Waveform) and bytes(back._head) == bytes(w._head)
    assert back.data.tobytes() == w.data.tobytes()
    assert mrd.structural_equal(convert.waveform_to_v2(back), v2)


def test_waveform_v1_cannot_hold_raises():
    w = mrd.Waveform(waveform_id=70000, data=np.zeros((1, 4), np.uint32))
    with pytest.raises(ValueError, match="waveform_id = 70000"):
        convert.waveform_to_v1(w)
    with pytest.raises(ValueError, match="channels, samples"):
        convert.waveform_to_v1(mrd.Waveform(data=np.zeros(4, np.uint32)))
    with pytest.raises(ValueError, match="uint32"):
        convert.waveform_to_v1(mrd.Waveform(data=np.zeros((1, 4), np.float32)))


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

PIXELS = [(np.uint16, ismrmrd.DATATYPE_USHORT, mrd.StreamItem.ImageUint16),
          (np.int16, ismrmrd.DATATYPE_SHORT, mrd.StreamItem.ImageInt16),
          (np.uint32, ismrmrd.DATATYPE_UINT, mrd.StreamItem.ImageUint32),
          (np.int32, ismrmrd.DATATYPE_INT, mrd.StreamItem.ImageInt32),
          (np.float32, ismrmrd.DATATYPE_FLOAT, mrd.StreamItem.ImageFloat),
          (np.float64, ismrmrd.DATATYPE_DOUBLE, mrd.StreamItem.ImageDouble),
          (np.complex64, ismrmrd.DATATYPE_CXFLOAT, mrd.StreamItem.ImageComplexFloat),
          (np.complex128, ismrmrd.DATATYPE_CXDOUBLE, mrd.StreamItem.ImageComplexDouble)]
IMG_COUNTERS = ["average", "slice", "contrast", "phase", "repetition", "set", "image_index", "image_series_index"]
IMG_VECTORS = [("field_of_view", "field_of_view"), ("position", "position"), ("read_dir", "col_dir"),
               ("phase_dir", "line_dir"), ("slice_dir", "slice_dir"),
               ("patient_table_position", "patient_table_position")]


def _pixels(rng: np.random.Generator, dtype: type, shape: tuple) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind in "ui":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    return rng.standard_normal(shape).astype(dt)


def _v1_image(rng: np.random.Generator, dtype: type, code: int) -> ismrmrd.Image:
    shape = (2, 3, 5, 7)
    h = ismrmrd.ImageHeader()
    h.version, h.data_type, h.flags, h.measurement_uid = 1, code, (1 << 56) | 0b1010000, 4242
    h.matrix_size[:] = (7, 5, 3)
    h.channels = 2
    for v1_name, _ in IMG_VECTORS:
        getattr(h, v1_name)[:] = [float(v) for v in rng.standard_normal(3).astype(np.float32)]
    for i, name in enumerate(IMG_COUNTERS):
        setattr(h, name, 100 + i)
    h.acquisition_time_stamp = 3_000_000_000
    h.physiology_time_stamp[:] = [11, 22, 33]
    h.image_type = ismrmrd.IMTYPE_COMPLEX if np.dtype(dtype).kind == "c" else ismrmrd.IMTYPE_RGB
    h.user_int[:] = [int(v) for v in rng.integers(-(1 << 31), 1 << 31, 8)]
    h.user_float[:] = [float(v) for v in rng.standard_normal(8).astype(np.float32)]
    pixels = _pixels(rng, dtype, shape)
    image = ismrmrd.Image(h, data=pixels.astype(ismrmrd.image.get_dtype_from_data_type(code)))
    image.meta = {"ImageComments": "a <comment> & more", "WindowCenter": "512", "Empty": [],
                  "ImageRowDir": ["1.0", "0.0", "0.0"]}
    return image


@pytest.mark.parametrize("dtype, code, case", PIXELS)
def test_image_v1_v2_v1_every_pixel_type(dtype, code, case):
    rng = np.random.default_rng(code)
    v1 = _v1_image(rng, dtype, code)
    item = convert.item_to_v2(v1)
    assert type(item) is case
    v2 = item.value
    h, a = v2.head, v1.getHead()
    assert int(h.flags) == a.flags and isinstance(h.flags, mrd.ImageFlags)
    assert h.measurement_uid == 4242
    for v1_name, v2_name in IMG_VECTORS:
        assert getattr(h, v2_name).tolist() == list(getattr(a, v1_name)) and getattr(h, v2_name).dtype == np.float32
    for name in IMG_COUNTERS:
        assert getattr(h, name) == getattr(a, name), name
    assert h.acquisition_time_stamp == 3_000_000_000 and h.physiology_time_stamp == [11, 22, 33]
    assert h.image_type.value == a.image_type
    assert h.user_int == list(a.user_int) and h.user_float == list(a.user_float)
    assert v2.data.dtype == np.dtype(dtype) and v2.data.shape == (2, 3, 5, 7)
    assert v2.data.tobytes() == np.ascontiguousarray(v1.data, dtype=dtype).tobytes()
    assert (v2.channels(), v2.slices(), v2.rows(), v2.cols()) == (2, 3, 5, 7)
    assert {k: [m.value for m in vals] for k, vals in v2.meta.items()} == {
        "ImageComments": ["a <comment> & more"], "WindowCenter": ["512"], "Empty": [],
        "ImageRowDir": ["1.0", "0.0", "0.0"]}
    assert all(isinstance(m, mrd.ImageMetaValue.String) for vals in v2.meta.values() for m in vals)

    back = convert.item_to_v1(item)
    assert isinstance(back, ismrmrd.Image)
    # as read from a v1 stream, the header carries the length of its attributes
    assert back.getHead().attribute_string_len == len(back.attribute_string.encode("utf-8")) > 0
    head = back.getHead()
    head.attribute_string_len = 0
    assert bytes(head) == bytes(a)
    assert back.data.dtype == v1.data.dtype and back.data.tobytes() == v1.data.tobytes()
    assert dict(back.meta) == dict(v1.meta) and back.attribute_string == v1.attribute_string
    assert mrd.structural_equal(convert.image_to_v2(back), v2)


@pytest.mark.parametrize("dtype, code, case", PIXELS)
def test_image_v2_v1_v2_every_pixel_type(dtype, code, case):
    rng = np.random.default_rng(10 + code)
    head = mrd.ImageHeader(
        flags=mrd.ImageFlags.LAST_IN_SLICE | mrd.ImageFlags.IS_NAVIGATION_DATA, measurement_uid=77,
        **{v2: rng.standard_normal(3).astype(np.float32) for _, v2 in IMG_VECTORS},
        **{name: 200 + i for i, name in enumerate(IMG_COUNTERS)}, acquisition_time_stamp=5,
        physiology_time_stamp=[1, 2, 3], image_type=mrd.ImageType.PHASE,
        user_int=list(range(-4, 4)), user_float=[0.5 * i for i in range(8)])
    v2 = case(mrd.Image(head=head, data=_pixels(rng, dtype, (3, 1, 4, 6)),
                        meta={"A": [mrd.ImageMetaValue.String("x")], "B": [mrd.ImageMetaValue.String("1"),
                                                                          mrd.ImageMetaValue.String("2")]}))
    v1 = convert.item_to_v1(v2)
    assert v1.data_type == code and v1.matrix_size == (6, 4, 1) and v1.channels == 3 and v1.version == 1
    assert list(v1.read_dir) == head.col_dir.tolist()
    assert list(v1.phase_dir) == head.line_dir.tolist()
    assert v1.data.tobytes() == np.ascontiguousarray(v2.value.data, dtype=v1.data.dtype).tobytes()
    assert v1.meta == {"A": "x", "B": ["1", "2"]}
    again = convert.item_to_v2(v1)
    assert type(again) is case and mrd.structural_equal(again.value, v2.value)


def test_image_meta_numbers_as_text():
    meta = {"int": [mrd.ImageMetaValue.Int64(-5)], "float": [mrd.ImageMetaValue.Float64(0.1),
                                                           mrd.ImageMetaValue.Float64(1e-300),
                                                           mrd.ImageMetaValue.Float64(2.0)],
            "mixed": [mrd.ImageMetaValue.String("s"), mrd.ImageMetaValue.Int64(1 << 62)]}
    image = mrd.Image(head=mrd.ImageHeader(image_type=mrd.ImageType.MAGNITUDE),
                      data=np.zeros((1, 1, 2, 2), np.float32), meta=meta)
    v1 = convert.image_to_v1(image)
    assert v1.meta == {"int": "-5", "float": ["0.1", "1e-300", "2.0"], "mixed": ["s", str(1 << 62)]}
    parsed = ismrmrd.Meta.deserialize(v1.attribute_string)
    assert [float(t) for t in parsed["float"]] == [0.1, 1e-300, 2.0]
    back = convert.image_to_v2(ismrmrd.Image(bytes(v1.getHead()), v1.attribute_string, data=v1.data))
    assert {k: [m.value for m in vals] for k, vals in back.meta.items()} == {
        "int": ["-5"], "float": ["0.1", "1e-300", "2.0"], "mixed": ["s", str(1 << 62)]}
    image.meta = {"bad": [mrd.ImageMetaValue.String("x"), object()]}
    with pytest.raises(ValueError, match="meta value"):
        convert.image_to_v1(image)


def test_image_values_v1_cannot_hold_raise():
    head = mrd.ImageHeader(image_type=mrd.ImageType.MAGNITUDE)
    with pytest.raises(ValueError, match="no MRD v1 data type"):
        convert.image_to_v1(mrd.Image(head=head, data=np.zeros((1, 1, 2, 2), np.int8)))
    with pytest.raises(ValueError, match="channel, z, y, x"):
        convert.image_to_v1(mrd.Image(head=head, data=np.zeros((2, 2), np.float32)))
    head.user_int = list(range(9))
    with pytest.raises(ValueError, match="user_int has 9"):
        convert.image_to_v1(mrd.Image(head=head, data=np.zeros((1, 1, 2, 2), np.float32)))
    head.user_int = []
    head.slice = 1 << 16
    with pytest.raises(ValueError, match="slice = 65536"):
        convert.image_to_v1(mrd.Image(head=head, data=np.zeros((1, 1, 2, 2), np.float32)))
    v1 = ismrmrd.Image(ismrmrd.ImageHeader(), data=np.full((1, 1, 1, 2), 1 << 40, dtype=np.int64))
    with pytest.raises(ValueError, match="do not fit int32"):
        convert.image_to_v2(v1)


# --------------------------------------------------------------------------------------------
# Stream items
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("item", [
    mrd.StreamItem.AcquisitionBucket(mrd.AcquisitionBucket()),
    mrd.StreamItem.ReconData(mrd.ReconData()),
    mrd.StreamItem.ArrayComplexFloat(np.zeros((2, 2), np.complex64)),
    mrd.StreamItem.ImageArray(mrd.ImageArray()),
], ids=lambda item: type(item).__name__)
def test_items_v1_cannot_carry_are_none(item):
    assert convert.item_to_v1(item) is None


def test_items_of_the_wrong_kind_raise():
    with pytest.raises(TypeError):
        convert.item_to_v1(mrd.Acquisition())
    with pytest.raises(TypeError):
        convert.item_to_v2("text")
    with pytest.raises(TypeError):
        convert.item_to_v2(np.zeros(3))


def test_every_stream_item_case_is_handled():
    cases = [v for k, v in vars(mrd.StreamItem).items() if isinstance(v, type) and issubclass(v, mrd.StreamItem)]
    assert len(cases) == 14
    carried = set(convert._TO_V1)
    assert len(carried) == 10 and carried <= set(cases)
    assert {c.tag for c in set(cases) - carried} == {"AcquisitionBucket", "ReconData", "ArrayComplexFloat",
                                                     "ImageArray"}
    assert ctypes.sizeof(ismrmrd.AcquisitionHeader) == 340
