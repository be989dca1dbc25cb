"""A module that kills its own process (tests -m supervision): like a crash in native code."""
import os
import signal


def process(connection, config, metadata):
    os.kill(os.getpid(), signal.SIGKILL)
