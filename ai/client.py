"""HTTP client of an inference server with the task API of mathiser/inference_server.

One task: the inputs (member name → bytes, nnU-Net style ``tmp_0000.nii.gz``, ``tmp_0000.meta.json``,
…) are packed into one archive and posted; the output URL is polled until the server offers the
output archive, whose members come back as a dict. Two API versions:

* ``v2`` (default): ``POST {url}/api/tasks/?human_readable_id={model}`` with the multipart field
  ``tar_file`` (a plain, uncompressed tar: the NIfTI members are gzipped already) answers the task
  object as JSON, of which the client takes ``uid``; ``GET {url}/api/tasks/outputs/?uid={uid}``
  answers the output tar (the real server sends ``output.tar.gz``) once the task has finished.
* ``v1``: ``POST {url}/api/tasks/?model_human_readable_id={model}`` with the field ``zip_file`` (a
  zip, stored without compression) answers the uid as a JSON string; ``GET {url}/api/tasks/{uid}``
  answers the output zip.

While there is no output the GET answers 551 (pending or running: poll again), 552 (failed or
deleted), 553 (finished but the output is missing), 554 (no such task), 550 (v1: no such model) or
500. The first poll follows the submission at once; then the client waits ``poll_s``, ×1.5 after
every pending answer up to ``max(poll_s, 10 s)``, and never past the deadline (``timeout_s`` for
submission and polling together; each request waits at most ``request_timeout_s`` and never past
the deadline). An ``X-Token`` header goes with every request when a token is configured.

The output archive is recognised from its bytes (tar, gzipped or other compressed tar, zip). Its
members come back under their base names; directories and links are skipped, absolute names and
names with ``..`` are refused, and the unpacked size is capped (``MAX_UNPACKED_BYTES``, 2 GiB)
against archive bombs. Every failure raises :class:`InferenceError` with its cause in words.
"""
from __future__ import annotations

import io
import json
import logging
import re
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Mapping
from urllib.parse import quote

import requests

log = logging.getLogger(__name__)

API_VERSIONS = ("v2", "v1")
MAX_UNPACKED_BYTES = 2 * 1024 ** 3  # output archive: members together, and the download itself
MAX_MEMBERS = 10_000
BACKOFF = 1.5  # the poll interval grows by this factor after every pending answer ...
MAX_POLL_S = 10.0  # ... up to max(poll_s, MAX_POLL_S)
PENDING = 551
STATUS_WORDS = {550: "no such model", 551: "pending or running", 552: "failed or deleted",
                553: "finished but its output is missing", 554: "no such task"}


class InferenceError(Exception):
    """A task could not be run on the inference server; the message says why. ``status``: the HTTP
    status that caused it, where one did."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InferenceSettings:
    """Where and how to run a task.

    ``url``: the server's base URL (``https://host:port``); ``model``: the model's human readable
    id; ``api``: ``"v2"`` or ``"v1"``; ``timeout_s``: the deadline of the whole task (submission and
    polling); ``poll_s``: the first poll interval; ``verify_tls``: certificate verification (True,
    False, or the path of a CA bundle); ``token``: sent as ``X-Token``; ``request_timeout_s``: the
    longest wait for one answer."""

    url: str
    model: str
    api: str = "v2"
    timeout_s: float = 300.0
    poll_s: float = 2.0
    verify_tls: bool | str = True
    token: str | None = None
    request_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.api not in API_VERSIONS:
            raise ValueError(f"inference api must be one of {', '.join(API_VERSIONS)}, not {self.api!r}")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"inference url must start with http:// or https://, not {self.url!r}")
        if not self.model:
            raise ValueError("inference model must be named")
        for name in ("timeout_s", "poll_s", "request_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"inference {name} must be positive, not {getattr(self, name)!r}")

    def endpoint(self, path: str) -> str:
        return self.url.rstrip("/") + path

    def headers(self) -> dict[str, str]:
        return {"X-Token": self.token} if self.token else {}


# ----------------------------------------------------------------------------------------- archives

def pack_inputs(api: str, inputs: Mapping[str, bytes]) -> bytes:
    """The archive of ``inputs`` (member name → bytes) for ``api``: a plain tar (v2) or a stored zip (v1)."""
    if not inputs:
        raise ValueError("no inputs to send")
    buf = io.BytesIO()
    if api == "v1":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for name, data in inputs.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for name, data in inputs.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _member_name(name: str) -> str:
    """The base name of an archive member; InferenceError for an absolute name or one with ``..``."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
        raise InferenceError(f"the output archive holds an unsafe member name {name!r}")
    return path.name


def unpack_output(data: bytes, *, max_bytes: int = MAX_UNPACKED_BYTES) -> dict[str, bytes]:
    """The files of an output archive (tar, compressed tar or zip, told from the bytes) by base name."""
    members: list[tuple[str, int, Callable[[], bytes]]] = []  # (name, size, read)
    too_many = InferenceError(f"the output archive holds more than {MAX_MEMBERS} entries")
    try:
        if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip (an empty one: just the end record)
            zf = zipfile.ZipFile(io.BytesIO(data))
            if len(zf.infolist()) > MAX_MEMBERS:
                raise too_many
            members = [(i.filename, i.file_size, lambda i=i: zf.read(i)) for i in zf.infolist() if not i.is_dir()]
        else:
            tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # plain, gz, bz2 or xz
            for count, m in enumerate(tf, 1):
                if count > MAX_MEMBERS:
                    raise too_many
                if m.isfile():
                    members.append((m.name, m.size, lambda m=m: tf.extractfile(m).read()))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise InferenceError(f"the output is not a tar or zip archive ({type(exc).__name__}: {exc})") from None
    total = sum(size for _, size, _ in members)
    if total > max_bytes:
        raise InferenceError(f"the output archive unpacks to {total} bytes (at most {max_bytes})")
    out: dict[str, bytes] = {}
    for name, _, read in members:
        base = _member_name(name)
        if base in out:
            raise InferenceError(f"the output archive holds two files named {base!r}")
        try:
            out[base] = read()
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
            raise InferenceError(f"the output archive is damaged at {name!r}: {exc}") from None
    return out


# ------------------------------------------------------------------------------------------- HTTP

def _reason(exc: requests.RequestException) -> str:
    """The cause of a failed request in a few words: 'Connection refused', 'certificate verify failed: …'."""
    text = str(exc)
    found = (re.search(r"certificate verify failed[^'\")]*", text) or re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text))
    if found:
        return found.group(found.lastindex or 0).strip()
    return text if len(text) <= 200 else text[:200] + "…"


def _excerpt(resp: requests.Response, limit: int = 200) -> str:
    """A short excerpt of an error answer (the ``detail`` of a JSON body, else its text)."""
    try:
        body = resp.json()
        text = str(body.get("detail", body)) if isinstance(body, dict) else str(body)
    except ValueError:
        text = resp.text
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _http_error(settings: InferenceSettings, resp: requests.Response, what: str) -> InferenceError:
    code = resp.status_code
    hint = ": check the inference token" if code in (401, 403) else ""
    return InferenceError(f"inference server {settings.url} answered HTTP {code} to {what}{hint}: {_excerpt(resp)}",
                          code)


def _request(settings: InferenceSettings, session: requests.Session, method: str, url: str, timeout_s: float,
             **kwargs) -> requests.Response:
    try:
        return session.request(method, url, headers=settings.headers(), verify=settings.verify_tls,
                               timeout=timeout_s, **kwargs)
    except requests.Timeout:
        raise InferenceError(f"inference server {settings.url} did not answer within {timeout_s:.3g} s") from None
    except requests.ConnectionError as exc:
        raise InferenceError(f"inference server {settings.url} unreachable: {_reason(exc)}") from None
    except requests.RequestException as exc:
        raise InferenceError(f"request to inference server {settings.url} failed: {_reason(exc)}") from None


def submit_task(settings: InferenceSettings, archive: bytes, *, session: requests.Session | None = None,
                timeout_s: float | None = None) -> str:
    """Post ``archive`` (from :func:`pack_inputs`) as a task of ``settings.model``; the task's uid."""
    if settings.api == "v1":
        params, field, filename = {"model_human_readable_id": settings.model}, "zip_file", "input.zip"
    else:
        params, field, filename = {"human_readable_id": settings.model}, "tar_file", "input.tar"
    with _session(session) as s:
        resp = _request(settings, s, "POST", settings.endpoint("/api/tasks/"),
                        timeout_s or settings.request_timeout_s, params=params,
                        files={field: (filename, archive, "application/octet-stream")})
    if resp.status_code == 550:
        raise InferenceError(f"550: no such model {settings.model!r} on inference server {settings.url}", 550)
    if not resp.ok:
        raise _http_error(settings, resp, f"the task for model {settings.model!r}")
    try:
        body = resp.json()
    except ValueError:
        body = None
    uid = body.get("uid") if isinstance(body, dict) else body
    if not isinstance(uid, (str, int)) or isinstance(uid, bool) or str(uid) == "":
        raise InferenceError(f"inference server {settings.url} accepted the task but named no task uid: "
                             f"{_excerpt(resp)}")
    return str(uid)


def poll_output(settings: InferenceSettings, uid: str, *, session: requests.Session | None = None,
                timeout_s: float | None = None, max_bytes: int = MAX_UNPACKED_BYTES) -> bytes | None:
    """One look at task ``uid``: the output archive's bytes, None while it is pending or running (551),
    else InferenceError."""
    if settings.api == "v1":
        url, params = settings.endpoint(f"/api/tasks/{quote(uid, safe='')}"), None
    else:
        url, params = settings.endpoint("/api/tasks/outputs/"), {"uid": uid}
    with _session(session) as s:
        resp = _request(settings, s, "GET", url, timeout_s or settings.request_timeout_s, params=params, stream=True)
        with resp:
            code = resp.status_code
            if code == PENDING:
                return None
            if code == 550:
                raise InferenceError(f"task {uid}: 550: no such model {settings.model!r} on inference server "
                                     f"{settings.url}", code)
            if code == 552:
                raise InferenceError(f"task {uid} failed on the inference server (552: {STATUS_WORDS[code]}): "
                                     f"{_excerpt(resp)}", code)
            if code in STATUS_WORDS:
                raise InferenceError(f"task {uid} on inference server {settings.url}: {code}: {STATUS_WORDS[code]}",
                                     code)
            if not resp.ok:
                raise _http_error(settings, resp, f"the output request of task {uid}")
            chunks, size = [], 0
            try:
                for chunk in resp.iter_content(1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        raise InferenceError(f"the output of task {uid} is larger than {max_bytes} bytes")
                    chunks.append(chunk)
            except requests.RequestException as exc:
                raise InferenceError(f"download of the output of task {uid} failed: {_reason(exc)}") from None
            return b"".join(chunks)


class _session:
    """The caller's session as is, or a new one closed at the end."""

    def __init__(self, session: requests.Session | None):
        self.given, self.session = session, session or requests.Session()

    def __enter__(self) -> requests.Session:
        return self.session

    def __exit__(self, *exc) -> None:
        if self.given is None:
            self.session.close()


# ------------------------------------------------------------------------------------------- task

@dataclass(frozen=True)
class TaskResult:
    """A finished task: its uid, the files of its output archive (base name → bytes), the time taken
    from submission to output and the number of polls."""

    uid: str
    files: dict[str, bytes]
    seconds: float
    polls: int


def run_task(settings: InferenceSettings, inputs: dict[str, bytes], *, session: requests.Session | None = None,
             sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic
             ) -> TaskResult:
    """Run one task: pack ``inputs``, submit, poll until the output is there or ``settings.timeout_s``
    has passed, and return the task's uid and its output archive's files. InferenceError on failure."""
    start = clock()
    deadline = start + settings.timeout_s
    timed_out = InferenceError(f"no result after {settings.timeout_s:g} s (inference_timeout_s) from "
                               f"inference server {settings.url}, model {settings.model!r}")

    def time_left() -> float:
        left = deadline - clock()
        if left <= 0:
            raise timed_out
        return min(settings.request_timeout_s, left)

    archive = pack_inputs(settings.api, inputs)
    with _session(session) as s:
        try:
            uid = submit_task(settings, archive, session=s, timeout_s=time_left())
            log.info("inference task %s submitted to %s (model %s, api %s, %d files, %d bytes)",
                     uid, settings.url, settings.model, settings.api, len(inputs), len(archive))
            interval, polls = settings.poll_s, 0
            while True:
                data = poll_output(settings, uid, session=s, timeout_s=time_left())
                polls += 1
                if data is not None:
                    break
                log.debug("inference task %s pending (poll %d), next poll in %.2f s", uid, polls, interval)
                sleep(min(interval, max(0.0, deadline - clock())))
                time_left()
                interval = min(interval * BACKOFF, max(settings.poll_s, MAX_POLL_S))
        except InferenceError as exc:
            if exc is not timed_out and exc.status is None and clock() >= deadline:
                raise timed_out from None  # a request cut short by the deadline
            raise
    files = unpack_output(data)
    seconds = clock() - start
    log.info("inference task %s finished in %.1f s (%d polls): %d bytes, files %s",
             uid, seconds, polls, len(data), ", ".join(sorted(files)) or "none")
    return TaskResult(uid=uid, files=files, seconds=seconds, polls=polls)
