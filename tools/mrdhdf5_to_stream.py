#!/usr/bin/env python3
"""Write one group of an MRD HDF5 file as an MRD stream (docs/protocol.md §9).

``python tools/mrdhdf5_to_stream.py in.h5 | python main.py --stream -c simplefft | ...``

The stream is HEADER (the group's ``xml``, without NUL), then the acquisitions
(with ``--waveforms`` interleaved with the waveforms by time stamp, a waveform
first when the stamps are equal) or, when the group holds no raw data, the
images of every ``image_*`` series, then one CLOSE.  The file is read in bulk
(acquisitions in blocks) and read-only; its layout is checked first
(``mrdfile.check_input_group``, through ``client.read_input``), so a file that is not MRD data is refused before a byte
is written.  Logs go to stderr only, stdout carries nothing but the stream.
Exit status: 0 on success, 1 when the reader went away before the end, 2 for bad
input or an output file that cannot be written.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402

import mrdfile  # noqa: E402
from client import read_input  # noqa: E402
from connection import MessageWriter, stream_sender  # noqa: E402

log = logging.getLogger("mrdhdf5_to_stream")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write an MRD HDF5 group as an MRD stream (stdout by default)")
    parser.add_argument("infile", help="input MRD HDF5 file (raw data or images)")
    parser.add_argument("-g", "--group", help="input group (default: the file's only group)")
    parser.add_argument("-o", "--output", help="output file (default: stdout)")
    parser.add_argument("--waveforms", action="store_true",
                        help="also send /<group>/waveforms, merged with the acquisitions by time stamp")
    parser.add_argument("--format", choices=("v1", "v2"), default="v1",
                        help="MRD v1 messages (default) or an MRD v2 (yardl binary) stream")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (stderr)")
    return parser


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so that the flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s - mrdhdf5_to_stream - %(levelname)s - %(message)s", force=True)
    try:
        h5 = h5py.File(args.infile, "r")
    except OSError as exc:
        log.error("Cannot read %s: %s", args.infile, exc)
        return 2
    with h5:
        try:
            data = read_input(h5, args.group, args.waveforms)
        except (OSError, ValueError) as exc:
            log.error("Cannot read %s: %s", args.infile, exc)
            return 2
        if "xml" not in h5[data.group]:
            log.warning("/%s has no xml header; sending a dummy header", data.group)
        images = data.images if data.acquisitions is None else []
        total = data.count - sum(len(s.heads) for s in data.images) + sum(len(s.heads) for s in images)
        try:
            out = open(args.output, "wb") if args.output else sys.stdout.buffer
        except OSError as exc:
            log.error("Cannot write %s: %s", args.output, exc)
            return 2
        if args.format == "v2":
            from mrdv2.stream import V2Writer  # mrd-python only for v2 streams
            writer = V2Writer(stream_sender(out))
        else:
            writer = MessageWriter.for_stream(out, text_nul=False)
        sent = 0
        try:
            writer.send_header(data.xml)
            for _ in mrdfile.send_messages(writer, data.acquisitions, data.waveforms, images, merge_waveforms=True):
                sent += 1
            writer.send_close()
        except BrokenPipeError:
            log.error("The reader closed the stream after %d of %d items", sent, total)
            if not args.output:
                _silence_stdout()
            return 1
        finally:
            if args.output:
                out.close()
    log.info("Wrote %d items (%.1f MB) from %s:/%s", sent, writer.bytes_written / 1e6, args.infile, data.group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
