"""The QA database (``--qa-db``): recorded sessions and accepted references in one SQLite file.

Tables: ``sessions`` (one row per recorded session: ``id`` the session id, ``time`` UTC ISO 8601,
``station``, ``protocol``, ``params`` the :meth:`ScanParams.to_dict` JSON, ``params_key`` the
grouping key of :func:`qa._compare.params_key`, ``result`` the QA status, ``deviations`` a JSON
list of texts), indexed by (station, protocol); ``accepted`` (one pinned parameter set per
(station, protocol), with the session it came from and when).

Several processes (the server's ``-m`` session processes) and threads use one file: every call
opens its own connection and closes it (no connection outlives a call, so none crosses a fork),
the file is in WAL mode (readers do not wait for a writer), and a writer waits up to
:data:`BUSY_TIMEOUT_S` for another's lock. The most frequent parameter set is computed in SQL from
the rows of one (station, protocol) through the index.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

from mrdhelper import ConfigError

from ._compare import params_key
from ._params import ScanParams

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 10.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    time TEXT NOT NULL,
    station TEXT NOT NULL,
    protocol TEXT,
    params TEXT NOT NULL,
    params_key TEXT NOT NULL,
    result TEXT NOT NULL,
    deviations TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_station_protocol ON sessions (station, protocol);
CREATE INDEX IF NOT EXISTS sessions_id ON sessions (id);
CREATE TABLE IF NOT EXISTS accepted (
    station TEXT NOT NULL,
    protocol TEXT NOT NULL,
    params TEXT NOT NULL,
    session TEXT NOT NULL,
    time TEXT NOT NULL,
    PRIMARY KEY (station, protocol)
);
"""
# The two largest parameter sets of one (station, protocol), with the number of sessions in all.
MOST_FREQUENT = """
SELECT params, COUNT(*) AS n, MAX(row) AS last, SUM(COUNT(*)) OVER () AS total
FROM sessions WHERE station = ? AND protocol = ?
GROUP BY params_key ORDER BY n DESC, last DESC LIMIT 2
"""


@dataclass(frozen=True)
class HistoryTop:
    """The most frequent parameter set of a (station, protocol): its ``count``, the count of the
    runner-up (0 if none) and the number of sessions recorded; ``params`` of its latest session."""

    params: Optional[ScanParams]
    count: int
    runner_up: int
    total: int


@dataclass(frozen=True)
class Recorded:
    """A recorded session: where it belongs and its parameters."""

    station: str
    protocol: Optional[str]
    params: ScanParams


class Store:
    """The database file; every method opens and closes its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                conn.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"QA database {self.path}: cannot be opened: {exc}") from exc
        if mode.lower() != "wal":
            log.warning("QA database %s: WAL mode not available (journal mode %s); "
                        "concurrent sessions may wait for each other", self.path, mode)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A new connection, committed on success, rolled back on an error, always closed."""
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def add(self, session_id: str, station: str, params: ScanParams, result: str, deviations: list[str]) -> None:
        """Append one session."""
        with self._connect() as conn:
            conn.execute("INSERT INTO sessions (id, time, station, protocol, params, params_key, result, deviations) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (session_id, _now(), station, params.protocol, json.dumps(params.to_dict()),
                          params_key(params), result, json.dumps(deviations)))

    def most_frequent(self, station: str, protocol: str) -> HistoryTop:
        """The most frequent parameter set of (station, protocol) and how it stands."""
        with self._connect() as conn:
            rows = conn.execute(MOST_FREQUENT, (station, protocol)).fetchall()
        if not rows:
            return HistoryTop(None, 0, 0, 0)
        params, count, _last, total = rows[0]
        return HistoryTop(ScanParams.from_dict(json.loads(params)), count, rows[1][1] if len(rows) > 1 else 0, total)

    def accepted(self, station: str, protocol: str) -> Optional[ScanParams]:
        """The pinned parameters of (station, protocol), None when nobody accepted a session."""
        with self._connect() as conn:
            row = conn.execute("SELECT params FROM accepted WHERE station = ? AND protocol = ?",
                               (station, protocol)).fetchone()
        return None if row is None else ScanParams.from_dict(json.loads(row[0]))

    def session(self, session_id: str) -> Optional[Recorded]:
        """The latest recorded session of that id (ids are short and may repeat over years)."""
        with self._connect() as conn:
            row = conn.execute("SELECT station, protocol, params FROM sessions WHERE id = ? "
                               "ORDER BY row DESC LIMIT 1", (session_id,)).fetchone()
        return None if row is None else Recorded(row[0], row[1], ScanParams.from_dict(json.loads(row[2])))

    def pin(self, session_id: str, station: str, protocol: str, params: ScanParams) -> None:
        """Make ``params`` the accepted reference of (station, protocol), replacing an earlier one."""
        with self._connect() as conn:
            conn.execute("INSERT OR REPLACE INTO accepted (station, protocol, params, session, time) "
                         "VALUES (?, ?, ?, ?, ?)",
                         (station, protocol, json.dumps(params.to_dict()), session_id, _now()))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
