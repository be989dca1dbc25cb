"""simplenufft1arm end to end over a socket, on the CPU and (on the device machine) the GPU: frames from tools/generate_spiral_dataset.py data
checked against sigpy's adjoint NUFFT of the same arms (an independent implementation) and against
the generator's analytic ground truth."""
import importlib.util
import json
import shutil
import sys

import h5py
import numpy as np
import pytest
import sigpy

from conftest import GIRF_FILE, REPO, compute_devices, images_of, nrmse, run_client

sys.path.insert(0, str(REPO / "modules"))
import _spiral  # noqa: E402

_spec = importlib.util.spec_from_file_location("generate_spiral_dataset", REPO / "tools" / "generate_spiral_dataset.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)
APF, SHIFT, INTERLEAVES, COILS, PRE = 16, 8, 16, 6, 10
DEVICES = compute_devices()
# BART's phantom in CI (`make test` installs bart); the GPU machine has no bart and simulates the
# generator's own analytic phantom instead (no NUFFT either: still independent of the module).
BART = ["--bart"] if shutil.which("bart") else []


def make_session(tmp_path, *gen_args, **recon):
    """Generate a data set and a TOML config in ``tmp_path``; returns (data file, client cwd)."""
    data = tmp_path / "spiral.h5"
    assert gen.main(["-o", str(data), "--metafile-dir", str(tmp_path / "meta"), "--fov-cm", "19.2", "--res-mm", "3",
                     "--interleaves", str(INTERLEAVES), "--coils", str(COILS), *gen_args]) == 0
    settings = {"gpu_device": -1, "arms_per_frame": APF, "window_shift": SHIFT, **recon}
    # girf_file is left at its default, the repository's GIRF/ file named by a relative path.
    lines = [f'metafile_paths = ["{tmp_path / "meta"}"]', "[reconstruction]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    (tmp_path / "spiral.toml").write_text("\n".join(lines) + "\n")
    (tmp_path / "simplenufft1arm.json").write_text(json.dumps({"parameters": {"spiral_config": str(tmp_path / "spiral.toml")}}))
    return data


def run_module(server, tmp_path, data, name="out"):
    out = tmp_path / f"{name}.h5"
    result = run_client(server.port, "-c", "simplenufft1arm", "-o", str(out), "-G", "g", str(data), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    return images_of(out, "g")


def sigpy_frame(data, first, count, coord_key=None, hann=False):
    """RSS of sigpy.nufft_adjoint over imaging arms first..first+count-1 with the metafile DCF
    (times the radial Hann window with ``hann``), in the module's output orientation."""
    with h5py.File(data, "r") as f:
        records = f["dataset/data"][...]
        coord_truth = f["dataset/truth_coordinates"][...] if coord_key else None
    meta = _spiral.load_metafile(next((data.parent / "meta").glob("*.mat")))
    m = _spiral.matrix_size(meta)
    coord = coord_truth if coord_truth is not None else _spiral.grid_coordinates(meta.kx[:, :INTERLEAVES],
                                                                                meta.ky[:, :INTERLEAVES], m)
    imaging = [r for r in records if r["head"]["scan_counter"] > 0]
    weight = meta.w
    if hann:
        weight = weight * gen.kspace_window(np.hypot(coord[0, :, 0], coord[0, :, 1]) / (m / 2), "hann")
    total = 0
    for r in imaging[first:first + count]:
        arm = r["head"]["idx"]["kspace_encode_step_1"] % INTERLEAVES
        samples = r["data"].view(np.complex64).reshape(COILS, -1)[:, PRE:] * weight
        total = total + sigpy.nufft_adjoint(samples.astype(np.complex128), coord[arm].astype(np.float64), (COILS, m, m))
    return np.sqrt((np.abs(total) ** 2).sum(0))[::-1].T


@pytest.mark.parametrize("gpu", DEVICES)
@pytest.mark.parametrize("combine", ["rssq", "adaptive"])
def test_frames_stream_with_exact_footprint_and_match_truth(server, tmp_path, combine, gpu):
    data = make_session(tmp_path, "--arms", "64", "--motion-px", "2", "--motion-hz", "0.5", *BART,
                        coil_combine=combine, kspace_filter="hann", gpu_device=gpu)
    pixels, heads, attrs = run_module(server, tmp_path, data)
    # frames end at arms 15, 23, ..., 63: (64 - 16) // 8 + 1 = 7 frames, image_index 1..7, repetition 0..6
    assert pixels.shape == (7, 1, 1, 64, 64) and pixels.dtype == np.int16
    assert list(heads["image_index"]) == list(range(1, 8)) and list(heads["repetition"]) == list(range(7))
    assert set(heads["image_type"]) == {1}
    x = (np.arange(64) - 32) / 64
    inside = np.hypot(x[:, None], x[None, :]) <= 0.5  # the spiral's circular field of view
    for k, image in enumerate(pixels[:, 0, 0].astype(float)):
        # the truth at the frame's mean position, through the same Hann window as the k-space
        truth = np.abs(gen.truth_frame(data, k * SHIFT, APF, window="hann"))
        assert nrmse(image[inside], truth[inside]) <= 0.15
        if combine == "rssq":
            assert nrmse(image, sigpy_frame(data, k * SHIFT, APF, hann=True)) <= 1e-3


@pytest.mark.parametrize("gpu", DEVICES)
def test_slices_never_mix_and_noise_is_not_gridded(server, tmp_path, gpu):
    data = make_session(tmp_path, "--arms", "32", "--slices", "2", "--noise", "0.01", gpu_device=gpu)
    pixels, heads, _ = run_module(server, tmp_path, data)
    assert list(heads["slice"]) == [0, 0, 0, 1, 1, 1]  # 3 frames per slice of 32 arms, none spanning both
    for k, image in enumerate(pixels[:, 0, 0].astype(float)):
        first = 32 * (k // 3) + SHIFT * (k % 3)
        assert nrmse(image, sigpy_frame(data, first, APF)) <= 1e-3


@pytest.mark.parametrize("gpu", DEVICES)
def test_girf_correction_lowers_the_error_on_girf_distorted_data(server, tmp_path, gpu):
    data = make_session(tmp_path, "--arms", "16", "--girf", str(GIRF_FILE), *BART, apply_girf=False, gpu_device=gpu)
    plain = run_module(server, tmp_path, data)[0][0, 0, 0].astype(float)
    (tmp_path / "spiral.toml").write_text((tmp_path / "spiral.toml").read_text().replace("apply_girf = false",
                                                                                        "apply_girf = true"))
    corrected = run_module(server, tmp_path, data, "corrected")[0][0, 0, 0].astype(float)
    truth = np.abs(gen.truth_frame(data, 0, APF, window="disk"))
    reference = sigpy_frame(data, 0, APF, coord_key="truth_coordinates")
    assert nrmse(corrected, reference) < 1e-2 < nrmse(plain, reference)
    assert nrmse(corrected, truth) < nrmse(plain, truth)


def test_bad_config_value_gives_an_error_text(server, tmp_path):
    data = make_session(tmp_path, "--arms", "16", coil_combine="best")
    result = run_client(server.port, "-c", "simplenufft1arm", "-o", str(tmp_path / "o.h5"), str(data), cwd=tmp_path)
    assert result.returncode == 1 and "coil_combine = 'best' is not rssq or adaptive" in result.stdout


def test_warm_up_reads_the_default_configuration_and_starts_no_gpu_without_cupy(monkeypatch):
    """simplenufft1arm.warm_up (run by the server at start-up): without CuPy it returns at once; with
    CuPy it reads the default TOML and starts the device that ``gpu_device`` names (here the backend
    falls back to the CPU, so no kernel is compiled)."""
    import _backend
    import _gpu_gridding
    import simplenufft1arm
    compiled, asked = [], []
    monkeypatch.setattr(_gpu_gridding, "warm_up", lambda: compiled.append(True))
    monkeypatch.setattr(_backend, "select", lambda gpu: asked.append(gpu) or _backend.CPU)
    real_find_spec = importlib.util.find_spec
    for cupy_spec in (None, object()):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, spec=cupy_spec: spec if name == "cupy" else real_find_spec(name, *a))
        simplenufft1arm.warm_up()
    assert asked == [simplenufft1arm.SpiralConfig.load(None, simplenufft1arm._LogOnly()).gpu_device]
    assert compiled == []
