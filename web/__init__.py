"""The dashboard: one HTTP port with the live page, the JSON API, the websocket, ``/healthz`` and
``/metrics`` (see web/README.md).

``Board`` collects the server's session events (from any thread) into the state the page shows and
the Prometheus metrics; ``WebServer`` serves a board on its own thread.
"""
from web.board import Board
from web.webserver import WebServer

__all__ = ["Board", "WebServer"]
