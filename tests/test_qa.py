"""Header QA (qa/): parameters from MRD headers and DICOM datasets, rules, history, accept, texts,
and several processes on one database."""
import dataclasses
import json
import multiprocessing
import os
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import h5py
import ismrmrd.xsd as xsd
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset
from xsdata.models.datatype import XmlDate

from mrdhelper import ConfigError
from qa import Deviation, QAChecker, QAResult, ScanParams, params_from_dicom, params_from_mrd, station_of
from qa._csa import ascconv, read_csa
from tools import generate_cartesian_shepp_logan_dataset as shepp_logan

REPO = Path(__file__).resolve().parents[1]
PATIENT = ("Doe^Jane", "PID-4711", "19700101")  # name, ID, birth date (MRD: 1970-01-01)


@pytest.fixture(scope="module")
def phantom_xml(tmp_path_factory) -> str:
    """The XML header the Cartesian phantom generator writes into its file."""
    out = tmp_path_factory.mktemp("phantom") / "phantom.h5"
    subprocess.run([sys.executable, str(REPO / "tools" / "generate_cartesian_shepp_logan_dataset.py"),
                    "-o", str(out), "-m", "32", "-c", "2", "--slices", "3"], check=True, capture_output=True)
    with h5py.File(out, "r") as f:
        return f["dataset/xml"][0].decode()


def full_header(**changes) -> xsd.ismrmrdHeader:
    """A header with every element QA reads, and a patient."""
    values = dict(protocol="t1_mprage", station="AWP45123", tr=2300.0, te=(2.98,), ti=900.0, flip=9.0,
                  accel=(2, 1), coils=20)
    values.update(changes)
    return xsd.ismrmrdHeader(
        subjectInformation=xsd.subjectInformationType(patientName=PATIENT[0], patientID=PATIENT[1],
                                                      patientBirthdate=XmlDate(1970, 1, 1)),
        measurementInformation=xsd.measurementInformationType(
            patientPosition=xsd.patientPositionType.HFS, protocolName=values["protocol"],
            sequenceName="%SiemensSeq%\\tfl"),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemVendor="SIEMENS", systemModel="Prisma_fit", stationName=values["station"],
            receiverChannels=values["coils"]),
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=123_250_000),
        encoding=[xsd.encodingType(
            encodedSpace=space((512, 256, 192), (512.0, 256.0, 192.0)),
            reconSpace=space((256, 256, 176), (256.0, 256.0, 176.0)),
            encodingLimits=xsd.encodingLimitsType(slice=xsd.limitType(minimum=0, maximum=0, center=0)),
            trajectory=xsd.trajectoryType.CARTESIAN,
            parallelImaging=xsd.parallelImagingType(accelerationFactor=xsd.accelerationFactorType(
                kspace_encoding_step_1=values["accel"][0], kspace_encoding_step_2=values["accel"][1])))],
        sequenceParameters=xsd.sequenceParametersType(TR=[values["tr"]], TE=list(values["te"]), TI=[values["ti"]],
                                                      flipAngle_deg=[values["flip"]], sequence_type="TurboFlash"),
        userParameters=xsd.userParametersType(
            userParameterDouble=[xsd.userParameterDoubleType(name="BandwidthPerPixel", value=240.0)]))


def space(matrix: tuple[int, int, int], fov: tuple[float, float, float]) -> xsd.encodingSpaceType:
    return xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(**dict(zip("xyz", matrix))),
                                 fieldOfView_mm=xsd.fieldOfViewMm(**dict(zip("xyz", fov))))


# --- parameters from MRD ---------------------------------------------------------------------------

def test_params_from_the_phantom_generators_header(phantom_xml):
    params = params_from_mrd(phantom_xml)
    assert params == params_from_mrd(shepp_logan.header_xml(32, 2, 2, 3, 1))
    assert params.protocol == "ShepLoganPhantom"
    assert (params.tr_ms, params.te_ms, params.flip_deg, params.ti_ms) == (5.0, (2.5,), 15.0, None)
    assert params.matrix_encoded == (64, 32, 1) and params.matrix_recon == (32, 32, 1)
    assert params.fov_mm == (256.0, 256.0, 5.0) and params.slice_thickness_mm == 5.0
    assert (params.slices, params.coils, params.trajectory) == (3, 2, "cartesian")
    assert params.acceleration is None and params.bandwidth_hz_px is None and params.sequence is None
    assert params.station == "generate_cartesian_shepp_logan_dataset"  # no stationName: the model


def test_params_from_a_full_header_and_no_patient_data():
    header = full_header(te=(2.0, 4.5, 7.0))
    params = params_from_mrd(header)
    assert params == params_from_mrd(xsd.ToXML(header))
    assert params == ScanParams(
        protocol="t1_mprage", sequence="%SiemensSeq%\\tfl", variant="TurboFlash", tr_ms=2300.0, te_ms=(2.0, 4.5, 7.0),
        ti_ms=900.0, flip_deg=9.0, matrix_encoded=(512, 256, 192), matrix_recon=(256, 256, 176),
        fov_mm=(256.0, 256.0, 176.0), slice_thickness_mm=1.0, slices=1, acceleration=(2, 1), bandwidth_hz_px=240.0,
        coils=20, trajectory="cartesian", station="AWP45123")
    text = json.dumps(params.to_dict())
    assert not any(value in text for value in (*PATIENT, "1970"))


def test_header_text_that_does_not_parse():
    assert params_from_mrd("not xml at all") == ScanParams()
    assert params_from_mrd("") == ScanParams()
    broken = "<ismrmrdHeader><measurementInformation><protocolName> a&amp;b </protocolName>" \
             "<acquisitionSystemInformation><systemModel>Skyra</systemModel>"
    assert params_from_mrd(broken) == ScanParams(protocol="a&b", station="Skyra")


def test_station_of():
    assert station_of(full_header()) == "AWP45123"
    header = full_header(station=None)
    assert station_of(header, "10.1.2.3") == "Prisma_fit"
    header.acquisitionSystemInformation.systemModel = None
    assert station_of(header, "10.1.2.3") == "10.1.2.3"
    assert station_of(header) == "unknown" and station_of(xsd.ToXML(header), None) == "unknown"
    assert station_of(ScanParams(station="S1"), "10.1.2.3") == "S1"
    assert station_of("garbage", "10.1.2.3") == "10.1.2.3"


def test_to_dict_from_dict_round_trip_through_json():
    params = params_from_mrd(full_header(te=(2.0, 4.5)))
    data = json.loads(json.dumps(params.to_dict()))
    assert data["te_ms"] == [2.0, 4.5] and data["fov_mm"] == [256.0, 256.0, 176.0]
    assert ScanParams.from_dict(data) == params
    assert ScanParams.from_dict({**data, "added_later": 1}) == params
    assert ScanParams.from_dict({}) == ScanParams()


# --- parameters from DICOM -------------------------------------------------------------------------

def csa2(tags: dict[str, list[str]]) -> bytes:
    """A CSA2 header (``SV10``) holding ``tags``; every tag gets one empty item more, as Siemens
    writes unused items."""
    out = b"SV10\x04\x03\x02\x01" + struct.pack("<2I", len(tags), 77)
    for name, items in tags.items():
        out += struct.pack("<64si4s3i", name.encode(), 1, b"UN\0\0", 0, len(items) + 1, 77)
        for item in [*items, ""]:
            data = item.encode() + b"\0" if item else b""
            out += struct.pack("<4i", len(data), len(data), 77, len(data)) + data + b"\0" * (-len(data) % 4)
    return out


ASCCONV = """<XProtocol> { }
### ASCCONV BEGIN object=MrProtDataImpl@MrProtocolData version=51130001 ###
ulVersion\t = \t0x14b44b6
tProtocolName\t = \t"gre+AF8-me"
lContrasts\t = \t3
alTE[0]\t = \t2000
alTE[1]\t = \t4500
alTE[2]\t = \t7000
sSliceArray.lSize\t = \t30
sSliceArray.asSlice[0].dThickness\t = \t3
sPat.lAccelFactPE\t = \t2
sPat.lAccelFact3D\t = \t1
sKSpace.ucTrajectory\t = \t0x1
sCoilSelectMeas.aRxCoilSelectData[0].asList.__attribute__.size\t = \t20
### ASCCONV END ###
"""


def siemens_dataset(protocol_text: str = ASCCONV, series_csa: bytes | None = None) -> Dataset:
    """A classic Siemens-like MR image header: 2-D multi-echo, phase encoded along the rows."""
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT
    ds.StationName, ds.ManufacturerModelName = "AWP45123", "Prisma_fit"
    ds.SeriesDescription = "gre_me_ND"
    ds.SequenceName, ds.SequenceVariant = "*fl2d3", ["SP", "OSP"]
    ds.MRAcquisitionType, ds.InPlanePhaseEncodingDirection = "2D", "ROW"
    ds.RepetitionTime, ds.EchoTime, ds.FlipAngle = "500", "2", "60"
    ds.AcquisitionMatrix = [256, 0, 0, 192]
    ds.Rows, ds.Columns, ds.PixelSpacing, ds.SliceThickness = 256, 192, [0.9, 1.0], "3"
    ds.PixelBandwidth = "260"
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "OB", csa2({"ImaPATModeText": ["p2"], "BandwidthPerPixelPhaseEncode": ["30.5"]}))
    block.add_new(0x20, "OB", series_csa if series_csa is not None else csa2({"MrPhoenixProtocol": [protocol_text]}))
    return ds


def test_params_from_pydicoms_mr_small():
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm"))
    params = params_from_dicom(ds)
    assert (params.tr_ms, params.te_ms, params.flip_deg, params.slice_thickness_mm) == (4000.0, (240.0,), 90.0, 0.8)
    assert params.variant == "NONE" and params.station == "000000000"
    assert params.matrix_recon == (64, 64, None)  # 3-D without the images per slab
    assert params.fov_mm == (20.0, 20.0, None)
    assert params.protocol is None and params.coils is None and params.acceleration is None
    assert str(ds.PatientName) not in json.dumps(params.to_dict())


def test_params_from_a_siemens_dataset_with_csa():
    ds = siemens_dataset()
    params = params_from_dicom(ds)
    assert params == ScanParams(
        protocol="gre_me", sequence="*fl2d3", variant="SP\\OSP", tr_ms=500.0, te_ms=(2.0, 4.5, 7.0), ti_ms=None,
        flip_deg=60.0, matrix_encoded=(256, 192, 1), matrix_recon=(256, 192, 1), fov_mm=(230.4, 192.0, 3.0),
        slice_thickness_mm=3.0, slices=30, acceleration=(2, 1), bandwidth_hz_px=260.0, coils=20,
        trajectory="cartesian", station="AWP45123")
    assert not any(value in json.dumps(params.to_dict()) for value in PATIENT)
    ds.ProtocolName = "gre_me_standard"  # the standard element wins over the CSA protocol
    assert params_from_dicom(ds).protocol == "gre_me_standard"


def test_params_from_a_siemens_file(tmp_path):
    path = tmp_path / "MR.0001.dcm"
    pydicom.dcmwrite(path, siemens_dataset(), implicit_vr=True, enforce_file_format=False)
    read = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    assert params_from_dicom(read) == params_from_dicom(siemens_dataset())


def test_csa_reader_and_ascconv():
    tags = read_csa(csa2({"ImaPATModeText": ["p2"], "Multi": ["1.5", "2"]}))
    assert tags == {"ImaPATModeText": ["p2"], "Multi": ["1.5", "2"]}
    values = ascconv(ASCCONV)
    assert values["tProtocolName"] == "gre_me" and values["ulVersion"] == 0x14b44b6 and values["alTE[1]"] == 4500
    assert ascconv("no block here") == {}
    with pytest.raises(ValueError, match="too short"):
        read_csa(b"SV10")
    with pytest.raises(ValueError):
        read_csa(csa2({"A": ["x" * 40]})[:-20])


def test_a_broken_csa_header_is_ignored_with_a_warning(caplog):
    params = params_from_dicom(siemens_dataset(series_csa=b"SV10\x04\x03\x02\x01" + b"\xff" * 12))
    assert "CSA series header ignored" in caplog.text
    assert params.te_ms == (2.0,) and params.slices is None and params.protocol == "gre_me_ND"


# --- rules -----------------------------------------------------------------------------------------

RULES = """
[[protocol]]
match = "t1_mprage*"
station = "AWP*"
tr_ms = { value = 2300, tolerance = 5 }
flip_deg = 9
te_ms = { allowed = [[2.98], [3.0]] }
matrix_recon = [256, 256, 176]
acceleration = { allowed = [[2, 1], [3, 1]] }
slices = { range = [1, 2] }
trajectory = "Cartesian"

[[protocol]]
match = "t1_mprage*"
tr_ms = 1000
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_rules_pass(tmp_path):
    checker = QAChecker(write(tmp_path / "rules.toml", RULES), None)
    result = checker.check(params_from_mrd(full_header(tr=2304.0, te=(3.0,))))
    assert (result.status, result.source, result.reference_count) == ("PASS", "rules", 7)
    assert result.text() == "QA PASS: t1_mprage matches its reference (rules, n=7)"
    assert result.meta() == {"QAResult": "PASS", "QADeviations": []}


def test_rules_fail_names_every_deviation_in_each_form(tmp_path):
    checker = QAChecker(write(tmp_path / "rules.toml", RULES), None)
    params = params_from_mrd(full_header(protocol="T1_MPRAGE_sag", tr=2306.0, te=(2.5,), flip=8.0, accel=(4, 1)))
    params = dataclasses.replace(params, slices=3, matrix_recon=(256, 240, 176))
    result = checker.check(params)
    assert result.status == "FAIL"
    assert [d.text() for d in result.deviations] == [
        "TR: is 2306.0 ms, expected 2300.0 ± 5.0 ms",
        "TE: is 2.5 ms, expected one of 2.98, 3.0 ms",
        "flip angle: is 8°, expected 9°",
        "recon matrix: is 256x240x176, expected 256x256x176",
        "slices: is 3, expected in 1–2",
        "acceleration: is 4x1, expected one of 2x1, 3x1",
    ]
    assert result.text().startswith("QA FAIL: TR: is 2306.0 ms, expected 2300.0 ± 5.0 ms; TE: is 2.5 ms, ")
    assert result.meta()["QADeviations"][2] == "flip angle: is 8°, expected 9°"


def test_rules_glob_station_and_order(tmp_path):
    checker = QAChecker(write(tmp_path / "rules.toml", RULES), None)
    other_station = checker.check(params_from_mrd(full_header(station="MRC99")))  # the second entry
    assert other_station.status == "FAIL" and other_station.reference_count == 1
    assert other_station.text() == "QA FAIL: TR: is 2300.0 ms, expected 1000.0 ms"
    unmatched = checker.check(params_from_mrd(full_header(protocol="t2_tse")))
    assert unmatched.status == "NO-REFERENCE"
    assert unmatched.text() == ("QA NO-REFERENCE: t2_tse on AWP45123: no rules for it, and no QA database for "
                                "accepted references or history")


def test_rules_missing_values_and_text_folding(tmp_path):
    rules = write(tmp_path / "rules.toml",
                  '[[protocol]]\nmatch = "p"\nti_ms = 900\nsequence = " %siemensseq%\\\\TFL "\n')
    checker = QAChecker(rules, None)
    assert checker.check(params_from_mrd(full_header(protocol="p"))).status == "PASS"
    result = checker.check(dataclasses.replace(params_from_mrd(full_header(protocol="p")), ti_ms=None))
    assert result.text() == "QA FAIL: TI: is not in the header, expected 900.0 ms"


@pytest.mark.parametrize("text, message", [
    ('[[protocol]]\nmatch = "t1*"\ntr = 5',
     "protocol entry 1 ('t1*'): unknown parameter key 'tr' (did you mean 'tr_ms'?)"),
    ('[[protocol]]\nmatch = "t1*"\nflip_deg = "15"',
     "protocol entry 1 ('t1*'): flip_deg must be a number, got str '15'"),
    ('[[protocol]]\nmatch = "a"\n[[protocol]]\nmatch = "b"\nslices = 2.5',
     "protocol entry 2 ('b'): slices must be an integer, got float 2.5"),
    ('[[protocol]]\nmatch = "a"\nfov_mm = [256, 256]', "fov_mm must be a list of 3 numbers, got list [256, 256]"),
    ('[[protocol]]\nmatch = "a"\ntr_ms = { value = 5, tolerence = 1 }',
     "tr_ms: unknown key 'tolerence' (did you mean 'tolerance'?)"),
    ('[[protocol]]\nmatch = "a"\ntr_ms = { tolerance = 1 }',
     "tr_ms: give exactly one of value, range and allowed, got none"),
    ('[[protocol]]\nmatch = "a"\ntr_ms = { value = 5, range = [1, 2] }',
     "give exactly one of value, range and allowed, got value and range"),
    ('[[protocol]]\nmatch = "a"\ntr_ms = { value = 5, tolerance = -1 }', "tolerance must be a number >= 0 (in ms)"),
    ('[[protocol]]\nmatch = "a"\ntr_ms = { range = [5, 1] }',
     "range must be [low, high], two numbers with low <= high"),
    ('[[protocol]]\nmatch = "a"\ntrajectory = { value = "x", tolerance = 1 }', "tolerance needs a number"),
    ('[[protocol]]\nmatch = "a"\nte_ms = { allowed = [[2.98], "x"] }', "te_ms: allowed[1] must be a number or a list"),
    ('[[protocol]]\nmatch = "a"\nte_ms = { allowed = [] }', "allowed must be a non-empty list"),
    ('[[protocol]]\ntr_ms = 5', "protocol entry 1: match must be a protocol name or glob"),
    ('[[protocols]]\nmatch = "a"', "unknown key 'protocols' (did you mean 'protocol'?)"),
    ('protocol = 3', "protocol must be an array of tables [[protocol]], got int 3"),
    ('[[protocol]\nmatch = "a"', "rules.toml: "),
])
def test_rules_errors_name_file_entry_and_key(tmp_path, text, message):
    path = write(tmp_path / "rules.toml", text)
    with pytest.raises(ConfigError) as info:
        QAChecker(path, None)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_missing_rules_file_and_bad_min_count(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        QAChecker(tmp_path / "none.toml", None)
    with pytest.raises(ConfigError, match="at least 1"):
        QAChecker(None, None, min_count=0)


def test_rules_are_read_again_when_the_file_changes(tmp_path, caplog):
    path = write(tmp_path / "rules.toml", '[[protocol]]\nmatch = "t1*"\ntr_ms = 2300\n')
    checker = QAChecker(path, None)
    params = params_from_mrd(full_header())
    assert checker.check(params).status == "PASS"
    write(path, '[[protocol]]\nmatch = "t1*"\ntr_ms = 2000\n')
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert checker.check(params).status == "FAIL"
    write(path, '[[protocol]]\nmatch = "t1*"\ntr = 2300\n')
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert checker.check(params).status == "FAIL"  # the invalid file leaves the rules as they were
    assert "QA rules not changed" in caplog.text and "did you mean 'tr_ms'" in caplog.text


# --- history, accept -------------------------------------------------------------------------------

@pytest.fixture
def checker(tmp_path) -> QAChecker:
    return QAChecker(None, tmp_path / "saved" / "qa.sqlite")


def run_session(checker: QAChecker, session_id: str, params: ScanParams) -> QAResult:
    """What the server does at header time: check, then record."""
    result = checker.check(params)
    checker.record(session_id, params, result)
    return result


def test_history_learns_after_min_count_and_fails_a_changed_tr(checker):
    params = params_from_mrd(full_header())
    results = [run_session(checker, f"s{i}", params) for i in range(3)]
    assert [r.status for r in results] == ["NO-REFERENCE"] * 3
    assert results[0].text() == "QA NO-REFERENCE: t1_mprage on AWP45123: no rules, 0 of 3 sessions in history"
    assert results[2].text() == "QA NO-REFERENCE: t1_mprage on AWP45123: no rules, 2 of 3 sessions in history"
    passed = checker.check(params)
    assert passed.text() == "QA PASS: t1_mprage matches its reference (history, n=3)"
    changed = run_session(checker, "s3", params_from_mrd(full_header(tr=2500.0)))
    assert (changed.status, changed.source, changed.reference_count) == ("FAIL", "history", 3)
    assert changed.deviations == [Deviation("TR", "2500.0 ms", "2300.0 ms")]
    assert changed.text() == "QA FAIL: TR: is 2500.0 ms, expected 2300.0 ms"
    assert changed.meta() == {"QAResult": "FAIL", "QADeviations": ["TR: is 2500.0 ms, expected 2300.0 ms"]}


def test_history_tolerances_and_echo_sets(checker):
    params = params_from_mrd(full_header(te=(2.0, 4.5, 7.0)))
    for i in range(3):
        run_session(checker, f"s{i}", params)
    close = dataclasses.replace(params, tr_ms=2320.0, te_ms=(7.0, 4.52, 2.0), fov_mm=(257.0, 256.0, 176.0),
                                flip_deg=9.05)
    assert checker.check(close).status == "PASS"
    far = dataclasses.replace(params, tr_ms=2330.0, te_ms=(2.0, 4.5), fov_mm=(258.0, 256.0, 176.0), coils=32)
    assert [d.text() for d in checker.check(far).deviations] == [
        "TR: is 2330.0 ms, expected 2300.0 ms", "TE: is 2.0/4.5 ms, expected 2.0/4.5/7.0 ms",
        "FOV: is 258x256x176 mm, expected 256x256x176 mm", "coils: is 32, expected 20"]
    missing = checker.check(dataclasses.replace(params, bandwidth_hz_px=None, ti_ms=None))
    assert [d.text() for d in missing.deviations] == ["TI: is not in the header, expected 900.0 ms",
                                                      "bandwidth: is not in the header, expected 240 Hz/px"]


def test_history_most_frequent_set_and_ties(checker):
    a, b = params_from_mrd(full_header()), params_from_mrd(full_header(flip=12.0))
    for i, params in enumerate([a, b, a, b, a, b]):
        run_session(checker, f"s{i}", params)
    tie = checker.check(a)
    assert tie.status == "NO-REFERENCE" and tie.reference_count == 3
    assert tie.reason == ("no rules, a tie in history: parameter sets with 3 sessions each (6 recorded); "
                          "accept one as the reference")
    run_session(checker, "s6", b)  # b now leads 4 to 3
    result = checker.check(a)
    assert result.status == "FAIL" and result.reference_count == 4
    assert result.text() == "QA FAIL: flip angle: is 9°, expected 12°"


def test_below_min_count_with_several_sets(checker):
    a, b = params_from_mrd(full_header()), params_from_mrd(full_header(flip=12.0))
    for i, params in enumerate([a, b, a]):
        run_session(checker, f"s{i}", params)
    assert checker.check(a).reason == ("no rules, 2 of 3 sessions in history (the most frequent parameter set; "
                                       "3 sessions recorded)")


def test_history_is_per_station_and_protocol(checker):
    params = params_from_mrd(full_header())
    for i in range(3):
        run_session(checker, f"s{i}", params)
    assert checker.check(params).status == "PASS"
    other_protocol = checker.check(dataclasses.replace(params, protocol="t2_tse"))
    assert other_protocol.text() == "QA NO-REFERENCE: t2_tse on AWP45123: no rules, 0 of 3 sessions in history"
    assert checker.check(dataclasses.replace(params, station="MRC99")).status == "NO-REFERENCE"
    assert checker.check(dataclasses.replace(params, station=None)).station == "unknown"


def test_accept_pins_a_reference(checker):
    params = params_from_mrd(full_header())
    first = run_session(checker, "abc123", params)
    assert first.status == "NO-REFERENCE"
    accepted = checker.accept("abc123")
    assert accepted.text() == "QA PASS: t1_mprage matches its reference (accepted, n=1)"
    assert run_session(checker, "abc124", params).status == "PASS"
    changed = run_session(checker, "abc125", params_from_mrd(full_header(flip=12.0)))
    assert changed.text() == "QA FAIL: flip angle: is 12°, expected 9°" and changed.source == "accepted"
    # the accepted set wins over history, and a new accept replaces it
    for i in range(4):
        run_session(checker, f"h{i}", params_from_mrd(full_header(flip=12.0)))
    assert checker.check(params).source == "accepted"
    assert checker.accept("abc125").status == "PASS"
    assert checker.check(params).text() == "QA FAIL: flip angle: is 9°, expected 12°"
    assert checker.accept("unknown") is None


def test_rules_win_over_accepted(tmp_path):
    checker = QAChecker(write(tmp_path / "rules.toml", '[[protocol]]\nmatch = "t1*"\nflip_deg = 12\n'),
                        tmp_path / "qa.sqlite")
    params = params_from_mrd(full_header())
    run_session(checker, "s1", params)
    result = checker.accept("s1")
    assert result.source == "rules" and result.status == "FAIL"


def test_no_protocol_and_no_database(tmp_path):
    checker = QAChecker(None, tmp_path / "qa.sqlite")
    nameless = ScanParams(tr_ms=5.0, station="S1")
    result = run_session(checker, "n1", nameless)
    assert result.text() == "QA NO-REFERENCE: (no protocol name) on S1: the header names no protocol"
    assert checker.accept("n1").status == "NO-REFERENCE"
    plain = QAChecker(None, None)
    plain.record("x", nameless, result)
    assert plain.accept("x") is None


def test_result_to_dict_is_json(checker):
    result = checker.check(params_from_mrd(full_header()))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["status"] == "NO-REFERENCE" and data["text"] == result.text() and data["deviations"] == []


def test_database_errors(tmp_path, caplog):
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(ConfigError, match="QA database .*dir.sqlite: cannot be opened"):
        QAChecker(None, tmp_path / "dir.sqlite")
    path = tmp_path / "qa.sqlite"
    checker = QAChecker(None, path)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE sessions")
    params = params_from_mrd(full_header())
    result = checker.check(params)
    assert result.status == "NO-REFERENCE" and "the QA database failed: no such table" in result.reason
    checker.record("s1", params, result)
    assert "session s1 not recorded" in caplog.text


def test_database_layout(checker):
    params = params_from_mrd(full_header())
    run_session(checker, "s1", params)
    with sqlite3.connect(checker.store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row = conn.execute("SELECT id, station, protocol, params, result, deviations FROM sessions").fetchone()
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(sessions)")}
    assert row[:3] == ("s1", "AWP45123", "t1_mprage") and row[4:] == ("NO-REFERENCE", "[]")
    assert ScanParams.from_dict(json.loads(row[3])) == params
    assert "sessions_station_protocol" in indexes


def _record_from_child(checker: QAChecker, prefix: str, count: int) -> None:
    """In a forked process: check and record ``count`` sessions; any database error fails the process."""
    params = params_from_mrd(full_header())
    for i in range(count):
        checker.check(params)
        checker.store.add(f"{prefix}{i}", station_of(params), params, "PASS", [])


def test_two_forked_processes_write_one_database(checker):
    run_session(checker, "parent", params_from_mrd(full_header()))  # the parent used it before forking
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_record_from_child, args=(checker, p, 60)) for p in ("a", "b")]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0]
    result = checker.check(params_from_mrd(full_header()))
    assert (result.status, result.reference_count) == ("PASS", 121)
