"""A module that hangs (tests --module-timeout): it sleeps far longer than any test waits."""
import time


def process(connection, config, metadata):
    time.sleep(120)
    connection.send_close()
