"""modules/spectroscopy.py over real sockets: SVS and CSI data from tools/generate_mrs_dataset.py give
their peaks back within one spectral point, and upstream's spectroscopy.py, run unchanged from a
module folder, returns the same images."""
import shutil
import subprocess
import sys

import h5py
import ismrmrd
import numpy as np
import pytest

import mrdhelper
from conftest import REPO, ServerProcess, run_client

GENERATOR = REPO / "tools" / "generate_mrs_dataset.py"
UPSTREAM = REPO / "tests" / "upstream" / "spectroscopy.py"


@pytest.fixture(scope="module")
def mrs(tmp_path_factory):
    """An SVS file (1024 points, 4 coils, 8 averages) and an 8x8 CSI file (512 points, 2 averages)."""
    folder = tmp_path_factory.mktemp("mrs")
    files = {"svs": folder / "svs.h5", "csi": folder / "csi.h5"}
    subprocess.run([sys.executable, str(GENERATOR), "-o", str(files["svs"])], check=True, capture_output=True)
    subprocess.run([sys.executable, str(GENERATOR), "-o", str(files["csi"]), "-k", "csi", "-n", "512", "-a", "2",
                    "--noise", "0.01"], check=True, capture_output=True)
    return files


@pytest.fixture(scope="module")
def upstream_server(tmp_path_factory):
    """A server whose extra module folder holds upstream's spectroscopy.py, copied byte for byte."""
    tmp = tmp_path_factory.mktemp("upstream")
    folder = tmp / "modules"
    folder.mkdir()
    shutil.copyfile(UPSTREAM, folder / "spectroscopy.py")
    assert (folder / "spectroscopy.py").read_bytes() == UPSTREAM.read_bytes()
    srv = ServerProcess(tmp, "--modules", str(folder))
    yield srv
    assert srv.stop() == 0


def reconstruct(port, raw, out, *args):
    result = run_client(port, "-c", "spectroscopy", "-o", str(out), "-G", "g", *args, str(raw))
    assert result.returncode == 0, result.stdout + result.stderr
    return series_of(out)


def series_of(path, group="g"):
    """``{series name: (data, headers, [Meta])}`` of one output group; complex data as complex64."""
    out = {}
    with h5py.File(path, "r") as f:
        for name, series in f[group].items():
            if name.startswith("image_"):
                data = series["data"][...]
                if data.dtype.names:
                    data = data["real"] + 1j * data["imag"]
                out[name] = (data, series["header"][...], [ismrmrd.Meta.deserialize(a) for a in series["attributes"]])
    return out


def truth_of(raw):
    with h5py.File(raw, "r") as f:
        truth = f["dataset/truth"]
        return {name: truth[name][...] for name in truth} | dict(truth.attrs)


def spectrum(fid):
    return np.abs(np.fft.fftshift(np.fft.fft(fid, axis=-1), axes=-1))


def local_maxima(values, fraction):
    """Indices of the local maxima higher than ``fraction`` of the largest value."""
    inner = (values[1:-1] > values[:-2]) & (values[1:-1] >= values[2:]) & (values[1:-1] > fraction * values.max())
    return np.flatnonzero(inner) + 1


def test_svs_peaks_come_back_within_one_point_with_the_plot(server, mrs, tmp_path):
    truth = truth_of(mrs["svs"])
    series = reconstruct(server.port, mrs["svs"], tmp_path / "out.h5")
    assert set(series) == {"image_0", "image_1"}
    data, heads, metas = series["image_0"]
    assert data.shape == (1, 1, 1, 1, 1024) and data.dtype == np.complex64
    assert (heads["image_type"][0], heads["flags"][0], heads["image_index"][0]) == (ismrmrd.IMTYPE_COMPLEX, 32, 1)
    assert tuple(heads["field_of_view"][0]) == (1024 * 20 / 2, 10, 20)  # Siemens ICE's spectroscopy FOV
    meta = metas[0]
    assert meta["DataRole"] == "Spectroscopy" and meta["ImageProcessingHistory"] == ["FIRE", "SPECTRO", "PYTHON"]
    assert meta["SiemensControl_SpectroData"] == ["bool", "true"]
    assert meta["SiemensDicom_RealDwellTime"] == ["int", "500000"]  # ns: 2 x 250 us

    magnitude = spectrum(data[0, 0, 0, 0])
    found = local_maxima(magnitude, 0.15)
    assert len(found) == len(truth["spectral_index"])
    assert np.abs(found - truth["spectral_index"]).max() <= 1, (found, truth["spectral_index"])
    fid = truth["fid"]
    scale = np.vdot(fid, data[0, 0, 0, 0]) / np.vdot(fid, fid)
    assert np.linalg.norm(data[0, 0, 0, 0] - scale * fid) / np.linalg.norm(scale * fid) < 0.15  # noise 0.05

    plot, plot_heads, plot_metas = series["image_1"]
    assert plot.shape == (1, 1, 1, 1280, 1280) and plot.dtype == np.int16 and not plot.any()  # the ROIs draw it
    assert plot_heads["image_series_index"][0] == 1 and tuple(plot_heads["field_of_view"][0]) == (1280, 1280, 10)
    assert plot_metas[0]["SequenceDescriptionAdditional"] == "SPEC_PLOT"
    x, y, rgb, *_ = mrdhelper.parse_roi(plot_metas[0]["ROI_spectra"])
    assert rgb == (1, 0, 0) and len(x) == 1024 and (min(x), max(x)) == (64, 1216)
    assert np.argmin(y) == np.argmax(magnitude) and min(y) == pytest.approx(0.4 * 1280)  # the highest peak on top
    axis_x, axis_y, axis_rgb, *_ = mrdhelper.parse_roi(plot_metas[0]["ROI_axis"])
    assert (axis_x, axis_y, axis_rgb) == ([64, 1216], [768, 768], (0, 0, 1))


def test_csi_voxels_each_give_their_peak(server, mrs, tmp_path):
    truth = truth_of(mrs["csi"])
    series = reconstruct(server.port, mrs["csi"], tmp_path / "out.h5")
    assert set(series) == {"image_0"}  # a grid gets no plot
    data, heads, _ = series["image_0"]
    assert data.shape == (1, 1, 8, 8, 512)  # [image, channel, z = segment, y = line, x = time]
    assert tuple(heads["field_of_view"][0]) == (512 / 8 * 160, 160, 15)
    peaks = spectrum(data[0, 0]).argmax(axis=-1)  # [segment, line]
    assert np.abs(peaks - truth["spectral_index"]).max() <= 1  # every voxel in its place: no axis swapped or flipped
    fid = truth["fid"]
    scale = np.vdot(fid, data[0, 0]) / np.vdot(fid, fid)
    assert np.linalg.norm(data[0, 0] - scale * fid) / np.linalg.norm(scale * fid) < 0.05


def assert_same_series(ours, upstream):
    """Ours and upstream's outputs are the same images.

    "Same": identical series, shapes, data types, every header field and every attribute, with two
    float tolerances.  The complex FIDs agree within 1e-5 of their largest magnitude: both are float32,
    but upstream transforms with numpy.fft and averages in its own axis order, ours with scipy.fft,
    so the rounding differs at float32 precision (1e-7) times the transforms' growth, far below the
    data's noise.  The plot image's pixels are identical (blank by design: the spectrum is drawn by
    its ROI polygon), and the ROI vertices agree within 1e-3 pixel: upstream computes them in float32,
    ours in float64, and both print them with six decimals.
    """
    assert set(ours) == set(upstream)
    for name in ours:
        (data, heads, metas), (up_data, up_heads, up_metas) = ours[name], upstream[name]
        assert data.shape == up_data.shape and data.dtype == up_data.dtype
        if np.iscomplexobj(data):
            assert np.abs(data - up_data).max() <= 1e-5 * np.abs(up_data).max()
        else:
            assert np.array_equal(data, up_data)
        for field in heads.dtype.names:
            assert np.array_equal(heads[field], up_heads[field]), field
        for meta, up_meta in zip(metas, up_metas, strict=True):
            assert set(meta) == set(up_meta)
            for key in meta:
                if key.startswith("ROI_"):
                    assert np.allclose(np.array(meta[key], float), np.array(up_meta[key], float), rtol=0, atol=1e-3)
                else:
                    assert meta[key] == up_meta[key], key


def test_upstream_spectroscopy_runs_unchanged_and_gives_the_same_images(server, upstream_server, mrs, tmp_path):
    for kind in ("svs", "csi"):
        ours = reconstruct(server.port, mrs[kind], tmp_path / f"ours_{kind}.h5")
        upstream = reconstruct(upstream_server.port, mrs[kind], tmp_path / f"upstream_{kind}.h5")
        assert_same_series(ours, upstream)
    assert "Incoming raw spectroscopy data is shape" in upstream_server.log_text()  # upstream's code ran


def test_images_come_back_as_from_upstream(server, upstream_server, mrs, tmp_path):
    """Image input (the complex FIDs and the plot of a first session): complex images are sent back with
    ``Keep_image_geometry``.  Upstream's path for magnitude images calls ``ismrmrd.get_dtype_from_data_type``,
    which ismrmrd 1.15 exports only from ``ismrmrd.image``: ``constants`` restores the old name, so that
    path runs unchanged too."""
    reconstruct(server.port, mrs["svs"], tmp_path / "fids.h5")
    ours = reconstruct(server.port, tmp_path / "fids.h5", tmp_path / "ours.h5", "-g", "g")
    upstream = reconstruct(upstream_server.port, tmp_path / "fids.h5", tmp_path / "upstream.h5", "-g", "g")
    assert "image_0" in ours
    assert_same_series(ours, upstream)
    sent, received = series_of(tmp_path / "fids.h5")["image_0"], ours["image_0"]
    assert np.array_equal(sent[0], received[0]) and received[2][0]["Keep_image_geometry"] == "1"
