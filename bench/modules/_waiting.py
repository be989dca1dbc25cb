"""What the bench's waiting modules share: read the session, wait, send one image (bench/bench_cluster.py)."""
import os
import time

import ismrmrd
import numpy as np

WAIT_ENV = "BENCH_WAIT_S"  # seconds each session waits; the bench sets it for the cluster (default 0.5)


def serve(connection, lock=None):
    """Read every item, wait ``$BENCH_WAIT_S`` seconds (holding ``lock`` when given), send one 32x32
    image and CLOSE."""
    try:
        count = sum(1 for item in connection if item is not None)
        wait = float(os.environ.get(WAIT_ENV, "0.5"))
        if lock is None:
            time.sleep(wait)
        else:
            with lock:
                time.sleep(wait)
        image = ismrmrd.Image.from_array(np.full((32, 32), count, dtype=np.float32), transpose=False)
        image.image_series_index = 0
        connection.send_image(image)
    finally:
        connection.send_close()
