"""MRD client: replays an MRD HDF5 file (raw data or images) to a server and saves what comes back.

``python client.py -c simplefft -o out.h5 phantom.h5`` sends the configuration,
the XML header, the optional JSON text (``./<config>.json``, else the file's
``configAdditional``), then waveforms (``-w``), acquisitions and images, then
CLOSE, while a receiver thread stores returned images, waveforms and
acquisitions in ``/<out-group>/`` of the output file (which may be the input
file, as with upstream's client).  The input is read in bulk, read-only unless
it is also the output.  Nothing received is dropped: an image that does not fit
its series' array goes to a new ``image_<series>_<k>`` group, and any failure to
store ends in exit status 1 with the file, group and reason.

With ``--retries N`` a session that fails before any image, waveform or acquisition came back
(connection refused, reset or closed without CLOSE, or the server's busy text under
``--max-sessions``) is tried again on a new connection, up to N times, after ``--retry-wait`` seconds
(default 1), doubled for each further retry up to 10 s; one warning line names each retry and its
reason. It is never retried once results arrived (they are kept and the failure reported), nor after
a module's error text: those, and bad input, fail as without the option.

Exit status: 0 on success; 1 when the server reports an error, the connection
fails or ends without CLOSE, nothing comes back (except from the ``null`` and
``savedataonly`` built-ins), storing fails or ``--mrd2gif`` fails; 2 for bad
arguments, input or output; 130 after Ctrl-C.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import constants  # first: it lets ismrmrd load its XML schema code only when needed

import h5py

import mrdfile
from connection import (DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_TEXT_BYTES, READ_BUFFER_BYTES, MessageID, MessageReader,
                        MessageWriter, MrdError, StreamEnded, socket_sender, stream_format)

log = logging.getLogger("client")

CLIENT_DIR = Path(__file__).resolve().parent
MRD2GIF = CLIENT_DIR / "tools" / "mrd2gif.py"
CONNECT_ATTEMPTS = 5  # without --retries: connecting is tried this often, 1 s apart
RETRY_WAIT_CAP_S = 10.0  # --retries: the back-off doubles from --retry-wait up to this (or --retry-wait if longer)
BUSY_TEXT = "server busy: "  # server.py _refuse_busy: a client over --max-sessions gets this error text and CLOSE
FLUSH_BYTES = 64 << 20
FLUSH_SECONDS = 2.0
DRAIN_ONLY_CONFIGS = ("null", "savedataonly")  # built-ins that by design send nothing back
COUNT_KEYS = {MessageID.IMAGE: "images", MessageID.WAVEFORM: "waveforms", MessageID.ACQUISITION: "acquisitions"}
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclasses.dataclass
class InputData:
    """Everything to send, read from the input file."""

    group: str
    xml: str
    json_text: str | None
    acquisitions: h5py.Dataset | None  # read in blocks while sending
    waveforms: list
    images: list  # of mrdfile.ImageSeries
    count: int = 0  # items to send, kept for the summary after the file is closed

    def __post_init__(self) -> None:
        self.count = ((self.acquisitions.shape[0] if self.acquisitions is not None else 0) + len(self.waveforms)
                      + sum(len(s.heads) for s in self.images))


def pick_group(h5: h5py.File, requested: str | None) -> str:
    groups = mrdfile.iter_groups(h5)
    if requested:
        if requested not in groups:
            raise ValueError(f"group '{requested}' not in the file (groups: {', '.join(groups) or 'none'})")
        return requested
    if len(groups) != 1:
        raise ValueError(f"the file has {len(groups)} groups ({', '.join(groups)}); choose one with -g")
    return groups[0]


def read_input(h5: h5py.File, group_name: str | None, with_waveforms: bool) -> InputData:
    """Header, JSON, waveforms and images of one group, read in bulk; raw data is read while sending.

    ValueError (one line) when the group holds no MRD data or what it holds is not in the MRD layout.
    """
    name = pick_group(h5, group_name)
    group = h5[name]
    has_raw = "data" in group
    series = mrdfile.image_series_names(group)
    if not has_raw and not series:
        raise ValueError(f"group '{name}' holds neither raw data (data) nor images (image_*)")
    mrdfile.check_input_group(group, with_waveforms)
    json_text = None
    if "configAdditional" in group:
        raw = group["configAdditional"][0]
        json_text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    return InputData(
        group=name,
        xml=mrdfile.read_xml(group) or "Dummy XML header",
        json_text=json_text,
        acquisitions=group["data"] if has_raw else None,
        waveforms=mrdfile.read_waveforms(group) if with_waveforms and "waveforms" in group else [],
        images=[mrdfile.read_image_series(group, s) for s in series])


def json_config_text(config: str, file_json: str | None, strip_module_keys: bool) -> tuple[str | None, str]:
    """The JSON TEXT to send and where it came from: ``<config>.json`` from the working directory or
    beside client.py, else the input file's configAdditional."""
    candidates = (Path(f"{config}.json"), CLIENT_DIR / f"{config}.json")
    local = next((p for p in candidates if p.is_file()), None) if config not in ("", ".") else None
    if local is not None:
        text, source = local.read_text(encoding="utf-8"), str(local.resolve())
    elif file_json is not None:
        text, source = file_json, "the input file's configAdditional"
    else:
        return None, "none"
    if not strip_module_keys:
        return text, source
    try:
        parsed = json.loads(text)
    except ValueError:
        log.warning("JSON config from %s is not valid JSON; sending it unchanged", source)
        return text, source
    if isinstance(parsed, dict) and isinstance(parsed.get("parameters"), dict):
        parsed["parameters"].pop("config", None)
        parsed["parameters"].pop("customconfig", None)
    return json.dumps(parsed), source


def connect(host: str, port: int, attempts: int = CONNECT_ATTEMPTS) -> socket.socket:
    """A connected socket; ConnectionError after ``attempts`` failures 1 s apart (one attempt: no warning
    line, the reason in the exception)."""
    for attempt in range(1, attempts + 1):
        try:
            sock = socket.create_connection((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            if attempts == 1:
                raise ConnectionError(f"could not connect to {host}:{port}: {exc}") from None
            log.warning("Connecting to %s:%d failed (attempt %d of %d): %s", host, port, attempt,
                        attempts, exc)
            if attempt < attempts:
                time.sleep(1.0)
    raise ConnectionError(f"could not connect to {host}:{port}")


def is_busy_text(text: str) -> bool:
    """Whether a server text is the refusal of a client beyond ``--max-sessions`` (server.py ``_refuse_busy``)."""
    words = text.split(None, 1)
    return len(words) == 2 and words[0] == constants.MRD_LOGGING_ERROR.strip() and words[1].startswith(BUSY_TEXT)


class ReplyReader:
    """``--format v2``: the reply's first byte picks its reader. A v2 server answers with an MRD v2 stream,
    but refuses a client (``--max-sessions``, ``--allow``) before it knows the client's format, with a v1
    error text and CLOSE: those are read as v1 messages, so that the client shows the server's reason."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.reader: Any = None

    def read(self) -> tuple[int | None, Any]:
        if self.reader is None:
            if stream_format(self.stream) != "v1":  # v2, or nothing: the v2 reader says what is wrong
                from mrdv2.stream import V2Reader
                self.reader = V2Reader(self.stream, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_TEXT_BYTES)
            else:
                self.reader = MessageReader(self.stream)
        return self.reader.read()


class Receiver(threading.Thread):
    """Reads the server's messages and appends them to the output group in batches.

    It reads to the end whatever happens to storing: a failure to store is kept in
    ``store_failure`` (and later items are counted in ``lost``), never lets the thread die.
    ``finished`` is set once the last batch is stored (waited on instead of ``join``: in Python 3.11
    a ``join`` interrupted by Ctrl-C marks a running thread as stopped).
    """

    def __init__(self, reader: MessageReader, h5: h5py.File, group: str, fix_transposed: bool,
                 json_source: str = "none") -> None:
        super().__init__(name="receiver", daemon=True)
        self.json_source = json_source  # named beside a server error about the JSON configuration
        self.reader = reader
        self.h5 = h5
        self.group = group
        self.fix_transposed = fix_transposed
        self.batch = mrdfile.ItemBatch()
        self.counts = {"images": 0, "waveforms": 0, "acquisitions": 0, "texts": 0}
        self.series: dict[int, int] = {}  # image_series_index -> images received
        self.errors: list[str] = []
        self.got_close = False
        self.failure: str | None = None
        self.connection_lost = False  # the connection ended without CLOSE, or failed (not a malformed reply)
        self.store_failure: str | None = None
        self.lost = 0
        self._last_flush = time.monotonic()
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            while True:
                msg_id, item = self.reader.read()
                if msg_id is None:
                    self.failure = "the server closed the connection without CLOSE"
                    self.connection_lost = True
                    break
                if msg_id == MessageID.CLOSE:
                    self.got_close = True
                    break
                self._take(msg_id, item)
        except (MrdError, OSError, ValueError) as exc:
            self.failure = f"receiving failed: {exc}"
            self.connection_lost = isinstance(exc, (OSError, StreamEnded))
        finally:
            self.flush()
            self.finished.set()

    @property
    def returned(self) -> int:
        """Result items received (images, waveforms, acquisitions): what the output group stores."""
        return self.counts["images"] + self.counts["waveforms"] + self.counts["acquisitions"]

    def _take(self, msg_id: int, item: Any) -> None:
        if msg_id in (MessageID.CONFIG_FILE, MessageID.HEADER):  # an MRD v2 reply's preamble
            return
        if msg_id == MessageID.TEXT:
            self.counts["texts"] += 1
            if item.startswith(("ERROR", "CRITICAL", "ERR")):
                self.errors.append(item)
                sent_from = f" (the JSON configuration was {self.json_source})" if "JSON configuration" in item else ""
                log.error("Server: %s%s", item, sent_from)
            else:
                log.info("Server: %s", item)
            return
        if msg_id == MessageID.IMAGE:
            self._note_series(item)
        if not self.batch.add(item):
            log.warning("Ignoring message %d from the server", msg_id)
            return
        self.counts[COUNT_KEYS[msg_id]] += 1
        if self.batch.nbytes >= FLUSH_BYTES or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def _note_series(self, image: Any) -> None:
        """Log the first image of every series as it arrives."""
        index = image.image_series_index
        if index not in self.series:
            self.series[index] = 0
            log.info("Series %d arriving: %s images, %d channel(s) of %s (image_type %d)", index,
                     "x".join(str(n) for n in image.matrix_size), image.channels, image.data.dtype.name,
                     image.image_type)
        self.series[index] += 1

    def flush(self) -> None:
        """Append what was received so far to the output group (and flush the file)."""
        self._last_flush = time.monotonic()
        if not len(self.batch):
            return
        if self.store_failure is not None:
            self.lost += len(self.batch)
            self.batch.clear()
            return
        count = len(self.batch)
        try:
            mrdfile.check_room(self.h5.filename, self.batch.nbytes + 512 * count)
            notes = self.batch.write_to(self.h5.require_group(self.group), self.fix_transposed)
            self.h5.flush()
        except (OSError, RuntimeError, ValueError, TypeError, KeyError) as exc:
            self.store_failure = (f"storing in {self.h5.filename}:/{self.group} failed: "
                                  f"{type(exc).__name__}: {exc}")
            self.lost += count
            self.batch.clear()  # counted as lost once
            log.error("%s", self.store_failure)
            return
        for note in notes:
            log.warning("%s:/%s: %s", self.h5.filename, self.group, note)


class _NoProgress:
    """Stands in for a tqdm bar where none is shown: tqdm is imported only for a terminal (it takes
    50 ms, a tenth of a small session)."""

    n = 0

    def __enter__(self) -> "_NoProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        self.n += n


def _progress(enabled: bool, **kwargs: Any) -> Any:
    """A tqdm progress bar on stderr when ``enabled`` (a terminal and not -q)."""
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm
    return tqdm(file=sys.stderr, dynamic_ncols=True, mininterval=0.2, **kwargs)


def _logging_beside_progress(enabled: bool) -> contextlib.AbstractContextManager:
    """While bars are shown, log lines go through tqdm, which clears the bar, writes, and redraws it."""
    if not enabled:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm
    return logging_redirect_tqdm()


@dataclasses.dataclass
class Session:
    """The client's one session: what it sends and receives, and how long each part took."""

    data: InputData
    h5_out: h5py.File
    out_group: str
    fix_transposed: bool
    show_progress: bool
    json_source: str = "none"
    v2_header: Any = None  # --format v2: the mrd.Header, with the module as its 'config' parameter
    writer: MessageWriter | None = None
    receiver: Receiver | None = None
    sent: int = 0
    send_error: str | None = None
    started: float = dataclasses.field(default_factory=time.perf_counter)  # of the first attempt
    send_seconds: float = 0.0
    interrupted: bool = False

    def run(self, sock: socket.socket, config: str, config_text: str | None, json_text: str | None) -> None:
        """Send everything while the receiver thread stores the replies; wait for the server's CLOSE."""
        stream = sock.makefile("rb", buffering=READ_BUFFER_BYTES)
        if self.v2_header is not None:
            from mrdv2.stream import V2Writer  # mrd-python only for --format v2
            reader = ReplyReader(stream)
            self.writer = V2Writer(socket_sender(sock))
        else:
            reader, self.writer = MessageReader(stream), MessageWriter.for_socket(sock, text_nul=True)
        self.receiver = Receiver(reader, self.h5_out, self.out_group, self.fix_transposed, self.json_source)
        self.receiver.start()
        try:
            with _logging_beside_progress(self.show_progress):
                self._send(sock, config, config_text, json_text)
                self._wait_for_results()
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            if not self.receiver.finished.is_set():  # Ctrl-C or a failure: end the connection (the server
                try:                                 # logs the disconnect); the receiver stores what arrived
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self.receiver.finished.wait(10.0)
            stream.close()
            sock.close()

    def _send(self, sock: socket.socket, config: str, config_text: str | None, json_text: str | None) -> None:
        writer, receiver = self.writer, self.receiver
        try:
            if self.v2_header is not None:
                if config_text is not None or json_text is not None:
                    log.warning("MRD v2 has no configuration or text messages: the %s is not sent",
                                "-C file" if config_text is not None else "JSON configuration")
                writer.send_header(self.v2_header)
            else:
                if config_text is not None:
                    writer.send_config_text(config_text)
                else:
                    writer.send_config_file(config)
                writer.send_header(self.data.xml)
                if json_text is not None:
                    writer.send_text(json_text)
            start = time.perf_counter()
            with _progress(self.show_progress, total=self.data.count, desc="Sending", unit=" msg") as bar:
                for _ in mrdfile.send_messages(writer, self.data.acquisitions, self.data.waveforms, self.data.images):
                    self.sent += 1
                    bar.update()
                    if receiver.finished.is_set():
                        break
                writer.send_close()
                self.send_seconds = time.perf_counter() - start
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self.send_error = f"sending failed after {self.sent} of {self.data.count} items: {exc}"

    def _wait_for_results(self) -> None:
        """Show the images arriving (count and elapsed time) while the reconstruction runs."""
        receiver = self.receiver
        with _progress(self.show_progress and not receiver.finished.is_set(), desc="Receiving", unit=" images",
                       initial=receiver.counts["images"]) as bar:
            while not receiver.finished.wait(0.2):
                bar.update(receiver.counts["images"] - bar.n)

    def retry_reason(self) -> str | None:
        """Why this session may be tried again on a new connection, or None: only when nothing came back
        (no image, waveform or acquisition: nothing stored) and either the server said it is busy
        (``--max-sessions``) or the connection failed or ended without CLOSE with no error text before."""
        receiver = self.receiver
        if self.interrupted or receiver.returned or receiver.store_failure:
            return None
        if receiver.got_close:
            busy = [e for e in receiver.errors if is_busy_text(e)]
            return busy[0].split(None, 1)[1] if busy and len(busy) == len(receiver.errors) else None
        if receiver.connection_lost and not receiver.errors:
            return receiver.failure + (f" ({self.send_error})" if self.send_error else "")
        return None

    def stored_series(self) -> str:
        return ", ".join(f"{n} in series {s}" for s, n in sorted(self.receiver.series.items())) or "none"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Send an MRD HDF5 file to an MRD server and save the results")
    parser.add_argument("filename", help="input MRD HDF5 file (raw data or images)")
    parser.add_argument("-a", "--address", default="localhost", help="server address (default: localhost)")
    parser.add_argument("-p", "--port", type=constants.tcp_port, default=constants.DEFAULT_PORT,
                        help=f"server port (default: {constants.DEFAULT_PORT})")
    parser.add_argument("-o", "--outfile", help="output file, may be the input file (default: <input>_results.h5)")
    parser.add_argument("-g", "--in-group", help="input group (default: the file's only group)")
    parser.add_argument("-G", "--out-group", help="output group (default: current date and time)")
    parser.add_argument("-c", "--config", help="configuration (module) name sent as CONFIG_FILE "
                        "(default: invertcontrast; giving it also sets --ignore-json-config)")
    parser.add_argument("-C", "--config-local", help="send the contents of this file as CONFIG_TEXT")
    parser.add_argument("-w", "--send-waveforms", action="store_true", help="also send the waveforms")
    parser.add_argument("--fix-transposed", action="store_true",
                        help="store an image whose matrix is the transpose of its series' first image transposed "
                             "back (matrix, FOV, directions and ImageRowDir/ImageColumnDir swapped)")
    parser.add_argument("--mrd2gif", action="store_true", help="write GIF previews of the output group at the end "
                        "(tools/mrd2gif.py)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-l", "--logfile", help="also log to this file")
    parser.add_argument("-q", "--quiet", action="store_true", help="no logging on stdout and no progress bars")
    parser.add_argument("--format", choices=("v1", "v2"), default="v1",
                        help="stream format: MRD v1 messages, or MRD v2 (yardl binary; the module name goes in the "
                             "header's user parameter string 'config', and no JSON configuration is sent)")
    parser.add_argument("--ignore-json-config", action="store_true",
                        help="remove parameters.config and parameters.customconfig from the JSON text")
    parser.add_argument("--retries", type=_count, default=0, metavar="N",
                        help="try a session that failed before anything came back up to N more times on a new "
                             "connection: connection refused, reset or closed without CLOSE, or the server busy "
                             "(--max-sessions); never after results arrived, nor after a module's error "
                             "(default: 0, no retry, and connecting is tried 5 times 1 s apart; with N > 0 each "
                             "attempt connects once)")
    parser.add_argument("--retry-wait", type=_seconds, default=1.0, metavar="S",
                        help=f"seconds before the first retry, doubling for each further one up to "
                             f"{RETRY_WAIT_CAP_S:g} s (or S if longer) (default: 1)")
    return parser


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds >= 0")
    return value


def retry_wait(first: float, retry: int) -> float:
    """Seconds before retry number ``retry`` (1, 2, ...): ``first`` doubled each time, capped."""
    return min(first * 2 ** (retry - 1), max(RETRY_WAIT_CAP_S, first))


def setup_logging(args: argparse.Namespace) -> None:
    handlers: list[logging.Handler] = [] if args.quiet else [logging.StreamHandler(sys.stdout)]
    if args.logfile:
        handlers.append(logging.FileHandler(args.logfile))
    if not handlers:
        handlers.append(logging.NullHandler())
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s - %(message)s", handlers=handlers, force=True)
    for name in ("h5py", "PIL", "matplotlib"):
        logging.getLogger(name).setLevel(logging.INFO)


def default_outfile(infile: str) -> str:
    path = Path(infile)
    return str(path.with_name(path.stem + "_results" + (path.suffix or ".h5")))


def is_same_file(outfile: str, infile: str) -> bool:
    return Path(outfile).exists() and Path(infile).exists() and os.path.samefile(outfile, infile)


def open_output(outfile: str, out_group: str) -> h5py.File:
    """The output file, opened for appending before anything is sent (OSError/ValueError: exit 2)."""
    folder = Path(outfile).resolve().parent
    if not folder.is_dir():
        raise OSError(f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (Path(outfile).exists() and not os.access(outfile, os.W_OK)):
        raise OSError("not writable")
    h5 = h5py.File(outfile, "a")
    if out_group in h5 and not isinstance(h5[out_group], h5py.Group):
        h5.close()
        raise ValueError(f"/{out_group} is not a group")
    return h5


def run_mrd2gif(outfile: str, group: str) -> bool:
    """``tools/mrd2gif.py`` on the output group, as upstream's ``--mrd2gif``; True when it worked."""
    result = subprocess.run([sys.executable, str(MRD2GIF), outfile, "-g", group, "-o", str(Path(outfile).parent)],
                            capture_output=True, text=True)
    for line in (result.stdout + result.stderr).splitlines():
        log.info("mrd2gif: %s", line)
    if result.returncode != 0:
        log.error("mrd2gif on %s:/%s failed (exit status %d)", outfile, group, result.returncode)
    return result.returncode == 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    try:
        return run(args)
    except KeyboardInterrupt:
        log.error("Interrupted (Ctrl-C)")
        return EXIT_INTERRUPTED


def run(args: argparse.Namespace) -> int:
    config = args.config or "invertcontrast"
    strip_module_keys = args.ignore_json_config or args.config is not None
    outfile = args.outfile or default_outfile(args.filename)
    out_group = args.out_group or str(datetime.datetime.now())
    same_file = is_same_file(outfile, args.filename)  # as upstream: the results go into the input file
    try:
        h5_in = h5py.File(args.filename, "a" if same_file else "r")
        data = read_input(h5_in, args.in_group, args.send_waveforms)
        config_text = Path(args.config_local).read_text(encoding="utf-8") if args.config_local else None
    except (OSError, ValueError) as exc:
        log.error("Cannot read input %s: %s", args.filename, exc)
        return EXIT_BAD_INPUT
    with h5_in:
        try:
            if same_file and out_group == data.group:
                raise ValueError(f"the output group '{out_group}' is the input group; choose another with -G")
            h5_out = h5_in if same_file else open_output(outfile, out_group)
        except (OSError, ValueError) as exc:
            log.error("Cannot write output %s: %s", outfile, exc)
            return EXIT_BAD_INPUT
        with h5_out:
            if config_text is not None:
                json_text, json_source = None, "none (CONFIG_TEXT from -C)"
            else:
                json_text, json_source = json_config_text(config, data.json_text, strip_module_keys)
            log.info("Sending %d items from %s:/%s to %s:%d as '%s'; JSON config: %s", data.count, args.filename,
                     data.group, args.address, args.port, args.config_local or config, json_source)
            v2_header = None
            if args.format == "v2":
                try:
                    from mrdv2.stream import header_with_config  # what V2Writer sends: fails here, not half-way
                    v2_header = header_with_config(data.xml, config)
                except Exception as exc:  # xsdata and the converter raise several types
                    log.error("Cannot send %s:/%s as MRD v2: its XML header is not a valid ISMRMRD header, and v2 "
                              "carries the header as structured fields (%s: %s); send it as v1", args.filename,
                              data.group, type(exc).__name__, exc)
                    return EXIT_BAD_INPUT
            session = run_attempts(args, lambda started: Session(
                data, h5_out, out_group, args.fix_transposed, show_progress=not args.quiet and sys.stderr.isatty(),
                json_source=json_source, v2_header=v2_header, started=started), config, config_text, json_text)
            if session is None:
                return EXIT_FAILED
            receiver = session.receiver
            if receiver.store_failure is None:
                try:
                    mrdfile.check_room(outfile, len(data.xml.encode()) + 4096)
                    mrdfile.write_xml(h5_out.require_group(out_group), data.xml)
                except (OSError, ValueError, RuntimeError) as exc:
                    receiver.store_failure = f"storing the header in {outfile}:/{out_group} failed: {exc}"
    if session.interrupted:
        log.error("Interrupted (Ctrl-C) after %d of %d items sent; %d images received (%s) kept in %s:/%s",
                  session.sent, data.count, session.receiver.counts["images"], session.stored_series(), outfile,
                  out_group)
        return EXIT_INTERRUPTED
    return finish(args, session, config, outfile, out_group)


def run_attempts(args: argparse.Namespace, new_session: Any, config: str, config_text: str | None,
                 json_text: str | None) -> Session | None:
    """The session, tried up to 1 + ``--retries`` times (``Session.retry_reason``), each on a new
    connection after a back-off; the last attempt's session, or None when connecting failed every time."""
    attempts = args.retries + 1
    started = time.perf_counter()
    for attempt in range(1, attempts + 1):
        try:
            sock = connect(args.address, args.port, CONNECT_ATTEMPTS if args.retries == 0 else 1)
        except ConnectionError as exc:
            if attempt == attempts:
                log.error("%s%s", exc, f" ({attempts} attempts)" if attempts > 1 else "")
                return None
            reason = str(exc)
        else:
            session = new_session(started)
            session.run(sock, config, config_text, json_text)
            reason = session.retry_reason() if attempt < attempts else None
            if reason is None:
                if attempt < attempts and session.receiver.connection_lost and session.receiver.returned:
                    log.warning("Not retried: %d result item(s) had arrived (a new attempt would duplicate them)",
                                session.receiver.returned)
                return session
        wait = retry_wait(args.retry_wait, attempt)
        log.warning("Attempt %d of %d in %.1f s: %s", attempt + 1, attempts, wait, reason)
        time.sleep(wait)
    raise AssertionError("unreachable")


def finish(args: argparse.Namespace, session: Session, config: str, outfile: str, out_group: str) -> int:
    """The summary, the checks that decide the exit status, and ``--mrd2gif``."""
    receiver, data = session.receiver, session.data
    total = time.perf_counter() - session.started
    mb = session.writer.bytes_written / 1e6
    counts = receiver.counts
    log.info("Sent %d of %d items (%.1f MB) in %.2f s (%.1f MB/s); received %d images (%s), %d waveforms, "
             "%d acquisitions, %d texts; %.2f s in all; output %s:/%s", session.sent, data.count, mb,
             session.send_seconds, mb / max(session.send_seconds, 1e-9), counts["images"], session.stored_series(),
             counts["waveforms"], counts["acquisitions"], counts["texts"], total, outfile, out_group)
    failures = [f for f in (session.send_error if not receiver.got_close else None, receiver.failure) if f]
    if receiver.got_close and session.sent < data.count:
        log.warning("The server closed the session after %d of %d items", session.sent, data.count)
    returned = receiver.returned
    if not returned and config not in DRAIN_ONLY_CONFIGS and not failures:
        failures.append(f"nothing came back from '{args.config_local or config}'")
    if receiver.store_failure:
        failures.append(f"{receiver.store_failure}; {receiver.lost} received item(s) not stored")
    for failure in failures:
        log.error("%s", failure)
    if receiver.errors:
        log.error("The server reported %d error(s)", len(receiver.errors))
    if args.mrd2gif and counts["images"] and not receiver.store_failure and not run_mrd2gif(outfile, out_group):
        failures.append("mrd2gif failed")
    return EXIT_FAILED if failures or receiver.errors else EXIT_OK


def exit_now(status: int) -> None:
    """Exit with ``status`` once the logs and standard streams are flushed, skipping the interpreter's
    teardown (40 ms here, freeing numpy, h5py and ismrmrd objects one by one).  Only when no HDF5
    file is open (HDF5 flushes open files at the C library's exit, which ``os._exit`` skips), and
    not under a profiler or tracer (cProfile, coverage), which write their results at exit."""
    files_open = h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)
    if files_open or sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(status)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


if __name__ == "__main__":
    exit_now(main())
