"""What the Cartesian parallel-imaging modules (``grappa``, ``espirit``) share (never dispatched: leading ``_``).

* :func:`serve`: the session read to CLOSE; noise readouts to ``_noise.NoiseAdjust`` (covariance,
  noise dependencies), navigator / phase-correction / dummy-scan readouts left out, images ignored
  (one INFO text), a pre-whitener for the rest, the module's images sent, CLOSE sent.
* :func:`collect`: readouts pre-whitened, readout oversampling removed, placed by
  ``kspace_encode_step_1`` / ``_2`` (the header's centre lines on rows ``ny // 2``, ``nz // 2``),
  averages averaged, one :class:`Block` ``[coils, kz, ky, kx]`` per (slice, contrast, phase,
  repetition, set); separate calibration blocks, the calibration mode and the acceleration.
* :func:`images_of`: int16 images with ``simplefft``'s conventions, one peak for the session, 3-D
  partitions as images moved along ``slice_dir`` (``docs/modules.md`` §20.3).
"""
from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import Any, Callable, Optional

import ismrmrd
import numpy as np
import scipy.fft

import constants

import _noise
import _recon

log = logging.getLogger(__name__)

_FLAG = {name: 1 << (getattr(ismrmrd, name) - 1) for name in (
    "ACQ_IS_PARALLEL_CALIBRATION", "ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING", "ACQ_IS_NAVIGATION_DATA",
    "ACQ_IS_PHASECORR_DATA", "ACQ_IS_DUMMYSCAN_DATA")}
CALIBRATION_ONLY = _FLAG["ACQ_IS_PARALLEL_CALIBRATION"]
CALIBRATION_AND_IMAGING = _FLAG["ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING"]
SKIPPED = _FLAG["ACQ_IS_NAVIGATION_DATA"] | _FLAG["ACQ_IS_PHASECORR_DATA"] | _FLAG["ACQ_IS_DUMMYSCAN_DATA"]

Whiten = Callable[[np.ndarray], np.ndarray]


def centred(x: np.ndarray, inverse: bool, axes: tuple[int, ...]) -> np.ndarray:
    """Centred (i)FFT over ``axes``."""
    transform = scipy.fft.ifftn if inverse else scipy.fft.fftn
    x = scipy.fft.ifftshift(x, axes=axes)
    return scipy.fft.fftshift(transform(x, axes=axes, workers=-1), axes=axes)


@dataclasses.dataclass
class Encoding:
    """Sizes from the header (zeros where unknown): encoded x, y, z; recon x, y, z; centre ky, kz."""

    encoded: tuple[int, int, int]
    recon: tuple[int, int, int]
    centre: tuple[Optional[int], Optional[int]]
    accel: tuple[int, int]  # (kz, ky) from parallelImaging; 0 when the header has none
    calibration_mode: Optional[str]

    @classmethod
    def of(cls, metadata: Any) -> "Encoding":
        try:
            enc = metadata.encoding[0]
        except (AttributeError, IndexError, TypeError):
            return cls((0, 0, 0), (0, 0, 0), (None, None), (0, 0), None)
        e, r = enc.encodedSpace.matrixSize, enc.reconSpace.matrixSize
        limits = enc.encodingLimits
        centre = tuple(getattr(getattr(limits, name, None), "center", None)
                       for name in ("kspace_encoding_step_2", "kspace_encoding_step_1"))
        accel, mode = (0, 0), None
        if enc.parallelImaging is not None:
            factor = enc.parallelImaging.accelerationFactor
            accel = (factor.kspace_encoding_step_2 or 1, factor.kspace_encoding_step_1 or 1)
            mode = enc.parallelImaging.calibrationMode.value if enc.parallelImaging.calibrationMode else None
        return cls((e.x, e.y, e.z or 1), (r.x, r.y, r.z or 1), centre, accel, mode)


def common(values: np.ndarray, default: int) -> int:
    """The most common value (``default`` for none)."""
    return Counter(values.tolist()).most_common(1)[0][0] if len(values) else default


def infer_accel(lines: np.ndarray) -> int:
    """The most common spacing of the distinct acquired lines (1 for a single line)."""
    steps = np.diff(np.unique(lines))
    return max(1, common(steps, 1))


@dataclasses.dataclass
class Block:
    """Readouts of one image (or one separate calibration), averaged into k-space."""

    key: tuple
    kspace: np.ndarray      # [coils, nz, ny, nx]
    measured: np.ndarray    # [nz, ny] bool
    first: ismrmrd.Acquisition
    plain: np.ndarray       # [nz, ny] bool: acquired without a calibration flag


def _line_indices(readouts: list, encoding: Encoding, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    nz, ny = shape
    offsets = [0 if c is None else n // 2 - c for c, n in zip(encoding.centre, (nz, ny))]
    z = np.array([a.idx.kspace_encode_step_2 for a in readouts]) + offsets[0]
    y = np.array([a.idx.kspace_encode_step_1 for a in readouts]) + offsets[1]
    for name, values, n in (("kspace_encode_step_2", z, nz), ("kspace_encode_step_1", y, ny)):
        bad = np.flatnonzero((values < 0) | (values >= n))
        if len(bad):
            acq = readouts[bad[0]]
            raise ValueError(f"readout {acq.scan_counter}: {name} is outside the encoded matrix ({n} lines)")
    return z, y


def readout_kspace(readouts: list, encoding: Encoding, whiten: Optional[Whiten] = None) -> np.ndarray:
    """Readouts ``[n, coils, kx]``: short ones right-aligned in the encoded row, pre-whitened, the readout
    oversampling removed (centred FFT along x, centre ``recon x`` kept, FFT back)."""
    samples = max(a.number_of_samples for a in readouts)
    nx = max(encoding.encoded[0], samples)
    coils = {a.data.shape[0] for a in readouts}
    if len(coils) > 1:
        raise ValueError(f"readouts with different channel counts {sorted(coils)}")
    data = np.zeros((len(readouts), coils.pop(), nx), dtype=np.complex64)
    for i, acq in enumerate(readouts):
        data[i, :, nx - acq.data.shape[1]:] = acq.data
    if whiten is not None:
        data = whiten(data)
    rx = encoding.recon[0]
    if rx and rx < nx:
        data = _recon.crop_centre(centred(data, True, (2,)), rx, axis=2)
        data = centred(np.ascontiguousarray(data), False, (2,)).astype(np.complex64)
    return data


def blocks_of(readouts: list, data: np.ndarray, encoding: Encoding, shape: tuple[int, int]) -> list[Block]:
    """Readouts grouped by (slice, contrast, phase, repetition, set); the averages of a line averaged."""
    z, y = _line_indices(readouts, encoding, shape)
    keys = [(a.idx.repetition, a.idx.contrast, a.idx.phase, a.idx.set, a.idx.slice) for a in readouts]
    order = sorted(set(keys))
    number = {key: i for i, key in enumerate(order)}
    group = np.array([number[k] for k in keys])
    kspace = np.zeros((len(order), data.shape[1]) + shape + (data.shape[2],), dtype=np.complex64)
    count = np.zeros((len(order),) + shape)
    np.add.at(kspace, (group, slice(None), z, y), data)
    np.add.at(count, (group, z, y), 1)
    kspace /= np.maximum(count, 1)[:, None, :, :, None]
    plain = np.zeros((len(order),) + shape, dtype=bool)
    flagged = np.array([bool(a.flags & (CALIBRATION_ONLY | CALIBRATION_AND_IMAGING)) for a in readouts])
    plain[group[~flagged], z[~flagged], y[~flagged]] = True
    firsts = {}
    for g, acq in zip(group, readouts):
        firsts.setdefault(g, acq)
    return [Block(key, kspace[g], count[g] > 0, firsts[g], plain[g]) for g, key in enumerate(order)]


def calibration_for(block: Block, separate: list[Block]) -> Block:
    """The separate calibration of the block's slice, preferring its contrast, repetition, set, phase."""
    rep, contrast, phase, set_, slc = block.key
    same_slice = [c for c in separate if c.key[4] == slc]
    if not same_slice:
        raise ValueError(f"no separate calibration (ACS) readouts for slice {slc}")
    return min(same_slice, key=lambda c: (c.key[1] != contrast, c.key[0] != rep, c.key[3] != set_, c.key[2] != phase))


@dataclasses.dataclass
class Collected:
    """A session's k-spaces: the images' blocks, the separate calibrations, mode and acceleration (kz, ky)."""

    encoding: Encoding
    blocks: list[Block]
    separate: list[Block]
    mode: str
    accel: tuple[int, int]
    shape: tuple[int, int, int]  # readout samples (after oversampling removal), ny, nz

    def calibration(self, block: Block) -> Optional[Block]:
        """The separate calibration of ``block`` (None when calibration is embedded or unaccelerated)."""
        return calibration_for(block, self.separate) if self.mode == "separate" and max(self.accel) > 1 else None


def collect(readouts: list, metadata: Any, whiten: Optional[Whiten] = None) -> Collected:
    """The k-space blocks of a session's non-noise readouts; ``whiten`` maps readouts ``[n, coils, samples]``."""
    encoding = Encoding.of(metadata)
    data = readout_kspace(readouts, encoding, whiten)
    z_all = np.array([a.idx.kspace_encode_step_2 for a in readouts])
    y_all = np.array([a.idx.kspace_encode_step_1 for a in readouts])
    nz = encoding.encoded[2] if encoding.encoded[2] > 1 or not z_all.any() else int(z_all.max()) + 1
    ny = encoding.encoded[1] or int(y_all.max()) + 1
    flags = np.array([a.flags for a in readouts], dtype=np.uint64)
    calibration_only = (flags & np.uint64(CALIBRATION_ONLY)) != 0
    mode = encoding.calibration_mode
    if mode is None:
        any_both = bool(((flags & np.uint64(CALIBRATION_AND_IMAGING)) != 0).any())
        mode = "separate" if calibration_only.any() and not any_both else "embedded"
    separate_mode = mode == "separate"
    imaging = ~calibration_only if separate_mode else np.ones(len(readouts), dtype=bool)
    pick = lambda mask: [a for a, m in zip(readouts, mask) if m]  # noqa: E731
    blocks = blocks_of(pick(imaging), data[imaging], encoding, (nz, ny))
    separate = []
    if separate_mode and calibration_only.any():
        separate = blocks_of(pick(calibration_only), data[calibration_only], encoding, (nz, ny))
    plain = ~(flags & np.uint64(CALIBRATION_ONLY | CALIBRATION_AND_IMAGING)).astype(bool) & imaging
    lines = plain if plain.any() else imaging
    accel = tuple(encoding.accel) if any(encoding.accel) else (infer_accel(z_all[lines]), infer_accel(y_all[lines]))
    return Collected(encoding, blocks, separate, mode, accel, (data.shape[2], ny, nz))


def crop_recon(coil_images: np.ndarray, encoding: Encoding) -> np.ndarray:
    """``[coils, nz, ny, nx]`` cropped to the recon matrix along y and z."""
    _, ry, rz = encoding.recon
    if ry:
        coil_images = _recon.crop_centre(coil_images, ry, axis=2)
    if rz and coil_images.shape[1] > 1:
        coil_images = _recon.crop_centre(coil_images, rz, axis=1)
    return coil_images


def partition_image(pixels: np.ndarray, block: Block, partition: int, partitions: int, metadata: Any,
                    image_index: int, max_value: int, history: list[str]) -> ismrmrd.Image:
    """One int16 image with simplefft's conventions; a 3-D partition moved along ``slice_dir``."""
    image = _recon.image_from_readout(pixels, block.first, metadata, image_index, flags=False)
    if partitions > 1:
        head = image.getHead()
        fov = _recon.recon_fov(metadata)
        dz = fov[2] / partitions
        shift = (partition - partitions // 2) * dz
        head.position = tuple(float(p + shift * d) for p, d in zip(head.position, head.slice_dir))
        head.field_of_view = (fov[0], fov[1], dz)
        head.slice = block.first.idx.slice * partitions + partition
        image.setHead(head)
    image.meta = _recon.display_meta(image, max_value, history, keep_geometry=False)
    return image


def images_of(blocks: list[Block], volumes: list[np.ndarray], metadata: Any, history: list[str]) -> list:
    """The int16 images of the magnitude ``volumes [nz, ry, rx]`` of ``blocks``: one peak for the session,
    ``image_index`` 1, 2, … in block order, then partition."""
    max_value = _recon.max_value_of(metadata)
    peak = max(float(v.max()) for v in volumes)
    images = []
    for block, volume in zip(blocks, volumes):
        for p, plane in enumerate(volume):
            pixels = _recon.to_int16(plane, max_value, peak)
            images.append(partition_image(pixels, block, p, len(volume), metadata, len(images) + 1, max_value,
                                          history))
    return images


def serve(connection: Any, metadata: Any, settings_of: Callable[[], Any], name: str,
          reconstruct: Callable[[list, Any, Optional[Whiten]], list]) -> None:
    """Read the session to CLOSE, send ``reconstruct(readouts, settings, whiten)``'s images, send CLOSE;
    ``settings_of()`` (JSON settings with a ``prewhiten`` attribute) is called first, inside."""
    try:
        settings = settings_of()
        noise = _noise.NoiseAdjust(metadata, _noise.dependency_folder(connection), connection.send_logging)
        readouts, ignored = [], 0
        for item in connection:
            if item is None:
                break
            if isinstance(item, ismrmrd.Acquisition):
                if _noise.is_noise(item):
                    noise.add_noise(item)
                    continue
                noise.other_readouts += 1
                if not item.flags & SKIPPED:
                    readouts.append(item)
            elif isinstance(item, ismrmrd.Image):
                ignored += 1
        if ignored:
            connection.send_logging(constants.MRD_LOGGING_INFO,
                                    f"{ignored} images ignored: this module takes raw data, not images")
        noise.finish()
        if not readouts:
            return
        dwell = readouts[0].sample_time_us
        whiten = (lambda data: noise.whiten(data, dwell)) if settings.prewhiten else None
        images = reconstruct(readouts, settings, whiten)
        connection.send_image(images)
        log.info("%s sent %d image(s)", name, len(images))
    finally:
        connection.send_close()
