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
from typing import Any

import constants
from server import REPO_DIR, Observers, Server, ServerConfig, run_stream

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
    parser.add_argument("--dependency-folder", default="/tmp/share/dependencies", metavar="DIR",
                        help="noise covariances stored by noise-only sessions, by measurement ID, for later "
                        "sessions that name them (also given to modules as connection.dependencyFolder)")
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
    web = parser.add_argument_group("dashboard (web/: page, API, websocket, /healthz, /metrics)")
    web.add_argument("--http-port", type=constants.tcp_port, metavar="PORT",
                     help="serve the dashboard on this port (default: off; 0: any free port)")
    web.add_argument("--http-host", metavar="HOST", help="address of the dashboard (default: the -H address)")
    web.add_argument("--http-token", metavar="TOKEN", help="required by every request but /healthz and /metrics, "
                     "and by accepting a QA reference")
    web.add_argument("--http-token-file", type=Path, metavar="FILE", help="read the token from this file instead")
    web.add_argument("--http-show-patient", action="store_true",
                     help="show patient name, ID and birth date on the page and in the API (default: never)")
    qa = parser.add_argument_group("header QA (qa/: every session's protocol against its reference)")
    qa.add_argument("--qa", action="store_true", help="check every session's header (also on with the other --qa "
                    "flags and with --http-port)")
    qa.add_argument("--qa-rules", type=Path, metavar="FILE", help="TOML file of explicit rules per protocol")
    qa.add_argument("--qa-db", type=Path, metavar="FILE",
                    help="SQLite history the references are learned from (default: <savedataFolder>/qa.sqlite)")
    qa.add_argument("--qa-min-count", type=int, default=3, metavar="N",
                    help="sessions of a protocol before its most frequent parameters count as the reference")
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


def run_stream_mode(config: ServerConfig, module: str | None, observers: Observers) -> int:
    """Stream mode: the MRD output goes to the real stdout; anything else printed goes to stderr."""
    stream_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    with stream_out:
        return run_stream(config, module, sys.stdin.buffer, stream_out, observers)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.logfile, args.crlf, args.stream)
    config = ServerConfig(host=args.host, port=args.port, default_config=args.defaultConfig,
                          savedata=args.savedata, savedata_folder=args.savedataFolder,
                          dependency_folder=args.dependency_folder,
                          multiprocessing=args.multiprocessing,
                          module_dirs=tuple(args.modules or ()) + (REPO_DIR / "modules",),
                          shutdown_grace_s=args.shutdown_grace, idle_timeout_s=args.idle_timeout,
                          max_sessions=args.max_sessions, allow=args.allow, module_timeout_s=args.module_timeout,
                          max_message_bytes=int(args.max_message_mb * (1 << 20)),
                          max_text_bytes=int(args.max_text_mb * (1 << 20)),
                          qa=bool(args.qa or args.qa_rules or args.qa_db or args.http_port is not None),
                          qa_rules=args.qa_rules, qa_db=args.qa_db, qa_min_count=args.qa_min_count)
    try:
        checker = make_checker(config)
    except (OSError, ValueError) as exc:
        log.error("Header QA: %s", exc)
        return 2
    if args.stream:
        return run_stream_mode(config, args.config, Observers(checker=checker))
    threading.current_thread().name = "server"
    board = None
    if args.http_port is not None:
        from web import Board  # aiohttp and prometheus_client only when the dashboard is on
        board = Board(show_patient=args.http_show_patient)
    server = Server(config, Observers(events=board.emit if board is not None else None, checker=checker))
    dashboard = None
    if board is not None:
        try:
            dashboard = start_dashboard(args, config, board, server)
        except (OSError, ValueError) as exc:
            log.error("Cannot serve the dashboard on %s:%s: %s", args.http_host or args.host, args.http_port, exc)
            return 1

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
    try:
        server.serve_forever()
    finally:
        if dashboard is not None:
            dashboard.stop()
    log.info("Server stopped")
    return 0


def make_checker(config: ServerConfig) -> Any:
    """The header QA (``qa.QAChecker``) the flags ask for, or None; ValueError/OSError for bad rules."""
    if not config.qa:
        return None
    import qa
    db = config.qa_db or Path(config.savedata_folder) / "qa.sqlite"
    checker = qa.QAChecker(config.qa_rules, db, min_count=config.qa_min_count)
    log.info("Header QA: rules %s, history %s (a reference after %d sessions)", config.qa_rules or "none", db,
             config.qa_min_count)
    return checker


def start_dashboard(args: argparse.Namespace, config: ServerConfig, board: Any, server: Server) -> Any:
    """The dashboard's HTTP port, on its own thread (web.WebServer), with --allow and the token."""
    from web import WebServer

    token = args.http_token
    if args.http_token_file is not None:
        token = args.http_token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"the token file {args.http_token_file} is empty")
    web_server = WebServer(board, args.http_host or config.host, args.http_port, token=token, allow=config.allow,
                           health=server.health, qa_accept=server.qa_accept)
    host, port = web_server.start()
    log.info("Dashboard on http://%s:%d/ (%s)", host, port, "token required" if token else "no token")
    return web_server


if __name__ == "__main__":
    sys.exit(main())
