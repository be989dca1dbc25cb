"""The DICOM folder watch (tools/qa_watch.py) as a subprocess: pydicom-written files dropped into the
watched folder (written in place, or under a temporary name and renamed; into a subfolder created
after the start; ``*.dcm``, ``*.IMA`` and ``MR.*``) appear on its dashboard (``/api/sessions``) as one
session per series, with station, protocol, thumbnail and the header QA of the learned history; a
file that is not DICOM costs one warning; accepting a series pins its reference; SIGTERM exits 0."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from conftest import REPO, free_port

TOOL = REPO / "tools" / "qa_watch.py"
TOKEN = "w4tch-token"
PATIENT = {"PatientName": "Doe^Jane", "PatientID": "PID-12345", "PatientBirthDate": "19700101"}
TIMEOUT_S = 15.0
POLL_S = 0.05


class Watch:
    """``tools/qa_watch.py <folder> --http-port <free port> --qa-db <tmp> --qa-min-count 2 --settle 0.5
    --http-token TOKEN``; returns once its dashboard answers (it starts after the observer)."""

    def __init__(self, tmp: Path) -> None:
        self.folder = tmp / "watched"
        self.folder.mkdir()
        self.port = free_port()
        self.log_path = tmp / "qa_watch.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(TOOL), str(self.folder), "--http-port", str(self.port), "--http-host",
                 "127.0.0.1", "--http-token", TOKEN, "--qa-db", str(tmp / "qa.sqlite"), "--qa-min-count", "2",
                 "--settle", "0.5"], cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as answer:
                    assert answer.status == 200
                    return
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"qa_watch did not start:\n{self.log()}")
                time.sleep(POLL_S)

    def request(self, path: str, method: str = "GET") -> bytes:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                         data=b"" if method == "POST" else None,
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.read()

    def sessions(self) -> list[dict]:
        return json.loads(self.request("/api/sessions"))["sessions"]

    def ended(self, protocol: str, files: int, known: tuple[str, ...] = ()) -> dict:
        """The session of a new series of ``protocol`` (not one of the ``known`` ids) once it has ended
        with ``files`` files."""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            found = [s for s in self.sessions() if s["protocol"] == protocol and s["id"] not in known]
            if found and found[0]["state"] == "done" and found[0]["images_in"] == files:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no ended series of {protocol} with {files} files: {found}\n{self.log()}")
            time.sleep(POLL_S)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def watch(tmp_path):
    watch = Watch(tmp_path)
    yield watch
    if watch.proc.poll() is None:
        watch.stop()


def write_series(folder: Path, names: list[str], *, protocol: str, station: str = "AWP1", tr: float = 500.0,
                 rename: bool = False) -> str:
    """One series of MR_small.dcm copies named ``names`` in ``folder`` (made if missing); ``rename``:
    each is written under a hidden temporary name first and renamed into place. Returns its UID."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    for number, name in enumerate(names, 1):
        ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        ds.SeriesDescription, ds.StationName, ds.RepetitionTime = protocol, station, tr
        for key, value in PATIENT.items():
            setattr(ds, key, value)
        if rename:
            temporary = folder / f".{name}.part"
            ds.save_as(temporary)
            os.replace(temporary, folder / name)
        else:
            ds.save_as(folder / name)
    return uid


def test_series_in_new_subfolders_and_any_name_get_station_protocol_and_the_history_qa(watch):
    write_series(watch.folder, ["a1.dcm", "a2.dcm", "a3.dcm"], protocol="t2_tse")
    first = watch.ended("t2_tse", files=3)
    assert first["station"] == "AWP1" and first["module"] == "qa_watch" and first["state"] == "done"
    assert first["qa"]["status"] == "NO-REFERENCE" and "0 of 2" in first["qa"]["text"]
    assert "TR 500 ms" in first["summary"] and first["thumbnail"] == 1
    assert watch.request(f"/api/sessions/{first['id']}/thumbnail.png").startswith(b"\x89PNG\r\n\x1a\n")

    # a subfolder made after the start, files written under temporary names and renamed, *.IMA
    write_series(watch.folder / "exam2", ["IM_0001.IMA", "IM_0002.IMA"], protocol="t2_tse", rename=True)
    second = watch.ended("t2_tse", files=2, known=(first["id"],))
    assert second["station"] == "AWP1" and second["qa"]["status"] == "NO-REFERENCE"

    # two identical series make the reference (min-count 2); the third with another TR fails naming TR
    write_series(watch.folder / "exam3" / "deeper", ["MR.1234", "MR.1235"], protocol="t2_tse", tr=600.0)
    third = watch.ended("t2_tse", files=2, known=(first["id"], second["id"]))
    assert third["qa"]["status"] == "FAIL" and third["qa"]["source"] == "history"
    assert [d["name"] for d in third["qa"]["deviations"]] == ["TR"]
    assert third["qa"]["text"] == "QA FAIL: TR: is 600.0 ms, expected 500.0 ms"

    # another station has a history of its own
    write_series(watch.folder, ["b1.dcm"], protocol="t2_tse", station="AWP2", tr=600.0)
    other = watch.ended("t2_tse", files=1, known=(first["id"], second["id"], third["id"]))
    assert other["station"] == "AWP2" and other["qa"]["status"] == "NO-REFERENCE"

    everything = watch.request("/api/sessions").decode()
    assert not any(value in everything for value in ("Doe", "Jane", "PID-12345", "19700101"))
    assert watch.stop() == 0
    log = watch.log()
    assert "WARNING" in log and "QA FAIL: TR" in log and log.rstrip().endswith("Stopped")


def test_a_file_that_is_not_dicom_costs_one_warning_and_a_file_moved_in_is_read(watch):
    (watch.folder / "broken.dcm").write_text("not a DICOM file")
    (watch.folder / "notes.txt").write_text("not watched")
    write_series(watch.folder / "later", ["MR.1"], protocol="t1_se")
    assert watch.ended("t1_se", files=1)["qa"]["status"] == "NO-REFERENCE"
    # moved in from outside the watched folder: no close event, read once it has been quiet
    write_series(watch.folder.parent / "outside", ["MR.2"], protocol="pd_tse")
    os.replace(watch.folder.parent / "outside" / "MR.2", watch.folder / "MR.2")
    assert watch.ended("pd_tse", files=1)["station"] == "AWP1"
    assert watch.proc.poll() is None
    assert watch.stop() == 0
    warnings = [line for line in watch.log().splitlines() if " - WARNING - " in line]
    assert len(warnings) == 1 and "broken.dcm" in warnings[0] and "skipped" in warnings[0]
    assert "notes.txt" not in watch.log()


def test_accepting_a_series_pins_its_parameters_as_the_reference(watch):
    write_series(watch.folder, ["x1.dcm"], protocol="flair", tr=9000.0)
    first = watch.ended("flair", files=1)
    assert first["qa"]["status"] == "NO-REFERENCE"
    answer = json.loads(watch.request(f"/api/qa/{first['id']}/accept", method="POST"))
    assert answer["qa"]["status"] == "PASS" and answer["qa"]["source"] == "accepted"
    assert json.loads(watch.request(f"/api/sessions/{first['id']}"))["qa"]["status"] == "PASS"
    write_series(watch.folder, ["y1.dcm"], protocol="flair", tr=8000.0, rename=True)
    second = watch.ended("flair", files=1, known=(first["id"],))
    assert second["qa"]["status"] == "FAIL" and second["qa"]["source"] == "accepted"
    assert watch.stop() == 0
