"""Bench module: a session whose work is a wait without any local resource, as a call to a remote BART
or inference server: it reads the session, sleeps ``$BENCH_WAIT_S`` seconds (default 0.5; sessions of
one instance overlap in its threads), then sends one image."""
from _waiting import serve


def process(connection, config, metadata):
    serve(connection)
