"""Frame images made by one CUDA graph per frame shape (``modules/_gpu_frames.py``).

Where CuPy finds a GPU (the device machine): every frame a window makes while it fills up and in
steady state, made by the graphs, equals the step-by-step frame, and the graphs were used; odd grids
stay step by step; two windows on one shared gridder keep their own buffers.  Everywhere: the
safety nets, with the CPU tables standing in for the GPU ones and the two CUDA steps (capture,
launch) replaced: a capture that fails or a first frame that differs turns the window's graphs off
with one warning, and the window's frames stay right.
"""
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import compute_devices

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))
import _backend  # noqa: E402
import _gpu_frames  # noqa: E402
from _gpu_frames import FrameGraphs  # noqa: E402
from _gridding import ArmGridder  # noqa: E402
from _view_sharing import SlidingWindow  # noqa: E402
from test_spiral_recon import relative_error, spiral_arms  # noqa: E402

needs_gpu = pytest.mark.skipif(len(compute_devices()) < 2, reason="needs a CUDA GPU with CuPy (runs on the device machine)")
INTERLEAVES, NS, COILS = 13, 400, 6


def arm_data(count, coils=COILS, seed=4):
    rng = np.random.default_rng(seed)
    shape = (count, coils, NS)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def cpu_frames(m=40, signed_plan=True):
    gridder = ArmGridder(spiral_arms(INTERLEAVES, NS, m), m, _backend.select(-1), np.linspace(0.05, 1, NS))
    frames = FrameGraphs(gridder.tables, gridder.plan)
    assert frames.enabled is signed_plan
    return gridder, frames


def test_a_capture_that_fails_turns_the_graphs_off_once_and_frames_stay_right(monkeypatch, caplog):
    gridder, frames = cpu_frames()
    captures = []

    def failing_capture(self, arms, add, coils):
        captures.append((arms, add, coils))
        raise RuntimeError("cudaErrorStreamCaptureUnsupported")
    monkeypatch.setattr(FrameGraphs, "_capture", failing_capture)
    data = arm_data(3)
    with caplog.at_level(logging.WARNING, logger="_gpu_frames"):
        first = frames([0, 1, 2], list(data))
        second = frames([0, 1], list(data[:2]))
    assert captures == [(3, 0, COILS)] and not frames.enabled and frames.launches == 0
    assert [r.getMessage() for r in caplog.records] == [
        "CUDA graph frames off for this window: capturing a frame of 3 arms, 0 grids and 6 coils failed "
        "(cudaErrorStreamCaptureUnsupported); frames are made step by step"]
    np.testing.assert_array_equal(first, gridder.rss(gridder.grid_arms([0, 1, 2], list(data))))
    np.testing.assert_array_equal(second, gridder.rss(gridder.grid_arms([0, 1], list(data[:2]))))


def test_a_first_graph_frame_that_differs_is_replaced_and_turns_the_graphs_off(monkeypatch, caplog):
    gridder, frames = cpu_frames()
    monkeypatch.setattr(FrameGraphs, "_capture", lambda self, arms, add, coils: _gpu_frames._Graph(None, None, None, coils))
    monkeypatch.setattr(FrameGraphs, "_launch", lambda self, entry, arms, samples, add: np.zeros((40, 40), np.float32))
    data = arm_data(2)
    with caplog.at_level(logging.WARNING, logger="_gpu_frames"):
        image = frames([4, 5], list(data))
    assert not frames.enabled and frames.launches == 0 and frames._graphs == {}
    assert "the graph's first frame differs from the step-by-step one" in caplog.text
    np.testing.assert_array_equal(image, gridder.rss(gridder.grid_arms([4, 5], list(data))))


def test_graph_frames_are_checked_once_per_shape_and_limited_per_window(monkeypatch):
    gridder, frames = cpu_frames()
    launches, captured = [], []

    def capture(self, arms, add, coils):
        captured.append((arms, add, coils))
        return _gpu_frames._Graph(None, None, None, coils)

    def launch(self, entry, arms, samples, add):
        launches.append(len(arms))
        return self.step_by_step(arms, samples, add)
    monkeypatch.setattr(FrameGraphs, "_capture", capture)
    monkeypatch.setattr(FrameGraphs, "_launch", launch)
    monkeypatch.setattr(_gpu_frames, "MAX_GRAPHS", 2)
    data = list(arm_data(4))
    for arms in (2, 2, 3, 4, 3):
        frames(list(range(arms)), data[:arms])
    assert captured == [(2, 0, COILS), (3, 0, COILS)]  # the third shape is made step by step
    assert launches == [2, 2, 3, 3] and frames.launches == 4 and frames.enabled


def test_odd_grids_never_try_a_graph(monkeypatch):
    gridder, frames = cpu_frames(m=36, signed_plan=False)  # oversampled grid of 45: shifted FFTs
    monkeypatch.setattr(FrameGraphs, "_capture", lambda *args: pytest.fail("an odd grid was captured"))
    data = list(arm_data(2))
    np.testing.assert_array_equal(frames([0, 1], data), gridder.rss(gridder.grid_arms([0, 1], data)))


def test_cpu_windows_give_their_frames_on_the_host():
    backend = _backend.select(-1)
    window = SlidingWindow(ArmGridder(spiral_arms(INTERLEAVES, NS, 40), 40, backend), 5, 2)
    data = arm_data(9)
    images = [window.rss() for i in range(9) if window.add(i % INTERLEAVES, data[i])]
    assert len(images) == 3 and all(type(image) is np.ndarray and image.dtype == np.float32 for image in images)


@needs_gpu
def test_graph_frames_equal_step_by_step_frames_while_filling_and_in_steady_state():
    backend = _backend.select(0)
    m = 40
    window = SlidingWindow(ArmGridder(spiral_arms(INTERLEAVES, NS, m), m, backend, np.linspace(0.05, 1, NS)), 7, 3)
    frames = window._rss_frames
    assert isinstance(frames, FrameGraphs) and frames.enabled
    data = arm_data(40)
    shapes, calls = set(), 0
    for i in range(40):
        window.add(i % INTERLEAVES, data[i])
        args = window.frame_args()
        if not args[0] and not args[2]:  # a block just completed, before the window holds q of them
            continue
        shapes.add((len(args[0]), len(args[2])))
        calls += 2
        expected = frames.step_by_step(*args)
        for _ in range(2):  # the first launch of a shape (checked inside) and a repeat
            image = window.rss()
            assert type(image) is np.ndarray and image.shape == (m, m)
            assert relative_error(image, expected) < 1e-6
    assert frames.enabled and len(frames._graphs) == len(shapes) >= 4
    assert frames.launches == calls


@needs_gpu
def test_two_windows_on_one_gridder_keep_their_own_graph_buffers():
    backend = _backend.select(0)
    gridder = ArmGridder(spiral_arms(INTERLEAVES, NS, 48), 48, backend)
    windows = [SlidingWindow(gridder, 4, 2), SlidingWindow(gridder, 4, 2)]
    data = [arm_data(20, seed=1), arm_data(20, seed=2)]
    alone = []
    for k in range(2):
        reference = SlidingWindow(gridder, 4, 2)
        alone.append([reference.rss() for i in range(20) if reference.add(i % INTERLEAVES, data[k][i])])
    mixed = [[], []]
    for i in range(20):
        for k in range(2):
            if windows[k].add(i % INTERLEAVES, data[k][i]):
                mixed[k].append(windows[k].rss())
    for k in range(2):
        assert windows[k]._rss_frames.launches == len(mixed[k]) == len(alone[k]) == 9
        for ours, theirs in zip(mixed[k], alone[k]):
            np.testing.assert_array_equal(ours, theirs)


@needs_gpu
def test_odd_grids_on_the_gpu_stay_step_by_step():
    backend = _backend.select(0)
    window = SlidingWindow(ArmGridder(spiral_arms(INTERLEAVES, NS, 36), 36, backend), 3, 3)
    data = arm_data(3)
    for i in range(3):
        window.add(i, data[i])
    image = window.rss()
    frames = window._rss_frames
    assert not frames.enabled and frames.launches == 0
    assert relative_error(image, frames.step_by_step(*window.frame_args())) < 1e-6
