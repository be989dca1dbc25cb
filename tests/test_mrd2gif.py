"""Tests of tools/mrd2gif.py on real MRD HDF5 files: frames, mosaics, windowing, names, errors."""
import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest
from PIL import Image

import mrdfile
import mrdhelper
from conftest import REPO, generate_phantom

TOOL = Path(__file__).resolve().parents[1] / "tools" / "mrd2gif.py"
_spec = importlib.util.spec_from_file_location("mrd2gif", TOOL)
mrd2gif = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mrd2gif)

Y, X, N = 12, 20, 5
CENTER, WIDTH = 100, 200  # window 0 .. 200


def ramp_images(n: int = N, z: int = 1) -> list[np.ndarray]:
    """Image i is ``10 * i`` plus a ramp 0..190 along x: ``[cha=1, z, Y, X]`` int16."""
    ramp = np.broadcast_to(np.arange(X, dtype=np.int16) * 10, (1, z, Y, X))
    return [ramp + np.int16(10 * i) for i in range(n)]


def write_file(path: Path, images: list[np.ndarray], meta: dict, series: int = 0, group: str = "dataset",
               data_type: int = ismrmrd.DATATYPE_SHORT, image_type: int = ismrmrd.IMTYPE_MAGNITUDE) -> Path:
    heads = np.zeros(len(images), dtype=mrdfile.IMAGE_HEADER_DTYPE)
    heads["data_type"] = data_type
    heads["image_type"] = image_type
    heads["matrix_size"] = (X, Y, images[0].shape[1])
    heads["channels"] = images[0].shape[0]
    heads["image_series_index"] = series
    heads["image_index"] = np.arange(len(images))
    attributes = [ismrmrd.Meta(meta).serialize() for _ in images]
    with h5py.File(path, "a") as h5:
        mrdfile.append_images(h5.require_group(group), heads, attributes, images)
    return path


@pytest.fixture
def windowed(tmp_path):
    meta = {"WindowCenter": str(CENTER), "WindowWidth": str(WIDTH), "SequenceDescriptionAdditional": "T1 map"}
    return write_file(tmp_path / "scan.h5", ramp_images(), meta)


def frames_of(path: Path) -> list[np.ndarray]:
    with Image.open(path) as im:
        frames = []
        for k in range(im.n_frames):
            im.seek(k)
            frames.append(np.asarray(im.convert("L")))
    return frames


def test_gif_has_one_frame_per_image_of_image_size_named_after_series(windowed):
    assert mrd2gif.main([str(windowed)]) == 0
    out = windowed.parent / "scan_dataset_image_0_T1_map.gif"
    with Image.open(out) as im:
        assert (im.n_frames, im.size, im.info["loop"], im.info["duration"]) == (N, (X, Y), 0, 40)


def test_window_attributes_map_low_edge_to_0_and_high_edge_to_255(windowed):
    assert mrd2gif.main([str(windowed)]) == 0
    frames = frames_of(windowed.parent / "scan_dataset_image_0_T1_map.gif")
    # image 0: x * 10 with window [0, 200] -> 0 at x=0, 255 at x=20 (clipped above, none here: max 190)
    np.testing.assert_array_equal(frames[0][0], np.rint(np.arange(X) * 10 * 255 / 200).astype(np.uint8))
    # image 1: 10 + x * 10 reaches the window top 200 at x=19
    assert frames[1][0, 0] == round(10 * 255 / 200) and frames[1][0, 19] == 255
    # image 4: 40 + x * 10 is clipped to 255 from x=16
    assert list(frames[4][0, 15:]) == [round(190 * 255 / 200)] + [255] * 4


def test_rescale_and_fps_change_frame_size_and_duration(windowed, tmp_path):
    assert mrd2gif.main([str(windowed), "-r", "3", "--fps", "10", "-o", str(tmp_path / "out")]) == 0
    with Image.open(tmp_path / "out" / "scan_dataset_image_0_T1_map.gif") as im:
        assert (im.n_frames, im.size, im.info["duration"]) == (N, (3 * X, 3 * Y), 100)
        im.seek(2)
        frame = np.asarray(im.convert("L"))
    np.testing.assert_array_equal(frame[::3, ::3], frame[2::3, 2::3])


def test_png_tiles_all_images_in_a_near_square_grid(windowed):
    assert mrd2gif.main([str(windowed), "--filetype", "png", "-r", "2"]) == 0
    with Image.open(windowed.parent / "scan_dataset_image_0_T1_map.png") as im:
        assert im.size == (3 * X * 2, 2 * Y * 2)  # 5 images -> 3 columns x 2 rows
        mosaic = np.asarray(im.convert("L"))
    assert mosaic[2 * Y, 0] == round(30 * 255 / 200)  # image 3 starts the second row
    assert mosaic[2 * Y, 2 * X] == round(40 * 255 / 200)  # image 4 follows it
    assert not mosaic[2 * Y:, 4 * X:].any()  # the unused sixth tile is black


def test_slices_of_a_multislice_image_are_side_by_side(tmp_path):
    path = write_file(tmp_path / "multi.h5", ramp_images(n=2, z=3), {"WindowCenter": "100", "WindowWidth": "200"})
    assert mrd2gif.main([str(path)]) == 0
    with Image.open(tmp_path / "multi_dataset_image_0.gif") as im:
        assert (im.n_frames, im.size) == (2, (3 * X, Y))


def test_rescale_attributes_apply_before_window(tmp_path):
    meta = {"RescaleSlope": "2", "RescaleIntercept": "-100", "WindowCenter": "0", "WindowWidth": "200"}
    path = write_file(tmp_path / "slope.h5", ramp_images(n=1), meta)
    assert mrd2gif.main([str(path)]) == 0
    frame = frames_of(tmp_path / "slope_dataset_image_0.gif")[0]
    # value 2 * 10x - 100 in window [-100, 100]: 0 at x=0, 255 from x=10
    assert frame[0, 0] == 0 and frame[0, 5] == 128 and frame[0, 10] == 255


def test_without_window_attributes_percentiles_set_the_window(tmp_path):
    path = write_file(tmp_path / "auto.h5", ramp_images(), {})
    assert mrd2gif.main([str(path)]) == 0
    frames = frames_of(tmp_path / "auto_dataset_image_0.gif")
    values = np.stack(ramp_images()).astype(float).reshape(N, -1)
    low = np.median(np.percentile(values, 5, axis=1))
    high = np.median(np.percentile(values, 95, axis=1))
    expected = np.clip(np.rint((values[2].reshape(Y, X)[0] - low) * 255 / (high - low)), 0, 255)
    np.testing.assert_array_equal(frames[2][0], expected)
    assert frames[2][0, 0] == 0 and frames[2][0, -1] == 255


def test_complex_images_are_shown_as_magnitude(tmp_path):
    images = [(r * np.exp(1j * 0.7)).astype(np.complex64) for r in ramp_images(n=2)]
    path = write_file(tmp_path / "cplx.h5", images, {"WindowCenter": "100", "WindowWidth": "200"},
                      data_type=ismrmrd.DATATYPE_CXFLOAT)
    assert mrd2gif.main([str(path)]) == 0
    np.testing.assert_array_equal(frames_of(tmp_path / "cplx_dataset_image_0.gif")[0][0],
                                  np.rint(np.arange(X) * 10 * 255 / 200).astype(np.uint8))


def test_rgb_images_are_written_in_colour(tmp_path):
    rgb = np.zeros((3, 1, Y, X), dtype=np.uint16)
    rgb[0, 0, :, : X // 2] = 255  # left half red
    rgb[2, 0, :, X // 2:] = 255  # right half blue
    path = write_file(tmp_path / "rgb.h5", [rgb], {}, data_type=ismrmrd.DATATYPE_USHORT,
                      image_type=ismrmrd.IMTYPE_RGB)
    assert mrd2gif.main([str(path), "--filetype", "png"]) == 0
    with Image.open(tmp_path / "rgb_dataset_image_0.png") as im:
        assert im.mode == "RGB"
        pixels = np.asarray(im)
    assert tuple(pixels[0, 0]) == (255, 0, 0) and tuple(pixels[0, -1]) == (0, 0, 255)


def test_default_group_is_the_last_and_series_option_selects_one(tmp_path):
    path = write_file(tmp_path / "two.h5", ramp_images(n=2), {}, group="first")
    write_file(path, ramp_images(n=3), {}, group="second", series=0)
    write_file(path, ramp_images(n=4), {}, group="second", series=7)
    assert mrd2gif.main([str(path), "-s", "image_7"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.gif")) == ["two_second_image_7.gif"]
    assert mrd2gif.main([str(path), "-g", "first"]) == 0
    with Image.open(tmp_path / "two_first_image_0.gif") as im:
        assert im.n_frames == 2


def test_logs_each_written_file_unless_quiet(windowed, caplog):
    with caplog.at_level(logging.INFO):
        assert mrd2gif.main([str(windowed)]) == 0
        assert "scan_dataset_image_0_T1_map.gif" in caplog.text
        caplog.clear()
        assert mrd2gif.main([str(windowed), "-q"]) == 0
        assert caplog.text == ""


@pytest.mark.parametrize("args", [["-g", "nogroup"], ["-s", "image_9"]])
def test_missing_group_or_series_exits_2_with_an_error(windowed, caplog, args):
    assert mrd2gif.main([str(windowed), *args]) == 2
    assert caplog.records[-1].levelno == logging.ERROR and args[1] in caplog.text
    assert not list(windowed.parent.glob("*.gif"))


def test_missing_file_exits_2(tmp_path, caplog):
    assert mrd2gif.main([str(tmp_path / "absent.h5")]) == 2
    assert "absent.h5" in caplog.text


def test_visible_rois_are_drawn_in_their_colour(tmp_path):
    heads = np.zeros(1, dtype=mrdfile.IMAGE_HEADER_DTYPE)
    heads["version"], heads["data_type"], heads["channels"] = 1, 2, 1
    heads["matrix_size"] = (40, 30, 1)
    meta = ismrmrd.Meta({"WindowCenter": "50", "WindowWidth": "100",
                         "ROI_box": mrdhelper.create_roi([5, 30, 30, 5, 5], [5, 5, 20, 20, 5], rgb=(0, 1, 0)),
                         "ROI_hidden": mrdhelper.create_roi([0, 39], [29, 29], rgb=(1, 0, 0), visibility=0)})
    path = tmp_path / "roi.h5"
    with h5py.File(path, "w") as f:
        mrdfile.append_images(f.require_group("g"), heads, [meta.serialize()], [np.zeros((1, 1, 30, 40), np.int16)])
    assert mrd2gif.main([str(path), "--filetype", "png", "-q"]) == 0
    png = np.asarray(Image.open(tmp_path / "roi_g_image_0.png").convert("RGB"))
    assert tuple(png[5, 15]) == (0, 255, 0) and tuple(png[12, 30]) == (0, 255, 0)
    assert tuple(png[12, 15]) == (0, 0, 0) and tuple(png[29, 20]) == (0, 0, 0)


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_raw_data_file_exits_1_with_one_line_saying_to_reconstruct_it_first(tmp_path):
    raw = generate_phantom(tmp_path / "raw.h5", "-m", "32", "-c", "2")
    result = run_tool(str(raw))
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "Traceback" not in line and "ERROR" in line
    assert "dataset" in line and "raw.h5" in line and "no images" in line and "raw data" in line
    assert "reconstruct it first" in line and "client.py" in line
    assert [p.name for p in tmp_path.iterdir()] == ["raw.h5"]


def test_empty_group_exits_1_with_one_line(tmp_path):
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        f.create_group("nothing")
    result = run_tool(str(path), "-s", "image_0")
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "group nothing of" in line and "holds no images" in line and "empty" in line
    assert "Traceback" not in result.stderr
