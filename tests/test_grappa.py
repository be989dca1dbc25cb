"""modules/grappa.py: the vectorised kernel fit and unaliasing against loops over kernel points, POCS,
the session's images (slices, contrasts, averages, repetitions, 3-D partitions, separate calibration);
over real sockets (main.py and client.py subprocesses) on the generator's data and on BART-made data:
R = 2 and 3 with 24 ACS lines and noise within NRMSE 0.06 of the fully sampled RSS inside the object while
simplefft on the same data is above 0.2, partial Fourier 0.75 by POCS, 3-D and multi-slice geometry."""
import copy
import shutil
import subprocess
import sys

import h5py
import ismrmrd
import ismrmrd.xsd
import numpy as np
import pytest
import scipy.ndimage

import mrdfile
from conftest import REPO, ServerProcess, images_of, nrmse, rss, run_module_client

sys.path.insert(0, str(REPO / "modules"))
import _errors  # noqa: E402
import grappa  # noqa: E402
import simplefft  # noqa: E402
from tools import _cartesian_sampling, _mrd_header  # noqa: E402
from tools import generate_cartesian_shepp_logan_dataset as gen  # noqa: E402


COILS = 8
NOISE = "0.003"  # image-domain noise, relative to the phantom's maximum (1); inside the object 0.1-0.4
LIMIT = 0.06     # NRMSE inside the object, against the fully sampled RSS
needs_bart = pytest.mark.skipif(shutil.which("bart") is None, reason="needs the bart binary (make test installs it)")


def generate(path, *args):
    assert gen.main(["-o", str(path), "-c", str(COILS), *args]) == 0
    with h5py.File(path, "r") as f:
        return {k: f["dataset"][k][...] for k in ("coil_images", "phantom", "csm", "noise_covariance")}


def read_session(path):
    """(acquisitions, parsed header) of a file, as a session would bring them."""
    dset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        acqs = [dset.read_acquisition(i) for i in range(dset.number_of_acquisitions())]
        return acqs, ismrmrd.xsd.CreateFromDocument(dset.read_xml_header())
    finally:
        dset.close()


class FakeConnection:
    def __init__(self, items, folder="/nonexistent/dependencies"):
        self.items, self.dependencyFolder, self.images, self.texts = items, folder, [], []

    def __iter__(self):
        yield from self.items
        yield None

    def send_image(self, images):
        self.images += [im for im in (images if isinstance(images, list) else [images]) if im is not None]

    def send_logging(self, level, text):
        self.texts.append(f"{level.strip()} {text}")

    def send_close(self):
        pass


def run_module(module, acqs, header, **parameters):
    """Images of ``module.process`` on copies of ``acqs`` (in this process)."""
    conn = FakeConnection([copy.deepcopy(a) for a in acqs])
    module.process(conn, {"parameters": parameters} if parameters else module.__name__, header)
    return conn


# ------------------------------------------------------------------------------------------- the kernel

def naive_sources(kspace, z, y, x, kernel):
    """The source vector of the target at full-grid (z, y, x) + the block-0 line it follows, by loops."""
    ncoil, nz, ny, nx = kspace.shape
    values = []
    for c in range(ncoil):
        for bz in range(kernel.z.size):
            for by in range(kernel.y.size):
                for bx in range(kernel.x.size):
                    zz = z + kernel.z.source_index[bz] - kernel.z.anchor
                    yy = y + kernel.y.source_index[by] - kernel.y.anchor
                    xx = x + kernel.x.source_index[bx] - kernel.x.anchor
                    inside = 0 <= zz < nz and 0 <= yy < ny and 0 <= xx < nx
                    values.append(kspace[c, zz, yy, xx] if inside else 0)
    return np.array(values)


@pytest.mark.parametrize("accel,size,shape", [((1, 2), (5, 4, None), (3, 1, 20, 12)),
                                              ((1, 3), (3, 3, None), (2, 1, 22, 9)),
                                              ((2, 2), (3, 2, 2), (2, 8, 10, 6))])
def test_vectorised_unaliasing_equals_a_loop_over_kernel_points(accel, size, shape):
    rng = np.random.default_rng(0)
    kernel = grappa.Kernel.make(accel, size)
    ncoil, nz, ny, nx = shape
    full = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    (rz, ry), origin = accel, (0 if accel[0] == 1 else 1, 1)
    measured = np.zeros((nz, ny), dtype=bool)
    measured[origin[0]::rz, origin[1]::ry] = True
    kspace = np.where(measured[None, :, :, None], full, 0).astype(np.complex64)
    nsrc = ncoil * kernel.sources_per_coil
    weights = (rng.standard_normal((nsrc, len(kernel.target_offsets) * ncoil))
               + 1j * rng.standard_normal((nsrc, len(kernel.target_offsets) * ncoil))).astype(np.complex64)
    fill = np.ones((nz, ny), dtype=bool)
    out = grappa.unalias(kspace, measured, fill, kernel, origin, weights)
    np.testing.assert_array_equal(out[:, measured], kspace[:, measured])
    for z in range(nz):
        for y in range(ny):
            if measured[z, y]:
                continue
            z0 = z - (z - origin[0]) % rz if rz > 1 else z  # the acquired grid line the target follows
            y0 = y - (y - origin[1]) % ry
            t = kernel.target_offsets.index((z - z0, y - y0))
            for x in range(nx):
                expected = naive_sources(kspace, z0, y0, x, kernel) @ weights[:, t * ncoil:(t + 1) * ncoil]
                np.testing.assert_allclose(out[:, z, y, x], expected, rtol=1e-4, atol=1e-4)


def test_calibration_solves_the_tikhonov_normal_equations_of_every_sampled_neighbourhood():
    rng = np.random.default_rng(1)
    kernel = grappa.Kernel.make((1, 2), (3, 2, None))
    ncoil, ny, nx = 2, 9, 6
    acs = (rng.standard_normal((ncoil, 1, ny, nx)) + 1j * rng.standard_normal((ncoil, 1, ny, nx))).astype(np.complex64)
    mask = np.ones((1, ny), dtype=bool)
    mask[0, 6] = False  # neighbourhoods touching line 6 are left out
    rows, targets = [], []
    for y in range(ny - kernel.y.window + 1):
        if not mask[0, y:y + kernel.y.window].all():
            continue
        for x in range(nx - kernel.x.window + 1):
            anchor = (0, y + kernel.y.anchor, x + kernel.x.anchor)
            rows.append(naive_sources(acs, *anchor, kernel))
            targets.append(acs[:, 0, anchor[1] + 1, anchor[2]])
    s, t = np.array(rows), np.array(targets)
    normal = s.conj().T @ s
    lam = 0.01 * np.trace(normal).real / s.shape[1]
    expected = np.linalg.solve(normal + lam * np.eye(s.shape[1]), s.conj().T @ t)
    np.testing.assert_allclose(grappa.calibrate(acs, mask, kernel, 0.01), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no fully sampled"):
        grappa.calibrate(acs, np.zeros((1, ny), dtype=bool), kernel, 0.01)


def test_settings_from_json_and_their_errors():
    assert grappa.Settings.from_config("grappa") == grappa.Settings((5, 4, None), 0.001, True, 10, "rss")
    got = grappa.Settings.from_config({"parameters": {"grappa_kernel": "7x4x3", "grappa_lambda": "0.02",
                                                      "prewhiten": "False", "pocs_iterations": "3",
                                                      "coil_combine": "Adaptive"}})
    assert got == grappa.Settings((7, 4, 3), 0.02, False, 3, "adaptive")
    for key, value, message in [("grappa_kernel", "5", "KXxKY"), ("grappa_kernel", "5x1", "2 <= KY"),
                                ("grappa_lambda", "-1", ">= 0"), ("coil_combine", "sense", "rss, adaptive"),
                                ("pocs_iterations", "-2", "0 to 1000")]:
        with pytest.raises(_errors.ConfigError, match=message):
            grappa.Settings.from_config({"parameters": {key: value}})


def test_sampled_range_tells_undersampling_from_partial_fourier():
    assert grappa.sampled_range(np.arange(1, 64, 3), 64, 3) == (0, 63)       # R = 3 grid from line 1
    assert grappa.sampled_range(np.arange(16, 64, 2), 64, 2) == (16, 63)     # 0.75 partial Fourier
    assert grappa.sampled_range(np.arange(0, 40), 64, 1) == (0, 39)
    assert grappa.infer_accel(np.r_[np.arange(0, 20, 3), np.arange(20, 30)]) == 1
    assert grappa.infer_accel(np.arange(2, 64, 3)) == 3
    assert grappa.grid_origin(np.r_[np.arange(2, 64, 3), 10, 11], 3) == 2


def test_pocs_recovers_the_omitted_quarter_of_kspace(tmp_path):
    truth = generate(tmp_path / "p.h5", "-m", "64", "-n", "0")
    coil = truth["coil_images"][0]
    axes = (1, 2)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(coil, axes=axes), axes=axes), axes=axes)[:, None]
    partial = k.copy()
    partial[:, :, :16] = 0

    def image(kspace):
        return rss(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace[:, 0], axes=axes), axes=axes), axes=axes))

    mask = truth["phantom"][0] > 0
    zero_filled = nrmse(image(partial)[mask], rss(coil)[mask])
    completed = nrmse(image(grappa.pocs(partial.astype(np.complex64), ((0, 0), (16, 63)), 10))[mask], rss(coil)[mask])
    assert completed < zero_filled / 4 and completed < 0.04, (completed, zero_filled)  # 0.028 and 0.136
    assert grappa.pocs(partial, ((0, 0), (0, 63)), 10) is partial  # fully sampled: nothing to do


# ------------------------------------------------------------------------------------------- in the session

def test_fully_sampled_data_give_simpleffts_image(tmp_path):
    path = tmp_path / "full.h5"
    generate(path, "-m", "64", "-n", "0.01")
    acqs, header = read_session(path)
    ours = run_module(grappa, acqs, header, prewhiten="false").images
    theirs = run_module(simplefft, acqs, header).images
    assert len(ours) == len(theirs) == 1
    assert np.abs(ours[0].data.astype(int) - theirs[0].data.astype(int)).max() <= 1
    for field in ("position", "read_dir", "phase_dir", "slice_dir", "field_of_view", "matrix_size"):
        assert tuple(getattr(ours[0], field)) == tuple(getattr(theirs[0], field)), field
    assert (ours[0].image_series_index, ours[0].image_index, ours[0].image_type, ours[0].data_type) == (0, 1, 1, 2)
    assert ours[0].meta["ImageProcessingHistory"] == ["FIRE", "PYTHON", "GRAPPA"]
    assert ours[0].data.max() == 4095


def test_slices_contrasts_repetitions_are_images_and_averages_are_averaged(tmp_path):
    path = tmp_path / "multi.h5"
    truth = generate(path, "-m", "64", "-n", "0.003", "--slices", "3", "--contrasts", "2", "--averages", "2",
                     "-r", "2", "--accel", "2", "--acs", "24")
    acqs, header = read_session(path)
    images = run_module(grappa, acqs, header).images
    order = [(r, c, s) for r in range(2) for c in range(2) for s in range(3)]
    assert [(im.repetition, im.contrast, im.slice) for im in images] == order
    assert [im.image_index for im in images] == list(range(1, 13))
    assert max(int(im.data.max()) for im in images) == 4095  # one peak for the session
    for im in images:
        assert tuple(im.position) == (0.0, 0.0, (im.slice - 1) * 5.0)
        assert tuple(im.field_of_view) == (256.0, 256.0, 5.0)
        reference, mask = rss(truth["coil_images"][im.contrast, im.slice]), truth["phantom"][im.contrast, im.slice] > 0
        assert nrmse(im.data[0, 0][mask], reference[mask]) < LIMIT
    # The second echo is darker: the relative intensity of the contrasts is kept.
    first, second = (np.mean([im.data.astype(float).sum() for im in images if im.contrast == c]) for c in (0, 1))
    assert 0.7 < second / first < 0.95


def test_averages_lower_the_noise(tmp_path):
    errors = []
    for averages in ("1", "4"):
        path = tmp_path / f"avg{averages}.h5"
        truth = generate(path, "-m", "64", "-n", "0.02", "--averages", averages)
        acqs, header = read_session(path)
        image = run_module(grappa, acqs, header).images[0].data[0, 0]
        mask = truth["phantom"][0] > 0
        errors.append(nrmse(image[mask], rss(truth["coil_images"][0])[mask]))
    assert 0.4 < errors[1] / errors[0] < 0.6, errors  # 1 / sqrt(4)


def test_separate_calibration_of_the_slice_serves_every_contrast(tmp_path):
    path = tmp_path / "sep.h5"
    truth = generate(path, "-m", "128", "-n", NOISE, "--accel", "2", "--acs", "24", "--acs-separate",
                     "--contrasts", "2", "--slices", "2")
    acqs, header = read_session(path)
    assert sum(a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION) for a in acqs) == 2 * 24
    images = run_module(grappa, acqs, header).images
    assert [(im.contrast, im.slice) for im in images] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for im in images:
        mask = truth["phantom"][im.contrast, im.slice] > 0
        assert nrmse(im.data[0, 0][mask], rss(truth["coil_images"][im.contrast, im.slice])[mask]) < LIMIT


def test_no_calibration_lines_is_an_error_and_noise_only_sends_nothing(tmp_path):
    path = tmp_path / "nocal.h5"
    generate(path, "-m", "64", "--accel", "2")
    acqs, header = read_session(path)
    with pytest.raises(ValueError, match="no fully sampled"):
        run_module(grappa, acqs, header)
    noise = tmp_path / "noise.h5"
    generate(noise, "-m", "64", "--noise-only")
    acqs, header = read_session(noise)
    conn = run_module(grappa, acqs, header)
    assert conn.images == [] and conn.texts == ["WARNING noise-only session without measurementID: its noise "
                                                "covariance is not stored"]


def test_adaptive_combination_gives_the_object_too(tmp_path):
    path = tmp_path / "adaptive.h5"
    truth = generate(path, "-m", "64", "-n", "0.003", "--accel", "2", "--acs", "24")
    acqs, header = read_session(path)
    image = run_module(grappa, acqs, header, coil_combine="adaptive").images[0].data[0, 0]
    mask = truth["phantom"][0] > 0
    assert nrmse(image[mask], rss(truth["coil_images"][0])[mask]) < LIMIT  # unit-norm maps: the RSS weighting


# ------------------------------------------------------------------------------------------- BART-made data

def read_cfl(base):
    dims = [int(v) for v in (base.parent / f"{base.name}.hdr").read_text().split("\n")[1].split()]
    return np.fromfile(base.parent / f"{base.name}.cfl", dtype=np.complex64).reshape(dims, order="F")


@pytest.fixture(scope="module")
def bart_phantom(tmp_path_factory):
    """BART's multi-coil k-space phantom ``[x, y, coil]``, the RSS of its image phantom ``[y, x]`` (the
    reference) and the pixels at least 3 from any edge of its single-coil phantom (where the pixel-sampled
    phantom and the band-limited k-space agree to about 0.03: the rest is Gibbs ringing)."""
    folder = tmp_path_factory.mktemp("bart")
    n = 128
    for name, args in (("k", ["-k", "-s", str(COILS)]), ("i", ["-s", str(COILS)]), ("p", [])):
        subprocess.run(["bart", "phantom", *args, "-x", str(n), str(folder / name)], check=True, capture_output=True)
    kspace = read_cfl(folder / "k").reshape(n, n, COILS)
    reference = rss(np.moveaxis(read_cfl(folder / "i").reshape(n, n, COILS), 2, 0)).T
    plain = np.abs(read_cfl(folder / "p").reshape(n, n)).T
    mask = (plain > 0) & (scipy.ndimage.maximum_filter(plain, 7) == scipy.ndimage.minimum_filter(plain, 7))
    return kspace, reference, mask


def bart_dataset(path, kspace, accel=1, acs=0, partial_fourier=1.0, noise=0.002, seed=0):
    """An MRD file of BART's k-space: 16 noise readouts, then the lines of the generator's sampling pattern
    (``tools/_cartesian_sampling``, the same flags), with complex noise of image-domain level ``noise``
    relative to the RSS maximum; readout = BART's dimension 0, lines = dimension 1, no oversampling."""
    n, _, coils = kspace.shape
    lines = _cartesian_sampling.pattern(n, 1, _cartesian_sampling.Sampling(accel, acs, False, partial_fourier))
    axes = (0, 1)
    full = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=axes), axes=axes), axes=axes)
    sigma = noise * rss(np.moveaxis(full, 2, 0)).max() * n
    rng = np.random.default_rng(seed)
    ky = lines.image[:, 1]
    lines_data = np.moveaxis(kspace[:, ky, :], 1, 0).transpose(0, 2, 1)  # [line, coil, readout]
    data = np.concatenate([np.zeros((16, coils, n), np.complex64), lines_data])
    data = data + (rng.standard_normal(data.shape) + 1j * rng.standard_normal(data.shape)) * (sigma / np.sqrt(2))
    heads = _mrd_header.readout_headers(len(data), 7, n, coils, 5.0)
    heads["scan_counter"] = np.arange(1, len(data) + 1)
    heads["center_sample"] = n // 2
    bit = _mrd_header.flag_bit
    heads["flags"][:16] = bit(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    image = heads[16:]
    image["idx"]["kspace_encode_step_1"] = ky
    flags = np.zeros(len(ky), dtype=np.uint64)
    flags[lines.calibration & lines.on_grid] = bit(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
    flags[lines.calibration & ~lines.on_grid] = bit(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
    flags[0] |= bit(ismrmrd.ACQ_FIRST_IN_SLICE)
    flags[-1] |= bit(ismrmrd.ACQ_LAST_IN_SLICE)
    image["flags"] = flags
    low, high = lines.limits(1)
    limits = {"kspace_encoding_step_1": (low, high, n // 2), "kspace_encoding_step_2": (0, 0, 0), "slice": (0, 0, 0)}
    space = ((n, n, 1), (256.0, 256.0, 5.0))
    parallel = _mrd_header.parallel_imaging(accel, 1, "embedded" if acs else None) if accel > 1 or acs else None
    xml = _mrd_header.header_xml(_mrd_header.Scanner("bart phantom", "BartPhantom", 3.0, 127_700_000, coils),
                                 _mrd_header.encoding(space, space, limits, "cartesian", parallel), (5.0, 2.5, 10.0),
                                 _mrd_header.user_parameters())
    traj = np.zeros((n, 0), dtype=np.float32)
    with h5py.File(path, "w") as f:
        group = f.create_group("dataset")
        mrdfile.write_xml(group, xml)
        mrdfile.append_acquisitions(group, mrdfile.AcquisitionBlock(heads, list(data.astype(np.complex64)),
                                                                    [traj] * len(data)))
    return path


# ------------------------------------------------------------------------------------------- over sockets

@pytest.fixture(scope="module")
def grappa_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grappa_server")
    srv = ServerProcess(tmp, "--dependency-folder", str(tmp / "deps"))
    yield srv
    assert srv.stop() == 0


def reconstruct(port, path, module, cwd, **parameters):
    """``client.py -c <module>`` on ``path`` (``<module>.json`` with ``parameters`` in a folder of its own);
    the images' pixels ``[N, y, x]`` and headers."""
    out, result = run_module_client(port, path, module, cwd, parameters)
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "Unknown config" not in log and "WARNING" not in log, log
    pixels, heads, _ = images_of(out, "g")
    return pixels[:, 0].astype(float), heads


@pytest.mark.parametrize("args", [["--accel", "2", "--acs", "24"], ["--accel", "3", "--acs", "24"],
                                  ["--accel", "3", "--acs", "24", "--acs-separate"]],
                         ids=["R2", "R3", "R3-separate"])
def test_grappa_on_generated_data_over_a_socket(grappa_server, tmp_path, args):
    path = tmp_path / "gen.h5"
    truth = generate(path, "-m", "128", "-n", NOISE, *args)
    mask, reference = truth["phantom"][0] > 0, rss(truth["coil_images"][0])
    ours, heads = reconstruct(grappa_server.port, path, "grappa", tmp_path)
    theirs, _ = reconstruct(grappa_server.port, path, "simplefft", tmp_path)
    error, aliased = nrmse(ours[0, 0][mask], reference[mask]), nrmse(theirs[0, 0][mask], reference[mask])
    print(f"{' '.join(args)}: grappa {error:.4f}, simplefft {aliased:.4f}")
    assert error <= LIMIT and aliased > 0.2, (error, aliased)
    assert len(heads) == 1 and tuple(heads[0]["matrix_size"]) == (128, 128, 1)


def test_partial_fourier_by_pocs_over_a_socket(grappa_server, tmp_path):
    path = tmp_path / "pf.h5"
    truth = generate(path, "-m", "128", "-n", NOISE, "--partial-fourier", "0.75")
    mask, reference = truth["phantom"][0] > 0, rss(truth["coil_images"][0])
    pocs, _ = reconstruct(grappa_server.port, path, "grappa", tmp_path)
    zero_filled, _ = reconstruct(grappa_server.port, path, "grappa", tmp_path, pocs_iterations="0")
    error, plain = nrmse(pocs[0, 0][mask], reference[mask]), nrmse(zero_filled[0, 0][mask], reference[mask])
    print(f"partial Fourier 0.75: POCS {error:.4f}, zero filled {plain:.4f}")
    assert error <= LIMIT and error < plain / 3, (error, plain)
    both = tmp_path / "pf_r2.h5"
    truth = generate(both, "-m", "128", "-n", NOISE, "--partial-fourier", "0.75", "--accel", "2", "--acs", "24")
    image, _ = reconstruct(grappa_server.port, both, "grappa", tmp_path)
    assert nrmse(image[0, 0][mask], reference[mask]) <= LIMIT


@needs_bart
@pytest.mark.parametrize("accel,partial", [(2, 1.0), (3, 1.0), (1, 0.75)], ids=["R2", "R3", "PF0.75"])
def test_grappa_on_bart_data_over_a_socket(grappa_server, bart_phantom, tmp_path, accel, partial):
    kspace, reference, mask = bart_phantom
    path = bart_dataset(tmp_path / "bart.h5", kspace, accel, 24 if accel > 1 else 0, partial)
    ours, _ = reconstruct(grappa_server.port, path, "grappa", tmp_path)
    theirs, _ = reconstruct(grappa_server.port, path, "simplefft", tmp_path)
    error, plain = nrmse(ours[0, 0][mask], reference[mask]), nrmse(theirs[0, 0][mask], reference[mask])
    print(f"BART R {accel}, partial Fourier {partial}: grappa {error:.4f}, simplefft {plain:.4f}")
    assert error <= LIMIT, (error, plain)
    assert plain > 0.2 if accel > 1 else plain > error, (error, plain)


def test_3d_partitions_and_multislice_geometry_over_a_socket(grappa_server, tmp_path):
    path = tmp_path / "vol.h5"
    truth = generate(path, "-m", "64", "-n", NOISE, "--3d", "--partitions", "32", "--accel", "2", "--acs", "24")
    acqs, header = read_session(path)
    encoding = header.encoding[0]
    assert (encoding.parallelImaging.accelerationFactor.kspace_encoding_step_1,
            encoding.parallelImaging.accelerationFactor.kspace_encoding_step_2) == (2, 2)
    assert encoding.encodedSpace.matrixSize.z == 32 and encoding.encodingLimits.kspace_encoding_step_2.center == 16
    volume, heads = reconstruct(grappa_server.port, path, "grappa", tmp_path)
    assert volume.shape == (32, 1, 64, 64)
    dz = 256.0 / 64  # partition thickness: FOV / matrix
    assert [tuple(h["position"]) for h in heads] == [(0.0, 0.0, (p - 16) * dz) for p in range(32)]
    assert [h["slice"] for h in heads] == list(range(32)) and [h["image_index"] for h in heads] == list(range(1, 33))
    assert all(tuple(h["field_of_view"]) == (256.0, 256.0, dz) for h in heads)
    mask, reference = truth["phantom"] > 0, rss(truth["coil_images"], axis=1)
    error = nrmse(volume[:, 0][mask], reference[mask])
    print(f"3-D R 2 x 2: grappa {error:.4f}")
    assert error <= LIMIT

    slices = tmp_path / "slices.h5"
    truth = generate(slices, "-m", "64", "-n", NOISE, "--slices", "3", "--accel", "2", "--acs", "24")
    images, heads = reconstruct(grappa_server.port, slices, "grappa", tmp_path)
    assert [tuple(h["position"]) for h in heads] == [(0.0, 0.0, -5.0), (0.0, 0.0, 0.0), (0.0, 0.0, 5.0)]
    assert [h["slice"] for h in heads] == [0, 1, 2]
    for s in range(3):
        mask = truth["phantom"][s] > 0
        assert nrmse(images[s, 0][mask], rss(truth["coil_images"][s])[mask]) <= LIMIT
