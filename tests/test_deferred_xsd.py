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


def test_threads_parsing_at_once_all_get_the_whole_schema(tmp_path):
    """The first header parse of a server loads the schema; sessions that start at the same moment
    must wait for it, not see a half-initialised module (seen as unparsed headers under load)."""
    import h5py

    import mrdfile
    phantom = generate_phantom(tmp_path / "phantom.h5", "-m", "64", "-c", "2", "-r", "1")
    with h5py.File(phantom, "r") as f:
        (tmp_path / "h.xml").write_text(mrdfile.read_xml(f["dataset"]))
    code = f"""
import sys, threading
sys.path.insert(0, {str(REPO_DIR)!r})
import constants, ismrmrd
xml = open({str(tmp_path / "h.xml")!r}).read()
start, sizes, errors = threading.Barrier(16), [], []
def parse():
    start.wait()
    try:
        sizes.append(ismrmrd.xsd.CreateFromDocument(xml).encoding[0].encodedSpace.matrixSize.x)
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=parse) for _ in range(16)]
[t.start() for t in threads]
[t.join() for t in threads]
print(sorted(set(sizes)), len(sizes), errors)
"""
    for _ in range(3):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.strip() == "[128] 16 []", result.stdout + result.stderr
