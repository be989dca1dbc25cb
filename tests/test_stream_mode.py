"""Stream mode end to end: tools/mrdhdf5_to_stream.py | main.py --stream | tools/stream_to_mrdhdf5.py.

Real subprocesses joined by real pipes (and a socat TCP relay); results are compared
value by value with the TCP path (client.py against the ``server`` fixture).
"""
import io
from pathlib import Path
import shutil
import struct
import subprocess
import sys
import time

import h5py
import ismrmrd
import ismrmrd.hdf5
import ismrmrd.xsd
import numpy as np
import pytest
from ismrmrd.serialization import ConfigFile, ProtocolDeserializer, ProtocolSerializer

import mrdfile
from conftest import LEGACY_MODULES, REPO, free_port, generate_phantom, images_of, run_client
from connection import MessageReader, MessageWriter

PY = sys.executable
TO_STREAM = [PY, str(REPO / "tools" / "mrdhdf5_to_stream.py")]
FROM_STREAM = [PY, str(REPO / "tools" / "stream_to_mrdhdf5.py")]
STREAM_SERVER = [PY, str(REPO / "main.py"), "--stream", "--modules", str(LEGACY_MODULES)]
TIMEOUT = 120


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Noise-free 64x64 phantom, 4 coils, 2 slices, 2 repetitions (4 images)."""
    return generate_phantom(tmp_path_factory.mktemp("data") / "phantom.h5",
                            "-m", "64", "-c", "4", "-n", "0", "-r", "2", "--slices", "2")


@pytest.fixture(scope="module")
def tcp_reference(server, phantom, tmp_path_factory):
    """simplefft images of the phantom over TCP (client.py), group ``g``."""
    out = tmp_path_factory.mktemp("tcp") / "tcp.h5"
    result = run_client(server.port, "-c", "simplefft", "-o", str(out), "-G", "g", str(phantom))
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def pipeline(tmp, *commands, stdin=None, timeout=TIMEOUT):
    """Run ``commands`` joined by pipes (cwd = repository); ``stdin`` is a file for the first one.

    Returns the exit statuses, the stderr texts and the last command's stdout bytes.
    """
    procs, err_paths = [], []
    out_path = tmp / "pipeline.stdout"
    source = open(stdin, "rb") if stdin else subprocess.DEVNULL
    with open(out_path, "wb") as final:
        for i, cmd in enumerate(commands):
            err_paths.append(tmp / f"pipeline.{i}.stderr")
            last = i == len(commands) - 1
            with open(err_paths[-1], "wb") as err:
                proc = subprocess.Popen(cmd, cwd=REPO, stdin=source, stdout=final if last else subprocess.PIPE,
                                        stderr=err)
            if source is not subprocess.DEVNULL:
                source.close()  # the child holds its own copy; the writer must see a closed pipe at the end
            source = proc.stdout
            procs.append(proc)
    try:
        codes = [p.wait(timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return codes, [p.read_text(errors="replace") for p in err_paths], out_path.read_bytes()


def parse_stream(raw):
    """Parse a whole stream with ismrmrd-python's ProtocolDeserializer; returns (items up to CLOSE, bytes after)."""
    buf = io.BytesIO(raw)
    items = list(ProtocolDeserializer(buf).deserialize())  # EOFError if no CLOSE
    return items, buf.read()


def message_ids(raw):
    """Every message ID of a stream, read with our reader until the end of the bytes."""
    reader = MessageReader(io.BytesIO(raw))
    ids = []
    while True:
        msg_id, _ = reader.read()
        if msg_id is None:
            return ids
        ids.append(msg_id)


def assert_same_images(out, group, reference):
    data, heads, attrs = images_of(out, group)
    ref_data, ref_heads, ref_attrs = images_of(reference, "g")
    assert data.shape == (4, 1, 1, 64, 64) and data.dtype == ref_data.dtype
    assert np.array_equal(data, ref_data)
    assert heads.tobytes() == ref_heads.tobytes()
    assert attrs == ref_attrs
    with h5py.File(out, "r") as f, h5py.File(reference, "r") as g:
        assert mrdfile.read_xml(f[group]) == mrdfile.read_xml(g["g"])


def assert_images_match(images, reference):
    """``ismrmrd.Image`` objects from a deserializer against the TCP reference file."""
    ref_data, ref_heads, ref_attrs = images_of(reference, "g")
    assert len(images) == len(ref_data) == 4
    for image, data, head, attrs in zip(images, ref_data, ref_heads, ref_attrs):
        assert np.array_equal(image.data, data)
        assert bytes(image.getHead()) == head.tobytes()
        assert image.attribute_string == attrs.decode()


def test_pipe_gives_the_images_of_the_tcp_path(phantom, tcp_reference, tmp_path):
    out = tmp_path / "out.h5"
    codes, errs, _ = pipeline(tmp_path, TO_STREAM + [str(phantom)], STREAM_SERVER + ["-c", "simplefft"],
                              FROM_STREAM + [str(out)])
    assert codes == [0, 0, 0], errs
    assert_same_images(out, "dataset", tcp_reference)
    assert "Running module 'simplefft'" in errs[1]
    assert "Stored 4 images, 0 acquisitions, 0 waveforms" in errs[2]


def test_stdout_of_stream_mode_is_only_the_stream(phantom, tcp_reference, tmp_path):
    codes, errs, raw = pipeline(tmp_path, TO_STREAM + [str(phantom)], STREAM_SERVER + ["-c", "simplefft", "-v"])
    assert codes == [0, 0], errs
    items, rest = parse_stream(raw)
    assert isinstance(items[0], ismrmrd.xsd.ismrmrdHeader)
    assert all(isinstance(item, ismrmrd.Image) for item in items[1:])
    assert_images_match(items[1:], tcp_reference)
    assert rest == b""
    assert message_ids(raw) == [3] + [1022] * 4 + [4]
    assert "Session from stdin started" in errs[1]  # the logging went to stderr


def test_module_printing_to_stdout_does_not_corrupt_the_stream(phantom, tcp_reference, tmp_path):
    codes, errs, raw = pipeline(tmp_path, TO_STREAM + [str(phantom)], STREAM_SERVER + ["-c", "prints"])
    assert codes == [0, 0], errs
    items, rest = parse_stream(raw)
    assert rest == b"" and isinstance(items[0], ismrmrd.xsd.ismrmrdHeader)
    assert_images_match(items[1:], tcp_reference)
    assert b"noise" not in raw
    for text in ("noise at import", "noise\n", "noise on file descriptor 1"):
        assert text in errs[1]


def test_protocol_serializer_stream_selects_module_by_its_config_message(phantom, tcp_reference, tmp_path):
    stream_in = tmp_path / "in.bin"
    dset = ismrmrd.Dataset(str(phantom), "dataset", mode="r")
    try:
        header = ismrmrd.xsd.CreateFromDocument(dset.read_xml_header())
        acquisitions = [dset.read_acquisition(i) for i in range(dset.number_of_acquisitions())]
    finally:
        dset.close()
    with open(stream_in, "wb") as f:
        serializer = ProtocolSerializer(f)
        serializer.serialize(ConfigFile("simplefft"))
        serializer.serialize(header)
        for acq in acquisitions:
            serializer.serialize(acq)
        serializer.close()
    codes, errs, raw = pipeline(tmp_path, STREAM_SERVER, stdin=stream_in)  # no -c
    assert codes == [0], errs
    assert "Running module 'simplefft'" in errs[0]
    items, rest = parse_stream(raw)
    assert rest == b""
    assert items[0].toXML() == header.toXML()  # the header is echoed first
    assert_images_match(items[1:], tcp_reference)


def test_module_that_raises_exits_1_with_a_valid_stream(phantom, tmp_path):
    stream_in = tmp_path / "in.bin"
    assert subprocess.run(TO_STREAM + [str(phantom), "-o", str(stream_in)], cwd=REPO, capture_output=True,
                          timeout=TIMEOUT).returncode == 0
    codes, errs, raw = pipeline(tmp_path, STREAM_SERVER + ["-c", "raises"], stdin=stream_in)
    assert codes == [1]
    items, rest = parse_stream(raw)
    assert len(items) == 1 and isinstance(items[0], ismrmrd.xsd.ismrmrdHeader) and rest == b""
    assert message_ids(raw) == [3, 4]  # exactly one CLOSE, nothing after it
    assert "[module 'raises'] ValueError: deliberate failure after 3 acquisitions" in errs[0]


def wait_listening(port, proc, timeout=20.0):
    """Wait until 127.0.0.1:port is in LISTEN state (read from /proc, so no connection is made)."""
    needle = f"0100007F:{port:04X} 00000000:0000 0A"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"socat exited with {proc.returncode}"
        with open("/proc/net/tcp") as f:
            if needle in f.read():
                return
        time.sleep(0.05)
    raise TimeoutError(f"socat did not listen on {port}")


def test_socat_relay_gives_the_images_of_the_tcp_path(phantom, tcp_reference, tmp_path):
    socat = shutil.which("socat")
    assert socat, "socat is not installed; `make test` installs it (apt-get install -y socat)"
    port = free_port()
    relay_log = tmp_path / "relay.stderr"
    with open(relay_log, "wb") as err:
        relay = subprocess.Popen([socat, f"TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                                  f"EXEC:{PY} main.py --stream -c simplefft"], cwd=REPO, stderr=err)
    out = tmp_path / "out.h5"
    try:
        wait_listening(port, relay)
        codes, errs, _ = pipeline(tmp_path, TO_STREAM + [str(phantom)], [socat, "-t30", "-", f"TCP4:127.0.0.1:{port}"],
                                  FROM_STREAM + [str(out)])
    finally:
        relay.terminate()
        relay.wait(30)
    assert codes == [0, 0, 0], errs + [relay_log.read_text(errors="replace")]
    assert_same_images(out, "dataset", tcp_reference)
    assert "Running module 'simplefft'" in relay_log.read_text(errors="replace")


# The two tools on their own -------------------------------------------------------------------------

def test_waveforms_are_merged_by_time_stamp_and_round_trip(phantom, tmp_path):
    source = tmp_path / "with_waves.h5"
    shutil.copy(phantom, source)
    with h5py.File(source, "r") as f:
        stamps = f["dataset/data"]["head"]["acquisition_time_stamp"]
        xml = mrdfile.read_xml(f["dataset"])
    wave_stamps = [int(stamps[0]) - 5, int(stamps[10]), int(stamps[10]), int(stamps[40]) + 1, int(stamps[-1]) + 9]
    waves = [ismrmrd.Waveform.from_array(np.arange(6, dtype=np.uint32).reshape(2, 3) + i, waveform_id=1025,
                                         time_stamp=t) for i, t in enumerate(wave_stamps)]
    with h5py.File(source, "a") as f:
        mrdfile.append_waveforms(f["dataset"], waves)
    stream = tmp_path / "s.bin"
    result = subprocess.run(TO_STREAM + [str(source), "--waveforms", "-o", str(stream)], cwd=REPO,
                            capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 0 and result.stdout == b"", result.stderr
    raw = stream.read_bytes()
    reader = MessageReader(io.BytesIO(raw))
    assert reader.read() == (3, xml)
    got = [reader.read() for _ in range(len(stamps) + len(waves) + 1)]
    assert reader.read() == (None, None) and got[-1][0] == 4
    order = [(i, item.time_stamp if i == 1026 else item.acquisition_time_stamp) for i, item in got[:-1]]
    # expected: sorted by stamp, a waveform before an acquisition of the same stamp
    expected = sorted([(1008, int(s)) for s in stamps] + [(1026, t) for t in wave_stamps],
                      key=lambda m: (m[1], m[0] == 1008))
    assert order == expected
    assert order[0] == (1026, wave_stamps[0]) and order[-1] == (1026, wave_stamps[-1])
    assert raw.count(xml.encode()) == 1 and struct.unpack("<I", raw[2:6])[0] == len(xml.encode())  # no NUL

    out = tmp_path / "back.h5"
    result = subprocess.run(FROM_STREAM + [str(out), "-g", "copy", "-i", str(stream)], cwd=REPO,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    with h5py.File(out, "r") as f, h5py.File(phantom, "r") as g:
        assert mrdfile.read_xml(f["copy"]) == xml
        assert f["copy/data"]["head"].tobytes() == g["dataset/data"]["head"].tobytes()
        assert all(np.array_equal(a, b) for a, b in zip(f["copy/data"]["data"], g["dataset/data"]["data"]))
    dset = ismrmrd.Dataset(str(out), "copy", mode="r")
    try:
        assert dset.number_of_waveforms() == len(waves)
        assert [dset.read_waveform(i) for i in range(len(waves))] == waves
    finally:
        dset.close()


def test_without_waveforms_flag_only_acquisitions_are_sent(phantom, tmp_path):
    result = subprocess.run(TO_STREAM + [str(phantom)], cwd=REPO, capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 0
    with h5py.File(phantom, "r") as f:
        n = f["dataset/data"].shape[0]
    assert message_ids(result.stdout) == [3] + [1008] * n + [4]


def test_image_file_round_trips_through_the_tools(tcp_reference, tmp_path):
    out = tmp_path / "out.h5"
    codes, errs, _ = pipeline(tmp_path, TO_STREAM + [str(tcp_reference), "-g", "g"], FROM_STREAM + [str(out), "-g", "g"])
    assert codes == [0, 0], errs
    data, heads, attrs = images_of(out, "g")
    ref_data, ref_heads, ref_attrs = images_of(tcp_reference, "g")
    assert np.array_equal(data, ref_data) and heads.tobytes() == ref_heads.tobytes() and attrs == ref_attrs


def test_mrdhdf5_to_stream_rejects_bad_input(tmp_path):
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_group("dataset")
    result = subprocess.run(TO_STREAM + [str(empty)], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2 and result.stdout == ""
    assert "neither raw data" in result.stderr
    missing = subprocess.run(TO_STREAM + [str(tmp_path / "nope.h5")], cwd=REPO, capture_output=True, timeout=TIMEOUT)
    assert missing.returncode == 2 and missing.stdout == b""


def _image(value, series=0, index=0):
    image = ismrmrd.Image.from_array(np.full((4, 5), value, dtype=np.float32))
    image.image_series_index, image.image_index = series, index
    return image


def test_stream_to_mrdhdf5_accepts_config_and_texts_and_stores_everything(tmp_path):
    stream = io.BytesIO()
    writer = MessageWriter.for_stream(stream, text_nul=True)  # NULs are accepted too
    writer.send_config_file("simplefft")
    writer.send_text("before the header")
    writer.send_header("<ismrmrdHeader/>")
    writer.send_image(_image(1.0, series=3))
    writer.send_text("between")
    writer.send_image(_image(2.0, series=3, index=1))
    writer.send_image(_image(7.0, series=5))
    acq = ismrmrd.Acquisition.from_array(np.ones((2, 8), dtype=np.complex64), scan_counter=9)
    writer.send_acquisition(acq)
    wav = ismrmrd.Waveform.from_array(np.arange(4, dtype=np.uint32).reshape(1, 4), time_stamp=3)
    writer.send_waveform(wav)
    writer.send_ndarray(np.zeros(3, dtype=np.float32))
    writer.send_close()
    path = tmp_path / "s.bin"
    path.write_bytes(stream.getvalue())
    out = tmp_path / "out.h5"
    result = subprocess.run(FROM_STREAM + [str(out), "-i", str(path)], cwd=REPO, capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert "before the header" in result.stderr and "between" in result.stderr and "NDARRAY" in result.stderr
    data3, heads3, _ = images_of(out, "dataset", "image_3")
    data5, _, _ = images_of(out, "dataset", "image_5")
    assert data3[:, 0, 0, 0, 0].tolist() == [1.0, 2.0] and heads3["image_index"].tolist() == [0, 1]
    assert data5.shape == (1, 1, 1, 4, 5) and np.all(data5 == 7.0)
    dset = ismrmrd.Dataset(str(out), "dataset", mode="r")
    try:
        assert dset.read_xml_header() == b"<ismrmrdHeader/>"
        assert dset.read_acquisition(0) == acq
        assert dset.read_waveform(0) == wav
    finally:
        dset.close()


@pytest.mark.parametrize("case", ["truncated", "no_close", "unexpected_message", "no_header"])
def test_stream_to_mrdhdf5_exits_1_on_protocol_error_after_storing_what_came(tmp_path, case):
    stream = io.BytesIO()
    writer = MessageWriter.for_stream(stream, text_nul=False)
    if case != "no_header":
        writer.send_header("<ismrmrdHeader/>")
    writer.send_image(_image(1.0))
    writer.send_image(_image(2.0, index=1))
    if case == "unexpected_message":
        writer.send_config_file("simplefft")
    raw = stream.getvalue()
    if case == "truncated":
        raw = raw[:-7]
    elif case == "unexpected_message":
        raw += struct.pack("<H", 4)
    out = tmp_path / "out.h5"
    result = subprocess.run(FROM_STREAM + [str(out)], input=raw, cwd=REPO, capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "Protocol error" in stderr
    with h5py.File(out, "r") as f:
        group = f["dataset"]
        if case == "no_header":
            assert "xml" not in group and "image_0" not in group
            assert "expected the MRD header" in stderr
        else:
            assert mrdfile.read_xml(group) == "<ismrmrdHeader/>"
            stored = group["image_0/data"][:, 0, 0, 0, 0].tolist()
            assert stored == ([1.0] if case == "truncated" else [1.0, 2.0])


# Input that is not MRD data, output that cannot be written ----------------------------------------------

def _records(dtype, n=2):
    """``n`` records of a compound type whose variable-length fields hold empty float32 arrays."""
    records = np.zeros(n, dtype=dtype)
    for name in dtype.names:
        if h5py.check_vlen_dtype(dtype[name]) is not None:
            for i in range(n):
                records[i][name] = np.zeros(0, np.float32)
    return records


def _image_series(group, heads=None, attributes=None):
    """A two-image series ``image_0`` of 4x5 float32 images; ``heads``/``attributes`` replace the right ones."""
    sub = group.create_group("image_0")
    sub["data"] = np.zeros((2, 1, 1, 4, 5), np.float32)
    if heads is None:
        heads = np.zeros(2, dtype=ismrmrd.hdf5.image_header_dtype)
        heads["channels"], heads["matrix_size"] = 1, (5, 4, 1)
    sub["header"] = heads
    sub["attributes"] = np.array(["", ""], dtype=h5py.string_dtype()) if attributes is None else attributes


def _bad_input(path, case):
    with h5py.File(path, "w") as f:
        group = f.create_group("dataset")
        mrdfile.write_xml(group, "<ismrmrdHeader/>")
        if case == "plain_array":
            group["data"] = np.arange(10)
        elif case == "other_fields":
            group["data"] = np.zeros(3, dtype=[("x", "f4"), ("y", "i4")])
        elif case == "short_head":
            group["data"] = _records(np.dtype([("head", [("version", "<u2")]), ("traj", h5py.vlen_dtype("f4")),
                                               ("data", h5py.vlen_dtype("f4"))]))
        elif case == "data_not_vlen":
            group["data"] = np.zeros(2, dtype=[("head", ismrmrd.hdf5.acquisition_header_dtype), ("traj", "f4"),
                                               ("data", "f4")])
        elif case == "data_is_a_group":
            group.create_group("data")
        elif case == "image_without_header":
            group.create_group("image_0")["data"] = np.zeros((2, 1, 1, 4, 5), np.float32)
        elif case == "image_header_not_matching":
            _image_series(group, heads=np.zeros(2, dtype=ismrmrd.hdf5.image_header_dtype))
        elif case == "image_header_other_fields":
            _image_series(group, heads=np.zeros(2, dtype=[("channels", "<u2"), ("matrix_size", "<u2", (3,))]))
        elif case == "image_attributes_not_text":
            _image_series(group, attributes=np.zeros(2, np.int32))
        elif case == "image_lengths_differ":
            _image_series(group, attributes=np.array([""], dtype=h5py.string_dtype()))
        elif case == "waveforms":
            group["data"] = _records(ismrmrd.hdf5.acquisition_dtype)
            group["waveforms"] = np.arange(4)
    return path


@pytest.mark.parametrize("case, where, why", [
    ("plain_array", "/dataset/data", "a compound dataset with fields head/traj/data expected, found type int64"),
    ("other_fields", "/dataset/data", "found fields x/y"),
    ("short_head", "/dataset/data", "its head has no field flags"),
    ("data_not_vlen", "/dataset/data", "field traj is type float32, not a variable-length array"),
    ("data_is_a_group", "/dataset/data", "is a group"),
    ("image_without_header", "/dataset/image_0", "no header/attributes dataset"),
    ("image_header_not_matching", "/dataset/image_0", "header 0 gives channels/z/y/x (0, 0, 0, 0)"),
    ("image_header_other_fields", "/dataset/image_0/header", "no field version"),
    ("image_attributes_not_text", "/dataset/image_0/attributes", "is not 1-D text"),
    ("image_lengths_differ", "/dataset/image_0", "differ in length"),
    ("waveforms", "/dataset/waveforms", "is not MRD waveform data"),
])
def test_mrdhdf5_to_stream_refuses_non_mrd_data_before_writing_anything(tmp_path, case, where, why):
    path = _bad_input(tmp_path / f"{case}.h5", case)
    result = subprocess.run(TO_STREAM + [str(path), "--waveforms"], cwd=REPO, capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 2 and result.stdout == b""
    (line,) = result.stderr.decode().splitlines()
    assert "ERROR" in line and "Traceback" not in line
    assert str(path) in line and where in line and why in line
    out = tmp_path / "stream.bin"
    result = subprocess.run(TO_STREAM + [str(path), "--waveforms", "-o", str(out)], cwd=REPO, capture_output=True,
                            timeout=TIMEOUT)
    assert result.returncode == 2 and not out.exists()


def test_mrdhdf5_to_stream_with_an_unwritable_output_exits_2(phantom, tmp_path):
    out = tmp_path / "missing" / "s.bin"
    result = subprocess.run(TO_STREAM + [str(phantom), "-o", str(out)], cwd=REPO, capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert f"Cannot write {out}" in line and "Traceback" not in result.stderr


def _stream_of_one_image():
    stream = io.BytesIO()
    writer = MessageWriter.for_stream(stream, text_nul=False)
    writer.send_header("<ismrmrdHeader/>")
    writer.send_image(_image(1.0))
    writer.send_close()
    return stream.getvalue()


def _store(outfile, *args, stdin=b""):
    return subprocess.run(FROM_STREAM + [str(outfile), *args], input=stdin, cwd=REPO, capture_output=True,
                          timeout=TIMEOUT)


@pytest.mark.parametrize("case", ["missing_root_folder", "file_as_folder", "folder_as_file"])
def test_stream_to_mrdhdf5_checks_the_output_path_before_reading_the_stream(tmp_path, case):
    (tmp_path / "plain").write_text("not a folder")
    outfile = {"missing_root_folder": tmp_path / "no" / "such" / "out.h5",
               "file_as_folder": tmp_path / "plain" / "out.h5", "folder_as_file": tmp_path}[case]
    # stdin is a pipe that stays open: a tool that read it first would wait for ever
    proc = subprocess.Popen(FROM_STREAM + [str(outfile)], stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        assert proc.wait(TIMEOUT) == 2
        (line,) = proc.stderr.read().decode().splitlines()
    finally:
        proc.kill()
        proc.stdin.close()
        proc.stderr.close()
    assert f"Cannot write {outfile}" in line and "Traceback" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


def test_stream_to_mrdhdf5_refuses_a_folder_it_cannot_write():
    # /proc/self takes no new files, not even from root (CI runs as root, which ignores chmod 555)
    result = _store(Path("/proc/self/out.h5"), stdin=_stream_of_one_image())
    assert result.returncode == 2 and "is not writable" in result.stderr.decode()


def test_stream_to_mrdhdf5_refuses_a_group_name_held_by_a_dataset(tmp_path):
    outfile = tmp_path / "out.h5"
    with h5py.File(outfile, "w") as f:
        f["dataset"] = np.arange(3)
    result = _store(outfile, stdin=_stream_of_one_image())
    assert result.returncode == 2
    (line,) = result.stderr.decode().splitlines()
    assert "/dataset is not a group" in line and "Traceback" not in line
    with h5py.File(outfile, "r") as f:
        assert list(f["dataset"][...]) == [0, 1, 2]


def test_an_hdf5_file_piped_into_stream_mode_is_named_as_such(phantom, tmp_path):
    with open(phantom, "rb") as stdin:
        result = subprocess.run(STREAM_SERVER + ["-c", "simplefft"], stdin=stdin, capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 1
    errors = [line for line in result.stderr.decode().splitlines() if " - ERROR - " in line]
    assert len(errors) == 1 and "this looks like an HDF5 file, not an MRD stream" in errors[0]
    assert "tools/mrdhdf5_to_stream.py" in errors[0] and "Traceback" not in result.stderr.decode()
    assert result.stdout == b"\x04\x00"  # still a valid stream: CLOSE
