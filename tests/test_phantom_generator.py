"""Tests of tools/generate_cartesian_shepp_logan_dataset.py: file layout, header, flags, k-space content."""
import importlib.util
from pathlib import Path

import h5py
import ismrmrd
import ismrmrd.xsd
import numpy as np
import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "generate_cartesian_shepp_logan_dataset.py"
_spec = importlib.util.spec_from_file_location("generate_cartesian_shepp_logan_dataset", TOOL)
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

M, COILS, OS, REPS, SLICES = 64, 4, 2, 2, 2
SMALL_ARGS = ["-m", str(M), "-c", str(COILS), "-s", str(OS), "-r", str(REPS), "--slices", str(SLICES)]


def read_all(path):
    """All acquisitions of a file, read with ismrmrd.Dataset (independent of mrdfile)."""
    dset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        acqs = [dset.read_acquisition(i) for i in range(dset.number_of_acquisitions())]
        xml = dset.read_xml_header()
    finally:
        dset.close()
    return acqs, xml


def centred_ifft2(kspace):
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=axes), axes=axes), axes=axes)


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("phantom") / "small.h5"
    assert gen.main(["-o", str(path), "-n", "0"] + SMALL_ARGS) == 0
    return path


@pytest.fixture(scope="module")
def small_acqs(small_file):
    return read_all(small_file)


def test_file_is_readable_by_ismrmrd_dataset_with_noise_and_all_lines(small_acqs):
    acqs, _ = small_acqs
    assert len(acqs) == 32 + REPS * SLICES * M
    assert all(a.data.shape == (COILS, OS * M) and a.data.dtype == np.complex64 for a in acqs)
    assert all(a.traj.shape == (OS * M, 0) for a in acqs)


def test_header_parses_and_describes_encoding_and_user_parameters(small_acqs):
    _, xml = small_acqs
    hdr = ismrmrd.xsd.CreateFromDocument(xml)
    enc = hdr.encoding[0]
    assert enc.trajectory.value == "cartesian"
    size = enc.encodedSpace.matrixSize
    assert (size.x, size.y, size.z) == (OS * M, M, 1)
    assert (enc.encodedSpace.fieldOfView_mm.x, enc.encodedSpace.fieldOfView_mm.y) == (OS * 256.0, 256.0)
    assert (enc.reconSpace.matrixSize.x, enc.reconSpace.matrixSize.y) == (M, M)
    lim = enc.encodingLimits
    assert (lim.kspace_encoding_step_1.maximum, lim.kspace_encoding_step_1.center) == (M - 1, M // 2)
    assert lim.slice.maximum == SLICES - 1 and lim.repetition.maximum == REPS - 1
    assert hdr.acquisitionSystemInformation.receiverChannels == COILS
    assert hdr.experimentalConditions.H1resonanceFrequency_Hz > 0
    params = hdr.userParameters
    assert {(p.name, p.value) for p in params.userParameterLong} == {("TestLong", 42)}
    assert [p.name for p in params.userParameterDouble] == ["TestDouble"]
    assert [p.name for p in params.userParameterString] == ["TestString"]
    assert [p.name for p in params.userParameterBase64] == ["TestBase64"]
    assert hdr.measurementInformation.protocolName == "ShepLoganPhantom"


def test_noise_readouts_come_first_and_boundary_flags_mark_lines_slices_repetitions(small_acqs):
    acqs, _ = small_acqs
    noise = [a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) for a in acqs]
    assert noise == [True] * 32 + [False] * (len(acqs) - 32)
    assert [a.flags for a in acqs[:32]] == [1 << 18] * 32
    imaging = acqs[32:]
    expected = [(r, s, y) for r in range(REPS) for s in range(SLICES) for y in range(M)]
    assert [(a.idx.repetition, a.idx.slice, a.idx.kspace_encode_step_1) for a in imaging] == expected

    def where(flag):
        return [i for i, a in enumerate(imaging) if a.is_flag_set(flag)]

    starts = list(range(0, len(imaging), M))
    ends = [s + M - 1 for s in starts]
    assert where(ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1) == where(ismrmrd.ACQ_FIRST_IN_SLICE) == starts
    assert where(ismrmrd.ACQ_LAST_IN_ENCODE_STEP1) == where(ismrmrd.ACQ_LAST_IN_SLICE) == ends
    assert len(where(ismrmrd.ACQ_LAST_IN_SLICE)) == REPS * SLICES
    assert where(ismrmrd.ACQ_FIRST_IN_REPETITION) == starts[::SLICES]
    assert where(ismrmrd.ACQ_LAST_IN_REPETITION) == ends[SLICES - 1::SLICES]
    assert where(ismrmrd.ACQ_LAST_IN_MEASUREMENT) == [len(imaging) - 1]


def test_acquisition_headers_carry_geometry_counters_and_channel_mask(small_acqs):
    acqs, _ = small_acqs
    assert [a.scan_counter for a in acqs] == list(range(1, len(acqs) + 1))
    stamps = np.array([a.acquisition_time_stamp for a in acqs])
    assert np.all(np.diff(stamps) > 0)
    for a in acqs:
        assert a.version == 1 and a.measurement_uid == acqs[0].measurement_uid
        assert (a.number_of_samples, a.available_channels, a.active_channels) == (OS * M, COILS, COILS)
        assert a.center_sample == OS * M // 2 and a.sample_time_us > 0
        assert list(a.channel_mask[:2]) == [(1 << COILS) - 1, 0]
        assert tuple(a.read_dir) == (1, 0, 0) and tuple(a.phase_dir) == (0, 1, 0)
        assert tuple(a.slice_dir) == (0, 0, 1)
    z = {a.idx.slice: a.position[2] for a in acqs[32:]}
    assert z[1] - z[0] == pytest.approx(5.0)


def test_reconstruction_of_each_slice_and_repetition_reproduces_coil_images(small_file, small_acqs):
    acqs, _ = small_acqs
    with h5py.File(small_file, "r") as f:
        coil_images = f["dataset/coil_images"][...]
        phantom = f["dataset/phantom"][...]
        csm = f["dataset/csm"][...]
    assert coil_images.shape == (SLICES, COILS, M, M) and coil_images.dtype == np.complex64
    assert phantom.shape == (SLICES, M, M) and phantom.dtype == np.float32
    assert csm.shape == (COILS, M, M) and csm.dtype == np.complex64
    np.testing.assert_allclose(coil_images, phantom[:, None] * csm[None], rtol=1e-6, atol=1e-7)
    assert not np.allclose(phantom[0], phantom[1])
    start = OS * M // 2 - M // 2
    for rep in range(REPS):
        for slc in range(SLICES):
            kspace = np.zeros((COILS, M, OS * M), dtype=np.complex64)
            for a in acqs[32:]:
                if (a.idx.repetition, a.idx.slice) == (rep, slc):
                    kspace[:, a.idx.kspace_encode_step_1, :] = a.data
            image = centred_ifft2(kspace)[..., start:start + M]
            ref = coil_images[slc]
            nrmse = np.linalg.norm(image - ref) / np.linalg.norm(ref)
            assert nrmse < 1e-5
            assert np.abs(centred_ifft2(kspace)[..., :start]).max() < 1e-5


def test_phantom_centre_and_orientation_follow_documented_grid():
    image = gen.shepp_logan(64)
    assert image[32, 32] == pytest.approx(0.2)  # inside the outer skull and brain ellipses only
    assert image[0, 0] == 0.0
    # The small ellipses at y = -0.605 lie towards the last rows (y axis points up).
    assert image[int(32 + 0.605 * 32), 32] > image[int(32 - 0.605 * 32), 32]


def test_rerunning_on_same_path_overwrites_the_file(tmp_path):
    path = tmp_path / "again.h5"
    args = ["-o", str(path), "-m", "16", "-c", "2", "-n", "0"]
    assert gen.main(args) == 0
    assert gen.main(args) == 0
    acqs, _ = read_all(path)
    assert len(acqs) == 32 + 16


def test_noise_level_matches_request_and_zero_noise_is_exact(tmp_path):
    clean, noisy = tmp_path / "clean.h5", tmp_path / "noisy.h5"
    args = ["-m", "32", "-c", "4", "-s", "2", "-r", "2", "--seed", "3"]
    assert gen.main(["-o", str(clean), "-n", "0"] + args) == 0
    assert gen.main(["-o", str(noisy), "-n", "0.1"] + args) == 0
    clean_acqs, _ = read_all(clean)
    noisy_acqs, _ = read_all(noisy)
    assert all(np.all(a.data == 0) for a in clean_acqs[:32])
    scale = np.sqrt(64 * 32)  # documented: sigma per k-space sample = noise * sqrt(os * m * m)
    diff = np.stack([n.data - c.data for n, c in zip(noisy_acqs[32:], clean_acqs[32:])])
    assert np.sqrt(np.mean(np.abs(diff) ** 2)) / scale == pytest.approx(0.1, rel=0.05)
    noise_scan = np.stack([a.data for a in noisy_acqs[:32]])
    assert np.sqrt(np.mean(np.abs(noise_scan) ** 2)) / scale == pytest.approx(0.1, rel=0.05)
    first, second = diff[:32], diff[32:]
    assert not np.allclose(first, second)  # each repetition gets fresh noise


def test_same_seed_gives_identical_data(tmp_path):
    paths = [tmp_path / "a.h5", tmp_path / "b.h5"]
    for path in paths:
        assert gen.main(["-o", str(path), "-m", "16", "-c", "2", "-n", "0.05", "--seed", "7"]) == 0
    first, second = (read_all(p)[0] for p in paths)
    assert all(np.array_equal(a.data, b.data) for a, b in zip(first, second))


def test_custom_group_name_is_used(tmp_path):
    path = tmp_path / "group.h5"
    assert gen.main(["-o", str(path), "-m", "16", "-c", "1", "-g", "other"]) == 0
    with h5py.File(path, "r") as f:
        assert set(f) == {"other"}
        assert {"xml", "data", "coil_images", "phantom", "csm"} <= set(f["other"])


@pytest.mark.parametrize("bad", [["-m", "1"], ["-c", "0"], ["-r", "0"], ["-n", "-1"], ["-s", "0"]])
def test_invalid_arguments_are_rejected(tmp_path, bad):
    with pytest.raises(SystemExit):
        gen.main(["-o", str(tmp_path / "x.h5")] + bad)
