"""A stub inference server FOR TESTING ONLY: it speaks the task API of mathiser/inference_server
(v1 and v2 on one port) with toy models, so that ``ai/client.py`` and ``modules/inference.py`` can be
tested, and tried, without a GPU box. It is not a real inference server: no models of any use, no
persistence (tasks live in memory), no TLS.

Usage: ``python tools/inference_stub_server.py [-H 127.0.0.1] [-p PORT] [--delay S] [--token T] [-v]``

``-p 0`` (the default) takes a free port; the line ``listening on HOST:PORT`` (logged to stderr at
start) names it. SIGTERM or Ctrl-C stops the server, exit status 0.

API (as the real server's):

* v2: ``POST /api/tasks/?human_readable_id=MODEL`` with the multipart field ``tar_file`` (a tar of
  the inputs) answers the task as JSON (``{"uid": ..., ...}``); an unknown model answers 404 with
  ``{"detail": ...}``. ``GET /api/tasks/outputs/?uid=UID`` answers ``output.tar.gz`` (a gzipped tar).
* v1: ``POST /api/tasks/?model_human_readable_id=MODEL`` with the field ``zip_file`` (a zip)
  answers the uid as a JSON string; ``GET /api/tasks/UID`` answers the output zip, 550 for an
  unknown model.
* Until ``--delay`` seconds have passed since the submission a GET answers 551 (pending); an unknown
  uid 554. With ``--token T`` a request to ``/api/`` without the header ``X-Token: T`` gets 401.

The inputs are nnU-Net style: ``tmp_0000.nii.gz`` (read with nibabel; further ``tmp_000N`` volumes
and the ``.meta.json`` files are recorded, not used). The output is ``tmp.nii.gz`` (labels) and
``tmp.json`` (label value → name).

Models: ``threshold`` (:func:`threshold_model`); for failure tests ``fail`` (552), ``lost`` (553),
``never`` (551 for ever), ``garbage`` (200 with bytes that are no archive), ``empty`` (an archive
without a NIfTI), ``badshape`` (labels of another shape, the input's affine), ``float`` (float32
labels with a value 0.5). An input that nibabel cannot read fails the task (552).

Test introspection: ``GET /stub/tasks`` answers a JSON list, one entry per task:
``{"uid", "model", "api", "members", "token", "nifti_descrip", "meta", "polls"}`` (the received
member names, the X-Token header or null, the first volume's NIfTI ``descrip``, the parsed
meta.json files by member name, and how many output GETs the task had).
"""
from __future__ import annotations

import argparse
import email.parser
import email.policy
import gzip
import io
import json
import logging
import signal
import sys
import tarfile
import threading
import time
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import nibabel as nib
import numpy as np
import scipy.ndimage

log = logging.getLogger("inference_stub")

MODELS = ("threshold", "fail", "lost", "never", "garbage", "empty", "badshape", "float")
MAX_LABELS = 8
MAX_BODY = 1 << 30
OUTPUT_NAME = "tmp"


def threshold_model(data: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    """The toy model: voxels above half of the maximum, their connected components (scipy.ndimage.label,
    default structure), the up to 8 largest (ties: the one whose first voxel in C order comes first)
    labelled 1..k as uint16; names ``{"1": "region_1", ...}``. Deterministic."""
    data = np.asarray(data, dtype=np.float64)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(data.shape, np.uint16), {}
    components, n = scipy.ndimage.label(data > finite.max() / 2)
    if n == 0:
        return np.zeros(data.shape, np.uint16), {}
    sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
    values, first = np.unique(components.ravel(), return_index=True)  # first voxel of each component
    first = first[values > 0]
    keep = np.lexsort((first, -sizes))[:MAX_LABELS]  # largest first, then by first voxel
    relabel = np.zeros(n + 1, np.uint16)
    relabel[keep + 1] = np.arange(1, len(keep) + 1, dtype=np.uint16)
    return relabel[components], {str(i): f"region_{i}" for i in range(1, len(keep) + 1)}


# ------------------------------------------------------------------------------------------- tasks

class Task:
    def __init__(self, uid: str, model: str, api: str, members: dict[str, bytes], token: str | None, delay: float):
        self.uid, self.model, self.api, self.token = uid, model, api, token
        self.ready_at = time.monotonic() + delay
        self.member_names = list(members)
        self.polls = 0
        self.descrip: str | None = None
        self.meta: dict[str, Any] = {}
        self.output: bytes | None = None  # the archive to serve once ready
        self.status = 200  # or the status a GET answers once ready
        self.error = ""
        self._run(members)

    def _run(self, members: dict[str, bytes]) -> None:
        for name, data in members.items():
            if name.endswith(".json"):
                try:
                    self.meta[name] = json.loads(data)
                except ValueError:
                    self.meta[name] = None
        if self.model in ("fail", "lost", "never"):
            self.status = {"fail": 552, "lost": 553, "never": 551}[self.model]
            return
        if self.model not in MODELS:  # v1: the real server accepts the task, the GET answers 550
            self.status, self.error = 550, f"no model with human_readable_id '{self.model}'"
            return
        if self.model == "garbage":
            self.output = b"this is not an archive, only a stub's garbage\n" * 4
            return
        try:
            img = nib.Nifti1Image.from_bytes(_gunzip(members["tmp_0000.nii.gz"]))
            self.descrip = img.header["descrip"].tobytes().rstrip(b"\0").decode("latin-1")
            data = np.asanyarray(img.dataobj)
        except Exception as exc:  # noqa: BLE001 - any unreadable input fails the task, as a real model would
            self.status, self.error = 552, f"the input could not be read: {type(exc).__name__}: {exc}"
            log.warning("task %s: %s", self.uid, self.error)
            return
        labels, names = threshold_model(data)
        if self.model == "badshape":
            labels = np.zeros(tuple(s + 1 for s in labels.shape), np.uint16)
        elif self.model == "float":
            labels = labels.astype(np.float32)
            labels.flat[0] = 0.5
        out = nib.Nifti1Image(labels, img.affine)
        out.header["descrip"] = b"inference stub"
        files = {f"{OUTPUT_NAME}.json": json.dumps(names).encode()}
        if self.model != "empty":
            files[f"{OUTPUT_NAME}.nii.gz"] = gzip.compress(out.to_bytes(), compresslevel=1)
        self.output = _zip(files) if self.api == "v1" else _tar_gz(files)

    def introspection(self) -> dict[str, Any]:
        return {"uid": self.uid, "model": self.model, "api": self.api, "members": self.member_names,
                "token": self.token, "nifti_descrip": self.descrip, "meta": self.meta, "polls": self.polls}


def _gunzip(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(time.time())
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _unpack(data: bytes, api: str) -> dict[str, bytes]:
    """The files of an input archive (v1 zip, v2 tar of any compression) by base name."""
    if api == "v1":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return {i.filename.rsplit("/", 1)[-1]: zf.read(i) for i in zf.infolist() if not i.is_dir()}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
        return {m.name.rsplit("/", 1)[-1]: tf.extractfile(m).read() for m in tf if m.isfile()}


def _multipart_files(content_type: str, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart/form-data body by field name."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        return {}
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in msg.iter_parts()}


# ------------------------------------------------------------------------------------------- HTTP

class StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], delay: float, token: str | None):
        super().__init__(address, Handler)
        self.delay, self.token = delay, token
        self.tasks: dict[str, Task] = {}
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server: StubServer
    server_version = "inference-stub/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              filename: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if filename:
            self.send_header("Content-Disposition", f'attachment; filename="{filename}"')
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode())

    def _authorised(self) -> bool:
        if self.server.token is not None and self.headers.get("X-Token") != self.server.token:
            self._json(401, {"detail": "Authentication error"})
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/stub/tasks":
            with self.server.lock:
                tasks = [t.introspection() for t in self.server.tasks.values()]
            return self._json(200, tasks)
        if not url.path.startswith("/api/"):
            return self._json(404, {"detail": "Not Found"})
        if not self._authorised():
            return None
        if url.path.rstrip("/") == "/api/tasks/outputs":
            uid = query.get("uid", [""])[0]
        elif url.path.startswith("/api/tasks/") and url.path.count("/") == 3:
            uid = url.path.rsplit("/", 1)[1]
        else:
            return self._json(404, {"detail": "Not Found"})
        with self.server.lock:
            task = self.server.tasks.get(uid)
            if task:
                task.polls += 1
        if task is None:
            return self._json(554, {"detail": f"no task with uid {uid!r}"})
        if time.monotonic() < task.ready_at or task.status == 551:
            return self._json(551, {"detail": "Job status is 'pending' or 'running'"})
        if task.status != 200:
            return self._json(task.status, {"detail": task.error or f"stub model {task.model!r}"})
        if task.api == "v1":
            return self._send(200, task.output, "application/zip", "output.zip")
        return self._send(200, task.output, "application/gzip", "output.tar.gz")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return self._json(413, {"detail": "request too large for the stub"})
        body = self.rfile.read(length)  # read before any answer: the client is still sending
        url = urlsplit(self.path)
        if url.path.rstrip("/") != "/api/tasks":
            return self._json(404, {"detail": "Not Found"})
        if not self._authorised():
            return None
        query = parse_qs(url.query)
        if "human_readable_id" in query:
            api, model, field = "v2", query["human_readable_id"][0], "tar_file"
        elif "model_human_readable_id" in query:
            api, model, field = "v1", query["model_human_readable_id"][0], "zip_file"
        else:
            return self._json(422, {"detail": "human_readable_id (v2) or model_human_readable_id (v1) missing"})
        if api == "v2" and model not in MODELS:
            return self._json(404, {"detail": f"no model with human_readable_id '{model}'"})
        archive = _multipart_files(self.headers.get("Content-Type", ""), body).get(field)
        if archive is None:
            return self._json(422, {"detail": f"field {field!r} missing"})
        try:
            members = _unpack(archive, api)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
            return self._json(400, {"detail": f"the {field} is no archive: {exc}"})
        task = Task(uuid.uuid4().hex, model, api, members, self.headers.get("X-Token"), self.server.delay)
        with self.server.lock:
            self.server.tasks[task.uid] = task
        log.info("task %s: model %s, api %s, files %s", task.uid, model, api, ", ".join(task.member_names))
        return self._json(200, task.uid if api == "v1" else {"uid": task.uid, "human_readable_id": model,
                                                              "status": -1, "is_deleted": 0})


# ------------------------------------------------------------------------------------------- main

class _Stop(Exception):
    pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Stub inference server (mathiser/inference_server task API v1 and v2) FOR TESTING ONLY, "
                    "not a real inference server: toy models (threshold, and failure models fail, lost, never, "
                    "garbage, empty, badshape, float), tasks in memory, no TLS.")
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("-p", "--port", type=int, default=0, help="port (default 0: a free one, logged at start)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds a task stays pending (551), default 0")
    parser.add_argument("--token", help="require this X-Token header on /api/ requests (else 401)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"port {args.port} is not in 0..65535")
    if args.delay < 0:
        parser.error("--delay must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        httpd = StubServer((args.host, args.port), args.delay, args.token)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 1

    def on_signal(signum: int, _frame: object) -> None:
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    host, port = httpd.server_address[:2]
    log.info("listening on %s:%d (stub inference server for testing only, delay %g s%s)",
             host, port, args.delay, ", token required" if args.token else "")
    try:
        httpd.serve_forever(poll_interval=0.2)
    except _Stop as stop:
        log.info("received %s: stopping", stop)
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
