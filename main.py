"""Command line of the MRD server: ``python main.py -v`` (flags of python-ismrmrd-server).

Parses the flags into a :class:`server.ServerConfig`, sets up logging, installs
SIGTERM/SIGINT handlers that stop accepting and let running sessions end, and
serves until stopped (exit status 0).
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import constants
from server import REPO_DIR, Server, ServerConfig, run_stream

log = logging.getLogger("main")

# Libraries whose debug output would drown a -v log (font searches, PNG chunks, HDF5 filters).
QUIET_LOGGERS = ("matplotlib", "PIL", "h5py", "asyncio", "urllib3", "numexpr", "numba")
FORCED_EXIT_STATUS = 1


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to a flag's help once: not when the help already names its default,
    nor for switches and unset options."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, (), argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="MRD reconstruction server (MRD v1 streaming protocol)",
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("-p", "--port", type=constants.tcp_port, default=constants.DEFAULT_PORT,
                        help="TCP port (0: any free port)")
    parser.add_argument("-H", "--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("-d", "--defaultConfig", default="invertcontrast",
                        help="module used when the requested config is unknown")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-l", "--logfile", help="also log to this file (its folder is created)")
    parser.add_argument("-s", "--savedata", action="store_true", help="save all incoming data")
    parser.add_argument("-S", "--savedataFolder", default="/tmp/share/saved_data",
                        help="folder for saved data (also given to modules as connection.savedataFolder)")
    parser.add_argument("-m", "--multiprocessing", action="store_true",
                        help="run each session in its own process instead of a thread")
    parser.add_argument("-r", "--crlf", action="store_true", help="end log lines with CR LF")
    parser.add_argument("--modules", action="append", type=Path, metavar="DIR",
                        help="extra module folder searched before modules/ (repeatable)")
    parser.add_argument("--stream", action="store_true",
                        help="one session from an MRD stream on stdin to stdout instead of a TCP server")
    parser.add_argument("-c", "--config", help="stream mode: module to run (default: the stream's "
                        "configuration message, else --defaultConfig)")
    parser.add_argument("--idle-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="end a session whose client sends nothing for this long (0: never)")
    parser.add_argument("--max-sessions", type=int, default=0, metavar="N",
                        help="serve at most N sessions at once; others get an error text (0: no limit)")
    parser.add_argument("--module-timeout", type=float, default=0.0, metavar="SECONDS",
                        help="end a session whose module runs longer than this (0: no limit)")
    parser.add_argument("--allow", type=_networks, default=(), metavar="CIDR[,CIDR...]",
                        help="accept connections only from these networks (default: all)")
    parser.add_argument("--max-message-mb", type=float, default=1024.0, metavar="MB",
                        help="largest acquisition, image, waveform or ndarray payload accepted")
    parser.add_argument("--max-text-mb", type=float, default=64.0, metavar="MB",
                        help="largest header, text, configuration or image attribute text accepted")
    parser.add_argument("--shutdown-grace", type=float, default=30.0, metavar="SECONDS",
                        help="how long running sessions may take to finish after SIGTERM/SIGINT")
    return parser


def _networks(text: str) -> tuple:
    """``--allow`` value: comma-separated networks (a bare address is a /32 or /128)."""
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def setup_logging(verbose: bool, logfile: str | None, crlf: bool, stream: bool) -> None:
    """Log to stdout (stderr in stream mode, where stdout carries the MRD stream) and the log file."""
    fmt = "%(asctime)s - %(levelname)s - %(threadName)s - %(message)s" + ("\r" if crlf else "")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr if stream else sys.stdout)]
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(logfile))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt, handlers=handlers, force=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


def run_stream_mode(config: ServerConfig, module: str | None) -> int:
    """Stream mode: the MRD output goes to the real stdout; anything else printed goes to stderr."""
    stream_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    with stream_out:
        return run_stream(config, module, sys.stdin.buffer, stream_out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.logfile, args.crlf, args.stream)
    config = ServerConfig(host=args.host, port=args.port, default_config=args.defaultConfig,
                          savedata=args.savedata, savedata_folder=args.savedataFolder,
                          multiprocessing=args.multiprocessing,
                          module_dirs=tuple(args.modules or ()) + (REPO_DIR / "modules",),
                          shutdown_grace_s=args.shutdown_grace, idle_timeout_s=args.idle_timeout,
                          max_sessions=args.max_sessions, allow=args.allow, module_timeout_s=args.module_timeout,
                          max_message_bytes=int(args.max_message_mb * (1 << 20)),
                          max_text_bytes=int(args.max_text_mb * (1 << 20)))
    if args.stream:
        return run_stream_mode(config, args.config)
    threading.current_thread().name = "server"
    server = Server(config)

    def on_signal(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if not server.stopping:
            log.info("Received %s: no new sessions; waiting up to %.0f s for running ones (send it again to "
                     "stop at once)", name, config.shutdown_grace_s)
            server.stop()
            return
        log.warning("Received %s again: ending the running sessions now", name)
        server.force_stop()
        log.warning("Server stopped (forced)")
        logging.shutdown()
        os._exit(FORCED_EXIT_STATUS)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.preload()
    try:
        server.bind()
    except OSError as exc:
        log.error("Cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 1
    log.info("Server pid %d ready", os.getpid())
    server.serve_forever()
    log.info("Server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
