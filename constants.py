"""MRD v1 wire constants: message IDs, framing structs, fixed sizes and logging levels.

This file is the single source of the numbers of the MRD streaming protocol
(see docs/protocol.md §2–§5).  The legacy ``MRD_MESSAGE_*`` names,
``struct.Struct`` objects and ``SIZEOF_*`` companions are kept because modules
written for python-ismrmrd-server import them.

Imported before ``ismrmrd`` (as ``client.py`` does), it defers ismrmrd's XML-schema
code until a header is parsed or written: :func:`_defer_ismrmrd_xsd`.
"""
import argparse
import ctypes
import enum
import importlib.machinery
import importlib.util
import struct
import sys
import threading
import types


# The names ismrmrd's own modules import from ismrmrd.xsd while ``import ismrmrd`` runs.
_XSD_NAMES_IMPORTED_BY_ISMRMRD = ("ToXML", "CreateFromDocument", "ismrmrdHeader")


def _defer_ismrmrd_xsd() -> types.ModuleType | None:
    """Put a stand-in for ``ismrmrd.xsd`` in ``sys.modules`` that loads the real one at first use.

    ``import ismrmrd`` always imports ``ismrmrd.xsd`` (xsdata and the generated schema classes,
    about 40 ms of a client's 0.15 s start-up), which only parsing or writing an XML header
    needs; the client sends the header as text.  Any attribute of the stand-in loads the real
    module, which then replaces it in ``sys.modules`` and as ``ismrmrd.xsd``.  While ``ismrmrd``
    itself is imported, the stand-in also answers the names its modules import from it
    (``_XSD_NAMES_IMPORTED_BY_ISMRMRD``): ``ToXML`` and ``CreateFromDocument`` load on call,
    ``ismrmrdHeader`` (``ismrmrd.serialization``'s annotations and isinstance checks) is a class
    that checks instances against, and constructs, the real one.  :func:`_end_xsd_deferral`
    removes those afterwards, so whoever imports a name later gets the real object.
    Returns the stand-in; None (nothing done) once ``ismrmrd`` is imported or when its files are
    not found.
    """
    if "ismrmrd" in sys.modules:
        return None
    package = importlib.util.find_spec("ismrmrd")
    real_spec = (importlib.machinery.PathFinder.find_spec("ismrmrd.xsd", package.submodule_search_locations)
                 if package is not None and package.submodule_search_locations else None)
    if real_spec is None or real_spec.loader is None:
        return None

    class DeferredXsd(types.ModuleType):
        def __getattr__(self, name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            return getattr(load(), name)

    class DeferredClass(type):
        def __instancecheck__(cls, obj: object) -> bool:
            return sys.modules.get("ismrmrd.xsd") is not stand_in and isinstance(obj, load().ismrmrdHeader)

        def __call__(cls, *args, **kwargs):
            return load().ismrmrdHeader(*args, **kwargs)

    stand_in = DeferredXsd("ismrmrd.xsd", "ismrmrd's XML schema, loaded at first use (constants.py)")
    stand_in.__path__ = list(real_spec.submodule_search_locations or [])  # its submodules import as usual
    loading = threading.RLock()

    def load() -> types.ModuleType:
        # Under a lock, and the stand-in stays in sys.modules until the real module has run: a session
        # thread must never see a half-initialised ismrmrd.xsd while another one loads it.
        with loading:
            if sys.modules.get("ismrmrd.xsd") is stand_in:
                module = importlib.util.module_from_spec(real_spec)
                real_spec.loader.exec_module(module)
                sys.modules["ismrmrd.xsd"] = module
                if "ismrmrd" in sys.modules:
                    sys.modules["ismrmrd"].xsd = module
            return sys.modules["ismrmrd.xsd"]

    def ToXML(*args, **kwargs):  # noqa: N802 (ismrmrd's name)
        return load().ToXML(*args, **kwargs)

    def CreateFromDocument(*args, **kwargs):  # noqa: N802 (ismrmrd's name)
        return load().CreateFromDocument(*args, **kwargs)

    stand_in.ToXML, stand_in.CreateFromDocument = ToXML, CreateFromDocument
    stand_in.ismrmrdHeader = DeferredClass("ismrmrdHeader", (), {"__module__": "ismrmrd.xsd"})
    sys.modules["ismrmrd.xsd"] = stand_in
    return stand_in


def _end_xsd_deferral(stand_in: types.ModuleType | None) -> None:
    """After ``import ismrmrd``: bind the stand-in as ``ismrmrd.xsd`` (``from . import xsd`` found it
    in ``sys.modules`` without binding it) and drop the names only ismrmrd's import needed."""
    if stand_in is None or sys.modules.get("ismrmrd.xsd") is not stand_in:
        return
    if not hasattr(ismrmrd, "xsd"):
        ismrmrd.xsd = stand_in
    for name in _XSD_NAMES_IMPORTED_BY_ISMRMRD:
        stand_in.__dict__.pop(name, None)


_deferred_xsd = _defer_ismrmrd_xsd()

import ismrmrd  # noqa: E402
import ismrmrd.image  # noqa: E402

_end_xsd_deferral(_deferred_xsd)

# ismrmrd 1.15 no longer exports get_dtype_from_data_type at the top level (it moved to ismrmrd.image);
# modules written for earlier releases, e.g. python-ismrmrd-server's spectroscopy.py, still call
# ismrmrd.get_dtype_from_data_type. Every server process imports this file before any module runs.
if not hasattr(ismrmrd, "get_dtype_from_data_type"):
    ismrmrd.get_dtype_from_data_type = ismrmrd.image.get_dtype_from_data_type


class MessageID(enum.IntEnum):
    """Message identifiers (the ``uint16`` that starts every message)."""

    CONFIG_FILE = 1
    CONFIG_TEXT = 2
    HEADER = 3
    CLOSE = 4
    TEXT = 5
    ACQUISITION = 1008
    IMAGE = 1022
    WAVEFORM = 1026
    NDARRAY = 1030


# Names used by python-ismrmrd-server modules.
MRD_MESSAGE_INT_ID_MIN = 0
MRD_MESSAGE_CONFIG_FILE = MessageID.CONFIG_FILE
MRD_MESSAGE_CONFIG_TEXT = MessageID.CONFIG_TEXT
MRD_MESSAGE_METADATA_XML_TEXT = MessageID.HEADER
MRD_MESSAGE_CLOSE = MessageID.CLOSE
MRD_MESSAGE_TEXT = MessageID.TEXT
MRD_MESSAGE_INT_ID_MAX = 999
MRD_MESSAGE_EXT_ID_MIN = 1000
MRD_MESSAGE_ACQUISITION = 1001
MRD_MESSAGE_NEW_MEASUREMENT = 1002
MRD_MESSAGE_END_OF_ACQUISITION = 1003
MRD_MESSAGE_IMAGE_CPLX_FLOAT = 1004
MRD_MESSAGE_IMAGE_REAL_FLOAT = 1005
MRD_MESSAGE_IMAGE_REAL_USHORT = 1006
MRD_MESSAGE_EMPTY = 1007
MRD_MESSAGE_ISMRMRD_ACQUISITION = MessageID.ACQUISITION
MRD_MESSAGE_ISMRMRD_IMAGE_CPLX_FLOAT = 1009
MRD_MESSAGE_ISMRMRD_IMAGE_REAL_FLOAT = 1010
MRD_MESSAGE_ISMRMRD_IMAGE_REAL_USHORT = 1011
MRD_MESSAGE_DICOM = 1012
MRD_MESSAGE_CLOUD_JOB = 1013
MRD_MESSAGE_GADGETCLOUD_JOB = 1014
MRD_MESSAGE_ISMRMRD_IMAGEWITHATTRIB_CPLX_FLOAT = 1015
MRD_MESSAGE_ISMRMRD_IMAGEWITHATTRIB_REAL_FLOAT = 1016
MRD_MESSAGE_ISMRMRD_IMAGEWITHATTRIB_REAL_USHORT = 1017
MRD_MESSAGE_DICOM_WITHNAME = 1018
MRD_MESSAGE_DEPENDENCY_QUERY = 1019
MRD_MESSAGE_ISMRMRD_IMAGE_REAL_SHORT = 1020
MRD_MESSAGE_ISMRMRD_IMAGEWITHATTRIB_REAL_SHORT = 1021
MRD_MESSAGE_ISMRMRD_IMAGE = MessageID.IMAGE
MRD_MESSAGE_RECONDATA = 1023
MRD_MESSAGE_ISMRMRD_WAVEFORM = MessageID.WAVEFORM
MRD_MESSAGE_NDARRAY = MessageID.NDARRAY
MRD_MESSAGE_EXT_ID_MAX = 4096

# Framing structs (little-endian, no padding).
MrdMessageLength = struct.Struct("<I")
SIZEOF_MRD_MESSAGE_LENGTH = MrdMessageLength.size
MrdMessageIdentifier = struct.Struct("<H")
SIZEOF_MRD_MESSAGE_IDENTIFIER = MrdMessageIdentifier.size
MrdMessageConfigurationFile = struct.Struct("<1024s")
SIZEOF_MRD_MESSAGE_CONFIGURATION_FILE = MrdMessageConfigurationFile.size
MrdMessageAttribLength = struct.Struct("<Q")
SIZEOF_MRD_MESSAGE_ATTRIB_LENGTH = MrdMessageAttribLength.size
NdarrayPrefix = struct.Struct("<HHH")

# Fixed header sizes, taken from the ctypes layouts of the ismrmrd package.
SIZEOF_ACQUISITION_HEADER = ctypes.sizeof(ismrmrd.AcquisitionHeader)  # 340
SIZEOF_IMAGE_HEADER = ctypes.sizeof(ismrmrd.ImageHeader)  # 198
SIZEOF_WAVEFORM_HEADER = ctypes.sizeof(ismrmrd.WaveformHeader)  # 40
CONFIG_FILE_NAME_BYTES = SIZEOF_MRD_MESSAGE_CONFIGURATION_FILE
NDARRAY_MAX_DIMS = 7

# Pixel element types of IMAGE/NDARRAY ``data_type`` codes.  Code 4 is int32 on
# the wire; ismrmrd-python maps it to the platform ``int`` (int64), which is wrong.
IMAGE_DTYPES = {
    1: "<u2",
    2: "<i2",
    3: "<u4",
    4: "<i4",
    5: "<f4",
    6: "<f8",
    7: "<c8",
    8: "<c16",
}

# Logging level prefixes of ``Connection.send_logging`` (8 characters each).
# An MRD v2 (yardl) stream starts with b"yardl"; no v1 message ID has 0x79 ("y") as its low byte, so the
# first byte tells the formats apart (docs/protocol.md §11.3).
MRD_V2_FIRST_BYTE = b"y"

MRD_LOGGING_DEBUG = "DEBUG   "
MRD_LOGGING_INFO = "INFO    "
MRD_LOGGING_WARNING = "WARNING "
MRD_LOGGING_ERROR = "ERROR   "
MRD_LOGGING_CRITICAL = "CRITICAL"

DEFAULT_PORT = 9002


def tcp_port(text: str) -> int:
    """The ``-p``/``--port`` value of the server and the client: 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0 to 65535)")
    return port
