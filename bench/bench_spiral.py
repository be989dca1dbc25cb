"""Spiral view-sharing bench: our sliding-window gridding against per-frame sigpy NUFFTs (run by hand).

``python bench/bench_spiral.py [--gpu -1|0] [--matrix 240 --coils 20 --arms-per-frame 55
--samples 1300 --window-shift 17] [--session-arms 2000] [--repeats 5] [--warmup-s 1] [--finufft-eps 1e-3]``

(a) baseline per frame: ``sigpy.nufft_adjoint`` of the DCF-weighted samples of the frame's
    ``arms_per_frame`` arms, root-sum-of-squares, image to the host;
(b) ours per frame in steady state: ``window_shift`` new arms taken into the window
    (DCF weighting, gridding of the completed block and the extra arms), one FFT,
    fused RSS, image to the host.  In (a) and (b) the arms are already on the device:
    copying an arriving arm there costs both the same and is reported apart (ingest);
(c) latency: from handing the frame's last arm to the module's code until the
    serialised MRD image message is written (grid, FFT, combine, scale, header, bytes);
(d) frames per second of a whole ``--session-arms`` session over a socket
    (``main.py`` + ``client.py -c simplenufft1arm``) on a generated data set (BART's
    phantom when ``bart`` is installed, the generator's own otherwise; speed does not
    depend on it), then the same session again on the same server (``_again``: the module
    and the trajectory's gridding matrices are already loaded, as for a repeated scan).
(e) only on the CPU and where ``finufft`` imports: the steady-state frame of (b) made with finufft
    instead of our gridding: a type-1 NUFFT (``--finufft-eps``, upsampling 1.25, one transform per
    coil, all cores) of each completed block of ``window_shift`` arms, whose coil images are kept,
    and one of the frame's extra arms; the frame is the sum of those images, root-sum-of-squares
    (the DCF-weighted samples are made beforehand, as for (a)).
All run on the device chosen by ``--gpu``; the device is named in the output.  On the GPU the
output also says how many frames of (b) and (c) were made by CUDA graphs (``modules/_gpu_frames.py``)
and whether the graphs stayed on (``graphs_on False``: the window fell back to step-by-step frames).
"""
from __future__ import annotations

import argparse
import collections
import datetime
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))
sys.path.insert(0, str(REPO_DIR / "modules"))

import _backend  # noqa: E402
import _coils  # noqa: E402
import ismrmrd  # noqa: E402
from _gridding import ArmGridder  # noqa: E402
from _view_sharing import SlidingWindow  # noqa: E402
from connection import MessageWriter  # noqa: E402
from tools._server_harness import ServerProcess  # noqa: E402


def golden_angle_spiral(interleaves: int, samples: int, m: int, turns: float = 16) -> np.ndarray:
    """Archimedean arms rotated by the golden angle, grid units: ``[interleaves, samples, 2]``."""
    t = np.linspace(0, 1, samples)
    angles = np.deg2rad((np.arange(interleaves) * 222.4969) % 360)
    phase = 2 * np.pi * turns * t[None, :] + angles[:, None]
    return np.stack([t * m / 2 * np.cos(phase), t * m / 2 * np.sin(phase)], axis=-1).astype(np.float32)


def timed(fn, backend, repeats, warmup_s):
    """Median seconds of ``fn()`` after ``warmup_s`` seconds of calls (a GPU raises its clocks only
    under load), device synchronised."""
    start = time.perf_counter()
    while True:
        fn()
        backend.synchronize()
        if time.perf_counter() - start >= warmup_s:
            break
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        backend.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def device_name(backend) -> str:
    if backend.gpu >= 0:
        props = backend.xp.cuda.runtime.getDeviceProperties(backend.gpu)
        return f"GPU {props['name'].decode()} (CuPy {backend.xp.__version__})"
    return f"CPU {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores (NumPy)"


def per_frame(args, backend) -> dict:
    import sigpy
    rng = np.random.default_rng(0)
    m, nc, apf, ns, ws = args.matrix, args.coils, args.arms_per_frame, args.samples, args.window_shift
    interleaves = 144
    coord = golden_angle_spiral(interleaves, ns, m)
    dcf = np.linspace(0.02, 1, ns).astype(np.float32)
    arms = (rng.standard_normal((interleaves, nc, ns)) + 1j * rng.standard_normal((interleaves, nc, ns)))
    arms = arms.astype(np.complex64)
    xp = backend.xp
    device = sigpy.Device(backend.gpu)
    with device:
        frame_coord = xp.asarray(coord[:apf])
        frame_data = xp.asarray(np.moveaxis(arms[:apf] * dcf, 1, 0))  # [coils, arms, Ns]

    def baseline():
        with device:
            backend.to_host(_coils.rss(sigpy.nufft_adjoint(frame_data, frame_coord, (nc, m, m))))

    device_arms = [backend.to_device(a) for a in arms]  # arms as received (DCF applied in the gridding)

    window = SlidingWindow(ArmGridder(coord, m, backend, dcf), apf, ws)
    counter = iter(range(10 ** 9))
    for _ in range(apf):
        i = next(counter)
        window.add(i % interleaves, device_arms[i % interleaves])

    def ours():
        for _ in range(ws):
            i = next(counter)
            window.add(i % interleaves, device_arms[i % interleaves])
        window.rss()  # on the host

    def ingest():
        backend.to_device(arms[next(counter) % interleaves])

    sink = io.BytesIO()
    writer = MessageWriter.for_stream(sink)
    template = ismrmrd.Acquisition.from_array(np.zeros((nc, ns), np.complex64))

    def latency():
        i = next(counter)
        window.add(i % interleaves, arms[i % interleaves])  # as received: on the host
        pixels = window.rss()
        data = np.around(pixels[::-1].T * (4095 / pixels.max())).astype(np.int16)
        image = ismrmrd.Image.from_array(data, acquisition=template, transpose=False)
        image.meta = ismrmrd.Meta({"WindowCenter": "2048", "WindowWidth": "4096"})
        sink.seek(0)
        writer.send_image(image)

    e = finufft_frame(args, coord, arms * dcf, counter) if backend.gpu < 0 else None
    a = timed(baseline, backend, args.repeats, args.warmup_s)
    b = timed(ours, backend, args.repeats, args.warmup_s)
    c = timed(latency, backend, args.repeats, args.warmup_s)
    d = timed(ingest, backend, args.repeats, args.warmup_s)
    result = {"a_baseline_ms": 1e3 * a, "b_ours_ms": 1e3 * b, "c_latency_ms": 1e3 * c, "speedup_a_over_b": a / b,
              "ingest_per_arm_ms": 1e3 * d}
    if e is not None:
        result["e_finufft_ms"] = 1e3 * timed(e, backend, args.repeats, args.warmup_s)
    frames = window._rss_frames
    if hasattr(frames, "launches"):  # the GPU's CUDA-graph frames: how many (b) and (c) got, and whether they stayed on
        result.update(graph_frames=frames.launches, graphs_on=frames.enabled)
    return result


def finufft_frame(args, coord: np.ndarray, weighted: np.ndarray, counter):
    """The (e) frame function, or None without finufft: ``window_shift`` new arms per call, a type-1
    NUFFT of each completed block (its coil images kept) and of the extra arms, RSS of the sum."""
    try:
        import finufft
    except ImportError:
        return None
    m, apf, ws = args.matrix, args.arms_per_frame, args.window_shift
    interleaves, nc = weighted.shape[:2]
    blocks_per_frame, extra = divmod(apf, ws)
    points = (2 * np.pi / m) * coord.astype(np.float32)  # radians, finufft's [-pi, pi)

    def plan():
        return finufft.Plan(1, (m, m), n_trans=nc, eps=args.finufft_eps, isign=1, dtype=np.complex64,
                            upsampfac=1.25, nthreads=os.cpu_count())
    block_plan, extra_plan = plan(), plan()

    def images(nufft, arms):
        xy = points[arms].reshape(-1, 2)
        nufft.setpts(np.ascontiguousarray(xy[:, 0]), np.ascontiguousarray(xy[:, 1]))
        return nufft.execute(np.ascontiguousarray(np.moveaxis(weighted[arms], 1, 0).reshape(nc, -1))) / m

    blocks = collections.deque(maxlen=max(blocks_per_frame, 1))

    def frame():
        block = [next(counter) % interleaves for _ in range(ws)]
        total = 0
        if blocks_per_frame:
            blocks.append(images(block_plan, block))
            total = sum(blocks)
        if extra:  # the first arms after the block
            total = total + images(extra_plan, [(block[-1] + 1 + j) % interleaves for j in range(extra)])
        return _coils.rss(total)

    return frame


def session_fps(args, tmp: Path) -> dict:
    """Frames per second of a socket session with the generated data set."""
    data = tmp / "spiral.h5"
    gen = [sys.executable, "tools/generate_spiral_dataset.py", "-o", str(data), "--metafile-dir", str(tmp),
           "--coils", str(args.coils), "--arms", str(args.session_arms), "--res-mm", "1",
           "--fov-cm", str(args.matrix / 10), "--golden-angle", "--interleaves", "144",
           "--samples", str(args.samples)] + (["--bart"] if shutil.which("bart") else [])
    subprocess.run(gen, cwd=REPO_DIR, check=True, capture_output=True)
    config = tmp / "rtspiral.toml"
    config.write_text(f'metafile_paths = ["{tmp}"]\n[reconstruction]\ngpu_device = {args.gpu}\n'
                      f'arms_per_frame = {args.arms_per_frame}\nwindow_shift = {args.window_shift}\n')
    (tmp / "simplenufft1arm.json").write_text(json.dumps({"parameters": {"spiral_config": str(config)}}))
    log = tmp / "server.log"
    results = {}
    with ServerProcess(host=None, log=log, cwd=tmp) as server:
        for run in ("", "_again"):  # the second session reuses the first one's gridding matrices
            start = time.perf_counter()
            done = subprocess.run([sys.executable, str(REPO_DIR / "client.py"), "-p", str(server.port), "-c",
                                   "simplenufft1arm", "-o", str(tmp / f"out{run}.h5"), str(data)],
                                  cwd=tmp, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(done.stdout + done.stderr)
            frames = int(re.search(r"received (\d+) images", done.stdout).group(1))
            session = float(re.findall(r"ended after ([0-9.]+) s", log.read_text())[-1])
            results.update({f"frames{run}": frames, f"session{run}_s": session,
                            f"fps_session{run}": frames / session, f"client_wall{run}_s": wall})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", type=int, default=-1, help="CUDA device, -1 for the CPU")
    parser.add_argument("--matrix", type=int, default=240)
    parser.add_argument("--coils", type=int, default=20)
    parser.add_argument("--arms-per-frame", type=int, default=55)
    parser.add_argument("--samples", type=int, default=1300)
    parser.add_argument("--window-shift", type=int, default=17)
    parser.add_argument("--session-arms", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup-s", type=float, default=1.0, help="seconds of untimed calls before each timing")
    parser.add_argument("--skip-session", action="store_true", help="only (a)-(c) (and (e))")
    parser.add_argument("--finufft-eps", type=float, default=1e-3, help="tolerance of the (e) NUFFTs")
    args = parser.parse_args(argv)
    backend = _backend.select(args.gpu)
    result = {"date_utc": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}",
              "device": device_name(backend), "args": vars(args)}
    result.update(per_frame(args, backend))
    if not args.skip_session:
        with tempfile.TemporaryDirectory() as tmp:
            result.update(session_fps(args, Path(tmp)))
    for key, value in result.items():
        print(f"{key:20s} {value:.4f}" if isinstance(value, float) else f"{key:20s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
