"""BART bench: rtspiral_bart_tvrecon's session time against the same BART commands run by hand.

``python bench/bench_bart.py [--arms 256] [--coils 8] [--arms-per-frame 8] [--iterations 60]``

(a) by hand: the cfl inputs written once, then ``bart nlinv``, ``bart nufft -a`` (data scale) and
    ``bart pics`` (the module's command lines) timed as subprocesses, as a user would run them;
(b) the module: ``client.py -c rtspiral_bart_tvrecon`` against ``main.py``; the server's session
    time (from its log) covers receiving, arranging, both BART runs, the images and CLOSE.
Prints (b)/(a) - 1, the framework's overhead; target <= 10 %.
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))
sys.path.insert(0, str(REPO_DIR / "modules"))
sys.path.insert(0, str(REPO_DIR / "bench"))

import _bart  # noqa: E402
import _spiral  # noqa: E402
import ismrmrd  # noqa: E402
import rtspiral_bart_tvrecon as tv  # noqa: E402
from bench_core import machine_description  # noqa: E402
from tools._server_harness import ServerProcess  # noqa: E402

TARGET = 0.10


def by_hand(data: Path, meta_dir: Path, args: argparse.Namespace, work: Path) -> float:
    """Seconds of nlinv + pics run as plain bart commands on the module's arrays."""
    dset = ismrmrd.Dataset(str(data), "dataset", mode="r")
    arms = [a for a in (dset.read_acquisition(i) for i in range(dset.number_of_acquisitions()))
            if a.scan_counter > 0]
    dset.close()
    meta = _spiral.load_metafile(next(meta_dir.glob("*.mat")))
    m = _spiral.matrix_size(meta)
    coord = _spiral.grid_coordinates(meta.kx[:, :meta.repetitions], meta.ky[:, :meta.repetitions], m)
    frames = len(arms) // args.arms_per_frame
    kspace, traj = tv.bart_arrays(arms, coord, meta.pre_discard, meta.repetitions, frames, args.arms_per_frame)
    ns, ncoil = kspace.shape[1], kspace.shape[3]
    _bart.write_cfl(work / "ksp", np.moveaxis(kspace, -1, 2).reshape(1, ns, -1, ncoil))
    _bart.write_cfl(work / "trj", np.moveaxis(traj, -1, 2).reshape(3, ns, -1))
    _bart.write_cfl(work / "k", kspace)
    _bart.write_cfl(work / "t", traj)
    bart = _bart.find_bart()
    start = time.perf_counter()
    subprocess.run([bart, "nlinv", "-d4", "-i", "13", "-t", "trj", "ksp", "img", "sens"], cwd=work, check=True,
                   capture_output=True)
    middle = time.perf_counter()
    sens = _bart.read_cfl(work / "sens").reshape(2 * m, 2 * m, ncoil)[m // 2:m // 2 + m, m // 2:m // 2 + m]
    sens = sens / np.maximum(np.sqrt((np.abs(sens) ** 2).sum(-1, keepdims=True)), 1e-30)
    _bart.write_cfl(work / "s", sens.reshape(m, m, 1, ncoil))
    first = 5 if frames > 5 else 0
    _bart.write_cfl(work / "ks", kspace[..., first:])
    _bart.write_cfl(work / "ts", traj[..., first:])
    before_scale = time.perf_counter()
    subprocess.run([bart, "nufft", "-a", "-d", f"{m}:{m}:1", "ts", "ks", "adj"], cwd=work, check=True,
                   capture_output=True)
    adjoint = _bart.read_cfl(work / "adj").reshape(m, m, ncoil, -1)
    combined = np.abs((np.conj(sens.reshape(m, m, ncoil, 1)) * adjoint).sum(axis=2))
    p90, median, peak = np.percentile(combined, 90), np.median(combined), combined.max()
    scale = p90 if peak - p90 < 2 * (p90 - median) else peak
    after_scale = time.perf_counter()
    subprocess.run([bart, "pics", "-m", "-w", f"{scale:g}", "-S", "-e", "-R", f"T:1024:1024:{args.reg_lambda * frames}",
                    "-i", str(args.iterations), "-t", "t", "k", "s", "x"], cwd=work, check=True, capture_output=True)
    return (middle - start) + (after_scale - before_scale) + (time.perf_counter() - after_scale)


def module_session(data: Path, meta_dir: Path, args: argparse.Namespace, work: Path) -> float:
    (work / "tv.toml").write_text(f'metafile_paths = ["{meta_dir}"]\n[reconstruction]\n'
                                  f"arms_per_frame = {args.arms_per_frame}\nreg_lambda = {args.reg_lambda}\n"
                                  f"num_iter = {args.iterations}\n")
    (work / "rtspiral_bart_tvrecon.json").write_text(json.dumps({"parameters": {"spiral_config": str(work / "tv.toml")}}))
    log = work / "server.log"
    with ServerProcess(host=None, log=log, cwd=work) as server:
        subprocess.run([sys.executable, str(REPO_DIR / "client.py"), "-p", str(server.port), "-c",
                        "rtspiral_bart_tvrecon", "-o", str(work / "out.h5"), str(data)], cwd=work, check=True,
                       capture_output=True)
    return float(re.findall(r"ended after ([0-9.]+) s", log.read_text())[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", type=int, default=256)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--arms-per-frame", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--reg-lambda", type=float, default=0.01)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_bart_") as tmp:
        work = Path(tmp)
        data, meta_dir = work / "spiral.h5", work / "meta"
        subprocess.run([sys.executable, str(REPO_DIR / "tools" / "generate_spiral_dataset.py"), "-o", str(data),
                        "--metafile-dir", str(meta_dir), "--fov-cm", "19.2", "--res-mm", "3", "--interleaves", "16",
                        "--coils", str(args.coils), "--arms", str(args.arms), "--motion-px", "2", "--bart"],
                       check=True, capture_output=True)
        hand = by_hand(data, meta_dir, args, work)
        module = module_session(data, meta_dir, args, work)
    overhead = module / hand - 1
    print(f"date (UTC):      {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}")
    print(f"machine:         {machine_description()}")
    print(f"bart:            {_bart.capabilities(_bart.find_bart()).version}")
    print(f"data:            {args.arms} arms x {args.coils} coils, {args.arms_per_frame} arms per frame, "
          f"{args.iterations} pics iterations")
    print(f"(a) by hand:     {hand:.2f} s (nlinv + nufft + pics)")
    print(f"(b) module:      {module:.2f} s (server session)")
    print(f"overhead:        {100 * overhead:.1f} %  target <= {100 * TARGET:.0f} %  "
          f"{'PASS' if overhead <= TARGET else 'FAIL'}")
    return 0 if overhead <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
