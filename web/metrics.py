"""The dashboard's Prometheus metrics, in one registry per :class:`web.Board`.

The board updates them from the session events it receives (one place, so that ``-m``, where events
come from session processes, counts the same as threads); the web server adds its own few (browsers
connected, snapshots sent instead of events, bad events).  ``/metrics`` serves
``prometheus_client.generate_latest(registry)``.
"""
from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Session durations from a phantom in under a second to long real-time scans.
DURATION_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
QA_RESULTS = frozenset({"PASS", "FAIL", "NO-REFERENCE"})
MAX_MODULE_LABELS = 100  # distinct module label values; later names are counted as "other"
_LABEL_TEXT = re.compile(r"[^A-Za-z0-9_.:-]")


class Metrics:
    """The collectors, registered in ``registry``; label values are kept short and few."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_started = Counter("mrd_sessions_started", "Sessions started, by the module that serves them",
                                        ["module"], registry=r)
        self.sessions_failed = Counter("mrd_sessions_failed", "Sessions that ended in an error, by module",
                                       ["module"], registry=r)
        self.sessions_active = Gauge("mrd_sessions_active", "Sessions running now", registry=r)
        self.bytes_received = Counter("mrd_received_bytes", "Bytes received from clients", registry=r)
        self.bytes_sent = Counter("mrd_sent_bytes", "Bytes sent to clients", registry=r)
        self.images_sent = Counter("mrd_images_sent", "Images sent to clients", registry=r)
        self.session_duration = Histogram("mrd_session_duration_seconds", "Duration of finished sessions",
                                          buckets=DURATION_BUCKETS_S, registry=r)
        self.qa_results = Counter("mrd_qa_results", "Header QA results, one per session (the first check)",
                                  ["result"], registry=r)
        self.bad_events = Counter("mrd_dashboard_bad_events", "Session events the dashboard dropped as malformed",
                                  registry=r)
        self.web_clients = Gauge("mrd_dashboard_websockets", "Browsers connected to the dashboard's websocket",
                                 registry=r)
        self.web_resyncs = Counter("mrd_dashboard_resyncs", "Times a slow browser's queue was full and it got "
                                   "one fresh snapshot instead of the events it missed", registry=r)
        self._modules: set[str] = set()

    def module_label(self, module: object) -> str:
        """A bounded label value for a module name (empty: "none"; beyond MAX_MODULE_LABELS names: "other")."""
        text = _LABEL_TEXT.sub("_", str(module or ""))[:64] or "none"
        if text not in self._modules:
            if len(self._modules) >= MAX_MODULE_LABELS:
                return "other"
            self._modules.add(text)
        return text

    @staticmethod
    def qa_label(status: object) -> str:
        """PASS, FAIL, NO-REFERENCE, or OTHER for anything else."""
        text = str(status or "").upper()
        return text if text in QA_RESULTS else "OTHER"
