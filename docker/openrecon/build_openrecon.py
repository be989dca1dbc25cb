#!/usr/bin/env python3
"""Build a Siemens OpenRecon package of this server: label, Dockerfile, PDF and, with Docker, the zip.

Each packaged module declares its user-interface parameters as a top-level literal list
``OPENRECON_UI`` (docs/modules.md §14). The list is read with ``ast`` and ``ast.literal_eval``, so
building a label never runs module code. From the declarations this script writes, in ``--out``:

* ``OpenReconLabel.json``: the sections general, reconstruction (ISMRMRD 1.4.1, port 9002, emitter,
  injector, resources) and parameters; the choice ``config`` that selects the module is generated
  from the ``--module`` names (default: the first) unless a module declares it. The label is checked
  here (ids, at most 14 parameters, defaults inside their range or among their values) and then
  validated with ``jsonschema`` against ``OpenReconSchema_1.1.0.json`` beside this file.
* ``Dockerfile``: FROM the server image (``--base``), the label base64-encoded in
  ``LABEL "com.siemens-healthineers.magneticresonance.openrecon.metadata:1.1.0"``, root user,
  ``CMD main.py -v -H=0.0.0.0 -p=9002 -d=<first module>``.
* ``OpenRecon_<vendor>_<name>_V<version>.pdf``: ``--pdf``, or a generated page describing the
  package and its parameters.

Where a Docker engine answers (and without ``--no-docker``) it then checks the engine (older than
25), builds the image, checks it (root user, CUDA at most 11.8), saves it as
``OpenRecon_<vendor>_<name>_V<version>.tar`` and zips that with the PDF into ``….zip`` (the tar is
removed). Without an engine it says so and stops after writing the files.

    python docker/openrecon/build_openrecon.py --module invertcontrast --vendor ACME --name Invert --version 1.0.0

Exit status: 0 when done (also when no engine was there to build with), 2 for an error (one line).
"""
from __future__ import annotations

import argparse
import ast
import base64
import dataclasses
import datetime
import json
import math
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCHEMA_FILE = HERE / "OpenReconSchema_1.1.0.json"
LABEL_KEY = "com.siemens-healthineers.magneticresonance.openrecon.metadata:1.1.0"
DECLARATION = "OPENRECON_UI"
PORT = 9002
MAX_PARAMETERS = 14
TYPES = ("int", "double", "string", "boolean", "choice")
PARAMETER_ID = re.compile(r"[A-Za-z0-9]+")
MODULE_NAME = re.compile(r"[A-Za-z0-9_]+")  # the server's rule (server.ModuleRegistry)
PACKAGE_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")  # vendor and name: parts of the file names
VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
INT32 = (-2 ** 31, 2 ** 31 - 1)
COMMON_KEYS = {"id", "label", "type", "default", "information"}
TYPE_KEYS = {"int": {"minimum", "maximum", "unit"}, "double": {"minimum", "maximum", "unit"},
             "string": set(), "boolean": set(), "choice": {"values"}}
MAX_DOCKER_MAJOR = 24
MAX_CUDA = (11, 8)
ROOT_USERS = ("", "root", "0", "root:root", "0:0")
REGULATORY_KEYS = ("device_trade_name", "production_identifier", "manufacturer_address", "made_in",
                   "manufacture_date", "material_number", "gtin", "udi", "safety_advices",
                   "special_operating_instructions", "additional_relevant_information")


class BuildError(Exception):
    """A problem with the declarations, the label, the options or the Docker steps (one line)."""


@dataclasses.dataclass
class ModuleUI:
    """A packaged module: its name and its declared parameters in label form."""

    name: str
    parameters: list[dict]


# --- declarations ----------------------------------------------------------------------------------

def read_declaration(path: Path, where: str) -> tuple[list | None, bool]:
    """(the ``OPENRECON_UI`` literal or None, whether the file defines ``process``), without importing it."""
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
    except (OSError, SyntaxError, ValueError) as exc:
        raise BuildError(f"{where}: cannot read it: {exc}") from exc
    declaration, has_process = None, False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "process":
            has_process = True
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            has_process |= any((alias.asname or alias.name) == "process" for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {t.id for t in targets if isinstance(t, ast.Name)}
            has_process |= "process" in names
            if DECLARATION in names:
                try:
                    declaration = ast.literal_eval(node.value)
                except (ValueError, TypeError, SyntaxError, RecursionError) as exc:
                    shown = " ".join((ast.get_source_segment(source, node.value) or "").split())[:80]
                    raise BuildError(f"{where}: {DECLARATION} must be a literal (lists, dicts, strings, numbers, "
                                     f"True/False), line {node.lineno} is not: {shown}") from exc
    return declaration, has_process


def load_module(name: str, modules_dir: Path) -> ModuleUI:
    """The module ``name`` of ``modules_dir`` with its declared parameters, checked."""
    if not MODULE_NAME.fullmatch(name) or name.startswith("_"):
        raise BuildError(f"module name '{name}': the server runs only names of letters, digits and _ "
                         "that do not start with _")
    path = modules_dir / f"{name}.py"
    if not path.is_file():
        raise BuildError(f"module '{name}': no file {path}")
    declaration, has_process = read_declaration(path, f"module '{name}' ({path})")
    if not has_process:
        raise BuildError(f"module '{name}' ({path}) has no process(connection, config, metadata)")
    if declaration is None:
        raise BuildError(f"module '{name}' ({path}) declares no {DECLARATION} list "
                         f"(write {DECLARATION} = [] for a module without parameters)")
    if not isinstance(declaration, list):
        raise BuildError(f"module '{name}': {DECLARATION} must be a list of dicts, "
                         f"got {type(declaration).__name__}")
    parameters = [ui_entry(item, f"module '{name}'", i) for i, item in enumerate(declaration)]
    for entry in parameters:
        check_parameter(entry, f"module '{name}'")
    return ModuleUI(name, parameters)


def text_of(value: Any, what: str) -> dict:
    """A label text: a string (English) or a dict of languages that has ``en``."""
    if isinstance(value, str):
        return {"en": value}
    if isinstance(value, dict) and isinstance(value.get("en"), str) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return dict(value)
    raise BuildError(f"{what} must be a string or a dict of languages with 'en', got {value!r}")


def ui_entry(item: Any, where: str, index: int) -> dict:
    """One declared parameter in label form (``label``/``information`` as texts, choice ``values`` as a list)."""
    if not isinstance(item, dict):
        raise BuildError(f"{where}: {DECLARATION}[{index}] must be a dict, got {type(item).__name__}")
    pid = item.get("id")
    if not isinstance(pid, str) or not PARAMETER_ID.fullmatch(pid):
        raise BuildError(f"{where}: parameter id {pid!r} must be letters and digits only ([A-Za-z0-9]+)")
    what = f"{where}: parameter '{pid}'"
    kind = item.get("type")
    if kind not in TYPES:
        raise BuildError(f"{what}: type {kind!r} is not one of {', '.join(TYPES)}")
    unknown = set(item) - COMMON_KEYS - TYPE_KEYS[kind]
    if unknown:
        raise BuildError(f"{what}: key(s) {', '.join(sorted(unknown))} do not apply to a {kind} "
                         f"(allowed: {', '.join(sorted(COMMON_KEYS | TYPE_KEYS[kind]))})")
    required = {"label", "default"} | (TYPE_KEYS[kind] - {"unit"})
    missing = required - set(item)
    if missing:
        raise BuildError(f"{what}: missing {', '.join(sorted(missing))}")
    entry = {"id": pid, "label": text_of(item["label"], f"{what}: label"), "type": kind}
    if "information" in item:
        entry["information"] = text_of(item["information"], f"{what}: information")
    entry["default"] = item["default"]
    if kind in ("int", "double"):
        entry["minimum"], entry["maximum"] = item["minimum"], item["maximum"]
        if "unit" in item:
            unit = text_of(item["unit"], f"{what}: unit")
            if not all(1 <= len(v) <= 3 for v in unit.values()):
                raise BuildError(f"{what}: unit {item['unit']!r} must be 1 to 3 characters")
            entry["unit"] = unit
    if kind == "choice":
        entry["values"] = choice_values(item["values"], what)
    return entry


def choice_values(values: Any, what: str) -> list[dict]:
    """Choice values from a list of ids or a dict id -> shown name."""
    if isinstance(values, dict):
        pairs = list(values.items())
    elif isinstance(values, list):
        pairs = [(v, v) for v in values]
    else:
        raise BuildError(f"{what}: values must be a list of ids or a dict id -> name, got {type(values).__name__}")
    if not pairs:
        raise BuildError(f"{what}: values must not be empty")
    if not all(isinstance(vid, str) for vid, _ in pairs):
        raise BuildError(f"{what}: every value id must be a string, got {[vid for vid, _ in pairs]!r}")
    return [{"id": vid, "name": text_of(name, f"{what}: name of value '{vid}'")} for vid, name in pairs]


def _number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    if integer:
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


def check_parameter(entry: dict, where: str) -> None:
    """Value checks a schema cannot make: types of default and range, default inside range or values."""
    what = f"{where}: parameter '{entry.get('id')}'"
    kind, default = entry.get("type"), entry.get("default")
    if kind in ("int", "double"):
        integer = kind == "int"
        for key in ("minimum", "maximum", "default"):
            value = entry.get(key)
            if not _number(value, integer):
                raise BuildError(f"{what}: {key} {value!r} must be {'an integer' if integer else 'a number'}")
            if integer and not INT32[0] <= value <= INT32[1]:
                raise BuildError(f"{what}: {key} {value} does not fit a 32-bit int")
        low, high = entry["minimum"], entry["maximum"]
        if low > high:
            raise BuildError(f"{what}: minimum {low} is above maximum {high}")
        if not low <= default <= high:
            raise BuildError(f"{what}: default {default} is outside [{low}, {high}]")
    elif kind == "boolean" and not isinstance(default, bool):
        raise BuildError(f"{what}: default {default!r} must be True or False")
    elif kind == "string" and not isinstance(default, str):
        raise BuildError(f"{what}: default {default!r} must be a string")
    elif kind == "choice":
        ids = [value.get("id") for value in entry.get("values", [])]
        if len(set(ids)) != len(ids):
            raise BuildError(f"{what}: value ids repeat: {ids!r}")
        if default not in ids:
            raise BuildError(f"{what}: default {default!r} is not one of its values "
                             f"{', '.join(map(repr, ids))}")


# --- the label -------------------------------------------------------------------------------------

def config_choice(modules: list[ModuleUI]) -> dict:
    """The choice ``config``: declared by a module, or generated from the module names (default the first)."""
    names = [m.name for m in modules]
    declared = [(m.name, p) for m in modules for p in m.parameters if p["id"] == "config"]
    if not declared:
        return {"id": "config", "label": {"en": "Reconstruction"}, "type": "choice",
                "information": {"en": "The server module that processes the data"},
                "default": names[0], "values": [{"id": n, "name": {"en": n}} for n in names]}
    module, entry = declared[0]
    if entry["type"] != "choice":
        raise BuildError(f"module '{module}': parameter 'config' is a {entry['type']}, but it must be a choice: "
                         "the config choice names the module the server runs")
    strangers = [v["id"] for v in entry["values"] if v["id"] not in names]
    if strangers:
        raise BuildError(f"module '{module}': config value(s) {', '.join(map(repr, strangers))} are not packaged "
                         f"modules ({', '.join(names)})")
    return entry


def merge_parameters(modules: list[ModuleUI]) -> list[dict]:
    """The config choice first, then every module's parameters once (same id: same declaration)."""
    merged: dict[str, tuple[str, dict]] = {"config": ("", config_choice(modules))}
    for module in modules:
        for entry in module.parameters:
            if entry["id"] == "config":
                continue
            if entry["id"] in merged and merged[entry["id"]][1] != entry:
                raise BuildError(f"parameter '{entry['id']}' is declared differently by modules "
                                 f"'{merged[entry['id']][0]}' and '{module.name}'")
            merged.setdefault(entry["id"], (module.name, entry))
    return [entry for _, entry in merged.values()]


def check_label(label: dict) -> None:
    """The rules of the parameters section: count, id pattern and uniqueness, the config choice, values."""
    parameters = label.get("parameters")
    if not isinstance(parameters, list) or not all(isinstance(p, dict) for p in parameters):
        raise BuildError("the label's parameters must be a list of objects")
    ids = [p.get("id") for p in parameters]
    if len(parameters) > MAX_PARAMETERS:
        raise BuildError(f"{len(parameters)} parameters ({', '.join(map(str, ids))}): "
                         f"OpenRecon allows at most {MAX_PARAMETERS}, the config choice included")
    for pid in ids:
        if not isinstance(pid, str) or not PARAMETER_ID.fullmatch(pid):
            raise BuildError(f"parameter id {pid!r} must be letters and digits only ([A-Za-z0-9]+)")
    repeated = sorted({pid for pid in ids if ids.count(pid) > 1})
    if repeated:
        raise BuildError(f"parameter id(s) {', '.join(repeated)} appear more than once")
    if not any(p.get("id") == "config" and p.get("type") == "choice" for p in parameters):
        raise BuildError("no choice parameter with id 'config': OpenRecon sends the config name 'openrecon', "
                         "and only parameters.config tells the server which module to run")
    for entry in parameters:
        if entry.get("type") not in TYPES:
            raise BuildError(f"parameter '{entry.get('id')}': type {entry.get('type')!r} is not one of "
                             f"{', '.join(TYPES)}")
        check_parameter(entry, "label")


def build_label(args: argparse.Namespace, parameters: list[dict]) -> dict:
    """The whole label from the command line and the merged parameters."""
    names = ", ".join(args.module)
    information = args.information or f"MRD reconstruction server (ISMRMRD streaming), modules: {names}"
    return {
        "general": {
            "name": {"en": args.name},
            "version": args.version,
            "vendor": args.vendor,
            "information": {"en": information},
            "id": args.name,
            "regulatory_information": {
                **{key: "" for key in REGULATORY_KEYS},
                "device_trade_name": args.name,
                "production_identifier": args.version,
                "manufacture_date": datetime.date.today().isoformat(),
                "material_number": f"{args.name}_{args.version}",
            },
        },
        "reconstruction": {
            "transfer_protocol": {"protocol": "ISMRMRD", "version": "1.4.1"},
            "port": PORT,
            "emitter": args.emitter,
            "injector": args.injector,
            "can_process_adjustment_data": False,
            "can_use_gpu": args.gpu > 0,
            "min_count_required_gpus": args.gpu,
            "min_required_gpu_memory": args.gpu_memory,
            "min_required_memory": args.memory,
            "min_count_required_cpu_cores": args.cpus,
            "content_qualification_type": args.qualification,
        },
        "parameters": parameters,
    }


def validate_schema(label: dict, schema_file: Path = SCHEMA_FILE) -> None:
    """Validate with ``jsonschema``; the most relevant error as one line."""
    try:
        import jsonschema
    except ImportError as exc:
        raise BuildError("jsonschema is not installed (pip install jsonschema, or pip install -e '.[test]')") from exc
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    error = jsonschema.exceptions.best_match(validator_class(schema).iter_errors(label))
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "(top level)"
        message = " ".join(error.message.split())
        raise BuildError(f"the label does not match {schema_file.name} at {where}: "
                         f"{message[:300] + ' ...' if len(message) > 300 else message}")


# --- files -----------------------------------------------------------------------------------------

def base_name(label: dict) -> str:
    """``OpenRecon_<vendor>_<name>_V<version>``: the name of the tar, the PDF and the zip."""
    general = label["general"]
    return f"OpenRecon_{general['vendor']}_{general['name']['en']}_V{general['version']}"


def image_tag(label: dict) -> str:
    """The Docker tag: ``openrecon_<vendor>_<name>:v<version>`` (Docker wants lower case)."""
    general = label["general"]
    return f"openrecon_{general['vendor']}_{general['name']['en']}:v{general['version']}".lower()


def dockerfile_text(label_text: str, label: dict, base: str, main_module: str) -> str:
    """The OpenRecon image: the server image with the label, root user and the main module as default."""
    encoded = base64.b64encode(label_text.encode("utf-8")).decode("ascii")
    cmd = ["python3", "/opt/code/mrd-server/main.py", "-v", "-H=0.0.0.0", f"-p={PORT}", f"-d={main_module}"]
    modules = ", ".join(v["id"] for v in next(p for p in label["parameters"] if p["id"] == "config")["values"])
    return (f"# OpenRecon image {base_name(label)}: written by docker/openrecon/build_openrecon.py (run it again "
            f"instead of editing).\n# Modules: {modules}; default {main_module}. Needs no build context:\n"
            f"#   docker build -t {image_tag(label)} - < Dockerfile\n"
            f"# hadolint ignore=DL3006,DL3007\nFROM {base}\n"
            "# The key is Siemens' (a colon in it).\n# hadolint ignore=DL3048\n"
            f'LABEL "{LABEL_KEY}"="{encoded}"\n'
            "# OpenRecon runs the container as root (user 0; checked after the build), whatever the base image set.\n"
            f"# hadolint ignore=DL3002\nUSER 0\nEXPOSE {PORT}\nCMD {json.dumps(cmd)}\n")


def describe_parameter(entry: dict) -> str:
    """One line about a parameter for the PDF."""
    text = f"{entry['id']} ({entry['type']}) \"{entry['label']['en']}\": default {json.dumps(entry['default'])}"
    if entry["type"] in ("int", "double"):
        unit = f" {entry['unit']['en']}" if "unit" in entry else ""
        text += f", {entry['minimum']} to {entry['maximum']}{unit}"
    if entry["type"] == "choice":
        shown = [json.dumps(v["id"]) + ("" if v["name"]["en"] == v["id"] else f" ({v['name']['en']})")
                 for v in entry["values"]]
        text += "; values " + ", ".join(shown)
    if "information" in entry:
        text += f". {entry['information']['en']}"
    return text


def write_pdf(path: Path, label: dict) -> None:
    """A plain A4 PDF (Pillow's PDF writer) describing the package, its resources and its parameters."""
    from PIL import Image, ImageDraw, ImageFont

    general, recon = label["general"], label["reconstruction"]
    paragraphs = [
        f"{general['name']['en']} {general['version']} by {general['vendor']}: OpenRecon package",
        general["information"]["en"],
        f"Protocol {recon['transfer_protocol']['protocol']} {recon['transfer_protocol']['version']} on port "
        f"{recon['port']}; the scanner sends {recon['emitter']} data and takes back {recon['injector']} data.",
        f"Resources: {recon['min_count_required_cpu_cores']} CPU core(s), {recon['min_required_memory']} MB memory, "
        f"{recon['min_count_required_gpus']} GPU(s) ({recon['min_required_gpu_memory']} MB GPU memory); "
        f"qualification {recon['content_qualification_type']}.",
        "The scanner connects with the config name 'openrecon' and sends the parameters below in a JSON text "
        "after the header; parameters.config names the server module that runs.",
        "Parameters:",
        *[f"- {describe_parameter(p)}" for p in label["parameters"]],
    ]
    dpi, width, height, margin, size = 150, 1240, 1754, 120, 22
    font = ImageFont.load_default(size=size)
    lines = []
    for paragraph in paragraphs:
        lines += textwrap.wrap(paragraph, 88, subsequent_indent="  " if paragraph.startswith("- ") else "") + [""]
    per_page = (height - 2 * margin) // (size + 8)
    pages = []
    for start in range(0, len(lines), per_page):
        page = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(page)
        for row, line in enumerate(lines[start:start + per_page]):
            draw.text((margin, margin + row * (size + 8)), line, font=font, fill=0)
        pages.append(page)
    pages[0].save(path, "PDF", resolution=dpi, save_all=True, append_images=pages[1:],
                  title=base_name(label), author=general["vendor"])


# --- Docker ----------------------------------------------------------------------------------------

def docker_engine() -> tuple[str | None, str]:
    """(the docker command, the engine's version) or (None, why there is none)."""
    exe = shutil.which("docker")
    if exe is None:
        return None, "no docker command on PATH"
    try:
        result = subprocess.run([exe, "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"docker version failed: {exc}"
    if result.returncode != 0 or not result.stdout.strip():
        reason = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        return None, f"the Docker engine does not answer: {reason}"
    return exe, result.stdout.strip()


def run_docker(exe: str, *args: str, stdin: str | None = None, capture: bool = False) -> str:
    """Run one docker command (its output shown, or captured); BuildError when it fails."""
    result = subprocess.run([exe, *args], input=stdin, text=True, capture_output=capture)
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] if capture else []
        raise BuildError(f"docker {args[0]} failed with status {result.returncode}"
                         + (f": {detail[0]}" if detail else ""))
    return result.stdout if capture else ""


def check_engine_version(version: str) -> None:
    """OpenRecon takes images saved by Docker older than 25."""
    major = re.match(r"(\d+)", version)
    if major is None or int(major.group(1)) > MAX_DOCKER_MAJOR:
        raise BuildError(f"Docker engine {version}: OpenRecon packages must be saved with Docker "
                         f"{MAX_DOCKER_MAJOR} or older (Docker 25 and later write another archive layout)")


def check_image(config: dict, tag: str) -> None:
    """The built image runs as root and carries CUDA 11.8 at most."""
    user = config.get("User") or ""
    if user not in ROOT_USERS:
        raise BuildError(f"image {tag} runs as user '{user}': OpenRecon needs root")
    for variable in config.get("Env") or []:
        name, _, value = variable.partition("=")
        found = re.match(r"(\d+)\.(\d+)", value)
        if name == "CUDA_VERSION" and found and (int(found.group(1)), int(found.group(2))) > MAX_CUDA:
            raise BuildError(f"image {tag} has CUDA {value}: OpenRecon supports CUDA "
                             f"{MAX_CUDA[0]}.{MAX_CUDA[1]} at most")


def package(exe: str, version: str, out: Path, dockerfile: str, label: dict, pdf: Path) -> Path:
    """Build, check and save the image, and zip the tar with the PDF; the zip's path."""
    check_engine_version(version)
    tag, name = image_tag(label), base_name(label)
    print(f"Building {tag} with Docker {version} ...", flush=True)
    run_docker(exe, "build", "-t", tag, "-", stdin=dockerfile)
    config = json.loads(run_docker(exe, "image", "inspect", "--format", "{{json .Config}}", tag, capture=True))
    check_image(config or {}, tag)
    tar = out / f"{name}.tar"
    print(f"Saving {tar} ...", flush=True)
    run_docker(exe, "save", "-o", str(tar), tag)
    archive = out / f"{name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        zf.write(tar, tar.name)
        zf.write(pdf, pdf.name)
    tar.unlink()
    return archive


# --- command line ----------------------------------------------------------------------------------

def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not at least 1")
    return value


def matching(pattern: re.Pattern, what: str) -> Any:
    def check(text: str) -> str:
        if not pattern.fullmatch(text):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return text
    return check


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="build_openrecon.py", description=__doc__.split("\n")[0])
    parser.add_argument("--module", action="append", required=True, metavar="NAME",
                        help="a module to package (repeatable); the first is the default")
    parser.add_argument("--vendor", required=True, type=matching(PACKAGE_WORD, "letters, digits and -"))
    parser.add_argument("--name", required=True, type=matching(PACKAGE_WORD, "letters, digits and -"))
    parser.add_argument("--version", required=True, type=matching(VERSION, "a version X.Y.Z"))
    parser.add_argument("--information", help="the package's description shown on the scanner")
    parser.add_argument("--emitter", choices=("image", "raw"), default="image",
                        help="what the scanner sends (default image)")
    parser.add_argument("--injector", choices=("image", "compleximage"), default="image",
                        help="what the scanner takes back (default image)")
    parser.add_argument("--gpu", type=non_negative, default=0, metavar="N", help="GPUs required (default 0)")
    parser.add_argument("--gpu-memory", type=non_negative, default=0, metavar="MB", help="GPU memory required")
    parser.add_argument("--memory", type=non_negative, default=4096, metavar="MB", help="memory required")
    parser.add_argument("--cpus", type=positive, default=1, metavar="N", help="CPU cores required")
    parser.add_argument("--qualification", choices=("RESEARCH", "SERVICE", "PRODUCT"), default="RESEARCH")
    parser.add_argument("--base", default="mrd-server:latest", metavar="IMAGE",
                        help="the server image to build on (docker build -f docker/Dockerfile -t mrd-server .)")
    parser.add_argument("--modules-dir", type=Path, default=REPO / "modules", metavar="DIR",
                        help="where the modules' files are read (default: modules/; the base image must hold them)")
    parser.add_argument("--out", type=Path, default=HERE / "build", metavar="DIR",
                        help="output folder (default docker/openrecon/build)")
    parser.add_argument("--pdf", type=Path, metavar="FILE", help="the package's PDF (default: one is generated)")
    parser.add_argument("--no-docker", action="store_true", help="write the files only, even where Docker runs")
    return parser


def run(args: argparse.Namespace) -> int:
    if len(set(args.module)) != len(args.module):
        raise BuildError(f"a module is named twice: {', '.join(args.module)}")
    modules = [load_module(name, args.modules_dir) for name in args.module]
    label = build_label(args, merge_parameters(modules))
    check_label(label)
    validate_schema(label)
    if args.pdf is not None and not (args.pdf.is_file() and args.pdf.read_bytes()[:5] == b"%PDF-"):
        raise BuildError(f"--pdf {args.pdf} is not a PDF file")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    label_text = json.dumps(label, indent=2, ensure_ascii=False) + "\n"
    (out / "OpenReconLabel.json").write_text(label_text, encoding="utf-8")
    dockerfile = dockerfile_text(label_text, label, args.base, args.module[0])
    (out / "Dockerfile").write_text(dockerfile, encoding="utf-8")
    pdf = out / f"{base_name(label)}.pdf"
    if args.pdf is not None:
        shutil.copyfile(args.pdf, pdf)
    else:
        write_pdf(pdf, label)
    print(f"Wrote {out / 'OpenReconLabel.json'} ({len(label['parameters'])} parameters, valid against "
          f"{SCHEMA_FILE.name}), {out / 'Dockerfile'} and {pdf}")

    if args.no_docker:
        print("--no-docker: no image built")
        return 0
    exe, version = docker_engine()
    if exe is None:
        print(f"No Docker engine, so no image built ({version}). Where Docker (older than 25) runs, run this again, "
              f"or in {out}: docker build -t {image_tag(label)} - < Dockerfile && docker save -o "
              f"{base_name(label)}.tar {image_tag(label)}, then zip that tar with {pdf.name}")
        return 0
    print(f"Wrote {package(exe, version, out, dockerfile, label, pdf)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except BuildError as exc:
        print(f"build_openrecon.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
