"""Module discovery as python-ismrmrd-server users expect it: a config's module is found in the --modules
folders, modules/, the repository root, the working directory, the FIRE share's code/ folder and the
PYTHONPATH folders (in that order); only a file that defines process() is ever run; a broken module is an
error for the client (exit 1), an unknown name falls back to the default with a warning."""
import os
import shutil
import subprocess

import h5py
import numpy as np
import pytest

from conftest import LEGACY_MODULES, REPO, generate_phantom, images_of, nrmse, rss, run_client
from tools._server_harness import ServerProcess as MainServer

UPSTREAM = REPO / "tests" / "upstream"
LEGACY_STYLE = (LEGACY_MODULES / "legacy_echo.py").read_text()


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return generate_phantom(tmp_path_factory.mktemp("data") / "p.h5", "-m", "64", "-c", "4", "-n", "0")


def best_nrmse(image, reference):
    """NRMSE up to the orientation conventions of the two implementations (flips, one-pixel shifts)."""
    candidates = [np.roll(np.flip(image, axes), shift, axis=(0, 1)) for axes in ((), (0,), (1,), (0, 1))
                  for shift in ((0, 0), (1, 1), (1, 0), (0, 1), (-1, -1))]
    return min(nrmse(c, reference) for c in candidates)


@pytest.fixture(scope="module")
def debian_phantom(tmp_path_factory):
    """The ISMRMRD C++ tools' phantom, the data upstream's simplefft is written for (no noise readouts)."""
    path = tmp_path_factory.mktemp("debian") / "raw.h5"
    subprocess.run([shutil.which("ismrmrd_generate_cartesian_shepp_logan"), "-o", str(path), "-m", "64", "-c", "4",
                    "-n", "0"], check=True, capture_output=True)
    with h5py.File(path, "r") as f:
        stored = f["dataset/coil_images"][0]
    return path, rss(stored["real"] + 1j * stored["imag"])[:, 32:96]  # [y, x] without readout oversampling


def test_upstream_simplefft_copied_into_a_clones_root_runs_unchanged(debian_phantom, phantom, tmp_path):
    raw, reference = debian_phantom
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    shutil.copy(UPSTREAM / "simplefft.py", clone / "myfft.py")
    work = tmp_path / "elsewhere"
    work.mkdir()
    log = tmp_path / "server.log"
    srv = MainServer("-v", main=clone / "main.py", log=log, cwd=work, timeout=20.0)
    port = srv.port
    try:
        result = run_client(port, "-c", "myfft", "-o", str(tmp_path / "o.h5"), "-G", "g", str(raw))
        assert result.returncode == 0, result.stdout
        data, _, _ = images_of(tmp_path / "o.h5", "g")
        assert data.shape[0] == 1 and best_nrmse(data[0, 0, 0].astype(float), reference) <= 0.01
        assert "Running module 'myfft'" in log.read_text()
        broken = run_client(port, "-c", "os", "-o", str(tmp_path / "o.h5"), str(phantom))
        assert broken.returncode == 0 and "Unknown config 'os'; using the default module" in broken.stdout
    finally:
        assert srv.stop() == 0


@pytest.fixture
def places(tmp_path):
    """A server whose working directory, FIRE share and PYTHONPATH each hold a module of their own."""
    work, share, pypath, extra = (tmp_path / d for d in ("work", "share", "pypath", "extra"))
    for folder in (work, share / "code", pypath, extra):
        folder.mkdir(parents=True)
    for folder, name in ((work, "in_cwd"), (share / "code", "in_share"), (pypath, "in_pythonpath"),
                         (extra, "in_extra")):
        (folder / f"{name}.py").write_text(LEGACY_STYLE.replace("head.image_series_index = 7",
                                                                f"head.image_series_index = {len(name)}"))
    (work / "in_extra.py").write_text("raise SystemExit('the --modules copy must win')\n")
    (work / "syntax_error.py").write_text("def process(connection, config, metadata)\n    pass\n")
    (work / "no_process.py").write_text("open('ran.txt', 'w').write('executed')\n")
    (work / "json.py").write_text("def process(connection, config, metadata):\n    raise SystemExit('shadow')\n")
    shutil.copy(LEGACY_MODULES / "broken_import.py", work / "missing_package.py")
    env = {**os.environ, "MRD_SHARE_DIR": str(share), "PYTHONPATH": str(pypath)}
    log = tmp_path / "server.log"
    srv = MainServer("-v", "--modules", str(extra), log=log, cwd=work, env=env, timeout=20.0)
    yield srv.port, work, log
    assert srv.stop() == 0


@pytest.mark.parametrize("name", ["in_cwd", "in_share", "in_pythonpath", "in_extra"])
def test_modules_are_found_in_every_place_upstream_finds_them(places, phantom, tmp_path, name):
    port, _, _ = places
    out = tmp_path / "o.h5"
    result = run_client(port, "-c", name, "-o", str(out), "-G", "g", str(phantom))
    assert result.returncode == 0, result.stdout
    with h5py.File(out, "r") as f:
        assert list(k for k in f["g"] if k.startswith("image_")) == [f"image_{len(name)}"]


@pytest.mark.parametrize("name, why", [
    ("syntax_error", "syntax_error.py does not parse: SyntaxError"),
    ("missing_package", "missing_package.py failed to import: ModuleNotFoundError: No module named "
                        "'a_package_that_does_not_exist'"),
    ("no_process", "no_process.py defines no process(connection, config, metadata)")])
def test_a_broken_module_is_an_error_naming_the_file(places, phantom, tmp_path, name, why):
    port, work, log = places
    result = run_client(port, "-c", name, "-o", str(tmp_path / "o.h5"), str(phantom))
    assert result.returncode == 1
    assert f"ERROR    [module '{name}'] ModuleLoadError: module file {work / name}" in result.stdout
    assert why in result.stdout and why in log.read_text()
    assert not (work / "ran.txt").exists()  # a file without process() is never executed


@pytest.mark.parametrize("name", ["os", "main", "server", "json", "numpy", "mrd2gif", "no_such_module"])
def test_library_server_and_unknown_names_fall_back_with_a_warning(places, phantom, tmp_path, name):
    port, _, _ = places
    out = tmp_path / "o.h5"
    result = run_client(port, "-c", name, "-o", str(out), "-G", "g", str(phantom))
    assert result.returncode == 0, result.stdout
    assert f"Unknown config '{name}'; using the default module 'invertcontrast'" in result.stdout
    assert images_of(out, "g")[0].shape[0] == 1


WARM_MODULE = '''
import os
from pathlib import Path

import ismrmrd
import numpy as np

def warm_up():
    if os.environ.get("WARM_UP_FAILS"):
        raise RuntimeError("no device here")
    Path(os.environ["WARM_UP_MARKER"]).write_text(str(os.getpid()))

def process(connection, config, metadata):
    for item in connection:
        if item is None:
            break
    connection.send_image(ismrmrd.Image.from_array(np.zeros((4, 4), np.int16)))
    connection.send_close()
'''


@pytest.mark.parametrize("mode", ["threads", "processes", "failing"])
def test_a_preloaded_modules_warm_up_runs_at_start_up_in_threads_mode_only(tmp_path, phantom, mode):
    """``warm_up()`` of a preloaded module (the default one here) runs once before the server reports
    ready; not with -m (CUDA made before a fork is unusable in the forked sessions); a failing one is a
    warning, and the module still serves."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "warmmod.py").write_text(WARM_MODULE)
    marker = tmp_path / "warmed"
    env = {**os.environ, "WARM_UP_MARKER": str(marker), **({"WARM_UP_FAILS": "1"} if mode == "failing" else {})}
    srv = MainServer("-d", "warmmod", "--modules", str(tmp_path / "mods"), *(["-m"] if mode == "processes" else []),
                     log=tmp_path / "server.log", env=env)
    try:
        warmed = marker.is_file()
        result = run_client(srv.port, "-c", "warmmod", "-o", str(tmp_path / "o.h5"), str(phantom))
    finally:
        assert srv.stop() == 0
    log = (tmp_path / "server.log").read_text()
    assert result.returncode == 0, result.stdout + result.stderr
    assert warmed == (mode == "threads")
    if mode == "threads":
        assert marker.read_text() == str(srv.proc.pid)
    if mode == "failing":
        assert "Warm-up of module 'warmmod' failed (RuntimeError: no device here)" in log
