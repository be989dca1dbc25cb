"""The dashboard (web/): the Board fed with session events directly, served by a WebServer on a free port.

API JSON (sessions, the 200-finished cap, stations), thumbnails, the websocket (snapshot, then events;
a browser that never reads gets a snapshot instead and never slows an emitter), /healthz and /metrics,
access (--allow closes the connection unanswered, the token, the accept endpoint's CSRF rules), and
no patient data anywhere unless show_patient.
"""
import asyncio
import io
import ipaddress
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import aiohttp
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

import web.board
from web import Board, WebServer

TOKEN = "t0ken-for-tests"
PATIENT = {"name": "Doe^Jane", "id": "PID-12345", "birth_date": "1970-01-01"}
PATIENT_STRINGS = ("Doe", "Jane", "PID-12345", "1970-01-01", "19700101")


def png_bytes(size: int = 32, shade: int = 128) -> bytes:
    out = io.BytesIO()
    Image.new("L", (size, size), shade).save(out, format="PNG")
    return out.getvalue()


def feed_session(board: Board, sid: str, *, station: str | None = "AWP1", protocol: str = "t1_mprage",
                 module: str = "simplefft", start: float | None = None, end: str | None = "done",
                 patient: dict | None = None, bytes_in: int = 1_000_000, images_out: int = 2) -> None:
    """The events of one session, as the server sends them."""
    start = time.time() if start is None else start
    board.emit({"type": "session_started", "id": sid, "peer": "10.1.2.3:52622", "time": start})
    if station is not None:
        board.emit({"type": "session_header", "id": sid, "station": station, "protocol": protocol, "module": module,
                    "config": module, "summary": f"Siemens, protocol '{protocol}'", "patient": patient or PATIENT})
    board.emit({"type": "session_progress", "id": sid, "state": "receiving", "acquisitions": 10, "images_in": 0,
                "images_out": 0, "bytes_in": bytes_in // 2, "bytes_out": 0, "elapsed": 0.5})
    if end is not None:
        board.emit({"type": "session_ended", "id": sid, "state": end, "module": module, "elapsed": 1.5,
                    "acquisitions": 20, "images_in": 0, "images_out": images_out, "bytes_in": bytes_in,
                    "bytes_out": 5000 * images_out, "time": start + 1.5})


class Served:
    """A WebServer for a board on 127.0.0.1:<free port>, with its URL."""

    def __init__(self, board: Board, **kwargs) -> None:
        kwargs.setdefault("token", None)
        kwargs.setdefault("health", lambda: (True, {"sessions": 0}))
        self.server = WebServer(board, "127.0.0.1", 0, **kwargs)
        self.host, self.port = self.server.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
        request = urllib.request.Request(self.url + path, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, path: str, headers: dict | None = None):
        status, _, body = self.get(path, headers)
        assert status == 200, (path, status, body)
        return json.loads(body)


@pytest.fixture
def serve():
    started = []

    def start(board: Board, **kwargs) -> Served:
        served = Served(board, **kwargs)
        started.append(served)
        return served

    yield start
    for served in started:
        served.server.stop()


def ws_messages(url: str, count: int | None, during=None, timeout: float = 10.0, headers: dict | None = None,
                until=None) -> list[dict]:
    """Connect to the websocket, call ``during()`` after the first message, return ``count`` messages (or
    those up to the first for which ``until(message)`` is true); a batch counts as the messages in it."""
    async def run() -> list[dict]:
        messages = []
        done = False
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, headers=headers or {}) as ws:
                while not done:
                    message = await asyncio.wait_for(ws.receive(), timeout)
                    assert message.type == aiohttp.WSMsgType.TEXT, message
                    data = json.loads(message.data)
                    new = data["messages"] if data["type"] == "batch" else [data]
                    messages.extend(new)
                    done = len(messages) >= count if count is not None else any(until(m) for m in new)
                    if len(messages) == 1 and during is not None:
                        await asyncio.get_running_loop().run_in_executor(None, during)
        return messages
    return asyncio.run(run())


def metric_values(text: str) -> dict[tuple, float]:
    """{(sample name, ((label, value), ...)): value} of a Prometheus text scrape."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


# -- the API ----------------------------------------------------------------------------------------
def test_api_sessions_newest_first_grouped_by_station(serve):
    board = Board()
    now = time.time()
    feed_session(board, "aaaaaa", station="AWP1", start=now - 30)
    feed_session(board, "bbbbbb", station="MRC2", start=now - 20, end="error")
    feed_session(board, "cccccc", station="AWP1", start=now - 10, end=None)
    feed_session(board, "dddddd", station=None, start=now - 5, end=None)  # no header yet: the client address
    served = serve(board)
    data = served.json("/api/sessions")
    assert [s["id"] for s in data["sessions"]] == ["dddddd", "cccccc", "bbbbbb", "aaaaaa"]
    assert [(s["name"], s["sessions"], s["active"]) for s in data["stations"]] == [
        ("10.1.2.3", ["dddddd"], 1), ("AWP1", ["cccccc", "aaaaaa"], 1), ("MRC2", ["bbbbbb"], 0)]
    by_id = {s["id"]: s for s in data["sessions"]}
    assert by_id["aaaaaa"]["state"] == "done" and by_id["bbbbbb"]["state"] == "error"
    assert by_id["cccccc"]["state"] == "receiving" and by_id["cccccc"]["acquisitions"] == 10
    done = by_id["aaaaaa"]
    assert (done["protocol"], done["module"], done["images_out"], done["bytes_in"]) == ("t1_mprage", "simplefft",
                                                                                         2, 1_000_000)
    assert done["mb_per_s"] == pytest.approx(1e6 / 1.5 / 1e6, abs=0.01)
    assert served.json("/api/sessions/cccccc")["id"] == "cccccc"
    assert served.get("/api/sessions/ffffff")[0] == 404


def test_finished_history_is_capped_at_200(serve):
    board = Board()
    now = time.time()
    for i in range(205):
        feed_session(board, f"{i:06x}", start=now - 1000 + i)
        board.emit({"type": "session_thumbnail", "id": f"{i:06x}", "png": png_bytes()})
    feed_session(board, "running", start=now, end=None)
    data = serve(board).json("/api/sessions")
    ids = [s["id"] for s in data["sessions"]]
    assert len(ids) == 201 and ids[0] == "running"
    assert ids[1:] == [f"{i:06x}" for i in range(204, 4, -1)]
    assert board.thumbnail(f"{4:06x}") is None and board.thumbnail(f"{5:06x}") is not None
    assert sum(len(s["sessions"]) for s in data["stations"]) == 201


def test_thumbnail_served_and_bad_png_dropped(serve):
    board = Board()
    feed_session(board, "abcdef", end=None)
    served = serve(board)
    assert served.get("/api/sessions/abcdef/thumbnail.png")[0] == 404
    png = png_bytes(48)
    board.emit({"type": "session_thumbnail", "id": "abcdef", "png": png})
    status, headers, body = served.get("/api/sessions/abcdef/thumbnail.png?v=1")
    assert (status, headers["Content-Type"], body) == (200, "image/png", png)
    assert board.session("abcdef")["thumbnail"] == 1
    board.emit({"type": "session_thumbnail", "id": "abcdef", "png": b"GIF89a not a png"})
    assert board.session("abcdef")["thumbnail"] == 1
    assert served.get("/api/sessions/abcdef/thumbnail.png")[2] == png


def test_thumbnail_versions_at_most_once_a_second_newest_png_served(serve):
    board = Board()
    feed_session(board, "abcdef", end=None)
    served = serve(board)
    first, second, third = png_bytes(shade=10), png_bytes(shade=20), png_bytes(shade=30)
    board.emit({"type": "session_thumbnail", "id": "abcdef", "png": first})
    board.emit({"type": "session_thumbnail", "id": "abcdef", "png": second})  # 0.5 s later, say: held back
    assert board.session("abcdef")["thumbnail"] == 1
    assert served.get("/api/sessions/abcdef/thumbnail.png?v=1")[2] == second  # the newest PNG all the same
    board.emit({"type": "session_progress", "id": "abcdef", "state": "receiving"})
    assert board.session("abcdef")["thumbnail"] == 1  # still within the second
    board.emit({"type": "session_thumbnail", "id": "abcdef", "png": third})
    board.emit({"type": "session_ended", "id": "abcdef", "state": "done"})  # the end announces the held one
    assert board.session("abcdef")["thumbnail"] == 2
    assert served.get("/api/sessions/abcdef/thumbnail.png?v=2")[2] == third


def test_held_thumbnail_announced_by_the_next_progress(monkeypatch):
    monkeypatch.setattr(web.board, "THUMBNAIL_MIN_S", 0.05)
    board = Board()
    feed_session(board, "abcdef", end=None)
    board.emit({"type": "session_thumbnail", "id": "abcdef", "png": png_bytes(shade=10)})
    board.emit({"type": "session_thumbnail", "id": "abcdef", "png": png_bytes(shade=20)})
    assert board.session("abcdef")["thumbnail"] == 1
    time.sleep(0.1)
    board.emit({"type": "session_progress", "id": "abcdef", "state": "reconstructing"})
    assert board.session("abcdef")["thumbnail"] == 2


def test_bad_events_are_dropped_never_raised():
    board = Board()
    feed_session(board, "abcdef", end=None)
    for event in (None, "text", {}, {"type": "nonsense", "id": "abcdef"}, {"type": "session_progress"},
                  {"type": "session_progress", "id": "../../x", "state": "receiving"},
                  {"type": "session_progress", "id": "abcdef", "state": "sleeping"},
                  {"type": "session_ended", "id": "abcdef", "state": "whatever"},
                  {"type": "session_qa", "id": "abcdef", "qa": "FAIL"},
                  {"type": "session_thumbnail", "id": "abcdef", "png": "not bytes"}):
        board.emit(event)
    board.emit({"type": "session_progress", "id": "unknown", "state": "receiving"})  # not held: dropped quietly
    assert board.session("unknown") is None
    assert board.session("abcdef")["state"] == "receiving"
    assert metric_values(scrape(board))[("mrd_dashboard_bad_events_total", ())] == 10


def scrape(board: Board) -> str:
    from prometheus_client import generate_latest
    return generate_latest(board.registry).decode()


def test_emit_from_many_threads_counts_every_byte():
    board = Board()
    threads = [threading.Thread(target=lambda k=k: [feed_session(board, f"{k:02x}{i:04x}", bytes_in=1000)
                                                    for i in range(50)]) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    values = metric_values(scrape(board))
    assert values[("mrd_received_bytes_total", ())] == 8 * 50 * 1000
    assert values[("mrd_sessions_active", ())] == 0
    assert len(board.snapshot()["sessions"]) == 200


# -- the websocket ----------------------------------------------------------------------------------
def test_websocket_snapshot_then_events(serve):
    board = Board()
    feed_session(board, "aaaaaa")
    served = serve(board, flush_s=0.2)

    def during() -> None:
        feed_session(board, "bbbbbb", end=None)
        board.emit({"type": "session_thumbnail", "id": "bbbbbb", "png": png_bytes()})
        board.emit({"type": "session_text", "id": "bbbbbb", "level": "ERROR", "text": "the module failed"})
        time.sleep(0.5)  # the next flush
        board.emit({"type": "session_ended", "id": "bbbbbb", "state": "error", "module": "simplefft"})
        board.emit({"type": "session_ended", "id": "aaaaaa", "state": "done"})  # a repeat: counts only

    messages = ws_messages(served.url + "/ws", None, during,
                           until=lambda m: m.get("session", {}).get("state") == "error")
    snapshot = messages[0]
    assert snapshot["type"] == "snapshot" and [s["id"] for s in snapshot["sessions"]] == ["aaaaaa"]
    assert snapshot["stations"][0]["name"] == "AWP1"
    events = messages[1:]
    assert all(m["type"] == "session" for m in events)
    assert [m["seq"] for m in events] == sorted(m["seq"] for m in events)
    # five events within one flush: one message with the last state
    first = [m["session"] for m in events if m["session"]["id"] == "bbbbbb"][0]
    assert first["state"] == "receiving" and first["bytes_in"] == 500_000
    assert first["thumbnail"] == 1  # a version number: the page fetches the PNG itself
    assert first["texts"][-1]["text"] == "the module failed"
    assert "png" not in json.dumps(events)
    assert [m["session"]["state"] for m in events if m["session"]["id"] == "bbbbbb"] == ["receiving", "error"]
    assert len(events) == 3  # and aaaaaa's repeated end, in the second flush


def _read_ws_frames(sock: socket.socket, deadline: float) -> list[dict]:
    """Parse the server's unmasked websocket text frames from a raw socket until it goes quiet."""
    received = bytearray()
    sock.settimeout(1.0)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            break
        if not chunk:
            break
        received += chunk
    head, _, data = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head[:200]
    messages, pos = [], 0
    while pos + 2 <= len(data):
        length = data[pos + 1] & 0x7F
        pos += 2
        if length == 126:
            length, pos = int.from_bytes(data[pos:pos + 2], "big"), pos + 2
        elif length == 127:
            length, pos = int.from_bytes(data[pos:pos + 8], "big"), pos + 8
        if pos + length > len(data):
            break
        messages.append(json.loads(data[pos:pos + length]))
        pos += length
    return messages


def test_browser_that_never_reads_gets_a_snapshot_and_slows_nobody(serve):
    board = Board()
    feed_session(board, "abcdef", end=None)
    for i in range(20):  # ~20 kB per page message: the stuck browser's socket fills after a few hundred
        board.emit({"type": "session_text", "id": "abcdef", "level": "WARNING", "text": f"{i} " + "x" * 990})
    served = serve(board, client_queue=16, flush_s=0)  # a frame per event (nearly): the queue fills fast

    stuck = socket.create_connection(("127.0.0.1", served.port))
    stuck.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    n_events = 1500
    durations = []

    def emit_all() -> None:
        for i in range(n_events):
            t0 = time.perf_counter()
            board.emit({"type": "session_progress", "id": "abcdef", "state": "receiving", "acquisitions": i,
                        "bytes_in": i * 1000, "elapsed": 1 + i})
            durations.append(time.perf_counter() - t0)
            time.sleep(0.0005)  # lets the web thread flush: frames of one or few events

    def latest(message: dict) -> dict:
        return message["sessions"][0] if message["type"] == "snapshot" else message["session"]

    # a browser that reads: it has the last state at once, whatever the stuck one does
    messages = ws_messages(served.url + "/ws", None, emit_all, timeout=10,
                           until=lambda m: len(durations) == n_events and latest(m)["acquisitions"] == n_events - 1)
    assert [latest(m)["acquisitions"] for m in messages[1:]] == sorted(latest(m)["acquisitions"] for m in messages[1:])
    assert max(durations) < 0.1 and sum(durations) < 3.0, (max(durations), sum(durations))
    resyncs = metric_values(scrape(board))[("mrd_dashboard_resyncs_total", ())]
    assert resyncs >= 1

    got = [m for frame in _read_ws_frames(stuck, time.monotonic() + 20)
           for m in (frame["messages"] if frame["type"] == "batch" else [frame])]
    stuck.close()
    kinds = [m["type"] for m in got]
    assert kinds[0] == "snapshot" and "snapshot" in kinds[1:], kinds[:5]
    assert len(got) < 1 + n_events  # it missed events, and got the state instead
    assert latest(got[-1])["acquisitions"] == n_events - 1  # and caught up with the last state


# -- /healthz and /metrics -----------------------------------------------------------------------
def test_healthz_follows_the_health_callable(serve):
    state = {"accepting": True, "sessions": 3}
    served = serve(Board(), health=lambda: (state["accepting"], {"sessions": state["sessions"]}))
    status, headers, body = served.get("/healthz")
    data = json.loads(body)
    assert status == 200 and data["status"] == "ok" and data["sessions"] == 3 and data["version"]
    state.update(accepting=False, sessions=4)
    status, _, body = served.get("/healthz")
    assert status == 503 and json.loads(body)["status"] == "unavailable" and json.loads(body)["sessions"] == 4


def test_metrics_parse_and_count_the_events(serve):
    board = Board()
    feed_session(board, "aaaaaa", module="simplefft", bytes_in=1000, images_out=2)
    feed_session(board, "bbbbbb", module="simplefft", end="error", bytes_in=3000, images_out=0)
    feed_session(board, "cccccc", module="invertcontrast", end=None, bytes_in=2000)
    board.emit({"type": "session_ended", "id": "dddddd", "state": "done"})  # never started: not counted
    qa = {"status": "FAIL", "deviations": [{"name": "TR", "actual": "6.0 ms", "expected": "5.2 ms"}]}
    board.emit({"type": "session_qa", "id": "aaaaaa", "qa": qa})
    board.emit({"type": "session_qa", "id": "aaaaaa", "qa": {"status": "PASS"}})  # one per session
    board.emit({"type": "session_qa", "id": "cccccc", "qa": {"status": "NO-REFERENCE"}})
    status, headers, body = serve(board).get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    values = metric_values(body.decode())
    assert values[("mrd_sessions_started_total", (("module", "simplefft"),))] == 2
    assert values[("mrd_sessions_started_total", (("module", "invertcontrast"),))] == 1
    assert values[("mrd_sessions_failed_total", (("module", "simplefft"),))] == 1
    assert ("mrd_sessions_failed_total", (("module", "invertcontrast"),)) not in values
    assert values[("mrd_sessions_active", ())] == 1
    assert values[("mrd_received_bytes_total", ())] == 1000 + 3000 + 1000  # the running one: half so far
    assert values[("mrd_sent_bytes_total", ())] == 10000
    assert values[("mrd_images_sent_total", ())] == 2
    assert values[("mrd_session_duration_seconds_count", ())] == 2
    assert values[("mrd_session_duration_seconds_sum", ())] == pytest.approx(3.0)
    assert values[("mrd_qa_results_total", (("result", "FAIL"),))] == 1
    assert values[("mrd_qa_results_total", (("result", "NO-REFERENCE"),))] == 1
    assert ("mrd_qa_results_total", (("result", "PASS"),)) not in values


# -- access -----------------------------------------------------------------------------------------
def test_refused_address_gets_nothing(serve):
    served = serve(Board(), allow=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")))
    for path in ("/healthz", "/", "/metrics"):
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            try:
                answer = sock.recv(1024)
            except ConnectionResetError:
                answer = b""
        assert answer == b"", answer  # closed: not even an HTTP status line
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # urllib: "Remote end closed connection"
        urllib.request.urlopen(served.url + "/healthz", timeout=5)


def test_allowed_address_is_served(serve):
    served = serve(Board(), allow=(ipaddress.ip_network("127.0.0.0/8"),))
    assert served.get("/healthz")[0] == 200


def test_token_required_except_healthz_and_metrics(serve):
    board = Board()
    feed_session(board, "abcdef")
    board.emit({"type": "session_thumbnail", "id": "abcdef", "png": png_bytes()})
    served = serve(board, token=TOKEN)
    paths = ("/", "/static/app.js", "/static/style.css", "/api/sessions", "/api/sessions/abcdef",
             "/api/sessions/abcdef/thumbnail.png", "/ws")
    for path in paths:
        assert served.get(path)[0] == 401, path
        assert served.get(path + "?token=wrong")[0] == 401, path
        assert served.get(path, {"Authorization": "Bearer wrong"})[0] == 401, path
    for path in paths[:-1]:
        assert served.get(path + "?token=" + TOKEN)[0] == 200, path
        assert served.get(path, {"Authorization": "Bearer " + TOKEN})[0] == 200, path
    assert served.get("/healthz")[0] == 200
    assert served.get("/metrics")[0] == 200
    # the page hands its token on to its own assets (a browser cannot send a header for them)
    page = served.get("/?token=" + TOKEN)[2].decode()
    assert f'src="static/app.js?token={TOKEN}"' in page and f'href="static/style.css?token={TOKEN}"' in page
    assert len(ws_messages(f"{served.url}/ws?token={TOKEN}", 1)) == 1


def test_websocket_refuses_other_sites(serve):
    served = serve(Board())
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        ws_messages(served.url + "/ws", 1, headers={"Origin": "http://evil.example"})
    assert refused.value.status == 403
    assert ws_messages(served.url + "/ws", 1, headers={"Origin": served.url})[0]["type"] == "snapshot"


def test_accept_reference_needs_the_token_in_a_header_and_the_same_origin(serve):
    board = Board()
    feed_session(board, "abcdef")
    board.emit({"type": "session_qa", "id": "abcdef", "qa": {
        "status": "FAIL", "deviations": [{"name": "TR", "actual": "6.0 ms", "expected": "5.2 ms"}]}})
    calls = []

    def qa_accept(sid: str):
        calls.append(sid)
        return {"status": "PASS", "deviations": [], "text": "QA PASS", "reference_count": 1} if sid == "abcdef" else None

    no_token = serve(board, qa_accept=qa_accept)
    assert no_token.get("/api/qa/abcdef/accept", method="POST")[0] == 403  # no token configured: never
    served = serve(board, token=TOKEN, qa_accept=qa_accept)
    bearer = {"Authorization": "Bearer " + TOKEN}
    assert served.get("/api/qa/abcdef/accept", method="POST")[0] == 401
    assert served.get("/api/qa/abcdef/accept?token=" + TOKEN, method="POST")[0] == 401  # not in the query
    assert served.get("/api/qa/abcdef/accept", {"Cookie": "token=" + TOKEN}, method="POST")[0] == 401
    assert served.get("/api/qa/abcdef/accept", {**bearer, "Origin": "http://evil.example"}, method="POST")[0] == 403
    assert served.get("/api/qa/abcdef/accept", {**bearer, "Sec-Fetch-Site": "cross-site"}, method="POST")[0] == 403
    assert served.get("/api/qa/abcdef/accept", method="GET")[0] == 401
    assert calls == []
    status, _, body = served.get("/api/qa/abcdef/accept", {**bearer, "Origin": served.url}, method="POST")
    assert status == 200 and json.loads(body)["qa"]["status"] == "PASS"
    assert calls == ["abcdef"] and board.session("abcdef")["qa"]["status"] == "PASS"
    assert served.get("/api/qa/ffffff/accept", bearer, method="POST")[0] == 404
    assert serve(board, token=TOKEN).get("/api/qa/abcdef/accept", bearer, method="POST")[0] == 501


# -- patient data ---------------------------------------------------------------------------------
def _everything(served: Served, board: Board) -> list[tuple[str, str]]:
    """Every API, page and websocket answer, and the metrics, as text."""
    texts = [(path, served.get(path)[2].decode(errors="replace"))
             for path in ("/", "/static/app.js", "/api/sessions", "/api/sessions/abcdef", "/metrics", "/healthz")]
    texts.append(("/ws", json.dumps(ws_messages(served.url + "/ws", 1))))
    return texts


def test_no_patient_data_unless_show_patient(serve):
    for show in (False, True):
        board = Board(show_patient=show)
        feed_session(board, "abcdef", end=None, protocol="t1_for_PID-12345")
        board.emit({"type": "session_text", "id": "abcdef", "level": "ERROR",
                    "text": "cannot read the file of Doe^Jane (jane doe, born 19700101)"})
        board.emit({"type": "session_qa", "id": "abcdef", "qa": {
            "status": "FAIL", "text": "Doe^Jane", "deviations": [{"name": "TR", "actual": "6", "expected": "5"}]}})
        served = serve(board)
        texts = _everything(served, board)
        found = [(path, s) for path, text in texts for s in PATIENT_STRINGS if s.lower() in text.lower()]
        if show:
            assert board.session("abcdef")["patient"] == PATIENT
            assert any(path == "/api/sessions" for path, _ in found)
        else:
            assert found == []
            assert "[patient]" in board.session("abcdef")["texts"][0]["text"]
