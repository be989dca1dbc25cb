"""A test module of tests/test_cluster.py: simplefft, slowed down so that a session lasts long enough to
be cut by a killed or draining server.  It waits ``SLOWFFT_DELAY_S`` seconds (environment; default
0.02) before handing each item to simplefft, so its images are simplefft's.
"""
import os
import time

import simplefft


class _Paced:
    """The connection, with a pause before each item the module reads."""

    def __init__(self, connection, delay):
        self._connection = connection
        self._delay = delay

    def __iter__(self):
        for item in self._connection:
            time.sleep(self._delay)
            yield item

    def __getattr__(self, name):
        return getattr(self._connection, name)


def process(connection, config, metadata):
    simplefft.process(_Paced(connection, float(os.environ.get("SLOWFFT_DELAY_S", "0.02"))), config, metadata)
