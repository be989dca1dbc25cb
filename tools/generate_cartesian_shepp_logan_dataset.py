"""Generate a synthetic multi-coil Cartesian Shepp-Logan raw-data file (MRD HDF5) for testing.

The file holds, in group ``/<group>`` (default ``dataset``): the XML header, 32 noise readouts and,
for every repetition and slice, one readout per phase-encoding line (fully sampled, readout
oversampled ``os`` times), plus the ground truth the raw data were made from:

* ``phantom``          float32   [slices, m, m]          modified Shepp-Logan image (y, x)
* ``csm``              complex64 [coils, m, m]           coil sensitivity maps (y, x)
* ``coil_images``      complex64 [slices, coils, m, m]   ``phantom[s] * csm`` (noise-free)
* ``noise_covariance`` complex64 [coils, coils]          ``E[n n^H]`` of the noise of one k-space sample

Image axes: row y is the phase-encoding axis (``kspace_encode_step_1``), column x the readout axis;
the centre pixel is ``[m // 2, m // 2]``.  K-space of one coil image is
``fftshift(fft2(ifftshift(padded)))`` (numpy's unscaled forward FFT), where ``padded`` is the image
zero-padded along x to ``os * m`` columns starting at column ``os * m // 2 - m // 2``; therefore
``fftshift(ifft2(ifftshift(kspace)))`` cropped to those columns gives ``coil_images`` back exactly.

Noise: complex Gaussian, ``E|n|^2 = sigma^2`` with ``sigma = noise * sqrt(os * m * m)`` per k-space
sample, which is an image-domain noise standard deviation of ``noise`` after the inverse FFT above
(the phantom's maximum intensity is 1 and the largest root-sum-of-squares of ``csm`` is 1).  With
``--coil-correlation`` and ``--noise-spread`` the coils' noise is correlated, with the covariance of
``tools/_phantom.coil_noise_covariance`` (mean power per coil still ``sigma^2``), stored as
``noise_covariance``; the noise readouts have the same covariance.

Sampling (``tools/_cartesian_sampling.py``): ``--accel R`` keeps every R-th ky line (the centre line
included; along kz too with ``--3d``), ``--acs N`` adds the N central lines (flagged
PARALLEL_CALIBRATION_AND_IMAGING where they lie on the grid, PARALLEL_CALIBRATION between its lines, as
Siemens data have them; with ``--acs-separate`` the image keeps only the grid and the ACS lines
are acquired once more, flagged PARALLEL_CALIBRATION, before the image data), ``--partial-fourier F``
acquires only the last ``round(F m)`` ky lines.  The header's ``parallelImaging`` (acceleration
factors, calibration mode ``embedded`` or ``separate``) and ``encodingLimits`` (lowest and highest line
acquired, the centre line ``m // 2``; average and contrast when there are several) say so.

More dimensions: ``--averages A`` acquires every line A times (``idx.average``, fresh noise);
``--contrasts C`` gives C echoes (``idx.contrast``; TE 2.5 ms + 30 ms c, ``phantom * exp(-TE/T2)`` with
``T2 = 40 ms + 160 ms * phantom``): ``phantom`` and ``coil_images`` then get a leading contrast axis.
``--3d`` makes one 3-D slab of ``--partitions NZ`` kz partitions (``kspace_encode_step_2``; partition
thickness ``FOV / m``, partition p at ``position + slice_dir (p - NZ//2) FOV / m``): ``phantom`` is
``[NZ, m, m]`` (the ellipses as ellipsoids of half-length 0.8 along z, in units of half the slab:
partition p, at ``z = (p - NZ//2) / (NZ/2)``, scaled by ``sqrt(1 - (z / 0.8)^2)``), ``csm``
``[coils, NZ, m, m]`` (two rings of coils, so the maps vary along z), ``coil_images``
``[NZ, coils, m, m]``; k-space is the centred 3-D FFT and ``sigma`` grows with ``sqrt(NZ)``.

Noise dependencies: ``--measurement-id ID`` names the measurement in the header, ``--noise-dependency
ID`` adds a ``measurementDependency`` of type Noise; ``--noise-only`` writes the noise readouts only and
``--no-noise-readouts`` leaves them out.  The noise is drawn the same way in any case, so the files of
one seed hold identical readouts.
The output file is always overwritten.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402
import ismrmrd  # noqa: E402
import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402

import mrdfile  # noqa: E402
from tools import _mrd_header  # noqa: E402
from tools._cartesian_sampling import Options, Pattern, Readouts, Sampling, pattern  # noqa: E402
from tools._phantom import MODIFIED_SHEPP_LOGAN, coil_noise_covariance, complex_noise, correlated_noise  # noqa: E402

log = logging.getLogger("generate_cartesian_shepp_logan_dataset")

NOISE_READOUTS = 32
FOV_MM = 256.0
SLICE_THICKNESS_MM = 5.0
MEASUREMENT_UID = 1001
TIME_STAMP_START = 14_400_000  # 10:00:00 in 2.5 ms ticks since midnight
TICKS_PER_READOUT = 2  # TR 5 ms
ECHO_SPACING_MS = 30.0  # TE of contrast c: 2.5 ms + c * 30 ms
SLAB_EXTENT = 0.8  # the 3-D phantom's half-length along z, in units of half the slab


def shepp_logan(matrix: int, scale: float = 1.0) -> np.ndarray:
    """Modified Shepp-Logan phantom sampled at pixel centres; float32 ``[y, x]`` of ``matrix x matrix``.

    Pixel ``(y, x)`` sits at ``((x - m//2), -(y - m//2)) / (m/2)`` in the unit square of the ellipse
    table (y up, so the phantom appears upright); ``scale`` shrinks (< 1) or grows every ellipse.
    """
    coords = (np.arange(matrix) - matrix // 2) / (matrix / 2)
    x, y = coords[np.newaxis, :], -coords[:, np.newaxis]
    image = np.zeros((matrix, matrix), dtype=np.float64)
    for value, a, b, x0, y0, angle in MODIFIED_SHEPP_LOGAN:
        phi = np.deg2rad(angle)
        dx, dy = x - scale * x0, y - scale * y0
        u = dx * np.cos(phi) + dy * np.sin(phi)
        v = -dx * np.sin(phi) + dy * np.cos(phi)
        image += value * ((u / (scale * a)) ** 2 + (v / (scale * b)) ** 2 <= 1.0)
    return image.astype(np.float32)


def coil_sensitivities(coils: int, matrix: int, radius: float = 1.5) -> np.ndarray:
    """Smooth birdcage-like coil maps; complex64 ``[coils, y, x]`` of ``matrix x matrix``.

    Coil c sits at angle ``2 pi c / coils`` on a circle of ``radius`` (in units of half the FOV, outside
    the image); its magnitude falls as ``1 / (1 + (d / radius)^2)`` with the distance d to the coil and
    its phase is the direction from the coil to the pixel.  Scaled so that the largest
    root-sum-of-squares over coils is 1.
    """
    coords = (np.arange(matrix) - matrix // 2) / (matrix / 2)
    x, y = coords[np.newaxis, np.newaxis, :], -coords[np.newaxis, :, np.newaxis]
    theta = 2.0 * np.pi * np.arange(coils)[:, np.newaxis, np.newaxis] / coils
    dx, dy = x - radius * np.cos(theta), y - radius * np.sin(theta)
    maps = np.exp(1j * np.arctan2(dy, dx)) / (1.0 + (dx**2 + dy**2) / radius**2)
    maps /= np.sqrt(np.sum(np.abs(maps) ** 2, axis=0)).max()
    return maps.astype(np.complex64)


def readout_offset(matrix: int, oversampling: int) -> int:
    """First column of the ``matrix`` image columns inside the ``oversampling * matrix`` readout grid."""
    return oversampling * matrix // 2 - matrix // 2


def coil_kspace(coil_images: np.ndarray, oversampling: int) -> np.ndarray:
    """Centred k-space of images ``[..., y, x]`` zero-padded along x; complex64 ``[..., ky, kx]``.

    ``kx`` has ``oversampling * x`` samples; ``fftshift(ifft2(ifftshift(k)))`` returns the padded images.
    """
    matrix = coil_images.shape[-1]
    padded = np.zeros(coil_images.shape[:-1] + (oversampling * matrix,), dtype=np.complex64)
    start = readout_offset(matrix, oversampling)
    padded[..., start:start + matrix] = coil_images
    axes = (-2, -1)
    kspace = scipy.fft.fft2(scipy.fft.ifftshift(padded, axes=axes), axes=axes, workers=-1)
    return scipy.fft.fftshift(kspace, axes=axes).astype(np.complex64, copy=False)


def slab_plane(matrix: int, z: float) -> np.ndarray:
    """Plane ``z`` (in units of half the slab) of the 3-D phantom: the ellipses as ellipsoids whose z
    semi-axis is ``SLAB_EXTENT`` (every ellipse scaled by ``sqrt(1 - (z / SLAB_EXTENT)^2)``), empty beyond, so
    that the object ends inside the slab as an excited slab does (no jump where the periodic kz encoding
    wraps)."""
    scale = np.sqrt(max(0.0, 1.0 - (z / SLAB_EXTENT) ** 2))
    return shepp_logan(matrix, scale) if scale > 0.05 else np.zeros((matrix, matrix), dtype=np.float32)


def coil_sensitivities_3d(coils: int, matrix: int, partitions: int, radius: float = 1.5,
                          ring_z: float = 1.0) -> np.ndarray:
    """Coil maps of a 3-D slab; complex64 ``[coils, z, y, x]`` (``partitions x matrix x matrix``).

    As :func:`coil_sensitivities`, with two rings of coils: coil c at angle ``2 pi c / coils`` on the circle of
    ``radius`` and at ``z = +ring_z`` (even c) or ``-ring_z`` (odd c), z in units of half the slab
    (partition p at ``(p - partitions//2) / (partitions/2)``); the magnitude falls with the 3-D distance, so
    the maps vary along z too (needed to unalias kz undersampling).  Largest root-sum-of-squares 1.
    """
    coords = (np.arange(matrix) - matrix // 2) / (matrix / 2)
    zs = (np.arange(partitions) - partitions // 2) / (partitions / 2)
    x, y = coords[None, None, None, :], -coords[None, None, :, None]
    z = zs[None, :, None, None]
    c = np.arange(coils)[:, None, None, None]
    theta = 2.0 * np.pi * c / coils
    dx, dy, dz = x - radius * np.cos(theta), y - radius * np.sin(theta), z - np.where(c % 2, -ring_z, ring_z)
    maps = np.exp(1j * (np.arctan2(dy, dx) + 0.5 * dz)) / (1.0 + (dx**2 + dy**2 + dz**2) / radius**2)
    maps /= np.sqrt(np.sum(np.abs(maps) ** 2, axis=0)).max()
    return maps.astype(np.complex64)


def coil_kspace_3d(coil_images: np.ndarray, oversampling: int) -> np.ndarray:
    """As :func:`coil_kspace` for volumes ``[..., z, y, x]``: the centred 3-D FFT of the x-padded volume."""
    matrix = coil_images.shape[-1]
    padded = np.zeros(coil_images.shape[:-1] + (oversampling * matrix,), dtype=np.complex64)
    start = readout_offset(matrix, oversampling)
    padded[..., start:start + matrix] = coil_images
    axes = (-3, -2, -1)
    kspace = scipy.fft.fftn(scipy.fft.ifftshift(padded, axes=axes), axes=axes, workers=-1)
    return scipy.fft.fftshift(kspace, axes=axes).astype(np.complex64, copy=False)


def contrast_image(phantom: np.ndarray, contrast: int) -> np.ndarray:
    """Contrast (echo) ``contrast`` of the phantom: ``phantom * exp(-TE_c / T2)`` with ``TE_c = contrast *
    ECHO_SPACING_MS`` and ``T2 = 40 ms + 160 ms * phantom`` (brighter tissue decays more slowly)."""
    if contrast == 0:
        return phantom
    t2 = 40.0 + 160.0 * phantom
    return (phantom * np.exp(-contrast * ECHO_SPACING_MS / t2)).astype(np.float32)


def header_xml(matrix: int, coils: int, oversampling: int, slices: int, repetitions: int,
               options: Options = Options()) -> str:
    """The ISMRMRD XML header text of the dataset."""
    thickness = SLICE_THICKNESS_MM
    nz = options.partitions
    lines = sampling_pattern(matrix, options)
    low_y, high_y = lines.limits(1)
    limits = {"kspace_encoding_step_1": (low_y, high_y, matrix // 2), "kspace_encoding_step_2": (0, 0, 0),
              "slice": (0, slices - 1, 0), "repetition": (0, repetitions - 1, 0)}
    if options.three_d:
        low_z, high_z = lines.limits(0)
        limits["kspace_encoding_step_2"] = (low_z, high_z, nz // 2)
        thickness = nz * FOV_MM / matrix
    if options.averages > 1:
        limits["average"] = (0, options.averages - 1, 0)
    if options.contrasts > 1:
        limits["contrast"] = (0, options.contrasts - 1, 0)
    encoded = ((oversampling * matrix, matrix, nz), (oversampling * FOV_MM, FOV_MM, thickness))
    recon = ((matrix, matrix, nz), (FOV_MM, FOV_MM, thickness))
    parallel = None
    sampling = options.sampling
    if sampling.parallel:
        mode = ("separate" if sampling.acs_separate else "embedded") if sampling.acs else None
        parallel = _mrd_header.parallel_imaging(sampling.accel, sampling.accel if options.three_d else 1, mode)
    user = _mrd_header.user_parameters(
        longs=[("TestLong", 42)], doubles=[("TestDouble", 3.14159)], strings=[("TestString", "This is a test string")],
        base64=[("TestBase64", b"Shepp-Logan phantom test data")])
    dependencies = (("Noise", options.noise_dependency),) if options.noise_dependency else ()
    scanner = _mrd_header.Scanner("generate_cartesian_shepp_logan_dataset", "ShepLoganPhantom", 1.5, 63_500_000, coils,
                                  measurement_id=options.measurement_id, dependencies=dependencies)
    echo_times = 2.5 if options.contrasts == 1 else [2.5 + ECHO_SPACING_MS * c for c in range(options.contrasts)]
    return _mrd_header.header_xml(scanner, _mrd_header.encoding(encoded, recon, limits, "cartesian", parallel),
                                  (5.0, echo_times, 15.0), user)


def sampling_pattern(matrix: int, options: Options) -> Pattern:
    """The acquired (kz, ky) lines of each image and of the separate calibration."""
    return pattern(matrix, options.partitions, options.sampling)


def _flag_runs(flags: np.ndarray, starts: np.ndarray, ends: np.ndarray, first: int, last: int) -> None:
    bit = _mrd_header.flag_bit
    flags[starts] |= bit(first)
    flags[ends] |= bit(last)


def image_readouts(matrix: int, slices: int, repetition: int, options: Options) -> Readouts:
    """The image readouts of one repetition (slice > contrast > average > kz > ky), their counters and flags
    (scan counters and time stamps are set by the caller).

    Boundary flags: FIRST/LAST_IN_ENCODE_STEP1 around each kz's run of ky lines, FIRST/LAST_IN_ENCODE_STEP2
    (3-D) and FIRST/LAST_IN_SLICE around each (slice, contrast, average) block, FIRST/LAST_IN_REPETITION
    around the repetition; the embedded ACS lines carry PARALLEL_CALIBRATION_AND_IMAGING on the
    undersampling grid and PARALLEL_CALIBRATION between its lines.
    """
    lines = sampling_pattern(matrix, options)
    per_block = len(lines.image)
    slc, con, avg, line = (a.ravel() for a in np.indices((slices, options.contrasts, options.averages, per_block)))
    heads = np.zeros(len(line), dtype=mrdfile.ACQ_HEADER_DTYPE)
    kz, ky = lines.image[line, 0], lines.image[line, 1]
    idx = heads["idx"]
    idx["kspace_encode_step_1"], idx["kspace_encode_step_2"] = ky, kz
    idx["slice"], idx["contrast"], idx["average"], idx["repetition"] = slc, con, avg, repetition
    bit = _mrd_header.flag_bit
    flags = np.zeros(len(line), dtype=np.uint64)
    acs, grid = lines.calibration[line], lines.on_grid[line]
    flags[acs & grid] |= bit(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
    flags[acs & ~grid] |= bit(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
    block_start = np.flatnonzero(line == 0)
    block_end = np.flatnonzero(line == per_block - 1)
    new_kz = np.r_[True, kz[1:] != kz[:-1]] | (line == 0)
    kz_start = np.flatnonzero(new_kz)
    kz_end = np.r_[kz_start[1:] - 1, len(line) - 1]
    _flag_runs(flags, kz_start, kz_end, ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1, ismrmrd.ACQ_LAST_IN_ENCODE_STEP1)
    if options.three_d:
        _flag_runs(flags, block_start, block_end, ismrmrd.ACQ_FIRST_IN_ENCODE_STEP2, ismrmrd.ACQ_LAST_IN_ENCODE_STEP2)
    _flag_runs(flags, block_start, block_end, ismrmrd.ACQ_FIRST_IN_SLICE, ismrmrd.ACQ_LAST_IN_SLICE)
    flags[0] |= bit(ismrmrd.ACQ_FIRST_IN_REPETITION)
    flags[-1] |= bit(ismrmrd.ACQ_LAST_IN_REPETITION)
    heads["flags"] = flags
    return Readouts(heads, con, slc, kz, ky)


def calibration_readouts(matrix: int, slices: int, options: Options) -> Readouts:
    """The separate ACS readouts (slice > kz > ky), flagged PARALLEL_CALIBRATION, contrast and average 0."""
    block = sampling_pattern(matrix, options).separate
    slc, line = (a.ravel() for a in np.indices((slices, len(block))))
    heads = np.zeros(len(line), dtype=mrdfile.ACQ_HEADER_DTYPE)
    kz, ky = block[line, 0], block[line, 1]
    heads["idx"]["kspace_encode_step_1"], heads["idx"]["kspace_encode_step_2"] = ky, kz
    heads["idx"]["slice"] = slc
    heads["flags"] = _mrd_header.flag_bit(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
    return Readouts(heads, np.zeros_like(slc), slc, kz, ky)


def acquisition_headers(matrix: int, coils: int, oversampling: int, slices: int,
                        repetitions: int, options: Options = Options()) -> np.ndarray:
    """Headers of all readouts in file order (noise, separate ACS, then repetition > slice > contrast >
    average > kz > ky); ``ACQ_HEADER_DTYPE``."""
    return _all_readouts(matrix, coils, oversampling, slices, repetitions, options)[0]


def _all_readouts(matrix: int, coils: int, oversampling: int, slices: int, repetitions: int,
                  options: Options) -> tuple[np.ndarray, list[Readouts]]:
    """All headers (noise, separate ACS, repetitions), and the line indices of each batch after the noise."""
    batches = [calibration_readouts(matrix, slices, options)]
    batches += [image_readouts(matrix, slices, rep, options) for rep in range(repetitions)]
    count = NOISE_READOUTS + sum(len(b.heads) for b in batches)
    heads = _mrd_header.readout_headers(count, MEASUREMENT_UID, oversampling * matrix, coils, 7.8125 / oversampling)
    heads["scan_counter"] = np.arange(1, count + 1)
    heads["acquisition_time_stamp"] = TIME_STAMP_START + TICKS_PER_READOUT * np.arange(count)
    heads["center_sample"] = oversampling * matrix // 2
    heads["flags"][:NOISE_READOUTS] = _mrd_header.flag_bit(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    start = NOISE_READOUTS
    for batch in batches:
        part = heads[start:start + len(batch.heads)]
        part["idx"] = batch.heads["idx"]
        part["flags"] = batch.heads["flags"]
        if not options.three_d:
            part["position"][:, 2] = (batch.slice - (slices - 1) / 2.0) * SLICE_THICKNESS_MM
        batch.heads = part
        start += len(part)
    if len(heads) > NOISE_READOUTS:
        heads["flags"][-1] |= _mrd_header.flag_bit(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    return heads, batches


def truth(matrix: int, coils: int, slices: int, options: Options) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(phantom, csm, coil_images) as stored; see the module docstring for their shapes."""
    if options.three_d:
        zs = (np.arange(options.partitions) - options.partitions // 2) / (options.partitions / 2)
        base = np.stack([slab_plane(matrix, z) for z in zs])                      # [z, y, x]
        csm = coil_sensitivities_3d(coils, matrix, options.partitions)           # [coil, z, y, x]
        images = lambda ph: ph[:, np.newaxis] * np.moveaxis(csm, 0, 1)           # noqa: E731  [z, coil, y, x]
    else:
        base = np.stack([shepp_logan(matrix, 1.0 - 0.2 * s / slices) for s in range(slices)])
        csm = coil_sensitivities(coils, matrix)
        images = lambda ph: ph[:, np.newaxis] * csm[np.newaxis]                   # noqa: E731  [slice, coil, y, x]
    phantom = np.stack([contrast_image(base, c) for c in range(options.contrasts)])
    coil_images = np.stack([images(ph) for ph in phantom])
    if options.contrasts == 1:
        return phantom[0], csm, coil_images[0]
    return phantom, csm, coil_images


def generate(path: str | Path, matrix: int = 256, coils: int = 8, oversampling: int = 2,
             repetitions: int = 1, noise: float = 0.05, slices: int = 1, group: str = "dataset",
             seed: int = 0, options: Options = Options()) -> int:
    """Write the dataset to ``path`` (overwritten); returns the number of acquisitions written.

    Slice s uses the phantom scaled by ``1 - 0.2 * s / slices``; 3-D partitions are planes of ellipsoids
    (:func:`slab_plane`).
    Acquisitions are appended in batches: the noise readouts, the separate ACS readouts, then one batch
    per repetition (all slices, contrasts and averages).  The noise is drawn in that order whatever is
    written, so files that differ only in ``noise_readouts``/``noise_only`` hold identical readouts.
    """
    samples = oversampling * matrix
    phantom, csm, coil_images = truth(matrix, coils, slices, options)
    per_contrast = coil_images if options.contrasts > 1 else coil_images[np.newaxis]
    if options.three_d:  # [contrast, slice = 1, coil, kz, ky, kx]
        kspace = coil_kspace_3d(np.moveaxis(per_contrast, 1, 2), oversampling)[:, np.newaxis]
    else:
        kspace = coil_kspace(per_contrast, oversampling)[:, :, :, np.newaxis]
    sigma = noise * np.sqrt(samples * matrix * options.partitions)
    covariance = coil_noise_covariance(coils, sigma, options.correlation, options.spread)
    white = noise == 0 or (options.correlation == 0 and options.spread == 1)
    rng = np.random.default_rng(seed)

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        return complex_noise(rng, shape, sigma) if white else correlated_noise(rng, shape, covariance)

    heads, batches = _all_readouts(matrix, coils, oversampling, slices, repetitions, options)
    empty_traj = np.zeros((samples, 0), dtype=np.float32)
    written = 0

    def append(grp: h5py.Group, part: np.ndarray, data: np.ndarray) -> None:
        nonlocal written
        mrdfile.append_acquisitions(grp, mrdfile.AcquisitionBlock(part, list(data), [empty_traj] * len(part)))
        written += len(part)

    with h5py.File(path, "w") as f:
        grp = f.create_group(group)
        mrdfile.write_xml(grp, header_xml(matrix, coils, oversampling, slices, repetitions, options))
        noise_data = draw((NOISE_READOUTS, coils, samples))
        noise_heads = heads[:NOISE_READOUTS].copy()
        if options.noise_only:
            noise_heads["flags"][-1] |= _mrd_header.flag_bit(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
        if options.noise_readouts or options.noise_only:
            append(grp, noise_heads, noise_data)
        for batch in batches:
            if options.noise_only or not len(batch.heads):
                continue
            data = kspace[batch.contrast, batch.slice, :, batch.kz, batch.ky, :]  # [readouts, coil, sample]
            if noise > 0:
                data = data + draw(data.shape)
            append(grp, batch.heads, data)
        grp.create_dataset("coil_images", data=coil_images)
        grp.create_dataset("phantom", data=phantom)
        grp.create_dataset("csm", data=csm)
        grp.create_dataset("noise_covariance", data=covariance.astype(np.complex64))
    return written


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="output MRD HDF5 file (overwritten)")
    parser.add_argument("-m", "--matrix", type=int, default=256, help="reconstructed matrix size")
    parser.add_argument("-c", "--coils", type=int, default=8, help="number of receive coils")
    parser.add_argument("-s", "--oversampling", type=int, default=2, help="readout oversampling")
    parser.add_argument("-r", "--repetitions", type=int, default=1, help="number of repetitions")
    parser.add_argument("-n", "--noise", type=float, default=0.05,
                        help="noise standard deviation, relative to the phantom maximum (1)")
    parser.add_argument("--slices", type=int, default=1, help="number of slices")
    parser.add_argument("-g", "--group", default="dataset", help="HDF5 group name")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the noise")
    parser.add_argument("--accel", type=int, default=1, metavar="R",
                        help="acquire every R-th phase-encoding line (along kz too with --3d)")
    parser.add_argument("--acs", type=int, default=0, metavar="N", help="N central calibration (ACS) lines")
    parser.add_argument("--acs-separate", action="store_true",
                        help="ACS lines acquired separately (flagged PARALLEL_CALIBRATION, sent first)")
    parser.add_argument("--partial-fourier", type=float, default=1.0, metavar="F",
                        help="fraction of the ky lines acquired (the last ones), 0.5 < F <= 1")
    parser.add_argument("--averages", type=int, default=1, help="number of averages")
    parser.add_argument("--contrasts", type=int, default=1, help="number of contrasts (echoes)")
    parser.add_argument("--3d", dest="three_d", action="store_true", help="one 3-D slab (kz partitions)")
    parser.add_argument("--partitions", type=int, default=32, help="kz partitions of --3d")
    parser.add_argument("--coil-correlation", type=float, default=0.0, metavar="RHO",
                        help="noise correlation of neighbouring coils, 0 <= RHO < 1")
    parser.add_argument("--noise-spread", type=float, default=1.0, metavar="S",
                        help="noise amplitude of the noisiest coil over the quietest's, >= 1")
    parser.add_argument("--measurement-id", help="measurementID of the header")
    parser.add_argument("--noise-dependency", metavar="ID",
                        help="the header names the noise measurement ID (measurementDependency Noise)")
    noise_scans = parser.add_mutually_exclusive_group()
    noise_scans.add_argument("--noise-only", action="store_true", help="write the noise readouts only")
    noise_scans.add_argument("--no-noise-readouts", action="store_true", help="leave the noise readouts out")
    args = parser.parse_args(argv)
    if args.matrix < 2 or args.oversampling < 1 or args.oversampling * args.matrix > 65535:
        parser.error("need matrix >= 2, oversampling >= 1 and oversampling * matrix <= 65535")
    if not 1 <= args.coils <= 1024:
        parser.error("coils must be between 1 and 1024")
    if not (1 <= args.repetitions <= 65535 and 1 <= args.slices <= 65535):
        parser.error("repetitions and slices must be between 1 and 65535")
    if args.noise < 0:
        parser.error("noise must not be negative")
    if not 1 <= args.accel <= args.matrix // 2 or not 0 <= args.acs <= args.matrix:
        parser.error("need 1 <= accel <= matrix / 2 and 0 <= acs <= matrix")
    if args.acs_separate and not args.acs:
        parser.error("--acs-separate needs --acs N")
    if not 0.5 < args.partial_fourier <= 1.0:
        parser.error("partial Fourier fraction must be in (0.5, 1]")
    if not (1 <= args.averages <= 65535 and 1 <= args.contrasts <= 65535):
        parser.error("averages and contrasts must be between 1 and 65535")
    if args.three_d and (args.slices != 1 or not 2 <= args.partitions <= 1024 or args.accel > args.partitions // 2):
        parser.error("--3d takes one slab (--slices 1) of 2 to 1024 partitions, at least 2 per accel step")
    if not 0 <= args.coil_correlation < 1 or args.noise_spread < 1:
        parser.error("need 0 <= coil correlation < 1 and noise spread >= 1")
    return args


def options_of(args: argparse.Namespace) -> Options:
    """The :class:`Options` of parsed arguments."""
    return Options(sampling=Sampling(args.accel, args.acs, args.acs_separate, args.partial_fourier),
                   averages=args.averages, contrasts=args.contrasts,
                   partitions=args.partitions if args.three_d else 1,
                   correlation=args.coil_correlation, spread=args.noise_spread,
                   noise_readouts=not args.no_noise_readouts, noise_only=args.noise_only,
                   measurement_id=args.measurement_id, noise_dependency=args.noise_dependency)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    started = time.perf_counter()
    options = options_of(args)
    count = generate(args.output, args.matrix, args.coils, args.oversampling, args.repetitions,
                     args.noise, args.slices, args.group, args.seed, options)
    extra = ""
    if options != Options():
        extra = (f", accel {args.accel}, {args.acs} ACS{' separate' if args.acs_separate else ''}, "
                 f"partial Fourier {args.partial_fourier:g}, {args.averages} average(s), {args.contrasts} contrast(s)"
                 f"{f', 3-D {options.partitions} partitions' if options.three_d else ''}")
    log.info("wrote %d acquisitions (%d coils, matrix %d, oversampling %d, %d slice(s), %d repetition(s), "
             "noise %g%s) to %s:/%s in %.1f s", count, args.coils, args.matrix, args.oversampling,
             args.slices, args.repetitions, args.noise, extra, args.output, args.group,
             time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
