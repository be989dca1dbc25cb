"""A module that prints to stdout (tests that stream mode keeps stdout for the MRD stream), then runs simplefft."""
import os

import simplefft

print("noise at import")


def process(connection, config, metadata):
    print("noise")
    os.write(1, b"noise on file descriptor 1\n")
    simplefft.process(connection, config, metadata)
