"""spectroscopy: single-voxel (SVS) and spectroscopic-imaging (CSI) FIDs, as python-ismrmrd-server's module.

Raw data.  The imaging readouts of one slice (up to ``LAST_IN_SLICE``, or CLOSE) are one
measurement.  Each readout is an FID, 2x oversampled: ``2 * SpecVectorSize`` points (the
``userParameterLong``; without it the readout length) after ``discard_pre``/``discard_post``.
Readouts are placed by ``average``, ``kspace_encode_step_1`` (line) and ``segment`` (the header's
encoding limits, grown to the counters seen; a line count over five times the highest line seen is
taken as implausible and replaced by it, as upstream does).  Then:

1. one coil is kept: the one with the largest mean magnitude over the first nine averages of line 0,
   segment 0 (upstream's "best SNR" choice, so that both give the same data);
2. the oversampling is removed in the frequency domain (the half of the spectrum around 0 Hz is
   kept), the FID is conjugated (Siemens convention) and scaled by ``2**25`` (Siemens scaling);
3. CSI: a centred inverse FFT over every phase-encoded axis (line, segment) with more than one entry;
4. the averages are averaged.

Output, series 0: one complex float image (``image_type`` 5, ``flags`` ``IMAGE_LAST_IN_AVERAGE``)
holding the FIDs, ``x`` = time, ``y`` = line, ``z`` = segment (singleton axes dropped, so an SVS
FID is ``x`` only), geometry from the first readout, the field of view Siemens ICE expects
(:func:`spectroscopy_fov`), and the attributes ``DataRole = Spectroscopy``,
``SiemensControl_SpectroData`` and ``SiemensDicom_RealDwellTime`` (ns, after the oversampling
removal, from the ``userParameterDouble`` ``DwellTime_0``, the oversampled dwell time in µs).
A single spectrum also gets series 1: the plot (:func:`spectrum_plot`), a blank 1280x1280 int16
image whose ``ROI_spectra`` polygon draws the magnitude spectrum and ``ROI_axis`` the frequency
axis (the scanner's viewer draws the ROIs).

Image input: images of another type than magnitude are sent back (``Keep_image_geometry``); of each
series of magnitude images, the first gives a plot when it holds a single spectrum.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import ismrmrd
import numpy as np
import scipy.fft

import mrdhelper

import _recon

log = logging.getLogger(__name__)

HISTORY = ["FIRE", "SPECTRO", "PYTHON"]
SIEMENS_SCALE = np.float32(2.0 ** 25)
COIL_CHOICE_AVERAGES = 9
IMPLAUSIBLE_LINES = 5  # a header line count over 5x the highest line seen is not believed
IMAGE_LAST_IN_AVERAGE = 1 << 5  # ISMRMRD image flag 6
MAGNITUDE_TYPES = (0, ismrmrd.IMTYPE_MAGNITUDE)
PLOT_SERIES = 1
PLOT_SIZE = 1280  # pixels of the blank plot image, both ways
PLOT_WIDTH, PLOT_HEIGHT, PLOT_TOP = 0.9, 0.2, 0.4  # fractions of the image: spectrum box
PLOT_FOV = (float(PLOT_SIZE), float(PLOT_SIZE), 10.0)  # a dummy: the spectrum's FOV means nothing here


def _header_count(metadata: Any, name: str) -> int:
    """``maximum - minimum + 1`` of an encoding limit, 0 when the header lacks it."""
    try:
        limit = getattr(metadata.encoding[0].encodingLimits, name)
        return int(limit.maximum - limit.minimum + 1)
    except (AttributeError, IndexError, TypeError):
        return 0


def counter_sizes(metadata: Any, averages: np.ndarray, lines: np.ndarray, segments: np.ndarray) -> tuple[int, int, int]:
    """Entries along average, line and segment: the header's, grown to fit the counters seen."""
    n_lines = _header_count(metadata, "kspace_encoding_step_1")
    if n_lines > IMPLAUSIBLE_LINES * lines.max():
        n_lines = int(lines.max()) + 1
    return (max(_header_count(metadata, "average"), int(averages.max()) + 1),
            max(n_lines, int(lines.max()) + 1),
            max(_header_count(metadata, "segment"), int(segments.max()) + 1))


def oversampled_points(metadata: Any, readout: ismrmrd.Acquisition) -> int:
    """FID points per readout: ``2 * SpecVectorSize``, else the readout without its discards (even)."""
    size = mrdhelper.get_userParameterLong_value(metadata, "SpecVectorSize")
    if size is None:
        size = (readout.number_of_samples - readout.discard_pre - readout.discard_post) // 2
        log.warning("No SpecVectorSize in the header: %d spectral points taken from the data", size)
    return 2 * size


def collect(readouts: list[ismrmrd.Acquisition], metadata: Any) -> np.ndarray:
    """The readouts' FIDs as complex64 ``[average, line, segment, channel, time]`` (zero where none)."""
    points = oversampled_points(metadata, readouts[0])
    windows = [acq.data[:, acq.discard_pre:acq.number_of_samples - acq.discard_post] for acq in readouts]
    for acq, window in zip(readouts, windows):
        if window.shape != windows[0].shape or window.shape[1] != points:
            raise ValueError(f"readout {acq.scan_counter}: {window.shape[0]} channels x {window.shape[1]} points "
                             f"after discards, expected {windows[0].shape[0]} x {points} (2 x SpecVectorSize)")
    index = np.array([(a.idx.average, a.idx.kspace_encode_step_1, a.idx.segment) for a in readouts]).T
    data = np.zeros(counter_sizes(metadata, *index) + windows[0].shape, dtype=np.complex64)
    data[tuple(index)] = np.stack(windows)
    return data


def best_coil(data: np.ndarray) -> int:
    """The channel with the largest mean magnitude over the first nine averages of line 0, segment 0."""
    return int(np.argmax(np.abs(data[:COIL_CHOICE_AVERAGES, 0, 0]).mean(axis=(0, 2))))


def remove_oversampling(fid: np.ndarray) -> np.ndarray:
    """Half the points along the last axis: the spectrum's quarter-bands at either end (around 0 Hz) kept."""
    n = fid.shape[-1]
    spectrum = scipy.fft.fft(fid, axis=-1, workers=-1)
    kept = np.concatenate((spectrum[..., :n // 4], spectrum[..., (3 * n) // 4:]), axis=-1)
    return scipy.fft.ifft(kept, axis=-1, overwrite_x=True, workers=-1)


def reconstruct(data: np.ndarray, coil: int) -> np.ndarray:
    """Processed FIDs of one coil, ``[segment, line, time]`` with singleton segment and line axes dropped
    (steps 2-4 of the module text)."""
    fid = data[:, :, :, coil]  # [average, line, segment, time]
    fid = np.conj(remove_oversampling(fid)) * SIEMENS_SCALE
    for axis in (1, 2):  # centred: voxel N // 2 at the centre (upstream's shift order is one voxel off for odd N)
        if fid.shape[axis] > 1:
            fid = _recon.centred_ifft(fid, axis=axis)
    fid = fid.mean(axis=0).transpose(1, 0, 2)  # [segment, line, time]
    shape = [n for n in fid.shape[:2] if n > 1] + [fid.shape[2]]
    return np.ascontiguousarray(fid.reshape(shape), dtype=np.complex64)


def spectroscopy_fov(fids: np.ndarray, metadata: Any) -> tuple[float, float, float]:
    """The field of view Siemens ICE expects: for a grid ``(time / lines * fov_y, fov_y, fov_z)``, for
    a single FID ``(time * fov_y / 2, fov_y / 2, fov_z)`` (recon-space ``fov_y``, ``fov_z``)."""
    _, fov_y, fov_z = _recon.recon_fov(metadata)
    if fids.ndim > 1:
        return (fids.shape[-1] / fids.shape[-2] * fov_y, fov_y, fov_z)
    return (fids.shape[0] * fov_y / 2, fov_y / 2, fov_z)


def spectroscopy_meta(metadata: Any) -> ismrmrd.Meta:
    """Attributes of the complex FID image; ``RealDwellTime`` in ns after the oversampling removal."""
    meta = ismrmrd.Meta({"DataRole": "Spectroscopy", "ImageProcessingHistory": HISTORY,
                         "Keep_image_geometry": "1", "SiemensControl_SpectroData": ["bool", "true"]})
    dwell_us = mrdhelper.get_userParameterDouble_value(metadata, "DwellTime_0")  # oversampled, µs
    if dwell_us is None:
        log.warning("No DwellTime_0 in the header: SiemensDicom_RealDwellTime left out")
    else:
        meta["SiemensDicom_RealDwellTime"] = ["int", str(round(dwell_us * 2 * 1000))]
    return meta


def spectra_image(readouts: list[ismrmrd.Acquisition], metadata: Any) -> ismrmrd.Image:
    """The complex FID image of one measurement (series 0)."""
    data = collect(readouts, metadata)
    coil = best_coil(data)
    fids = reconstruct(data, coil)
    image = ismrmrd.Image.from_array(fids, transpose=False)
    head = mrdhelper.update_img_header_from_raw(image.getHead(), readouts[0].getHead())
    head.field_of_view = spectroscopy_fov(fids, metadata)
    head.image_type = ismrmrd.IMTYPE_COMPLEX
    head.image_index = 1
    head.flags = IMAGE_LAST_IN_AVERAGE
    image.setHead(head)
    image.meta = spectroscopy_meta(metadata)
    log.info("Spectroscopy: %d readouts as [average, line, segment, channel, time] %s, coil %d kept; sent FIDs %s",
             len(readouts), data.shape, coil, fids.shape)
    return image


def spectrum_roi(fid: np.ndarray) -> tuple[list[str], list[str]]:
    """``ROI_spectra`` (the magnitude spectrum, red) and ``ROI_axis`` (blue) of the plot, in pixels."""
    magnitude = np.abs(scipy.fft.fftshift(scipy.fft.fft(fid.astype(np.complex128))))
    peak = magnitude.max()
    relative = magnitude / peak if peak > 0 else magnitude
    y = ((1 - relative) * PLOT_HEIGHT + PLOT_TOP) * PLOT_SIZE
    x = np.linspace(-PLOT_WIDTH / 2, PLOT_WIDTH / 2, len(fid)) * PLOT_SIZE + PLOT_SIZE / 2
    axis_x = (np.array([-PLOT_WIDTH / 2, PLOT_WIDTH / 2]) + 0.5) * PLOT_SIZE
    axis_y = np.full(2, (PLOT_TOP + PLOT_HEIGHT) * PLOT_SIZE)
    return (mrdhelper.create_roi(x, y, (1, 0, 0), 1, 0, 1), mrdhelper.create_roi(axis_x, axis_y, (0, 0, 1), 1, 0, 1))


def spectrum_plot(image: ismrmrd.Image) -> Optional[ismrmrd.Image]:
    """The plot image (series 1) of an image holding one spectrum (``y = z = 1``); None otherwise."""
    if image.data.shape[1] > 1 or image.data.shape[2] > 1:
        return None
    plot = ismrmrd.Image.from_array(np.zeros((PLOT_SIZE, PLOT_SIZE), dtype=np.int16), transpose=False)
    head = image.getHead()
    head.data_type = plot.data_type
    head.image_type = ismrmrd.IMTYPE_MAGNITUDE
    head.channels = 1
    head.field_of_view = PLOT_FOV
    head.matrix_size = (PLOT_SIZE, PLOT_SIZE, 1)
    head.image_index = 1
    head.image_series_index = PLOT_SERIES
    plot.setHead(head)
    spectra, axis = spectrum_roi(image.data[0, 0, 0])
    plot.meta = ismrmrd.Meta({"SequenceDescriptionAdditional": "SPEC_PLOT", "WindowCenter": "16384",
                              "WindowWidth": "32768", "Keep_image_geometry": "1", "InternalSend": ["bool", "true"],
                              "ROI_spectra": spectra, "ROI_axis": axis})
    return plot


def raw_results(readouts: list[ismrmrd.Acquisition], metadata: Any) -> list[ismrmrd.Image]:
    """The FID image and, for a single spectrum, its plot."""
    image = spectra_image(readouts, metadata)
    return [im for im in (image, spectrum_plot(image)) if im is not None]


def process(connection: Any, config: Any, metadata: Any) -> None:
    series: list[ismrmrd.Image] = []

    def finish_series() -> None:
        if series:
            connection.send_image(spectrum_plot(series[0]))
            series.clear()

    def take_image(item: Any) -> None:
        """Images other than magnitude go back at once; magnitude images are grouped by series."""
        if not isinstance(item, ismrmrd.Image):
            return
        if item.image_type not in MAGNITUDE_TYPES:
            item.meta["Keep_image_geometry"] = "1"
            connection.send_image(item)
            return
        if series and item.image_series_index != series[-1].image_series_index:
            finish_series()
        series.append(item)

    try:
        for readouts in _recon.readout_slices(connection, take_image):
            connection.send_image(raw_results(readouts, metadata))
        finish_series()
    finally:
        connection.send_close()
