"""MRD v1 message framing: MessageReader, MessageWriter and the module-facing Connection.

This is the only file that turns bytes into MRD objects and back (docs/protocol.md).
``MessageReader`` and ``MessageWriter`` work over any binary stream, so the TCP
server, the client, stream mode and the tests share them.  ``Connection``
composes one of each and keeps the API that python-ismrmrd-server modules use:
iterate it to get ``ismrmrd.Acquisition``/``Image``/``Waveform`` objects, text as
``str`` and ``None`` once at CLOSE; answer with ``send_image``/``send_text``/...;
finish with ``send_close``.

The XML header's text becomes an ``ismrmrd.xsd.ismrmrdHeader`` and back through
:func:`parse_header_xml` and :func:`header_xml` (ismrmrd's parser and writer, with one kept
xsdata context instead of a new one per call).

Receiving reads each variable part straight into the array that the returned
object owns (``readinto`` on a buffered stream), after checking the sizes given
by the fixed header against a limit.  Sending writes each message as one buffer
under a lock, so a worker thread may send while another thread blocks reading.
"""
from __future__ import annotations

import logging
import math
import re
import socket
import threading
from xml.etree import ElementTree
from typing import Any, BinaryIO, Callable, Iterator

import ismrmrd
import numpy as np

import constants
from constants import (CONFIG_FILE_NAME_BYTES, IMAGE_DTYPES, NDARRAY_MAX_DIMS, MessageID,
                       MrdMessageAttribLength, MrdMessageIdentifier, MrdMessageLength, NdarrayPrefix)

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 4 << 30
DEFAULT_MAX_TEXT_BYTES = 64 << 20
READ_BUFFER_BYTES = 1 << 18

Item = Any  # ismrmrd.Acquisition | ismrmrd.Image | ismrmrd.Waveform | np.ndarray | str | None


class MrdError(Exception):
    """Base class of the errors this server reports to clients."""


class ProtocolError(MrdError):
    """The byte stream violates the MRD v1 protocol (bad ID, short read, absurd size...)."""


class StreamEnded(ProtocolError):
    """The stream ended inside a message: the peer closed the connection (or vanished) mid-message."""


# The first two bytes of an HDF5 file's signature (\x89 H) read as a message ID.
HDF5_SIGNATURE_ID = 0x4889


XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"
_xml_context: Any = None
_SMALLEST_HEADER = (f'<ismrmrdHeader xmlns="{ISMRMRD_NAMESPACE}"><experimentalConditions>'
                    '<H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz></experimentalConditions></ismrmrdHeader>')


def _header_xml_context() -> Any:
    """The one xsdata ``XmlContext`` of all header parsing and writing.  A context builds the binding
    metadata of the schema's classes on first use and keeps it; ``ismrmrd.xsd.CreateFromDocument``
    and ``ToXML`` make a new context at every call, which takes 4-5 ms a header against 0.7-0.8 ms
    with a kept one.  Built metadata is only added to, so threads may share it."""
    global _xml_context
    if _xml_context is None:
        from xsdata.formats.dataclass.context import XmlContext
        _xml_context = XmlContext()
    return _xml_context


def warm_header_xml() -> None:
    """Load ismrmrd's XML schema and build the shared context's metadata of all its classes now (a
    server at start-up), so that no session's first header pays for them."""
    import dataclasses
    import ismrmrd.xsd
    context = _header_xml_context()
    for value in vars(ismrmrd.xsd).values():
        if isinstance(value, type) and dataclasses.is_dataclass(value):
            context.build(value)
    header_xml(parse_header_xml(_SMALLEST_HEADER))  # imports xsdata's parser and serializer


def parse_header_xml(xml: str | bytes) -> Any:
    """The ``ismrmrd.xsd.ismrmrdHeader`` of an XML header, as ``ismrmrd.xsd.CreateFromDocument`` parses
    it (unknown elements are errors); xsdata raises several exception types for text that is not
    ISMRMRD XML.  The XML declaration of a text is dropped first: the text is already decoded, and
    ismrmrd 1.15 declares ``encoding="ascii"`` in front of UTF-8 text (a patient name with umlauts)."""
    import ismrmrd.xsd
    from xsdata.formats.dataclass.parsers import XmlParser
    from xsdata.formats.dataclass.parsers.config import ParserConfig
    parser = XmlParser(config=ParserConfig(fail_on_unknown_properties=True), context=_header_xml_context())
    if isinstance(xml, str):
        return parser.from_string(XML_DECLARATION.sub("", xml, count=1), ismrmrd.xsd.ismrmrdHeader)
    return parser.from_bytes(xml, ismrmrd.xsd.ismrmrdHeader)


def header_xml(header: Any, encoding: str = "ascii") -> str:
    """The XML text of an ``ismrmrd.xsd.ismrmrdHeader``, the same as ``ismrmrd.xsd.ToXML(header, encoding)``."""
    from xsdata.formats.dataclass.serializers import XmlSerializer
    from xsdata.formats.dataclass.serializers.config import SerializerConfig
    serializer = XmlSerializer(config=SerializerConfig(encoding=encoding, indent=" "), context=_header_xml_context())
    return serializer.render(header, ns_map={"": ISMRMRD_NAMESPACE})


def _bytes_view(array: np.ndarray) -> memoryview:
    """A writable byte view of a C-contiguous array."""
    return memoryview(array.reshape(-1).view(np.uint8))


def _cut_text(raw: bytes | bytearray | memoryview) -> str:
    """Decode a text payload: cut at the first NUL, then decode UTF-8 leniently."""
    raw = bytes(raw)
    end = raw.find(b"\0")
    return (raw if end < 0 else raw[:end]).decode("utf-8", errors="replace")


class MessageReader:
    """Reads MRD messages from a binary stream that has ``readinto``.

    ``read()`` returns ``(message_id, item)``; ``(None, None)`` means the stream
    ended cleanly between two messages.  A stream that ends inside a message,
    an unknown ID or a size above the limits raises :class:`ProtocolError`.
    """

    def __init__(self, stream: BinaryIO, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES) -> None:
        self._stream = stream
        self._pending_id: int | None = None
        self._id_buffer = bytearray(2)
        self.max_message_bytes = max_message_bytes
        self.max_text_bytes = max_text_bytes
        self.bytes_read = 0

    def _readinto(self, view: memoryview) -> int:
        try:
            return self._stream.readinto(view)
        except TimeoutError as exc:
            raise ProtocolError("no data from the peer within the idle timeout; the session is ended") from exc

    def _fill(self, view: memoryview, what: str) -> None:
        """Fill ``view`` completely or raise ProtocolError naming ``what``."""
        got = 0
        total = len(view)
        while got < total:
            n = self._readinto(view[got:])
            if not n:
                raise StreamEnded(f"stream ended after {got} of {total} bytes of {what}")
            got += n
        self.bytes_read += total

    def _read_bytes(self, n: int, what: str) -> bytearray:
        buf = bytearray(n)
        self._fill(memoryview(buf), what)
        return buf

    def _check_size(self, nbytes: int, what: str) -> None:
        if nbytes > self.max_message_bytes:
            raise ProtocolError(f"{what} of {nbytes} bytes exceeds the limit of {self.max_message_bytes} bytes")

    def close(self) -> None:
        """Close the underlying stream (for sockets: release the ``makefile`` reference)."""
        self._stream.close()

    def peek_id(self) -> int | None:
        """The ID of the next message without consuming it; None at a clean end of stream."""
        if self._pending_id is None:
            view = memoryview(self._id_buffer)
            n = self._readinto(view)
            if not n:
                return None
            if n < 2:
                self._fill(view[n:], "message ID")
            self.bytes_read += n
            self._pending_id = MrdMessageIdentifier.unpack(self._id_buffer)[0]
        return self._pending_id

    def read(self) -> tuple[int | None, Item]:
        """Read one whole message; returns ``(id, item)``."""
        msg_id = self.peek_id()
        self._pending_id = None
        if msg_id is None:
            return None, None
        if msg_id == MessageID.CONFIG_FILE:
            return msg_id, _cut_text(self._read_bytes(CONFIG_FILE_NAME_BYTES, "CONFIG_FILE"))
        if msg_id in (MessageID.CONFIG_TEXT, MessageID.HEADER, MessageID.TEXT):
            return msg_id, self._read_text(MessageID(msg_id).name)
        if msg_id == MessageID.CLOSE:
            return msg_id, None
        if msg_id == MessageID.ACQUISITION:
            return msg_id, self._read_acquisition()
        if msg_id == MessageID.IMAGE:
            return msg_id, self._read_image()
        if msg_id == MessageID.WAVEFORM:
            return msg_id, self._read_waveform()
        if msg_id == MessageID.NDARRAY:
            return msg_id, self._read_ndarray()
        if msg_id == HDF5_SIGNATURE_ID and self.bytes_read == 2:
            raise ProtocolError("this looks like an HDF5 file, not an MRD stream; send it with client.py, "
                                "or convert it with tools/mrdhdf5_to_stream.py")
        raise ProtocolError(f"unknown message ID {msg_id}; the stream cannot continue")

    def _read_text(self, what: str) -> str:
        length = MrdMessageLength.unpack(self._read_bytes(MrdMessageLength.size, f"{what} length"))[0]
        if length > self.max_text_bytes:
            raise ProtocolError(f"{what} of {length} bytes exceeds the limit of {self.max_text_bytes} bytes")
        return _cut_text(self._read_bytes(length, what))

    def _read_acquisition(self) -> ismrmrd.Acquisition:
        head = ismrmrd.AcquisitionHeader.from_buffer_copy(
            self._read_bytes(constants.SIZEOF_ACQUISITION_HEADER, "acquisition header"))
        ns, nc, td = head.number_of_samples, head.active_channels, head.trajectory_dimensions
        self._check_size(ns * (nc * 8 + td * 4), "acquisition")
        acq = ismrmrd.Acquisition(head)
        if td:
            self._fill(_bytes_view(acq.traj), "acquisition trajectory")
        self._fill(_bytes_view(acq.data), "acquisition data")
        return acq

    def _read_image(self) -> ismrmrd.Image:
        head_bytes = self._read_bytes(constants.SIZEOF_IMAGE_HEADER, "image header")
        head = ismrmrd.ImageHeader.from_buffer_copy(head_bytes)
        if head.data_type not in IMAGE_DTYPES:
            raise ProtocolError(f"image data_type {head.data_type} is not an MRD data type")
        attr_len = MrdMessageAttribLength.unpack(
            self._read_bytes(MrdMessageAttribLength.size, "image attribute length"))[0]
        if attr_len > self.max_text_bytes:
            raise ProtocolError(f"image attributes of {attr_len} bytes exceed the limit of {self.max_text_bytes} bytes")
        attributes = _cut_text(self._read_bytes(attr_len, "image attributes"))
        wire_dtype = np.dtype(IMAGE_DTYPES[head.data_type])
        shape = (head.channels, head.matrix_size[2], head.matrix_size[1], head.matrix_size[0])
        self._check_size(head.channels * head.matrix_size[0] * head.matrix_size[1] * head.matrix_size[2]
                         * wire_dtype.itemsize, "image")
        image = ismrmrd.Image(head_bytes)
        try:
            image.attribute_string = attributes
        except (ElementTree.ParseError, AssertionError) as exc:
            log.warning("image attributes are not MetaContainer XML (%s); passing the image on without them", exc)
        if image.data.dtype == wire_dtype:
            self._fill(_bytes_view(image.data), "image pixels")
        else:  # data_type 4: int32 on the wire, int64 inside ismrmrd.Image
            pixels = np.empty(shape, dtype=wire_dtype)
            self._fill(_bytes_view(pixels), "image pixels")
            image.data[...] = pixels
        return image

    def _read_waveform(self) -> ismrmrd.Waveform:
        head = ismrmrd.WaveformHeader.from_buffer_copy(
            self._read_bytes(constants.SIZEOF_WAVEFORM_HEADER, "waveform header"))
        wav = ismrmrd.Waveform(head)
        self._fill(_bytes_view(wav.data), "waveform data")
        return wav

    def _read_ndarray(self) -> np.ndarray:
        data_type, _version, ndim = NdarrayPrefix.unpack(self._read_bytes(NdarrayPrefix.size, "ndarray prefix"))
        if data_type not in IMAGE_DTYPES or ndim > NDARRAY_MAX_DIMS:
            raise ProtocolError(f"ndarray with data type {data_type} and {ndim} dimensions is not valid")
        dims = np.frombuffer(self._read_bytes(8 * ndim, "ndarray dimensions"), dtype="<u8")
        dtype = np.dtype(IMAGE_DTYPES[data_type])
        nbytes = math.prod(int(d) for d in dims) * dtype.itemsize
        self._check_size(nbytes, "ndarray")
        array = np.empty(tuple(int(d) for d in dims), dtype=dtype)
        self._fill(_bytes_view(array), "ndarray data")
        return array


def socket_sender(sock: socket.socket) -> Callable[[list], None]:
    """Gathering write of all parts with ``sendmsg``, resumed after partial sends."""
    def send(parts: list) -> None:
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        while views:
            sent = sock.sendmsg(views)
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            if sent:
                views[0] = views[0][sent:]
    return send


def stream_sender(stream: BinaryIO) -> Callable[[list], None]:
    """Write all parts to a binary stream, then flush it."""
    def send(parts: list) -> None:
        for part in parts:
            stream.write(part)
        stream.flush()
    return send


def socket_reader(sock: socket.socket) -> BinaryIO:
    """The buffered reading file of a socket, as the readers of both MRD versions use it."""
    return sock.makefile("rb", buffering=READ_BUFFER_BYTES)


def stream_format(stream: BinaryIO) -> str | None:
    """``"v1"`` or ``"v2"`` (MRD v2, yardl) from the stream's first byte, peeked, not consumed; None at
    its end or on a timeout."""
    try:
        first = stream.peek(1)[:1]
    except (TimeoutError, OSError):
        return None
    if not first:
        return None
    return "v2" if first == constants.MRD_V2_FIRST_BYTE else "v1"


class MessageWriter:
    """Writes MRD messages, each as one gathered write of its parts, under a lock.

    ``text_nul`` appends a counted NUL to CONFIG_TEXT, HEADER and TEXT, as
    python-ismrmrd-server does over TCP; streams for the C++/Python stream tools
    are written without it (docs/protocol.md §4).  Build one with
    :meth:`for_socket` or :meth:`for_stream`.
    """

    def __init__(self, send_parts: Callable[[list], None], text_nul: bool = True) -> None:
        self._send_parts = send_parts
        self._lock = threading.Lock()
        self.text_nul = text_nul
        self.bytes_written = 0

    @classmethod
    def for_socket(cls, sock: socket.socket, text_nul: bool = True) -> "MessageWriter":
        return cls(socket_sender(sock), text_nul)

    @classmethod
    def for_stream(cls, stream: BinaryIO, text_nul: bool = True) -> "MessageWriter":
        return cls(stream_sender(stream), text_nul)

    def _send(self, *parts: bytes | memoryview) -> None:
        with self._lock:
            self._send_parts(parts)
            self.bytes_written += sum(memoryview(p).nbytes for p in parts)

    @staticmethod
    def _id(msg_id: int) -> bytes:
        return MrdMessageIdentifier.pack(msg_id)

    def send_config_file(self, name: str) -> None:
        raw = name.encode("utf-8")
        if len(raw) >= CONFIG_FILE_NAME_BYTES:
            raise ValueError(f"configuration name of {len(raw)} bytes is too long (at most {CONFIG_FILE_NAME_BYTES - 1})")
        self._send(self._id(MessageID.CONFIG_FILE), raw.ljust(CONFIG_FILE_NAME_BYTES, b"\0"))

    def _send_text_message(self, msg_id: int, text: str) -> None:
        raw = text.encode("utf-8") + (b"\0" if self.text_nul else b"")
        self._send(self._id(msg_id), MrdMessageLength.pack(len(raw)), raw)

    def send_config_text(self, text: str) -> None:
        self._send_text_message(MessageID.CONFIG_TEXT, text)

    def send_header(self, xml: str) -> None:
        self._send_text_message(MessageID.HEADER, xml)

    def send_text(self, text: str) -> None:
        self._send_text_message(MessageID.TEXT, text)

    def send_close(self) -> None:
        self._send(self._id(MessageID.CLOSE))

    def send_acquisition(self, acq: ismrmrd.Acquisition) -> None:
        self.send_acquisition_parts(bytes(acq._head), acq.traj, acq.data)

    def send_acquisition_parts(self, head: bytes | memoryview, traj: np.ndarray, data: np.ndarray) -> None:
        """Send an acquisition from its packed 340-byte header and arrays (no object needed)."""
        self._send(self._id(MessageID.ACQUISITION), head,
                   _bytes_view(np.ascontiguousarray(traj, dtype="<f4")),
                   _bytes_view(np.ascontiguousarray(data, dtype="<c8")))

    def send_image(self, image: ismrmrd.Image) -> None:
        attributes = image.attribute_string.encode("utf-8")
        head = image.getHead()
        head.attribute_string_len = len(attributes)
        pixels = np.ascontiguousarray(image.data, dtype=IMAGE_DTYPES[head.data_type])
        self._send(self._id(MessageID.IMAGE), bytes(head), MrdMessageAttribLength.pack(len(attributes)),
                   attributes, _bytes_view(pixels))

    def send_waveform(self, wav: ismrmrd.Waveform) -> None:
        self._send(self._id(MessageID.WAVEFORM), bytes(wav._head),
                   _bytes_view(np.ascontiguousarray(wav.data, dtype="<u4")))

    def send_ndarray(self, array: np.ndarray) -> None:
        codes = {np.dtype(v): k for k, v in IMAGE_DTYPES.items()}
        code = codes.get(array.dtype.newbyteorder("<"))
        if code is None or array.ndim > NDARRAY_MAX_DIMS:
            raise ValueError(f"cannot send an ndarray of {array.dtype} with {array.ndim} dimensions")
        dims = np.asarray(array.shape, dtype="<u8").tobytes()
        self._send(self._id(MessageID.NDARRAY), NdarrayPrefix.pack(code, 0, array.ndim), dims,
                   _bytes_view(np.ascontiguousarray(array)))


class Connection:
    """One MRD session as python-ismrmrd-server modules see it.

    Iterating yields data items in arrival order and ``None`` once at CLOSE (or
    at the end of the stream); a second configuration or header in the data
    phase raises :class:`ProtocolError`.
    """

    def __init__(self, reader: MessageReader, writer: MessageWriter, sock: socket.socket | None = None,
                 savedataFolder: str = "", savedata: bool = False) -> None:
        self.reader = reader
        self.writer = writer
        self.socket = sock
        self.lock = threading.Lock()
        self.is_exhausted = False
        self.close_sent = False
        self.hold_close = False
        self.texts_to_log = False
        self.savedataFolder = savedataFolder
        self.savedata = savedata
        self.savedataFile = ""
        self.savedataGroup = "dataset"
        self.mrdFilePath = None
        self.dset = None
        self.recorder = None
        # Set by the server, not by modules: attributes added to every image sent (the header QA's
        # result), the last image sent (the dashboard's thumbnail), and a callback for texts sent.
        self.image_meta: dict | None = None
        self.last_image: ismrmrd.Image | None = None
        self.on_text: Callable[[str], None] | None = None
        self.recvAcqs = self.recvImages = self.recvWaveforms = 0
        self.sentAcqs = self.sentImages = self.sentWaveforms = 0

    @classmethod
    def from_socket(cls, sock: socket.socket, limits: dict | None = None, stream: BinaryIO | None = None,
                    **kwargs: Any) -> "Connection":
        """A connection over a connected TCP socket (texts sent with a NUL); ``limits`` are
        MessageReader keyword arguments (``max_message_bytes``, ``max_text_bytes``); ``stream``: the
        socket's reading file when the caller has opened it (``socket_reader``)."""
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = MessageReader(stream or socket_reader(sock), **(limits or {}))
        return cls(reader, MessageWriter.for_socket(sock, text_nul=True), sock=sock, **kwargs)

    @classmethod
    def from_streams(cls, stdin: BinaryIO, stdout: BinaryIO, limits: dict | None = None,
                     **kwargs: Any) -> "Connection":
        """A connection over binary streams (stream mode): texts without NUL, and logged, not sent."""
        conn = cls(MessageReader(stdin, **(limits or {})), MessageWriter.for_stream(stdout, text_nul=False), **kwargs)
        conn.texts_to_log = True
        return conn

    # Receiving -------------------------------------------------------------
    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:
        if self.is_exhausted:
            raise StopIteration
        msg_id, item = self.reader.read()
        if self.recorder is not None and msg_id is not None:
            self._record(msg_id, item)
        if msg_id is None or msg_id == MessageID.CLOSE:
            self.is_exhausted = True
            return None
        if msg_id == MessageID.ACQUISITION:
            self.recvAcqs += 1
        elif msg_id == MessageID.IMAGE:
            self.recvImages += 1
        elif msg_id == MessageID.WAVEFORM:
            self.recvWaveforms += 1
        elif msg_id != MessageID.TEXT and msg_id != MessageID.NDARRAY:
            self.is_exhausted = True
            raise ProtocolError(f"{MessageID(msg_id).name} received after the header; only one is allowed")
        return item

    def next(self) -> Item:
        return self.__next__()

    def _record(self, msg_id: int, item: Item) -> None:
        """Save one received item; a failing save (full disk...) is reported and saving stops."""
        try:
            self.recorder.record(msg_id, item)
        except (OSError, RuntimeError, ValueError) as exc:
            self.stop_saving(exc)

    def stop_saving(self, exc: BaseException) -> None:
        """Give up saving after ``exc``: keep what the file holds, tell the client, go on with the session."""
        recorder, self.recorder = self.recorder, None
        msg = f"Saving incoming data to {recorder.path} failed ({type(exc).__name__}: {exc}); saving stopped"
        log.error(msg)
        recorder.abort()
        self.send_logging(constants.MRD_LOGGING_ERROR, msg)

    def peek_mrd_message_identifier(self) -> int | None:
        return self.reader.peek_id()

    # Sending ---------------------------------------------------------------
    def send_image(self, images: ismrmrd.Image | list | None) -> None:
        if images is None:
            return
        for image in images if isinstance(images, (list, tuple)) else [images]:
            if image is None:
                continue
            if self.image_meta:
                meta = ismrmrd.Meta.deserialize(image.attribute_string) if image.attribute_string else ismrmrd.Meta()
                meta.update(self.image_meta)
                image.attribute_string = meta.serialize()
            self.writer.send_image(image)
            self.sentImages += 1
            self.last_image = image

    def send_text(self, text: str) -> None:
        """One TEXT message; logged instead when ``texts_to_log`` is set (stream mode, whose
        consumers accept only images, acquisitions and waveforms)."""
        if self.on_text is not None:
            self.on_text(text)
        if self.texts_to_log:
            log.info("Module text: %s", text)
        else:
            self.writer.send_text(text)

    def send_logging(self, level: str, contents: str) -> None:
        self.send_text(f"{level} {contents}")

    def send_waveform(self, waveform: ismrmrd.Waveform) -> None:
        self.writer.send_waveform(waveform)
        self.sentWaveforms += 1

    def send_acquisition(self, acquisition: ismrmrd.Acquisition) -> None:
        self.writer.send_acquisition(acquisition)
        self.sentAcqs += 1

    def send_config_file(self, name: str) -> None:
        self.writer.send_config_file(name)

    def send_config_text(self, text: str) -> None:
        self.writer.send_config_text(text)

    def send_metadata(self, xml: str) -> None:
        self.writer.send_header(xml)

    def send_close(self) -> None:
        """Send CLOSE once; later calls do nothing.

        While ``hold_close`` is set (the server sets it while a module runs) the
        CLOSE is held back, so that an error the module raises afterwards still
        reaches the client before it.
        """
        with self.lock:
            if self.close_sent or self.hold_close:
                return
            self.close_sent = True
        self.writer.send_close()

    def shutdown_close(self) -> None:
        """Shut the socket down both ways and close it."""
        if self.socket is None:
            return
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.socket.close()

