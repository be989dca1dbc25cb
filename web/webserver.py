"""The dashboard's HTTP port: the page, the JSON API, the websocket, ``/healthz`` and ``/metrics``.

:class:`WebServer` runs aiohttp on a thread of its own with its own asyncio loop, so that nothing a
browser does runs in a session's thread.  The board hands every change to :meth:`WebServer._on_message`
(a deque append and, once per flush, a wake-up of the loop).  Every ``flush_s`` the loop keeps the
latest message of each session changed meanwhile (each carries the session's whole state), encodes
each once, and puts one frame with all of them into every browser's bounded queue: the work per
browser is one send per flush, however many events the sessions emit.  A browser that does not keep
up (its queue is full) loses its queue and gets one fresh snapshot instead, so a stuck browser costs
a bounded amount of memory and no time outside the web thread.

Access: connections from addresses outside ``allow`` are closed before aiohttp sees them (no HTTP
answer at all); with a token every request but ``/healthz`` and ``/metrics`` needs it; the one
state-changing endpoint (accept a session's header as the QA reference) needs it in a header.
"""
from __future__ import annotations

import asyncio
import collections
import ctypes
import hmac
import importlib.metadata
import ipaddress
import json
import logging
import socket
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Iterable

from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from web.board import Board

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}
OPEN_PATHS = frozenset({"/healthz", "/metrics"})  # the load balancer's and the scraper's: no token
CLIENT_QUEUE = 256  # frames a browser may lag behind before it gets a snapshot instead
FLUSH_S = 0.2  # how often the browsers get what changed (one frame each)
INBOX_LIMIT = 100_000  # board messages not yet handed to the browsers (the loop is stuck): all browsers resync
HEARTBEAT_S = 30.0
MAX_WS_MESSAGE = 4096  # the page sends nothing; anything larger is a protocol error
SHUTDOWN_S = 2.0
PR_SET_NAME = 15  # prctl option
START_TIMEOUT_S = 30.0
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page's address may hold the token
    "Cache-Control": "no-store",  # patient images and states: never in a shared cache
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Health = Callable[[], tuple[bool, dict]]
QaAccept = Callable[[str], "dict | None"]


def _version() -> str:
    try:
        return importlib.metadata.version("mrd-recon-server")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


VERSION = _version()


def allowed(host: str, allow: Iterable[Network]) -> bool:
    """Whether a peer address is in one of the networks (an empty list allows every address); the rule
    of the MRD port's ``--allow`` (IPv4-mapped IPv6 addresses count as IPv4)."""
    allow = tuple(allow)
    if not allow:
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in allow)


def _name_os_thread(name: str) -> None:
    """Give the calling thread its name in the operating system too (Linux: ``top -H``, /proc/.../comm)."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        pass


def _same_token(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _same_origin(request: web.Request) -> bool:
    """False for a request a browser sent on behalf of another site: an ``Origin`` other than this
    server's own, or ``Sec-Fetch-Site: cross-site``. A request without either (curl, a script) passes."""
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin.lower() == f"{request.scheme}://{request.host}".lower()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json")


class _Browser:
    """One websocket client: a bounded queue of encoded messages and the task that sends them."""

    def __init__(self, ws: web.WebSocketResponse, limit: int, on_overflow: Callable[[], None]) -> None:
        self.ws = ws
        self.limit = limit
        self.on_overflow = on_overflow
        self.queue: collections.deque[bytes] = collections.deque()
        self.floor = 0  # board sequence number of the last snapshot sent: older messages are skipped
        self.resync = True  # the first thing a browser gets is a snapshot
        self.wake = asyncio.Event()
        self.wake.set()

    def push(self, messages: list[tuple[int, bytes]]) -> None:
        """Queue one frame of the encoded messages newer than the last snapshot sent."""
        if self.resync:
            return
        parts = [data for seq, data in messages if seq > self.floor]
        if not parts:
            return
        if len(self.queue) >= self.limit:
            self.queue.clear()
            self.resync = True
            self.on_overflow()
        else:
            self.queue.append(b'{"type": "batch", "messages": [' + b", ".join(parts) + b"]}")
        self.wake.set()

    def force_resync(self) -> None:
        self.queue.clear()
        self.resync = True
        self.wake.set()

    async def run(self, snapshot: Callable[[], tuple[int, bytes]]) -> None:
        """Send until cancelled; a send that waits (the browser does not read) blocks only this task."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while True:
                if self.resync:
                    self.resync = False
                    self.queue.clear()
                    self.floor, data = snapshot()
                elif self.queue:
                    data = self.queue.popleft()
                else:
                    break
                await self.ws.send_frame(data, WSMsgType.TEXT)


class WebServer:
    """The dashboard's HTTP port for one :class:`Board`; ``start()`` binds and serves on its own thread."""

    def __init__(self, board: Board, host: str, port: int, *, token: str | None,
                 allow: tuple[Network, ...] = (), health: Health, qa_accept: QaAccept | None = None,
                 client_queue: int = CLIENT_QUEUE, flush_s: float = FLUSH_S) -> None:
        self.board = board
        self.host = host
        self.port = port
        self.token = token or None
        self.allow = tuple(allow)
        self.health = health
        self.qa_accept = qa_accept
        self.client_queue = max(1, client_queue)
        self.flush_s = max(0.0, flush_s)
        self._assets = {name: (STATIC_DIR / name).read_bytes() for name in ASSETS}
        self._index = self._page((STATIC_DIR / "index.html").read_text())
        self._browsers: set[_Browser] = set()
        self._inbox: collections.deque[dict] = collections.deque()
        self._wake_pending = False
        self._overflow = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._address: tuple[str, int] | None = None
        self._error: BaseException | None = None

    def _page(self, html: str) -> bytes:
        """index.html; with a token, its asset addresses carry it (a browser sends no header for them)."""
        if self.token is not None:
            query = "?token=" + urllib.parse.quote(self.token, safe="")
            for name in ASSETS:
                needle = f'"static/{name}"'
                if needle not in html:
                    raise RuntimeError(f"{STATIC_DIR / 'index.html'} does not load {needle}")
                html = html.replace(needle, f'"static/{name}{query}"')
        return html.encode()

    # -- the thread ----------------------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        """Bind and serve on a new thread; returns the bound address (port 0: a free port). Raises
        OSError when the address cannot be bound."""
        self._thread = threading.Thread(target=self._run, name="dashboard", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError("the dashboard's web server did not start")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self._address

    def stop(self) -> None:
        """Close every connection and end the thread (the board keeps its state)."""
        self.board.unsubscribe(self._on_message)
        if self._thread is None or self._loop is None or self._stopping is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._stopping.set)
        except RuntimeError:  # the loop already ended
            pass
        self._thread.join(SHUTDOWN_S + 10.0)

    def _run(self) -> None:
        _name_os_thread(self._thread.name)
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(), or logged when it happens later
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.exception("The dashboard's web server failed")
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._guard], client_max_size=64 << 10)
        app.on_response_prepare.append(self._add_headers)
        app.add_routes([
            web.get("/", self._get_index), web.get("/static/{name}", self._get_asset),
            web.get("/api/sessions", self._get_sessions), web.get("/api/sessions/{sid}", self._get_session),
            web.get("/api/sessions/{sid}/thumbnail.png", self._get_thumbnail),
            web.post("/api/qa/{sid}/accept", self._post_accept), web.get("/ws", self._get_ws),
            web.get("/healthz", self._get_health), web.get("/metrics", self._get_metrics),
        ])
        # No access log: the page's and the websocket's addresses carry the token.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_S)
        await runner.setup()
        listener = None
        try:
            listener = socket.create_server((self.host, self.port), family=self._family(), backlog=128)
            listener.setblocking(False)
            self._address = listener.getsockname()[:2]
            accepting = asyncio.create_task(self._accept(listener, runner.server))
            self.board.subscribe(self._on_message)
            self._ready.set()
            await self._stopping.wait()
            self.board.unsubscribe(self._on_message)
            accepting.cancel()
            listener.close()
            await asyncio.gather(*(self._close(b) for b in list(self._browsers)), return_exceptions=True)
        finally:
            if listener is not None:
                listener.close()
            await runner.cleanup()

    def _family(self) -> socket.AddressFamily:
        try:
            return socket.AF_INET6 if ipaddress.ip_address(self.host.strip("[]")).version == 6 else socket.AF_INET
        except ValueError:  # a host name
            return socket.AF_INET

    async def _accept(self, listener: socket.socket, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        """Accept connections; those from outside ``allow`` are closed at once, before a byte is read or
        written, so a refused address gets no HTTP answer at all."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(listener)
            except OSError as exc:  # out of file descriptors, say: wait, do not spin
                log.warning("Dashboard: accept failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if not allowed(peer[0], self.allow):
                log.warning("Refused a dashboard connection from %s (not in --allow)", peer[0])
                conn.close()
                continue
            try:
                await loop.connect_accepted_socket(protocol_factory, conn)
            except OSError as exc:
                log.debug("Dashboard: connection from %s lost at once: %s", peer[0], exc)
                conn.close()

    # -- from the board to the browsers -----------------------------------------------------------
    def _on_message(self, message: dict) -> None:
        """Board listener, in the emitting thread: hand the message to the loop without waiting."""
        if len(self._inbox) >= INBOX_LIMIT:
            self._inbox.clear()
            self._overflow = True
        self._inbox.append(message)
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._loop.call_soon_threadsafe(self._loop.call_later, self.flush_s, self._dispatch)
            except RuntimeError:  # the loop has ended (stopping)
                pass

    def _dispatch(self) -> None:
        self._wake_pending = False
        if self._overflow:
            self._overflow = False
            for browser in self._browsers:
                browser.force_resync()
        latest: dict[str, dict] = {}  # session id -> its newest message, in the order of their seq
        while self._inbox:
            message = self._inbox.popleft()
            sid = message["session"]["id"] if message["type"] == "session" else message["id"]
            latest.pop(sid, None)
            latest[sid] = message
        if not latest or not self._browsers:
            return
        encoded = [(message["seq"], json.dumps(message).encode()) for message in latest.values()]
        for browser in self._browsers:
            browser.push(encoded)

    def _snapshot(self) -> tuple[int, bytes]:
        snapshot = self.board.snapshot()
        return snapshot["seq"], json.dumps({"type": "snapshot", **snapshot}).encode()

    def _overflowed(self) -> None:
        self.board.metrics.web_resyncs.inc()

    async def _send(self, browser: _Browser) -> None:
        try:
            await browser.run(self._snapshot)
        except (ConnectionError, RuntimeError) as exc:  # the browser went away while we sent
            log.debug("Dashboard: a websocket ended while sending: %s", exc)
            await browser.ws.close()

    async def _close(self, browser: _Browser) -> None:
        await asyncio.wait_for(browser.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping"), 1.0)

    # -- access -------------------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        """No token configured, or the token in ``Authorization: Bearer`` (or for a GET, ``?token=``)."""
        if self.token is None:
            return True
        if _same_token(_bearer(request), self.token):
            return True
        return request.method in ("GET", "HEAD") and _same_token(request.query.get("token"), self.token)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.path not in OPEN_PATHS and not self._authorized(request):
            raise web.HTTPUnauthorized(text="a token is required: ?token=... or Authorization: Bearer ...",
                                       headers={"WWW-Authenticate": 'Bearer realm="mrd-dashboard"'})
        return await handler(request)

    @staticmethod
    async def _add_headers(_request: web.Request, response: web.StreamResponse) -> None:
        for key, value in HEADERS.items():
            response.headers.setdefault(key, value)

    # -- handlers -----------------------------------------------------------------------------
    async def _get_index(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._index, content_type="text/html", charset="utf-8")

    async def _get_asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._assets:
            raise web.HTTPNotFound()
        return web.Response(body=self._assets[name], content_type=ASSETS[name], charset="utf-8")

    async def _get_sessions(self, _request: web.Request) -> web.Response:
        return _json(self.board.snapshot())

    async def _get_session(self, request: web.Request) -> web.Response:
        entry = self.board.session(request.match_info["sid"])
        if entry is None:
            raise web.HTTPNotFound(text="no such session")
        return _json(entry)

    async def _get_thumbnail(self, request: web.Request) -> web.Response:
        png = self.board.thumbnail(request.match_info["sid"])
        if png is None:
            raise web.HTTPNotFound(text="no thumbnail")
        return web.Response(body=png, content_type="image/png")

    async def _post_accept(self, request: web.Request) -> web.Response:
        """Accept a session's header as the QA reference of its protocol.

        CSRF: another site's page can make a browser send a request here, but not with our token in
        it. The token is taken from the ``Authorization`` header only (not from the query, and no
        cookie or HTTP authentication is ever used, so a browser attaches nothing by itself); a
        cross-origin request with an ``Authorization`` header needs a CORS preflight, which this
        server never approves (it sends no ``Access-Control-Allow-*``), so the browser never sends it.
        A foreign ``Origin`` (or ``Sec-Fetch-Site: cross-site``) is refused besides. Without a
        configured token the endpoint is refused outright: ``--allow`` alone does not protect it.
        """
        if self.token is None:
            raise web.HTTPForbidden(text="accepting a reference needs the dashboard's token (--http-token)")
        if not _same_token(_bearer(request), self.token):
            raise web.HTTPUnauthorized(text="the token must be sent as Authorization: Bearer ...",
                                       headers={"WWW-Authenticate": 'Bearer realm="mrd-dashboard"'})
        if not _same_origin(request):
            raise web.HTTPForbidden(text="cross-site request refused")
        if self.qa_accept is None:
            raise web.HTTPNotImplemented(text="QA is not enabled on this server")
        sid = request.match_info["sid"]
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, self.qa_accept, sid)
        except Exception:
            log.exception("Accepting session %s as the QA reference failed", sid)
            return _json({"error": "accepting the reference failed; see the server log"}, status=500)
        if result is None:
            raise web.HTTPNotFound(text="no such session, or no QA check for it")
        self.board.emit({"type": "session_qa", "id": sid, "qa": result})
        log.info("Session %s accepted as the QA reference from the dashboard (%s)", sid, request.remote)
        return _json({"id": sid, "qa": self.board.sanitize_qa(sid, result)})

    async def _get_ws(self, request: web.Request) -> web.WebSocketResponse:
        # A websocket is not bound by CORS: another site's page could read the sessions through it.
        if not _same_origin(request):
            raise web.HTTPForbidden(text="cross-site websocket refused")
        ws = web.WebSocketResponse(compress=False, heartbeat=HEARTBEAT_S, max_msg_size=MAX_WS_MESSAGE)
        await ws.prepare(request)
        browser = _Browser(ws, self.client_queue, self._overflowed)
        self._browsers.add(browser)
        self.board.metrics.web_clients.inc()
        sender = asyncio.create_task(self._send(browser))
        try:
            async for _message in ws:  # the page sends nothing; this loop answers pings and sees the close
                pass
        finally:
            self._browsers.discard(browser)
            self.board.metrics.web_clients.dec()
            sender.cancel()
        return ws

    async def _get_health(self, _request: web.Request) -> web.Response:
        try:
            accepting, info = self.health()
        except Exception:
            log.exception("The health check failed")
            return _json({"status": "error", "version": VERSION}, status=503)
        body = {"sessions": 0, "version": VERSION, **info, "status": "ok" if accepting else "unavailable"}
        return _json(body, status=200 if accepting else 503)

    async def _get_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.board.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
