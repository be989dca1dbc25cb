"""Shared Cartesian reconstruction steps of the example modules (never dispatched: leading ``_``).

Pure array functions plus the slice grouping and image building that
``simplefft`` and ``invertcontrast`` share.  Axis order of k-space arrays is
``[cha, ky, kx]`` (kx = readout).  FFTs are centred, with numpy's "backward"
normalisation (the inverse transform divides by the number of points), and run
in single precision on all cores through ``scipy.fft``.

Two orientations, after python-ismrmrd-server's two raw-data modules (tests/test_upstream_parity.py):
its ``simplefft`` transforms k-space as measured; its ``invertcontrast`` first flips k-space in
readout and phase ("to be consistent with ICE"), which gives, for even sizes, the first image
reversed about its centre pixel: ``y[n] = x[(N - n) mod N]`` along both axes, i.e. rotated by 180
degrees and shifted by one pixel (``SliceKspace.rss_image(ice_flip=True)``).
"""
from __future__ import annotations

import sys
import threading
from typing import Any, Callable, Iterator, Optional

import ismrmrd
import numpy as np
import scipy.fft

import mrdhelper
from _coils import rss

SKIPPED_READOUT_FLAGS = (
    ismrmrd.ACQ_IS_NOISE_MEASUREMENT,
    ismrmrd.ACQ_IS_PARALLEL_CALIBRATION,
    ismrmrd.ACQ_IS_NAVIGATION_DATA,
    ismrmrd.ACQ_IS_PHASECORR_DATA,
    ismrmrd.ACQ_IS_DUMMYSCAN_DATA,
)
_SKIP_MASK = sum(1 << (flag - 1) for flag in SKIPPED_READOUT_FLAGS)
DEFAULT_BITS_STORED = 12
MAX_KSPACE_BYTES = 2 << 30  # one slice's k-space when the header gives no encoded matrix
COIL_CHUNK = 4  # coils per FFT batch in SliceKspace.rss_image


def is_imaging_readout(acq: ismrmrd.Acquisition) -> bool:
    """False for noise, calibration, navigator, phase-correction and dummy readouts."""
    return not (acq.flags & _SKIP_MASK)


def centred_ifft(x: np.ndarray, axis: int) -> np.ndarray:
    """Centred inverse FFT along one axis: ``fftshift(ifft(ifftshift(x)))``, 1/N scaled."""
    x = scipy.fft.ifftshift(x, axes=axis)
    x = scipy.fft.ifft(x, axis=axis, overwrite_x=True, workers=-1)
    return scipy.fft.fftshift(x, axes=axis)


def crop_centre(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """The central ``size`` entries of ``x`` along ``axis`` (a view)."""
    n = x.shape[axis]
    if size >= n:
        return x
    start = n // 2 - size // 2
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, start + size)
    return x[tuple(index)]


def matrix_sizes(metadata: Any) -> tuple[tuple[int, int], tuple[int, int], int | None]:
    """(encoded x, y), (recon x, y) and the centre ky line from the header; zeros when unknown."""
    try:
        enc = metadata.encoding[0]
        encoded = (enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y)
        recon = (enc.reconSpace.matrixSize.x, enc.reconSpace.matrixSize.y)
        limit = enc.encodingLimits.kspace_encoding_step_1
        return encoded, recon, (limit.center if limit is not None else None)
    except (AttributeError, IndexError, TypeError):
        return (0, 0), (0, 0), None


def recon_fov(metadata: Any) -> tuple[float, float, float]:
    """Recon-space field of view in mm, or zeros when the header is unparsed."""
    try:
        fov = metadata.encoding[0].reconSpace.fieldOfView_mm
        return (fov.x, fov.y, fov.z)
    except (AttributeError, IndexError, TypeError):
        return (0.0, 0.0, 0.0)


class SliceKspace:
    """Collects the readouts of one slice into a preallocated k-space ``[cha, ky, kx]``.

    Rows come from ``kspace_encode_step_1``; the header's centre line lands on
    row ``ny // 2`` (without a parsed header ny grows to the highest line + 1).
    The readout axis is the header's encoded x, or the readout length when that
    is larger or unknown; a shorter readout (asymmetric echo) is placed at the
    end of its row, its missing first samples left zero, as upstream does.
    Each readout is copied once, on arrival, as measured; :meth:`rss_image`
    takes the shifts of the centred FFT into its crops (:func:`_centred_half`).
    """

    def __init__(self, metadata: Any, pool: Optional["KspacePool"] = None) -> None:
        self.metadata = metadata
        self._pool = pool
        (self._enc_x, self._enc_y), _, centre = matrix_sizes(metadata)
        self._offset = 0 if centre is None else self._enc_y // 2 - centre
        self.kspace: np.ndarray | None = None
        self.heads: list[ismrmrd.AcquisitionHeader] = []
        self._unwritten: np.ndarray | None = None  # rows of a pooled array no readout has reached yet

    def add(self, acq: ismrmrd.Acquisition) -> None:
        """Copy one readout into its k-space row.

        A line outside the header's encoded matrix (or, without a parsed header, one that
        would make k-space larger than ``MAX_KSPACE_BYTES``) raises ValueError, so a bad counter
        cannot make the server allocate gigabytes.
        """
        line = acq.idx.kspace_encode_step_1 + self._offset
        limit = self._enc_y or MAX_KSPACE_BYTES // max(1, acq.data.nbytes)
        if not 0 <= line < limit:
            raise ValueError(f"readout {acq.scan_counter}: kspace_encode_step_1 = {acq.idx.kspace_encode_step_1} "
                             f"is outside the encoded matrix ({self._enc_y or 'no header'}: {limit} lines)")
        ncha, samples = acq.data.shape
        if self.kspace is None:
            nx = max(self._enc_x, samples)
            shape = (ncha, max(self._enc_y, line + 1), nx)
            if self._pool is not None:
                self.kspace, reused = self._pool.take(shape)
            else:
                self.kspace, reused = np.zeros(shape, np.complex64), False
            self._unwritten = np.ones(shape[1], dtype=bool) if reused else None
        nx = self.kspace.shape[2]
        if samples > nx or ncha != self.kspace.shape[0]:
            raise ValueError(f"readout {acq.scan_counter}: {ncha} channels x {samples} samples do not fit the "
                             f"slice's k-space of {self.kspace.shape[0]} channels x {nx} samples")
        if line >= self.kspace.shape[1]:
            grow = line + 1 - self.kspace.shape[1]
            self.kspace = np.pad(self.kspace, ((0, 0), (0, grow), (0, 0)))
            if self._unwritten is not None:
                self._unwritten = np.concatenate([self._unwritten, np.ones(grow, dtype=bool)])
        if self._unwritten is not None and self._unwritten[line]:
            self._unwritten[line] = False
            self.kspace[:, line, :nx - samples] = 0  # an asymmetric echo's missing first samples
        self.kspace[:, line, nx - samples:] = acq.data
        self.heads.append(acq._head)  # the header object itself: getHead()'s deep copy costs 6 us a readout

    def __len__(self) -> int:
        return len(self.heads)

    def finish(self) -> None:
        """Zero the rows no readout reached, when the array came from a :class:`KspacePool` (it holds
        an earlier slice's values there); :meth:`SliceGrouper.flush` calls it before handing out a slice."""
        if self._unwritten is not None and self._unwritten.any():
            self.kspace[:, self._unwritten, :] = 0
        self._unwritten = None

    def first_readout(self) -> ismrmrd.Acquisition:
        """The slice's first imaging readout (upstream simplefft's image header).

        Only the readouts' headers are kept (their samples are in :attr:`kspace`, and keeping the
        readouts too would hold each slice twice in memory): the readouts returned here carry the
        header and zero samples.
        """
        return ismrmrd.Acquisition(self.heads[0])

    def centre_line_readout(self) -> ismrmrd.Acquisition:
        """The first readout whose ``kspace_encode_step_1`` is nearest ``idx.user[5]`` (Siemens'
        centre-line counter), upstream invertcontrast's image header; where ``user[5]`` is unset
        (0) that is the lowest line.  Header only, as :meth:`first_readout`."""
        return ismrmrd.Acquisition(min(self.heads, key=lambda h: abs(h.idx.kspace_encode_step_1 - h.idx.user[5])))

    def rss_image(self, ice_flip: bool = False) -> np.ndarray:
        """Root-sum-of-squares magnitude ``[y, x]``, cropped to the recon matrix.

        For even sizes the centred inverse FFT's magnitude is the plain inverse FFT's, shifted by
        half its length (the DFT shift theorem; the shift of the input is a ``±1`` per output
        pixel), so the plain FFTs run in place and each crop takes the shifted centre
        (:func:`_centred_half`): no shift copies.  Readout oversampling is removed after the
        readout FFT, so the phase FFT runs on the cropped data.  The coils are transformed in
        chunks of ``COIL_CHUNK`` whose power is summed into one float32 image, so the temporaries
        are a few MB rather than a second copy of the slice (the FFTs of a chunk still use every
        core).  Each cropped chunk goes into one work array, which the slice's pool keeps for the
        next slices (:meth:`KspacePool.scratch`): a fresh 2 MB array for every chunk cost 512 page
        faults, 32,768 in a session of 8 slices.  Odd sizes take the explicitly shifted path.
        ``ice_flip``: k-space is reversed in phase and readout first (upstream invertcontrast's
        ``np.flip(data, (1, 2))``).  The FFTs overwrite :attr:`kspace`.
        """
        kspace = self.kspace[:, ::-1, ::-1] if ice_flip else self.kspace
        _, (rx, ry), _ = matrix_sizes(self.metadata)
        ny, nx = kspace.shape[1:]
        if ny % 2 or nx % 2:
            return reconstruct_rss(np.ascontiguousarray(kspace), self.metadata)
        rx, ry = min(rx or nx, nx), min(ry or ny, ny)
        power = np.zeros((ry, rx), dtype=np.float32)
        shape = (min(COIL_CHUNK, kspace.shape[0]), ny, rx)
        cropped = self._pool.scratch(shape) if self._pool is not None else np.empty(shape, np.complex64)
        for start in range(0, kspace.shape[0], COIL_CHUNK):
            img = scipy.fft.ifft(kspace[start:start + COIL_CHUNK], axis=2, overwrite_x=True, workers=-1)
            img = np.concatenate([img[..., part] for part in _centred_half(nx, rx)], axis=2,
                                 out=cropped[:img.shape[0]])
            img = scipy.fft.ifft(img, axis=1, overwrite_x=True, workers=-1)
            row = 0
            for part in _centred_half(ny, ry):
                pairs = img[:, part].view(np.float32)  # [coils, rows, 2 x]: real and imaginary parts
                block = np.einsum("cyx,cyx->yx", pairs, pairs)  # sum over coils of |x|^2, per column pair
                power[row:row + block.shape[0]] += block[:, 0::2] + block[:, 1::2]
                row += block.shape[0]
        return np.sqrt(power)


def _centred_half(n: int, size: int) -> tuple[slice, slice]:
    """The two slices of an unshifted FFT output of length ``n`` (even) that, in this order, are the
    central ``size`` entries of the shifted (``fftshift``-ed) output: ``crop_centre(fftshift(y))``
    is ``y[first]`` followed by ``y[second]``."""
    start = n // 2 - size // 2 + n // 2  # the shifted centre's first index, in unshifted terms
    first = slice(start % n, min(n, start % n + size))
    return first, slice(0, size - (first.stop - first.start))


class KspacePool:
    """Slice k-space arrays taken back after their reconstruction, for the next slices of a session.

    A new slice's array would otherwise be fresh memory, whose 4 KiB pages fault in one by one as
    the readouts arrive, on the receiving thread (8,192 faults for a 32-coil 256 x 512 slice, about
    15 ms of its time).  :meth:`recycle` takes an array back only when nothing but the caller holds
    the slice and the array (their reference counts, the check ``numpy.ndarray.resize`` makes), so
    a module that keeps either keeps it unchanged.  A recycled array is not cleared as a whole: the
    next slice overwrites its rows, clears the start of a short first readout in a row, and
    :meth:`SliceKspace.finish` zeroes the rows it never got.  At most ``size`` arrays wait.
    """

    def __init__(self, size: int = 1) -> None:
        self.size = size
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._scratch = threading.local()

    def scratch(self, shape: tuple[int, ...]) -> np.ndarray:
        """A complex64 work array of ``shape``: the same one at every call from one thread (a
        session's :class:`_images.SliceWorker` reconstructs its slices one after the other), a new
        one when the shape changes."""
        array = getattr(self._scratch, "array", None)
        if array is None or array.shape != shape:
            array = self._scratch.array = np.empty(shape, np.complex64)
        return array

    def take(self, shape: tuple[int, ...]) -> tuple[np.ndarray, bool]:
        """A complex64 array of ``shape`` and whether it is a recycled one (holding an earlier
        slice's values, which :class:`SliceKspace` overwrites or zeroes row by row) or a new,
        zeroed one."""
        with self._lock:
            for i, array in enumerate(self._free):
                if array.shape == shape:
                    return self._free.pop(i), True
        return np.zeros(shape, np.complex64), False

    def recycle(self, kspace: "SliceKspace") -> bool:
        """Take back the array of ``kspace``, which the caller holds in one local variable and passes
        here, once it is reconstructed; True when it was taken (``kspace.kspace`` is then None)."""
        # References to kspace: the caller's variable, this parameter, getrefcount's argument.
        if sys.implementation.name != "cpython" or sys.getrefcount(kspace) > 3 or kspace.kspace is None:
            return False
        array = kspace.kspace
        # References to array: kspace's attribute, this variable, getrefcount's argument (a view adds one).
        if sys.getrefcount(array) > 3 or not array.flags.writeable:
            return False
        kspace.kspace = None
        with self._lock:
            if len(self._free) >= self.size:
                return False
            self._free.append(array)
        return True


def readout_slices(connection: Any, on_other: Optional[Callable[[Any], None]] = None) -> Iterator[list]:
    """The imaging readouts of each slice of a session, as lists: a slice ends at a readout flagged
    ``LAST_IN_SLICE`` (imaging or not), and the readouts left at CLOSE are the last slice.  Every item
    that is no acquisition (image, waveform, text) goes to ``on_other``, in stream order, as it arrives.
    For modules that arrange a slice's readouts themselves (``bartfire``, ``spectroscopy``);
    :class:`SliceGrouper` fills a :class:`SliceKspace` instead."""
    readouts: list[ismrmrd.Acquisition] = []
    for item in connection:
        if item is None:
            break
        if isinstance(item, ismrmrd.Acquisition):
            if is_imaging_readout(item):
                readouts.append(item)
            if item.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE) and readouts:
                yield readouts
                readouts = []
        elif on_other is not None:
            on_other(item)
    if readouts:
        yield readouts


class SliceGrouper:
    """Groups imaging readouts into slices, closing a slice at ``LAST_IN_SLICE``."""

    def __init__(self, metadata: Any, pool: Optional[KspacePool] = None) -> None:
        self.metadata = metadata
        self.pool = pool
        self.current = SliceKspace(metadata, pool)

    def add(self, acq: ismrmrd.Acquisition) -> SliceKspace | None:
        """Take one readout; returns the finished slice when this readout ends one."""
        if not is_imaging_readout(acq):
            return None
        self.current.add(acq)
        return self.flush() if acq.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE) else None

    def flush(self) -> SliceKspace | None:
        """The slice collected so far (None when empty); a new one is started."""
        done, self.current = self.current, SliceKspace(self.metadata, self.pool)
        if not len(done):
            return None
        done.finish()
        return done


def reconstruct_rss(kspace: np.ndarray, metadata: Any) -> np.ndarray:
    """Root-sum-of-squares magnitude image ``[y, x]`` of centred k-space ``[cha, ky, kx]``."""
    _, (rx, ry), _ = matrix_sizes(metadata)
    img = centred_ifft(kspace, axis=2)
    if rx:
        img = crop_centre(img, rx, axis=2)
    img = centred_ifft(np.ascontiguousarray(img), axis=1)
    if ry:
        img = crop_centre(img, ry, axis=1)
    return rss(img)


def bits_stored(metadata: Any) -> int:
    """``BitsStored`` user parameter, 12 when absent."""
    return mrdhelper.get_userParameterLong_value(metadata, "BitsStored") or DEFAULT_BITS_STORED


def max_value_of(metadata: Any) -> int:
    """``2**BitsStored - 1``: the largest pixel value of int16 output (4095 by default)."""
    return 2 ** bits_stored(metadata) - 1


def int16_scale(peak: float, max_value: int) -> float:
    """The factor that takes ``peak`` to ``max_value`` (0 for a peak that is not positive)."""
    return max_value / peak if peak > 0 else 0.0


def to_int16(magnitude: np.ndarray, max_value: int, peak: float | None = None) -> np.ndarray:
    """Scale so that ``peak`` (default: the maximum) becomes ``max_value``, round, and store as int16."""
    if peak is None:
        peak = float(magnitude.max()) if magnitude.size else 0.0
    return np.around(magnitude * int16_scale(peak, max_value)).astype(np.int16)


def display_meta(image: ismrmrd.Image, max_value: float, history: list[str],
                 keep_geometry: bool = True) -> ismrmrd.Meta:
    """MetaAttributes of a magnitude output image: role, history, window (``(max+1)/2``, ``max+1``),
    ``Keep_image_geometry = 1`` unless ``keep_geometry`` is false, orientation."""
    meta = ismrmrd.Meta({
        "DataRole": "Image",
        "ImageProcessingHistory": history,
        "WindowCenter": str((max_value + 1) / 2),
        "WindowWidth": str(max_value + 1),
    })
    if keep_geometry:
        meta["Keep_image_geometry"] = "1"
    meta["ImageRowDir"] = ["{:.18f}".format(v) for v in image.getHead().read_dir]
    meta["ImageColumnDir"] = ["{:.18f}".format(v) for v in image.getHead().phase_dir]
    return meta


def image_from_readout(pixels: np.ndarray, readout: ismrmrd.Acquisition, metadata: Any,
                       image_index: int, series_index: int = 0, flags: bool = True) -> ismrmrd.Image:
    """An MRD image of ``pixels`` ``[y, x]`` with geometry and counters of ``readout``.

    ``flags``: copy the readout's flags too (``mrdhelper.update_img_header_from_raw`` does; upstream
    simplefft's ``Image.from_array(acquisition=...)`` does not).
    """
    image = ismrmrd.Image.from_array(pixels, transpose=False)
    head = mrdhelper.update_img_header_from_raw(image.getHead(), readout.getHead())
    if not flags:
        head.flags = 0
    head.field_of_view = recon_fov(metadata)
    head.image_type = ismrmrd.IMTYPE_MAGNITUDE
    head.image_index = image_index
    head.image_series_index = series_index
    image.setHead(head)
    return image
