"""ai/client.py against tools/inference_stub_server.py: real sockets on 127.0.0.1, the stub as a subprocess.

Each stub gets a free port (``free_port``) as ``-p`` and is waited for with the server harness
(``wait_listening``); stopping it with SIGTERM must give exit status 0.
"""
import gzip
import io
import json
import socket
import subprocess
import sys
import tarfile
import time
import zipfile

import nibabel as nib
import numpy as np
import pytest
import requests

from conftest import REPO, free_port
from tools import _server_harness as harness
from tools.inference_stub_server import threshold_model

from ai.client import (InferenceError, InferenceSettings, pack_inputs, poll_output, run_task, unpack_output)

STUB = REPO / "tools" / "inference_stub_server.py"
TOKEN = "s3cret-token"


def start_stub(*args: str) -> harness.ServerProcess:
    return harness.ServerProcess(*args, main=STUB, timeout=20.0)


@pytest.fixture(scope="module")
def stub():
    srv = start_stub()
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def slow_stub():
    srv = start_stub("--delay", "1")
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def token_stub():
    srv = start_stub("--token", TOKEN)
    yield srv
    assert srv.stop() == 0


def url_of(srv: harness.ServerProcess) -> str:
    return f"http://127.0.0.1:{srv.port}/"


def stub_tasks(srv: harness.ServerProcess) -> dict[str, dict]:
    return {t["uid"]: t for t in requests.get(url_of(srv) + "stub/tasks", timeout=5).json()}


def volume() -> tuple[np.ndarray, np.ndarray]:
    """A 3-D volume with two bright blobs (27 and 8 voxels) on a dim noisy background, and an oblique affine."""
    rng = np.random.default_rng(15)
    data = rng.uniform(0, 30, (12, 10, 8)).astype(np.float32)
    data[2:5, 2:5, 1:4] = 100
    data[8:10, 6:8, 5:7] = 80
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    affine = np.array([[1.2 * c, -0.9 * s, 0.0, -40.5], [1.2 * s, 0.9 * c, 0.3, 12.0],
                       [0.0, -0.1, 3.0, 7.25], [0, 0, 0, 1]])
    return data, affine


def inputs_of(data: np.ndarray, affine: np.ndarray) -> dict[str, bytes]:
    img = nib.Nifti1Image(data, affine)
    img.header["descrip"] = b"mrd-recon-server test"
    return {"tmp_0000.nii.gz": gzip.compress(img.to_bytes()),
            "tmp_0000.meta.json": json.dumps({"series": "test", "shape": list(data.shape)}).encode()}


def read_nifti(data: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


def settings(srv_or_url, model: str = "threshold", **kw) -> InferenceSettings:
    url = srv_or_url if isinstance(srv_or_url, str) else url_of(srv_or_url)
    return InferenceSettings(url=url, model=model, **{"timeout_s": 10.0, "poll_s": 0.05, **kw})


# ------------------------------------------------------------------------------------------ round trips

@pytest.mark.parametrize("api", ["v2", "v1"])
def test_round_trip(stub, api, caplog):
    data, affine = volume()
    with caplog.at_level("INFO", logger="ai.client"):
        files = run_task(settings(stub, api=api), inputs_of(data, affine)).files
    assert sorted(files) == ["tmp.json", "tmp.nii.gz"]
    img = read_nifti(files["tmp.nii.gz"])
    expected, names = threshold_model(data)
    labels = np.asanyarray(img.dataobj)
    assert labels.dtype == np.uint16 and labels.shape == data.shape
    np.testing.assert_array_equal(labels, expected)
    assert sorted(np.unique(labels)) == [0, 1, 2] and (labels == 1).sum() == 27 and (labels == 2).sum() == 8
    np.testing.assert_allclose(img.affine, affine, atol=1e-6)
    assert json.loads(files["tmp.json"]) == names == {"1": "region_1", "2": "region_2"}

    uid = next(r.message.split()[2] for r in caplog.records if "submitted" in r.message)
    assert any(f"task {uid} finished in" in r.message for r in caplog.records)
    task = stub_tasks(stub)[uid]
    assert task["api"] == api and task["model"] == "threshold" and task["token"] is None
    assert task["members"] == ["tmp_0000.nii.gz", "tmp_0000.meta.json"]
    assert task["nifti_descrip"] == "mrd-recon-server test"
    assert task["meta"]["tmp_0000.meta.json"]["shape"] == [12, 10, 8]


@pytest.mark.parametrize("api, magic", [("v2", b"\x1f\x8b"), ("v1", b"PK\x03\x04")])
def test_output_archive_formats(stub, api, magic):
    """v2 serves a gzipped tar (output.tar.gz), v1 a zip; a session of the caller is used as given."""
    with requests.Session() as session:
        files = run_task(settings(stub, api=api), inputs_of(*volume()), session=session).files
        uid = [u for u, t in stub_tasks(stub).items() if t["api"] == api][-1]
        raw = poll_output(settings(stub, api=api), uid, session=session)
    assert raw[:len(magic)] == magic
    assert unpack_output(raw) == files


def test_polling_with_delay_backs_off(slow_stub):
    start = time.monotonic()
    files = run_task(settings(slow_stub, poll_s=0.2), inputs_of(*volume())).files
    assert time.monotonic() - start >= 1.0
    assert "tmp.nii.gz" in files
    (task,) = stub_tasks(slow_stub).values()
    # polls at about 0, 0.2, 0.5, 0.95, 1.6 s: 5 (6 without back-off); a little slack for a slow machine
    assert 3 <= task["polls"] <= 6


def test_backoff_schedule_and_deadline(stub):
    """With a fake clock: the intervals grow ×1.5 up to 10 s, no sleep goes past the deadline, and the
    task ends with the timeout."""
    now = [1000.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    with pytest.raises(InferenceError, match=r"no result after 60 s \(inference_timeout_s\)"):
        run_task(settings(stub, "never", timeout_s=60.0, poll_s=2.0), inputs_of(*volume()),
                 sleep=sleep, clock=lambda: now[0])
    assert sleeps[:5] == pytest.approx([2.0, 3.0, 4.5, 6.75, 10.0])
    assert max(sleeps) == 10.0 and sum(sleeps) == pytest.approx(60.0)


# ------------------------------------------------------------------------------------------ failures

def test_unreachable():
    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(InferenceError, match=rf"inference server {url} unreachable: Connection refused"):
        run_task(settings(url), inputs_of(*volume()))


def test_silent_server_request_capped_by_deadline():
    """A server that accepts connections and never answers: the request waits only until the deadline."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # the kernel completes the handshake; nothing ever answers
        start = time.monotonic()
        with pytest.raises(InferenceError, match=r"no result after 1 s \(inference_timeout_s\)"):
            run_task(settings(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=1.0), inputs_of(*volume()))
        assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("model, api, pattern", [
    ("fail", "v2", r"task \w+ failed on the inference server \(552: failed or deleted\)"),
    ("fail", "v1", r"task \w+ failed on the inference server \(552: failed or deleted\)"),
    ("lost", "v2", r"553: finished but its output is missing"),
    ("garbage", "v2", r"the output is not a tar or zip archive"),
    ("garbage", "v1", r"the output is not a tar or zip archive"),
    ("no_such_model", "v1", r"550: no such model 'no_such_model'"),
    ("no_such_model", "v2", r"HTTP 404 .*: no model with human_readable_id 'no_such_model'"),
])
def test_failures(stub, model, api, pattern):
    with pytest.raises(InferenceError, match=pattern) as info:
        run_task(settings(stub, model, api=api), inputs_of(*volume()))
    assert info.value.status in (None, 404, 550, 552, 553)


def test_never_times_out(stub):
    start = time.monotonic()
    with pytest.raises(InferenceError, match=r"no result after 1.5 s \(inference_timeout_s\)"):
        run_task(settings(stub, "never", timeout_s=1.5, poll_s=0.2), inputs_of(*volume()))
    assert 1.4 <= time.monotonic() - start < 2.5


@pytest.mark.parametrize("api", ["v2", "v1"])
def test_unknown_uid(stub, api):
    with pytest.raises(InferenceError, match=r"task 0123abc .*554: no such task") as info:
        poll_output(settings(stub, api=api), "0123abc")
    assert info.value.status == 554


def test_token(token_stub):
    inputs = inputs_of(*volume())
    for token in (None, "wrong"):
        with pytest.raises(InferenceError, match=r"HTTP 401 .*check the inference token: Authentication error"):
            run_task(settings(token_stub, token=token), inputs)
    files = run_task(settings(token_stub, token=TOKEN), inputs).files
    assert "tmp.nii.gz" in files
    assert [t["token"] for t in stub_tasks(token_stub).values()] == [TOKEN]  # the 401s made no task


def test_stub_failure_models_for_the_module(stub):
    """empty, badshape and float are valid archives: the client returns them, judging them is the module's job."""
    data, affine = volume()
    assert sorted(run_task(settings(stub, "empty"), inputs_of(data, affine)).files) == ["tmp.json"]
    bad = read_nifti(run_task(settings(stub, "badshape"), inputs_of(data, affine)).files["tmp.nii.gz"])
    assert bad.shape == (13, 11, 9) and np.allclose(bad.affine, affine, atol=1e-6)
    flt = np.asanyarray(read_nifti(run_task(settings(stub, "float"), inputs_of(data, affine)).files["tmp.nii.gz"]).dataobj)
    assert flt.dtype == np.float32 and 0.5 in flt


# ------------------------------------------------------------------------------------------ archives

def tar_of(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("name", ["../evil", "out/../../evil", "/etc/evil"])
def test_unsafe_member_rejected(name):
    with pytest.raises(InferenceError, match="unsafe member name"):
        unpack_output(tar_of({"ok.json": b"{}", name: b"x"}))


def test_unpack_base_names_and_formats():
    members = {"output": None, "output/seg.nii.gz": b"nifti", "./output/seg.json": b"{}"}
    for data in (tar_of(members), tar_of(members, "w:gz"), tar_of(members, "w:xz")):
        assert unpack_output(data) == {"seg.nii.gz": b"nifti", "seg.json": b"{}"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("output/", b"")
        zf.writestr("output/seg.nii.gz", b"nifti")
    assert unpack_output(buf.getvalue()) == {"seg.nii.gz": b"nifti"}
    with pytest.raises(InferenceError, match="two files named 'seg.json'"):
        unpack_output(tar_of({"a/seg.json": b"1", "b/seg.json": b"2"}))
    with pytest.raises(InferenceError, match="unpacks to 2000 bytes"):
        unpack_output(tar_of({"big": b"0" * 2000}, "w:gz"), max_bytes=1000)


def test_pack_inputs():
    inputs = {"tmp_0000.nii.gz": b"a", "tmp_0000.meta.json": b"{}"}
    with tarfile.open(fileobj=io.BytesIO(pack_inputs("v2", inputs)), mode="r:") as tf:  # a plain tar
        assert {m.name: tf.extractfile(m).read() for m in tf} == inputs
    with zipfile.ZipFile(io.BytesIO(pack_inputs("v1", inputs))) as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == inputs


def test_settings_validation():
    assert InferenceSettings("http://h:1", "m").api == "v2"
    with pytest.raises(ValueError, match="v2, v1"):
        InferenceSettings("http://h:1", "m", api="v3")
    with pytest.raises(ValueError, match="http"):
        InferenceSettings("h:1", "m")


# ------------------------------------------------------------------------------------------ the stub

def test_threshold_model_order_and_cap():
    data = np.zeros((30, 30))
    data[0, 0] = data[0, 2] = 10  # two single voxels: ties, by first voxel
    data[10:13, 10:13] = 10  # 9 voxels: label 1
    for i in range(8):
        data[20, 3 * i] = data[21, 3 * i] = 10  # eight 2-voxel components
    data[5, 5] = 4.9  # below half of the maximum
    labels, names = threshold_model(data)
    assert labels.dtype == np.uint16 and labels.shape == data.shape
    assert names == {str(i): f"region_{i}" for i in range(1, 9)}
    assert (labels == 1).sum() == 9 and labels[11, 11] == 1
    assert [labels[20, 3 * i] for i in range(7)] == list(range(2, 9))  # the 8th pair is dropped
    assert labels[20, 21] == 0 and labels[0, 0] == 0 and labels[5, 5] == 0
    assert threshold_model(np.zeros((4, 4, 4)))[1] == {}


def test_stub_help_and_port_line():
    out = subprocess.run([sys.executable, str(STUB), "--help"], capture_output=True, text=True, timeout=30).stdout
    assert "FOR" in out and "TESTING ONLY" in out and "not a real inference server" in out
    proc = subprocess.Popen([sys.executable, str(STUB), "-p", "0"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "listening on 127.0.0.1:" in line
        port = int(line.split("listening on 127.0.0.1:")[1].split()[0])
        assert requests.get(f"http://127.0.0.1:{port}/stub/tasks", timeout=5).json() == []
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
