"""Spiral view-sharing building blocks against sigpy (independent NUFFT), on the CPU and, where
CuPy finds a GPU, on the GPU with the same assertions."""
import sys
from pathlib import Path

import numpy as np
import pytest
import sigpy

from conftest import compute_devices

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))
import _backend  # noqa: E402
import _coils  # noqa: E402
import _gridding  # noqa: E402
from _gridding import ArmGridder  # noqa: E402
from _view_sharing import SlidingWindow  # noqa: E402


DEVICES = compute_devices()


def spiral_arms(arms, ns, m, turns=6):
    """Archimedean arms, linearly rotated, in grid units (radius m/2 at the end): [arms, Ns, 2]."""
    t = np.linspace(0, 1, ns)
    angles = 2 * np.pi * np.arange(arms) / arms
    phase = 2 * np.pi * turns * t[None, :] + angles[:, None]
    return np.stack([t * m / 2 * np.cos(phase), t * m / 2 * np.sin(phase)], axis=-1).astype(np.float32)


def relative_error(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("gpu", DEVICES)
def test_gridded_arms_give_sigpy_nufft_adjoint(gpu):
    backend = _backend.select(gpu)
    rng = np.random.default_rng(0)
    m, ns, arms, nc = 48, 400, 6, 4
    coord = spiral_arms(arms, ns, m)
    data = (rng.standard_normal((arms, nc, ns)) + 1j * rng.standard_normal((arms, nc, ns))).astype(np.complex64)
    gridder = ArmGridder(coord, m, backend)
    samples = [backend.to_device(arm) for arm in data]  # [coils, Ns] each
    ours = backend.to_host(gridder.image(gridder.grid_arms(list(range(arms)), samples)))
    reference = sum(sigpy.nufft_adjoint(data[a].astype(np.complex128), coord[a].astype(np.float64), (nc, m, m))
                    for a in range(arms))
    assert relative_error(ours, reference) < 1e-3


@pytest.mark.parametrize("gpu", DEVICES)
@pytest.mark.parametrize("apf, shift", [(7, 3), (6, 3), (4, 3), (2, 5)])
def test_sliding_window_frames_hold_exactly_arms_per_frame(gpu, apf, shift):
    backend = _backend.select(gpu)
    rng = np.random.default_rng(1)
    m, ns, interleaves, nc, pre = 32, 200, 5, 3, 4
    total = 20
    coord = spiral_arms(interleaves, ns, m)
    dcf = np.linspace(0.1, 1, ns)
    window = SlidingWindow(ArmGridder(coord, m, backend, dcf, pre), apf, shift)
    data = (rng.standard_normal((total, nc, pre + ns)) + 1j * rng.standard_normal((total, nc, pre + ns)))
    data = data.astype(np.complex64)
    frames = []
    for i in range(total):
        if window.add(i % interleaves, data[i]):
            frames.append((i, backend.to_host(window.coil_images()), backend.to_host(window.rss())))
    assert [f[0] for f in frames] == list(range(apf - 1, total, shift))  # frame k ends at arm k*shift + apf - 1
    for k, (last, images, magnitude) in enumerate(frames):
        first = k * shift
        reference = sum(sigpy.nufft_adjoint((data[i, :, pre:] * dcf).astype(np.complex128),
                                            coord[i % interleaves].astype(np.float64), (nc, m, m))
                        for i in range(first, first + apf))
        assert last == first + apf - 1
        assert relative_error(images, reference) < 1e-3
        assert relative_error(magnitude, _coils.rss(reference)) < 1e-3


@pytest.mark.parametrize("gpu", DEVICES)
def test_inati_combination_recovers_the_object_magnitude(gpu):
    backend = _backend.select(gpu)
    y, x = np.mgrid[-32:32, -32:32] / 32
    obj = (x ** 2 + y ** 2 < 0.6) * (1 + 0.3 * x)
    centres = [(1, 0), (-1, 0), (0, 1), (0, -1)]
    maps = np.stack([np.exp(-((x - cx) ** 2 + (y - cy) ** 2)) * np.exp(1j * (cx * x + cy * y)) for cx, cy in centres])
    images = backend.to_device(maps * obj)
    combined = backend.to_host(abs(_coils.combine(images, _coils.inati_maps(images))))
    reference = np.sqrt((np.abs(maps) ** 2).sum(0)) * obj
    inside = obj > 0
    assert relative_error(combined[inside], reference[inside]) < 1e-3
    assert relative_error(backend.to_host(_coils.rss(images)), reference) < 1e-6


@pytest.mark.parametrize("m", [36, 40])  # oversampled grids of 45 (odd: shifted FFT) and 50 (even: signs)
@pytest.mark.parametrize("threads", [1, 3])
def test_cpu_coil_groups_give_sigpy_frames(monkeypatch, m, threads):
    """The CPU tables split 13 coils into 3 groups (4, 4, 5) in threads, or keep one group."""
    monkeypatch.setattr(_gridding, "THREADS", threads)
    backend = _backend.select(-1)
    rng = np.random.default_rng(3)
    ns, interleaves, nc, pre, apf, shift = 150, 7, 13, 2, 5, 2
    coord = spiral_arms(interleaves, ns, m)
    dcf = np.linspace(0.1, 1, ns)
    gridder = ArmGridder(coord, m, backend, dcf, pre)
    assert len(gridder.tables._groups(nc)) == (3 if threads == 3 else 1)
    window = SlidingWindow(gridder, apf, shift)
    data = (rng.standard_normal((12, nc, pre + ns)) + 1j * rng.standard_normal((12, nc, pre + ns))).astype(np.complex64)
    frames = [(i, window.coil_images(), window.rss()) for i in range(12) if window.add(i % interleaves, data[i])]
    assert len(frames) == 4
    for last, images, magnitude in frames:
        reference = sum(sigpy.nufft_adjoint((data[i, :, pre:] * dcf).astype(np.complex128),
                                            coord[i % interleaves].astype(np.float64), (nc, m, m))
                        for i in range(last - apf + 1, last + 1))
        assert images.shape == (nc, m, m) and magnitude.shape == (m, m)
        assert relative_error(images, reference) < 1e-3
        assert relative_error(magnitude, _coils.rss(reference)) < 1e-3


def _rss_of_one_frame(queue):
    window = SlidingWindow(ArmGridder(spiral_arms(3, 100, 32), 32, _backend.select(-1)), 3, 3)
    for arm in range(3):
        window.add(arm, np.ones((8, 100), np.complex64))
    queue.put(window.rss().shape)


def test_cpu_coil_groups_run_in_a_forked_child_after_the_parent_used_them(monkeypatch):
    """The server's ``multiprocessing`` sessions fork: the child must not wait on the parent's threads."""
    import multiprocessing
    monkeypatch.setattr(_gridding, "THREADS", 2)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    _rss_of_one_frame(queue)
    assert queue.get(timeout=10) == (32, 32) and _gridding._pool is not None
    child = context.Process(target=_rss_of_one_frame, args=(queue,))
    child.start()
    child.join(30)
    hung = child.is_alive()
    if hung:
        child.kill()
        child.join()
    assert not hung and child.exitcode == 0
    assert queue.get(timeout=10) == (32, 32)


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs a CUDA GPU with CuPy (runs on the device machine)")
def test_gpu_frames_equal_cpu_frames():
    rng = np.random.default_rng(2)
    m, ns, interleaves, nc = 64, 500, 13, 8
    coord = spiral_arms(interleaves, ns, m)
    dcf = np.linspace(0.05, 1, ns)
    data = (rng.standard_normal((30, nc, ns)) + 1j * rng.standard_normal((30, nc, ns))).astype(np.complex64)
    frames = {}
    for gpu in DEVICES:
        backend = _backend.select(gpu)
        window = SlidingWindow(ArmGridder(coord, m, backend, dcf), 11, 4)
        frames[gpu] = [backend.to_host(window.rss())
                       for i in range(30) if window.add(i % interleaves, data[i])]
    for cpu_frame, gpu_frame in zip(frames[-1], frames[0]):
        assert relative_error(gpu_frame, cpu_frame) < 1e-3


@pytest.mark.parametrize("gpu", DEVICES)
def test_arms_that_do_not_fit_the_trajectory_are_refused(gpu):
    backend = _backend.select(gpu)
    m, ns, interleaves, nc, pre = 32, 200, 5, 3, 4
    window = SlidingWindow(ArmGridder(spiral_arms(interleaves, ns, m), m, backend, None, pre), 4, 2)
    good = np.ones((nc, pre + ns), np.complex64)
    assert window.add(0, good) is False
    with pytest.raises(ValueError, match="readout of 203 samples for arm 1"):
        window.add(1, good[:, 1:])
    with pytest.raises(ValueError, match="arm 5: the trajectory has 5 arms of 204 samples"):
        window.add(5, good)
    with pytest.raises(ValueError, match="readout with 2 coils after readouts with 3"):
        window.add(1, good[:2])
    for arm in (1, 2):
        window.add(arm, good)
    assert window.add(3, good) and np.isfinite(backend.to_host(window.rss())).all()


def test_gridders_are_shared_between_sessions_with_the_same_trajectory():
    backend = _backend.select(-1)
    coord, dcf = spiral_arms(3, 50, 16), np.linspace(0.1, 1, 50)
    first = _gridding.shared_gridder(coord, 16, backend, dcf, 2)
    assert _gridding.shared_gridder(coord.copy(), 16, backend, dcf.copy(), 2) is first
    others = [_gridding.shared_gridder(coord, 16, backend, dcf * 2, 2), _gridding.shared_gridder(coord, 16, backend)]
    assert len({id(first), *map(id, others)}) == 3
    assert _gridding.shared_gridder(coord, 16, backend, dcf, 2) is not first  # the oldest of 3 is dropped (2 kept)


def test_tukey_window_equals_scipy():
    import scipy.signal.windows
    for length in (1, 2, 7, 32):
        for alpha in (0.3, 0.8, 1.0):
            np.testing.assert_allclose(_coils.tukey(length, alpha), scipy.signal.windows.tukey(length, alpha), atol=1e-12)
