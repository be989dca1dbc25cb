"""Every module of the test suite on MRD v2 input (issue 16): each runs over real sockets against a
real ``main.py`` twice on the same file, ``client.py -c MODULE FILE`` (MRD v1) and ``client.py -c
MODULE --format v2 FILE`` (MRD v2, docs/protocol.md §11), and the two outputs must be the same:
the same series, every image header field, the pixels exactly and the attribute strings exactly.

v2 carries no JSON configuration, so both runs use the modules' defaults: where a ``<module>.json``
lies beside client.py (filter, invertcontrast, inference), which the v1 client would send, the v1
run gets an empty ``parameters`` object from its working directory instead. The spiral modules
find their trajectory metafile through their default ``metafile_paths`` (``seq_meta``, relative to
the server's working directory, where the generator writes it) and their settings in the
repository's ``configs/``. ``inference`` without settings sends its images back with a warning
(no inference server is asked): that is what v2 can give it. ``null`` and ``savedataonly`` send no
images; for them the client's summary and the file the server saved are compared.
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest

import mrdfile
from conftest import REPO, ServerProcess, generate_phantom, run_client

_spec = importlib.util.spec_from_file_location("generate_spiral_dataset_v2",
                                              REPO / "tools" / "generate_spiral_dataset.py")
spiral_gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(spiral_gen)

MRS_GENERATOR = REPO / "tools" / "generate_mrs_dataset.py"
SPIRAL = ["--fov-cm", "19.2", "--res-mm", "6", "--interleaves", "16", "--coils", "2"]  # 32x32 images

# (test id, module, input, extra client arguments)
CASES = [
    ("simplefft", "simplefft", "raw", ()),
    ("invertcontrast-raw", "invertcontrast", "raw", ()),
    ("invertcontrast-images", "invertcontrast", "images", ()),
    ("filter", "filter", "images", ()),
    ("filterimage", "filterimage", "images", ()),
    ("filterkspace", "filterkspace", "raw", ()),
    ("rgb", "rgb", "images", ()),
    ("analyzeflow", "analyzeflow", "flow", ()),
    ("report-raw", "report", "raw", ()),
    ("report-images", "report", "images", ()),
    ("spectroscopy-svs", "spectroscopy", "svs", ()),
    ("spectroscopy-csi", "spectroscopy", "csi", ()),
    ("bartfire", "bartfire", "raw", ()),
    ("simplenufft1arm", "simplenufft1arm", "spiral_vs", ()),
    ("rtspiral_bart_tvrecon", "rtspiral_bart_tvrecon", "spiral_tv", ()),
    ("spiral_xdgrasp_recon", "spiral_xdgrasp_recon", "spiral_xd", ("-w",)),
    ("inference", "inference", "images", ()),
    ("grappa", "grappa", "accelerated", ()),
    ("espirit", "espirit", "accelerated", ()),
    ("legacy_echo", "legacy_echo", "raw", ()),       # tests/legacy_modules (python-ismrmrd-server style)
    ("mixed_sizes", "mixed_sizes", "raw", ()),
]


def modules_with_process() -> set[str]:
    """The dispatchable modules of modules/: no leading ``_``, a ``process`` function."""
    return {p.stem for p in (REPO / "modules").glob("*.py")
            if not p.name.startswith("_") and "\ndef process(" in p.read_text()}


def test_every_module_has_a_case():
    assert modules_with_process() <= {module for _, module, _, _ in CASES}


# --- inputs ---------------------------------------------------------------------------------------


def flow_image_file(path: Path, xml: str) -> Path:
    """A magnitude image and two flow directions x 2 phases of uint16 phase images (analyzeflow's input):
    noise rows, static tissue and a vessel whose velocity changes over the phases."""
    images = []

    def add(pixels, image_type, index, phase=0, meta=None):
        image = ismrmrd.Image.from_array(pixels, transpose=False)
        head = image.getHead()
        head.image_type, head.image_series_index, head.image_index, head.phase = image_type, 1, index, phase
        head.read_dir, head.phase_dir, head.slice_dir = (1, 0, 0), (0, 1, 0), (0, 0, 1)
        head.field_of_view = (256.0, 256.0, 5.0)
        image.setHead(head)
        image.meta = ismrmrd.Meta(meta or {})
        images.append(image)

    add(np.full((32, 32), 1000, np.uint16), ismrmrd.IMTYPE_MAGNITUDE, 99)
    rng = np.random.default_rng(3)
    for d, direction in enumerate(("FLOW_DIR_A_TO_P", "FLOW_DIR_F_TO_H")):
        for p in range(4):
            frame = np.full((32, 32), 2100 + 10 * d, np.int64)
            frame[0:5] = 3000 * (p % 2) + rng.integers(0, 1000, (5, 32))
            frame[10:20, 10:20] = 2048 + (300 + 50 * p) * (1 + d)
            add(frame.clip(0, 4095).astype(np.uint16), ismrmrd.IMTYPE_PHASE, p, p,
                {"FlowDirDisplay": direction, "FlowVelocity": "150"})
    heads = np.frombuffer(b"".join(bytes(im.getHead()) for im in images), dtype=mrdfile.IMAGE_HEADER_DTYPE)
    with h5py.File(path, "w") as f:
        group = f.create_group("dataset")
        mrdfile.write_xml(group, xml)
        mrdfile.append_images(group, heads, [im.attribute_string for im in images], [im.data for im in images])
    return path


class Inputs:
    """The input files, each made on first use (a ``-k`` selection makes only what it needs)."""

    def __init__(self, folder: Path, server: ServerProcess) -> None:
        self.folder, self.server, self._made = folder, server, {}

    def __getitem__(self, name: str) -> Path:
        if name not in self._made:
            self._made[name] = getattr(self, "_" + name)(self.folder / f"{name}.h5")
        return self._made[name]

    def _raw(self, path):  # as tests/test_image_modules.py and tests/test_bartfire.py: 64x64, 4 coils, 2 slices
        return generate_phantom(path, "-m", "64", "-c", "4", "-n", "0", "--slices", "2")

    def _accelerated(self, path):  # grappa's input: R = 2 with 24 embedded ACS lines, noise readouts first
        return generate_phantom(path, "-m", "64", "-c", "4", "-n", "0.01", "--accel", "2", "--acs", "24")

    def _images(self, path):  # simplefft's int16 magnitude images of the raw phantom, with its header
        result = run_client(self.server.port, "-c", "simplefft", "-o", str(path), "-G", "dataset", str(self["raw"]))
        assert result.returncode == 0, result.stdout + result.stderr
        return path

    def _flow(self, path):
        with h5py.File(self["raw"], "r") as f:
            return flow_image_file(path, mrdfile.read_xml(f["dataset"]))

    def _svs(self, path):  # tests/test_spectroscopy.py's SVS (1024 points, 4 coils, 8 averages)
        subprocess.run([sys.executable, str(MRS_GENERATOR), "-o", str(path)], check=True, capture_output=True)
        return path

    def _csi(self, path):  # a 4x4 CSI grid, 256 points, 2 averages
        subprocess.run([sys.executable, str(MRS_GENERATOR), "-o", str(path), "-k", "csi", "-n", "256", "-a", "2",
                        "--grid", "4", "--noise", "0.01"], check=True, capture_output=True)
        return path

    def _spiral(self, path, *args):
        # the metafile goes to <server cwd>/seq_meta: the default metafile_paths' "seq_meta"
        assert spiral_gen.main(["-o", str(path), "--metafile-dir", str(self.server.cwd / "seq_meta"), *SPIRAL,
                                *args]) == 0
        return path

    def _spiral_vs(self, path):  # defaults: 55 arms a frame, a frame every 17 arms -> 2 frames
        return self._spiral(path, "--arms", "72", "--motion-px", "1", "--motion-hz", "0.5")

    def _spiral_tv(self, path):  # defaults: 7 arms a frame, 120 iterations -> 3 frames
        return self._spiral(path, "--arms", "21", "--motion-px", "1", "--motion-hz", "0.5")

    def _spiral_xd(self, path):  # defaults: 4 respiratory x 8 cardiac bins from the pilot tone
        return self._spiral(path, "--arms", "1200", "--resp-hz", "0.3", "--card-hz", "1.1", "--resp-px", "2",
                            "--card-px", "0", "--waveforms")


@pytest.fixture(scope="module")
def v2_server(tmp_path_factory):
    """The server, its working directory holding ``seq_meta``; one OpenMP thread: BART's iterative
    reconstructions (rtspiral_bart_tvrecon, spiral_xdgrasp_recon) differ from run to run in the last
    digits with several threads (their parallel sums), with one they are reproducible to the bit."""
    tmp = tmp_path_factory.mktemp("v2_server")
    (tmp / "seq_meta").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        srv = ServerProcess(tmp)
    srv.cwd = tmp
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def inputs(v2_server, tmp_path_factory):
    return Inputs(tmp_path_factory.mktemp("v2_inputs"), v2_server)


# --- the two runs and their comparison ------------------------------------------------------------

V2_SESSION = "MRD v2 stream (yardl binary)"  # the server's log line for a session that speaks v2


def client(server, fmt, *args, cwd=None):
    """``client.py --format fmt``: (the finished process, what the server logged meanwhile); a v2
    session must have been logged as one."""
    before = len(server.log_text())
    proc = run_client(server.port, "--format", fmt, *args, cwd=cwd)
    logged = server.log_text()[before:]
    assert logged.count(V2_SESSION) == (fmt == "v2"), f"{fmt}:\n{logged}"
    return proc, logged


def run_both(server, module, source, tmp_path, *extra):
    """``client.py -c module`` with v1 and with v2 on ``source``: {format: (process, output file, server log)}."""
    runs = {}
    for fmt in ("v1", "v2"):
        cwd = tmp_path / fmt
        cwd.mkdir()
        if fmt == "v1" and (REPO / f"{module}.json").is_file():  # v1 would send it; v2 cannot: defaults for both
            (cwd / f"{module}.json").write_text(json.dumps({"version": "1.1.0", "parameters": {}}))
        out = cwd / "out.h5"
        proc, logged = client(server, fmt, "-c", module, "-o", str(out), "-G", "g", *extra, str(source), cwd=cwd)
        assert proc.returncode == 0, f"{fmt}:\n{proc.stdout}{proc.stderr}"
        runs[fmt] = (proc, out, logged)
    v1_said = runs["v1"][0].stdout
    assert "JSON config: none" in v1_said or f"JSON config: {tmp_path / 'v1' / module}.json" in v1_said, v1_said
    return runs


def image_series(path):
    with h5py.File(path, "r") as f:
        group = f["g"]
        names = mrdfile.image_series_names(group)
        return sorted(group), {name: mrdfile.read_image_series(group, name) for name in names}


def assert_same_values(a, b, what):
    """Equal arrays, also compound ones with variable-length members (the waveforms dataset)."""
    assert a.dtype == b.dtype and a.shape == b.shape, what
    if a.dtype.names:
        for field in a.dtype.names:
            assert_same_values(a[field], b[field], f"{what}.{field}")
    elif a.dtype == object:
        for i, (x, y) in enumerate(zip(a.ravel(), b.ravel())):
            assert type(x) is type(y) and np.array_equal(x, y), f"{what}[{i}]"
    else:
        assert np.array_equal(a, b), what


def assert_same_output(v1_out, v2_out):
    """The same group members, and per image series the same headers (every field), pixels and
    attribute strings, exactly; returns the number of images."""
    keys1, series1 = image_series(v1_out)
    keys2, series2 = image_series(v2_out)
    assert keys1 == keys2
    assert series1, "no image came back"
    with h5py.File(v1_out, "r") as f, h5py.File(v2_out, "r") as g:
        for key in keys1:
            if key not in series1:  # xml, waveforms, ...
                assert_same_values(f["g"][key][...], g["g"][key][...], key)
    count = 0
    for name, one in series1.items():
        two = series2[name]
        assert one.heads.shape == two.heads.shape, name
        for field in one.heads.dtype.names:
            assert np.array_equal(one.heads[field], two.heads[field]), (name, field, one.heads[field], two.heads[field])
        assert one.data.dtype == two.data.dtype and one.data.shape == two.data.shape, name
        assert np.array_equal(one.data, two.data), name
        assert one.attributes == two.attributes, name
        count += len(one.heads)
    return count


@pytest.mark.parametrize("module, source, extra", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_module_gives_the_same_output_on_v1_and_v2(v2_server, inputs, tmp_path, module, source, extra):
    runs = run_both(v2_server, module, inputs[source], tmp_path, *extra)
    count = assert_same_output(runs["v1"][1], runs["v2"][1])
    assert f"received {count} images" in runs["v1"][0].stdout and f"received {count} images" in runs["v2"][0].stdout
    if module == "inference":  # no settings in either format: the images come back, with one warning
        warning = "AI inference off: parameters.inference_url and parameters.inference_model missing"
        assert warning in runs["v1"][0].stdout  # a TEXT to the v1 client
        assert warning in runs["v2"][2] and warning not in runs["v2"][0].stdout  # v2 has no texts: the log


def test_null_sends_nothing_back_on_v1_and_v2(v2_server, inputs, tmp_path):
    for fmt in ("v1", "v2"):
        proc, _ = client(v2_server, fmt, "-c", "null", "-o", str(tmp_path / f"{fmt}.h5"), str(inputs["raw"]))
        assert proc.returncode == 0 and "received 0 images" in proc.stdout, proc.stdout + proc.stderr


def test_savedataonly_saves_the_same_acquisitions_on_v1_and_v2(v2_server, inputs, tmp_path):
    saved = {}
    for fmt in ("v1", "v2"):
        before = set(v2_server.savedir.glob("*.h5")) if v2_server.savedir.exists() else set()
        proc, _ = client(v2_server, fmt, "-c", "savedataonly", "-o", str(tmp_path / f"{fmt}.h5"), str(inputs["raw"]))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        new = sorted(set(v2_server.savedir.glob("*.h5")) - before)
        assert len(new) == 1, new
        saved[fmt] = new[0]
    with h5py.File(saved["v1"], "r") as f, h5py.File(saved["v2"], "r") as g, h5py.File(inputs["raw"], "r") as raw:
        assert f["dataset/config_file"][0] == g["dataset/config_file"][0] == b"savedataonly"
        assert len(f["dataset/data"]) == len(g["dataset/data"]) == len(raw["dataset/data"])
        for field in raw["dataset/data"].dtype["head"].names:
            source = raw["dataset/data"]["head"][field]
            assert np.array_equal(f["dataset/data"]["head"][field], source), field
            assert np.array_equal(g["dataset/data"]["head"][field], source), field
        for name in ("traj", "data"):
            for a, b, c in zip(f["dataset/data"][name], g["dataset/data"][name], raw["dataset/data"][name]):
                assert np.array_equal(a, c) and np.array_equal(b, c), name
