#!/usr/bin/env python3
"""Store an MRD stream in an MRD HDF5 file (docs/protocol.md §9).

``... | python main.py --stream -c simplefft | python tools/stream_to_mrdhdf5.py out.h5``

Reads an optional configuration message (CONFIG_FILE or CONFIG_TEXT), then the
HEADER, then acquisitions, images and waveforms until CLOSE; TEXT messages may
come anywhere and are logged to stderr.  The header goes to ``/<group>/xml``,
images to ``/<group>/image_<image_series_index>/{data,header,attributes}``,
acquisitions to ``/<group>/data`` and waveforms to ``/<group>/waveforms``
(the layout of ``ismrmrd.Dataset``), appended in batches; an existing file is
appended to.  Exit status: 0 after CLOSE; 1 on a protocol error (no header,
unexpected message, truncated message, end of stream without CLOSE), after
storing everything that arrived before it; 2 when the output cannot be written
(a missing or read-only folder, a folder or read-only file at the path, a file that
is not HDF5, or a dataset where the group should be: all checked before the stream
is read) or does not fit what the file already holds.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402

import mrdfile  # noqa: E402
from connection import (DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_TEXT_BYTES, MessageID, MessageReader,  # noqa: E402
                        ProtocolError, stream_format)

log = logging.getLogger("stream_to_mrdhdf5")

FLUSH_BYTES = 64 << 20
COUNT_KEYS = {MessageID.IMAGE: "images", MessageID.ACQUISITION: "acquisitions", MessageID.WAVEFORM: "waveforms"}


@dataclasses.dataclass
class Stored:
    """What a stream brought."""

    header: bool = False
    images: int = 0
    acquisitions: int = 0
    waveforms: int = 0
    texts: int = 0


def copy_stream(reader: MessageReader, group: h5py.Group, stored: Stored, flush_bytes: int = FLUSH_BYTES) -> None:
    """Read messages until CLOSE and append them to ``group``; ProtocolError on a broken stream.

    Whatever arrived before an error is written to the group before the error propagates.
    """
    batch = mrdfile.ItemBatch()
    first = True
    try:
        while True:
            msg_id, item = reader.read()
            if msg_id is None:
                raise ProtocolError("the stream ended without CLOSE" if stored.header
                                    else "the stream ended before an MRD header")
            if msg_id == MessageID.CLOSE:
                if not stored.header:
                    raise ProtocolError("CLOSE before an MRD header")
                return
            if msg_id == MessageID.TEXT:
                stored.texts += 1
                log.info("Text: %s", item)
            elif not stored.header:
                if msg_id == MessageID.HEADER:
                    mrdfile.write_xml(group, item)
                    stored.header = True
                elif first and msg_id in (MessageID.CONFIG_FILE, MessageID.CONFIG_TEXT):
                    log.info("Configuration %s: %s", MessageID(msg_id).name,
                             item if len(item) <= 200 else item[:200] + "...")
                else:
                    raise ProtocolError(f"expected the MRD header (ID 3), got {MessageID(msg_id).name}")
            elif batch.add(item):
                setattr(stored, COUNT_KEYS[msg_id], getattr(stored, COUNT_KEYS[msg_id]) + 1)
                if batch.nbytes >= flush_bytes:
                    batch.write_to(group)
                    group.file.flush()
            elif msg_id == MessageID.NDARRAY:
                log.warning("Skipping an NDARRAY of shape %s: MRD HDF5 has no place for it", item.shape)
            else:
                raise ProtocolError(f"{MessageID(msg_id).name} after the header; only acquisitions, images, "
                                    "waveforms and texts may follow it")
            first = False
    finally:
        batch.write_to(group)


def stream_reader(source: BinaryIO) -> Any:
    """The reader of the stream's format, MRD v1 or v2 (``yardl``), told by its first byte."""
    if not isinstance(source, io.BufferedReader):
        source = io.BufferedReader(source)
    if stream_format(source) == "v2":
        from mrdv2.stream import V2Reader  # mrd-python only for v2 streams
        return V2Reader(source, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_TEXT_BYTES)
    return MessageReader(source)


def unwritable_reason(path: Path) -> str | None:
    """Why an HDF5 file cannot be created or appended to at ``path``, or None when it can."""
    folder = path.parent
    if not folder.is_dir():
        return f"{folder} is not a folder" if folder.exists() else f"the folder {folder} does not exist"
    if path.is_dir():
        return "it is a folder"
    if path.exists():
        return None if os.access(path, os.R_OK | os.W_OK) else "the file is not writable"
    return None if os.access(folder, os.W_OK | os.X_OK) else f"the folder {folder} is not writable"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Store an MRD stream (stdin by default) in an MRD HDF5 file")
    parser.add_argument("outfile", help="output MRD HDF5 file (created, or appended to)")
    parser.add_argument("-g", "--group", default="dataset", help="output group")
    parser.add_argument("-i", "--input", help="input stream file (default: stdin)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (stderr)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s - stream_to_mrdhdf5 - %(levelname)s - %(message)s", force=True)
    reason = unwritable_reason(Path(args.outfile))
    if reason:
        log.error("Cannot write %s: %s", args.outfile, reason)
        return 2
    try:
        source: BinaryIO = open(args.input, "rb") if args.input else sys.stdin.buffer
    except OSError as exc:
        log.error("Cannot read %s: %s", args.input, exc)
        return 2
    stored = Stored()
    status = 0
    try:
        with source, h5py.File(args.outfile, "a") as h5:
            try:
                group = h5.require_group(args.group)
            except TypeError as exc:  # h5py: "Incompatible object (Dataset) already exists"
                log.error("Cannot store the stream in %s: /%s is not a group (%s)", args.outfile, args.group, exc)
                return 2
            try:
                copy_stream(stream_reader(source), group, stored)
            except ProtocolError as exc:
                log.error("Protocol error: %s", exc)
                status = 1
    except (OSError, ValueError) as exc:  # the output file, or an image series that does not fit the stored one
        log.error("Cannot store the stream in %s: %s", args.outfile, exc)
        return 2
    log.info("Stored %d images, %d acquisitions, %d waveforms%s in %s:/%s (%d texts logged)", stored.images,
             stored.acquisitions, stored.waveforms, "" if stored.header else " and no header", args.outfile,
             args.group, stored.texts)
    return status


if __name__ == "__main__":
    sys.exit(main())
