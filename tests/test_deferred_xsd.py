"""Tests of constants.py's deferred ``ismrmrd.xsd``: a process that imports ``constants`` before
``ismrmrd`` (the client) loads the XML schema code only when a header is parsed or written, and every
way of using ``ismrmrd.xsd`` still works."""
import subprocess
import sys
from pathlib import Path

from conftest import generate_phantom

REPO_DIR = Path(__file__).resolve().parents[1]

USES = r"""
import sys
sys.path.insert(0, {repo!r})
import constants, ismrmrd, mrdfile, connection
from ismrmrd.serialization import ProtocolSerializer
assert "xsdata" not in sys.modules, "the schema code was imported at start-up"
import ismrmrd.xsd
header = ismrmrd.xsd.CreateFromDocument(open({xml!r}).read())
assert "xsdata" in sys.modules and sys.modules["ismrmrd.xsd"] is ismrmrd.xsd
from ismrmrd.xsd import ismrmrdHeader
assert type(header) is ismrmrdHeader is ismrmrd.xsd.ismrmrdHeader
assert header.encoding[0].encodedSpace.matrixSize.x == 512
assert ismrmrd.xsd.CreateFromDocument(ismrmrd.xsd.ToXML(header)).encoding[0].encodedSpace.matrixSize.x == 512
import ismrmrd.serialization as ser, io
assert isinstance(header, ser.ismrmrdHeader) and not isinstance("text", ser.ismrmrdHeader)
out = io.BytesIO()
ProtocolSerializer(out).serialize(header)
assert len(out.getvalue()) > 1000
import mrdv2.convert  # imports names from ismrmrd.xsd after ismrmrd's import: it gets the real ones
assert mrdv2.convert.header_from_xml is not None
from ismrmrd.xsd import ToXML
assert ToXML is sys.modules["ismrmrd.xsd"].ToXML
print("ok")
"""


def test_schema_code_is_loaded_at_first_use_and_works(tmp_path):
    import h5py

    import mrdfile
    phantom = generate_phantom(tmp_path / "phantom.h5", "-m", "256", "-c", "2", "-r", "1")
    with h5py.File(phantom, "r") as f:
        (tmp_path / "h.xml").write_text(mrdfile.read_xml(f["dataset"]))
    result = subprocess.run([sys.executable, "-c", USES.format(repo=str(REPO_DIR), xml=str(tmp_path / "h.xml"))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_the_client_starts_without_the_schema_code():
    result = subprocess.run([sys.executable, "-X", "importtime", str(REPO_DIR / "client.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "ismrmrd.file" in result.stderr and "xsdata" not in result.stderr


def test_ismrmrd_imported_first_is_left_as_it_is():
    code = (f"import sys; sys.path.insert(0, {str(REPO_DIR)!r}); import ismrmrd; real = ismrmrd.xsd; import constants;"
            " assert ismrmrd.xsd is real and 'xsdata' in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
