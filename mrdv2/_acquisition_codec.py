"""The MRD v2 Acquisition stream item, read straight into an ``ismrmrd.Acquisition`` and written
straight from a v1 header and arrays: the one hot item type of a v2 session.

Why: mrd-python's generic codec reads an acquisition field by field (one Python serializer
object per field, about 70 varints, each a method call or two), builds an ``mrd.Acquisition``,
and ``convert.acquisition_to_v1`` then walks that object again; writing is the same in reverse.
For a 32-coil, 256-sample acquisition (64 KiB of samples) mrd's path took 58 µs to read (into an
``ismrmrd.Acquisition``) and 34 µs to write (from one) on the 2-core bench VM, and a v2 session ran at
0.52-0.66 of the v1 ingest rate (bench/bench_core.py, figure (d)); this codec takes 14 µs and 6 µs, and
the ratio was 0.57-0.77 over three runs on the same, busy, VM (bench/RESULTS.md).

The bytes (yardl binary, mrd 2.1 schema; ``mrd/binary.py`` AcquisitionSerializer): inside a
stream block (varint item count, then per item its union index as one byte, 0 = Acquisition):

====================  ========================================================================
head.flags            unsigned varint (uint64)
head.idx              9 optional uint32 (kspace_encode_step_1, kspace_encode_step_2, average,
                      slice, contrast, phase, repetition, set, segment), then ``user``: a vector
                      of uint32.  An optional is one byte (0 = absent, anything else = present)
                      followed, when present, by its value; a vector is its length as an
                      unsigned varint, then the elements.
measurement_uid       unsigned varint
scan_counter,         optional uint32 each
acquisition_time_stamp
physiology_time_stamp vector of uint32
channel_order         vector of uint32
discard_pre, discard_post, center_sample, encoding_space_ref: optional uint32 each
sample_time_us        optional float32 (4 bytes little-endian)
position, read_dir, phase_dir, slice_dir, patient_table_position: 3 float32 each, 60 raw bytes
user_int              vector of int32, zigzag varints
user_float            vector of float32 (4 bytes each)
data                  2 unsigned varints (coils, samples), then coils x samples complex64
trajectory            2 unsigned varints (dims, samples), then dims x samples float32
====================  ========================================================================

The v1 header is the 340-byte packed ``ismrmrd.AcquisitionHeader``, packed here with one struct
(``_V1``); the mapping rules are ``convert.acquisition_to_v1``/``acquisition_to_v2``'s
(docs/protocol.md §11): None becomes 0, short lists are padded with zeros, ``channel_order`` ↔
``channel_mask``, the trajectory is transposed.  The five direction vectors, ``sample_time_us``
and ``user_float`` are copied as raw bytes when read (mrd's path turns them into Python floats
and back, which is the same except that it quiets a signalling NaN).

Reading is optimistic: the header and the data shape are parsed from the bytes already in the
input buffer, and committed only when all of it was there and fits v1; when the buffer runs
short it is refilled (at least one more byte, never more than the item needs, so a sender that
keeps its side open is not waited for) and the parse starts again.  Anything else that is not
the plain case -- a value outside its v1 type, a list longer than the v1 array, a varint longer
than 10 bytes, a header larger than the buffer -- goes to mrd's own serializer and
``convert.acquisition_to_v1`` from the item's first byte, so errors and their messages are
exactly those of the generic path.  The samples are read with the stream's ``read_bytearray``
(checked against the reader's limit before allocation, one copy) and viewed with
``numpy.frombuffer``.
"""
from __future__ import annotations

import struct
from typing import Any

import ismrmrd
import mrd
import numpy as np

from mrdv2 import convert

# The whole v1 header in one struct: version, flags, measurement_uid, scan_counter,
# acquisition_time_stamp, physiology_time_stamp[3], number_of_samples, available_channels,
# active_channels, channel_mask (128 bytes), discard_pre, discard_post, center_sample,
# encoding_space_ref, trajectory_dimensions, sample_time_us, 15 direction floats (60 bytes),
# idx (9 counters + 8 user), user_int[8], user_float[8].
_V1 = struct.Struct("<HQIII3IHHH128sHHHHH4s60s9H8H8i32s")
_V1_UNPACK = struct.Struct("<HQIII3IHHH128sHHHHHf60s9H8H8i8f")  # floats for the writer: as mrd does
_TD_OFFSET = 176  # trajectory_dimensions
if _V1.size != 340 or _V1_UNPACK.size != 340:
    raise ImportError("the MRD v1 acquisition header layout is not 340 bytes")
_U16 = struct.Struct("<H")
_F32 = struct.Struct("<f")
_MAX_CHANNEL = 64 * 16
_ZERO4 = bytes(4)
_ZERO_MASK = bytes(128)
_ZEROS = (0,) * 8
_MASK_CACHE: dict[bytes, bytes] = {}   # channel_order varint bytes -> v1 mask
_ORDER_CACHE: dict[bytes, bytes] = {}  # v1 mask -> channel_order vector bytes
_CACHE_LIMIT = 4096
_C64 = np.dtype("<c8")
_F4 = np.dtype("<f4")


class _Slow(Exception):
    """Not the plain case: read this item with mrd's serializer instead."""


def _varint_tail(buf: bytes, pos: int, first: int) -> tuple[int, int]:
    """The rest of a varint whose first byte ``first`` (>= 0x80) was at ``pos - 1``."""
    result = first & 0x7F
    shift = 7
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Slow  # mrd's path (through _PatientInputStream) refuses it


def _varints(buf: bytes, pos: int, n: int) -> tuple[list[int], int]:
    end = pos + n
    seg = buf[pos:end]
    if len(seg) == n and seg.isascii():
        return list(seg), end
    out = []
    for _ in range(n):
        b = buf[pos]
        pos += 1
        if b >= 0x80:
            b, pos = _varint_tail(buf, pos, b)
        out.append(b)
    return out, pos


def _optional_varints(buf: bytes, pos: int, n: int) -> tuple[list[int], int]:
    """``n`` optional unsigned varints (a presence byte, then the value when present); 0 when absent."""
    out = []
    for _ in range(n):
        has = buf[pos]
        pos += 1
        if has:
            b = buf[pos]
            pos += 1
            if b >= 0x80:
                b, pos = _varint_tail(buf, pos, b)
            out.append(b)
        else:
            out.append(0)
    return out, pos


def _parse(buf: bytes) -> tuple[tuple, int, int, int]:
    """Header and data shape from ``buf`` (the item's bytes after its union index): the v1 header
    fields (``_V1`` order, trajectory_dimensions 0), bytes used, coils, samples.  IndexError when
    ``buf`` ends first, _Slow when the generic path must read it."""
    b = buf[0]
    p = 1
    if b >= 0x80:
        b, p = _varint_tail(buf, p, b)
    flags = b
    counters, p = _optional_varints(buf, p, 9)
    n = buf[p]
    p += 1
    if n >= 0x80 or n > 8:
        raise _Slow
    user, p = _varints(buf, p, n)
    if n < 8:
        user += _ZEROS[n:]
    b = buf[p]
    p += 1
    if b >= 0x80:
        b, p = _varint_tail(buf, p, b)
    uid = b
    opt2, p = _optional_varints(buf, p, 2)
    n = buf[p]
    p += 1
    if n > 3:
        raise _Slow
    phys, p = _varints(buf, p, n)
    if n < 3:
        phys += _ZEROS[:3 - n]
    n = buf[p]
    p += 1
    if n >= 0x80:
        n, p = _varint_tail(buf, p, n)
    start = p
    seg = buf[p:p + n]
    if len(seg) == n and seg.isascii():  # every channel number < 128: one byte each
        p += n
        mask = _MASK_CACHE.get(seg)
        if mask is None:
            mask = convert._order_to_mask(list(seg))
            if len(_MASK_CACHE) < _CACHE_LIMIT:
                _MASK_CACHE[seg] = mask
    else:
        order, p = _varints(buf, start, n)
        if n and max(order) >= _MAX_CHANNEL:
            raise _Slow
        mask = convert._order_to_mask(order)
    opt4, p = _optional_varints(buf, p, 4)
    has = buf[p]
    p += 1
    if has:
        sample_time = buf[p:p + 4]
        p += 4
    else:
        sample_time = _ZERO4
    vectors = buf[p:p + 60]
    p += 60
    n = buf[p]
    p += 1
    if n > 8:
        raise _Slow
    user_int, p = _varints(buf, p, n)
    user_int = [(v >> 1) ^ -(v & 1) for v in user_int]
    if n < 8:
        user_int += _ZEROS[n:]
    n = buf[p]
    p += 1
    if n > 8:
        raise _Slow
    user_float = buf[p:p + 4 * n]
    p += 4 * n
    if n < 8:
        user_float += bytes(32 - 4 * n)
    nc = buf[p]
    p += 1
    if nc >= 0x80:
        nc, p = _varint_tail(buf, p, nc)
    ns = buf[p]
    p += 1
    if ns >= 0x80:
        ns, p = _varint_tail(buf, p, ns)
    if p > len(buf):  # a slice ran past the end (slices do not raise)
        raise IndexError
    fields = (1, flags, uid, opt2[0], opt2[1], *phys, ns, nc, nc, mask, *opt4, 0, sample_time, vectors,
              *counters, *user, *user_int, user_float)
    return fields, p, nc, ns


_GENERIC: list[Any] = []
_WINDOW = 4096  # bytes parsed at first: a header with a few hundred channels


def _read_generic(stream: Any) -> ismrmrd.Acquisition:
    if not _GENERIC:
        _GENERIC.append(mrd.binary.AcquisitionSerializer())
    return convert.acquisition_to_v1(_GENERIC[0].read(stream))


def read_acquisition(stream: Any) -> ismrmrd.Acquisition:
    """One Acquisition item (after its union index) from mrd's CodedInputStream ``stream``
    (a ``stream._PatientInputStream``), as ``convert.acquisition_to_v1`` would give it."""
    window = _WINDOW
    while True:
        off = stream._offset
        avail = stream._last_read_count - off
        n = avail if avail <= window else window
        buf = bytes(stream._view[off:off + n])
        try:
            fields, used, nc, ns = _parse(buf)
            head = ismrmrd.AcquisitionHeader()
            _V1.pack_into(head, 0, *fields)
            break
        except IndexError:
            if n < avail:
                window = avail
                continue
            if avail >= len(stream._buffer):
                return _read_generic(stream)
            stream._fill_buffer(avail + 1)
        except (_Slow, struct.error, OverflowError, ValueError):
            return _read_generic(stream)
    stream._offset = off + used
    data = np.frombuffer(stream.read_bytearray(nc * ns * 8), dtype=_C64).reshape(nc, ns)
    td = stream.read_unsigned_varint()
    ts = stream.read_unsigned_varint()
    traj = np.frombuffer(stream.read_bytearray(td * ts * 4), dtype=_F4).reshape(td, ts)
    if traj.size:
        if ts != ns:
            raise ValueError(f"acquisition trajectory has shape {traj.shape}; expected [dims, {ns}]")
        if td > 0xFFFF:
            raise ValueError(f"acquisition: trajectory_dimensions = {td} does not fit the MRD v1 type (H)")
        _U16.pack_into(head, _TD_OFFSET, td)
        traj_v1 = traj.reshape(ns, 1) if td == 1 else np.ascontiguousarray(traj.T)
    else:
        traj_v1 = np.zeros((ns, 0), dtype=np.float32)
    return ismrmrd.Acquisition(head, data, traj_v1)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

_BYTE = [bytes((i,)) for i in range(128)]


def varint(value: int) -> bytes:
    """The unsigned LEB128 varint of yardl's binary format."""
    if value < 0x80:
        return _BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_VARINT = [varint(i) for i in range(1 << 14)]  # the one- and two-byte varints


def _varint_bytes(values: list[int]) -> bytes:
    if max(values) < 0x80:
        return bytes(values)
    table = _VARINT
    return b"".join([table[v] if v < 16384 else varint(v) for v in values])


def _order_bytes(mask: bytes) -> bytes:
    """The channel_order vector (length, then the channel numbers) of a v1 channel mask."""
    enc = _ORDER_CACHE.get(mask)
    if enc is None:
        order = convert._mask_to_order(mask)
        enc = varint(len(order)) + (_varint_bytes(order) if order else b"")
        if len(_ORDER_CACHE) < _CACHE_LIMIT:
            _ORDER_CACHE[mask] = enc
    return enc


_F8 = struct.Struct("<8f")


def acquisition_parts(head: Any, data: np.ndarray, traj: np.ndarray) -> list:
    """The bytes of a one-item stream block holding the Acquisition of the packed v1 header ``head``
    with ``data`` ``[coils, samples]`` and ``traj`` ``[samples, dims]`` (v1 layout, already of the
    header's shape): what mrd's writer writes for ``StreamItem.Acquisition(acquisition_to_v2(acq))``.
    A list of buffers to send in order."""
    v = _V1_UNPACK.unpack(head)
    # v: 0 version, 1 flags, 2 uid, 3 scan, 4 ats, 5-7 phys, 8 ns, 9 avail, 10 nc, 11 mask,
    # 12 dpre, 13 dpost, 14 cs, 15 esr, 16 td, 17 sample_time, 18 vectors, 19-27 idx, 28-35 idx.user,
    # 36-43 user_int, 44-51 user_float
    ints = [1, 0, v[1],
            1, v[19], 1, v[20], 1, v[21], 1, v[22], 1, v[23], 1, v[24], 1, v[25], 1, v[26], 1, v[27],
            8, *v[28:36], v[2], 1, v[3], 1, v[4], 3, v[5], v[6], v[7]]
    ints2 = [1, v[12], 1, v[13], 1, v[14], 1, v[15], 1]
    zz = [(x << 1) ^ (x >> 31) for x in v[36:44]]
    nc, ns = data.shape
    td = traj.shape[1]
    pieces = b"".join((
        _varint_bytes(ints), _order_bytes(v[11]), _varint_bytes(ints2), _F32.pack(v[17]), v[18],
        b"\x08", _varint_bytes(zz), b"\x08", _F8.pack(*v[44:52]),
        _varint_bytes([nc, ns])))
    tail = _varint_bytes([td, ns])
    data = np.ascontiguousarray(data, dtype=np.complex64)
    if td:
        traj = np.ascontiguousarray(traj.T, dtype=np.float32)
        return [pieces, data.data, tail, traj.data]
    return [pieces, data.data, tail]


_SHAPE = struct.Struct("<34xH2xH128x8xH")  # number_of_samples, active_channels, trajectory_dimensions


def v1_shapes(head: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    """The data ``(coils, samples)`` and trajectory ``(samples, dims)`` shapes of a packed v1 header."""
    ns, nc, td = _SHAPE.unpack_from(head)
    return (nc, ns), (ns, td)
