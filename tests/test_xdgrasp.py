"""spiral_xdgrasp_recon over a socket with the real bart: one image per (respiratory, cardiac) bin,
each close to the true motion state of its bin."""
import importlib.util
import json
import sys

import h5py
import numpy as np
import pytest

from conftest import REPO, images_of, run_client

sys.path.insert(0, str(REPO / "modules"))
import _binning  # noqa: E402

_spec = importlib.util.spec_from_file_location("generate_spiral_dataset", REPO / "tools" / "generate_spiral_dataset.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)
NR, NC = 6, 2


def correlation(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.parametrize("source", ["pilottone", "pilottone_derivative", "ecg"])
def test_binned_images_match_the_true_states(server, tmp_path, source):
    data = tmp_path / "spiral.h5"
    assert gen.main(["-o", str(data), "--metafile-dir", str(tmp_path / "meta"), "--fov-cm", "19.2", "--res-mm", "3",
                     "--interleaves", "16", "--coils", "4", "--arms", "1200", "--resp-hz", "0.3", "--card-hz", "1.1",
                     "--resp-px", "3", "--card-px", "0", "--waveforms", "--bart"]) == 0
    (tmp_path / "xd.toml").write_text(f'metafile_paths = ["{tmp_path / "meta"}"]\n[reconstruction]\nnum_iter = 30\n'
                                      f'[binning]\nn_respiratory_bins = {NR}\nn_cardiac_bins = {NC}\n'
                                      f'trigger_source = "{source}"\n')
    (tmp_path / "spiral_xdgrasp_recon.json").write_text(json.dumps({"parameters": {"spiral_config": str(tmp_path / "xd.toml")}}))
    out = tmp_path / "out.h5"
    result = run_client(server.port, "-w", "-c", "spiral_xdgrasp_recon", "-o", str(out), "-G", "g", str(data),
                        cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    pixels, heads, _ = images_of(out, "g")
    assert pixels.shape == (NR * NC, 1, 1, 64, 64)
    assert sorted(zip(heads["set"], heads["phase"])) == [(r, c) for r in range(NR) for c in range(NC)]
    with h5py.File(data, "r") as f:
        resp_truth, shifts = f["dataset/truth_resp"][...], f["dataset/truth_shift_px"][...]
        static = f["dataset/truth_image"][...]
    resp_bins = _binning.respiratory_bins(resp_truth, NR, 0.1)  # the bins the true respiration says
    x = (np.arange(64) - 32) / 64
    inside = np.hypot(x[:, None], x[None, :]) <= 0.5
    own = []
    for image, head in zip(pixels[:, 0, 0].astype(float), heads):
        state = shifts[resp_bins == head["set"]].mean(axis=0)  # the mean position of the bin's arms
        truth = np.abs(gen.to_module_orientation(gen.bandlimit(gen.shift_image(static, state), "hann")))
        smoothed = np.abs(gen.bandlimit(image.astype(np.complex64), "hann"))  # the same low-pass on both
        own.append(correlation(smoothed[inside], truth[inside]))
    assert min(own) >= 0.9
