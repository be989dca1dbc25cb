"""FIRE chroot image: the root and image of tools/build_chroot.sh, and docker/docker_to_chroot.sh.

Run by ``make chroot-test`` (as root), which builds the image first with ``tools/build_chroot.sh
--keep-root --out $MRD_CHROOT_OUT``; ``make test`` does not collect this folder. The FIRE start
scripts run inside the root folder with ``chroot`` and nothing mounted in it (the server needs no
/proc, and the root has its own /dev nodes); client.py sends a phantom from outside; the image is
read with debugfs and dumpe2fs, never mounted.

The size checked is the one python-ismrmrd-server's docker_tar_to_chroot.sh gives the images that
FIRE scanners run: a whole number of 100 MB (MiB), at least 50 MB free; the file system is ext4
(upstream's scripts write ext3, which --fs-type ext3 still gives).
"""
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import REPO, free_port, generate_phantom, images_of, nrmse, rss, run_client, stop, wait_listening

CODE = "/opt/code/python-ismrmrd-server"
SCRIPTS = ("start-fire-python-server.sh", "start-fire-python-server-with-data-storage.sh",
           "sync-code-and-start-fire-python-server.sh")
MB = 1024 * 1024
STEP_MB, BUFFER_MB = 100, 50
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chroot and mknod need root (make chroot-test runs as root)")


# --- helpers -------------------------------------------------------------------------------------

def mounts_under(root: Path) -> list[str]:
    points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    return [p for p in points if p == str(root) or p.startswith(f"{root}/")]


def debugfs(img: Path, request: str) -> str:
    result = subprocess.run(["debugfs", "-R", request, str(img)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "not found" not in result.stderr, f"{request}: {result.stderr}"
    return result.stdout


def debugfs_ls(img: Path, folder: str) -> dict[str, int]:
    """``debugfs -R "ls -l FOLDER"``: {name: mode} (names without blanks, as in this tree)."""
    entries = {}
    for line in debugfs(img, f"ls -l {folder}").splitlines():
        fields = line.split()
        if len(fields) >= 8:
            entries[fields[-1]] = int(fields[1], 8)
    return entries


def debugfs_stat(img: Path, path: str) -> str:
    return debugfs(img, f"stat {path}")


def superblock(img: Path) -> dict[str, str]:
    result = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True, check=True)
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in result.stdout.splitlines()) if v}


def tree(folder: Path) -> dict[str, tuple]:
    """{relative path: (kind, mode, uid, gid, link target or content)} of a folder, links not followed."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(folder))
        if stat.S_ISLNK(st.st_mode):
            entries[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            entries[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        else:
            entries[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, path.read_bytes())
    return entries


# --- the image built by make chroot-test -----------------------------------------------------------

@pytest.fixture(scope="module")
def built():
    """(root folder, image) of tools/build_chroot.sh --keep-root --out $MRD_CHROOT_OUT."""
    if "MRD_CHROOT_OUT" not in os.environ:
        pytest.skip("MRD_CHROOT_OUT unset: run through make chroot-test, which builds the image first")
    out = Path(os.environ["MRD_CHROOT_OUT"]).resolve()
    root, img = out / "root", out / os.environ.get("MRD_CHROOT_IMAGE", "mrd-server-chroot.img")
    assert (root / CODE.lstrip("/") / "main.py").is_file(), f"no built root in {root} (tools/build_chroot.sh --keep-root)"
    assert img.is_file(), f"no image {img}"
    assert not mounts_under(root), f"the build left mounts under {root}"
    yield root, img
    assert not mounts_under(root), f"mounts left under {root}"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Noise-free 64x64 phantom, 4 coils, 2 slices, 2 repetitions (4 images)."""
    return generate_phantom(tmp_path_factory.mktemp("chroot") / "phantom.h5",
                            "-m", "64", "-c", "4", "-n", "0", "-r", "2", "--slices", "2")


@needs_root
@pytest.mark.parametrize("script", SCRIPTS)
def test_fire_start_script_serves_from_the_chroot(built, phantom, tmp_path, script):
    """chroot ROOT /opt/code/python-ismrmrd-server/<script> /tmp/share/log.txt, as fire.ini's
    chroot_command; a simplefft session from outside gives the RSS of the coil images."""
    root, _ = built
    share = root / "tmp" / "share"
    shutil.rmtree(share, ignore_errors=True)
    port = free_port()
    started = subprocess.run(["chroot", str(root), f"{CODE}/{script}", "/tmp/share/log.txt"],
                             env=dict(CHROOT_ENV, MRD_PORT=str(port)), capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int(started.stdout.strip().splitlines()[-1])
    try:
        wait_listening(port, pid, timeout=60.0)
        assert Path(f"/proc/{pid}/root").resolve() == root  # the server runs inside the chroot
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        assert Path(cmdline[0]).name.startswith("python3") and cmdline[1].endswith("/main.py") and "-l=/tmp/share/log.txt" in cmdline
        assert Path(f"/proc/{pid}/cwd").resolve() == root / CODE.lstrip("/")
        out = tmp_path / "out.h5"
        result = run_client(port, "-c", "simplefft", "-o", str(out), "-G", "recon", str(phantom))
        assert result.returncode == 0, result.stdout + result.stderr
        data, heads, _ = images_of(out, "recon")
        with h5py.File(phantom, "r") as f:
            coil_images = f["dataset/coil_images"][...]
        assert data.shape == (4, 1, 1, 64, 64) and data.dtype == np.int16
        for image, head in zip(data[:, 0, 0], heads):
            assert nrmse(image, rss(coil_images[head["slice"]])) <= 0.01
        if script == SCRIPTS[1]:
            deadline = time.monotonic() + 10  # the saved file is renamed once the session has ended
            while not list((share / "saved_data").glob("ShepLoganPhantom_*.h5")) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(list((share / "saved_data").glob("ShepLoganPhantom_*.h5"))) == 1
        if script == SCRIPTS[2]:
            assert "Nothing to copy" in started.stderr
    finally:
        stop(pid)
        assert not mounts_under(root)
    log = (share / "log.txt").read_bytes()
    assert b"simplefft" in log and b"Server stopped" in log
    assert (share / "mrd-server-console.log").read_text() == ""  # no start-up failure
    shutil.rmtree(share)


def test_image_holds_the_tree(built, tmp_path):
    """debugfs reads the code folder, the links, Python, BART and /dev out of the image: the same as the root."""
    root, img = built
    code = debugfs_ls(img, CODE)
    for name in ("main.py", "server.py", "client.py", "mrdhelper.py", "constants.py", "modules", "docker", "tools"):
        assert name in code, sorted(code)
    assert stat.S_ISDIR(code["modules"])
    for script in SCRIPTS:
        assert stat.S_ISLNK(code[script])
        assert f'Fast link dest: "docker/{script}"' in debugfs_stat(img, f"{CODE}/{script}")
        assert stat.S_ISREG(debugfs_ls(img, f"{CODE}/docker")[script])
    assert 'Fast link dest: "python-ismrmrd-server"' in debugfs_stat(img, "/opt/code/mrd-server")
    assert "simplefft.py" in debugfs_ls(img, f"{CODE}/modules")
    for binary in ("python3", "bart", "ismrmrd_generate_cartesian_shepp_logan", "bash", "nohup"):
        assert binary in debugfs_ls(img, "/usr/bin"), binary
    site = debugfs_ls(img, "/usr/local/lib/python3.11/dist-packages")
    for package in ("numpy", "scipy", "h5py", "ismrmrd", "matplotlib", "PIL", "pydicom", "tqdm"):
        assert package in site, package
    assert "Type: character special" in debugfs_stat(img, "/dev/null")
    # The whole code folder, read back out of the image, equals the root's (modes, owners, links, bytes).
    subprocess.run(["debugfs", "-R", f"rdump {CODE} {tmp_path}", str(img)], check=True, capture_output=True)
    assert tree(tmp_path / "python-ismrmrd-server") == tree(root / CODE.lstrip("/"))
    fsck = subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_image_size_and_type_as_upstream(built):
    root, img = built
    size = img.stat().st_size
    sb = superblock(img)
    block = int(sb["Block size"])
    assert int(sb["Block count"]) * block == size
    assert size % (STEP_MB * MB) == 0, f"{size / MB} MB is no whole number of {STEP_MB} MB"
    features = sb["Filesystem features"].split()
    assert "has_journal" in features and "extent" in features  # ext4
    free_mb = int(sb["Free blocks"]) * block / MB
    used_mb = size / MB - free_mb
    assert free_mb >= BUFFER_MB
    assert size / MB - STEP_MB < used_mb * 1.15 + BUFFER_MB, "the image is larger than the sizing rule gives"
    manifest = img.with_name(img.name + ".manifest").read_text()
    assert "source: " in manifest and "\nnumpy==" in manifest and "\npython3 " in manifest


def test_image_builder_refuses_bad_arguments(tmp_path):
    for args, message in ((["--size", "1G"], "whole MB"), (["--name", "a/b.img"], "file name"), (["--nope"], "unknown")):
        result = subprocess.run([str(REPO / "tools" / "build_chroot.sh"), "--out", str(tmp_path), *args],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode != 0 and message in result.stderr, result.stderr
    assert not list(tmp_path.iterdir())


# --- docker/docker_to_chroot.sh with a fake docker command -------------------------------------------

FAKE_DOCKER = r"""#!/usr/bin/env bash
# Fake docker: create/export/rm against $FAKE_DOCKER_TREE, every call logged to $FAKE_DOCKER_LOG.
set -euo pipefail
echo "$*" >>"$FAKE_DOCKER_LOG"
case $1 in
    create)
        [ "$4" = missing-image ] && { echo "Unable to find image '$4'" >&2; exit 1; }
        echo "$3" >"$FAKE_DOCKER_LOG.container"; echo 0123456789abcdef ;;
    export)
        [ "$2" = -o ] && [ "$4" = "$(cat "$FAKE_DOCKER_LOG.container")" ] || { echo "No such container: $4" >&2; exit 1; }
        [ -n "${FAKE_DOCKER_FAIL_EXPORT:-}" ] && { echo "export failed" >&2; exit 1; }
        tar -C "$FAKE_DOCKER_TREE" --numeric-owner -cf "$3" . ;;
    rm)
        [ "$2" = "$(cat "$FAKE_DOCKER_LOG.container")" ] && rm "$FAKE_DOCKER_LOG.container" ;;
    *) echo "fake docker: unexpected $*" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def fake_docker(tmp_path):
    """A docker command on PATH whose 'image' is a small root: the code, a start script link, a
    file of another owner, a hard link, /dev/null."""
    bin_dir, tree_dir = tmp_path / "bin", tmp_path / "image"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    code = tree_dir / CODE.lstrip("/")
    (code / "docker").mkdir(parents=True)
    (code / "main.py").write_text("print('main')\n")
    (code / "docker" / SCRIPTS[0]).write_text("#!/bin/sh\n")
    (code / "docker" / SCRIPTS[0]).chmod(0o755)
    (code / SCRIPTS[0]).symlink_to(f"docker/{SCRIPTS[0]}")
    (tree_dir / "etc").mkdir()
    (tree_dir / "etc" / "owned").write_text("x")
    os.chown(tree_dir / "etc" / "owned", 1234, 5678)
    os.link(code / "main.py", tree_dir / "etc" / "hardlink")
    (tree_dir / "dev").mkdir()
    os.mknod(tree_dir / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    log = tmp_path / "docker.log"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_DOCKER_LOG=str(log),
               FAKE_DOCKER_TREE=str(tree_dir))
    return env, log


def docker_to_chroot(env, *args):
    return subprocess.run([str(REPO / "docker" / "docker_to_chroot.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=120)


@needs_root
def test_docker_to_chroot_exports_the_image_into_an_ext4_file(fake_docker, tmp_path):
    env, log = fake_docker
    img = tmp_path / "out" / "fire-chroot.img"
    result = docker_to_chroot(env, "mrd-server", str(img))
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["create", "export", "rm"]
    name = calls[0].split()[2]
    assert calls[0] == f"create --name {name} mrd-server" and calls[1].endswith(f" {name}") and calls[2] == f"rm {name}"
    assert not Path(f"{log}.container").exists()  # the container was removed
    assert img.stat().st_size == STEP_MB * MB  # a few KB of content + 50 MB buffer: 100 MB
    assert sorted(p.name for p in img.parent.iterdir()) == ["fire-chroot.img"]  # no export or tree left
    assert f"FIRE start script in the image: {CODE}/{SCRIPTS[0]}" in result.stderr
    assert "has_journal" in superblock(img)["Filesystem features"]
    assert f'Fast link dest: "docker/{SCRIPTS[0]}"' in debugfs_stat(img, f"{CODE}/{SCRIPTS[0]}")
    assert re.search(r"User:\s+1234\s+Group:\s+5678\s", debugfs_stat(img, "/etc/owned"))  # owners kept
    assert "Links: 2" in debugfs_stat(img, "/etc/hardlink")
    assert "Type: character special" in debugfs_stat(img, "/dev/null")
    assert "main.py" in debugfs_ls(img, CODE)


@needs_root
def test_docker_to_chroot_buffer_and_size_arguments(fake_docker, tmp_path):
    env, _ = fake_docker
    img = tmp_path / "big.img"
    assert docker_to_chroot(env, "mrd-server", str(img), "150").returncode == 0  # buffer: 150 MB -> 200 MB
    assert img.stat().st_size == 200 * MB
    assert docker_to_chroot(env, "--size", "300", "--fs-type", "ext3", "mrd-server", str(img)).returncode == 0
    assert img.stat().st_size == 300 * MB and "extent" not in superblock(img)["Filesystem features"]


@needs_root
def test_docker_to_chroot_cleans_up_after_a_failure(fake_docker, tmp_path):
    env, log = fake_docker
    img = tmp_path / "out" / "x.img"
    result = docker_to_chroot(dict(env, FAKE_DOCKER_FAIL_EXPORT="1"), "mrd-server", str(img))
    assert result.returncode != 0 and "export failed" in result.stderr
    assert [c.split()[0] for c in log.read_text().splitlines()] == ["create", "export", "rm"]
    assert not Path(f"{log}.container").exists()
    assert not list(img.parent.iterdir())  # no image, no temporary folder
    result = docker_to_chroot(env, "missing-image", str(img))
    assert result.returncode != 0 and "Unable to find image" in result.stderr
    assert not list(img.parent.iterdir())
    for args in ([], ["only-one"], ["a", "b", "c", "d"], ["a", "b", "5x"]):
        result = docker_to_chroot(env, *args)
        assert result.returncode != 0, args
