"""The repository stands alone: a clone with nothing beside it has what the code, configs and tests need."""
import subprocess
import sys

from conftest import GIRF_FILE, REPO

CLONE_TESTS = ["tests/test_spiral_math.py"]  # the GIRF tests: they read GIRF/ of the checkout they run in


def git(*args: str, cwd=REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_girf_files_are_committed_with_their_checksums():
    readme = (REPO / "GIRF" / "README.md").read_text()
    assert "MIT License" in readme and "Kelvin Chow" in readme
    for path in (REPO / "GIRF").glob("*.mat"):
        digest = subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True).stdout.split()[0]
        assert digest in readme, f"{path.name}: checksum {digest} not in GIRF/README.md"
    tracked = git("ls-files", "GIRF").split()
    assert {"GIRF/README.md", "GIRF/GIRF_20200221_Duyn_method_coil2.mat", "GIRF/girf_matlab.mat"} <= set(tracked)
    assert GIRF_FILE.is_file()


def test_no_tracked_file_points_outside_the_repository():
    hits = subprocess.run(["git", "grep", "-nE", r"\.\./shared|/work/shared", "--", ".", ":!tests/test_standalone.py"],
                          cwd=REPO, capture_output=True, text=True).stdout
    assert hits == ""


def test_a_clone_with_nothing_beside_it_runs_the_girf_tests(tmp_path):
    clone = tmp_path / "mrd-server"
    git("clone", "--quiet", "--no-hardlinks", str(REPO), str(clone), cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mrd-server"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *CLONE_TESTS],
                            cwd=clone, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" not in result.stdout and " passed" in result.stdout, result.stdout
    # The configs' default girf_file (a relative path) resolves to the clone's own GIRF/ from any folder.
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import _toml; "
             "print(_toml.resolve('GIRF/GIRF_20200221_Duyn_method_coil2.mat'))")
    resolved = subprocess.run([sys.executable, "-c", probe, str(clone / "modules")], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout.strip()
    assert resolved == str(clone / "GIRF" / "GIRF_20200221_Duyn_method_coil2.mat")


def test_environment_yml_lists_every_package_of_pyproject():
    import re
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    names = {re.match(r"[A-Za-z0-9_.-]+", spec).group(0).lower() for spec in wanted}
    listed = {re.match(r"\s*-\s*([A-Za-z0-9_.-]+)", line).group(1).lower()
              for line in (REPO / "environment.yml").read_text().splitlines() if re.match(r"\s*-\s*[A-Za-z]", line)}
    assert names <= listed, f"missing from environment.yml: {sorted(names - listed)}"
