"""mrdv2/_acquisition_codec.py: the fast Acquisition item codec against mrd-python's own.

Writing: byte-for-byte the stream ``mrd.BinaryMrdWriter`` writes for ``convert.item_to_v2`` of
random v1 acquisitions (every header field set, edge values, several coil counts, with and without
trajectory), through ``V2Writer.send_acquisition`` and ``send_acquisition_parts``.  Reading: streams
written by mrd (random v2 acquisitions with None optionals, short lists, out-of-range values; mrd's
phantom tool) give what ``convert.acquisition_to_v1`` gives of mrd's items, or both refuse; a
truncated item at every byte position ends cleanly (StreamEnded / ProtocolError).
"""
from __future__ import annotations

import io
import subprocess
import sys

import ismrmrd
import mrd
import numpy as np
import pytest

from connection import ProtocolError, StreamEnded
from mrdv2 import _acquisition_codec as codec
from mrdv2 import convert
from mrdv2.stream import V2Reader, V2Writer, _PatientInputStream, _read_items

EDGE32 = [0, 1, 127, 128, 255, 16383, 16384, 2**21, 2**32 - 1]
EDGE16 = [0, 1, 127, 128, 255, 16383, 16384, 65535]
EDGE_I32 = [0, 1, -1, 63, -64, 64, -65, 2**31 - 1, -2**31]


def _pick(rng, edges, high):
    return edges[int(rng.integers(len(edges)))] if rng.random() < 0.5 else int(rng.integers(0, high, endpoint=True, dtype=np.uint64))


def random_v1(rng, nc: int, ns: int, td: int) -> ismrmrd.Acquisition:
    h = ismrmrd.AcquisitionHeader()
    h.version = 1
    h.flags = _pick(rng, [0, 1, 127, 128, 2**63, 2**64 - 1], 2**64 - 1)
    h.measurement_uid = _pick(rng, EDGE32, 2**32 - 1)
    h.scan_counter = _pick(rng, EDGE32, 2**32 - 1)
    h.acquisition_time_stamp = _pick(rng, EDGE32, 2**32 - 1)
    for i in range(3):
        h.physiology_time_stamp[i] = _pick(rng, EDGE32, 2**32 - 1)
    h.number_of_samples, h.active_channels, h.available_channels = ns, nc, nc
    kind = rng.integers(4)
    if kind == 1:
        channels = range(nc)
    elif kind == 2:
        channels = rng.choice(1024, size=min(nc, 40), replace=False)
    elif kind == 3:
        channels = [0, 127, 128, 1023][:max(nc, 1)]
    else:
        channels = []
    for c in channels:
        h.channel_mask[int(c) // 64] |= 1 << (int(c) % 64)
    for name in ("discard_pre", "discard_post", "center_sample", "encoding_space_ref"):
        setattr(h, name, _pick(rng, EDGE16, 65535))
    h.trajectory_dimensions = td
    h.sample_time_us = float(rng.standard_normal())
    for name in ("position", "read_dir", "phase_dir", "slice_dir", "patient_table_position"):
        getattr(h, name)[:] = rng.standard_normal(3).astype(np.float32).tolist()
    for name in ("kspace_encode_step_1", "kspace_encode_step_2", "average", "slice", "contrast", "phase",
                 "repetition", "set", "segment"):
        setattr(h.idx, name, _pick(rng, EDGE16, 65535))
    for i in range(8):
        h.idx.user[i] = _pick(rng, EDGE16, 65535)
        h.user_int[i] = int(rng.choice(EDGE_I32)) if rng.random() < 0.5 else int(rng.integers(-2**31, 2**31))
        h.user_float[i] = float(rng.standard_normal() * 1e3)
    acq = ismrmrd.Acquisition(h)
    acq.data[...] = (rng.standard_normal((nc, ns)) + 1j * rng.standard_normal((nc, ns))).astype(np.complex64)
    if td:
        acq.traj[...] = rng.standard_normal((ns, td)).astype(np.float32)
    return acq


def mrd_stream(items, header=None) -> bytes:
    out = io.BytesIO()
    w = mrd.BinaryMrdWriter(out)
    w.write_header(header)
    w.write_data(items)
    w.close()
    return out.getvalue()


SHAPES = [(1, 1, 0), (2, 16, 0), (2, 16, 1), (4, 33, 2), (8, 128, 3), (32, 64, 0), (16, 200, 2), (0, 0, 0),
          (1, 0, 0), (130, 3, 1)]


@pytest.mark.parametrize("seed", range(40))
def test_encoder_matches_mrd_writer(seed):
    rng = np.random.default_rng(seed)
    nc, ns, td = SHAPES[seed % len(SHAPES)]
    acqs = [random_v1(rng, nc, ns, td) for _ in range(3)]
    expected = mrd_stream([convert.item_to_v2(a) for a in acqs[:1]])
    for a in acqs[1:]:  # mrd writes one block per write_data call; so does V2Writer
        expected = expected[:-1] + mrd_stream([convert.item_to_v2(a)])[len(mrd_stream([])) - 1:]
    for send in ("send_acquisition", "send_acquisition_parts"):
        parts: list = []
        writer = V2Writer(lambda ps: parts.extend(bytes(p) for p in ps))
        writer._writer(None)
        for a in acqs:
            if send == "send_acquisition":
                writer.send_acquisition(a)
            else:
                writer.send_acquisition_parts(bytes(a._head), a.traj, a.data)
        writer.send_close()
        assert b"".join(parts) == expected, send


def test_encoder_parts_equal_mrd_serializer_bytes():
    rng = np.random.default_rng(99)
    empty = mrd_stream([])
    for nc, ns, td in SHAPES:
        a = random_v1(rng, nc, ns, td)
        full = mrd_stream([convert.item_to_v2(a)])
        block = full[len(empty) - 1:-1]
        mine = b"".join(bytes(p) for p in codec.acquisition_parts(bytes(a._head), a.data, a.traj))
        assert mine == block


def _opt(rng, value):
    return None if rng.random() < 0.3 else value


def random_v2(rng, nc, ns, td, wild=False) -> mrd.Acquisition:
    """A v2 acquisition; ``wild``: values and lengths that v1 may not hold."""
    u16 = (lambda: _pick(rng, EDGE32, 2**32 - 1)) if wild else (lambda: _pick(rng, EDGE16, 65535))
    u32 = lambda: _pick(rng, EDGE32, 2**32 - 1)  # noqa: E731
    n_list = (lambda k: int(rng.integers(0, k + 2))) if wild else (lambda k: int(rng.integers(0, k + 1)))
    order_kind = rng.integers(4)
    if order_kind == 0:
        order = []
    elif order_kind == 1:
        order = list(range(nc))
    elif order_kind == 2:
        order = [int(c) for c in rng.integers(0, 1024 if not wild else 1100, size=int(rng.integers(1, 40)))]
    else:
        order = [int(c) for c in rng.permutation(max(nc, 1))]
    idx = mrd.EncodingCounters(
        kspace_encode_step_1=_opt(rng, u16()), kspace_encode_step_2=_opt(rng, u16()), average=_opt(rng, u16()),
        slice=_opt(rng, u16()), contrast=_opt(rng, u16()), phase=_opt(rng, u16()),
        repetition=_opt(rng, u16()), set=_opt(rng, u16()), segment=_opt(rng, u16()),
        user=[u16() for _ in range(n_list(8))])
    head = mrd.AcquisitionHeader(
        flags=mrd.AcquisitionFlags(_pick(rng, [0, 1, 127, 128, 2**63, 2**64 - 1], 2**64 - 1)), idx=idx,
        measurement_uid=u32(), scan_counter=_opt(rng, u32()), acquisition_time_stamp=_opt(rng, u32()),
        physiology_time_stamp=[u32() for _ in range(n_list(3))], channel_order=order,
        discard_pre=_opt(rng, u16()), discard_post=_opt(rng, u16()), center_sample=_opt(rng, u16()),
        encoding_space_ref=_opt(rng, u16()), sample_time_us=_opt(rng, float(np.float32(rng.standard_normal()))),
        position=rng.standard_normal(3).astype(np.float32), read_dir=rng.standard_normal(3).astype(np.float32),
        phase_dir=rng.standard_normal(3).astype(np.float32), slice_dir=rng.standard_normal(3).astype(np.float32),
        patient_table_position=rng.standard_normal(3).astype(np.float32),
        user_int=[int(rng.choice(EDGE_I32)) for _ in range(n_list(8))],
        user_float=[float(np.float32(rng.standard_normal())) for _ in range(n_list(8))])
    data = (rng.standard_normal((nc, ns)) + 1j * rng.standard_normal((nc, ns))).astype(np.complex64)
    tns = ns if not (wild and rng.random() < 0.2) else ns + 1
    traj = rng.standard_normal((td, tns)).astype(np.float32)
    return mrd.Acquisition(head=head, data=data, trajectory=traj)


def _items_of(blob: bytes, ours: bool):
    reader = mrd.BinaryMrdReader(io.BytesIO(blob))
    reader._stream.__class__ = _PatientInputStream
    reader.read_header()
    return _read_items(reader._stream) if ours else reader.read_data()


def _same(mine: ismrmrd.Acquisition, ref: ismrmrd.Acquisition) -> None:
    assert type(mine) is ismrmrd.Acquisition
    assert bytes(mine._head) == bytes(ref._head)
    assert mine.data.dtype == ref.data.dtype and mine.data.shape == ref.data.shape
    assert np.array_equal(mine.data, ref.data)
    assert mine.traj.dtype == ref.traj.dtype and mine.traj.shape == ref.traj.shape
    assert np.array_equal(mine.traj, ref.traj)


@pytest.mark.parametrize("seed", range(60))
def test_decoder_matches_acquisition_to_v1(seed):
    rng = np.random.default_rng(1000 + seed)
    nc, ns, td = SHAPES[seed % len(SHAPES)]
    wild = seed % 3 == 2
    for _ in range(4):
        acq = random_v2(rng, nc, ns, td, wild)
        blob = mrd_stream([mrd.StreamItem.Acquisition(acq)])
        [ref_item] = list(_items_of(blob, ours=False))
        try:
            ref = convert.acquisition_to_v1(ref_item.value)
        except ValueError:
            with pytest.raises(ValueError):
                list(_items_of(blob, ours=True))
            continue
        [mine] = list(_items_of(blob, ours=True))
        _same(mine, ref)


def test_decoder_many_items_and_other_cases_interleaved():
    rng = np.random.default_rng(7)
    items = []
    for i in range(50):
        items.append(mrd.StreamItem.Acquisition(random_v2(rng, 1 + i % 5, 3 + i, i % 3)))
        if i % 10 == 0:
            items.append(mrd.StreamItem.WaveformUint32(mrd.Waveform(
                measurement_uid=i, data=np.arange(6, dtype=np.uint32).reshape(2, 3))))
    blob = mrd_stream(items)
    refs = list(_items_of(blob, ours=False))
    mine = list(_items_of(blob, ours=True))
    assert len(mine) == len(refs) == len(items)
    for m, r in zip(mine, refs):
        if isinstance(r, mrd.StreamItem.Acquisition):
            _same(m, convert.acquisition_to_v1(r.value))
        else:
            assert type(m) is type(r) and m.value.measurement_uid == r.value.measurement_uid


def test_decoder_on_mrd_phantom_tool():
    blob = subprocess.run([sys.executable, "-m", "mrd.tools.phantom", "-m", "32", "-c", "4", "-r", "2"],
                          check=True, capture_output=True).stdout
    refs = [r for r in _items_of(blob, ours=False)]
    mine = list(_items_of(blob, ours=True))
    assert len(mine) == len(refs)
    n = 0
    for m, r in zip(mine, refs):
        if isinstance(r, mrd.StreamItem.Acquisition):
            _same(m, convert.acquisition_to_v1(r.value))
            n += 1
    assert n > 0


def test_decoder_over_small_reads():
    """The header split over many refills: a source that gives one byte per read."""
    rng = np.random.default_rng(3)
    items = [mrd.StreamItem.Acquisition(random_v2(rng, 3, 20, 2)) for _ in range(3)]
    blob = mrd_stream(items)

    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self._data, self._pos = data, 0

        def readable(self):
            return True

        def readinto(self, b):
            if self._pos >= len(self._data):
                return 0
            b[0] = self._data[self._pos]
            self._pos += 1
            return 1

    reader = mrd.BinaryMrdReader(io.BytesIO(blob))
    reader.read_header()
    start = len(blob) - len(reader._stream._view[reader._stream._offset:reader._stream._last_read_count])
    s = _PatientInputStream(io.BytesIO())
    s._stream = Trickle(blob[start:])
    mine = list(_read_items(s))
    for m, r in zip(mine, items):
        _same(m, convert.acquisition_to_v1(r.value))
    assert len(mine) == 3


def _header() -> mrd.Header:
    h = mrd.Header()
    h.encoding.append(mrd.EncodingType())
    return h


def test_truncation_at_every_byte_of_an_item():
    rng = np.random.default_rng(5)
    acq = random_v1(rng, 2, 8, 2)
    acq._head.idx.kspace_encode_step_1 = 300
    try:
        header = _header()
        convert.header_to_xml(header)
    except Exception:
        pytest.skip("no minimal v2 header converts to XML here")
    full = mrd_stream([convert.item_to_v2(acq)], header)
    empty = mrd_stream([], header)
    start = len(empty) - 1
    reader = V2Reader(io.BytesIO(full), 1 << 30, 1 << 20)
    reader.read(), reader.read()
    msg_id, got = reader.read()
    assert bytes(got._head) == bytes(acq._head)
    for cut in range(start, len(full) - 1):
        reader = V2Reader(io.BytesIO(full[:cut]), 1 << 30, 1 << 20)
        reader.read(), reader.read()
        with pytest.raises((StreamEnded, ProtocolError)):
            reader.read()


def test_limits_checked_before_allocation():
    rng = np.random.default_rng(6)
    acq = random_v2(rng, 4, 1000, 0)
    blob = mrd_stream([mrd.StreamItem.Acquisition(acq)], _header())
    reader = V2Reader(io.BytesIO(blob), 4 * 1000 * 8 - 1, 1 << 20)
    reader.read(), reader.read()
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        reader.read()
