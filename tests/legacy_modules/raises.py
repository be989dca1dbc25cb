"""A module that fails after reading a few acquisitions (tests error reporting)."""
import ismrmrd


def process(connection, config, metadata):
    seen = 0
    for item in connection:
        if isinstance(item, ismrmrd.Acquisition):
            seen += 1
            if seen == 3:
                raise ValueError("deliberate failure after 3 acquisitions")
    connection.send_close()
