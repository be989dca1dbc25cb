"""client.py never reports success after losing data, and says what it did: real sockets, main.py and
client.py as subprocesses (tests/legacy_modules: paced, mixed_sizes)."""
import json
import re
import resource
import shutil
import subprocess
import sys
import time

import h5py
import ismrmrd
import numpy as np
import pytest

from conftest import REPO, free_port, generate_phantom, images_of, nrmse, rss, run_client


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Noise-free 64x64 phantom, 4 coils, 2 repetitions (2 images)."""
    return generate_phantom(tmp_path_factory.mktemp("data") / "phantom.h5", "-m", "64", "-c", "4", "-n", "0",
                            "-r", "2")


def groups_of(path):
    with h5py.File(path, "r") as f:
        return {g: sorted(k for k in f[g] if k.startswith("image_")) for g in f}


def test_output_file_may_be_the_input_file(server, phantom, tmp_path):
    data = tmp_path / "in.h5"
    shutil.copy(phantom, data)
    result = run_client(server.port, "-c", "simplefft", "-o", str(data), "-G", "recon", str(data))
    assert result.returncode == 0, result.stdout + result.stderr
    images, heads, _ = images_of(data, "recon")
    with h5py.File(data, "r") as f:
        truth = f["dataset/coil_images"][...]
        assert f["dataset/data"].shape == (160,)  # the input group is untouched
        assert "xml" in f["recon"]
    assert images.shape == (2, 1, 1, 64, 64)
    assert nrmse(images[0, 0, 0], rss(truth[0])) <= 0.01
    again = run_client(server.port, "-c", "simplefft", "-o", str(data), "-G", "dataset", "-g", "dataset", str(data))
    assert again.returncode == 2 and "is the input group" in again.stdout


def test_images_that_do_not_fit_an_existing_output_series_go_to_a_new_group(server, phantom, tmp_path):
    out = tmp_path / "out.h5"
    small = generate_phantom(tmp_path / "small.h5", "-m", "32", "-c", "2", "-n", "0")
    assert run_client(server.port, "-c", "simplefft", "-o", str(out), "-G", "g", str(small)).returncode == 0
    result = run_client(server.port, "-c", "simplefft", "-o", str(out), "-G", "g", str(phantom))
    assert result.returncode == 0, result.stdout
    assert "do not fit the series' (1, 1, 32, 32) images" in result.stdout and "stored in image_0_2" in result.stdout
    old, _, _ = images_of(out, "g", "image_0")
    new, _, _ = images_of(out, "g", "image_0_2")
    assert old.shape == (1, 1, 1, 32, 32) and new.shape == (2, 1, 1, 64, 64)
    with h5py.File(phantom, "r") as f:
        truth = f["dataset/coil_images"][0]
    assert nrmse(new[1, 0, 0], rss(truth)) <= 0.01
    dset = ismrmrd.Dataset(str(out), "g", create_if_needed=False)  # still an ismrmrd.Dataset
    assert dset.number_of_images("image_0_2") == 2
    dset.close()


def test_images_of_two_sizes_in_one_series_are_all_kept(server, phantom, tmp_path):
    out = tmp_path / "out.h5"
    result = run_client(server.port, "-c", "mixed_sizes", "-o", str(out), "-G", "g", str(phantom))
    assert result.returncode == 0, result.stdout
    assert groups_of(out)["g"] == ["image_0", "image_0_2", "image_0_3"]
    assert result.stdout.count("do not fit the series' (1, 1, 48, 64) images") == 2
    first, _, _ = images_of(out, "g", "image_0")
    transposed, _, _ = images_of(out, "g", "image_0_2")
    assert np.array_equal(transposed[0, 0, 0], first[0, 0, 0].T)


def test_fix_transposed_transposes_back_and_swaps_the_geometry(server, phantom, tmp_path):
    out = tmp_path / "out.h5"
    result = run_client(server.port, "-c", "mixed_sizes", "-o", str(out), "-G", "g", "--fix-transposed", str(phantom))
    assert result.returncode == 0, result.stdout
    assert "image 1 transposed to (1, 1, 48, 64)" in result.stdout
    assert groups_of(out)["g"] == ["image_0", "image_0_2"]
    data, heads, attrs = images_of(out, "g", "image_0")
    assert data.shape == (2, 1, 1, 48, 64) and np.array_equal(data[1], data[0])
    assert heads["matrix_size"][1].tolist() == [64, 48, 1] and heads["field_of_view"][1][:2].tolist() == [64, 48]
    assert heads["read_dir"][1].tolist() == [1, 0, 0] and heads["phase_dir"][1].tolist() == [0, 1, 0]
    meta = ismrmrd.Meta.deserialize(attrs[1])
    assert [float(v) for v in meta["ImageRowDir"]] == [1, 0, 0] and [float(v) for v in meta["ImageColumnDir"]] == [0, 1, 0]
    other, _, _ = images_of(out, "g", "image_0_2")
    assert other.shape == (1, 1, 1, 32, 32) and (other == 7).all()


@pytest.mark.parametrize("where", ["missing_folder", "folder", "proc"])
def test_unwritable_output_is_refused_before_anything_is_sent(phantom, tmp_path, where):
    outfile = {"missing_folder": tmp_path / "no" / "out.h5", "folder": tmp_path,
               "proc": "/proc/self/out.h5"}[where]
    start = time.monotonic()
    result = run_client(free_port(), "-c", "simplefft", "-o", str(outfile), str(phantom))  # no server listens
    assert result.returncode == 2, result.stdout
    (line,) = result.stdout.splitlines()
    assert f"Cannot write output {outfile}" in line
    assert time.monotonic() - start < 5  # it never tried to connect (5 attempts, 1 s apart)


def test_a_failure_to_store_is_exit_1_naming_file_group_and_reason(server, phantom, tmp_path):
    # 600 images over 3 s: the receiver tries to store more than once (every 2 s) after the first refusal
    (tmp_path / "paced.json").write_text(json.dumps({"parameters": {"series": 2, "images": 300, "send_delay": 0.005}}))
    out = tmp_path / "out.h5"
    limit = 2 << 20  # the output may not grow beyond 2 MB: like a full disk

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    cmd = [sys.executable, str(REPO / "client.py"), "-p", str(server.port), "-c", "paced", "-o", str(out), "-G", "g",
           str(phantom)]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, preexec_fn=small_files, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(rf"storing in {re.escape(str(out))}:/g failed: OSError: .*no room .*; 600 received item\(s\) "
                     "not stored", result.stdout)
    assert "Traceback" not in result.stdout + result.stderr


def test_mrd2gif_writes_a_preview_of_the_output_group(server, tmp_path):
    noisy = generate_phantom(tmp_path / "noisy.h5", "-m", "64", "-c", "2", "-r", "2")  # two different frames
    out = tmp_path / "out.h5"
    result = run_client(server.port, "-c", "simplefft", "-o", str(out), "-G", "g", "--mrd2gif", str(noisy))
    assert result.returncode == 0, result.stdout
    (gif,) = tmp_path.glob("out_g_image_0*.gif")
    from PIL import Image
    with Image.open(gif) as im:
        assert im.n_frames == 2 and im.size == (64, 64)


def test_hdf5_file_whose_data_is_not_mrd_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["dataset/data"] = np.arange(10)
    result = run_client(free_port(), "-o", str(tmp_path / "o.h5"), str(bad))
    assert result.returncode == 2
    (line,) = result.stdout.splitlines()
    assert "/dataset/data is not MRD acquisition data" in line and "Traceback" not in result.stderr


def test_client_port_out_of_range_is_a_clear_error(phantom):
    result = run_client(99999, str(phantom))
    assert result.returncode == 2 and "99999 is not a TCP port" in result.stderr


def test_summary_names_the_json_file_the_send_rate_and_the_total_time(server, phantom, tmp_path):
    (tmp_path / "paced.json").write_text(json.dumps({"parameters": {"series": 1, "images": 1}}))
    result = run_client(server.port, "-c", "paced", "-o", str(tmp_path / "o.h5"), str(phantom), cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert f"JSON config: {tmp_path / 'paced.json'}" in result.stdout
    assert re.search(r"Sent 160 of 160 items \([0-9.]+ MB\) in [0-9.]+ s \([0-9.]+ MB/s\); received 1 images "
                     r"\(1 in series 0\).*; [0-9.]+ s in all", result.stdout)
    none = run_client(server.port, "-c", "simplefft", "-o", str(tmp_path / "o.h5"), str(phantom), cwd=tmp_path)
    assert "JSON config: none" in none.stdout


def test_the_quick_exit_keeps_the_output_and_profilers_still_write(server, phantom, tmp_path):
    """client.py ends with os._exit (no interpreter teardown) when no HDF5 file is open: the output
    must be complete; under cProfile the normal exit runs, so the profile is written."""
    out, profile = tmp_path / "o.h5", tmp_path / "client.prof"
    assert run_client(server.port, "-c", "simplefft", "-o", str(out), "-G", "g", str(phantom)).returncode == 0
    assert len(images_of(out, "g")[0]) == 2
    cmd = [sys.executable, "-m", "cProfile", "-o", str(profile), str(REPO / "client.py"), "-a", "127.0.0.1", "-p",
           str(server.port), "-c", "simplefft", "-o", str(out), "-G", "g2", str(phantom)]
    assert subprocess.run(cmd, capture_output=True, timeout=120).returncode == 0
    assert profile.stat().st_size > 1000 and len(images_of(out, "g2")[0]) == 2
