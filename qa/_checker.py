"""The header check: :class:`QAChecker` finds a session's reference and compares; :class:`QAResult`.

The reference of a session, in this order: the first entry of the rules file (``--qa-rules``)
that matches its protocol and station (only the parameters it names are checked); else the
parameter set accepted for its (station, protocol) ("Accept as reference"); else the most frequent
parameter set of its (station, protocol) in the history, once it has been seen ``min_count``
times and no other set has been seen as often (a tie is no reference). Accepted and history
references compare every parameter with the tolerances of :data:`qa._compare.PARAMETERS`.
Without any, the result is ``NO-REFERENCE`` and says why.

The rules file is read when the checker is made (a :class:`mrdhelper.ConfigError` stops the
start) and again when its modification time changes; a changed file that is not valid is logged
and the rules read before stay in force. A database error during a check or a record is logged
and never reaches the session: the check says ``NO-REFERENCE`` with the error.
"""
from __future__ import annotations

import dataclasses
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from mrdhelper import ConfigError

from ._compare import Deviation, deviations, learned_expectations
from ._params import ScanParams, station_of
from ._rules import RuleEntry, load_rules
from ._store import Store

log = logging.getLogger(__name__)

PASS, FAIL, NO_REFERENCE = "PASS", "FAIL", "NO-REFERENCE"


@dataclass
class QAResult:
    """The outcome of one check. ``source``: ``rules``, ``accepted``, ``history`` or None (no
    reference); ``reference_count``: the parameters a rule names (rules), 1 (accepted), the
    sessions with the reference's parameter set (history), or for NO-REFERENCE the sessions of the
    most frequent set so far; ``reason``: why there is no reference."""

    status: str
    deviations: list[Deviation] = field(default_factory=list)
    source: Optional[str] = None
    reference_count: int = 0
    protocol: Optional[str] = None
    station: Optional[str] = None
    reason: str = ""

    def text(self) -> str:
        """The TEXT message for the client: ``QA PASS: …``, ``QA FAIL: …`` or ``QA NO-REFERENCE: …``."""
        if self.status == FAIL:
            return "QA FAIL: " + "; ".join(d.text() for d in self.deviations)
        if self.status == PASS:
            return f"QA PASS: {self.protocol} matches its reference ({self.source}, n={self.reference_count})"
        return f"QA NO-REFERENCE: {self.protocol or '(no protocol name)'} on {self.station}: {self.reason}"

    def meta(self) -> dict[str, Any]:
        """The image meta attributes: ``QAResult`` (the status) and ``QADeviations`` (their texts)."""
        return {"QAResult": self.status, "QADeviations": [d.text() for d in self.deviations]}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, with the message text."""
        return {**dataclasses.asdict(self), "text": self.text()}


class QAChecker:
    """Checks parameters against their reference; records sessions and accepted references in the
    database ``db_path`` (None: rules only, nothing recorded)."""

    def __init__(self, rules_path: Optional[Path], db_path: Optional[Path], min_count: int = 3) -> None:
        if min_count < 1:
            raise ConfigError(f"QA: the minimum count of sessions for a reference must be at least 1, got {min_count}")
        self.min_count = min_count
        self.rules_path = None if rules_path is None else Path(rules_path)
        self._rules: tuple[RuleEntry, ...] = ()
        self._rules_mtime: Optional[int] = None
        if self.rules_path is not None:
            self._rules_mtime = self._mtime()
            self._rules = load_rules(self.rules_path)
            log.info("QA rules: %d protocol entries from %s", len(self._rules), self.rules_path)
        self.store = None if db_path is None else Store(Path(db_path))

    def check(self, params: ScanParams) -> QAResult:
        """The result of ``params`` against its reference (rules, accepted, history); records nothing."""
        station = station_of(params)
        result = QAResult(NO_REFERENCE, protocol=params.protocol, station=station)
        if params.protocol is None:
            result.reason = "the header names no protocol"
            return result
        entry = next((e for e in self._current_rules() if e.applies(params.protocol, station)), None)
        if entry is not None:
            return self._compared(result, "rules", len(entry.expectations), deviations(entry.expectations, params))
        if self.store is None:
            result.reason = "no rules for it, and no QA database for accepted references or history"
            return result
        try:
            accepted = self.store.accepted(station, params.protocol)
            top = None if accepted is not None else self.store.most_frequent(station, params.protocol)
        except sqlite3.Error as exc:
            log.error("QA database %s: %s", self.store.path, exc)
            result.reason = f"no rules for it, and the QA database failed: {exc}"
            return result
        if accepted is not None:
            return self._compared(result, "accepted", 1, deviations(learned_expectations(accepted), params))
        result.reference_count = top.count
        if top.count < self.min_count:
            result.reason = f"no rules, {top.count} of {self.min_count} sessions in history" + (
                f" (the most frequent parameter set; {top.total} sessions recorded)" if top.total > top.count else "")
        elif top.runner_up == top.count:
            result.reason = (f"no rules, a tie in history: parameter sets with {top.count} sessions each "
                             f"({top.total} recorded); accept one as the reference")
        else:
            return self._compared(result, "history", top.count, deviations(learned_expectations(top.params), params))
        return result

    def record(self, session_id: str, params: ScanParams, result: QAResult) -> None:
        """Append the session to the history (nothing without a database; errors are logged)."""
        if self.store is None:
            return
        try:
            self.store.add(session_id, station_of(params), params, result.status, [d.text() for d in result.deviations])
        except sqlite3.Error as exc:
            log.error("QA database %s: session %s not recorded: %s", self.store.path, session_id, exc)

    def accept(self, session_id: str) -> Optional[QAResult]:
        """Pin the recorded session's parameters as the reference of its (station, protocol) and
        return the check of them against it (PASS); None for a session that was not recorded.
        A session without a protocol name cannot be pinned: its NO-REFERENCE check is returned.
        Database errors (``sqlite3.Error``) are raised to the caller."""
        if self.store is None:
            return None
        recorded = self.store.session(session_id)
        if recorded is None:
            return None
        if recorded.protocol is not None:
            self.store.pin(session_id, recorded.station, recorded.protocol, recorded.params)
        return self.check(recorded.params)

    @staticmethod
    def _compared(result: QAResult, source: str, count: int, found: list[Deviation]) -> QAResult:
        result.status, result.source, result.reference_count, result.deviations = (
            FAIL if found else PASS, source, count, found)
        return result

    def _mtime(self) -> Optional[int]:
        try:
            return self.rules_path.stat().st_mtime_ns
        except OSError:
            return None

    def _current_rules(self) -> tuple[RuleEntry, ...]:
        """The rules, read again when the file's modification time has changed."""
        if self.rules_path is None:
            return ()
        # No lock: two threads may both read a changed file, which is harmless, while a lock held by
        # another thread when the server forks a session process would stay locked in the child.
        mtime = self._mtime()
        if mtime != self._rules_mtime:
            self._rules_mtime = mtime
            try:
                self._rules = load_rules(self.rules_path)
                log.info("QA rules read again: %d protocol entries from %s", len(self._rules), self.rules_path)
            except ConfigError as exc:
                log.error("QA rules not changed, the new file is not valid: %s", exc)
        return self._rules
