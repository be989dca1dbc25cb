"""End-to-end tests of the image modules (filter, report, analyzeflow, rgb, filterkspace, filterimage)
and of invertcontrast's JSON options: a real server subprocess, client.py or a raw socket, values
checked against references computed here with scipy, numpy, matplotlib and Pillow."""
import json
import re
import shutil
import socket

import h5py
import ismrmrd
import matplotlib
import numpy as np
import pytest
import scipy.ndimage
from PIL import Image, ImageFilter

import mrdfile
import mrdhelper
from conftest import generate_phantom, nrmse, rss, run_client
from connection import MessageReader, MessageWriter

MAX = 4095  # 2**BitsStored - 1 with the default 12 bits
N_IMAGES = 3
SERIES = 1


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Noise-free 64x64 raw phantom, 4 coils, 2 slices."""
    return generate_phantom(tmp_path_factory.mktemp("raw") / "phantom.h5", "-m", "64", "-c", "4", "-n", "0",
                            "--slices", "2")


def image_object(pixels, image_type=ismrmrd.IMTYPE_MAGNITUDE, series=SERIES, index=0, meta=None, **fields):
    image = ismrmrd.Image.from_array(pixels, transpose=False)
    head = image.getHead()
    head.image_type, head.image_series_index, head.image_index = image_type, series, index
    head.read_dir, head.phase_dir, head.slice_dir = (1, 0, 0), (0, 1, 0), (0, 0, 1)
    head.field_of_view = (256.0, 256.0, 5.0)
    for name, value in fields.items():
        setattr(head, name, value)
    image.setHead(head)
    image.meta = ismrmrd.Meta(meta or {})
    return image


def write_image_file(path, images, xml):
    """An MRD file with one group ``dataset`` holding ``images`` and the header ``xml``."""
    heads = np.frombuffer(b"".join(bytes(im.getHead()) for im in images), dtype=mrdfile.IMAGE_HEADER_DTYPE)
    with h5py.File(path, "w") as f:
        group = f.create_group("dataset")
        mrdfile.write_xml(group, xml)
        mrdfile.append_images(group, heads, [im.attribute_string for im in images], [im.data for im in images])
    return path


@pytest.fixture(scope="module")
def magnitude(phantom, tmp_path_factory):
    """(file, pixels): 3 int16 magnitude images ``[y, x]`` (phantom plus noise, group maximum 4095)."""
    rng = np.random.default_rng(7)
    with h5py.File(phantom, "r") as f:
        shape = f["dataset/phantom"][0]
        xml = f["dataset/xml"][0].decode()
    stack = np.stack([shape * (1 + 0.2 * i) for i in range(N_IMAGES)]) + rng.uniform(0, 0.1, (N_IMAGES, 64, 64))
    pixels = np.around(stack * MAX / stack.max()).astype(np.int16)
    images = [image_object(p, index=i + 1) for i, p in enumerate(pixels)]
    return write_image_file(tmp_path_factory.mktemp("img") / "images.h5", images, xml), pixels


def run_ok(port, *args, cwd=None):
    result = run_client(port, *args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def series_of(path, name, group="g"):
    """data ``[N, cha, z, y, x]``, headers and parsed MetaAttributes of one output series."""
    with h5py.File(path, "r") as f:
        sub = f[group][name]
        metas = [ismrmrd.Meta.deserialize(a) for a in sub["attributes"][...]]
        return sub["data"][...], sub["header"][...], metas


def series_names(path, group="g"):
    with h5py.File(path, "r") as f:
        return sorted(k for k in f[group] if k.startswith("image_"))


def write_json(folder, name, **parameters):
    (folder / f"{name}.json").write_text(json.dumps({"version": "1.1.0", "parameters": parameters}))


def session_replies(port, config, json_text, images, xml):
    """A session over a raw socket; the replies (message ID, item) in arrival order, CLOSE last."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        writer = MessageWriter.for_socket(sock)
        writer.send_config_file(config)
        writer.send_header(xml)
        writer.send_text(json_text)
        for image in images:
            writer.send_image(image)
        writer.send_close()
        reader = MessageReader(sock.makefile("rb"))
        replies = [reader.read()]
        while replies[-1][0] not in (None, 4):
            replies.append(reader.read())
        return replies


# --- filter -----------------------------------------------------------------------------------


def test_filter_sends_originals_then_median_of_inverted_images(server, magnitude, tmp_path):
    path, pixels = magnitude
    out = tmp_path / "out.h5"
    run_ok(server.port, "-c", "filter", "-o", str(out), "-G", "g", str(path), cwd=tmp_path)  # filter.json beside client.py
    assert series_names(out) == ["image_1", "image_99"]
    originals, _, _ = series_of(out, "image_99")
    assert np.array_equal(originals[:, 0, 0], pixels)
    data, heads, metas = series_of(out, "image_1")
    expected = np.stack([scipy.ndimage.median_filter((MAX - p.astype(np.int32)).astype(np.int16), size=3)
                         for p in pixels])
    assert data.dtype == np.int16 and np.array_equal(data[:, 0, 0], expected)
    assert list(heads["image_index"]) == [1, 2, 3]
    assert metas[0]["ImageProcessingHistory"] == ["PYTHON", "FILT"]
    assert metas[0]["SequenceDescriptionAdditional"] == "FILT"
    assert metas[0]["ImageComments"] == "Median filter size 3"


@pytest.mark.parametrize("size, comments", [(5, "from the test"), (0, "")])
def test_filter_size_and_comments_options(server, magnitude, tmp_path, size, comments):
    path, pixels = magnitude
    write_json(tmp_path, "filter", filterSize=str(size), comments=comments, sendOriginal="False")
    out = tmp_path / "out.h5"
    run_ok(server.port, "-c", "filter", "-o", str(out), "-G", "g", str(path), cwd=tmp_path)
    assert series_names(out) == ["image_1"]
    data, _, metas = series_of(out, "image_1")
    inverted = (MAX - pixels.astype(np.int32)).astype(np.int16)
    expected = [scipy.ndimage.median_filter(p, size=size) if size else p for p in inverted]
    assert np.array_equal(data[:, 0, 0], np.stack(expected))
    assert metas[0].get("ImageComments") == ("Median filter size 5\nfrom the test" if size else None)


def test_filter_rejects_a_bad_filter_size(server, magnitude, tmp_path):
    write_json(tmp_path, "filter", filterSize="-1")
    result = run_client(server.port, "-c", "filter", "-o", str(tmp_path / "o.h5"), str(magnitude[0]), cwd=tmp_path)
    assert result.returncode == 1 and "ConfigError: filterSize -1" in result.stdout


# --- report -----------------------------------------------------------------------------------
# As python-ismrmrd-server's report (tests/test_upstream_parity.py compares its pixels): one image per
# slice of raw data and per series group of magnitude images, the encoded FOV and matrix, upstream's
# text formats; N/A only where upstream's module fails on a missing header part.
PHANTOM_SLICES = 2


def report_of(port, source, tmp_path, count=1):
    out = tmp_path / "report.h5"
    run_ok(port, "-c", "report", "-o", str(out), "-G", "g", str(source))
    assert series_names(out) == ["image_0"]
    data, heads, metas = series_of(out, "image_0")
    assert data.shape == (count, 1, 1, 512, 512) and data.dtype == np.float32
    assert set(heads["image_type"]) == {ismrmrd.IMTYPE_MAGNITUDE} and set(heads["image_index"]) == {0}
    assert np.allclose(heads["field_of_view"], (512, 512, 1))
    for image in data[:, 0, 0]:
        lit = np.count_nonzero(image > 127)
        assert 254 < image.max() <= 255 and 2000 < lit < 512 * 512 // 8  # white text on black, not a filled canvas
    return metas


def test_report_renders_header_values_and_stores_them_as_meta(server, phantom, tmp_path):
    metas = report_of(server.port, phantom, tmp_path, count=PHANTOM_SLICES)  # one report per slice
    for meta in metas:
        assert meta["protocolName"] == "ShepLoganPhantom"
        assert meta["scanner"] == "Synthetic generate_cartesian_shepp_logan_dataset 1.5T"
        assert meta["fieldOfView"] == "512.0 x 256.0 x 5.0 mm^3"  # encoded space
        assert meta["matrixSize"] == "128 x 64 x 1"
        assert meta["inputData"] == "64 readouts"  # the slice's imaging readouts (noise readouts left out)


def test_report_counts_images(server, magnitude, tmp_path):
    assert report_of(server.port, magnitude[0], tmp_path)[0]["inputData"] == f"{N_IMAGES} images"


def test_report_without_optional_header_sections(server, phantom, tmp_path):
    source = tmp_path / "sparse.h5"
    shutil.copy(phantom, source)
    with h5py.File(source, "a") as f:
        xml = f["dataset/xml"][0].decode()
        for section in ("measurementInformation", "acquisitionSystemInformation"):
            xml = re.sub(rf"<{section}>.*?</{section}>", "", xml, flags=re.S)
        mrdfile.write_xml(f["dataset"], xml)
    meta = report_of(server.port, source, tmp_path, count=PHANTOM_SLICES)[0]
    assert meta["protocolName"] == "N/A" and meta["scanner"] == "N/A"
    assert meta["matrixSize"] == "128 x 64 x 1"


def test_report_with_unparsed_header(server, phantom, tmp_path):
    source = tmp_path / "no_xml.h5"
    shutil.copy(phantom, source)
    with h5py.File(source, "a") as f:
        del f["dataset/xml"]  # the client then sends a dummy text header
    meta = report_of(server.port, source, tmp_path, count=PHANTOM_SLICES)[0]  # slices end at LAST_IN_SLICE
    assert [meta[k] for k in ("protocolName", "scanner", "fieldOfView", "matrixSize")] == ["N/A"] * 4
    assert meta["inputData"] == "64 readouts"


# --- analyzeflow ------------------------------------------------------------------------------

DIRECTIONS = ("FLOW_DIR_A_TO_P", "FLOW_DIR_F_TO_H")
N_PHASES, N_SLICES = 4, 2


def flow_frames(direction_number, slice_):
    """``[phase, y, x]`` uint16 phase frames: noise background (random phase, rows 0-4), static
    tissue, a vessel whose velocity changes smoothly over the phases (rows 10-19, columns 10-19)."""
    frames = np.full((N_PHASES, 32, 32), 2100 + 10 * direction_number + slice_, dtype=np.int64)
    rng = np.random.default_rng(direction_number * 10 + slice_)
    jumps = np.array([0, 3000, 0, 3000])[:, None, None]  # noise phase jumps by > 2000 between frames
    frames[:, 0:5, :] = jumps + rng.integers(0, 1000, (N_PHASES, 5, 32))
    frames[:, 10:20, 10:20] = 2048 + np.array([300, 350, 400, 350])[:, None, None] * (1 + direction_number)
    return frames.clip(0, 4095).astype(np.uint16)


@pytest.fixture(scope="module")
def flow_file(phantom, tmp_path_factory):
    with h5py.File(phantom, "r") as f:
        xml = f["dataset/xml"][0].decode()
    images = [image_object(np.full((32, 32), 1000, dtype=np.uint16), index=99)]  # magnitude, passed through
    for d, direction in enumerate(DIRECTIONS):
        for s in range(N_SLICES):
            for p, frame in enumerate(flow_frames(d, s)):
                images.append(image_object(frame, ismrmrd.IMTYPE_PHASE, phase=p, slice=s,
                                           meta={"FlowDirDisplay": direction, "FlowVelocity": "150"}))
    return write_image_file(tmp_path_factory.mktemp("flow") / "flow.h5", images, xml)


def test_analyzeflow_zeroes_noise_background_per_direction(server, flow_file, tmp_path):
    """Background as upstream's: mean |third-order difference over the phases| > 250 (its
    ``np.diff(data, 3)``); the noise rows' third difference is about 12000, the vessel's -100 and
    -200. The frames are uint16: upstream differences them in uint16, where -100 wraps to 65436 and
    the vessel would be zeroed too; this module differences in float (a deliberate difference)."""
    out = tmp_path / "flow_out.h5"
    run_ok(server.port, "-c", "analyzeflow", "-o", str(out), "-G", "g", str(flow_file))
    assert series_names(out) == ["image_1", "image_10", "image_11"]
    magnitude, _, metas = series_of(out, "image_1")
    assert np.all(magnitude == 1000) and "Keep_image_geometry" not in metas[0]  # back unchanged, as upstream
    for d, name in enumerate(("image_10", "image_11")):
        data, heads, metas = series_of(out, name)
        assert data.dtype == np.int16 and data.shape == (N_PHASES * N_SLICES, 1, 1, 32, 32)
        assert {m["FlowDirDisplay"] for m in metas} == {DIRECTIONS[d]}
        assert sorted(heads["image_index"]) == list(range(N_PHASES * N_SLICES))
        assert np.array_equal(heads["image_index"], heads["phase"] + heads["slice"] * N_PHASES)
        for image, head in zip(data[:, 0, 0], heads):
            frame = flow_frames(d, head["slice"])[head["phase"]].astype(np.float64)
            noise = np.zeros(frame.shape, bool)
            noise[0:5] = True
            assert np.all(image[noise] == 0)
            expected = np.around((frame[~noise] - 2048) * MAX / 2048)
            assert np.all(image[~noise] != 0) and np.array_equal(image[~noise], expected)


def test_analyzeflow_reports_raw_data_once(server, phantom, tmp_path):
    result = run_client(server.port, "-c", "analyzeflow", "-o", str(tmp_path / "o.h5"), str(phantom))
    assert result.returncode == 1 and "nothing came back" in result.stdout  # no images, by design
    assert result.stdout.count("acquisitions ignored") == 1


# --- rgb --------------------------------------------------------------------------------------


def test_rgb_colours_images_with_jet(server, magnitude, tmp_path):
    path, pixels = magnitude
    out = tmp_path / "rgb.h5"
    run_ok(server.port, "-c", "rgb", "-o", str(out), "-G", "g", str(path), cwd=tmp_path)
    data, heads, metas = series_of(out, "image_1")
    assert data.shape == (N_IMAGES, 3, 1, 64, 64) and data.dtype == np.uint16
    assert data.min() >= 0 and data.max() <= 255
    assert set(heads["image_type"]) == {ismrmrd.IMTYPE_RGB} and set(heads["channels"]) == {3}
    # python-ismrmrd-server's colouring (its invertcontrast with options = rgb; compared in
    # tests/test_upstream_parity.py): the group's values mapped in float32 from its minimum..maximum
    # onto 0..1, jet, times 255, truncated to uint16.
    low, high = np.float32(pixels.min()), np.float32(pixels.max())
    scaled = (pixels.astype(np.float32) - low) * (np.float32(1) / (high - low))
    expected = (matplotlib.colormaps["jet"](scaled)[..., :3] * 255).astype(np.uint16)
    assert np.array_equal(np.moveaxis(data[:, :, 0], 1, -1), expected)
    assert "WindowCenter" not in metas[0] and "WindowWidth" not in metas[0]
    assert metas[0]["InternalSend"] == "1" and metas[0]["ImageProcessingHistory"] == ["PYTHON", "RGB"]


def test_rgb_colormap_option_and_raw_input(server, phantom, tmp_path):
    write_json(tmp_path, "rgb", colormap="gray")
    out = tmp_path / "rgb.h5"
    run_ok(server.port, "-c", "rgb", "-o", str(out), "-G", "g", str(phantom), cwd=tmp_path)
    data, heads, metas = series_of(out, "image_0")
    assert data.shape == (2, 3, 1, 64, 64) and set(heads["image_type"]) == {ismrmrd.IMTYPE_RGB}
    assert np.array_equal(data[:, 0], data[:, 1]) and np.array_equal(data[:, 1], data[:, 2])  # grey
    assert data.max() == 255
    assert metas[0]["ImageProcessingHistory"] == ["FIRE", "PYTHON", "RGB"]


# --- filterkspace -----------------------------------------------------------------------------


def hanning_reference(phantom):
    """Per slice: RSS of the centred 2-D inverse FFT of Hanning-windowed k-space, readout cropped."""
    with h5py.File(phantom, "r") as f:
        block = mrdfile.read_acquisitions(f["dataset"])
    noise = (block.heads["flags"] & (1 << (ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1))) != 0
    images = []
    for s in range(N_SLICES):
        rows = np.flatnonzero(~noise & (block.heads["idx"]["slice"] == s))
        kspace = np.zeros((4, 64, 128), np.complex128)
        for r in rows:
            kspace[:, block.heads["idx"]["kspace_encode_step_1"][r]] = block.data[r]
        kspace *= np.sqrt(np.outer(np.hanning(64), np.hanning(128)))
        coils = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=(1, 2))), axes=(1, 2))
        images.append(rss(coils)[:, 32:96])
    return images


def test_filterkspace_equals_hanning_windowed_reconstruction(server, phantom, tmp_path):
    filtered, plain = tmp_path / "k.h5", tmp_path / "fft.h5"
    run_ok(server.port, "-c", "filterkspace", "-o", str(filtered), "-G", "g", str(phantom))
    run_ok(server.port, "-c", "simplefft", "-o", str(plain), "-G", "g", str(phantom))
    data, heads, metas = series_of(filtered, "image_0")
    unfiltered, _, _ = series_of(plain, "image_0")
    assert data.shape == (2, 1, 1, 64, 64) and data.dtype == np.int16 and data.max() == MAX
    for image, head, reference in zip(data[:, 0, 0], heads, hanning_reference(phantom)):
        assert head["slice"] in (0, 1)
        assert nrmse(image, reference) < 0.01
    assert nrmse(data, unfiltered) > 0.05  # the window does blur
    assert metas[0]["ImageProcessingHistory"] == ["FIRE", "PYTHON", "HANNING"]


# --- filterimage ------------------------------------------------------------------------------


def test_filterimage_equals_pillow_find_edges(server, magnitude, tmp_path):
    path, pixels = magnitude
    out = tmp_path / "edges.h5"
    run_ok(server.port, "-c", "filterimage", "-o", str(out), "-G", "g", str(path), cwd=tmp_path)
    data, _, metas = series_of(out, "image_1")
    assert data.dtype == np.int16
    for image, source in zip(data[:, 0, 0], pixels):
        eight_bit = np.around(source * 255.0 / MAX).astype(np.uint8)
        edges = np.asarray(Image.fromarray(eight_bit).filter(ImageFilter.FIND_EDGES), dtype=np.float64)
        assert np.allclose(image * 255.0 / MAX, edges, atol=1)
        assert edges.max() > 50  # the phantom has edges to find
    assert metas[0]["ImageProcessingHistory"] == ["PYTHON", "FINDEDGES"]


# --- invertcontrast options -------------------------------------------------------------------


def invert_with(port, path, tmp_path, **parameters):
    write_json(tmp_path, "invertcontrast", **parameters)
    out = tmp_path / "inv.h5"
    run_ok(port, "-c", "invertcontrast", "-o", str(out), "-G", "g", str(path), cwd=tmp_path)
    return out


def test_invertcontrast_roi_option(server, magnitude, tmp_path):
    out = invert_with(server.port, magnitude[0], tmp_path, options="roi")
    data, _, metas = series_of(out, "image_1")
    assert np.array_equal(data[:, 0, 0], MAX - magnitude[1])
    x, y, rgb, thickness, style, visibility = mrdhelper.parse_roi(metas[0]["ROI_example"])
    assert rgb == (1.0, 0.0, 0.0) and visibility == 1 and len(x) == len(y) >= 4
    assert 32 < min(x) and max(x) < 64 and 32 < min(y) and max(y) < 64  # bottom-right quarter


def test_invertcontrast_colormap_option(server, magnitude, tmp_path):
    out = invert_with(server.port, magnitude[0], tmp_path, options="colormap")
    assert series_of(out, "image_1")[2][0]["LUTFileName"] == "MicroDeltaHotMetal.pal"


def test_invertcontrast_rgb_option(server, magnitude, tmp_path):
    out = invert_with(server.port, magnitude[0], tmp_path, options="rgb")
    data, heads, metas = series_of(out, "image_1")
    assert data.shape[1] == 3 and set(heads["image_type"]) == {ismrmrd.IMTYPE_RGB}
    assert data.max() <= 255 and metas[0]["SequenceDescriptionAdditional"] == "FIRE_RGB"


def test_invertcontrast_complex_option_gives_float_max_minus_x(server, magnitude, tmp_path):
    out = invert_with(server.port, magnitude[0], tmp_path, options="complex")
    data, heads, _ = series_of(out, "image_1")
    assert data.dtype == np.float32 and set(heads["data_type"]) == {ismrmrd.DATATYPE_FLOAT}
    assert np.array_equal(data[:, 0, 0], (magnitude[1].max() - magnitude[1]).astype(np.float32))


def test_invertcontrast_send_original_puts_originals_first_in_series_99(server, magnitude):
    path, pixels = magnitude
    with h5py.File(path, "r") as f:
        xml = mrdfile.read_xml(f["dataset"])
        series = mrdfile.read_image_series(f["dataset"], "image_1")
    images = [image_object(p, index=i + 1) for i, p in enumerate(pixels)]
    text = json.dumps({"version": "1.1.0", "parameters": {"options": "", "sendOriginal": "True"}})
    replies = session_replies(server.port, "invertcontrast", text, images, xml)
    assert replies[-1][0] == 4
    sent = [item for msg_id, item in replies if msg_id == 1022]
    assert [im.image_series_index for im in sent] == [99] * N_IMAGES + [SERIES] * N_IMAGES
    assert all(np.array_equal(im.data[0, 0], p) for im, p in zip(sent, series.data[:, 0, 0]))
    assert all(im.meta["Keep_image_geometry"] == "1" for im in sent[:N_IMAGES])
    assert np.array_equal(np.stack([im.data[0, 0] for im in sent[N_IMAGES:]]), MAX - pixels)
