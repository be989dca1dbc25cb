"""The files of modules/ form layers (docs/architecture.md §10), read from their syntax trees with ast:
no dispatchable module imports another, no helper imports a helper of its own or a higher layer
(or a dispatchable module), and only _errors names the wire layer (connection)."""
import ast
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))
from server import _defines_process  # noqa: E402  (the server's rule for a dispatchable module)

MODULES = REPO / "modules"
# docs/architecture.md §10; a helper may import helpers of lower layers only.
LAYERS = {
    "_errors": 1, "_backend": 1, "_spiral": 1, "_binning": 1, "_gpu_gridding": 1, "_noise": 1,
    "_coils": 2, "_bart": 2, "_toml": 2, "_gpu_frames": 2,
    "_recon": 3, "_gridding": 3, "bart": 3,
    "_images": 4, "_view_sharing": 4, "_spiral_io": 4, "_parallel": 4,
    "_spiral_bart": 5,
}
FILES = sorted(MODULES.glob("*.py"))
NAMES = {path.stem for path in FILES}


def tree_of(path):
    return ast.parse(path.read_bytes(), filename=str(path))


def imported(tree):
    """Top-level names of every module an ``import`` or ``from ... import`` anywhere in the file names."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


DISPATCHABLE = {path.stem for path in FILES if _defines_process(tree_of(path))}
HELPERS = NAMES - DISPATCHABLE


def test_every_helper_has_a_layer_and_every_layer_entry_is_a_helper():
    assert HELPERS == set(LAYERS), "give each helper of modules/ a layer here and in docs/architecture.md §10"
    assert {"simplefft", "simplenufft1arm", "rtspiral_bart_tvrecon", "spiral_xdgrasp_recon"} <= DISPATCHABLE


@pytest.mark.parametrize("path", [p for p in FILES if p.stem in DISPATCHABLE], ids=lambda p: p.name)
def test_no_dispatchable_module_imports_another(path):
    others = imported(tree_of(path)) & DISPATCHABLE - {path.stem}
    assert not others, f"{path.name} imports the dispatchable module(s) {sorted(others)}; move what they share to a helper"


@pytest.mark.parametrize("path", [p for p in FILES if p.stem in HELPERS], ids=lambda p: p.name)
def test_helpers_import_only_lower_layers(path):
    names = imported(tree_of(path)) & NAMES - {path.stem}
    assert not names & DISPATCHABLE, f"{path.name} imports dispatchable module(s) {sorted(names & DISPATCHABLE)}"
    upward = {name: LAYERS[name] for name in names if LAYERS[name] >= LAYERS[path.stem]}
    assert not upward, f"{path.name} (layer {LAYERS[path.stem]}) imports {upward}: an import that does not go down"


@pytest.mark.parametrize("path", [p for p in FILES if p.stem != "_errors"], ids=lambda p: p.name)
def test_only_errors_names_the_wire_layer(path):
    assert "connection" not in imported(tree_of(path)), f"{path.name}: take MrdError/ConfigError from _errors"


def test_the_check_sees_an_upward_import(tmp_path):
    """The parser finds imports inside functions and ``from`` imports too."""
    tree = ast.parse("def f():\n    import _images\nfrom _spiral_io import frame_image\nimport numpy.fft\n")
    assert imported(tree) == {"_images", "_spiral_io", "numpy"}
