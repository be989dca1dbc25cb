"""MRD v2 (yardl binary) streams behind the server's reader/writer faces.

:class:`V2Reader` has the face of :class:`connection.MessageReader` (``read``, ``peek_id``,
``close``, ``bytes_read``): it yields a CONFIG_FILE message (the header's user parameter string
``config``, else empty: the server's default module), the HEADER as ISMRMRD XML, then each stream
item as the v1 object a module expects, and CLOSE at the end of the stream.  :class:`V2Writer`
has the face of :class:`connection.MessageWriter`: images, acquisitions and waveforms are written
as v2 items after the header (the session's own v2 header unless the module sent another);
CLOSE ends the stream.  v2 has no config or text messages: the server logs texts instead
(``Connection.texts_to_log``).  docs/protocol.md §11.

The binary codec is mrd-python's (``mrd.BinaryMrdReader``/``BinaryMrdWriter``), with two
adjustments for sockets: the preamble (magic, format version, schema) is read and checked here, so
that bad input gets a clear error; and the reader's buffer is refilled until it holds what the
codec asked for, instead of its one ``readinto`` per refill, which on a socket either waits for a
whole 64 KiB buffer (a client that waits for results before closing would hang) or, given a short
read, mistakes it for the end of the stream.  The source is handed to the codec as a buffered
stream, so that the codec does not wrap it in an ``io.BufferedReader`` (whose ``readinto`` waits
until the whole buffer is full); arrays and strings longer than the reader's limits are refused
before they are allocated, and a varint longer than 10 bytes (more than 64 bits) is refused
rather than decoded (a long run of bytes >= 0x80 took quadratic time).
"""
from __future__ import annotations

import io
import logging
import struct
import threading
from typing import Any, BinaryIO, Callable

import ismrmrd
import mrd
import numpy as np
from mrd import _binary

from connection import MessageID, ProtocolError, StreamEnded
from mrdv2 import _acquisition_codec, convert

log = logging.getLogger(__name__)

MAGIC = b"yardl"
FORMAT_VERSION = 1
SCHEMA = mrd.BinaryMrdReader.schema
MAX_SCHEMA_BYTES = 1 << 20
CONFIG_PARAMETER = "config"  # header userParameters/userParameterString that names the module
_INT32 = struct.Struct("<i")
_MESSAGE_IDS = {ismrmrd.Acquisition: MessageID.ACQUISITION, ismrmrd.Image: MessageID.IMAGE,
                ismrmrd.Waveform: MessageID.WAVEFORM}


class _PatientInputStream(_binary.CodedInputStream):
    """mrd's input buffer, refilled by as many reads as it takes to hold ``min_count`` bytes; arrays
    and strings are checked against the limits before they are allocated, varints are at most 10
    bytes long."""

    max_array_bytes = 1 << 30
    max_string_bytes = 64 << 20

    def read_unsigned_varint(self) -> int:
        result = 0
        shift = 0
        while True:
            if self._last_read_count - self._offset < 1:
                self._fill_buffer(1)
            byte = self._buffer[self._offset]
            self._offset += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("a varint (a count, length or integer) longer than 10 bytes")

    def _read_large(self, count: int) -> np.ndarray:
        """``count`` bytes (a uint8 array, which mrd's readers take as they take a ``bytearray``), more
        than the buffer holds: what is buffered, then reads until complete.  The array is not
        zero-filled first (``bytearray(count)`` would be): each byte is written once, and a stream
        that claims a large array and then ends has made no memory resident."""
        out = np.empty(count, dtype=np.uint8)
        view = memoryview(out)
        remaining = self._last_read_count - self._offset
        view[:remaining] = self._view[self._offset:self._last_read_count]
        self._offset = self._last_read_count
        view = view[remaining:]
        while view:
            n = self._stream.readinto(view)
            if not n:
                raise EOFError("Unexpected EOF")
            view = view[n:]
        return out

    def read_bytearray(self, count: int) -> bytearray | np.ndarray:
        if count > self.max_array_bytes:
            raise ValueError(f"an array of {count} bytes exceeds the limit of {self.max_array_bytes} bytes")
        if count > len(self._buffer) and count > self._last_read_count - self._offset:
            return self._read_large(count)
        return super().read_bytearray(count)

    def read_view(self, count: int) -> memoryview:
        if count > self.max_string_bytes:
            raise ValueError(f"a string of {count} bytes exceeds the limit of {self.max_string_bytes} bytes")
        if count > len(self._buffer) and count > self._last_read_count - self._offset:
            return memoryview(self._read_large(count))
        return super().read_view(count)

    def _fill_buffer(self, min_count: int = 0) -> None:
        remaining = self._last_read_count - self._offset
        if remaining > 0:
            self._buffer[:remaining] = self._buffer[self._offset:self._last_read_count]
        self._offset = 0
        self._last_read_count = remaining
        view = memoryview(self._buffer)
        while True:
            n = self._stream.readinto(view[self._last_read_count:])
            self._last_read_count += n or 0
            if not n or self._last_read_count >= max(min_count, 1):
                break
        if self._last_read_count == 0:
            self._at_end = True
        if min_count > 0 and self._last_read_count < min_count:
            raise EOFError("Unexpected EOF")


class _CountingStream(io.BufferedIOBase):
    """Bytes already read (the preamble) first, then the source; each ``readinto`` returns what is
    there (at least one byte until the end), and the bytes read are counted.  A ``BufferedIOBase``,
    so that mrd's codec reads it directly instead of through an ``io.BufferedReader``.  A source
    with ``read1`` is read with it (what it holds, or one read when it holds nothing): its
    ``readinto1`` of more than its own buffer size waits for more data after copying what it has
    (stdin's 8 KiB buffer)."""

    def __init__(self, prefix: bytes, source: BinaryIO) -> None:
        self._prefix = memoryview(prefix)
        self._source = source
        self._read1 = getattr(source, "readinto1", source.readinto)
        self._read1_bytes = getattr(source, "read1", None)
        self.count = len(prefix)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        try:
            if self._read1_bytes is not None:
                data = self._read1_bytes(len(buffer))
                n = len(data)
                buffer[:n] = data
            else:
                n = self._read1(buffer) or 0
        except TimeoutError as exc:
            raise ProtocolError("no data from the peer within the idle timeout; the session is ended") from exc
        self.count += n
        return n


def _read_exactly(source: BinaryIO, n: int, what: str) -> bytes:
    data = bytearray()
    while len(data) < n:
        try:
            chunk = source.read(n - len(data))
        except TimeoutError as exc:
            raise ProtocolError("no data from the peer within the idle timeout; the session is ended") from exc
        if not chunk:
            raise StreamEnded(f"MRD v2 stream ended after {len(data)} of {n} bytes of its {what}")
        data += chunk
    return bytes(data)


def read_preamble(source: BinaryIO) -> bytes:
    """Read and check magic, format version and schema; returns those bytes. ProtocolError names
    what is wrong."""
    magic = _read_exactly(source, len(MAGIC), "magic")
    if magic != MAGIC:
        raise ProtocolError(f"not an MRD stream: it starts with {magic!r}, neither an MRD v1 message ID nor "
                            f"the MRD v2 magic {MAGIC!r}")
    raw_version = _read_exactly(source, _INT32.size, "format version")
    version = _INT32.unpack(raw_version)[0]
    if version != FORMAT_VERSION:
        raise ProtocolError(f"MRD v2 binary format version {version} is not supported (only {FORMAT_VERSION})")
    length, raw_length = 0, bytearray()
    for shift in range(0, 35, 7):
        byte = _read_exactly(source, 1, "schema length")[0]
        raw_length.append(byte)
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
    else:
        raise ProtocolError("MRD v2 schema length is not a valid varint")
    if length > MAX_SCHEMA_BYTES:
        raise ProtocolError(f"MRD v2 schema of {length} bytes exceeds the limit of {MAX_SCHEMA_BYTES} bytes")
    schema = _read_exactly(source, length, "schema")
    if schema.decode("utf-8", errors="replace") != SCHEMA:
        raise ProtocolError("the stream's yardl schema is not MRD's (mrd-python 2.1): another protocol, or another "
                            "MRD version")
    return magic + raw_version + bytes(raw_length) + schema


class V2Reader:
    """An MRD v2 stream read as v1 messages (the face of ``connection.MessageReader``)."""

    def __init__(self, source: BinaryIO, max_message_bytes: int, max_text_bytes: int) -> None:
        self._source = source
        self.max_message_bytes = max_message_bytes
        self.max_text_bytes = max_text_bytes
        self._counting: _CountingStream | None = None
        self._mrd: mrd.BinaryMrdReader | None = None
        self.header: mrd.Header | None = None
        self._pending: list[tuple[int | None, Any]] = []
        self._items = None
        self._ended = False
        self._skipped: dict[str, int] = {}

    @property
    def bytes_read(self) -> int:
        return self._counting.count if self._counting is not None else 0

    def close(self) -> None:
        self._source.close()

    def peek_id(self) -> int | None:
        if not self._pending:
            self._pending.append(self._next())
        return self._pending[0][0]

    def read(self) -> tuple[int | None, Any]:
        return self._pending.pop(0) if self._pending else self._next()

    def _next(self) -> tuple[int | None, Any]:
        try:
            if self._items is None:
                return self._start()
            while not self._ended:
                item = next(self._items, None)
                if item is None:
                    self._ended = True
                    self._report_skipped()
                    return MessageID.CLOSE, None
                converted = item if type(item) is ismrmrd.Acquisition else convert.item_to_v1(item)
                if converted is None:
                    name = type(item).__name__
                    self._skipped[name] = self._skipped.get(name, 0) + 1
                    continue
                self._check_size(converted)
                return _MESSAGE_IDS[type(converted)], converted
            return None, None
        except (EOFError, ProtocolError) as exc:
            if isinstance(exc, ProtocolError):
                raise
            where = "its header" if self._items is None else "an item"
            raise StreamEnded(f"MRD v2 stream ended inside {where} after {self.bytes_read} bytes") from None
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError, RuntimeError,
                struct.error, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed MRD v2 stream after {self.bytes_read} bytes: "
                                f"{type(exc).__name__}: {exc}") from None

    def _start(self) -> tuple[int, Any]:
        """Preamble and header: CONFIG_FILE (its ``config`` user parameter, or empty) now, HEADER next."""
        self._counting = _CountingStream(read_preamble(self._source), self._source)
        self._mrd = mrd.BinaryMrdReader(self._counting)
        self._mrd._stream.__class__ = _PatientInputStream  # see the module docstring
        self._mrd._stream.max_array_bytes = self.max_message_bytes
        self._mrd._stream.max_string_bytes = self.max_text_bytes
        self.header = self._mrd.read_header()
        if self.header is None:
            raise ProtocolError("the MRD v2 stream has no header; a session needs one")
        xml = convert.header_to_xml(self.header)
        if len(xml) > self.max_text_bytes:
            raise ProtocolError(f"header of {len(xml)} bytes exceeds the limit of {self.max_text_bytes} bytes")
        self._items = _read_items(self._mrd._stream)
        self._pending.append((MessageID.HEADER, xml))
        return MessageID.CONFIG_FILE, config_of(self.header)

    def _check_size(self, item: Any) -> None:
        nbytes = item.data.nbytes
        if nbytes > self.max_message_bytes:
            raise ProtocolError(f"{type(item).__name__} of {nbytes} bytes exceeds the limit of "
                                f"{self.max_message_bytes} bytes")

    def _report_skipped(self) -> None:
        for name, count in self._skipped.items():
            log.warning("MRD v2: %d %s item(s) skipped: MRD v1 modules cannot receive them", count, name)


def header_with_config(xml: str, config: str) -> mrd.Header:
    """The v2 header of the XML header ``xml`` with the user parameter string ``config`` set to
    ``config`` (the module the server is to run: a v2 stream has no configuration message);
    ``config`` empty: the header as it is.  Set on the v2 header, not in the XML: one parse, and no
    XML writer (xsdata's serializer) to import or run.  ValueError when ``xml`` is not a valid
    ISMRMRD header."""
    header = convert.header_from_xml(xml)
    if config:
        if header.user_parameters is None:
            header.user_parameters = mrd.UserParametersType()
        strings = [p for p in header.user_parameters.user_parameter_string if p.name != CONFIG_PARAMETER]
        header.user_parameters.user_parameter_string = strings + [
            mrd.UserParameterStringType(name=CONFIG_PARAMETER, value=config)]
    return header


def config_of(header: mrd.Header) -> str:
    """The header's user parameter string ``config`` (the module to run), or empty."""
    params = header.user_parameters
    for entry in (params.user_parameter_string if params is not None else []):
        if entry.name == CONFIG_PARAMETER and entry.value.strip():
            return entry.value.strip()
    return ""


_READ_CASES: list[tuple[type, Any]] = []


def _read_cases() -> list[tuple[type, Any]]:
    """The StreamItem union's cases and mrd's serializers, in mrd's order (``BinaryMrdReader._read_data``),
    built once."""
    if not _READ_CASES:
        b, item, bi = mrd.binary, mrd.StreamItem, _binary
        _READ_CASES.extend([
            (item.Acquisition, b.AcquisitionSerializer()),
            (item.WaveformUint32, b.WaveformSerializer(bi.uint32_serializer)),
            (item.ImageUint16, b.ImageSerializer(bi.uint16_serializer)),
            (item.ImageInt16, b.ImageSerializer(bi.int16_serializer)),
            (item.ImageUint32, b.ImageSerializer(bi.uint32_serializer)),
            (item.ImageInt32, b.ImageSerializer(bi.int32_serializer)),
            (item.ImageFloat, b.ImageSerializer(bi.float32_serializer)),
            (item.ImageDouble, b.ImageSerializer(bi.float64_serializer)),
            (item.ImageComplexFloat, b.ImageSerializer(bi.complexfloat32_serializer)),
            (item.ImageComplexDouble, b.ImageSerializer(bi.complexfloat64_serializer)),
            (item.AcquisitionBucket, b.AcquisitionBucketSerializer()),
            (item.ReconData, b.ReconDataSerializer()),
            (item.ArrayComplexFloat, bi.DynamicNDArraySerializer(bi.complexfloat32_serializer)),
            (item.ImageArray, b.ImageArraySerializer()),
        ])
    return _READ_CASES


def _read_items(stream: _binary.CodedInputStream) -> Any:
    """The stream items, as mrd's ``StreamSerializer(UnionSerializer(StreamItem, ...))`` reads them
    (blocks: a varint count, 0 ends the stream; per item its union index as one byte), except that an
    Acquisition (index 0) comes as the ``ismrmrd.Acquisition`` that ``convert.acquisition_to_v1``
    makes of it, read by ``_acquisition_codec`` (the generic path took most of a v2 session's time)."""
    cases = _read_cases()
    read_acquisition = _acquisition_codec.read_acquisition
    while (count := stream.read_unsigned_varint()) > 0:
        for _ in range(count):
            index = stream.read_byte()
            if index == 0:
                yield read_acquisition(stream)
            else:
                case_type, serializer = cases[index]
                yield case_type(serializer.read(stream))


_ITEM_SERIALIZERS: dict[type, Any] = {}


def _item_serializers() -> dict[type, Any]:
    """mrd's serializers of the stream items a v1 object becomes, by union case, built once:
    ``BinaryMrdWriter.write_data`` builds the serializers of all 14 cases at every call (1.7 ms,
    most of the time of writing a 32-coil acquisition)."""
    if not _ITEM_SERIALIZERS:
        b, item = mrd.binary, mrd.StreamItem
        _ITEM_SERIALIZERS.update({
            item.Acquisition: b.AcquisitionSerializer(),
            item.WaveformUint32: b.WaveformSerializer(_binary.uint32_serializer),
            item.ImageUint16: b.ImageSerializer(_binary.uint16_serializer),
            item.ImageInt16: b.ImageSerializer(_binary.int16_serializer),
            item.ImageUint32: b.ImageSerializer(_binary.uint32_serializer),
            item.ImageInt32: b.ImageSerializer(_binary.int32_serializer),
            item.ImageFloat: b.ImageSerializer(_binary.float32_serializer),
            item.ImageDouble: b.ImageSerializer(_binary.float64_serializer),
            item.ImageComplexFloat: b.ImageSerializer(_binary.complexfloat32_serializer),
            item.ImageComplexDouble: b.ImageSerializer(_binary.complexfloat64_serializer),
        })
    return _ITEM_SERIALIZERS


class _SentBytes:
    """The file face mrd's writer needs, over the server's send function (all bytes, counted).
    Between ``hold()`` and ``release()`` the writes are gathered into one send (mrd's codec writes
    each array on its own, an acquisition in about ten pieces)."""

    def __init__(self, send_parts: Callable[[list], None]) -> None:
        self._send_parts = send_parts
        self._held: list | None = None
        self.count = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if self._held is not None:
            self._held.append(view)
        else:
            self._send_parts([view])
        self.count += view.nbytes
        return view.nbytes

    def hold(self) -> None:
        self._held = []

    def release(self) -> None:
        parts, self._held = self._held, None
        if parts:
            self._send_parts(parts)

    def flush(self) -> None:
        pass


class V2Writer:
    """v1 objects written as an MRD v2 stream (the face of ``connection.MessageWriter``).

    The header goes first: the one the module sends (``send_header``), else, at the first item or
    CLOSE, ``reader.header`` (the session's own). Each item is one block, sent at once.
    """

    def __init__(self, send_parts: Callable[[list], None], reader: V2Reader | None = None) -> None:
        self._out = _SentBytes(send_parts)
        self._reader = reader
        self._lock = threading.Lock()
        self._mrd: mrd.BinaryMrdWriter | None = None
        self._closed = False

    @property
    def bytes_written(self) -> int:
        return self._out.count

    def _writer(self, header: mrd.Header | None = None) -> mrd.BinaryMrdWriter:
        """mrd's writer, the header written (``header``, else the session's; none when the input had
        none: v2's header is optional)."""
        if self._mrd is None:
            if header is None and self._reader is not None:
                header = self._reader.header
            self._mrd = mrd.BinaryMrdWriter(self._out)
            self._mrd.write_header(header)
        return self._mrd

    def _write_item(self, obj: Any) -> None:
        with self._lock:
            if self._closed:
                raise ProtocolError("the MRD v2 stream has ended; nothing more can be sent")
            writer = self._writer()
            if type(obj) is ismrmrd.Acquisition:
                self._write_acquisition(writer, bytes(obj._head), obj.data, obj.traj)
                return
            item = convert.item_to_v2(obj)
            serializer = _item_serializers().get(type(item))
            self._out.hold()
            try:
                if serializer is None:
                    writer.write_data([item])
                else:  # what write_data([item]) writes, without building mrd's serializers anew for each call
                    writer._stream.write_unsigned_varint(1)  # a block of one item (leaves room for its union index)
                    writer._stream.write_byte_no_check(item.index)
                    serializer.write(writer._stream, item.value)
                writer._stream.flush()
            finally:
                self._out.release()

    def _write_acquisition(self, writer: mrd.BinaryMrdWriter, head: Any, data: Any, traj: Any) -> None:
        """An acquisition block, encoded by ``_acquisition_codec`` (the bytes mrd's serializer writes for
        ``convert.item_to_v2``'s item), sent in one gathered write after what mrd's writer holds."""
        parts = _acquisition_codec.acquisition_parts(head, data, traj)
        self._out.hold()
        try:
            writer._stream.flush()
            for part in parts:
                self._out.write(part)
        finally:
            self._out.release()

    def send_header(self, xml: str | mrd.Header) -> None:
        """The header of the output: the session's own v2 header (the stream-mode echo), else ``xml``
        (ISMRMRD XML text, or a v2 header as it is)."""
        with self._lock:
            if self._mrd is not None:
                log.warning("MRD v2: a second header cannot be written; ignored")
                return
            own = self._reader.header if self._reader is not None else None
            if own is None:
                own = xml if isinstance(xml, mrd.Header) else convert.header_from_xml(xml)
            self._writer(own)._stream.flush()

    def send_image(self, image: Any) -> None:
        self._write_item(image)

    def send_acquisition(self, acquisition: Any) -> None:
        self._write_item(acquisition)

    def send_acquisition_parts(self, head: bytes | memoryview, traj: Any, data: Any) -> None:
        """An acquisition from its packed v1 header and arrays (``mrdfile.send_messages``)."""
        head = bytes(head)
        shape = _acquisition_codec.v1_shapes(head)
        if (getattr(data, "shape", None) == shape[0] and getattr(traj, "shape", None) == shape[1]
                and data.dtype == np.complex64 and traj.dtype == np.float32):
            with self._lock:
                if self._closed:
                    raise ProtocolError("the MRD v2 stream has ended; nothing more can be sent")
                self._write_acquisition(self._writer(), head, data, traj)
            return
        acq = ismrmrd.Acquisition(ismrmrd.AcquisitionHeader.from_buffer_copy(head))
        if acq.traj.size:
            acq.traj[...] = traj
        acq.data[...] = data
        self._write_item(acq)

    def send_waveform(self, waveform: Any) -> None:
        self._write_item(waveform)

    def send_text(self, text: str) -> None:
        log.info("Text (MRD v2 has no text message): %s", text)

    def send_config_file(self, name: str) -> None:
        log.debug("MRD v2 has no configuration message; '%s' not sent", name)

    def send_config_text(self, text: str) -> None:
        log.debug("MRD v2 has no configuration message; %d characters not sent", len(text))

    def send_ndarray(self, array: Any) -> None:
        raise ProtocolError("MRD v2 streams carry no NDArray message")

    def send_close(self) -> None:
        """End the stream (header first if none was written); later calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            writer = self._writer()
            if writer._state == 2:  # header written, no data block yet: an empty stream
                writer.write_data([])
            writer.close()
