"""fov_oversampling = 1.5 in all three spiral modules, over real sockets: the matrix grows by 1.5 at
the same pixel spacing, the header's field of view with it (FOV / matrix = the prescribed
resolution), and the image still matches its reference (sigpy's adjoint NUFFT for simplenufft1arm;
the generator's analytic truth, at the centre of the larger grid, for the two BART modules)."""
import importlib.util
import json
import shutil
import sys

import h5py
import numpy as np
import pytest
import sigpy

from conftest import REPO, images_of, nrmse, run_client

sys.path.insert(0, str(REPO / "modules"))
import _spiral  # noqa: E402

_spec = importlib.util.spec_from_file_location("generate_spiral_dataset", REPO / "tools" / "generate_spiral_dataset.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

FOV_CM, RES_MM, INTERLEAVES, COILS, PRE, ARMS = 19.2, 3.0, 16, 2, 10, 160
OVERSAMPLING = 1.5
M1 = 64  # 10 * 19.2 / 3
M = 96  # the matrix with fov_oversampling 1.5, at the same 3 mm
START = M // 2 - M1 // 2  # the 64 x 64 of the prescribed FOV inside the 96 x 96 image (both flips alike)
X = (np.arange(M1) - M1 // 2) / M1
INSIDE = np.hypot(X[:, None], X[None, :]) <= 0.5  # the spiral's circular field of view
needs_bart = pytest.mark.skipif(shutil.which("bart") is None, reason="needs the bart binary (make test installs it)")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """160 arms (0.8 s, 2 coils) of a static object with pilot-tone and ECG waveforms; its metafile folder."""
    folder = tmp_path_factory.mktemp("fov")
    data = folder / "spiral.h5"
    assert gen.main(["-o", str(data), "--metafile-dir", str(folder / "meta"), "--fov-cm", str(FOV_CM),
                     "--res-mm", str(RES_MM), "--interleaves", str(INTERLEAVES), "--coils", str(COILS),
                     "--arms", str(ARMS), "--resp-hz", "1.25", "--card-hz", "4", "--resp-px", "0", "--card-px", "0",
                     "--waveforms"]) == 0
    return data, folder / "meta"


def run(server, tmp_path, scan, module, *client_args, oversampling=OVERSAMPLING, **settings):
    """One session of ``module`` with ``fov_oversampling`` and ``settings``; pixels ``[n, y, x]`` and headers."""
    data, meta = scan
    folder = tmp_path / f"{module}-{oversampling}"
    folder.mkdir()
    lines = [f'metafile_paths = ["{meta}"]', "[reconstruction]", f"fov_oversampling = {oversampling}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    (folder / "spiral.toml").write_text("\n".join(lines) + "\n")
    (folder / f"{module}.json").write_text(json.dumps({"parameters": {"spiral_config": str(folder / "spiral.toml")}}))
    out = folder / "out.h5"
    result = run_client(server.port, *client_args, "-c", module, "-o", str(out), "-G", "g", str(data), cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    pixels, heads, _ = images_of(out, "g")
    return pixels[:, 0, 0].astype(float), heads


def assert_geometry(heads, count, m=M):
    """``count`` images of m x m whose FOV / matrix is the prescribed resolution."""
    assert len(heads) == count
    assert all(list(h["matrix_size"]) == [m, m, 1] for h in heads)
    fov = np.array([h["field_of_view"] for h in heads], dtype=float)
    np.testing.assert_allclose(fov[:, :2] / m, RES_MM, rtol=1e-6)
    np.testing.assert_allclose(fov[:, 2], fov[0, 2])  # the slice thickness as the header gives it


def centre(image):
    """The prescribed 64 x 64 field of view at the centre of an M x M module image."""
    return image[START:START + M1, START:START + M1]


def sigpy_frame(scan, first, count):
    """RSS of sigpy.nufft_adjoint of imaging arms first ... first + count - 1 on the M grid, with the
    metafile DCF, in the module's orientation."""
    data, meta_dir = scan
    with h5py.File(data, "r") as f:
        records = f["dataset/data"][...]
    meta = _spiral.load_metafile(next(meta_dir.glob("*.mat")))
    assert _spiral.matrix_size(meta, OVERSAMPLING) == M
    coord = _spiral.grid_coordinates(meta.kx[:, :INTERLEAVES], meta.ky[:, :INTERLEAVES], M)
    imaging = [r for r in records if r["head"]["scan_counter"] > 0]
    total = 0
    for r in imaging[first:first + count]:
        arm = r["head"]["idx"]["kspace_encode_step_1"] % INTERLEAVES
        samples = r["data"].view(np.complex64).reshape(COILS, -1)[:, PRE:] * meta.w
        total = total + sigpy.nufft_adjoint(samples.astype(np.complex128), coord[arm].astype(np.float64), (COILS, M, M))
    return np.sqrt((np.abs(total) ** 2).sum(0))[::-1].T


def truth(scan, first=0, count=INTERLEAVES):
    """The generator's truth of ``count`` arms from ``first``, band-limited to the sampled disk, 64 x 64."""
    return np.abs(gen.truth_frame(scan[0], first, count, window="disk"))


def assert_matches(images, references, tolerance):
    for image, reference in zip(images, references):
        assert nrmse(image[INSIDE], reference[INSIDE]) <= tolerance


def test_simplenufft1arm_frames_with_oversampled_fov(server, tmp_path, scan):
    pixels, heads = run(server, tmp_path, scan, "simplenufft1arm", gpu_device=-1, arms_per_frame=INTERLEAVES,
                        window_shift=INTERLEAVES)
    assert_geometry(heads, ARMS // INTERLEAVES)
    for k in (0, len(pixels) - 1):
        assert nrmse(pixels[k], sigpy_frame(scan, k * INTERLEAVES, INTERLEAVES)) <= 1e-3
    assert_matches([centre(pixels[0])], [truth(scan)], 0.4)


@needs_bart
def test_tv_frames_with_oversampled_fov(server, tmp_path, scan):
    settings = dict(arms_per_frame=INTERLEAVES, num_recon_frames=2, reg_lambda=0.01, num_iter=20)
    pixels, heads = run(server, tmp_path, scan, "rtspiral_bart_tvrecon", **settings)
    plain, plain_heads = run(server, tmp_path, scan, "rtspiral_bart_tvrecon", oversampling=1.0, **settings)
    assert_geometry(heads, 2)
    assert_geometry(plain_heads, 2, M1)
    assert_matches(map(centre, pixels), plain, 0.08)  # the same frames, at the centre of a larger grid
    assert_matches(map(centre, pixels), [truth(scan, k * INTERLEAVES) for k in range(2)], 0.4)


@needs_bart
def test_xdgrasp_bins_with_oversampled_fov(server, tmp_path, scan):
    settings = dict(num_iter=20, n_respiratory_bins=2, n_cardiac_bins=1)
    pixels, heads = run(server, tmp_path, scan, "spiral_xdgrasp_recon", "-w", **settings)
    plain, plain_heads = run(server, tmp_path, scan, "spiral_xdgrasp_recon", "-w", oversampling=1.0, **settings)
    assert_geometry(heads, 2)
    assert_geometry(plain_heads, 2, M1)
    assert_matches(map(centre, pixels), plain, 0.08)
    assert_matches(map(centre, pixels), [truth(scan)] * 2, 0.4)  # a static object: every bin is the truth
