"""A module written in the python-ismrmrd-server style, used unchanged by the tests.

It imports ``mrdhelper`` and ``constants``, iterates the connection, reports the
config it got as a text, and returns one float image per acquisition group with
the mean magnitude of each readout, built with ``update_img_header_from_raw``.
"""
import ctypes
import logging

import ismrmrd
import numpy as np

import constants
import mrdhelper


def process(connection, config, metadata):
    logging.info("Config: %s", config)
    connection.send_logging(constants.MRD_LOGGING_INFO, "config=%s" % (config,))
    acqGroup = []
    try:
        for item in connection:
            if item is None:
                break
            elif isinstance(item, ismrmrd.Acquisition):
                if item.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
                    continue
                acqGroup.append(item)
                if item.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE):
                    connection.send_image(make_image(acqGroup, metadata))
                    acqGroup = []
            elif isinstance(item, ismrmrd.Image):
                connection.send_image(item)
            elif isinstance(item, str):
                connection.send_text("echo " + item)
    finally:
        connection.send_close()


def make_image(group, metadata):
    data = np.array([np.abs(acq.data).mean(axis=0) for acq in group], dtype=np.float32)
    image = ismrmrd.Image.from_array(data, transpose=False)
    head = mrdhelper.update_img_header_from_raw(image.getHead(), group[0].getHead())
    head.field_of_view = (ctypes.c_float(metadata.encoding[0].reconSpace.fieldOfView_mm.x),
                          ctypes.c_float(metadata.encoding[0].reconSpace.fieldOfView_mm.y),
                          ctypes.c_float(metadata.encoding[0].reconSpace.fieldOfView_mm.z))
    head.image_series_index = 7
    image.setHead(head)
    image.meta = ismrmrd.Meta({"TestLong": str(mrdhelper.get_userParameterLong_value(metadata, "TestLong"))})
    return image
