"""Bench module: a session whose work is not CPU but one device per server process, as a GPU recon on
the server's one GPU: it reads the session, then holds a process-wide lock for ``$BENCH_WAIT_S`` seconds
(default 0.5) while it sleeps, so that the sessions of one instance take turns; then one image."""
import threading

from _waiting import serve

DEVICE = threading.Lock()  # one per server process: main.py imports a module once


def process(connection, config, metadata):
    serve(connection, DEVICE)
