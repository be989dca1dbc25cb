"""Saving everything a session receives (``-s`` and ``savedataonly``) as a replayable MRD HDF5 file.

The receiving thread only buffers items; a batch goes to a writer thread when it
reaches ``flush_bytes`` or has waited ``flush_seconds``, and the writer appends it
with :mod:`mrdfile` while the next batch is received (h5py releases the GIL while
HDF5 writes).  At most ``queued_batches`` batches wait, so memory stays bounded
when the disk is slower than the network.  A batch is written only when the disk
(and ``ulimit -f``) has room for it: HDF5 does not survive a failed write.

Crash safety: after every batch the file is flushed (HDF5 metadata included) and
fsynced, and it is written in the oldest HDF5 file format, whose superblock has no
"open for write" flag.  So when the server is killed (SIGKILL, OOM, power loss),
the file left behind opens as it is with plain h5py and holds everything up to
the last batch.  Such a file keeps its ``MRD_input_`` name; :func:`recover_crashed`
(run at server start-up and after a session process died) reports it and renames it.
"""
from __future__ import annotations

import fcntl
import logging
import os
import queue
import re
import secrets
import threading
import time
from pathlib import Path

import h5py

import mrdfile

log = logging.getLogger(__name__)

PARTIAL_PREFIX = "MRD_input_"
RECOVERED_SUFFIX = "_incomplete"
# Set on the group when a session's file is closed: a file whose header names no protocol keeps
# its MRD_input_ name (as upstream's), and must not be taken for one that a crash left behind.
COMPLETE_ATTRIBUTE = "saved_complete"
PROTOCOL_NAME = re.compile(r"<protocolName>([^<]*)</protocolName>")


def final_path(path: Path, xml: str, suffix: str = "") -> Path:
    """``MRD_input_<stamp>_<random>.h5`` → ``<protocolName>_<stamp>_<random><suffix>.h5`` (the header's
    protocol name; ``MRD_input_`` stays when it has none)."""
    match = PROTOCOL_NAME.search(xml)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", match.group(1).strip()) if match else ""
    stem = path.stem.replace(PARTIAL_PREFIX, f"{name}_", 1) if name else path.stem
    return path.with_name(stem + suffix + path.suffix)


class SessionRecorder:
    """Writes one session's incoming data to ``<folder>/MRD_input_<date-time>_<random>.h5``.

    Group ``dataset`` holds ``config_file`` (or ``config``), ``configAdditional``,
    ``xml``, ``data``, ``waveforms`` and ``image_<series>``.  On close the file is
    synced to disk and renamed ``<protocolName>_<date-time>_<random>.h5`` when the
    header names a protocol.  Write errors surface in :meth:`record` or
    :meth:`close` as OSError.
    """

    flush_bytes = 64 << 20
    flush_seconds = 2.0
    queued_batches = 1  # with the batch being written and the one filling: little unsaved data, bounded memory

    def __init__(self, path: Path, header_xml: str) -> None:
        self.path = path
        self._xml = header_xml
        # The default (oldest) file format on purpose: libver="latest" marks the file "open for
        # write" in its superblock, and h5py refuses such a file after a crash until `h5clear -s`.
        self._file = h5py.File(path, "w")
        self._claim = _claim(path)
        self.group = self._file.require_group("dataset")
        self._lock = threading.Lock()
        self._batch = mrdfile.ItemBatch()
        self._batch_started = time.monotonic()
        self._queue: queue.Queue[mrdfile.ItemBatch | None] = queue.Queue(self.queued_batches)
        self._error: BaseException | None = None
        self._writer = threading.Thread(target=self._write_batches, name=f"{threading.current_thread().name}-save",
                                        daemon=True)
        self._writer.start()

    @classmethod
    def start(cls, folder: str, config: str, config_from_file: bool, json_text: str | None,
              xml: str) -> "SessionRecorder":
        """Create the file and store the session's configuration, JSON text and header (on disk at once)."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d-%H%M%S")
        rec = cls(Path(folder) / f"{PARTIAL_PREFIX}{stamp}_{secrets.token_hex(3)}.h5", xml)
        mrdfile.write_text(rec.group, "config_file" if config_from_file else "config", config)
        if json_text is not None:
            mrdfile.write_text(rec.group, "configAdditional", json_text)
        mrdfile.write_xml(rec.group, xml)
        rec._sync()
        log.info("Saving incoming data to %s", rec.path)
        return rec

    def record(self, msg_id: int, item: object) -> None:
        """Buffer one received item; hand the batch to the writer when it is full or old."""
        self._raise_write_error()
        with self._lock:
            if not len(self._batch):
                self._batch_started = time.monotonic()
            self._batch.add(item)
            due = (self._batch.nbytes >= self.flush_bytes
                   or time.monotonic() - self._batch_started >= self.flush_seconds)
            batch = self._take_batch() if due else None
        if batch is not None:
            self._queue.put(batch)

    def _take_batch(self) -> mrdfile.ItemBatch:
        """The batch so far, replaced by an empty one (call with ``_lock`` held)."""
        batch, self._batch = self._batch, mrdfile.ItemBatch()
        self._batch_started = time.monotonic()
        return batch

    def _raise_write_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _next_batch(self) -> mrdfile.ItemBatch | None:
        """The next queued batch; after ``flush_seconds`` without one, whatever the receiver holds."""
        while True:
            try:
                return self._queue.get(timeout=self.flush_seconds)
            except queue.Empty:
                with self._lock:
                    if len(self._batch):
                        return self._take_batch()

    def _write_batches(self) -> None:
        """Writer thread: append batches until the end marker; stop at the first error."""
        while (batch := self._next_batch()) is not None:
            if self._error is not None:
                continue
            try:
                mrdfile.check_room(self.path, batch.nbytes + 512 * len(batch))
                batch.write_to(self.group)
                self._sync()
            except (OSError, RuntimeError, ValueError) as exc:
                self._error = exc

    def _sync(self) -> None:
        """Flush HDF5's buffers and metadata, then fsync: the file on disk is complete up to here."""
        self._file.flush()
        os.fsync(self._file.id.get_vfd_handle())

    def _stop_writer(self) -> None:
        self._queue.put(None)
        self._writer.join()

    def abort(self) -> None:
        """Stop after a failed write, keeping whatever the file already holds."""
        with self._lock:
            self._batch = mrdfile.ItemBatch()
        if self._writer.is_alive():
            self._stop_writer()
        try:
            self._file.close()
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("Closing %s after a failed write: %s", self.path, exc)
        os.close(self._claim)

    def close(self) -> Path:
        """Write the rest, sync to disk, close and rename by protocol name; returns the final path."""
        with self._lock:
            batch = self._take_batch() if len(self._batch) else None
        if batch is not None:
            self._queue.put(batch)
        self._stop_writer()
        self._raise_write_error()
        self.group.attrs[COMPLETE_ATTRIBUTE] = True
        self._sync()
        self._file.close()
        self.path = self.path.rename(final_path(self.path, self._xml))
        os.close(self._claim)
        log.info("Saved incoming data to %s", self.path)
        return self.path


def _claim(path: Path) -> int:
    """A POSIX record lock on ``path``, held while the session writes it; returns the descriptor.

    HDF5's own lock (``flock``) already keeps other processes out, but users turn it off
    (``HDF5_USE_FILE_LOCKING=FALSE``, common on NFS); this one also works there, so
    :func:`recover_crashed` never takes a file that a live session is writing.
    """
    fd = os.open(path, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _claimed(path: Path) -> bool:
    """Whether a live process holds the :func:`_claim` lock of ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock
    return False


def recover_crashed(folder: str | Path) -> list[Path]:
    """Report and rename the session files a crash left in ``folder``; returns their new paths.

    A file still named ``MRD_input_*.h5`` was never closed, unless it says it was
    (``COMPLETE_ATTRIBUTE``: its header names no protocol) or it was recovered before.  One that a
    live process is writing (its :func:`_claim` lock, or HDF5's own) is skipped; any other opens
    as it is (see the module docstring) and is renamed ``<protocolName>_<stamp>_<random>_incomplete.h5``.
    """
    recovered = []
    for path in sorted(Path(folder).glob(f"{PARTIAL_PREFIX}*.h5")):
        if path.stem.endswith(RECOVERED_SUFFIX):
            continue
        try:
            if _claimed(path):
                log.debug("%s is being written by another process", path)
                continue
            with h5py.File(path, "r") as h5:
                group = h5.get("dataset")
                if group is not None and group.attrs.get(COMPLETE_ATTRIBUTE, False):
                    continue
                xml = (mrdfile.read_xml(group) if group is not None else None) or ""
                counts = {name: (group[name].shape[0] if group is not None and name in group else 0)
                          for name in ("data", "waveforms")}
                images = sum(group[s]["header"].shape[0] for s in mrdfile.image_series_names(group)
                             if "header" in group[s]) if group is not None else 0
        except BlockingIOError:  # HDF5's lock: a live writer
            log.debug("%s is being written by another process", path)
            continue
        except (OSError, KeyError, ValueError) as exc:
            log.error("Saved session %s was left by a crash and cannot be read (%s); left as it is", path, exc)
            continue
        target = final_path(path, xml, RECOVERED_SUFFIX)
        path.rename(target)
        log.warning("Saved session %s was left by a crash: %d acquisitions, %d waveforms, %d images readable "
                    "(up to its last saved batch); kept as %s", path.name, counts["data"], counts["waveforms"],
                    images, target)
        recovered.append(target)
    return recovered
