"""Tests of ``_images.serve``'s slice worker: slices are reconstructed on a second thread, in order,
while the next slice is read; errors and output order are as if everything ran on the session thread."""
import sys
import threading
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))
import _images  # noqa: E402

LINES = 4


def slice_readouts(slice_no):
    """Four readouts of 2 coils x 8 samples, the last flagged LAST_IN_SLICE, samples = slice number."""
    out = []
    for line in range(LINES):
        acq = ismrmrd.Acquisition.from_array(np.full((2, 8), slice_no, np.complex64))
        acq.idx.kspace_encode_step_1 = line
        acq.idx.slice = slice_no
        if line == LINES - 1:
            acq.set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
        out.append(acq)
    return out


def magnitude_image(series):
    image = ismrmrd.Image.from_array(np.ones((4, 4), np.float32))
    image.image_series_index = series
    return image


class FakeConnection:
    """Yields the given items (a callable item is called instead: a hook or a raised error), then None;
    records what is sent and on which thread."""

    def __init__(self, items):
        self.items = items
        self.sent = []

    def __iter__(self):
        for item in self.items:
            if callable(item):
                item()
                continue
            yield item
        yield None

    def send_image(self, image):
        self.sent.append((image, threading.current_thread()))

    def send_logging(self, level, text):
        self.sent.append((text, threading.current_thread()))


def run_in_named_thread(fn, name="a1b2c3"):
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, name=name)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return thread, result


def test_slices_run_in_order_on_a_thread_named_like_the_session_and_groups_wait_for_them():
    images = [magnitude_image(3), magnitude_image(3), magnitude_image(4)]
    items = slice_readouts(0) + slice_readouts(1) + images + slice_readouts(2)
    conn = FakeConnection(items)
    session, result = run_in_named_thread(lambda: _images.serve(
        conn, None, on_slice=lambda kspace, index: ("slice", index, float(abs(kspace.kspace).max())),
        on_group=lambda images: ("group", len(images))))
    assert "error" not in result, result
    assert [what for what, _ in conn.sent] == [("slice", 1, 0.0), ("slice", 2, 1.0), ("group", 2), ("slice", 3, 2.0),
                                          ("group", 1)]
    threads = {what[0]: thread for what, thread in conn.sent}
    assert threads["slice"] is not session and threads["slice"].name == session.name == "a1b2c3"
    assert threads["group"] is session
    got = result["value"]
    assert (got.acquisitions, got.images, got.slices) == (3 * LINES, 3, 3)


def test_the_next_slice_is_read_while_a_slice_is_reconstructed():
    second_slice_read = threading.Event()
    overlapped = []

    def on_slice(kspace, index):
        if index == 1:
            overlapped.append(second_slice_read.wait(5))
        return index

    items = slice_readouts(0) + [second_slice_read.set] + slice_readouts(1)
    conn = FakeConnection(items)
    _, result = run_in_named_thread(lambda: _images.serve(conn, None, on_slice=on_slice))
    assert "error" not in result and overlapped == [True]
    assert [what for what, _ in conn.sent] == [1, 2]


def test_an_error_of_on_slice_is_raised_in_the_session_with_its_traceback_and_later_slices_are_dropped():
    def on_slice(kspace, index):
        if index == 1:
            raise ArithmeticError("recon of slice 1 failed")
        return index

    conn = FakeConnection(slice_readouts(0) + slice_readouts(1) + slice_readouts(2))
    _, result = run_in_named_thread(lambda: _images.serve(conn, None, on_slice=on_slice))
    error = result["error"]
    assert isinstance(error, ArithmeticError) and "slice 1" in str(error)
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "on_slice" in frames
    assert conn.sent == []


def test_slices_finished_before_a_read_error_are_still_sent():
    def broken_stream():
        raise ConnectionResetError("client went away")

    conn = FakeConnection(slice_readouts(0) + slice_readouts(1)[:2] + [broken_stream])
    _, result = run_in_named_thread(lambda: _images.serve(conn, None, on_slice=lambda kspace, index: index))
    assert isinstance(result["error"], ConnectionResetError)
    assert [what for what, _ in conn.sent] == [1]


@pytest.mark.parametrize("with_slices", [False, True])
def test_no_thread_is_left_behind(with_slices):
    before = threading.active_count()
    items = slice_readouts(0) if with_slices else [magnitude_image(1)]
    conn = FakeConnection(items)
    _, result = run_in_named_thread(lambda: _images.serve(conn, None, on_slice=lambda k, i: i, on_group=len))
    assert "error" not in result
    assert threading.active_count() == before


def test_slice_arrays_are_reused_zeroed_and_what_a_module_keeps_stays_as_it_was(monkeypatch):
    from types import SimpleNamespace as NS
    size = NS(x=8, y=LINES, z=1)
    header = NS(encoding=[NS(encodedSpace=NS(matrixSize=size), reconSpace=NS(matrixSize=size),
                             encodingLimits=NS(kspace_encoding_step_1=NS(center=LINES // 2)))])
    seen, kept, reused = [], {}, []
    real_take = _images._recon.KspacePool.take

    def counting_take(pool, shape):
        array, recycled = real_take(pool, shape)
        reused.append(recycled)
        return array, recycled

    monkeypatch.setattr(_images._recon.KspacePool, "take", counting_take)

    def on_slice(kspace, index):
        seen.append((id(kspace.kspace), kspace.kspace.copy()))
        if index == 2:
            kept["slice"] = kspace  # a module that keeps a slice: its array must not be reused
        return index

    gappy = [acq for acq in slice_readouts(3) if acq.idx.kspace_encode_step_1 != 1]  # line 1 never comes
    conn = FakeConnection(slice_readouts(0) + slice_readouts(1) + slice_readouts(2) + slice_readouts(5) + gappy)
    _, result = run_in_named_thread(lambda: _images.serve(conn, header, on_slice=on_slice))
    assert "error" not in result and [what for what, _ in conn.sent] == [1, 2, 3, 4, 5]
    assert len(reused) == 5 and sum(reused) >= 2  # later slices got earlier slices' arrays back
    assert seen[1][0] not in [i for i, _ in seen[2:]]  # ...but never the kept slice's
    assert (kept["slice"].kspace == seen[1][1]).all() and abs(kept["slice"].kspace).max() == 1
    last = seen[4][1]
    assert abs(last[:, [0, 2, 3]]).min() == 3 and not last[:, 1].any()  # the line it did not get is zero
