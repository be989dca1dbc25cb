"""Saving everything a session receives (``-s`` and ``savedataonly``) as a replayable MRD HDF5 file.

The receiving thread only buffers items; full batches (``flush_bytes``) go to a
writer thread, which appends them with :mod:`mrdfile` while the next batch is
received (h5py releases the GIL while HDF5 writes).  At most
``queued_batches`` batches wait, so memory stays bounded when the disk is
slower than the network.  A batch is written only when the disk (and
``ulimit -f``) has room for it: HDF5 does not survive a failed write.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import re
import resource
import secrets
import shutil
import threading
import time
from pathlib import Path

import h5py

import mrdfile

log = logging.getLogger(__name__)


class SessionRecorder:
    """Writes one session's incoming data to ``<folder>/MRD_input_<date-time>_<random>.h5``.

    Group ``dataset`` holds ``config_file`` (or ``config``), ``configAdditional``,
    ``xml``, ``data``, ``waveforms`` and ``image_<series>``.  On close the file is
    synced to disk and renamed ``<protocolName>_<date-time>_<random>.h5`` when the
    header names a protocol.  Write errors surface in :meth:`record` or
    :meth:`close` as OSError.
    """

    flush_bytes = 64 << 20
    queued_batches = 2

    def __init__(self, path: Path, header_xml: str) -> None:
        self.path = path
        self._xml = header_xml
        self._file = h5py.File(path, "w", libver="latest")
        self.group = self._file.require_group("dataset")
        self._batch = mrdfile.ItemBatch()
        self._queue: queue.Queue[mrdfile.ItemBatch | None] = queue.Queue(self.queued_batches)
        self._error: BaseException | None = None
        self._writer = threading.Thread(target=self._write_batches, name=f"save-{path.stem}", daemon=True)
        self._writer.start()

    @classmethod
    def start(cls, folder: str, config: str, config_from_file: bool, json_text: str | None,
              xml: str) -> "SessionRecorder":
        """Create the file and store the session's configuration, JSON text and header."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d-%H%M%S")
        rec = cls(Path(folder) / f"MRD_input_{stamp}_{secrets.token_hex(3)}.h5", xml)
        mrdfile.write_text(rec.group, "config_file" if config_from_file else "config", config)
        if json_text is not None:
            mrdfile.write_text(rec.group, "configAdditional", json_text)
        mrdfile.write_xml(rec.group, xml)
        log.info("Saving incoming data to %s", rec.path)
        return rec

    def record(self, msg_id: int, item: object) -> None:
        """Buffer one received item; hand the batch to the writer when it is full."""
        self._raise_write_error()
        self._batch.add(item)
        if self._batch.nbytes >= self.flush_bytes:
            self._hand_over()

    def _hand_over(self) -> None:
        batch, self._batch = self._batch, mrdfile.ItemBatch()
        self._queue.put(batch)

    def _raise_write_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _write_batches(self) -> None:
        """Writer thread: append batches until the end marker; stop at the first error."""
        while (batch := self._queue.get()) is not None:
            if self._error is not None:
                continue
            try:
                self._check_room(batch.nbytes + 512 * len(batch))
                batch.write_to(self.group)
                self._file.flush()
            except (OSError, RuntimeError, ValueError) as exc:
                self._error = exc

    def _check_room(self, nbytes: int) -> None:
        """Refuse a write that would not fit on the disk or under the file-size limit (``ulimit -f``)."""
        needed = int(nbytes * 1.1) + (1 << 20)
        room = shutil.disk_usage(self.path.parent).free
        soft_limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if soft_limit != resource.RLIM_INFINITY:
            room = min(room, soft_limit - self.path.stat().st_size)
        if needed > room:
            raise OSError(errno.ENOSPC, f"no room for {needed} more bytes ({max(room, 0)} left)", str(self.path))

    def _stop_writer(self) -> None:
        self._queue.put(None)
        self._writer.join()

    def abort(self) -> None:
        """Stop after a failed write, keeping whatever the file already holds."""
        self._batch = mrdfile.ItemBatch()
        if self._writer.is_alive():
            self._stop_writer()
        try:
            self._file.close()
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("Closing %s after a failed write: %s", self.path, exc)

    def close(self) -> Path:
        """Write the rest, sync to disk, close and rename by protocol name; returns the final path."""
        if len(self._batch):
            self._hand_over()
        self._stop_writer()
        self._raise_write_error()
        self._file.close()
        with open(self.path, "rb") as synced:
            os.fsync(synced.fileno())
        match = re.search(r"<protocolName>([^<]*)</protocolName>", self._xml)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", match.group(1).strip()) if match else ""
        if name:
            self.path = self.path.rename(self.path.with_name(self.path.name.replace("MRD_input_", f"{name}_", 1)))
        log.info("Saved incoming data to %s", self.path)
        return self.path
