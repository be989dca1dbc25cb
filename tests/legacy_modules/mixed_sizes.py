"""A test module that answers with images of several sizes in one series (series 0), after CLOSE:
a 48x64 ramp, the same ramp transposed (64x48), and a 32x32 image; directions set in the header
and in ImageRowDir/ImageColumnDir, so that a client's --fix-transposed can be checked."""
import ismrmrd
import numpy as np


def ramp(ny: int, nx: int) -> np.ndarray:
    return (np.arange(ny)[:, None] * 100 + np.arange(nx)[None, :]).astype(np.int16)


def image(pixels: np.ndarray, index: int, row_dir: tuple, column_dir: tuple) -> ismrmrd.Image:
    out = ismrmrd.Image.from_array(pixels, transpose=False)
    out.image_series_index = 0
    out.image_index = index
    out.field_of_view = (float(pixels.shape[-1]), float(pixels.shape[-2]), 5.0)
    out.read_dir, out.phase_dir = row_dir, column_dir
    out.meta = ismrmrd.Meta({"ImageRowDir": [str(v) for v in row_dir],
                             "ImageColumnDir": [str(v) for v in column_dir]})
    return out


def process(connection, config, metadata):
    try:
        for item in connection:
            if item is None:
                break
        base = ramp(48, 64)
        connection.send_image(image(base, 0, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)))
        connection.send_image(image(np.ascontiguousarray(base.T), 1, (0.0, 1.0, 0.0), (1.0, 0.0, 0.0)))
        connection.send_image(image(np.full((32, 32), 7, np.int16), 2, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)))
    finally:
        connection.send_close()
