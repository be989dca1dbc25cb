"""Conversion between MRD v1 objects (``ismrmrd``) and MRD v2 objects (``mrd``), both ways.

Headers: ``header_to_xml``/``header_from_xml`` (and ``header_to_xsd``/``header_from_xsd`` for an
already parsed ``ismrmrd.xsd.ismrmrdHeader``) walk the two models in parallel.  The v2 header
classes mirror the XSD types: a v2 field and an XSD field are the same field when their names agree
after dropping underscores and case (``field_of_view_mm`` = ``fieldOfView_mm``, ``t_r`` = ``TR``,
``h1resonance_frequency_hz`` = ``H1resonanceFrequency_Hz``); the value conversions come from the
type annotations of both sides (optional, list, nested type, enum, date, time, base64).  The plan
is built once, on first use, and refuses to build when a field of either side has no partner, so
a new schema version cannot lose a field silently.

Acquisitions, waveforms and images: the v1 fixed headers are packed/unpacked with one precompiled
``struct`` each (the wire layouts of docs/protocol.md §5), the v2 objects are read and built by
direct attribute access, and the arrays are copied once with numpy.

The rules (docs/protocol.md §11):

* v1 → v2 writes every field, zeros included (v1 cannot say "absent"); fixed-length v1 arrays
  become full-length lists (``physiology_time_stamp`` 3, ``user_int``/``user_float``/``idx.user``
  8).  ``version`` and ``available_channels`` have no v2 field and are dropped.
* v2 → v1: ``None`` becomes 0, lists are padded with zeros; a list longer than the v1 array, a
  value outside the v1 integer type (most v1 counters are uint16) or an inconsistent shape raises
  ``ValueError`` instead of losing data.  ``version`` is 1, ``available_channels`` = the number of
  coils.
* ``channel_order`` ↔ ``channel_mask``: the mask has bit *c* set for every channel number *c* in
  the list; v1 → v2 lists the set bits in ascending order (an all-zero mask gives ``[]``).  The
  order of the list and repeated numbers are not representable in v1.
* Flags are the same bits on both sides (v1 flag *n* is bit *n* − 1, which is the value of the
  v2 ``AcquisitionFlags``/``ImageFlags`` member); bits without a v2 name are kept.
* Data: acquisition ``[coils, samples]`` on both sides; trajectory ``[samples, dims]`` in v1,
  ``[dims, samples]`` in v2 (transposed); image ``[channel, z, y, x]`` on both sides; waveform
  ``[channels, samples]`` uint32.
* Image meta: v1 values (strings) become ``ImageMetaValue.String`` (lossless); v2 values are
  written as text: strings as they are, integers in decimal, floats as ``repr`` (the shortest
  text that reads back to the same double).
"""
from __future__ import annotations

import base64
import ctypes
import dataclasses
import datetime
import enum
import struct
import types
import typing
from typing import Any, Callable

import ismrmrd
import ismrmrd.xsd
import mrd
import numpy as np
from xsdata.models.datatype import XmlDate, XmlTime

from connection import header_xml, parse_header_xml

__all__ = [
    "header_to_xml", "header_from_xml", "header_to_xsd", "header_from_xsd",
    "acquisition_to_v1", "acquisition_to_v2", "waveform_to_v1", "waveform_to_v2",
    "image_to_v1", "image_to_v2", "meta_to_v1", "meta_to_v2", "item_to_v1", "item_to_v2",
]

# --------------------------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------------------------

_NS_PER_S = 1_000_000_000

# v2 enum members that the XSD cannot express; they are written as an absent (optional) element.
_V2_ONLY_MEMBERS: set[enum.Enum] = {mrd.CalibrationMode.NOACCELERATION}

Converter = Callable[[Any], Any]


def _key(name: str) -> str:
    """The name both models agree on: no underscores, lower case."""
    return name.replace("_", "").lower()


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _time_to_xsd(t: mrd.yardl_types.Time) -> XmlTime:
    ns = int(t.numpy_value.astype(np.int64))
    seconds, fraction = divmod(ns, _NS_PER_S)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return XmlTime(hour, minute, second, fraction)


def _time_to_v2(t: XmlTime) -> mrd.yardl_types.Time:
    # A time-zone offset has no place in v2 (a wall-clock time); the clock reading is kept.
    return mrd.yardl_types.Time(((t.hour * 60 + t.minute) * 60 + t.second) * _NS_PER_S
                                + t.fractional_second)


def _base64_to_xsd(text: str) -> bytes:
    return base64.b64decode(text)


def _base64_to_v2(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _enum_converters(v2_enum: type[enum.Enum], x_enum: Any, where: str) -> tuple[Converter, Converter]:
    """Members are paired by name (v2) and value (XSD), both without underscores, upper case."""
    if x_enum is str:  # patientGender: a pattern-restricted string in the XSD
        to_x_map: dict[Any, Any] = {m: m.name for m in v2_enum}
    else:
        by_key = {_key(m.value): m for m in x_enum}
        to_x_map = {m: by_key[_key(m.name)] for m in v2_enum if _key(m.name) in by_key}
        missing = set(x_enum) - set(to_x_map.values())
        unmatched = set(v2_enum) - set(to_x_map) - _V2_ONLY_MEMBERS
        if missing or unmatched:
            raise RuntimeError(f"{where}: enum members without a partner: {missing | unmatched}")
    to_v2_map = {x: v for v, x in to_x_map.items()}

    def to_x(value: Any) -> Any:
        try:
            return to_x_map[value]
        except KeyError:
            if value in _V2_ONLY_MEMBERS:
                return None
            raise ValueError(f"{where}: {value!r} has no ISMRMRD XML value") from None

    def to_v2(value: Any) -> Any:
        try:
            return to_v2_map[value]
        except KeyError:
            raise ValueError(f"{where}: {value!r} has no MRD v2 value") from None

    return to_x, to_v2


def _identity(value: Any) -> Any:
    return value


_LEAVES: dict[tuple[Any, Any], tuple[Converter, Converter]] = {
    (int, int): (int, int),
    (float, float): (float, float),
    (str, str): (_identity, _identity),
    (str, bytes): (_base64_to_xsd, _base64_to_v2),
    (datetime.date, XmlDate): (XmlDate.from_date, XmlDate.to_date),
    (mrd.yardl_types.Time, XmlTime): (_time_to_xsd, _time_to_v2),
}


class _Plan:
    """For one (v2 class, XSD class) pair: the paired fields and their value converters."""

    def __init__(self, v2_cls: type, x_cls: type) -> None:
        self.v2_cls, self.x_cls = v2_cls, x_cls
        self.fields: list[tuple[str, str, Converter, Converter]] = []

    def to_xsd(self, value: Any) -> Any:
        return self.x_cls(**{xn: to_x(getattr(value, vn)) for vn, xn, to_x, _ in self.fields})

    def to_v2(self, value: Any) -> Any:
        return self.v2_cls(**{vn: to_v2(getattr(value, xn)) for vn, xn, _, to_v2 in self.fields})


_PLANS: dict[type, _Plan] = {}


def _plan(v2_cls: type, x_cls: type) -> _Plan:
    plan = _PLANS.get(v2_cls)
    if plan is not None:
        return plan
    plan = _Plan(v2_cls, x_cls)
    v2_hints = typing.get_type_hints(v2_cls)
    x_hints = typing.get_type_hints(x_cls)
    x_names = {_key(f.name): f.name for f in dataclasses.fields(x_cls)}
    if len(x_names) != len(dataclasses.fields(x_cls)):
        raise RuntimeError(f"{x_cls.__name__}: field names collide after normalisation")
    for v2_name, v2_type in v2_hints.items():
        x_name = x_names.pop(_key(v2_name), None)
        if x_name is None:
            raise RuntimeError(f"{v2_cls.__name__}.{v2_name} has no field in {x_cls.__name__}")
        where = f"{v2_cls.__name__}.{v2_name}"
        to_x, to_v2 = _converters(v2_type, x_hints[x_name], where)
        plan.fields.append((v2_name, x_name, to_x, to_v2))
    if x_names:
        raise RuntimeError(f"{x_cls.__name__} fields without a v2 partner: {sorted(x_names.values())}")
    _PLANS[v2_cls] = plan
    return plan


def _converters(v2_type: Any, x_type: Any, where: str) -> tuple[Converter, Converter]:
    v2_inner, v2_optional = _unwrap_optional(v2_type)
    x_inner, x_optional = _unwrap_optional(x_type)
    if v2_optional or x_optional:
        to_x, to_v2 = _converters(v2_inner, x_inner, where)

        def opt_to_x(value: Any) -> Any:
            result = None if value is None else to_x(value)
            if result is None and not x_optional:
                raise ValueError(f"{where} is required in ISMRMRD XML")
            return result

        def opt_to_v2(value: Any) -> Any:
            if value is None:
                if not v2_optional:
                    raise ValueError(f"{where} is required in MRD v2")
                return None
            return to_v2(value)

        return opt_to_x, opt_to_v2
    if typing.get_origin(v2_type) is list:
        if typing.get_origin(x_type) is not list:
            raise RuntimeError(f"{where}: list in v2, {x_type} in the XSD")
        item_to_x, item_to_v2 = _converters(typing.get_args(v2_type)[0], typing.get_args(x_type)[0], where)
        return (lambda values: [item_to_x(v) for v in values]), (lambda values: [item_to_v2(v) for v in values])
    if isinstance(v2_type, type) and issubclass(v2_type, enum.Enum):
        return _enum_converters(v2_type, x_type, where)
    if dataclasses.is_dataclass(x_type):
        plan = _plan(v2_type, x_type)
        return plan.to_xsd, plan.to_v2
    try:
        return _LEAVES[(v2_type, x_type)]
    except KeyError:
        raise RuntimeError(f"{where}: no conversion between {v2_type} and {x_type}") from None


def header_plan() -> _Plan:
    """The plan of the top-level header (built on first use); tests walk it for coverage."""
    return _plan(mrd.Header, ismrmrd.xsd.ismrmrdHeader)


def header_to_xsd(header: mrd.Header) -> ismrmrd.xsd.ismrmrdHeader:
    """The ``ismrmrdHeader`` of a v2 header (ValueError for a value the XSD cannot hold)."""
    return header_plan().to_xsd(header)


def header_from_xsd(header: ismrmrd.xsd.ismrmrdHeader) -> mrd.Header:
    """The v2 header of a parsed ISMRMRD XML header."""
    return header_plan().to_v2(header)


def header_to_xml(header: mrd.Header) -> str:
    """The ISMRMRD XML text (``connection.header_xml``, declared UTF-8) of a v2 header."""
    return header_xml(header_to_xsd(header), encoding="utf-8")


def header_from_xml(xml: str) -> mrd.Header:
    """The v2 header of an ISMRMRD XML text (``connection.parse_header_xml``); ValueError when it is not
    valid ISMRMRD XML."""
    try:
        parsed = parse_header_xml(xml)
    except Exception as exc:  # xsdata raises several unrelated types
        raise ValueError(f"not a valid ISMRMRD XML header: {exc}") from exc
    return header_from_xsd(parsed)


# --------------------------------------------------------------------------------------------
# Acquisitions
# --------------------------------------------------------------------------------------------

# The 340-byte packed v1 AcquisitionHeader in three pieces: up to the channel mask, the mask (16
# little-endian uint64 = one 1024-bit little-endian integer), and the rest.
_ACQ_HEAD = struct.Struct("<HQIII3IHHH")           # bytes 0..40
_ACQ_MASK_OFFSET, _ACQ_MASK_BYTES = 40, 128        # bytes 40..168
_ACQ_TAIL = struct.Struct("<HHHHHf15f9H8H8i8f")    # bytes 168..340
_ACQ_VECTORS_OFFSET = 182                          # position, read, phase, slice, table: 15 float32
_MAX_CHANNEL = 64 * 16
if _ACQ_HEAD.size + _ACQ_MASK_BYTES + _ACQ_TAIL.size != ctypes.sizeof(ismrmrd.AcquisitionHeader):
    raise ImportError("ismrmrd.AcquisitionHeader is not the 340-byte MRD v1 layout")
_ZERO_MASK = bytes(_ACQ_MASK_BYTES)
_Z8 = (0,) * 8
_F8 = (0.0,) * 8
_V1_VERSION = 1

_AcqFlags = mrd.AcquisitionFlags
_ImgFlags = mrd.ImageFlags
_ImageType = mrd.ImageType


def _mask_to_order(mask_bytes: bytes) -> list[int]:
    if mask_bytes == _ZERO_MASK:
        return []
    mask = int.from_bytes(mask_bytes, "little")
    n = mask.bit_length()
    if mask == (1 << n) - 1:  # channels 0..n-1, the usual case
        return list(range(n))
    order = []
    while mask:
        low = mask & -mask
        order.append(low.bit_length() - 1)
        mask ^= low
    return order


def _order_to_mask(order: list[int]) -> bytes:
    if len(order) == 0:
        return _ZERO_MASK
    if min(order) < 0 or max(order) >= _MAX_CHANNEL:
        raise ValueError(f"channel_order holds channel numbers outside 0..{_MAX_CHANNEL - 1}, "
                         "which the v1 channel_mask cannot hold")
    mask = 0
    for c in order:
        mask |= 1 << int(c)  # a numpy integer would overflow past bit 63
    return mask.to_bytes(_ACQ_MASK_BYTES, "little")


def _fixed(values: list, length: int, zeros: tuple, what: str) -> list:
    n = len(values)
    if n == length:
        return values
    if n > length:
        raise ValueError(f"{what} has {n} values; MRD v1 holds {length}")
    return list(values) + list(zeros[:length - n])


def _vec3(value: Any, what: str) -> list:
    vals = value.tolist() if isinstance(value, np.ndarray) else list(value)
    if len(vals) != 3:
        raise ValueError(f"{what} has {len(vals)} values; MRD v1 holds 3")
    return vals


def _z(value: Any) -> Any:
    return 0 if value is None else value


def _struct_failure(what: str, fields: list[tuple[str, str, Any]], exc: Exception) -> ValueError:
    """Name the first field that does not fit its v1 type (only run after a failed pack)."""
    for name, fmt, value in fields:
        try:
            struct.pack("<" + fmt, value)
        except (struct.error, TypeError, OverflowError):
            return ValueError(f"{what}: {name} = {value!r} does not fit the MRD v1 type ({fmt})")
    return ValueError(f"{what} does not fit MRD v1: {exc}")


def _acq_fields(h: mrd.AcquisitionHeader, nc: int, ns: int, td: int) -> list[tuple[str, str, Any]]:
    idx = h.idx
    return ([("flags", "Q", int(h.flags)), ("measurement_uid", "I", h.measurement_uid),
             ("scan_counter", "I", _z(h.scan_counter)),
             ("acquisition_time_stamp", "I", _z(h.acquisition_time_stamp))]
            + [("physiology_time_stamp", "I", v) for v in h.physiology_time_stamp]
            + [("number_of_samples", "H", ns), ("active_channels", "H", nc),
               ("discard_pre", "H", _z(h.discard_pre)), ("discard_post", "H", _z(h.discard_post)),
               ("center_sample", "H", _z(h.center_sample)),
               ("encoding_space_ref", "H", _z(h.encoding_space_ref)),
               ("trajectory_dimensions", "H", td), ("sample_time_us", "f", _z(h.sample_time_us))]
            + [(f"idx.{name}", "H", _z(getattr(idx, name))) for name in
               ("kspace_encode_step_1", "kspace_encode_step_2", "average", "slice", "contrast",
                "phase", "repetition", "set", "segment")]
            + [("idx.user", "H", v) for v in idx.user]
            + [("user_int", "i", v) for v in h.user_int]
            + [("user_float", "f", v) for v in h.user_float])


def acquisition_to_v1(acq: mrd.Acquisition) -> ismrmrd.Acquisition:
    """An ``ismrmrd.Acquisition`` with the header fields, data and trajectory of a v2 acquisition.

    ValueError when the v2 acquisition cannot be represented: a list longer than the v1 array, a
    value outside its v1 type, data that is not ``[coils, samples]``, a trajectory whose sample
    count differs from the data's.
    """
    h = acq.head
    data = acq.data
    if data.ndim != 2:
        raise ValueError(f"acquisition data has shape {data.shape}; expected [coils, samples]")
    nc, ns = data.shape
    traj = acq.trajectory
    if traj.size:
        if traj.ndim != 2 or traj.shape[1] != ns:
            raise ValueError(f"acquisition trajectory has shape {traj.shape}; expected [dims, {ns}]")
        td = traj.shape[0]
        traj_v1 = np.array(traj.T, dtype=np.float32, order="C")
    else:
        td = 0
        traj_v1 = np.zeros((ns, 0), dtype=np.float32)
    idx = h.idx
    phys = _fixed(h.physiology_time_stamp, 3, _Z8, "physiology_time_stamp")
    counters_user = _fixed(idx.user, 8, _Z8, "idx.user")
    user_int = _fixed(h.user_int, 8, _Z8, "user_int")
    user_float = _fixed(h.user_float, 8, _F8, "user_float")
    try:
        head_bytes = b"".join((
            _ACQ_HEAD.pack(_V1_VERSION, int(h.flags), h.measurement_uid, _z(h.scan_counter),
                           _z(h.acquisition_time_stamp), *phys, ns, nc, nc),
            _order_to_mask(h.channel_order),
            _ACQ_TAIL.pack(_z(h.discard_pre), _z(h.discard_post), _z(h.center_sample),
                           _z(h.encoding_space_ref), td, _z(h.sample_time_us),
                           *_vec3(h.position, "position"), *_vec3(h.read_dir, "read_dir"),
                           *_vec3(h.phase_dir, "phase_dir"), *_vec3(h.slice_dir, "slice_dir"),
                           *_vec3(h.patient_table_position, "patient_table_position"),
                           _z(idx.kspace_encode_step_1), _z(idx.kspace_encode_step_2), _z(idx.average),
                           _z(idx.slice), _z(idx.contrast), _z(idx.phase), _z(idx.repetition),
                           _z(idx.set), _z(idx.segment), *counters_user, *user_int, *user_float),
        ))
    except (struct.error, OverflowError) as exc:
        raise _struct_failure("acquisition", _acq_fields(h, nc, ns, td), exc) from None
    head = ismrmrd.AcquisitionHeader.from_buffer_copy(head_bytes)
    return ismrmrd.Acquisition(head, np.array(data, dtype=np.complex64, order="C"), traj_v1)


def acquisition_to_v2(acq: ismrmrd.Acquisition) -> mrd.Acquisition:
    """An ``mrd.Acquisition`` with every header field, the data and the trajectory of a v1 one."""
    raw = bytes(acq._head)
    a = _ACQ_HEAD.unpack_from(raw)
    t = _ACQ_TAIL.unpack_from(raw, _ACQ_HEAD.size + _ACQ_MASK_BYTES)
    vectors = np.frombuffer(raw, dtype="<f4", count=15, offset=_ACQ_VECTORS_OFFSET).reshape(5, 3).copy()
    position, read_dir, phase_dir, slice_dir, table = vectors
    return mrd.Acquisition(
        head=mrd.AcquisitionHeader(
            flags=_AcqFlags(a[1]),
            idx=mrd.EncodingCounters(
                kspace_encode_step_1=t[21], kspace_encode_step_2=t[22], average=t[23], slice=t[24],
                contrast=t[25], phase=t[26], repetition=t[27], set=t[28], segment=t[29],
                user=list(t[30:38])),
            measurement_uid=a[2], scan_counter=a[3], acquisition_time_stamp=a[4],
            physiology_time_stamp=list(a[5:8]),
            channel_order=_mask_to_order(raw[_ACQ_MASK_OFFSET:_ACQ_MASK_OFFSET + _ACQ_MASK_BYTES]),
            discard_pre=t[0], discard_post=t[1], center_sample=t[2], encoding_space_ref=t[3],
            sample_time_us=t[5], position=position, read_dir=read_dir, phase_dir=phase_dir,
            slice_dir=slice_dir, patient_table_position=table,
            user_int=list(t[38:46]), user_float=list(t[46:54])),
        data=np.array(acq.data, dtype=np.complex64, order="C"),
        trajectory=np.array(acq.traj.T, dtype=np.float32, order="C"))


# --------------------------------------------------------------------------------------------
# Waveforms
# --------------------------------------------------------------------------------------------

_WAV_HEAD = struct.Struct("<H6xQIIIHHfH2x")  # 40 bytes, naturally aligned (pack 8)
if _WAV_HEAD.size != ctypes.sizeof(ismrmrd.WaveformHeader):
    raise ImportError("ismrmrd.WaveformHeader is not the 40-byte MRD v1 layout")


def waveform_to_v1(w: mrd.Waveform) -> ismrmrd.Waveform:
    """An ``ismrmrd.Waveform`` of a v2 waveform (data ``[channels, samples]`` as uint32)."""
    data = w.data
    if data.ndim != 2:
        raise ValueError(f"waveform data has shape {data.shape}; expected [channels, samples]")
    if data.dtype != np.uint32 and not np.can_cast(data.dtype, np.uint32, "safe"):
        raise ValueError(f"waveform data of {data.dtype} does not fit MRD v1 uint32 samples")
    channels, samples = data.shape
    fields = [("flags", "Q", int(w.flags)), ("measurement_uid", "I", w.measurement_uid),
              ("scan_counter", "I", w.scan_counter), ("time_stamp", "I", w.time_stamp),
              ("number_of_samples", "H", samples), ("channels", "H", channels),
              ("sample_time_us", "f", w.sample_time_us), ("waveform_id", "H", w.waveform_id)]
    try:
        head = _WAV_HEAD.pack(_V1_VERSION, *(value for _, _, value in fields))
    except (struct.error, OverflowError) as exc:
        raise _struct_failure("waveform", fields, exc) from None
    return ismrmrd.Waveform(head, np.asarray(data, dtype=np.uint32))


def waveform_to_v2(w: ismrmrd.Waveform) -> mrd.Waveform:
    """An ``mrd.WaveformUint32`` of a v1 waveform (``version`` is dropped)."""
    _, flags, uid, scan_counter, time_stamp, _, _, sample_time_us, waveform_id = \
        _WAV_HEAD.unpack(bytes(w._head))
    return mrd.Waveform(flags=flags, measurement_uid=uid, scan_counter=scan_counter, time_stamp=time_stamp,
                        sample_time_us=sample_time_us, waveform_id=waveform_id,
                        data=np.array(w.data, dtype=np.uint32, order="C"))


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

_IMG_HEAD = struct.Struct("<HHQI3H3fH15f6HI3IHHH8i8fI")  # 198 bytes, packed
if _IMG_HEAD.size != ctypes.sizeof(ismrmrd.ImageHeader):
    raise ImportError("ismrmrd.ImageHeader is not the 198-byte MRD v1 layout")

# v1 data_type code ↔ numpy pixel type ↔ StreamItem case
_PIXELS: list[tuple[int, type, Any]] = [
    (ismrmrd.DATATYPE_USHORT, np.uint16, mrd.StreamItem.ImageUint16),
    (ismrmrd.DATATYPE_SHORT, np.int16, mrd.StreamItem.ImageInt16),
    (ismrmrd.DATATYPE_UINT, np.uint32, mrd.StreamItem.ImageUint32),
    (ismrmrd.DATATYPE_INT, np.int32, mrd.StreamItem.ImageInt32),
    (ismrmrd.DATATYPE_FLOAT, np.float32, mrd.StreamItem.ImageFloat),
    (ismrmrd.DATATYPE_DOUBLE, np.float64, mrd.StreamItem.ImageDouble),
    (ismrmrd.DATATYPE_CXFLOAT, np.complex64, mrd.StreamItem.ImageComplexFloat),
    (ismrmrd.DATATYPE_CXDOUBLE, np.complex128, mrd.StreamItem.ImageComplexDouble),
]
_V1_PIXEL = {code: np.dtype(t) for code, t, _ in _PIXELS}
_V1_CODE = {np.dtype(t): code for code, t, _ in _PIXELS}
_IMAGE_CASE = {np.dtype(t): case for _, t, case in _PIXELS}
_INT32 = np.iinfo(np.int32)
_MetaString = mrd.ImageMetaValue.String
_MetaInt = mrd.ImageMetaValue.Int64
_MetaFloat = mrd.ImageMetaValue.Float64


def _meta_text(value: Any) -> str:
    if isinstance(value, mrd.yardl_types.UnionCase):
        value = value.value
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise ValueError(f"image meta value {value!r} is not a string, integer or float")
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    raise ValueError(f"image meta value {value!r} is not a string, integer or float")


def meta_to_v1(meta: dict[str, list]) -> ismrmrd.Meta:
    """v2 image meta as an ``ismrmrd.Meta`` (one value: a string; several: a list of strings)."""
    out = ismrmrd.Meta()
    for key, values in meta.items():
        texts = [_meta_text(v) for v in values]
        out[key] = texts[0] if len(texts) == 1 else texts
    return out


def meta_to_v2(meta: dict[str, Any]) -> dict[str, list]:
    """v1 image meta (``ismrmrd.Meta``) as v2 meta: every value an ``ImageMetaValue.String``."""
    out: dict[str, list] = {}
    for key, value in meta.items():
        values = value if isinstance(value, list) else [value]
        out[str(key)] = [_MetaString("" if v is None else v if isinstance(v, str) else str(v)) for v in values]
    return out


def _img_fields(h: mrd.ImageHeader, shape: tuple[int, ...]) -> list[tuple[str, str, Any]]:
    return ([("flags", "Q", int(h.flags)), ("measurement_uid", "I", h.measurement_uid)]
            + [("matrix_size", "H", n) for n in shape[:0:-1]] + [("channels", "H", shape[0])]
            + [(name, "H", _z(getattr(h, name))) for name in
               ("average", "slice", "contrast", "phase", "repetition", "set")]
            + [("acquisition_time_stamp", "I", _z(h.acquisition_time_stamp))]
            + [("physiology_time_stamp", "I", v) for v in h.physiology_time_stamp]
            + [("image_type", "H", h.image_type.value), ("image_index", "H", _z(h.image_index)),
               ("image_series_index", "H", _z(h.image_series_index))]
            + [("user_int", "i", v) for v in h.user_int]
            + [("user_float", "f", v) for v in h.user_float])


def image_to_v1(img: mrd.Image) -> ismrmrd.Image:
    """An ``ismrmrd.Image`` of a v2 image: header fields, pixels (``[channel, z, y, x]``) and meta.

    ValueError for a pixel type v1 has no code for, data that is not 4-D, lists longer than the
    v1 arrays or values outside their v1 types.
    """
    h = img.head
    data = img.data
    if data.ndim != 4:
        raise ValueError(f"image data has shape {data.shape}; expected [channel, z, y, x]")
    code = _V1_CODE.get(np.dtype(data.dtype.type))
    if code is None:
        raise ValueError(f"image pixels of {data.dtype} have no MRD v1 data type")
    channels, nz, ny, nx = data.shape
    attributes = meta_to_v1(img.meta).serialize() if img.meta else ""
    phys = _fixed(h.physiology_time_stamp, 3, _Z8, "physiology_time_stamp")
    user_int = _fixed(h.user_int, 8, _Z8, "user_int")
    user_float = _fixed(h.user_float, 8, _F8, "user_float")
    try:
        head = _IMG_HEAD.pack(
            _V1_VERSION, code, int(h.flags), h.measurement_uid, nx, ny, nz,
            *_vec3(h.field_of_view, "field_of_view"), channels,
            *_vec3(h.position, "position"), *_vec3(h.col_dir, "col_dir"), *_vec3(h.line_dir, "line_dir"),
            *_vec3(h.slice_dir, "slice_dir"), *_vec3(h.patient_table_position, "patient_table_position"),
            _z(h.average), _z(h.slice), _z(h.contrast), _z(h.phase), _z(h.repetition), _z(h.set),
            _z(h.acquisition_time_stamp), *phys, h.image_type.value, _z(h.image_index),
            _z(h.image_series_index), *user_int, *user_float, len(attributes.encode("utf-8")))
    except (struct.error, OverflowError) as exc:
        raise _struct_failure("image", _img_fields(h, data.shape), exc) from None
    # ismrmrd.Image keeps MRD_INT pixels as numpy int (int64); the others in their own type.
    pixels = np.array(data, dtype=ismrmrd.image.get_dtype_from_data_type(code), order="C")
    return ismrmrd.Image(head, attribute_string=attributes, data=pixels)  # the length as a v1 stream has it


def image_to_v2(img: ismrmrd.Image) -> mrd.Image:
    """An ``mrd.Image`` of the v1 image's pixel type (``ImageFloat``, ``ImageUint16``, ...).

    ``data_type``, ``matrix_size`` and ``channels`` become the data's type and shape, ``version``
    and ``attribute_string_len`` are dropped (the length is recomputed when a v1 image is sent).
    """
    v = _IMG_HEAD.unpack(bytes(img._head))
    pixel = _V1_PIXEL.get(v[1])
    if pixel is None:
        raise ValueError(f"image data_type {v[1]} is not an MRD data type")
    data = img.data
    if pixel == np.int32 and data.dtype != np.int32 and data.size:
        low, high = data.min(), data.max()
        if low < _INT32.min or high > _INT32.max:
            raise ValueError(f"MRD_INT image pixels from {low} to {high} do not fit int32")
    h = mrd.ImageHeader(
        flags=_ImgFlags(v[2]), measurement_uid=v[3],
        field_of_view=np.array(v[7:10], dtype=np.float32),
        position=np.array(v[11:14], dtype=np.float32), col_dir=np.array(v[14:17], dtype=np.float32),
        line_dir=np.array(v[17:20], dtype=np.float32), slice_dir=np.array(v[20:23], dtype=np.float32),
        patient_table_position=np.array(v[23:26], dtype=np.float32),
        average=v[26], slice=v[27], contrast=v[28], phase=v[29], repetition=v[30], set=v[31],
        acquisition_time_stamp=v[32], physiology_time_stamp=list(v[33:36]),
        image_type=_ImageType(v[36]), image_index=v[37], image_series_index=v[38],
        user_int=list(v[39:47]), user_float=list(v[47:55]))
    return mrd.Image(head=h, data=np.array(data, dtype=pixel, order="C"), meta=meta_to_v2(img.meta))


# --------------------------------------------------------------------------------------------
# Stream items
# --------------------------------------------------------------------------------------------

_TO_V1: dict[type, Callable[[Any], Any]] = {
    mrd.StreamItem.Acquisition: acquisition_to_v1,
    mrd.StreamItem.WaveformUint32: waveform_to_v1,
    **{case: image_to_v1 for _, _, case in _PIXELS},
}


def item_to_v1(item: mrd.StreamItem) -> ismrmrd.Acquisition | ismrmrd.Waveform | ismrmrd.Image | None:
    """The v1 object of a v2 stream item (``mrd.StreamItem.Acquisition(...)`` etc.), or None for
    the items v1 has no message for (AcquisitionBucket, ReconData, ArrayComplexFloat, ImageArray
    and any case a later mrd adds), which the caller may log and skip."""
    convert = _TO_V1.get(type(item))
    if convert is not None:
        return convert(item.value)
    if isinstance(item, mrd.StreamItem):
        return None
    raise TypeError(f"{type(item).__name__} is not an mrd.StreamItem")


def item_to_v2(obj: ismrmrd.Acquisition | ismrmrd.Waveform | ismrmrd.Image) -> mrd.StreamItem:
    """The v2 stream item of a v1 acquisition, waveform or image (TypeError for anything else)."""
    if isinstance(obj, ismrmrd.Acquisition):
        return mrd.StreamItem.Acquisition(acquisition_to_v2(obj))
    if isinstance(obj, ismrmrd.Image):
        image = image_to_v2(obj)
        return _IMAGE_CASE[image.data.dtype](image)
    if isinstance(obj, ismrmrd.Waveform):
        return mrd.StreamItem.WaveformUint32(waveform_to_v2(obj))
    raise TypeError(f"{type(obj).__name__} has no MRD v2 stream item")
