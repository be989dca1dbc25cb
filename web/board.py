"""The dashboard's state: what every session did so far, built from the server's session events.

:class:`Board` takes event dicts from any thread (``emit``: O(1), never waits on a browser, never
raises), keeps the running sessions and the last ``history`` finished ones, their latest thumbnail
PNGs and the Prometheus metrics, and hands each change to its listeners (the web server) as a page
message.  Patient name, ID and birth date are dropped unless ``show_patient``; the values the header
named are also blanked out of every text the board keeps, so that an error text or a protocol name
that echoes them does not show them either.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import re
import threading
import time
from typing import Any, Callable

from web.metrics import Metrics

log = logging.getLogger(__name__)

STATES_RUNNING = ("receiving", "reconstructing")
STATES_ENDED = ("done", "error")
TEXT_LEVELS = ("ERROR", "WARNING", "INFO")
MAX_ID_CHARS = 64
MAX_NAME_CHARS = 200  # station, protocol, module, config, peer
MAX_SUMMARY_CHARS = 2000
MAX_TEXT_CHARS = 1000  # one session_text
MAX_TEXTS = 20  # the latest texts of a session
MAX_DEVIATIONS = 100
MAX_THUMBNAIL_BYTES = 4 << 20
# A new thumbnail version (which every browser then fetches) at most this often per session; the newest
# PNG is always the one served, and one held back is announced by the next progress event or the end.
THUMBNAIL_MIN_S = 1.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REDACTED = "[patient]"
MIN_SECRET_CHARS = 3  # shorter patient values (and name parts) are not searched for in texts
_ID = re.compile(r"[A-Za-z0-9_-]+")

Listener = Callable[[dict], None]


class BadEvent(ValueError):
    """An event the board cannot use (logged and dropped by :meth:`Board.emit`)."""


def _text(value: Any, limit: int) -> str:
    return "" if value is None else str(value)[:limit]


def _count(value: Any, previous: int) -> int:
    """A non-negative count from an event, else the previous value."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    return previous


def _seconds(value: Any, fallback: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return fallback


def _peer_host(peer: str) -> str:
    """``127.0.0.1:52622`` -> ``127.0.0.1``; ``[::1]:5000`` -> ``::1``."""
    host = peer.rsplit(":", 1)[0] if peer.count(":") == 1 or peer.startswith("[") else peer
    return host.strip("[]") or peer


def deviation_text(name: str, expected: str | None, actual: str | None) -> str:
    """The page's words for one QA deviation: "TR should be 5.2 ms but is 6.0 ms"."""
    if expected is None:
        return f"{name} is {actual}, which the reference does not have"
    if actual is None:
        return f"{name} should be {expected} but is missing"
    return f"{name} should be {expected} but is {actual}"


@dataclasses.dataclass
class _Session:
    """One session as the board keeps it; ``public()`` is what the page and the API see."""

    id: str
    order: int
    started: float
    peer: str = ""
    station: str = ""
    protocol: str = ""
    module: str = ""
    config: str = ""
    summary: str = ""
    patient: dict | None = None
    state: str = "receiving"
    acquisitions: int = 0
    images_in: int = 0
    images_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    elapsed: float = 0.0
    ended: float | None = None
    mb_per_s: float = 0.0
    texts: list = dataclasses.field(default_factory=list)
    qa: dict | None = None
    thumbnail: int = 0  # version of the latest thumbnail announced; 0: none yet
    thumbnail_at: float = float("-inf")  # time.monotonic() of that announcement
    thumbnail_held: bool = False  # a newer PNG is stored but not announced yet
    # what the metrics have counted of this session
    headed: bool = False
    qa_counted: bool = False
    counted_in: int = 0
    counted_out: int = 0
    counted_images: int = 0
    rate_point: tuple[float, int] | None = None  # (elapsed, bytes_in) of the previous progress event
    secrets: re.Pattern | None = None  # the patient values to blank out of texts

    def redact(self, text: str) -> str:
        return self.secrets.sub(REDACTED, text) if self.secrets is not None and text else text

    def public(self) -> dict:
        entry = {
            "id": self.id, "station": self.station or _peer_host(self.peer), "peer": self.peer,
            "protocol": self.protocol, "module": self.module, "config": self.config, "summary": self.summary,
            "state": self.state, "started": self.started, "ended": self.ended, "elapsed": round(self.elapsed, 3),
            "acquisitions": self.acquisitions, "images_in": self.images_in, "images_out": self.images_out,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "mb_per_s": round(self.mb_per_s, 2),
            "texts": list(self.texts), "qa": self.qa, "thumbnail": self.thumbnail,
        }
        if self.patient is not None:
            entry["patient"] = self.patient
        return entry


def _secrets_pattern(patient: dict) -> re.Pattern | None:
    """A pattern for the patient's name (and its parts), ID and birth date (also as digits only)."""
    values: set[str] = set()
    for key in ("name", "id", "birth_date"):
        value = patient.get(key)
        if value is None:
            continue
        text = str(value).strip()
        values.add(text)
        if key == "name":
            values.update(re.split(r"[\^\s,]+", text))
        if key == "birth_date":
            values.add(re.sub(r"\D", "", text))
    values = {v for v in values if len(v) >= MIN_SECRET_CHARS}
    if not values:
        return None
    return re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)), re.IGNORECASE)


class Board:
    """Current and finished sessions, thumbnails and metrics, fed by :meth:`emit`."""

    def __init__(self, show_patient: bool = False, history: int = 200) -> None:
        self.show_patient = show_patient
        self.history = max(0, int(history))
        self.metrics = Metrics()
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._public: dict[str, dict] = {}  # id -> the session's latest public dict (never changed once built)
        self._thumbnails: dict[str, bytes] = {}
        self._finished: collections.deque[str] = collections.deque()
        self._listeners: list[Listener] = []
        self._seq = 0
        self._created = 0
        self._active = 0
        self._handlers = {
            "session_started": self._started, "session_header": self._header, "session_qa": self._qa,
            "session_progress": self._progress, "session_thumbnail": self._thumbnail,
            "session_text": self._text, "session_ended": self._ended,
        }

    @property
    def registry(self):
        """The prometheus_client ``CollectorRegistry`` of the board's metrics."""
        return self.metrics.registry

    # -- the public face ------------------------------------------------------------------------
    def emit(self, event: dict) -> None:
        """Apply one session event; from any thread, never blocks on a browser, never raises."""
        try:
            with self._lock:
                self._apply(event)
        except BadEvent as exc:
            self.metrics.bad_events.inc()
            log.warning("Dashboard dropped an event: %s", exc)
        except Exception:  # a bug here must not end a session
            self.metrics.bad_events.inc()
            log.exception("Dashboard dropped an event it could not apply")

    def snapshot(self) -> dict:
        """``{"sessions": [newest first], "stations": [{"name", "sessions": [ids], "active"}], "seq", "time"}``."""
        with self._lock:
            entries = list(self._public.values())
            seq = self._seq
            order = {sid: s.order for sid, s in self._sessions.items()}
        entries.sort(key=lambda e: (e["started"], order.get(e["id"], 0)), reverse=True)
        stations: dict[str, dict] = {}
        for entry in entries:
            station = stations.setdefault(entry["station"], {"name": entry["station"], "sessions": [], "active": 0})
            station["sessions"].append(entry["id"])
            station["active"] += entry["state"] in STATES_RUNNING
        return {"sessions": entries, "stations": sorted(stations.values(), key=lambda s: s["name"].casefold()),
                "seq": seq, "time": time.time()}

    def session(self, sid: str) -> dict | None:
        """The public dict of one session, or None when the board does not hold it."""
        with self._lock:
            entry = self._public.get(sid)
        return dict(entry) if entry is not None else None

    def thumbnail(self, sid: str) -> bytes | None:
        """The latest thumbnail PNG of a session, or None."""
        with self._lock:
            return self._thumbnails.get(sid)

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(message)`` for every change, in order, from the emitting thread and under the
        board's lock: it must only hand the message on (append to a queue), never wait."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def sanitize_qa(self, sid: str, qa: Any) -> dict:
        """A QA result dict as the page and the API show it (for a result from outside the events)."""
        with self._lock:
            return self._qa_public(self._sessions.get(sid), qa)

    # -- applying events (under the lock) -----------------------------------------------------------
    def _apply(self, event: Any) -> None:
        if not isinstance(event, dict):
            raise BadEvent(f"not a dict: {type(event).__name__}")
        kind = event.get("type")
        handler = self._handlers.get(kind)
        if handler is None:
            raise BadEvent(f"unknown type {kind!r}")
        sid = event.get("id")
        if not isinstance(sid, str) or not sid or len(sid) > MAX_ID_CHARS or not _ID.fullmatch(sid):
            raise BadEvent(f"{kind}: bad session id {sid!r}")
        session = self._sessions.get(sid)
        if session is None:
            if kind not in ("session_started", "session_header"):
                log.debug("Dashboard: %s for session %s, which it does not hold; dropped", kind, sid)
                return
            session = self._new(sid, event)
        if handler(session, event) is not False:  # False: nothing the page shows changed
            self._publish(session)
        while len(self._finished) > self.history:
            self._forget(self._finished.popleft())

    def _new(self, sid: str, event: dict) -> _Session:
        self._created += 1
        session = _Session(id=sid, order=self._created, started=_seconds(event.get("time"), time.time()))
        self._sessions[sid] = session
        self._active += 1
        self.metrics.sessions_active.set(self._active)
        return session

    def _publish(self, session: _Session) -> None:
        entry = session.public()
        self._public[session.id] = entry
        self._seq += 1
        self._tell({"type": "session", "seq": self._seq, "time": time.time(), "session": entry})

    def _tell(self, message: dict) -> None:
        for listener in self._listeners:
            try:
                listener(message)
            except Exception:
                log.exception("Dashboard listener failed")

    def _started(self, session: _Session, event: dict) -> None:
        session.peer = _text(event.get("peer"), MAX_NAME_CHARS)
        session.started = _seconds(event.get("time"), session.started)

    def _header(self, session: _Session, event: dict) -> None:
        patient = event.get("patient")
        if isinstance(patient, dict):
            if self.show_patient:
                session.patient = {k: _text(patient.get(k), MAX_NAME_CHARS) for k in ("name", "id", "birth_date")}
            else:
                session.secrets = _secrets_pattern(patient)
        for key, limit in (("station", MAX_NAME_CHARS), ("protocol", MAX_NAME_CHARS), ("module", MAX_NAME_CHARS),
                           ("config", MAX_NAME_CHARS), ("summary", MAX_SUMMARY_CHARS)):
            if key in event:
                setattr(session, key, session.redact(_text(event[key], limit)))
        if not session.headed:
            session.headed = True
            self.metrics.sessions_started.labels(self.metrics.module_label(session.module)).inc()

    def _qa_public(self, session: _Session | None, qa: Any) -> dict:
        if not isinstance(qa, dict):
            raise BadEvent("session_qa without a qa dict")
        redact = session.redact if session is not None else (lambda text: text)
        deviations = []
        for item in list(qa.get("deviations") or ())[:MAX_DEVIATIONS]:
            if not isinstance(item, dict):
                continue
            name = redact(_text(item.get("name"), MAX_NAME_CHARS))
            expected = None if item.get("expected") is None else redact(_text(item["expected"], MAX_NAME_CHARS))
            actual = None if item.get("actual") is None else redact(_text(item["actual"], MAX_NAME_CHARS))
            deviations.append({"name": name, "expected": expected, "actual": actual,
                               "says": deviation_text(name, expected, actual)})
        count = qa.get("reference_count")
        return {"status": _text(qa.get("status"), 32).upper(), "text": redact(_text(qa.get("text"), MAX_SUMMARY_CHARS)),
                "source": redact(_text(qa.get("source"), MAX_NAME_CHARS)), "deviations": deviations,
                "reference_count": count if isinstance(count, int) and not isinstance(count, bool) else None}

    def _qa(self, session: _Session, event: dict) -> None:
        session.qa = self._qa_public(session, event.get("qa"))
        if not session.qa_counted:
            session.qa_counted = True
            self.metrics.qa_results.labels(self.metrics.qa_label(session.qa["status"])).inc()

    def _counts(self, session: _Session, event: dict) -> None:
        for key in ("acquisitions", "images_in", "images_out", "bytes_in", "bytes_out"):
            setattr(session, key, _count(event.get(key), getattr(session, key)))
        session.elapsed = _seconds(event.get("elapsed"), time.time() - session.started)
        m = self.metrics
        for attr, counted, counter in (("bytes_in", "counted_in", m.bytes_received),
                                       ("bytes_out", "counted_out", m.bytes_sent),
                                       ("images_out", "counted_images", m.images_sent)):
            delta = getattr(session, attr) - getattr(session, counted)
            if delta > 0:
                counter.inc(delta)
                setattr(session, counted, getattr(session, attr))

    def _progress(self, session: _Session, event: dict) -> None:
        state = event.get("state")
        if state not in STATES_RUNNING:
            raise BadEvent(f"session_progress with state {state!r}")
        self._counts(session, event)
        if session.ended is not None:
            return
        if session.thumbnail_held:
            self._announce_thumbnail(session)
        session.state = state
        point = (session.elapsed, session.bytes_in)
        previous = session.rate_point
        if previous is not None and point[0] > previous[0]:
            session.mb_per_s = (point[1] - previous[1]) / (point[0] - previous[0]) / 1e6
        elif point[0] > 0:
            session.mb_per_s = point[1] / point[0] / 1e6
        session.rate_point = point

    def _thumbnail(self, session: _Session, event: dict) -> bool:
        png = event.get("png")
        if not isinstance(png, (bytes, bytearray, memoryview)):
            raise BadEvent("session_thumbnail without png bytes")
        png = bytes(png)
        if not png.startswith(PNG_SIGNATURE) or len(png) > MAX_THUMBNAIL_BYTES:
            raise BadEvent(f"session_thumbnail: not a PNG of at most {MAX_THUMBNAIL_BYTES} bytes")
        self._thumbnails[session.id] = png
        session.thumbnail_held = True
        return self._announce_thumbnail(session)

    @staticmethod
    def _announce_thumbnail(session: _Session, force: bool = False) -> bool:
        """A new version for the held PNG, unless the last came less than THUMBNAIL_MIN_S ago."""
        now = time.monotonic()
        if not force and now - session.thumbnail_at < THUMBNAIL_MIN_S:
            return False
        session.thumbnail += 1
        session.thumbnail_at = now
        session.thumbnail_held = False
        return True

    def _text(self, session: _Session, event: dict) -> None:
        level = str(event.get("level") or "INFO").upper()
        entry = {"level": level if level in TEXT_LEVELS else "INFO", "time": _seconds(event.get("time"), time.time()),
                 "text": session.redact(_text(event.get("text"), MAX_TEXT_CHARS))}
        session.texts = (session.texts + [entry])[-MAX_TEXTS:]

    def _ended(self, session: _Session, event: dict) -> None:
        state = event.get("state")
        if state not in STATES_ENDED:
            raise BadEvent(f"session_ended with state {state!r}")
        if event.get("module"):
            session.module = session.redact(_text(event["module"], MAX_NAME_CHARS))
        self._counts(session, event)
        if session.ended is not None:  # a repeated end: counts updated, nothing counted twice
            return
        session.state = state
        session.ended = _seconds(event.get("time"), time.time())
        if session.thumbnail_held:
            self._announce_thumbnail(session, force=True)
        if session.elapsed > 0:
            session.mb_per_s = session.bytes_in / session.elapsed / 1e6
        m = self.metrics
        module = m.module_label(session.module)
        if not session.headed:  # ended before its header: counted as started here
            session.headed = True
            m.sessions_started.labels(module).inc()
        if state == "error":
            m.sessions_failed.labels(module).inc()
        m.session_duration.observe(session.elapsed)
        self._active -= 1
        m.sessions_active.set(self._active)
        self._finished.append(session.id)

    def _forget(self, sid: str) -> None:
        self._sessions.pop(sid, None)
        self._public.pop(sid, None)
        self._thumbnails.pop(sid, None)
        self._seq += 1
        self._tell({"type": "removed", "seq": self._seq, "time": time.time(), "id": sid})
