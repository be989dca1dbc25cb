"""A test module that takes its time, so that clients can be watched (and interrupted) mid-session.

JSON parameters (all optional): ``read_delay`` seconds per received item, ``text_at`` sends an
info text after that many items, then after CLOSE ``series`` series of ``images`` images each,
``send_delay`` seconds apart.  Images are 32x32 float32 ramps whose value is the image number.
"""
import time

import ismrmrd
import numpy as np

import constants
import mrdhelper


def process(connection, config, metadata):
    read_delay = mrdhelper.get_json_config_param(config, "read_delay", 0.0, "float")
    text_at = mrdhelper.get_json_config_param(config, "text_at", 0, "int")
    series = mrdhelper.get_json_config_param(config, "series", 2, "int")
    images = mrdhelper.get_json_config_param(config, "images", 2, "int")
    send_delay = mrdhelper.get_json_config_param(config, "send_delay", 0.0, "float")
    try:
        for count, item in enumerate(connection, start=1):
            if item is None:
                break
            if count == text_at:
                connection.send_logging(constants.MRD_LOGGING_INFO, f"paced: {count} items read")
            time.sleep(read_delay)
        number = 0
        for s in range(series):
            for i in range(images):
                time.sleep(send_delay)
                image = ismrmrd.Image.from_array(np.full((32, 32), number, dtype=np.float32), transpose=False)
                image.image_series_index = s
                image.image_index = i
                connection.send_image(image)
                number += 1
    finally:
        connection.send_close()
