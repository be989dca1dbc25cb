"""Wire-level tests of connection.py against the ismrmrd package's ProtocolSerializer/Deserializer."""
import io
import struct

import ismrmrd
import numpy as np
import pytest
from ismrmrd.serialization import ConfigFile, ConfigText, ProtocolDeserializer, ProtocolSerializer

from connection import Connection, MessageReader, MessageWriter, ProtocolError
from constants import MessageID

XML = ("<?xml version='1.0' encoding='utf-8'?><ismrmrdHeader xmlns=\"http://www.ismrm.org/ISMRMRD\">"
       "<experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz>"
       "</experimentalConditions></ismrmrdHeader>")


def sample_objects():
    rng = np.random.default_rng(1)
    acq = ismrmrd.Acquisition.from_array(
        (rng.standard_normal((4, 32)) + 1j * rng.standard_normal((4, 32))).astype(np.complex64),
        rng.standard_normal((32, 2)).astype(np.float32), scan_counter=5, flags=1 << 18)
    acq.idx.kspace_encode_step_1 = 17
    image = ismrmrd.Image.from_array(np.arange(24, dtype=np.float32).reshape(2, 3, 4), image_index=3)
    image.meta["WindowCenter"] = "12"
    image.meta["ImageRowDir"] = ["1.0", "0.0", "0.0"]
    cimage = ismrmrd.Image.from_array((np.arange(6) * (1 + 2j)).astype(np.complex64).reshape(2, 3))
    wav = ismrmrd.Waveform.from_array(np.arange(10, dtype=np.uint32).reshape(2, 5), waveform_id=1025)
    array = np.arange(12, dtype=np.float64).reshape(3, 4)
    return acq, image, cimage, wav, array


def ours_without_nul(objs):
    out = io.BytesIO()
    writer = MessageWriter.for_stream(out, text_nul=False)
    writer.send_config_file("simplefft")
    writer.send_config_text("<config/>")
    writer.send_header(XML)
    writer.send_text("hello")
    acq, image, cimage, wav, array = objs
    writer.send_acquisition(acq)
    writer.send_image(image)
    writer.send_image(cimage)
    writer.send_waveform(wav)
    writer.send_ndarray(array)
    writer.send_close()
    return out.getvalue()


def reference_bytes(objs):
    out = io.BytesIO()
    ser = ProtocolSerializer(out)
    ser.serialize(ConfigFile("simplefft"))
    ser.serialize(ConfigText("<config/>"))
    ser.serialize(ismrmrd.xsd.CreateFromDocument(XML))
    ser.serialize("hello")
    for obj in objs:
        ser.serialize(obj)
    ser.close()
    return out.getvalue()


def test_our_bytes_equal_protocol_serializer_bytes_except_header_rendering():
    objs = sample_objects()
    ours = ours_without_nul(objs)
    ref = reference_bytes(objs)
    # The serializer re-renders the header XML; compare every message except the header text.
    reader_ours, reader_ref = MessageReader(io.BytesIO(ours)), MessageReader(io.BytesIO(ref))
    header_ours = header_ref = None
    for _ in range(11):
        id_ours, item_ours = reader_ours.read()
        id_ref, item_ref = reader_ref.read()
        assert id_ours == id_ref
        if id_ours == MessageID.HEADER:
            header_ours, header_ref = item_ours, item_ref
    assert ismrmrd.xsd.CreateFromDocument(header_ours) == ismrmrd.xsd.CreateFromDocument(header_ref)
    # Byte-for-byte equality of everything after the header.
    cut_ours = ours.index(b"hello") - 6
    cut_ref = ref.index(b"hello") - 6
    assert ours[cut_ours:] == ref[cut_ref:]
    assert ours[:1026] == ref[:1026]


def test_protocol_deserializer_reads_our_stream():
    objs = sample_objects()
    got = list(ProtocolDeserializer(io.BytesIO(ours_without_nul(objs))).deserialize())
    assert got[0] == "simplefft" and got[1] == "<config/>" and got[3] == "hello"
    acq, image, cimage, wav, array = objs
    assert got[4] == acq
    assert np.array_equal(got[5].data, image.data) and got[5].meta == image.meta
    assert np.array_equal(got[6].data, cimage.data)
    assert got[7] == wav
    assert np.array_equal(got[8], array)


def test_reader_reads_protocol_serializer_stream():
    objs = sample_objects()
    reader = MessageReader(io.BytesIO(reference_bytes(objs)))
    items = [reader.read() for _ in range(11)]
    acq, image, cimage, wav, array = objs
    assert [i for i, _ in items] == [1, 2, 3, 5, 1008, 1022, 1022, 1026, 1030, 4, None]
    assert items[0][1] == "simplefft" and items[3][1] == "hello"
    assert items[4][1] == acq
    assert items[4][1].idx.kspace_encode_step_1 == 17
    assert np.array_equal(items[5][1].data, image.data) and items[5][1].meta == image.meta
    assert np.array_equal(items[6][1].data, cimage.data)
    assert items[7][1] == wav
    assert np.array_equal(items[8][1], array)


def test_tcp_texts_carry_a_counted_nul_and_are_read_back_without_it():
    out = io.BytesIO()
    MessageWriter.for_stream(out, text_nul=True).send_text("abc")
    assert out.getvalue() == struct.pack("<HI", 5, 4) + b"abc\0"
    assert MessageReader(io.BytesIO(out.getvalue())).read() == (5, "abc")


def test_config_file_name_is_cut_at_the_first_nul():
    garbage = b"simplefft\0\xff\xfe garbage left by a C++ sender"
    raw = struct.pack("<H", 1) + garbage.ljust(1024, b"\x07")
    assert MessageReader(io.BytesIO(raw)).read() == (1, "simplefft")


def test_config_name_of_1024_bytes_is_rejected():
    with pytest.raises(ValueError):
        MessageWriter.for_stream(io.BytesIO()).send_config_file("x" * 1024)


def test_int32_images_keep_four_bytes_per_pixel():
    pixels = np.arange(-6, 6, dtype=np.int32).reshape(1, 1, 3, 4)
    head = ismrmrd.ImageHeader(version=1, data_type=ismrmrd.DATATYPE_INT, channels=1)
    head.matrix_size[:] = (4, 3, 1)
    body = bytes(head) + struct.pack("<Q", 0) + pixels.tobytes()
    stream = struct.pack("<H", 1022) + body + struct.pack("<H", 4)
    reader = MessageReader(io.BytesIO(stream))
    msg_id, image = reader.read()
    assert msg_id == 1022 and np.array_equal(image.data, pixels)
    assert reader.read() == (4, None)
    out = io.BytesIO()
    MessageWriter.for_stream(out).send_image(image)
    assert out.getvalue() == stream[:-2]


def test_truncated_acquisition_raises_protocol_error():
    acq = sample_objects()[0]
    out = io.BytesIO()
    MessageWriter.for_stream(out).send_acquisition(acq)
    reader = MessageReader(io.BytesIO(out.getvalue()[:-10]))
    with pytest.raises(ProtocolError, match="acquisition data"):
        reader.read()


def test_unknown_message_id_raises_protocol_error():
    with pytest.raises(ProtocolError, match="unknown message ID 999"):
        MessageReader(io.BytesIO(struct.pack("<H", 999) + b"xxxx")).read()


def test_oversized_message_is_rejected_before_allocation():
    head = ismrmrd.ImageHeader(version=1, data_type=ismrmrd.DATATYPE_CXDOUBLE, channels=65535)
    head.matrix_size[:] = (65535, 65535, 65535)
    stream = struct.pack("<H", 1022) + bytes(head) + struct.pack("<Q", 0)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        MessageReader(io.BytesIO(stream)).read()


def test_connection_yields_none_once_at_close_and_rejects_a_second_header():
    out = io.BytesIO()
    writer = MessageWriter.for_stream(out)
    writer.send_text("a")
    writer.send_close()
    conn = Connection(MessageReader(io.BytesIO(out.getvalue())), MessageWriter.for_stream(io.BytesIO()))
    assert list(conn) == ["a", None]
    assert conn.is_exhausted
    out = io.BytesIO()
    MessageWriter.for_stream(out).send_header(XML)
    conn = Connection(MessageReader(io.BytesIO(out.getvalue())), MessageWriter.for_stream(io.BytesIO()))
    with pytest.raises(ProtocolError, match="only one is allowed"):
        next(conn)


def test_send_close_is_sent_once():
    out = io.BytesIO()
    conn = Connection(MessageReader(io.BytesIO(b"")), MessageWriter.for_stream(out))
    conn.send_close()
    conn.send_close()
    assert out.getvalue() == struct.pack("<H", 4)


def _phantom_header_xml():
    """The phantom generator's header (every section a scan has), as ismrmrd writes it."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "tools" / "generate_cartesian_shepp_logan_dataset.py"
    spec = importlib.util.spec_from_file_location("generate_cartesian_shepp_logan_dataset", path)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    return generator.header_xml(64, 4, 2, 1, 2)


def test_header_xml_parsing_and_writing_equal_ismrmrd_xsd():
    import re

    import ismrmrd.xsd
    from connection import header_xml, parse_header_xml, warm_header_xml
    warm_header_xml()
    declaration = re.compile(r"^\s*<\?xml[^>]*\?>")
    full = declaration.sub("", _phantom_header_xml()).replace("<protocolName>", "<protocolName>Prüfung ")
    declared = '<?xml version="1.0" encoding="ascii"?>\n' + full  # what ismrmrd 1.15 writes before UTF-8 text
    for text in (XML, full, declared):
        reference = ismrmrd.xsd.CreateFromDocument(declaration.sub("", text))
        assert parse_header_xml(text) == reference
        if not text.startswith("<?xml"):  # bytes are parsed as they are, declaration and all
            assert parse_header_xml(text.encode()) == reference
        for encoding in ("ascii", "utf-8"):
            assert header_xml(reference, encoding) == ismrmrd.xsd.ToXML(reference, encoding=encoding)
    assert parse_header_xml(declared).measurementInformation.protocolName.startswith("Prüfung ")
    with pytest.raises(Exception):
        parse_header_xml(XML.replace("</ismrmrdHeader>", "<bogus/></ismrmrdHeader>"))


def test_header_xml_is_parsed_the_same_by_threads_sharing_one_fresh_context(monkeypatch):
    import concurrent.futures

    import connection
    monkeypatch.setattr(connection, "_xml_context", None)  # the metadata is built while threads parse
    full = _phantom_header_xml()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        headers = list(pool.map(lambda _: connection.parse_header_xml(full), range(64)))
    assert all(header == headers[0] for header in headers) and headers[0].encoding[0].encodedSpace.matrixSize.x == 128
    assert connection._xml_context is not None
