"""Header QA for sites whose scanner exports DICOM: watch folders, check every new series.

Usage: ``python tools/qa_watch.py DIR [DIR...] [--http-port PORT] [--http-host HOST]
[--http-token TOKEN] [--qa-rules FILE] [--qa-db FILE] [--qa-min-count N] [--settle S] [-v]``

Every folder is watched recursively with watchdog (inotify on Linux), so subfolders created later
are watched too. Only files that arrive after the start are read (nothing already there), and only
names that look like DICOM exports: ``*.dcm``, ``*.ima`` (any case) and ``MR.*``; hidden names
(a leading ``.``, the temporary names of rsync and of most copy tools) are skipped.

When a file is complete: a file closed after writing (inotify's CLOSE_WRITE, watchdog's
``FileClosedEvent``) or renamed into place (``FileMovedEvent``) is read at once. Without such an
event (a file moved in from outside the watched folders, one in a new subfolder that was written
before its watch existed, platforms without close events) a file is read once it has been quiet
(no created or modified event) for ``FILE_QUIET_S`` (1 s), so that a file still being written is
not read half-way. A file is read again only when its inode, size or modification time changed, and
counts once in its series: one read too early (its writer paused for longer) is read again at its
close, and only a header cut short costs a warning.

Each series (SeriesInstanceUID) is one session of the dashboard. The first file of a new series is
read with pydicom (``stop_before_pixels``); ``qa.params_from_dicom`` gives its parameters (standard
tags, the Siemens CSA series header where they say nothing), ``qa.station_of`` its station (the
sender's AE title when the file names no station), and a ``qa.QAChecker`` checks and records it, with
the server's rules file format and history (qa/README.md). The result is logged (a FAIL as a
warning) and published as events: ``session_started``, ``session_header`` (module ``qa_watch``, the
protocol, a summary line, and the patient fields, which the board drops unless it is told to show
them), ``session_qa`` and ``session_thumbnail`` (the first file's pixels, read a second time; else
those of one of the next two files). Every file counts as an image received (``session_progress`` at
most every 0.5 s), and ``session_ended`` follows once the series has been quiet for ``--settle``
seconds (default 5). A file of a series that had ended reopens it under the same session: its counts
grow and it ends again (it is not checked or recorded a second time). Events never carry file paths.

The history lives in ``--qa-db`` (default ``qa_watch.sqlite`` in the working directory): a database
of its own, not the server's, because a DICOM image describes a scan a little differently from the
MRD header of the same scan (qa/README.md §1). With ``--http-port`` the dashboard (``web/``) serves
the sessions; its "Accept as reference" (``POST /api/qa/<session>/accept``, needs ``--http-token``)
pins that series' parameters as the reference of its protocol on its station.

A file that is not DICOM, cannot be read or names no SeriesInstanceUID costs one warning; a QA that
fails (its database) costs one warning and the series still shows. SIGTERM or Ctrl-C stops the
watch, ends the open series and the web server, and exits 0. Exit status 2 for a folder that does not
exist or a bad rules file or database, 1 when the watch or the dashboard cannot start.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import logging
import os
import queue
import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from watchdog.events import FileSystemEvent, FileSystemEventHandler  # noqa: E402
from watchdog.observers import Observer  # noqa: E402

import constants  # noqa: E402
import qa  # noqa: E402
from mrdhelper import ConfigError  # noqa: E402

log = logging.getLogger("qa_watch")

MODULE = "qa_watch"
SUFFIXES = (".dcm", ".ima")
PREFIX = "mr."
FILE_QUIET_S = 1.0  # a file without a close or rename event is read after this long without events
PROGRESS_INTERVAL_S = 0.5
TICK_S = 0.1
THUMBNAIL_PIXELS = 160
THUMBNAIL_TRIES = 3  # files of a series whose pixels are read until one gives a thumbnail
REMEMBERED_FILES = 100_000  # files read (their inode, size, mtime and series), so a repeated event reads nothing
REMEMBERED_SERIES = 10_000  # ended series a late file can still reopen
QUIET_LOGGERS = ("watchdog", "asyncio", "PIL", "aiohttp")

Events = Callable[[dict], None]


def dicom_name(path: str) -> bool:
    """Whether a file name is one the watch reads: ``*.dcm``, ``*.ima`` or ``MR.*`` (any case), not hidden."""
    name = os.path.basename(path)
    folded = name.casefold()
    return not name.startswith(".") and (folded.endswith(SUFFIXES) or folded.startswith(PREFIX))


class _Handler(FileSystemEventHandler):
    """In the observer's thread: hands ``(path, complete)`` to the watch's queue, nothing more."""

    def __init__(self, inbox: queue.Queue) -> None:
        self.inbox = inbox

    def _put(self, path: Any, complete: bool) -> None:
        path = os.fsdecode(path)
        if dicom_name(path):
            self.inbox.put((path, complete))

    def on_closed(self, event: FileSystemEvent) -> None:
        self._put(event.src_path, True)

    def on_moved(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._put(event.dest_path, True)

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._put(event.src_path, False)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._put(event.src_path, False)


@dataclasses.dataclass
class Series:
    """One series as a dashboard session: its files so far and when they came (monotonic seconds)."""

    sid: str
    uid: str
    first: float
    last: float
    files: int = 0
    bytes_in: int = 0
    reported: float = float("-inf")  # when the last progress event went out
    dirty: bool = False  # files counted since then
    ended: bool = False
    thumbnail_tries: int = 0
    thumbnailed: bool = False

    def counts(self) -> dict[str, Any]:
        return {"acquisitions": 0, "images_in": self.files, "images_out": 0, "bytes_in": self.bytes_in,
                "bytes_out": 0, "elapsed": self.last - self.first}


def _text(value: Any) -> Optional[str]:
    text = "" if value is None else str(value).strip()
    return text or None


def patient_of(ds: pydicom.Dataset) -> dict[str, Optional[str]]:
    """Patient name, ID and birth date, for the board only (it drops them unless told to show them)."""
    return {"name": _text(ds.get("PatientName")), "id": _text(ds.get("PatientID")),
            "birth_date": _text(ds.get("PatientBirthDate"))}


def summary(ds: pydicom.Dataset, params: qa.ScanParams) -> str:
    """One line about the series: vendor, model, field strength, protocol, series, sequence, TR, TE,
    flip angle, recon matrix and FOV (the parts the file gives)."""
    field = ds.get("MagneticFieldStrength")
    parts = [_text(ds.get("Manufacturer")) or "vendor ?", _text(ds.get("ManufacturerModelName")) or "model ?",
             f"{float(field):g} T" if _text(field) else "field ?", f"protocol '{params.protocol or '?'}'"]
    if _text(ds.get("SeriesNumber")):
        parts.append(f"series {ds.SeriesNumber}")
    if params.sequence:
        parts.append(params.sequence)
    if params.tr_ms is not None:
        parts.append(f"TR {params.tr_ms:g} ms")
    if params.te_ms:
        parts.append("TE " + "/".join(f"{te:g}" for te in params.te_ms) + " ms")
    if params.flip_deg is not None:
        parts.append(f"flip {params.flip_deg:g}°")
    if params.matrix_recon is not None and None not in params.matrix_recon[:2]:
        parts.append("matrix {}x{}".format(*params.matrix_recon[:2]))
    if params.fov_mm is not None and None not in params.fov_mm[:2]:
        parts.append("FOV {:g}x{:g} mm".format(*params.fov_mm[:2]))
    return ", ".join(parts)


def thumbnail_png(ds: pydicom.Dataset, size: int = THUMBNAIL_PIXELS) -> bytes:
    """A small PNG of the image (the middle frame of a multi-frame file), windowed 1st to 99th
    percentile, greyscale (inverted for MONOCHROME1) or RGB."""
    from PIL import Image  # only for thumbnails

    pixels = np.asarray(ds.pixel_array, dtype=np.float64)
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        pixels = pixels[frames // 2]
    lo, hi = np.percentile(pixels, (1, 99)) if pixels.size else (0.0, 1.0)
    scaled = np.clip((pixels - lo) * (255.0 / max(float(hi - lo), 1e-12)), 0, 255).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        scaled = 255 - scaled
    picture = Image.fromarray(scaled)
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


class Watcher:
    """The series seen so far, fed with complete-or-not file paths; ``step`` reads the files that are
    due, reports progress and ends quiet series. All but :meth:`accept` run in one thread."""

    def __init__(self, checker: qa.QAChecker, events: Events, settle_s: float,
                 file_quiet_s: float = FILE_QUIET_S) -> None:
        self.checker = checker
        self.events = events
        self.settle_s = settle_s
        self.file_quiet_s = file_quiet_s
        self._pending: dict[str, float] = {}  # path -> when to read it
        # path -> ((inode, size, mtime), its series' UID or None when it was not DICOM)
        self._read: collections.OrderedDict[str, tuple[tuple[int, int, int], Optional[str]]] = \
            collections.OrderedDict()
        self._series: collections.OrderedDict[str, Series] = collections.OrderedDict()  # UID -> open or ended
        self._open: dict[str, Series] = {}  # UID -> the open ones

    @property
    def open_series(self) -> int:
        """The series now open (the web server's health check reads it from its thread)."""
        return len(self._open)

    # -- files -----------------------------------------------------------------------------------
    def note(self, path: str, complete: bool, now: float) -> None:
        """A file event: ``complete`` (closed after writing, renamed into place) reads it at the next
        step; otherwise it is read once no event has come for ``file_quiet_s``."""
        self._pending[path] = now if complete else max(now + self.file_quiet_s, self._pending.get(path, now))

    def step(self, now: float) -> None:
        """Read the files that are due, then send progress and the ends of quiet series."""
        for path in [p for p, due in self._pending.items() if due <= now]:
            del self._pending[path]
            try:
                self._file(path, now)
            except Exception:  # odd values in a file from outside: a warning, never the end of the watch
                log.warning("%s: skipped after an error", path, exc_info=True)
        for series in list(self._open.values()):
            if series.dirty and now - series.reported >= PROGRESS_INTERVAL_S:
                self._progress(series, now)
            if now - series.last >= self.settle_s:
                self._end(series)

    def finish(self) -> None:
        """At the stop: every open series ends now."""
        for series in list(self._open.values()):
            self._end(series)

    def _file(self, path: str, now: float) -> None:
        try:
            stat = os.stat(path)
        except OSError as exc:  # gone again (a temporary file), or not readable
            log.debug("%s: %s", path, exc)
            return
        key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        previous = self._read.get(path)
        if previous is not None and previous[0] == key:
            return
        self._read[path] = (key, None)
        self._read.move_to_end(path)
        while len(self._read) > REMEMBERED_FILES:
            self._read.popitem(last=False)
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            uid = _text(ds.get("SeriesInstanceUID"))
        except Exception as exc:  # a file from outside: whatever the parser raises costs one warning
            log.warning("%s: not a DICOM file that can be read (%s: %s); skipped", path, type(exc).__name__, exc)
            return
        if uid is None:
            log.warning("%s: DICOM without a SeriesInstanceUID; skipped", path)
            return
        self._read[path] = (key, uid)
        # the same file of the series once more (written again, or read before its writer had finished)
        again = previous is not None and previous[1] == uid
        series = self._series.get(uid)
        if series is None:
            series = self._start(uid, path, ds, now)
        elif series.ended:
            series.ended = False
            self._open[uid] = series
            log.info("%s - Series %s: more files after its end", series.sid, uid)
        series.files += 0 if again else 1
        series.bytes_in += stat.st_size - (previous[0][1] if again else 0)
        series.last = now
        series.dirty = True
        if not series.thumbnailed and series.thumbnail_tries < THUMBNAIL_TRIES:
            self._thumbnail(series, path)

    # -- series ----------------------------------------------------------------------------------
    def _start(self, uid: str, path: str, ds: pydicom.Dataset, now: float) -> Series:
        """A new series: the header and QA events from its first file."""
        series = Series(sid=secrets.token_hex(3), uid=uid, first=now, last=now)
        self._series[uid] = self._open[uid] = series
        self._forget_ended()
        sender = _text(ds.file_meta.get("SourceApplicationEntityTitle"))
        try:
            params = qa.params_from_dicom(ds)
        except Exception as exc:  # odd values in a file from outside: the series shows, without QA
            log.warning("%s - %s: no QA parameters (%s: %s)", series.sid, path, type(exc).__name__, exc)
            params = None
        protocol = (params.protocol if params is not None else None) or _text(ds.get("SeriesDescription"))
        station = qa.station_of(params if params is not None else qa.ScanParams(), sender)
        log.info("%s - Series %s: protocol '%s' on %s, first file %s", series.sid, uid, protocol or "?", station, path)
        self._emit(series, "session_started", peer=sender or "DICOM")
        self._emit(series, "session_header", station=station, protocol=protocol, module=MODULE, config="DICOM",
                   summary=summary(ds, params or qa.ScanParams()), patient=patient_of(ds))
        if params is not None:
            self._check(series, dataclasses.replace(params, station=station))
        return series

    def _thumbnail(self, series: Series, path: str) -> None:
        """The file's pixels (read a second time) as the series' thumbnail."""
        series.thumbnail_tries += 1
        try:
            png = thumbnail_png(pydicom.dcmread(path))
        except Exception as exc:  # compressed without a decoder, no pixels, not all written yet
            log.debug("%s - No thumbnail of %s: %s: %s", series.sid, path, type(exc).__name__, exc)
            return
        series.thumbnailed = True
        self._emit(series, "session_thumbnail", png=png)

    def _check(self, series: Series, params: qa.ScanParams) -> None:
        try:
            result = self.checker.check(params)
            self.checker.record(series.sid, params, result)
        except Exception as exc:  # the site's rules and database must not stop the watch
            log.warning("%s - Header QA skipped: %s: %s", series.sid, type(exc).__name__, exc)
            return
        log.log(logging.WARNING if result.status == "FAIL" else logging.INFO, "%s - %s", series.sid, result.text())
        self._emit(series, "session_qa", qa=result.to_dict())

    def _progress(self, series: Series, now: float) -> None:
        series.reported, series.dirty = now, False
        self._emit(series, "session_progress", state="receiving", **series.counts())

    def _end(self, series: Series) -> None:
        series.ended, series.dirty = True, False
        del self._open[series.uid]
        log.info("%s - Series %s ended: %d file%s, %.1f MB in %.1f s", series.sid, series.uid, series.files,
                 "" if series.files == 1 else "s", series.bytes_in / 1e6, series.last - series.first)
        self._emit(series, "session_ended", state="done", module=MODULE, **series.counts())

    def _forget_ended(self) -> None:
        """Keep the latest ``REMEMBERED_SERIES`` ended series (the oldest first out)."""
        while len(self._series) - len(self._open) > REMEMBERED_SERIES:
            uid = next(uid for uid, s in self._series.items() if s.ended)
            del self._series[uid]

    def _emit(self, series: Series, kind: str, **fields: Any) -> None:
        self.events({"type": kind, "id": series.sid, "time": time.time(), **fields})

    # -- the dashboard ---------------------------------------------------------------------------
    def accept(self, sid: str) -> Optional[dict]:
        """``POST /api/qa/<sid>/accept`` (the web server's thread): the series' parameters become its
        protocol's reference; the new result as an event and as the answer (None: not recorded)."""
        result = self.checker.accept(sid)
        if result is None:
            return None
        log.info("%s - Accepted as the QA reference of %s on %s", sid, result.protocol, result.station)
        update = result.to_dict()
        self.events({"type": "session_qa", "id": sid, "time": time.time(), "qa": update})
        return update

    def run(self, inbox: queue.Queue, stop: threading.Event) -> None:
        """Take file events from ``inbox`` and step until ``stop`` is set."""
        while not stop.is_set():
            try:
                item = inbox.get(timeout=TICK_S)
                while True:
                    self.note(*item, time.monotonic())
                    item = inbox.get_nowait()
            except queue.Empty:
                pass
            self.step(time.monotonic())


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Header QA of DICOM series arriving in folders "
                                                 "(the server's QA rules and history, and its dashboard)")
    parser.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="folders to watch (recursively)")
    parser.add_argument("--http-port", type=constants.tcp_port, metavar="PORT",
                        help="serve the dashboard on this port (0: any free port; default: no dashboard)")
    parser.add_argument("--http-host", default="0.0.0.0", metavar="HOST",
                        help="address of the dashboard (default: %(default)s)")
    parser.add_argument("--http-token", metavar="TOKEN",
                        help="required by every request but /healthz and /metrics; enables 'Accept as reference'")
    parser.add_argument("--qa-rules", type=Path, metavar="FILE", help="TOML file of explicit rules per protocol")
    parser.add_argument("--qa-db", type=Path, default=Path("qa_watch.sqlite"), metavar="FILE",
                        help="SQLite history the references are learned from (default: %(default)s)")
    parser.add_argument("--qa-min-count", type=int, default=3, metavar="N",
                        help="sessions of one parameter set before it is the reference (default: %(default)s)")
    parser.add_argument("--settle", type=float, default=5.0, metavar="S",
                        help="a series ends after S seconds without a new file (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if not args.settle > 0:
        parser.error(f"--settle must be more than 0 seconds, got {args.settle:g}")
    return args


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s - %(levelname)s - %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    missing = [str(folder) for folder in args.folders if not folder.is_dir()]
    if missing:
        log.error("Not a folder: %s", ", ".join(missing))
        return 2
    try:
        checker = qa.QAChecker(args.qa_rules, args.qa_db, min_count=args.qa_min_count)
    except (ConfigError, OSError) as exc:
        log.error("Header QA: %s", exc)
        return 2
    log.info("Header QA: rules %s, history %s (a reference after %d series)", args.qa_rules or "none",
             args.qa_db, args.qa_min_count)

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("Received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    board = None
    if args.http_port is not None:
        from web import Board  # aiohttp and prometheus_client only with the dashboard
        board = Board(show_patient=False)
    watcher = Watcher(checker, board.emit if board is not None else (lambda _event: None), args.settle)
    inbox: queue.Queue = queue.Queue()
    observer = Observer()
    try:
        for folder in args.folders:
            observer.schedule(_Handler(inbox), str(folder), recursive=True)
        observer.start()
    except OSError as exc:  # e.g. the inotify watch limit (fs.inotify.max_user_watches)
        log.error("Cannot watch %s: %s", ", ".join(map(str, args.folders)), exc)
        return 1
    dashboard = None
    try:
        if board is not None:  # after the observer: a dashboard that answers means the folders are watched
            from web import WebServer
            server = WebServer(board, args.http_host, args.http_port, token=args.http_token,
                               health=lambda: (True, {"sessions": watcher.open_series}), qa_accept=watcher.accept)
            try:
                host, port = server.start()
            except OSError as exc:
                log.error("Cannot serve the dashboard on %s:%s: %s", args.http_host, args.http_port, exc)
                return 1
            dashboard = server
            log.info("Dashboard on http://%s:%d/ (%s)", host, port, "token required" if args.http_token else "no token")
        log.info("Watching %s for *.dcm, *.ima and MR.* files (pid %d)", ", ".join(map(str, args.folders)), os.getpid())
        watcher.run(inbox, stop)
    finally:
        observer.stop()
        observer.join()
        watcher.finish()
        if dashboard is not None:
            dashboard.stop()
    log.info("Stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
