"""A module whose import fails (tests the fallback to the default module)."""
import a_package_that_does_not_exist  # noqa: F401


def process(connection, config, metadata):
    connection.send_close()
