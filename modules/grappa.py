"""grappa: Cartesian parallel imaging (GRAPPA), partial Fourier (POCS) and noise pre-whitening.

The session is read to CLOSE; then every image is reconstructed:

1. Noise readouts give the coil noise covariance; every other readout is pre-whitened with
   ``_noise`` (on by default, JSON ``prewhiten``); without noise readouts a header Noise dependency
   names the stored covariance of an earlier session (``docs/modules.md`` §20).  A session of noise
   readouts only stores its covariance and sends no image.
2. Readout oversampling is removed (FFT along the readout, centre cropped to the recon matrix, FFT
   back), and the readouts are placed by ``kspace_encode_step_1`` / ``_2`` (the header's centre lines on
   rows ``ny // 2``, ``nz // 2``); averages (``idx.average``) of a line are averaged.  Each (slice,
   contrast, phase, repetition, set) is one k-space ``[coils, kz, ky, kx]``.
3. GRAPPA (Griswold et al., MRM 47:1202, 2002) with the acceleration of the header's
   ``parallelImaging`` (else inferred from the line spacing), along ky and, for 3-D data, kz.  The
   kernel (``grappa_kernel``, ``"5x4"`` = 5 readout points by 4 acquired lines; ``"5x4x4"`` adds 4 kz
   lines; the kz size defaults to the ky size when kz is accelerated) is fitted once per calibration
   by Tikhonov-regularised least squares, ``(S^H S + lambda' I) w = S^H T`` with ``lambda' =
   grappa_lambda * trace(S^H S) / sources``, on every fully sampled neighbourhood of the calibration
   lines: the embedded ACS lines (``ACQ_IS_PARALLEL_CALIBRATION(_AND_IMAGING)``) of the image itself, or
   the separate ones (calibration mode ``separate``: readouts flagged ``PARALLEL_CALIBRATION`` only, of
   the same slice, preferring the same contrast, repetition, set and phase).  Source and target matrices
   come from ``numpy.lib.stride_tricks.sliding_window_view`` (calibration: the full-resolution
   neighbourhoods; unaliasing: the acquired lines as a strided view), the missing lines are one matrix
   product per block of rows, no loop over k-space points.  Measured lines are kept as measured
   (embedded ACS lines included); lines outside the sampled range are left to step 4.
4. Partial Fourier (the acquired range of ky or kz stops more than ``R - 1`` lines short of one
   edge): POCS (Haacke et al., JMR 92:126, 1991) with the phase of the Hamming-windowed symmetric
   centre, ``pocs_iterations`` times (default 10; 0: zero filling).
5. Centred inverse FFT, recon-matrix crop along y and z, root-sum-of-squares (``coil_combine``:
   ``rss``, or ``adaptive`` with ``_coils.inati_maps``).

Output as ``simplefft``: int16 magnitude scaled to ``BitsStored`` (one peak for all images of the
session, so contrasts and partitions keep their relative intensities), series 0, ``image_index`` 1,
2, … in the order repetition, contrast, phase, set, slice (and partition); the header of the image's
first imaging readout without its flags; FOV from the recon space.  3-D data give one image per
partition, at ``position + slice_dir * (p - nz/2) * dz`` with ``dz = fov_z / nz`` and FOV z ``dz``;
``slice`` is then ``slab * nz + p``.

Why not pygrappa: it would be a new dependency, its general-pattern code fits a kernel for each
distinct neighbourhood pattern it meets, and issue 19's bench compares this module against it, which
needs an independent implementation; for the regular Cartesian undersampling of MRD data one fit per
calibration, applied as one matrix product, is all it takes.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any, Callable, Optional

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import mrdhelper

import _coils
import _parallel
from _errors import ConfigError
from _parallel import Block, Encoding, infer_accel  # noqa: F401  (grappa.infer_accel: tests and docs)
from _parallel import centred as _centred

log = logging.getLogger(__name__)

HISTORY = ["FIRE", "PYTHON", "GRAPPA"]
DEFAULT_KERNEL = "5x4"
DEFAULT_LAMBDA = 0.001
DEFAULT_POCS_ITERATIONS = 10
COMBINE_CHOICES = ("rss", "adaptive")
CHUNK_BYTES = 32 << 20  # source rows built at once


@dataclasses.dataclass
class Settings:
    """The JSON parameters (strings on the wire, converted by ``mrdhelper.get_json_config_param``)."""

    kernel: tuple[int, int, Optional[int]] = (5, 4, None)  # kx, ky, kz (None: ky's when kz is accelerated)
    lam: float = DEFAULT_LAMBDA
    prewhiten: bool = True
    pocs_iterations: int = DEFAULT_POCS_ITERATIONS
    coil_combine: str = "rss"

    @classmethod
    def from_config(cls, config: Any) -> "Settings":
        text = mrdhelper.get_json_config_param(config, "grappa_kernel", DEFAULT_KERNEL, "str")
        match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*(?:x\s*(\d+)\s*)?", text)
        if not match:
            raise ConfigError(f"JSON configuration: parameters.grappa_kernel must be 'KXxKY' or 'KXxKYxKZ' "
                              f"(e.g. '5x4'), got '{text}'")
        kx, ky = int(match[1]), int(match[2])
        kz = int(match[3]) if match[3] else None
        if not (1 <= kx <= 15 and 2 <= ky <= 15 and (kz is None or 1 <= kz <= 15)):
            raise ConfigError(f"JSON configuration: parameters.grappa_kernel '{text}': need 1 <= KX <= 15, "
                              "2 <= KY <= 15, 1 <= KZ <= 15")
        lam = mrdhelper.get_json_config_param(config, "grappa_lambda", DEFAULT_LAMBDA, "float")
        if not 0 <= lam < 1e6:
            raise ConfigError(f"JSON configuration: parameters.grappa_lambda must be >= 0, got {lam}")
        iterations = mrdhelper.get_json_config_param(config, "pocs_iterations", DEFAULT_POCS_ITERATIONS, "int")
        if not 0 <= iterations <= 1000:
            raise ConfigError(f"JSON configuration: parameters.pocs_iterations must be 0 to 1000, got {iterations}")
        combine = mrdhelper.get_json_config_param(config, "coil_combine", "rss", "str").lower()
        if combine not in COMBINE_CHOICES:
            raise ConfigError(f"JSON configuration: parameters.coil_combine must be one of "
                              f"{', '.join(COMBINE_CHOICES)}, got '{combine}'")
        return cls((kx, ky, kz), lam, mrdhelper.get_json_config_param(config, "prewhiten", True, "bool"),
                   iterations, combine)


# --------------------------------------------------------------------------------------------------
# GRAPPA on arrays: k-space [coils, kz, ky, kx]; acceleration (Rz, Ry); kernel (kz, ky, kx).

@dataclasses.dataclass(frozen=True)
class Axis:
    """The kernel along one axis: ``size`` sources, ``accel`` apart (1: a centred neighbourhood)."""

    accel: int
    size: int

    @property
    def window(self) -> int:
        """Extent of one full-resolution neighbourhood (sources and targets)."""
        return self.accel * (self.size - 1) + 1

    @property
    def source_index(self) -> np.ndarray:
        """Source positions inside the neighbourhood."""
        return self.accel * np.arange(self.size)

    @property
    def anchor(self) -> int:
        """Position of block 0 (the acquired line the targets follow) inside the neighbourhood."""
        return self.accel * ((self.size - 1) // 2) if self.accel > 1 else self.size // 2

    @property
    def targets(self) -> np.ndarray:
        """Target offsets from block 0: the ``accel - 1`` missing lines after it (and 0)."""
        return np.arange(self.accel)

    @property
    def padding(self) -> tuple[int, int]:
        """Padding of the acquired-lines array so that every missing line has a window: one block more
        before, for lines ahead of the first acquired one."""
        if self.accel == 1:
            return self.size // 2, self.size - 1 - self.size // 2
        before = (self.size - 1) // 2
        return before + 1, self.size - 1 - before

    def base(self, count: int, origin: int) -> np.ndarray:
        """Full-grid index of block 0 of each of the ``count`` windows of the padded array."""
        q = np.arange(count)
        return q if self.accel == 1 else origin + self.accel * (q - 1)


@dataclasses.dataclass(frozen=True)
class Kernel:
    """GRAPPA geometry along (kz, ky, kx), and the targets: every (tz, ty) but (0, 0)."""

    z: Axis
    y: Axis
    x: Axis

    @classmethod
    def make(cls, accel: tuple[int, int], size: tuple[int, int, Optional[int]]) -> "Kernel":
        rz, ry = accel
        kx, ky, kz = size
        if kz is None:
            kz = ky if rz > 1 else 1
        if rz > 1 and kz < 2:
            raise ConfigError(f"grappa_kernel: kz acceleration {rz} needs a kz size of at least 2, got {kz}")
        return cls(Axis(rz, kz), Axis(ry, ky), Axis(1, kx))

    @property
    def target_offsets(self) -> list[tuple[int, int]]:
        return [(tz, ty) for tz in self.z.targets for ty in self.y.targets if (tz, ty) != (0, 0)]

    @property
    def sources_per_coil(self) -> int:
        return self.z.size * self.y.size * self.x.size


def _rows(windows: np.ndarray, index: tuple) -> np.ndarray:
    """``windows [coils, a, b, c, w1, w2, w3]`` at the in-window positions ``index`` (open mesh) as
    rows ``[a * b * c, coils * points]`` (coil-major, then the positions in order)."""
    picked = windows[(Ellipsis,) + index]  # [coils, a, b, c, n1, n2, n3]
    ncoil = picked.shape[0]
    return np.moveaxis(picked, 0, 3).reshape(-1, ncoil * int(np.prod(picked.shape[4:])))


def calibrate(acs: np.ndarray, mask: np.ndarray, kernel: Kernel, lam: float) -> np.ndarray:
    """GRAPPA weights ``[sources, targets * coils]`` from calibration k-space ``acs [coils, kz, ky, kx]``
    whose lines ``mask [kz, ky]`` were acquired; only neighbourhoods whose every line was acquired fit.

    Raises ValueError when no neighbourhood is fully sampled."""
    wz, wy, wx = kernel.z.window, kernel.y.window, kernel.x.window
    if acs.shape[1] < wz or acs.shape[2] < wy or acs.shape[3] < wx:
        raise ValueError(f"calibration region {acs.shape[1:]} is smaller than the kernel's {(wz, wy, wx)}")
    valid = sliding_window_view(mask, (wz, wy)).all(axis=(2, 3))  # [pz, py]
    if not valid.any():
        raise ValueError(f"no fully sampled {wz} x {wy} (kz x ky) calibration neighbourhood")
    zs, ys = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    acs = acs[:, zs[0]:zs[-1] + wz, ys[0]:ys[-1] + wy]      # the bounding box of the usable neighbourhoods
    valid = valid[zs[0]:zs[-1] + 1, ys[0]:ys[-1] + 1]
    windows = sliding_window_view(acs, (wz, wy, wx), axis=(1, 2, 3))  # [c, pz, py, px, wz, wy, wx]
    source = np.ix_(kernel.z.source_index, kernel.y.source_index, kernel.x.source_index)
    offsets = kernel.target_offsets
    target = (np.array([kernel.z.anchor + tz for tz, _ in offsets])[:, None, None],
              np.array([kernel.y.anchor + ty for _, ty in offsets])[:, None, None],
              np.array([kernel.x.anchor])[:, None, None])
    # Target index arrays broadcast to [targets, 1, 1]: one point each, ordered (target, coil) below.
    nsrc = acs.shape[0] * kernel.sources_per_coil
    normal = np.zeros((nsrc, nsrc), dtype=np.complex128)
    rhs = np.zeros((nsrc, len(offsets) * acs.shape[0]), dtype=np.complex128)
    px = windows.shape[3]
    step = max(1, CHUNK_BYTES // max(1, windows.shape[2] * px * nsrc * 8))
    for start in range(0, windows.shape[1], step):  # blocks of kz neighbourhoods, bounded memory
        part = windows[:, start:start + step]
        keep = np.repeat(valid[start:start + step].ravel(), px)
        s = _rows(part, source)[keep]
        t = np.moveaxis(part[(Ellipsis,) + target][..., 0, 0], 0, 4)  # [pz, py, px, targets, c]
        t = t.reshape(-1, t.shape[3] * t.shape[4])[keep]
        normal += s.conj().T @ s
        rhs += s.conj().T @ t
    regular = lam * np.trace(normal).real / nsrc
    normal[np.diag_indices(nsrc)] += regular
    try:
        return np.linalg.solve(normal, rhs).astype(np.complex64)
    except np.linalg.LinAlgError as exc:
        raise ValueError(f"GRAPPA calibration is singular ({exc}): more calibration lines or grappa_lambda > 0 "
                         "needed") from exc


def unalias(kspace: np.ndarray, measured: np.ndarray, fill: np.ndarray, kernel: Kernel,
            origin: tuple[int, int], weights: np.ndarray) -> np.ndarray:
    """K-space with the lines ``fill & ~measured`` (``[kz, ky]``) estimated from the acquired grid lines
    ``origin + accel * j``; measured lines are kept."""
    ncoil, nz, ny, nx = kspace.shape
    (z0, y0), (rz, ry) = origin, (kernel.z.accel, kernel.y.accel)
    grid = kspace[:, z0::rz, y0::ry, :]
    padded = np.pad(grid, ((0, 0), kernel.z.padding, kernel.y.padding, kernel.x.padding))
    windows = sliding_window_view(padded, (kernel.z.size, kernel.y.size, kernel.x.size), axis=(1, 2, 3))
    qz, qy, qx = windows.shape[1:4]
    base_z, base_y = kernel.z.base(qz, z0), kernel.y.base(qy, y0)
    offsets = kernel.target_offsets
    estimate = np.zeros_like(kspace)
    everything = (slice(None),) * 3
    nsrc = weights.shape[0]
    step = max(1, CHUNK_BYTES // max(1, qz * qx * nsrc * 8))
    for start in range(0, qy, step):  # blocks of ky windows, bounded memory
        part = windows[:, :, start:start + step]
        rows = _rows(part, everything) @ weights                  # [qz * n * qx, targets * coils]
        rows = rows.reshape(qz, part.shape[2], qx, len(offsets), ncoil)
        for t, (tz, ty) in enumerate(offsets):
            zs, ys = base_z + tz, base_y[start:start + step] + ty
            iz, iy = np.flatnonzero((zs >= 0) & (zs < nz)), np.flatnonzero((ys >= 0) & (ys < ny))
            estimate[:, zs[iz][:, None], ys[iy][None, :], :] = np.moveaxis(rows[:, :, :, t][iz][:, iy], 3, 0)
    missing = (fill & ~measured)[None, :, :, None]
    return np.where(missing, estimate, kspace)


def sampled_range(lines: np.ndarray, n: int, accel: int) -> tuple[int, int]:
    """(first, last) line of the range a k-space axis of ``n`` lines covers: an edge closer than
    ``accel`` lines to the first or last acquired line counts as reached (undersampling, not partial
    Fourier)."""
    low, high = int(lines.min()), int(lines.max())
    return (0 if low <= accel - 1 else low), (n - 1 if n - 1 - high <= accel - 1 else high)


# --------------------------------------------------------------------------------------------------
# Partial Fourier

def pocs(kspace: np.ndarray, ranges: tuple[tuple[int, int], tuple[int, int]], iterations: int) -> np.ndarray:
    """Partial-Fourier completion of ``kspace [coils, kz, ky, kx]`` acquired over ``ranges`` ((first, last)
    kz and ky line), ``iterations`` times: each coil image is projected onto the images with the phase
    ``phi`` of its Hamming-windowed symmetric centre (``Re(x e^-i phi) e^i phi``: the projection onto a
    linear subspace, which converges, where imposing ``|x| e^i phi`` drifts away again once the phase
    estimate is off), then the acquired lines are restored."""
    _, nz, ny, _ = kspace.shape
    window = np.ones((nz, ny))
    acquired = np.ones((nz, ny), dtype=bool)
    for axis, ((low, high), n) in enumerate(zip(ranges, (nz, ny))):
        if low == 0 and high == n - 1:
            continue
        centre = n // 2
        half = max(1, min(centre - low, high - centre))
        profile = np.zeros(n)
        profile[centre - half:centre + half + 1] = np.hamming(2 * half + 1)
        keep = np.zeros(n, dtype=bool)
        keep[low:high + 1] = True
        window *= profile[:, None] if axis == 0 else profile[None, :]
        acquired &= keep[:, None] if axis == 0 else keep[None, :]
    if acquired.all() or iterations == 0:
        return kspace
    axes = (1, 2, 3)
    phase = np.exp(1j * np.angle(_centred(kspace * window[None, :, :, None], True, axes))).astype(np.complex64)
    measured = acquired[None, :, :, None]
    estimate = kspace
    for _ in range(iterations):
        image = _centred(estimate, True, axes)
        image = (image * phase.conj()).real * phase  # onto the images of that phase (a real factor)
        estimate = np.where(measured, kspace, _centred(image, False, axes).astype(np.complex64))
    return estimate


# --------------------------------------------------------------------------------------------------
# The session

def grid_origin(lines: np.ndarray, accel: int) -> int:
    """The residue (mod accel) of most acquired lines: where the undersampling grid starts."""
    return _parallel.common(lines % accel, 0) if accel > 1 else 0


def reconstruct_block(block: Block, calibration: Optional[Block], settings: Settings, encoding: Encoding,
                      accel: tuple[int, int], cache: dict) -> np.ndarray:
    """Coil images ``[coils, nz, ny, rx]`` of one block after GRAPPA and POCS."""
    kspace, measured = block.kspace, block.measured
    nz, ny = measured.shape
    zs, ys = np.nonzero(measured)
    rz, ry = accel
    ranges = (sampled_range(zs, nz, rz), sampled_range(ys, ny, ry))
    if rz > 1 or ry > 1:
        kernel = Kernel.make(accel, settings.kernel)
        source = calibration if calibration is not None else block
        if id(source) not in cache:
            cache[id(source)] = calibrate(source.kspace, source.measured, kernel, settings.lam)
        grid = block.plain if block.plain.any() else measured
        gz, gy = np.nonzero(grid)
        origin = (grid_origin(gz, rz), grid_origin(gy, ry))
        fill = np.zeros((nz, ny), dtype=bool)
        fill[ranges[0][0]:ranges[0][1] + 1, ranges[1][0]:ranges[1][1] + 1] = True
        kspace = unalias(kspace, measured, fill, kernel, origin, cache[id(source)])
    kspace = pocs(kspace, ranges, settings.pocs_iterations)
    return _centred(kspace, True, (1, 2, 3))


def combine(coil_images: np.ndarray, encoding: Encoding, how: str) -> np.ndarray:
    """Magnitude ``[nz, ry, rx]``: recon-matrix crop along y and z, RSS or adaptive combination."""
    coil_images = _parallel.crop_recon(coil_images, encoding)
    if how == "adaptive":
        return np.abs(_coils.combine(coil_images, _coils.inati_maps(coil_images))).astype(np.float32)
    return _coils.rss(coil_images)


def reconstruct(readouts: list, metadata: Any, settings: Settings,
                whiten: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> list:
    """All images of a session's non-noise readouts; ``whiten`` maps readouts ``[n, coils, samples]``."""
    session = _parallel.collect(readouts, metadata, whiten)
    (nx, ny, nz), accel = session.shape, session.accel
    log.info("GRAPPA: %d image(s), acceleration %d (ky) x %d (kz), calibration %s, k-space %d x %d x %d (x, y, z)",
             len(session.blocks), accel[1], accel[0], session.mode, nx, ny, nz)
    cache: dict = {}
    volumes = []
    for block in session.blocks:
        coil_images = reconstruct_block(block, session.calibration(block), settings, session.encoding, accel, cache)
        volumes.append(combine(coil_images, session.encoding, settings.coil_combine))
    return _parallel.images_of(session.blocks, volumes, metadata, HISTORY)


def process(connection, config, metadata):
    _parallel.serve(connection, metadata, lambda: Settings.from_config(config), "grappa",
                    lambda readouts, settings, whiten: reconstruct(readouts, metadata, settings, whiten))
