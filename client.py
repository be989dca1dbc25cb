"""MRD client: replays an MRD HDF5 file (raw data or images) to a server and saves what comes back.

``python client.py -c simplefft -o out.h5 phantom.h5`` sends the configuration,
the XML header, the optional JSON text (``./<config>.json``, else the file's
``configAdditional``), then waveforms (``-w``), acquisitions and images, then
CLOSE, while a receiver thread stores returned images, waveforms and
acquisitions in ``/<out-group>/`` of the output file.  The input is read in
bulk, read-only.  Exit status: 0 on success, 1 when the server reports an
error, the connection fails or ends without CLOSE, or nothing comes back (except from the
``null`` and ``savedataonly`` built-ins); 2 for bad arguments or input.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import h5py

import constants
import mrdfile
from connection import READ_BUFFER_BYTES, MessageID, MessageReader, MessageWriter, MrdError

log = logging.getLogger("client")

CLIENT_DIR = Path(__file__).resolve().parent
CONNECT_ATTEMPTS = 5
FLUSH_BYTES = 64 << 20
FLUSH_SECONDS = 2.0
DRAIN_ONLY_CONFIGS = ("null", "savedataonly")  # built-ins that by design send nothing back
COUNT_KEYS = {MessageID.IMAGE: "images", MessageID.WAVEFORM: "waveforms", MessageID.ACQUISITION: "acquisitions"}


@dataclasses.dataclass
class InputData:
    """Everything to send, read from the input file."""

    group: str
    xml: str
    json_text: str | None
    acquisitions: h5py.Dataset | None  # read in blocks while sending
    waveforms: list
    images: list  # of mrdfile.ImageSeries

    @property
    def count(self) -> int:
        return ((self.acquisitions.shape[0] if self.acquisitions is not None else 0) + len(self.waveforms)
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
    """Header, JSON, waveforms and images of one group, read in bulk; raw data is read while sending."""
    name = pick_group(h5, group_name)
    group = h5[name]
    has_raw = "data" in group
    series = mrdfile.image_series_names(group)
    if not has_raw and not series:
        raise ValueError(f"group '{name}' holds neither raw data (data) nor images (image_*)")
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


def json_config_text(config: str, file_json: str | None, strip_module_keys: bool) -> str | None:
    """The JSON TEXT to send: ``<config>.json`` from the working directory or beside client.py,
    else the input file's configAdditional."""
    candidates = (Path(f"{config}.json"), CLIENT_DIR / f"{config}.json")
    local = next((p for p in candidates if p.is_file()), None) if config not in ("", ".") else None
    text = local.read_text(encoding="utf-8") if local is not None else file_json
    if text is None or not strip_module_keys:
        return text
    try:
        parsed = json.loads(text)
    except ValueError:
        log.warning("JSON config is not valid JSON; sending it unchanged")
        return text
    if isinstance(parsed, dict) and isinstance(parsed.get("parameters"), dict):
        parsed["parameters"].pop("config", None)
        parsed["parameters"].pop("customconfig", None)
    return json.dumps(parsed)


def connect(host: str, port: int) -> socket.socket:
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            sock = socket.create_connection((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            log.warning("Connecting to %s:%d failed (attempt %d of %d): %s", host, port, attempt,
                        CONNECT_ATTEMPTS, exc)
            if attempt < CONNECT_ATTEMPTS:
                time.sleep(1.0)
    raise ConnectionError(f"could not connect to {host}:{port}")


class Receiver(threading.Thread):
    """Reads the server's messages and appends them to the output group in batches."""

    def __init__(self, reader: MessageReader, outfile: str, group: str) -> None:
        super().__init__(name="receiver", daemon=True)
        self.reader = reader
        self.outfile = outfile
        self.group = group
        self.batch = mrdfile.ItemBatch()
        self.counts = {"images": 0, "waveforms": 0, "acquisitions": 0, "texts": 0}
        self.errors: list[str] = []
        self.got_close = False
        self.failure: str | None = None
        self._last_flush = time.monotonic()

    def run(self) -> None:
        try:
            while True:
                msg_id, item = self.reader.read()
                if msg_id is None:
                    self.failure = "the server closed the connection without CLOSE"
                    break
                if msg_id == MessageID.CLOSE:
                    self.got_close = True
                    break
                self._take(msg_id, item)
        except (MrdError, OSError) as exc:
            self.failure = f"receiving failed: {exc}"
        finally:
            self.flush()

    def _take(self, msg_id: int, item: Any) -> None:
        if msg_id == MessageID.TEXT:
            self.counts["texts"] += 1
            if item.startswith(("ERROR", "CRITICAL", "ERR")):
                self.errors.append(item)
                log.error("Server: %s", item)
            else:
                log.info("Server: %s", item)
            return
        if not self.batch.add(item):
            log.warning("Ignoring message %d from the server", msg_id)
            return
        self.counts[COUNT_KEYS[msg_id]] += 1
        if self.batch.nbytes >= FLUSH_BYTES or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Append what was received so far to the output file."""
        self._last_flush = time.monotonic()
        if not len(self.batch):
            return
        with h5py.File(self.outfile, "a") as h5:
            self.batch.write_to(h5.require_group(self.group))


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total_items: int, enabled: bool) -> None:
        self.total = max(total_items, 1)
        self.enabled = enabled
        self.start = time.perf_counter()
        self._next = 0.0

    def update(self, done: int, nbytes: int) -> None:
        now = time.perf_counter()
        if not self.enabled or (now < self._next and done < self.total):
            return
        self._next = now + 0.2
        frac = done / self.total
        rate = nbytes / max(now - self.start, 1e-9) / 1e6
        bar = "#" * int(30 * frac)
        sys.stderr.write(f"\r[{bar:<30}] {100 * frac:5.1f}% {done}/{self.total} {rate:8.1f} MB/s")
        if done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def send_all(writer: MessageWriter, data: InputData, receiver: Receiver, progress: Progress) -> int:
    """Send waveforms, acquisitions and images; returns the number of items sent."""
    sent = 0
    for _ in mrdfile.send_messages(writer, data.acquisitions, data.waveforms, data.images):
        sent += 1
        progress.update(sent, writer.bytes_written)
        if not receiver.is_alive():
            break
    return sent


def run_session(sock: socket.socket, data: InputData, config: str, config_text: str | None,
                json_text: str | None, outfile: str, out_group: str,
                quiet: bool) -> tuple[MessageWriter, Receiver, int, str | None, float]:
    """Send everything while the receiver thread stores the replies; returns what happened."""
    start = time.perf_counter()
    writer = MessageWriter.for_socket(sock, text_nul=True)
    stream = sock.makefile("rb", buffering=READ_BUFFER_BYTES)
    receiver = Receiver(MessageReader(stream), outfile, out_group)
    receiver.start()
    progress = Progress(data.count, enabled=sys.stderr.isatty() and not quiet)
    sent, send_error = 0, None
    try:
        if config_text is not None:
            writer.send_config_text(config_text)
        else:
            writer.send_config_file(config)
        writer.send_header(data.xml)
        if json_text is not None:
            writer.send_text(json_text)
        sent = send_all(writer, data, receiver, progress)
        writer.send_close()
        sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        send_error = f"sending failed after {sent} of {data.count} items: {exc}"
    receiver.join()
    stream.close()
    sock.close()
    return writer, receiver, sent, send_error, time.perf_counter() - start


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Send an MRD HDF5 file to an MRD server and save the results")
    parser.add_argument("filename", help="input MRD HDF5 file (raw data or images)")
    parser.add_argument("-a", "--address", default="localhost", help="server address")
    parser.add_argument("-p", "--port", type=int, default=constants.DEFAULT_PORT, help="server port")
    parser.add_argument("-o", "--outfile", help="output file (default: <input>_results.h5)")
    parser.add_argument("-g", "--in-group", help="input group (default: the file's only group)")
    parser.add_argument("-G", "--out-group", help="output group (default: current date and time)")
    parser.add_argument("-c", "--config", help="configuration (module) name sent as CONFIG_FILE "
                        "(default invertcontrast; giving it also sets --ignore-json-config)")
    parser.add_argument("-C", "--config-local", help="send the contents of this file as CONFIG_TEXT")
    parser.add_argument("-w", "--send-waveforms", action="store_true", help="also send the waveforms")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-l", "--logfile", help="also log to this file")
    parser.add_argument("-q", "--quiet", action="store_true", help="no logging on stdout")
    parser.add_argument("--ignore-json-config", action="store_true",
                        help="remove parameters.config and parameters.customconfig from the JSON text")
    return parser


def setup_logging(args: argparse.Namespace) -> None:
    handlers: list[logging.Handler] = [] if args.quiet else [logging.StreamHandler(sys.stdout)]
    if args.logfile:
        handlers.append(logging.FileHandler(args.logfile))
    if not handlers:
        handlers.append(logging.NullHandler())
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s - %(message)s", handlers=handlers, force=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    config = args.config or "invertcontrast"
    strip_module_keys = args.ignore_json_config or args.config is not None
    outfile = args.outfile or str(Path(args.filename).with_name(
        Path(args.filename).stem + "_results" + (Path(args.filename).suffix or ".h5")))
    out_group = args.out_group or str(datetime.datetime.now())
    try:
        h5 = h5py.File(args.filename, "r")
        data = read_input(h5, args.in_group, args.send_waveforms)
        config_text = Path(args.config_local).read_text(encoding="utf-8") if args.config_local else None
    except (OSError, ValueError) as exc:
        log.error("Cannot read input: %s", exc)
        return 2
    with h5:
        json_text = None if config_text is not None else json_config_text(config, data.json_text, strip_module_keys)
        log.info("Sending %d items from %s:/%s", data.count, args.filename, data.group)
        try:
            sock = connect(args.address, args.port)
        except ConnectionError as exc:
            log.error("%s", exc)
            return 1
        writer, receiver, sent, send_error, elapsed = run_session(sock, data, config, config_text, json_text,
                                                                  outfile, out_group, args.quiet)

    with h5py.File(outfile, "a") as h5:
        mrdfile.write_xml(h5.require_group(out_group), data.xml)
    mb = writer.bytes_written / 1e6
    counts = receiver.counts
    log.info("Sent %d of %d items (%.1f MB) in %.2f s (%.1f MB/s); received %d images, %d waveforms, "
             "%d acquisitions, %d texts; output %s:/%s", sent, data.count, mb, elapsed, mb / max(elapsed, 1e-9),
             counts["images"], counts["waveforms"], counts["acquisitions"], counts["texts"], outfile, out_group)
    failures = [f for f in (send_error if not receiver.got_close else None, receiver.failure) if f]
    if receiver.got_close and sent < data.count:
        log.warning("The server closed the session after %d of %d items", sent, data.count)
    returned = counts["images"] + counts["waveforms"] + counts["acquisitions"]
    if not returned and config not in DRAIN_ONLY_CONFIGS and not failures:
        failures.append(f"nothing came back from '{config if config_text is None else args.config_local}'")
    for failure in failures:
        log.error("%s", failure)
    if receiver.errors:
        log.error("The server reported %d error(s)", len(receiver.errors))
    return 1 if failures or receiver.errors else 0


if __name__ == "__main__":
    sys.exit(main())
