"""Configuration errors name the file and the key: TOML settings of the spiral modules
(modules/_toml.py) and JSON parameters (mrdhelper.get_json_config_param), over real sockets with
main.py and client.py (a tiny tools/generate_spiral_dataset.py data set), and directly."""
import importlib.util
import json
import logging
import sys

import pytest

from conftest import REPO, images_of, run_client

sys.path.insert(0, str(REPO / "modules"))
import _toml  # noqa: E402
import mrdhelper  # noqa: E402
import rtspiral_bart_tvrecon  # noqa: E402
import simplenufft1arm  # noqa: E402

_spec = importlib.util.spec_from_file_location("generate_spiral_dataset", REPO / "tools" / "generate_spiral_dataset.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)
GOOD = {"gpu_device": -1, "arms_per_frame": 16, "window_shift": 8}


class Texts:
    """Stand-in connection that keeps what the module sends with send_logging."""

    def __init__(self):
        self.texts = []

    def send_logging(self, level, contents):
        self.texts.append(f"{level} {contents}")


def write_session(folder, body, module="simplenufft1arm"):
    """``folder/spiral.toml`` = body and ``<module>.json`` pointing at it; returns the TOML path."""
    folder.mkdir(exist_ok=True)
    toml = folder / "spiral.toml"
    toml.write_text(body)
    (folder / f"{module}.json").write_text(json.dumps({"parameters": {"spiral_config": str(toml)}}))
    return toml


def good_body(meta, **extra):
    lines = [f'metafile_paths = ["{meta}"]', "[reconstruction]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in {**GOOD, **extra}.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def spiral(tmp_path_factory):
    """A 16-arm, 2-coil spiral data set (one 64x64 frame with GOOD) and its metafile folder."""
    folder = tmp_path_factory.mktemp("spiral")
    data = folder / "spiral.h5"
    assert gen.main(["-o", str(data), "--metafile-dir", str(folder / "meta"), "--fov-cm", "19.2", "--res-mm", "3",
                     "--interleaves", "16", "--coils", "2", "--arms", "16"]) == 0
    return data, folder / "meta"


def client(server, cwd, module, data, name="out"):
    out = cwd / f"{name}.h5"
    result = run_client(server.port, "-c", module, "-o", str(out), "-G", "g", str(data), cwd=cwd)
    return result, out


def assert_good_session(server, tmp_path, spiral):
    """The server still serves: a valid session afterwards returns its frame."""
    data, meta = spiral
    write_session(tmp_path / "good", good_body(meta))
    result, out = client(server, tmp_path / "good", "simplenufft1arm", data, "good")
    assert result.returncode == 0, result.stdout + result.stderr
    assert images_of(out, "g")[0].shape == (1, 1, 1, 64, 64)


# --- over sockets -----------------------------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ("arms_per_frame = [1, 2]", "[reconstruction] arms_per_frame must be an int, got list [1, 2]"),
    ("coil_combine = 5", "[reconstruction] coil_combine must be a str, got int 5"),
    ("window_shift = true", "[reconstruction] window_shift must be an int, got bool True"),
])
def test_toml_value_of_the_wrong_type_names_file_key_and_types(server, tmp_path, spiral, line, expected):
    data, meta = spiral
    toml = write_session(tmp_path / "bad", f'metafile_paths = ["{meta}"]\n[reconstruction]\n{line}\n')
    result, _ = client(server, tmp_path / "bad", "simplenufft1arm", data)
    text = f"{toml}: {expected}"
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"[module 'simplenufft1arm'] ConfigError: {text}" in result.stdout
    assert text in server.log_text()
    assert_good_session(server, tmp_path, spiral)


def test_unknown_toml_key_warns_with_a_suggestion_and_the_session_succeeds(server, tmp_path, spiral):
    data, meta = spiral
    toml = write_session(tmp_path / "typo", good_body(meta, arms_per_fram=3))
    result, out = client(server, tmp_path / "typo", "simplenufft1arm", data)
    text = f"{toml}: [reconstruction] unknown key 'arms_per_fram' ignored (did you mean 'arms_per_frame'?)"
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Server: WARNING  {text}" in result.stdout
    assert text in server.log_text()
    assert images_of(out, "g")[0].shape == (1, 1, 1, 64, 64)


def test_missing_spiral_config_is_an_error_naming_the_path(server, tmp_path, spiral):
    data, _ = spiral
    missing = tmp_path / "no" / "such.toml"
    (tmp_path / "simplenufft1arm.json").write_text(json.dumps({"parameters": {"spiral_config": str(missing)}}))
    result, _ = client(server, tmp_path, "simplenufft1arm", data)
    text = f"JSON configuration: parameters.spiral_config: no such file {missing}"
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"ConfigError: {text}" in result.stdout
    assert text in server.log_text()
    assert_good_session(server, tmp_path, spiral)


@pytest.mark.parametrize("value, given", [([3], "list [3]"), ("abc", "str 'abc'")])
def test_json_value_that_is_no_int_names_the_key_and_types(server, tmp_path, spiral, value, given):
    data, _ = spiral  # the error comes before any data is looked at
    (tmp_path / "filter.json").write_text(json.dumps({"version": "1.1.0", "parameters": {"filterSize": value}}))
    result, _ = client(server, tmp_path, "filter", data)
    text = f"JSON configuration: parameters.filterSize must be an int, got {given}"
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"[module 'filter'] ConfigError: {text} (the JSON configuration was {tmp_path / 'filter.json'})" \
        in result.stdout  # the client names the file it sent
    assert text in server.log_text()
    assert_good_session(server, tmp_path, spiral)


# --- _toml directly ---------------------------------------------------------------------------

def load(tmp_path, body, cls=simplenufft1arm.SpiralConfig):
    """``_toml.load`` of ``body`` given as spiral_config; (settings, the texts sent, the file)."""
    path = tmp_path / "c.toml"
    path.write_text(body)
    conn = Texts()
    return _toml.load(cls, {"parameters": {"spiral_config": str(path)}}, "unused.toml", conn), conn, path


@pytest.mark.parametrize("body, expected", [
    ("[reconstruction]\narms_per_frame = [1, 2]", "[reconstruction] arms_per_frame must be an int, got list [1, 2]"),
    ("[reconstruction]\nkspace_filter = 1", "[reconstruction] kspace_filter must be a str, got int 1"),
    ("[reconstruction]\ngpu_device = false", "[reconstruction] gpu_device must be an int, got bool False"),
    ("[reconstruction]\nfov_oversampling = \"2\"", "[reconstruction] fov_oversampling must be a float, got str '2'"),
    ("save_raw = 0", "save_raw must be a bool, got int 0"),
    ("metafile_paths = \"seq_meta\"", "metafile_paths must be a list, got str 'seq_meta'"),
    ("reconstruction = 3", "reconstruction must be a table [reconstruction], got int 3"),
])
def test_load_type_errors_name_the_file_used_and_the_key(tmp_path, body, expected):
    with pytest.raises(mrdhelper.ConfigError) as info:
        load(tmp_path, body)
    assert str(info.value) == f"{tmp_path / 'c.toml'}: {expected}"


@pytest.mark.parametrize("body, cls, expected", [
    ('[reconstruction]\ncoil_combine = "best"', simplenufft1arm.SpiralConfig, "coil_combine = 'best' is not rssq"),
    ("[reconstruction]\narms_per_frame = 0", rtspiral_bart_tvrecon.TvConfig, "arms_per_frame, num_chunks"),
    ("arms_per_frame = = 3", simplenufft1arm.SpiralConfig, "Invalid value (at line 1"),
])
def test_load_value_and_syntax_errors_name_the_file_used(tmp_path, body, cls, expected):
    with pytest.raises(mrdhelper.ConfigError) as info:
        load(tmp_path, body, cls)
    assert str(info.value).startswith(f"{tmp_path / 'c.toml'}: {expected}")


def test_load_ignores_unknown_keys_with_a_warning_to_log_and_client(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        cfg, conn, path = load(tmp_path, "window_shif = 4\nzzz = 1\n[reconstruction]\narms_per_frame = 8\n"
                                         "[binnig]\nn = 1\n")
    assert cfg.arms_per_frame == 8 and cfg.window_shift == 17
    expected = [f"{path}: unknown key 'window_shif' ignored (did you mean 'window_shift'?)",
                f"{path}: unknown key 'zzz' ignored",
                f"{path}: unknown key 'binnig' ignored (did you mean 'binning'?)"]
    assert conn.texts == [f"WARNING  {text}" for text in expected]
    assert all(text in caplog.text for text in expected)


def test_load_takes_the_defaults_without_a_file_and_rejects_a_missing_spiral_config(tmp_path):
    conn = Texts()
    assert _toml.load(simplenufft1arm.SpiralConfig, "simplenufft1arm", "absent.toml", conn) == \
        simplenufft1arm.SpiralConfig()
    assert conn.texts == []
    with pytest.raises(mrdhelper.ConfigError) as info:
        _toml.load(simplenufft1arm.SpiralConfig, {"parameters": {"spiral_config": str(tmp_path / "x.toml")}},
                   "absent.toml", conn)
    assert str(info.value) == f"JSON configuration: parameters.spiral_config: no such file {tmp_path / 'x.toml'}"


def test_check_types_accepts_an_int_for_a_float_and_names_the_given_source():
    _toml.check_types(simplenufft1arm.SpiralConfig, {"fov_oversampling": 2, "arms_per_frame": 4}, "x.toml")
    with pytest.raises(mrdhelper.ConfigError) as info:
        _toml.check_types(simplenufft1arm.SpiralConfig, {"arms_per_frame": 1.5}, "/a/x.toml",
                          {"arms_per_frame": "reconstruction"})
    assert str(info.value) == "/a/x.toml: [reconstruction] arms_per_frame must be an int, got float 1.5"


# --- get_json_config_param directly -----------------------------------------------------------

@pytest.mark.parametrize("value, type_, expected", [
    ([3], "int", "an int, got list [3]"),
    ("abc", "int", "an int, got str 'abc'"),
    (2.5, "int", "an int, got float 2.5"),
    (True, "int", "an int, got bool True"),
    (None, "int", "an int, got null"),
    ({"a": 1}, "float", "a float, got dict {'a': 1}"),
    ("fast", "double", "a float, got str 'fast'"),
    (["x"], "str", "a str, got list ['x']"),
    ({}, "choice", "a str, got dict {}"),
    ([True], "bool", "a bool (true/false), got list [True]"),
    (1, "boolean", "a bool (true/false), got int 1"),
])
def test_json_value_of_the_wrong_type_raises_a_config_error(value, type_, expected):
    with pytest.raises(mrdhelper.ConfigError) as info:
        mrdhelper.get_json_config_param({"parameters": {"k": value}}, "k", 0, type_)
    assert str(info.value) == f"JSON configuration: parameters.k must be {expected}"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value, type_, expected", [
    ("5", "int", 5), (" 7 ", "int", 7), (5, "int", 5), (4.0, "int", 4),
    ("2.5", "float", 2.5), (3, "float", 3.0), ("1e3", "double", 1000.0),
    (3, "str", "3"), (2.5, "string", "2.5"), (True, "str", "True"),
    ("true", "bool", True), ("False", "bool", False), (False, "bool", False),
])
def test_json_values_upstream_accepts_still_convert(value, type_, expected):
    result = mrdhelper.get_json_config_param({"parameters": {"k": value}}, "k", None, type_)
    assert result == expected and type(result) is type(expected)
