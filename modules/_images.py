"""Shared image-processing steps of the image modules (never dispatched: leading ``_``).

``invertcontrast`` and ``filter`` process a series group the same way: pick the
magnitude images, scale them together to ``BitsStored``, apply the module's
pixel operation, decorate the result (ROI, colour table or RGB, per the JSON
``options``), and optionally send the originals back in series 99.  Options are
read once into :class:`ImageOptions`; bad values raise ``_errors.ConfigError``.

:func:`serve` is the session loop every example module shares: readouts are
grouped per slice, images per series, and what the module's callbacks return
is sent; a finished slice is reconstructed on a second thread while the next
one arrives (:class:`SliceWorker`); :func:`slice_image` turns a finished slice
into an int16 image.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import queue
import threading
from typing import Any, Callable, Optional

import ismrmrd
import numpy as np

import constants
import mrdhelper

import _recon
from _errors import ConfigError

log = logging.getLogger(__name__)

OPTION_CHOICES = ("", "complex", "rgb", "roi", "colormap")
MAGNITUDE_TYPES = (0, ismrmrd.IMTYPE_MAGNITUDE)
ORIGINALS_SERIES = 99
COLOUR_TABLE = "MicroDeltaHotMetal.pal"
WINDOW_KEYS = ("WindowCenter", "WindowWidth")


@dataclasses.dataclass
class ImageOptions:
    """JSON options of the image modules (``parameters`` of the JSON text; strings on the wire).

    options:       "" (int16), "complex" (float32, no rescaling), "rgb", "roi" or "colormap"
    send_original: also return the unmodified input images, in series 99 (image input only)
    colormap:      matplotlib colour map used by "rgb"
    """

    options: str = ""
    send_original: bool = False
    colormap: str = "jet"

    def __post_init__(self) -> None:
        if self.options not in OPTION_CHOICES:
            raise ConfigError(f"options '{self.options}' is not one of {', '.join(map(repr, OPTION_CHOICES))}")
        if self.colormap != "jet" and self.colormap not in _matplotlib().colormaps:
            raise ConfigError(f"colormap '{self.colormap}' is not a matplotlib colour map")

    @classmethod
    def from_config(cls, config: Any, send_original: bool = False) -> "ImageOptions":
        """Options from the module's ``config`` argument (name, text or JSON dict)."""
        return cls(options=mrdhelper.get_json_config_param(config, "options", "", "str"),
                   send_original=mrdhelper.get_json_config_param(config, "sendOriginal", send_original, "bool"),
                   colormap=mrdhelper.get_json_config_param(config, "colormap", "jet", "str"))


def _matplotlib() -> Any:
    """matplotlib, imported at first use: 0.2 s that sessions without colour maps never pay."""
    import matplotlib
    return matplotlib


def to_rgb(gray: np.ndarray, colormap: str = "jet", span: Optional[tuple] = None) -> np.ndarray:
    """RGB of a single-channel ``[1, z, y, x]`` array: ``[3, z, y, x]`` uint16 in 0-255.

    As upstream invertcontrast: the values are mapped in float32 from ``span`` = (lowest, highest)
    (default: those of ``gray``; a series passes its own) onto 0-1, coloured, multiplied by 255 and
    truncated to uint16. A constant image (0/0) gets the colour map's "bad" colour, black.
    """
    if gray.shape[0] != 1:
        raise ConfigError(f"RGB output needs single-channel images, got {gray.shape[0]} channels")
    low, high = span if span is not None else (gray.min(), gray.max())
    values = gray[0].astype(np.float32) - np.float32(low)
    with np.errstate(divide="ignore", invalid="ignore"):
        values *= np.float32(1) / (np.float32(high) - np.float32(low))
    colours = _matplotlib().colormaps[colormap](values)[..., :3] * 255
    return np.moveaxis(colours, -1, 0).astype(np.uint16)


def example_roi(nx: int, ny: int) -> list[str]:
    """``ROI_example``, upstream's red heart: 50 points of ``(16 sin^3 t, -13 cos t + 5 cos 2t + 2 cos 3t
    + cos 4t)``, its bounding box scaled to 10 % of the shorter image side and placed 20 % of that side
    from the right and bottom edges (x = column, y = row, in pixels)."""
    t = np.linspace(0, 2 * np.pi, 50)
    outline = (16 * np.sin(t) ** 3, -13 * np.cos(t) + 5 * np.cos(2 * t) + 2 * np.cos(3 * t) + np.cos(4 * t))
    side = min(nx, ny)
    x, y = ((v - v.min()) / (v.max() - v.min()) * 0.1 * side + (n - 0.2 * side) for v, n in zip(outline, (nx, ny)))
    return mrdhelper.create_roi(x.tolist(), y.tolist(), rgb=(1, 0, 0), thickness=1)


def decorate(image: ismrmrd.Image, opts: ImageOptions, max_value: Any = None,
             span: Optional[tuple] = None) -> ismrmrd.Image:
    """Apply the ``roi``, ``colormap`` or ``rgb`` option to an output image.

    ``span``: the (lowest, highest) value the RGB colours are scaled from, by default the image's
    own; ``max_value`` is not used (kept for callers).
    """
    if opts.options == "roi":
        image.meta["ROI_example"] = example_roi(image.matrix_size[0], image.matrix_size[1])
    elif opts.options == "colormap":
        image.meta["LUTFileName"] = COLOUR_TABLE
    elif opts.options == "rgb":
        head = image.getHead()
        head.image_type = ismrmrd.IMTYPE_RGB
        head.data_type = ismrmrd.DATATYPE_USHORT
        rgb = ismrmrd.Image(head, data=to_rgb(image.data, opts.colormap, span))
        meta = ismrmrd.Meta({k: v for k, v in image.meta.items() if k not in WINDOW_KEYS})
        meta["InternalSend"] = "1"
        meta["SequenceDescriptionAdditional"] = "FIRE_RGB"
        meta["ImageProcessingHistory"] = list(meta.get("ImageProcessingHistory", [])) + ["RGB"]
        rgb.meta = meta
        return rgb
    return image


def originals(images: list[ismrmrd.Image]) -> list[ismrmrd.Image]:
    """Unmodified copies of ``images``, moved to series 99 with ``Keep_image_geometry``."""
    out = []
    for im in images:
        head = im.getHead()
        head.image_series_index = ORIGINALS_SERIES
        copy = ismrmrd.Image(head, data=im.data.copy())
        copy.meta = ismrmrd.Meta(im.meta)
        copy.meta["Keep_image_geometry"] = "1"
        out.append(copy)
    return out


def process_group(images: list[ismrmrd.Image], metadata: Any, opts: ImageOptions, history: list[str],
                  description: str, pixel_op: Callable[[np.ndarray, int], np.ndarray],
                  extra_meta: Optional[dict] = None) -> list[ismrmrd.Image]:
    """Process one series group; ``pixel_op(stack, max_value)`` maps ``[n, cha, z, y, x]`` pixels.

    As upstream invertcontrast's image path: magnitude images (image_type 1 or
    unset) are scaled together so the group maximum becomes ``2**BitsStored - 1``
    and stored as int16 (``options = complex``: float32, not rescaled, the window
    from the group maximum); other images are returned unchanged with
    ``Keep_image_geometry = 1``.  The input's MetaAttributes are kept, its
    ``ImageRowDir``/``ImageColumnDir`` too when it has them.  With
    ``send_original`` the magnitude inputs come first, in series 99.  RGB colours
    are scaled from the lowest and highest value of the whole group.
    ``extra_meta`` is added to every processed image.
    """
    max_value = _recon.max_value_of(metadata)
    magnitude = [im for im in images if im.image_type in MAGNITUDE_TYPES]
    out = originals(magnitude) if opts.send_original else []
    for im in images:
        if im.image_type not in MAGNITUDE_TYPES:
            im.meta["Keep_image_geometry"] = "1"
            out.append(im)
    if not magnitude:
        return out
    stack = np.abs(np.stack([im.data for im in magnitude]))
    if opts.options == "complex":
        window_max = float(stack.max())
        pixels = pixel_op(stack.astype(np.float32), window_max)
        data_type = ismrmrd.DATATYPE_FLOAT
    else:
        window_max = max_value
        pixels = pixel_op(_recon.to_int16(stack, max_value), max_value)
        data_type = ismrmrd.DATATYPE_SHORT
    span = (pixels.min(), pixels.max())
    for im, data in zip(magnitude, pixels):
        head = im.getHead()
        head.data_type = data_type
        if opts.options != "complex":
            head.image_type = ismrmrd.IMTYPE_MAGNITUDE
        result = ismrmrd.Image(head, data=data)
        meta = ismrmrd.Meta(im.meta)
        display = _recon.display_meta(result, window_max, history)
        for key in ("ImageRowDir", "ImageColumnDir"):
            if key in meta:
                del display[key]
        meta.update(display)
        meta["SequenceDescriptionAdditional"] = description
        meta.update(extra_meta or {})
        result.meta = meta
        out.append(decorate(result, opts, max_value, span))
    return out


def invert(pixels: np.ndarray, max_value: float) -> np.ndarray:
    """Contrast inversion ``max_value - x`` in the input's data type."""
    return (max_value - pixels).astype(pixels.dtype)


def slice_image(kspace: _recon.SliceKspace, metadata: Any, image_index: int, history: list[str],
                pixel_op: Optional[Callable[[np.ndarray, int], np.ndarray]] = None, ice: bool = False,
                as_float: bool = False) -> ismrmrd.Image:
    """RSS image of a finished slice with display MetaAttributes, after one of upstream's modules.

    ``ice=False``, upstream simplefft's conventions: k-space as measured; the header of the
    slice's first readout, its flags left out; no ``Keep_image_geometry``.
    ``ice=True``, upstream invertcontrast's: k-space flipped in readout and phase before the FFT
    (``_recon.SliceKspace.rss_image``); the header of the readout nearest the centre line
    ``idx.user[5]``, flags included; ``Keep_image_geometry = 1``.
    Pixels: int16 scaled to ``BitsStored``; with ``as_float`` (invertcontrast's ``complex`` option)
    float32 RSS multiplied by the number of k-space elements (channels x lines x samples; upstream's
    "FFT scaling for consistency with ICE"), not rescaled, the window from its maximum.
    ``pixel_op(pixels, max_value)``, when given, maps the ``[y, x]`` pixels first.
    """
    magnitude = kspace.rss_image(ice_flip=ice)
    if as_float:
        pixels = magnitude * np.float32(kspace.kspace.size)
        max_value = float(pixels.max())
    else:
        max_value = _recon.max_value_of(metadata)
        pixels = _recon.to_int16(magnitude, max_value)
    if pixel_op is not None:
        pixels = pixel_op(pixels, max_value)
    readout = kspace.centre_line_readout() if ice else kspace.first_readout()
    image = _recon.image_from_readout(pixels, readout, metadata, image_index, flags=ice)
    image.meta = _recon.display_meta(image, max_value, history, keep_geometry=ice)
    return image


@dataclasses.dataclass
class Received:
    """What :func:`serve` read: counts of acquisitions, images and finished slices."""

    acquisitions: int = 0
    images: int = 0
    slices: int = 0


SliceHandler = Callable[[_recon.SliceKspace, int], Any]
GroupHandler = Callable[[list], Any]


class SliceWorker:
    """Runs the jobs of finished slices in order on one thread while the session thread reads on.

    The thread carries the session thread's name (the log's session id) and starts with the
    first job.  :meth:`submit` first waits for the job before it, so at most one slice is being
    reconstructed while the next fills: receiving overlaps the FFTs (NumPy and scipy.fft release
    the GIL), and memory holds two slices at most.  A job's exception is raised, with its own
    traceback, in the session thread at the next :meth:`submit` or :meth:`wait`; the jobs after
    it are dropped.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job()
            except BaseException as exc:  # handed to the session thread, which raises it
                self._error = exc
            finally:
                self._jobs.task_done()

    def submit(self, job: Callable[[], Any]) -> None:
        """Queue ``job`` once the previous one is done (raising its error, if it had one)."""
        self.wait()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=threading.current_thread().name, daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def wait(self) -> None:
        """Block until every job submitted is done; raise the first error of one."""
        self._jobs.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Finish the jobs submitted (their errors are kept, not raised) and end the thread."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None


def serve(connection: Any, metadata: Any, on_slice: Optional[SliceHandler] = None,
          on_group: Optional[GroupHandler] = None) -> Received:
    """Read a session to CLOSE, sending what the callbacks return (an image, a list or None).

    ``on_slice(kspace, image_index)`` gets each finished :class:`_recon.SliceKspace`
    (imaging readouts until ``LAST_IN_SLICE``; image_index counts from 1), on the
    :class:`SliceWorker` thread, one slice after the other, while the next slice is
    received; ``on_group(images)`` gets each run of images with the same
    ``image_series_index``, on the session thread, after every slice before it is
    done and sent (so what goes out keeps the input's order).  Leftovers are handed
    over at CLOSE.  Input without a callback is counted and reported once, as an
    INFO text, as ignored.  Waveforms and texts are ignored.  CLOSE is the module's
    to send; when reading fails, the slices finished before are still sent.  A slice's
    k-space array is reused for a later slice (``_recon.KspacePool``) unless ``on_slice``
    kept the slice, its array or a view of it.
    """
    pool = _recon.KspacePool()
    slices = _recon.SliceGrouper(metadata, pool)
    group: list[ismrmrd.Image] = []
    got = Received()
    worker = SliceWorker()

    def reconstruct(holder: list, index: int) -> None:
        done = holder.pop()  # from here on this variable is the only reference the loop keeps
        connection.send_image(on_slice(done, index))
        pool.recycle(done)

    def finish_slice(done: Optional[_recon.SliceKspace]) -> None:
        if done is not None:
            got.slices += 1
            worker.submit(functools.partial(reconstruct, [done], got.slices))

    def send_group() -> None:
        worker.wait()
        connection.send_image(on_group(group))

    try:
        for item in connection:
            if item is None:
                break
            if isinstance(item, ismrmrd.Acquisition):
                got.acquisitions += 1
                if on_slice is not None:
                    finish_slice(slices.add(item))
            elif isinstance(item, ismrmrd.Image):
                got.images += 1
                if on_group is None:
                    continue
                if group and item.image_series_index != group[-1].image_series_index:
                    send_group()
                    group = []
                group.append(item)
            else:
                log.debug("Ignoring %s", type(item).__name__)
        if on_slice is not None:
            finish_slice(slices.flush())
        if group:
            send_group()
        worker.wait()
    finally:
        worker.close()
    _report_ignored(connection, on_slice is None and got.acquisitions, "raw data", "acquisitions", "images")
    _report_ignored(connection, on_group is None and got.images, "images", "images", "raw data")
    return got


def _report_ignored(connection: Any, count: int, what: str, unit: str, wanted: str) -> None:
    if count:
        connection.send_logging(constants.MRD_LOGGING_INFO,
                                f"{count} {unit} ignored: this module takes {wanted}, not {what}")
