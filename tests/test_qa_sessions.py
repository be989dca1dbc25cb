"""Header QA over real sockets (main.py --qa ...): the client gets ``QA PASS``/``QA FAIL``/``QA NO-REFERENCE``
as a text before the first image, every image carries ``QAResult``/``QADeviations``, rules and learned
history give the reference, and accepting a session (the dashboard's POST) pins it."""
import json
import re
import socket
import urllib.request

import h5py
import ismrmrd
import ismrmrd.xsd
import pytest

import mrdfile
from conftest import ServerProcess, free_port, generate_phantom, images_of, run_client
from connection import MessageID, MessageReader, MessageWriter


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return generate_phantom(tmp_path_factory.mktemp("qa") / "p.h5", "-m", "32", "-c", "2", "-n", "0")


def variant(phantom, folder, name, **changes):
    """A copy of the phantom whose header has other sequence parameters / protocol name."""
    path = folder / f"{name}.h5"
    path.write_bytes(phantom.read_bytes())
    with h5py.File(path, "a") as f:
        header = ismrmrd.xsd.CreateFromDocument(mrdfile.read_xml(f["dataset"]))
        if "tr" in changes:
            header.sequenceParameters.TR = [changes["tr"]]
        if "flip" in changes:
            header.sequenceParameters.flipAngle_deg = [changes["flip"]]
        if "protocol" in changes:
            header.measurementInformation.protocolName = changes["protocol"]
        mrdfile.write_xml(f["dataset"], ismrmrd.xsd.ToXML(header))
    return path


def session(port, data):
    """A raw session of ``data``: the server's messages in order, as (id, item)."""
    with h5py.File(data, "r") as f:
        xml = mrdfile.read_xml(f["dataset"])
        block = next(mrdfile.iter_acquisition_blocks(f["dataset/data"], rows=f["dataset/data"].shape[0]))
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        writer = MessageWriter.for_socket(sock)
        writer.send_config_file("simplefft")
        writer.send_header(xml)
        for i in range(len(block)):
            writer.send_acquisition_parts(block.heads[i:i + 1].tobytes(), block.traj[i], block.data[i])
        writer.send_close()
        reader = MessageReader(sock.makefile("rb"))
        replies = []
        while (reply := reader.read())[0] not in (None, MessageID.CLOSE):
            replies.append(reply)
    return replies


def qa_texts(replies):
    return [item for msg_id, item in replies if msg_id == MessageID.TEXT and item.startswith("QA ")]


def test_history_the_fourth_session_with_another_tr_fails_naming_tr_before_its_first_image(phantom, tmp_path):
    srv = ServerProcess(tmp_path, "--qa", "--qa-db", str(tmp_path / "qa.sqlite"))
    try:
        for _ in range(3):
            (text,) = qa_texts(session(srv.port, phantom))
            assert text.startswith("QA NO-REFERENCE")
        changed = variant(phantom, tmp_path, "tr", tr=6.0)
        replies = session(srv.port, changed)
        kinds = [msg_id for msg_id, _ in replies]
        first_image = kinds.index(MessageID.IMAGE)
        (text,) = qa_texts(replies[:first_image])  # the verdict comes before any image
        assert text.startswith("QA FAIL") and re.search(r"TR: is 6(\.0+)? ms, expected \S+ ms", text)
        meta = ismrmrd.Meta.deserialize(replies[first_image][1].attribute_string)
        deviations = meta["QADeviations"]  # one value comes back as a str, several as a list
        assert meta["QAResult"] == "FAIL" and "TR: is 6" in str(deviations)
        (same,) = qa_texts(session(srv.port, phantom))
        assert same.startswith("QA PASS")
        new = qa_texts(session(srv.port, variant(phantom, tmp_path, "other", protocol="brand_new")))
        assert new[0].startswith("QA NO-REFERENCE") and "brand_new" in new[0]
    finally:
        assert srv.stop() == 0
    log = srv.log_text()
    assert re.search(r" - WARNING - [0-9a-f]{6} - QA FAIL", log)


def test_rules_fail_a_wrong_flip_angle_on_the_first_session(phantom, tmp_path):
    with h5py.File(phantom, "r") as f:
        protocol = ismrmrd.xsd.CreateFromDocument(mrdfile.read_xml(f["dataset"])).measurementInformation.protocolName
    rules = tmp_path / "rules.toml"
    rules.write_text(f'[[protocol]]\nmatch = "{protocol[:4]}*"\nflip_deg = 30\n')
    srv = ServerProcess(tmp_path, "--qa-rules", str(rules), "--qa-db", str(tmp_path / "qa.sqlite"))
    try:
        wrong = variant(phantom, tmp_path, "flip", flip=15.0)
        out = tmp_path / "o.h5"
        result = run_client(srv.port, "-c", "simplefft", "-o", str(out), "-G", "g", str(wrong))
        assert result.returncode == 0, result.stdout  # a QA verdict is information, not a session error
        assert re.search(r"Server: QA FAIL: .*flip angle: is 15(\.0+)?\S* *, expected 30", result.stdout), result.stdout
        _, _, attrs = images_of(out, "g")
        meta = ismrmrd.Meta.deserialize(attrs[0])
        assert meta["QAResult"] == "FAIL" and "flip angle" in str(meta["QADeviations"])
        right = run_client(srv.port, "-c", "simplefft", "-o", str(out), "-G", "h",
                           str(variant(phantom, tmp_path, "flip30", flip=30.0)))
        assert "Server: QA PASS" in right.stdout
    finally:
        assert srv.stop() == 0


def test_accepting_a_session_makes_the_next_identical_one_pass(phantom, tmp_path):
    http = free_port()
    srv = ServerProcess(tmp_path, "--http-port", str(http), "--http-token", "s3cret", "--qa-db",
                        str(tmp_path / "qa.sqlite"))
    try:
        first = session(srv.port, phantom)
        assert qa_texts(first)[0].startswith("QA NO-REFERENCE")
        sid = re.findall(r" - INFO - ([0-9a-f]{6}) - Accepted connection", srv.log_text())[-1]
        request = urllib.request.Request(f"http://127.0.0.1:{http}/api/qa/{sid}/accept", method="POST", data=b"",
                                         headers={"Authorization": "Bearer s3cret"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200 and json.load(answer)["qa"]["status"] == "PASS"
        (again,) = qa_texts(session(srv.port, phantom))
        assert again.startswith("QA PASS") and "accepted" in again
    finally:
        assert srv.stop() == 0
