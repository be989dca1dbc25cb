"""Threaded MRD server: accepts connections and runs one session per connection.

A session reads the configuration (CONFIG_FILE or CONFIG_TEXT), the XML header
and an optional JSON TEXT, picks a module from the module folders (or a
built-in: ``null``, ``savedataonly``) and calls its
``process(connection, config, metadata)``.  This file is the only place that
turns errors into an MRD error text for the client; whatever happens, the
client gets exactly one CLOSE and the server goes on serving.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import io
import ipaddress
import json
import logging
import multiprocessing
import os
import re
import secrets
import signal
import site
import socket
import sys
import sysconfig
import threading
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, Callable

import ismrmrd
import numpy as np

import constants
from connection import (Connection, MessageID, MessageWriter, MrdError, ProtocolError, StreamEnded, parse_header_xml,
                        socket_sender, warm_header_xml, stream_sender, socket_reader, stream_format)
from mrdsave import SessionRecorder, recover_crashed

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parent
MODULE_NAME = re.compile(r"[A-Za-z0-9_]+")
BUILTIN_MODULES = ("null", "savedataonly")
CHILD_TIMEOUT_MARGIN_S = 10.0
LOGGED_JSON_CHARS = 4000


def new_session_id() -> str:
    """A short random id that names a session's thread (or process) and so every log line of it."""
    return secrets.token_hex(3)


@dataclasses.dataclass
class ServerConfig:
    """Settings of one server process (filled from the command line by main.py)."""

    host: str = "0.0.0.0"
    port: int = constants.DEFAULT_PORT
    default_config: str = "invertcontrast"
    savedata: bool = False
    savedata_folder: str = "/tmp/share/saved_data"
    dependency_folder: str = "/tmp/share/dependencies"  # noise covariances by measurement ID (modules/_noise.py)
    multiprocessing: bool = False
    module_dirs: tuple[Path, ...] = (REPO_DIR / "modules",)
    # FIRE's sync script copies user code to <share>/code; searched after the repository and the working directory.
    share_code_dir: Path = Path(os.environ.get("MRD_SHARE_DIR", "/tmp/share")) / "code"
    shutdown_grace_s: float = 30.0
    drain_timeout_s: float = 30.0
    preload: tuple[str, ...] = ("simplefft", "invertcontrast", "analyzeflow")
    # Preloaded (and warmed up) too where CuPy is installed: the GPU reconstruction's CUDA start.
    preload_with_gpu: tuple[str, ...] = ("simplenufft1arm",)
    max_message_bytes: int = 1 << 30
    max_text_bytes: int = 64 << 20
    idle_timeout_s: float = 300.0
    max_sessions: int = 0  # 0: no limit
    module_timeout_s: float = 0.0  # 0: no limit
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # empty: every address
    qa: bool = False  # header QA of every session (qa/): on with --qa, --qa-rules, --qa-db or --http-port
    qa_rules: Path | None = None
    qa_db: Path | None = None  # None: <savedata_folder>/qa.sqlite
    qa_min_count: int = 3

    @property
    def reader_limits(self) -> dict:
        """Size limits for :class:`connection.MessageReader`."""
        return {"max_message_bytes": self.max_message_bytes, "max_text_bytes": self.max_text_bytes}

    def allows(self, host: str) -> bool:
        """Whether a peer address may connect (``--allow``)."""
        if not self.allow:
            return True
        address = ipaddress.ip_address(host.split("%")[0])
        if address.version == 6 and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.allow)


# The server's own files and tools are never session modules, whatever folder a name is found in.
SERVER_FILES = frozenset({"main", "server", "connection", "constants", "mrdhelper", "client", "mrdfile", "mrdsave"}
                         | {p.stem for p in (REPO_DIR / "tools").glob("*.py")})


class ModuleLoadError(MrdError):
    """A module file exists but cannot serve: it does not parse or import, or defines no process()."""


def _library_dirs() -> set[Path]:
    """The standard library's and the installed packages' folders: never searched for modules."""
    paths = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths |= set(site.getsitepackages()) | {site.getusersitepackages()}
    return {Path(p).resolve() for p in paths}


def _defines_process(tree: ast.Module) -> bool:
    """Whether a module's top level binds ``process`` (def, assignment, import), or may (``import *``)."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "process":
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "process" for t in targets):
                return True
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" or (a.asname or a.name) == "process"
                                                    for a in node.names):
            return True
    return False


class ModuleRegistry:
    """Finds and imports session modules where python-ismrmrd-server users keep them.

    A config name ``n`` (``[A-Za-z0-9_]+``, not starting with ``_``, not a server file, not the
    name of a standard-library or installed module) selects the first ``n.py`` in: the
    ``--modules`` folders, ``modules/``, the repository root, the working directory, the FIRE
    share's ``code/`` folder (``share_code_dir``) and the ``PYTHONPATH`` folders; the standard
    library's and site-packages' folders are never searched.  The file must define
    ``process``: that is checked on its syntax tree before it runs, so a script that happens to
    lie in one of these folders is never executed.  A found file that does not parse, fails to
    import or defines no ``process`` raises :class:`ModuleLoadError` (an error for the client);
    an unknown name is ``None`` from :meth:`find` (the session falls back to the default).
    Imports are cached for the process, as upstream's are.
    """

    def __init__(self, dirs: tuple[Path, ...], share_code_dir: Path | None = None) -> None:
        self.module_dirs = tuple(Path(d).resolve() for d in dirs)
        for d in reversed(self.module_dirs + (REPO_DIR,)):  # modules import their helpers and mrdhelper
            if str(d) not in sys.path:
                sys.path.insert(0, str(d))
        pythonpath = [Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        candidates = [*self.module_dirs, REPO_DIR, Path.cwd(), *([share_code_dir] if share_code_dir else []),
                      *pythonpath]
        libraries = _library_dirs()
        self.dirs = tuple(dict.fromkeys(
            d for d in (c.resolve() for c in candidates)
            if d not in libraries and d.name not in ("site-packages", "dist-packages")))
        self._lock = threading.Lock()

    def find(self, name: str) -> Path | None:
        """The file a config name selects, or None when the name is unknown or not a module name."""
        if (not MODULE_NAME.fullmatch(name) or name.startswith("_") or name in SERVER_FILES
                or name in sys.stdlib_module_names or self._is_library(name)):
            return None
        return next((d / f"{name}.py" for d in self.dirs if (d / f"{name}.py").is_file()), None)

    def _is_library(self, name: str) -> bool:
        """Whether ``name`` is an installed package or module (a file of that name would shadow it)."""
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None) if module is not None else None
        if origin is None and module is None:
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                return False
            origin = spec.origin if spec is not None else None
        return origin is not None and Path(origin).resolve().parent not in self.dirs

    def available(self, name: str) -> bool:
        return name in BUILTIN_MODULES or self.find(name) is not None

    def load(self, name: str) -> ModuleType:
        """Import module ``name`` from its file (cached); ModuleLoadError naming the file when that fails."""
        path = self.find(name)
        if path is None:
            raise ModuleLoadError(f"no module '{name}' in {', '.join(map(str, self.dirs))}")
        with self._lock:
            module = sys.modules.get(name)
            if module is not None and Path(getattr(module, "__file__", "")).resolve() == path:
                return module
            try:
                tree = ast.parse(path.read_bytes(), filename=str(path))
            except (SyntaxError, ValueError, OSError) as exc:
                raise ModuleLoadError(f"module file {path} does not parse: {type(exc).__name__}: {exc}") from exc
            if not _defines_process(tree):
                raise ModuleLoadError(f"module file {path} defines no process(connection, config, metadata)")
            if str(path.parent) not in sys.path:
                sys.path.append(str(path.parent))  # its own helpers importable, libraries never shadowed
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException as exc:
                del sys.modules[name]
                raise ModuleLoadError(f"module file {path} failed to import: {type(exc).__name__}: {exc}") from exc
        if not callable(getattr(module, "process", None)):
            raise ModuleLoadError(f"module file {path} has no process(connection, config, metadata)")
        return module


@dataclasses.dataclass
class SessionSetup:
    """What the preamble of a session said."""

    config_name: str
    module_name: str
    config: Any  # passed to process(): the name, the config text or the parsed JSON dict
    metadata: Any  # ismrmrd.xsd.ismrmrdHeader, or the raw XML text when it does not parse
    xml: str
    config_from_file: bool
    json_text: str | None


def parse_header(xml: str) -> Any:
    """The header as ``ismrmrdHeader`` (``connection.parse_header_xml``); the raw text when it is not
    valid ISMRMRD XML."""
    try:
        return parse_header_xml(xml)
    except Exception as exc:  # xsdata raises several unrelated types
        log.warning("XML header could not be parsed (%s); the module gets the raw text", exc)
        return xml


def read_setup(connection: Connection, header_first: bool = False) -> SessionSetup | None:
    """Read configuration, header and optional JSON TEXT; None when the peer closed before a header.

    With ``header_first`` (stream mode) the configuration message is optional.
    """
    reader = connection.reader
    msg_id, item = reader.read()
    if msg_id is None:
        log.info("Connection closed without any data received")
        return None
    config, from_file = "", False
    if msg_id in (MessageID.CONFIG_FILE, MessageID.CONFIG_TEXT):
        config, from_file = item, msg_id == MessageID.CONFIG_FILE
        msg_id, item = reader.read()
    elif not header_first:
        raise ProtocolError(f"expected a configuration message (ID 1 or 2) first, got ID {msg_id}")
    if msg_id is None or msg_id == MessageID.CLOSE:
        log.info("Connection closed without an MRD header received")
        return None
    if msg_id != MessageID.HEADER:
        raise ProtocolError(f"expected the XML header (ID 3) after the configuration, got ID {msg_id}")
    setup = SessionSetup(config, config.strip(), config, None, item, from_file, None)
    if reader.peek_id() == MessageID.TEXT:
        _, setup.json_text = reader.read()
        _apply_json(setup, connection)
    setup.metadata = parse_header(item)
    log.info("Header: %s", header_summary(setup.metadata))
    return setup


def header_summary(metadata: Any) -> str:
    """One line about the scan: vendor, model, field strength, protocol, trajectory, matrix, FOV, coils."""
    if isinstance(metadata, str):
        return f"not ISMRMRD XML ({len(metadata)} characters)"
    system = getattr(metadata, "acquisitionSystemInformation", None)
    measurement = getattr(metadata, "measurementInformation", None)
    encodings = getattr(metadata, "encoding", None) or []
    parts = [getattr(system, "systemVendor", None) or "vendor ?", getattr(system, "systemModel", None) or "model ?"]
    field = getattr(system, "systemFieldStrength_T", None)
    parts.append(f"{field:g} T" if field is not None else "field ?")
    parts.append(f"protocol '{getattr(measurement, 'protocolName', None) or '?'}'")
    if encodings:
        enc = encodings[0]
        trajectory = getattr(enc.trajectory, "value", enc.trajectory)
        space = enc.encodedSpace
        matrix, fov = space.matrixSize, space.fieldOfView_mm
        parts.append(f"{trajectory}, encoded {matrix.x}x{matrix.y}x{matrix.z}, "
                     f"FOV {fov.x:g}x{fov.y:g}x{fov.z:g} mm" + (f" ({len(encodings)} encodings)"
                                                                  if len(encodings) > 1 else ""))
    else:
        parts.append("no encoding")
    coils = getattr(system, "receiverChannels", None)
    parts.append(f"{coils} coils" if coils is not None else "coils ?")
    return ", ".join(parts)


def header_for_stream(xml: str) -> str:
    """The header to echo on a stream: without ``<version>``, which the C++ stream tools reject
    when it differs from their own schema version (docs/protocol.md §9)."""
    return re.sub(r"\s*<version>[^<]*</version>", "", xml, count=1)


def _apply_json(setup: SessionSetup, connection: Connection) -> None:
    """Use the JSON TEXT as the module config; ``parameters.config``/``customconfig`` rename the module."""
    text = setup.json_text
    log.debug("JSON configuration text (%d characters): %s", len(text),
              text if len(text) <= LOGGED_JSON_CHARS else text[:LOGGED_JSON_CHARS] + " ...")
    try:
        parsed = json.loads(setup.json_text)
        if not isinstance(parsed, dict):
            raise ValueError(f"top level is {type(parsed).__name__}, not an object")
    except ValueError as exc:
        msg = f"JSON configuration text ignored, it does not parse: {exc}"
        log.warning(msg)
        connection.send_logging(constants.MRD_LOGGING_WARNING, msg)
        return
    setup.config = parsed
    params = parsed.get("parameters")
    if isinstance(params, dict):
        for key in ("config", "customconfig"):
            if isinstance(params.get(key), str) and params[key].strip():
                setup.module_name = params[key].strip()


def drain(connection: Connection) -> None:
    """Read until CLOSE (the ``null`` and ``savedataonly`` built-ins); the session then sends CLOSE."""
    for item in connection:
        if item is None:
            break


@dataclasses.dataclass(frozen=True)
class Observers:
    """Who watches sessions: ``events`` receives the dashboard's event dicts (docs: web/README.md),
    ``checker`` is the header QA (a ``qa.QAChecker``); either may be None."""

    events: Callable[[dict], None] | None = None
    checker: Any = None


NO_OBSERVERS = Observers()
PROGRESS_INTERVAL_S = 0.5
THUMBNAIL_PIXELS = 160


def thumbnail_png(image: ismrmrd.Image, size: int = THUMBNAIL_PIXELS) -> bytes:
    """A small greyscale (RGB for RGB images) PNG of an image's first slice, windowed 1st to 99th percentile."""
    from PIL import Image as PILImage  # the dashboard's only use of Pillow here: imported when it is on

    data = np.abs(np.asarray(image.data))  # [cha, z, y, x]
    rgb = image.image_type == ismrmrd.IMTYPE_RGB and data.shape[0] == 3
    plane = np.moveaxis(data[:, 0], 0, -1) if rgb else data[0, 0]
    lo, hi = np.percentile(plane, (1, 99)) if plane.size else (0.0, 1.0)
    scaled = np.clip((plane - lo) * (255.0 / max(float(hi - lo), 1e-12)), 0, 255).astype(np.uint8)
    picture = PILImage.fromarray(scaled)
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


class ProgressReporter(threading.Thread):
    """While a session runs: its counters every ``PROGRESS_INTERVAL_S`` and a thumbnail of each new last
    image, as events.  It only reads the connection's counters, so the session's own path is untouched."""

    def __init__(self, session: "Session") -> None:
        super().__init__(name=f"{threading.current_thread().name}-progress", daemon=True)
        self.session = session
        self.started = time.monotonic()
        self._stopped = threading.Event()
        self._thumbnailed: ismrmrd.Image | None = None

    def run(self) -> None:
        while not self._stopped.wait(PROGRESS_INTERVAL_S):
            self.report()

    def counters(self) -> dict:
        conn = self.session.connection
        return {"acquisitions": conn.recvAcqs, "images_in": conn.recvImages, "images_out": conn.sentImages,
                "bytes_in": conn.reader.bytes_read, "bytes_out": conn.writer.bytes_written,
                "elapsed": time.monotonic() - self.started}

    def report(self) -> None:
        session, conn = self.session, self.session.connection
        session.emit("session_progress", state="reconstructing" if conn.is_exhausted else "receiving",
                     **self.counters())
        image = conn.last_image
        if image is not None and image is not self._thumbnailed:
            self._thumbnailed = image
            try:
                session.emit("session_thumbnail", png=thumbnail_png(image))
            except (ValueError, TypeError, OSError) as exc:
                log.debug("No thumbnail of the last image: %s", exc)

    def stop(self) -> dict:
        """Stop, report once more, and return the final counters."""
        self._stopped.set()
        self.join()
        self.report()
        return self.counters()


def patient_of(metadata: Any) -> dict:
    """Patient name, ID and birth date from the header (for the dashboard, which drops them unless asked)."""
    subject = getattr(metadata, "subjectInformation", None)
    return {"name": getattr(subject, "patientName", None), "id": getattr(subject, "patientID", None),
            "birth_date": str(getattr(subject, "patientBirthdate", None) or "") or None}


@dataclasses.dataclass(eq=False)
class Session:
    """One MRD session over a :class:`Connection`: setup, module dispatch, error report, one CLOSE.

    ``stream`` (stdin/stdout mode) makes the configuration message optional and
    echoes the header first; ``fixed_module`` fixes the module whatever the session says.
    """

    connection: Connection
    config: ServerConfig
    registry: ModuleRegistry
    peer: Any
    fixed_module: str | None = None
    stream: bool = False
    observers: Observers = NO_OBSERVERS
    failed: bool = dataclasses.field(default=False, init=False)
    _stream_broken: bool = dataclasses.field(default=False, init=False)
    _timed_out: bool = dataclasses.field(default=False, init=False)

    def __post_init__(self) -> None:
        self.sid = threading.current_thread().name  # the session id (see new_session_id)
        self.module_name: str | None = None
        self.connection.dependencyFolder = self.config.dependency_folder

    def emit(self, kind: str, **fields: Any) -> None:
        """One dashboard event about this session (nothing when no one watches)."""
        if self.observers.events is not None:
            self.observers.events({"type": kind, "id": self.sid, "time": time.time(), **fields})

    def _text_sent(self, text: str) -> None:
        level = text.split(" ", 1)[0] if text[:1].isupper() else "INFO"
        self.emit("session_text", level=level if level in ("ERROR", "WARNING", "INFO", "DEBUG") else "INFO",
                  text=text)

    def run(self) -> bool:
        """Run the session to its end; True when no error was reported."""
        start = time.perf_counter()
        log.info("Session from %s started", self.peer)
        reporter = None
        if self.observers.events is not None:
            self.emit("session_started", peer=":".join(map(str, self.peer)) if isinstance(self.peer, tuple)
                      else str(self.peer))
            self.connection.on_text = self._text_sent
            reporter = ProgressReporter(self)
            reporter.start()
        try:
            setup = read_setup(self.connection, header_first=self.stream)
            if setup is not None:
                self._dispatch(setup)
        except Exception as exc:
            self._report_error("server", exc)
        finally:
            self._finish()
        if reporter is not None:
            self.emit("session_ended", state="error" if self.failed else "done", module=self.module_name,
                      **reporter.stop())
        conn = self.connection
        log.info("Session from %s ended after %.2f s (received %d acquisitions, %d images, %d waveforms; "
                 "sent %d images)", self.peer, time.perf_counter() - start, conn.recvAcqs, conn.recvImages,
                 conn.recvWaveforms, conn.sentImages)
        return not self.failed

    def _resolve(self, setup: SessionSetup) -> str:
        name = self.fixed_module or setup.module_name or self.config.default_config
        if self.registry.available(name):
            return name
        default = self.config.default_config
        msg = f"Unknown config '{_shown(name)}'; using the default module '{default}'"
        log.warning(msg)
        self.connection.send_logging(constants.MRD_LOGGING_WARNING, msg)
        return default

    def _dispatch(self, setup: SessionSetup) -> None:
        name = self.module_name = self._resolve(setup)
        conn = self.connection
        if self.stream:
            conn.send_metadata(header_for_stream(setup.xml))
        self._observe_header(setup, name)
        if conn.savedata or (name == "savedataonly"):
            conn.savedata = True
            conn.recorder = SessionRecorder.start(conn.savedataFolder, setup.config_name, setup.config_from_file,
                                                  setup.json_text, setup.xml)
            conn.mrdFilePath = str(conn.recorder.path)
        if name in BUILTIN_MODULES:
            log.info("Running built-in '%s' (requested config '%s')", name, _shown(setup.config_name))
            drain(conn)
            return
        try:
            module = self.registry.load(name)
        except ModuleLoadError as exc:  # the file is there but broken: say so, do not run another module
            self._report_error(f"module '{name}'", exc)
            return
        log.info("Running module '%s' (requested config '%s')", name, _shown(setup.config_name))
        conn.hold_close = True
        watchdog = None
        if self.config.module_timeout_s:
            watchdog = threading.Timer(self.config.module_timeout_s, self._module_overran, args=(name,))
            watchdog.daemon = True
            watchdog.start()
        try:
            module.process(conn, setup.config, setup.metadata)
        except Exception as exc:
            if not self._timed_out:
                self._report_error(f"module '{name}'", exc)
        finally:
            conn.hold_close = False
            if watchdog is not None:
                watchdog.cancel()

    def _observe_header(self, setup: SessionSetup, module: str) -> None:
        """At the header, before any data: the dashboard's header event, and the header QA, whose
        result goes to the client as a text and into every image the session sends."""
        if self.observers.events is None and self.observers.checker is None:
            return
        import qa  # only when someone watches: the QA parameter model also names the station

        metadata = setup.metadata
        station = qa.station_of(metadata, self._peer_text())
        self.emit("session_header", station=station, module=module, config=_shown(setup.config_name),
                  protocol=getattr(getattr(metadata, "measurementInformation", None), "protocolName", None),
                  summary=header_summary(metadata), patient=patient_of(metadata))
        if self.observers.checker is not None and not isinstance(metadata, str):
            self._check_protocol(qa, metadata, station)

    def _peer_text(self) -> str:
        return self.peer[0] if isinstance(self.peer, tuple) else str(self.peer)

    def _check_protocol(self, qa: ModuleType, metadata: Any, station: str) -> None:
        """Header QA (qa/): the text to the client, the log line, the images' attributes, the event.
        A failure of the QA itself (its database, its rules) costs only a warning."""
        try:
            params = dataclasses.replace(qa.params_from_mrd(metadata), station=station)
            result = self.observers.checker.check(params)
            self.observers.checker.record(self.sid, params, result)
        except Exception as exc:  # QA must never cost the session: rules and database are the site's
            log.warning("Header QA skipped: %s: %s", type(exc).__name__, exc)
            return
        text = result.text()
        log.log(logging.WARNING if result.status == "FAIL" else logging.INFO, "%s", text)
        self.connection.send_text(text)
        self.connection.image_meta = result.meta()
        self.emit("session_qa", qa=result.to_dict())  # to_dict carries the text

    def _module_overran(self, name: str) -> None:
        """Watchdog: the module ran past ``module_timeout_s``: report it, CLOSE, and cut its input."""
        self._timed_out = True
        self._report_error(f"module '{name}'", TimeoutError(
            f"still running after {self.config.module_timeout_s:g} s (--module-timeout); session ended"))
        if self.connection.socket is not None:
            _shutdown_quietly(self.connection.socket)

    def _report_error(self, where: str, exc: BaseException) -> None:
        """Log the traceback; send one ERROR text naming ``where`` and the exception, then CLOSE.

        A client that went away (connection reset, broken pipe, or its stream ending inside a
        message, as when it is stopped with Ctrl-C) is one info line, not an error of ``where``.
        """
        self.failed = True
        self._stream_broken = self._stream_broken or isinstance(exc, (ProtocolError, OSError))
        disconnected = isinstance(exc, (ConnectionError, StreamEnded))
        if disconnected:
            conn = self.connection
            log.info("The client disconnected (%s) while %s ran; %d acquisitions, %d images, %d waveforms "
                     "received", exc, where, conn.recvAcqs, conn.recvImages, conn.recvWaveforms)
        elif isinstance(exc, MrdError):  # bad input or configuration: the message says it all
            log.error("Error in %s: %s: %s", where, type(exc).__name__, exc)
            log.debug("Traceback of that error: %s", "".join(traceback.format_exception(exc)).rstrip())
        else:
            log.error("Error in %s: %s", where, "".join(traceback.format_exception(exc)).rstrip())
        self.send_error(f"[{where}] {type(exc).__name__}: {exc}", quiet=disconnected)

    def send_error(self, text: str, quiet: bool = False) -> None:
        """One ERROR text and CLOSE to the client (a failure to send is logged, at debug when ``quiet``)."""
        try:
            self.connection.hold_close = False
            self.connection.send_logging(constants.MRD_LOGGING_ERROR, text)
            self.connection.send_close()
        except OSError as send_exc:
            log.log(logging.DEBUG if quiet else logging.WARNING, "Could not send the error to the peer: %s",
                    send_exc)

    def abort(self, text: str, wait_s: float = 2.0) -> None:
        """Forced shutdown: send ``text`` and CLOSE from another thread, waiting at most ``wait_s``
        (a module blocked in a send holds the writer's lock)."""
        sender = threading.Thread(target=self.send_error, args=(text,), daemon=True,
                                  name=f"{threading.current_thread().name}-abort")
        sender.start()
        sender.join(wait_s)

    def _finish(self) -> None:
        """When saving, record what is still coming and close the file; then send CLOSE if not yet sent."""
        conn = self.connection
        if conn.recorder is not None:
            self._finish_saving()
        try:
            conn.send_close()
        except OSError as exc:
            log.debug("Could not send CLOSE, the peer is gone: %s", exc)

    def _finish_saving(self) -> None:
        conn = self.connection
        if not conn.is_exhausted and not self._stream_broken:
            try:
                for _ in conn:
                    pass
            except (MrdError, OSError) as exc:
                log.warning("Saving stopped at a broken message: %s", exc)
        if conn.recorder is None:  # saving failed on the way
            return
        try:
            conn.mrdFilePath = str(conn.recorder.close())
        except (OSError, RuntimeError, ValueError) as exc:
            conn.stop_saving(exc)


def _shown(name: str) -> str:
    """A config name for a log line or text: at most 80 characters."""
    return name if len(name) <= 80 else name[:77] + "..."


def serve_socket(sock: socket.socket, peer: Any, config: ServerConfig, registry: ModuleRegistry,
                 sessions: dict[str, Session] | None = None, observers: Observers = NO_OBSERVERS) -> None:
    """Run one session on a connected socket, then let the client finish reading and close.

    ``sessions`` (threads mode) holds the running session under its thread's name (the session id)
    while it runs, so that a forced shutdown can reach it.
    """
    log.info("Accepted connection from %s", peer)
    sock.settimeout(config.idle_timeout_s or None)
    stream = socket_reader(sock)
    if v2_connection_wanted(stream):
        connection = v2_connection(stream, socket_sender(sock), config, sock=sock)
    else:
        connection = Connection.from_socket(sock, limits=config.reader_limits, stream=stream,
                                            savedataFolder=config.savedata_folder, savedata=config.savedata)
    session = Session(connection, config, registry, peer, observers=observers)
    sid = threading.current_thread().name
    if sessions is not None:
        sessions[sid] = session
    try:
        session.run()
    finally:
        if sessions is not None:
            sessions.pop(sid, None)
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(config.drain_timeout_s)
        buf = bytearray(1 << 16)
        while sock.recv_into(buf):  # the client may still be sending; it must still get our CLOSE
            pass
    except OSError as exc:
        log.debug("Socket closed by the peer: %s", exc)
    finally:
        connection.reader.close()
        sock.close()


def run_stream(config: ServerConfig, module: str | None, stdin: BinaryIO, stdout: BinaryIO,
               observers: Observers = NO_OBSERVERS) -> int:
    """One session from an MRD stream on ``stdin`` to ``stdout``; returns the exit status (1 on error)."""
    registry = ModuleRegistry(config.module_dirs, config.share_code_dir)
    threading.current_thread().name = new_session_id()
    if v2_connection_wanted(stdin):
        connection = v2_connection(stdin, stream_sender(stdout), config)
    else:
        connection = Connection.from_streams(stdin, stdout, limits=config.reader_limits,
                                             savedataFolder=config.savedata_folder, savedata=config.savedata)
    ok = Session(connection, config, registry, "stdin", fixed_module=module, stream=True, observers=observers).run()
    stdout.flush()
    return 0 if ok else 1


def v2_connection_wanted(stream: BinaryIO) -> bool:
    """Whether the stream starts as MRD v2 (``yardl``): its first byte tells (docs/protocol.md §11)."""
    return stream_format(stream) == "v2"


def v2_connection(stream: BinaryIO, send_parts: Callable[[list], None], config: ServerConfig,
                  sock: socket.socket | None = None) -> Connection:
    """A session's connection over an MRD v2 stream: the module sees v1 objects, the client gets v2;
    texts, which v2 cannot carry, go to the log."""
    from mrdv2.stream import V2Reader, V2Writer
    reader = V2Reader(stream, **config.reader_limits)
    connection = Connection(reader, V2Writer(send_parts, reader), sock=sock, savedataFolder=config.savedata_folder,
                            savedata=config.savedata)
    connection.texts_to_log = True
    log.info("MRD v2 stream (yardl binary)")
    return connection


def _send_error_and_close(sock: socket.socket, text: str) -> None:
    """Best effort: one ERROR text and CLOSE on a socket no session owns, then stop writing."""
    try:
        sock.settimeout(5.0)
        writer = MessageWriter.for_socket(sock)
        writer.send_text(f"{constants.MRD_LOGGING_ERROR} {text}")
        writer.send_close()
        sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        log.debug("Could not send the error: %s", exc)


def _shutdown_quietly(sock: socket.socket) -> None:
    """End the receiving side of a socket: a blocked session sees end of stream, and can still send CLOSE."""
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass


class Server:
    """Listens on host:port and runs each session in a thread (or a forked process with ``multiprocessing``)."""

    def __init__(self, config: ServerConfig, observers: Observers = NO_OBSERVERS) -> None:
        self.config = config
        self.observers = observers
        # -m: session processes send their dashboard events through one queue to this process.
        self._event_queue = (multiprocessing.get_context("fork").Queue()
                             if config.multiprocessing and observers.events is not None else None)
        self.registry = ModuleRegistry(config.module_dirs, config.share_code_dir)
        self._stop = threading.Event()
        self._workers: list[threading.Thread | multiprocessing.process.BaseProcess] = []
        self._sockets: set[socket.socket] = set()
        self._sessions: dict[str, Session] = {}  # threads mode: running sessions by session id
        self._children: dict[Any, tuple[socket.socket, Any, float]] = {}
        self._lock = threading.Lock()
        self.listener: socket.socket | None = None

    def preload(self) -> None:
        """Import the default and example modules now, and ismrmrd's XML schema (which ``constants``
        defers, docs/architecture.md §8) with the binding metadata of header parsing
        (``connection.warm_header_xml``), so the first session does not wait for them.  In threads
        mode a preloaded module's ``warm_up()``, when it has one, runs too (docs/modules.md §2.4: the
        GPU reconstruction starts CUDA and compiles its kernels); not with ``-m``, whose forked session
        processes could not use a CUDA context made before the fork."""
        warm_header_xml()
        gpu = self.config.preload_with_gpu if importlib.util.find_spec("cupy") is not None else ()
        for name in dict.fromkeys((self.config.default_config,) + self.config.preload + gpu):
            if self.registry.find(name) is None:
                continue
            try:
                module = self.registry.load(name)
            except ModuleLoadError as exc:
                log.warning("Could not preload module '%s': %s", name, exc)
                continue
            warm_up = getattr(module, "warm_up", None)
            if self.config.multiprocessing or not callable(warm_up):
                continue
            try:
                warm_up()
            except Exception as exc:  # a module's own code: any error; the sessions will meet it again
                log.warning("Warm-up of module '%s' failed (%s: %s); its first session starts cold", name,
                            type(exc).__name__, exc)

    def bind(self) -> tuple[str, int]:
        """Check the save folder for files a crash left (:meth:`recover_saved`), then listen: a client
        that can connect finds them renamed already."""
        self.recover_saved()
        self.listener = socket.create_server((self.config.host, self.config.port), reuse_port=False)
        self.listener.settimeout(0.25)
        address = self.listener.getsockname()[:2]
        log.info("Serving MRD on %s:%d (default module '%s')", address[0], address[1], self.config.default_config)
        return address

    def recover_saved(self) -> None:
        """Report (and rename) the saved-session files that a crash left in the save folder."""
        folder = Path(self.config.savedata_folder)
        if not folder.is_dir():
            return
        try:
            recover_crashed(folder)
        except OSError as exc:
            log.error("Could not check %s for files left by a crash: %s", folder, exc)

    def serve_forever(self) -> None:
        """Accept connections until :meth:`stop`; then wait for the sessions to end."""
        if self.listener is None:
            self.bind()
        if self._event_queue is not None:
            threading.Thread(target=self._forward_events, name="events", daemon=True).start()
        try:
            while not self._stop.is_set():
                try:
                    sock, peer = self.listener.accept()
                except (socket.timeout, BlockingIOError):
                    self._reap()
                    continue
                except OSError:
                    if self._stop.is_set():
                        break
                    raise
                self._take(sock, peer)
        finally:
            self._take_backlog()
            self.listener.close()
            self._wait_for_sessions()
            if self._event_queue is not None:
                self._event_queue.put(None)

    def _take(self, sock: socket.socket, peer: Any) -> None:
        """An accepted connection: refused (--allow, --max-sessions) or a new session."""
        sock.settimeout(None)
        if not self.config.allows(peer[0]):
            log.warning("Refused a connection from %s (not in --allow)", peer[0])
            _send_error_and_close(sock, f"connection from {peer[0]} refused: this server accepts "
                                        "only the networks of its --allow list")
            sock.close()
            return
        self._reap()
        if self.config.max_sessions and len(self._workers) >= self.config.max_sessions:
            self._refuse_busy(sock, peer)
            return
        self._start_session(sock, peer)

    def _take_backlog(self) -> None:
        """At shutdown: connections the kernel completed before the port closes are sessions too
        (closing the port would reset them, e.g. one a load balancer handed over just before)."""
        try:
            self.listener.setblocking(False)
            while True:
                sock, peer = self.listener.accept()
                log.info("Serving %s, which connected before the port closed", peer)
                self._take(sock, peer)
        except (BlockingIOError, socket.timeout, OSError):
            pass

    def _refuse_busy(self, sock: socket.socket, peer: Any) -> None:
        """Tell a client beyond ``max_sessions`` why it is not served, and close."""
        msg = f"server busy: {self.config.max_sessions} session(s) running (--max-sessions); try again later"
        log.warning("Refused %s: %s", peer, msg)
        _send_error_and_close(sock, msg)
        sock.close()

    def stop(self) -> None:
        """Stop accepting; running sessions are given ``shutdown_grace_s`` to finish."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def health(self) -> tuple[bool, dict]:
        """For ``/healthz``: whether new sessions are accepted (not stopping, not at ``--max-sessions``),
        and the number running."""
        running = sum(1 for worker in list(self._workers) if worker.is_alive())
        full = bool(self.config.max_sessions) and running >= self.config.max_sessions
        return not (self.stopping or full or self.listener is None), {"sessions": running}

    def qa_accept(self, session_id: str) -> dict | None:
        """``POST /api/qa/<id>/accept``: that session's parameters become its protocol's reference."""
        if self.observers.checker is None:
            return None
        result = self.observers.checker.accept(session_id)
        if result is None:
            return None
        log.info("QA: session %s accepted as the reference of %s on %s", session_id, result.protocol,
                 result.station)
        return result.to_dict()  # the web server puts it on the board

    def _forward_events(self) -> None:
        """-m: events of the session processes, from their queue to the dashboard."""
        while (event := self._event_queue.get()) is not None:
            self.observers.events(event)

    def force_stop(self) -> None:
        """A second SIGTERM/Ctrl-C: an error text and CLOSE to every running session, session processes
        killed; the caller then exits."""
        text = "[server] the server is being stopped (forced shutdown); the session is ended"
        for sid, session in list(self._sessions.items()):
            log.warning("Ending session %s (forced shutdown)", sid)
            session.abort(text)
        for worker, (sock, peer, _) in list(self._children.items()):
            log.warning("Killing session process %s for %s (forced shutdown)", worker.name, peer)
            worker.kill()
            worker.join(5.0)
            _send_error_and_close(sock, text)

    def _start_session(self, sock: socket.socket, peer: Any) -> None:
        sid = new_session_id()
        if self.config.multiprocessing:
            worker = multiprocessing.get_context("fork").Process(
                target=self._run_process, args=(sock, peer), daemon=False, name=sid)
            worker.start()
            self._children[worker] = (sock, peer, time.monotonic())  # kept to report a crash
        else:
            worker = threading.Thread(target=self._run_thread, args=(sock, peer), daemon=True, name=sid)
            with self._lock:
                self._sockets.add(sock)
            worker.start()
        self._workers.append(worker)

    def _run_thread(self, sock: socket.socket, peer: Any) -> None:
        try:
            serve_socket(sock, peer, self.config, self.registry, self._sessions, self.observers)
        finally:
            with self._lock:
                self._sockets.discard(sock)

    def _run_process(self, sock: socket.socket, peer: Any) -> None:
        """Session in a forked child: the parent alone listens and handles signals."""
        self.listener.close()
        threading.current_thread().name = multiprocessing.current_process().name  # the session id
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: _shutdown_quietly(sock))
        observers = self.observers
        if self._event_queue is not None:
            observers = dataclasses.replace(observers, events=self._event_queue.put)
        serve_socket(sock, peer, self.config, self.registry, observers=observers)
        if self._event_queue is not None:
            self._event_queue.close()
            self._event_queue.join_thread()  # the last events reach the parent before the process ends

    def _reap(self) -> None:
        self._supervise_children()
        self._workers = [w for w in self._workers if w.is_alive()]

    def _supervise_children(self) -> None:
        """``-m``: stop a session process that overran ``module_timeout_s`` (plus a margin for its own
        watchdog), and tell the client when a session process died instead of ending its session."""
        limit = self.config.module_timeout_s
        for worker, (sock, peer, started) in list(self._children.items()):
            if worker.is_alive():
                if limit and time.monotonic() - started > limit + CHILD_TIMEOUT_MARGIN_S:
                    log.error("Session process for %s overran --module-timeout; killing it", peer)
                    worker.kill()
                continue
            del self._children[worker]
            if worker.exitcode != 0:
                how = (f"was killed by signal {-worker.exitcode}" if worker.exitcode < 0
                       else f"exited with status {worker.exitcode}")
                log.error("Session process %s for %s %s", worker.name, peer, how)
                _send_error_and_close(sock, f"[server] the session process {how}; the session is ended")
                self.recover_saved()
            sock.close()

    def _wait_for_sessions(self) -> None:
        self._reap()
        if self._workers:
            log.info("Waiting up to %.0f s for %d running session(s)", self.config.shutdown_grace_s,
                     len(self._workers))
        deadline = time.monotonic() + self.config.shutdown_grace_s
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._reap()
        if not self._workers:
            return
        log.warning("Ending %d session(s) that outlived the grace period", len(self._workers))
        with self._lock:
            for sock in list(self._sockets):
                _shutdown_quietly(sock)
        for worker in self._workers:
            is_process = not isinstance(worker, threading.Thread)
            if is_process:
                worker.terminate()
            worker.join(10.0)
            if is_process and worker.is_alive():
                worker.kill()
