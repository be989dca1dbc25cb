"""rtspiral_bart_tvrecon over a socket with the real bart: temporal TV beats gridding of the same arms."""
import importlib.util
import json
import sys

import h5py
import numpy as np
import sigpy

from conftest import GIRF_FILE, REPO, images_of, nrmse, run_client

sys.path.insert(0, str(REPO / "modules"))
import _spiral  # noqa: E402

_spec = importlib.util.spec_from_file_location("generate_spiral_dataset", REPO / "tools" / "generate_spiral_dataset.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)
ARMS_PER_FRAME, INTERLEAVES, COILS = 4, 16, 4


def test_tv_frames_are_closer_to_the_truth_than_gridding_of_the_same_arms(server, tmp_path):
    data = tmp_path / "spiral.h5"
    assert gen.main(["-o", str(data), "--metafile-dir", str(tmp_path / "meta"), "--fov-cm", "19.2", "--res-mm", "3",
                     "--interleaves", str(INTERLEAVES), "--coils", str(COILS), "--arms", "64", "--motion-px", "2",
                     "--motion-hz", "0.5", "--bart"]) == 0
    (tmp_path / "tv.toml").write_text(f'metafile_paths = ["{tmp_path / "meta"}"]\n[reconstruction]\n'
                                      f"arms_per_frame = {ARMS_PER_FRAME}\nnum_chunks = 2\nreg_lambda = 0.01\n"
                                      "num_iter = 40\n")
    (tmp_path / "rtspiral_bart_tvrecon.json").write_text(json.dumps({"parameters": {"spiral_config": str(tmp_path / "tv.toml")}}))
    out = tmp_path / "out.h5"
    result = run_client(server.port, "-c", "rtspiral_bart_tvrecon", "-o", str(out), "-G", "g", str(data), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    pixels, heads, _ = images_of(out, "g")
    assert pixels.shape == (16, 1, 1, 64, 64) and list(heads["repetition"]) == list(range(16))
    meta = _spiral.load_metafile(next((tmp_path / "meta").glob("*.mat")))
    coord = _spiral.grid_coordinates(meta.kx[:, :INTERLEAVES], meta.ky[:, :INTERLEAVES], 64)
    with h5py.File(data, "r") as f:
        arms = [r for r in f["dataset/data"][...] if r["head"]["scan_counter"] > 0]
    x = (np.arange(64) - 32) / 64
    inside = np.hypot(x[:, None], x[None, :]) <= 0.5
    tv_errors, grid_errors = [], []
    for k, image in enumerate(pixels[:, 0, 0].astype(float)):
        truth = np.abs(gen.truth_frame(data, k * ARMS_PER_FRAME, ARMS_PER_FRAME, window="disk"))
        gridded = sum(sigpy.nufft_adjoint(r["data"].view(np.complex64).reshape(COILS, -1)[:, 10:] * meta.w,
                                          coord[r["head"]["idx"]["kspace_encode_step_1"] % INTERLEAVES], (COILS, 64, 64))
                      for r in arms[k * ARMS_PER_FRAME:(k + 1) * ARMS_PER_FRAME])
        gridded = np.sqrt((np.abs(gridded) ** 2).sum(0))[::-1].T
        tv_errors.append(nrmse(image[inside], truth[inside]))
        grid_errors.append(nrmse(gridded[inside], truth[inside]))
    assert max(tv_errors) < 0.5 < min(grid_errors)
    assert np.mean(tv_errors) < 0.5 * np.mean(grid_errors)


def test_girf_correction_lowers_the_tv_error_on_girf_distorted_data(server, tmp_path):
    girf = GIRF_FILE
    data = tmp_path / "spiral.h5"
    assert gen.main(["-o", str(data), "--metafile-dir", str(tmp_path / "meta"), "--fov-cm", "19.2", "--res-mm", "3",
                     "--interleaves", str(INTERLEAVES), "--coils", str(COILS), "--arms", "32", "--girf", str(girf),
                     "--bart"]) == 0
    x = (np.arange(64) - 32) / 64
    inside = np.hypot(x[:, None], x[None, :]) <= 0.5
    errors = {}
    for apply in (False, True):
        (tmp_path / "tv.toml").write_text(f'metafile_paths = ["{tmp_path / "meta"}"]\ngirf_file = "{girf}"\n'
                                          f"[reconstruction]\napply_girf = {str(apply).lower()}\n"
                                          "arms_per_frame = 16\nreg_lambda = 0.01\nnum_iter = 30\n")
        (tmp_path / "rtspiral_bart_tvrecon.json").write_text(
            json.dumps({"parameters": {"spiral_config": str(tmp_path / "tv.toml")}}))
        out = tmp_path / f"out_{apply}.h5"
        result = run_client(server.port, "-c", "rtspiral_bart_tvrecon", "-o", str(out), "-G", "g", str(data),
                            cwd=tmp_path)
        assert result.returncode == 0, result.stdout
        image = images_of(out, "g")[0][0, 0, 0].astype(float)
        truth = np.abs(gen.truth_frame(data, 0, 16, window="disk"))
        errors[apply] = nrmse(image[inside], truth[inside])
    assert errors[True] < errors[False]
