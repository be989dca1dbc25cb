"""modules/inference.py end to end: main.py and client.py as subprocesses, the inference stub
(tools/inference_stub_server.py) on 127.0.0.1, v1 and v2.

The label series must equal the stub model (``threshold_model``) run here on the same pixels, put
on the image grid; the outlined copies must carry one closed ``ROI_*`` outline per label around
that label's pixels; the primary images come back first and unchanged; every failure of the
inference server or of its output gives one WARNING text naming the cause, and the primary images.
"""
import json
import socket

import h5py
import ismrmrd
import nibabel as nib
import numpy as np
import pytest
import requests

import mrdfile
import mrdhelper
from conftest import REPO, ServerProcess, generate_phantom, run_client
from connection import MessageID, MessageReader, MessageWriter
from tools import _server_harness as harness
from tools import nifti2mrd
from tools.inference_stub_server import threshold_model

STUB = REPO / "tools" / "inference_stub_server.py"
TOKEN = "stub-token"
SHAPE = (40, 32, 6)  # columns, rows, slices of the image input


@pytest.fixture(scope="module")
def stub():
    srv = harness.ServerProcess(main=STUB, timeout=20.0)
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def token_stub():
    srv = harness.ServerProcess("--token", TOKEN, main=STUB, timeout=20.0)
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def mrd_server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("inference_server"))
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    """An oblique int16 series with two bright blobs (NIfTI -> tools/nifti2mrd.py -> MRD images)."""
    folder = tmp_path_factory.mktemp("inference_images")
    rng = np.random.default_rng(15)
    data = rng.integers(0, 300, SHAPE).astype(np.int16)
    data[5:15, 4:12, 1:4] = 1000
    data[25:31, 20:27, 3:6] = 900
    data[33, 2, 0] = 950  # one voxel: the third region
    c, s = np.cos(np.radians(25)), np.sin(np.radians(25))
    affine = np.array([[1.1 * c, -1.3 * s, 0.0, -20.0], [1.1 * s, 1.3 * c, 0.4, 8.0],
                       [0.0, -0.2, 4.0, 30.0], [0, 0, 0, 1]])
    nifti = folder / "blobs.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), nifti)
    out = folder / "blobs.h5"
    assert nifti2mrd.main([str(nifti), "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def raw_file(tmp_path_factory):
    return generate_phantom(tmp_path_factory.mktemp("inference_raw") / "p.h5", "-m", "48", "-c", "2", "-n", "0")


def write_json(folder, url, **params):
    (folder / "inference.json").write_text(json.dumps({"version": "1.1.0", "parameters": {
        "inference_url": url, "inference_model": "threshold", "inference_timeout_s": 20, "inference_poll_s": 0.05,
        **params}}))


def url_of(srv) -> str:
    return f"http://127.0.0.1:{srv.port}/"


def replay(mrd_server, data, folder, url, **params):
    """client.py -c inference: (the finished process, {series index: (pixels, heads, attribute strings)})."""
    write_json(folder, url, **params)
    out = folder / "out.h5"
    out.unlink(missing_ok=True)
    proc = run_client(mrd_server.port, "-c", "inference", str(data), "-o", str(out), "-G", "result",
                      cwd=folder)
    series = {}
    if out.exists():
        with h5py.File(out, "r") as f:
            for name in mrdfile.image_series_names(f["result"]):
                s = mrdfile.read_image_series(f["result"], name)
                series[int(s.heads["image_series_index"][0])] = s
    return proc, series


def said(proc) -> str:
    """What the client printed (the server's texts are on its log output)."""
    return proc.stdout + proc.stderr


def volume_of(series) -> np.ndarray:
    """Pixels of a series of 2-D images as [x, y, slice], in slice order (they are sent in it)."""
    return np.moveaxis(series.data[:, 0, 0], 0, -1).transpose(1, 0, 2)


def metas(series):
    return [ismrmrd.Meta.deserialize(a) for a in series.attributes]


def stub_tasks(srv):
    return requests.get(url_of(srv) + "stub/tasks", timeout=5).json()


def check_labels_and_outlines(series, primary_index):
    """The label series equals the stub model on the primary pixels; outlines enclose their labels."""
    assert set(series) == {primary_index, primary_index + 1, primary_index + 2}
    primary, labels, outlined = series[primary_index], series[primary_index + 1], series[primary_index + 2]
    expected, names = threshold_model(volume_of(primary).astype(np.float32))
    assert labels.data.dtype == np.uint16
    assert np.array_equal(volume_of(labels), expected)
    assert np.array_equal(labels.heads["position"], primary.heads["position"])
    assert np.array_equal(labels.heads["read_dir"], primary.heads["read_dir"])
    label_meta = metas(labels)[0]
    assert label_meta["InferenceModel"] == "threshold" and label_meta["InferenceTask"]
    present = [v for v in np.unique(expected) if v > 0]
    assert label_meta["InferenceLabels"] == [f"{v}={names[str(v)]}" for v in present]
    assert np.array_equal(outlined.data, primary.data)  # copies of the primary pixels
    for k, meta in enumerate(metas(outlined)):
        assert meta["InferenceTask"] == label_meta["InferenceTask"]
        on_slice = [v for v in np.unique(expected[:, :, k]) if v > 0]
        keys = sorted(key for key in meta.keys() if key.startswith("ROI_"))
        assert {key.split("_")[1] + "_" + key.split("_")[2] for key in keys} == {names[str(v)] for v in on_slice}
        for v in on_slice:
            x, y, rgb, *_ = mrdhelper.parse_roi(meta[f"ROI_{names[str(v)]}"])
            assert (x[0], y[0]) == (x[-1], y[-1])  # closed
            cols, rows = np.nonzero(expected[:, :, k] == v)
            assert cols.min() - 0.5 <= min(x) and max(x) <= cols.max() + 0.5  # the outline hugs the label
            assert rows.min() - 0.5 <= min(y) and max(y) <= rows.max() + 0.5
    return expected


@pytest.mark.parametrize("api", ["v2", "v1"])
def test_images_get_a_label_series_and_outlines(mrd_server, stub, image_file, tmp_path, api):
    proc, series = replay(mrd_server, image_file, tmp_path, url_of(stub), inference_api=api)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(image_file, "r") as f:
        sent = mrdfile.read_image_series(f["dataset"], mrdfile.image_series_names(f["dataset"])[0])
    index = int(sent.heads["image_series_index"][0])
    assert np.array_equal(series[index].data, sent.data)  # the primary images, unchanged
    expected = check_labels_and_outlines(series, index)
    assert len(np.unique(expected)) == 4  # background and the three regions
    task = stub_tasks(stub)[-1]
    assert task["api"] == api and sorted(task["members"]) == ["tmp_0000.meta.json", "tmp_0000.nii.gz"]


def test_each_repetition_is_its_own_volume_and_task(mrd_server, stub, tmp_path):
    """A 4-D NIfTI (two time points) -> one series of two repetitions -> two tasks, both labelled."""
    rng = np.random.default_rng(4)
    data = rng.integers(0, 100, (24, 20, 3, 2)).astype(np.int16)
    data[3:9, 4:10, 0:2, 0] = 500
    data[12:20, 10:18, 1:3, 1] = 700
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 5.0, 1.0])), tmp_path / "dyn.nii.gz")
    assert nifti2mrd.main([str(tmp_path / "dyn.nii.gz"), "-o", str(tmp_path / "dyn.h5")]) == 0
    before = len(stub_tasks(stub))
    proc, series = replay(mrd_server, tmp_path / "dyn.h5", tmp_path, url_of(stub))
    assert proc.returncode == 0, said(proc)
    assert len(stub_tasks(stub)) == before + 2
    labels = series[1]
    assert len(labels.heads) == 6
    for t in range(2):
        rows = labels.heads["repetition"] == t
        got = np.moveaxis(labels.data[rows, 0, 0], 0, -1).transpose(1, 0, 2)
        assert np.array_equal(got, threshold_model(data[..., t].astype(np.float32))[0])


def test_raw_data_is_reconstructed_then_segmented(mrd_server, stub, raw_file, tmp_path):
    proc, series = replay(mrd_server, raw_file, tmp_path, url_of(stub), inference_api="v1")
    assert proc.returncode == 0, proc.stderr
    expected = check_labels_and_outlines(series, 0)
    assert expected.max() >= 1


def test_primary_images_come_first_and_no_patient_data_leaves(mrd_server, token_stub, raw_file):
    """Over a raw socket: the primary image before the label series; the stub got pixels and geometry
    only (its NIfTI has no description, the side file four geometry keys) and the X-Token."""
    with h5py.File(raw_file, "r") as f:
        xml = mrdfile.read_xml(f["dataset"])
        block = next(mrdfile.iter_acquisition_blocks(f["dataset/data"], rows=f["dataset/data"].shape[0]))
    header = ismrmrd.xsd.CreateFromDocument(xml)
    header.subjectInformation = ismrmrd.xsd.subjectInformationType(patientName="Doe^Jane", patientID="PID-4711")
    config = json.dumps({"parameters": {"inference_url": url_of(token_stub), "inference_model": "threshold",
                                        "inference_poll_s": 0.05, "inference_token": TOKEN}})
    with socket.create_connection(("127.0.0.1", mrd_server.port), timeout=60) as sock:
        writer = MessageWriter.for_socket(sock)
        writer.send_config_file("inference")
        writer.send_header(ismrmrd.xsd.ToXML(header))
        writer.send_text(config)
        for i in range(len(block)):
            writer.send_acquisition_parts(block.heads[i:i + 1].tobytes(), block.traj[i], block.data[i])
        writer.send_close()
        reader = MessageReader(sock.makefile("rb"))
        order = []
        while (reply := reader.read())[0] not in (None, MessageID.CLOSE):
            if reply[0] == MessageID.IMAGE:
                order.append(reply[1].image_series_index)
    assert order == [0, 1, 2]
    (task,) = stub_tasks(token_stub)
    assert task["token"] == TOKEN and task["nifti_descrip"] == ""
    (meta,) = task["meta"].values()
    assert set(meta) == {"scaling_factor", "spacing", "origin", "direction"}


FAILURES = {
    "fail": "552", "lost": "553", "garbage": "not a tar or zip archive", "empty": "no NIfTI label map",
    "badshape": "shape mismatch", "float": "not integer",
}


@pytest.mark.parametrize("model", sorted(FAILURES))
def test_a_failure_costs_one_warning_not_the_images(mrd_server, stub, image_file, tmp_path, model):
    proc, series = replay(mrd_server, image_file, tmp_path, url_of(stub), inference_model=model)
    assert proc.returncode == 0, proc.stderr
    assert list(series) == [0]  # the primary images only
    warnings = [line for line in said(proc).splitlines() if "AI inference" in line]
    assert len(warnings) == 1 and FAILURES[model] in warnings[0], said(proc)


def test_unreachable_server_and_the_deadline(mrd_server, stub, image_file, tmp_path):
    closed = harness.free_port()
    proc, series = replay(mrd_server, image_file, tmp_path, f"http://127.0.0.1:{closed}/")
    assert proc.returncode == 0 and list(series) == [0]
    assert "unreachable" in said(proc)
    proc, series = replay(mrd_server, image_file, tmp_path, url_of(stub), inference_model="never",
                          inference_timeout_s=1.5)
    assert proc.returncode == 0 and list(series) == [0]
    assert "no result after 1.5 s" in said(proc)


def test_missing_settings_are_a_warning_and_the_images_still_come(mrd_server, image_file, tmp_path):
    proc, series = replay(mrd_server, image_file, tmp_path, "")
    assert proc.returncode == 0 and list(series) == [0]
    assert "parameters.inference_url missing" in said(proc)
