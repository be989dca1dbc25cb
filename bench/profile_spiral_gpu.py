"""GPU time of each step of a steady-state view-sharing frame, and the kernel's tuning knobs (run by hand
on a CUDA machine).

``python bench/profile_spiral_gpu.py [--chunks 4 8] [--dense 0.5 1 2]``

For every coil chunk (coils per thread) and dense-row threshold (samples per arm per grid row above
which a warp gathers the row) of ``modules/_gpu_gridding.py``, prints CUDA-event times of: gridding a
block of 17 arms, a frame's gather (4 arms + the stored block sum), the in-place FFT, the crop+RSS
kernel, and wall times of the copy to the host, of one arm intake and of a steady-state frame image
(gather, FFT, RSS, copy) made step by step against one CUDA graph (``modules/_gpu_frames.py``), with
the count of frames the graph made (``graphs OFF`` when the window fell back to step by step).
Sizes as in ``bench_spiral.py``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR / "bench"))
sys.path.insert(0, str(REPO_DIR / "modules"))

import _backend  # noqa: E402
import _gpu_gridding  # noqa: E402
from _gridding import ArmGridder  # noqa: E402
from _view_sharing import SlidingWindow  # noqa: E402
from bench_spiral import golden_angle_spiral  # noqa: E402

M, COILS, SAMPLES, INTERLEAVES, ARMS_PER_FRAME, SHIFT = 240, 20, 1300, 144, 55, 17


def gpu_ms(fn, calls: int = 100) -> float:
    """Mean CUDA-event milliseconds of ``fn()`` (its results dropped at once, so the pool reuses memory)."""
    import cupy
    fn()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(calls):
        fn()
    stop.record()
    stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop) / calls


def wall_ms(fn, calls: int = 200) -> float:
    import cupy
    fn()
    cupy.cuda.Stream.null.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    cupy.cuda.Stream.null.synchronize()
    return (time.perf_counter() - start) / calls * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[_gpu_gridding.COIL_CHUNK])
    parser.add_argument("--dense", type=float, nargs="+", default=[_gpu_gridding.DENSE_ROW])
    args = parser.parse_args(argv)
    backend = _backend.select(0)
    if backend.gpu < 0:
        raise SystemExit("needs a CUDA GPU with CuPy")
    xp = backend.xp
    rng = np.random.default_rng(0)
    arms = [xp.asarray((rng.standard_normal((COILS, SAMPLES)) + 1j * rng.standard_normal((COILS, SAMPLES)))
                       .astype(np.complex64)) for _ in range(INTERLEAVES)]
    coord = golden_angle_spiral(INTERLEAVES, SAMPLES, M)
    for chunk in args.chunks:
        for dense in args.dense:
            _gpu_gridding.COIL_CHUNK, _gpu_gridding.DENSE_ROW = chunk, dense
            gridder = ArmGridder(coord, M, backend, np.linspace(0.02, 1, SAMPLES))
            window = SlidingWindow(gridder, ARMS_PER_FRAME, SHIFT)
            for i in range(ARMS_PER_FRAME):
                window.add(i % INTERLEAVES, arms[i % INTERLEAVES])
            frame = window._grid_sum()
            image = gridder.rss(frame.copy())
            frames = window._rss_frames
            frame_args = window.frame_args()
            window.rss()  # captures the steady-state frame's graph and checks it once
            steps = {
                "block of 17 arms (GPU)": gpu_ms(lambda: gridder.grid_arms(range(SHIFT), arms[:SHIFT])),
                "frame gather (GPU)": gpu_ms(window._grid_sum),
                "in-place FFT (GPU)": gpu_ms(lambda: gridder.tables._ifft(frame, gridder.plan)),
                "crop+RSS (GPU)": gpu_ms(lambda: _gpu_gridding.crop_rss(frame.reshape(COILS, *gridder.grid),
                                                                        gridder.plan.abs_apod, M)),
                "copy to host (wall)": wall_ms(image.get),
                "arm intake (wall, mean)": wall_ms(lambda: window.add(0, arms[0]), SHIFT),
                "frame step by step (wall)": wall_ms(lambda: frames.step_by_step(*frame_args)),
                "frame as a graph (wall)": wall_ms(lambda: frames(*frame_args)),
            }
            heavy = gridder.tables.grid_points - gridder.tables.light
            print(f"coil chunk {chunk}, dense rows above {dense} per arm ({heavy} rows)")
            for name, ms in steps.items():
                print(f"  {name:26s} {ms:.4f} ms")
            print(f"  graph frames: {frames.launches}, graphs {'on' if frames.enabled else 'OFF'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
