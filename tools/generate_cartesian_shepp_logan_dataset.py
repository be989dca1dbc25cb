"""Generate a synthetic multi-coil Cartesian Shepp-Logan raw-data file (MRD HDF5) for testing.

The file holds, in group ``/<group>`` (default ``dataset``): the XML header, 32 noise readouts and,
for every repetition and slice, one readout per phase-encoding line (fully sampled, readout
oversampled ``os`` times), plus the ground truth the raw data were made from:

* ``phantom``      float32   [slices, m, m]          modified Shepp-Logan image (y, x)
* ``csm``          complex64 [coils, m, m]           coil sensitivity maps (y, x)
* ``coil_images``  complex64 [slices, coils, m, m]   ``phantom[s] * csm`` (noise-free)

Image axes: row y is the phase-encoding axis (``kspace_encode_step_1``), column x the readout axis;
the centre pixel is ``[m // 2, m // 2]``.  K-space of one coil image is
``fftshift(fft2(ifftshift(padded)))`` (numpy's unscaled forward FFT), where ``padded`` is the image
zero-padded along x to ``os * m`` columns starting at column ``os * m // 2 - m // 2``; therefore
``fftshift(ifft2(ifftshift(kspace)))`` cropped to those columns gives ``coil_images`` back exactly.

Noise: complex Gaussian, ``E|n|^2 = sigma^2`` with ``sigma = noise * sqrt(os * m * m)`` per k-space
sample, which is an image-domain noise standard deviation of ``noise`` after the inverse FFT above
(the phantom's maximum intensity is 1 and the largest root-sum-of-squares of ``csm`` is 1).
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
from tools._phantom import MODIFIED_SHEPP_LOGAN, complex_noise  # noqa: E402

log = logging.getLogger("generate_cartesian_shepp_logan_dataset")

NOISE_READOUTS = 32
FOV_MM = 256.0
SLICE_THICKNESS_MM = 5.0
MEASUREMENT_UID = 1001
TIME_STAMP_START = 14_400_000  # 10:00:00 in 2.5 ms ticks since midnight
TICKS_PER_READOUT = 2  # TR 5 ms


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


def header_xml(matrix: int, coils: int, oversampling: int, slices: int, repetitions: int) -> str:
    """The ISMRMRD XML header text of the dataset."""
    thickness = SLICE_THICKNESS_MM
    limits = {"kspace_encoding_step_1": (0, matrix - 1, matrix // 2), "kspace_encoding_step_2": (0, 0, 0),
              "slice": (0, slices - 1, 0), "repetition": (0, repetitions - 1, 0)}
    encoded = ((oversampling * matrix, matrix, 1), (oversampling * FOV_MM, FOV_MM, thickness))
    recon = ((matrix, matrix, 1), (FOV_MM, FOV_MM, thickness))
    user = _mrd_header.user_parameters(
        longs=[("TestLong", 42)], doubles=[("TestDouble", 3.14159)], strings=[("TestString", "This is a test string")],
        base64=[("TestBase64", b"Shepp-Logan phantom test data")])
    scanner = _mrd_header.Scanner("generate_cartesian_shepp_logan_dataset", "ShepLoganPhantom", 1.5, 63_500_000, coils)
    return _mrd_header.header_xml(scanner, _mrd_header.encoding(encoded, recon, limits, "cartesian"),
                                  (5.0, 2.5, 15.0), user)


def acquisition_headers(matrix: int, coils: int, oversampling: int, slices: int,
                        repetitions: int) -> np.ndarray:
    """Headers of all readouts in file order (noise, then repetition > slice > line); ``ACQ_HEADER_DTYPE``."""
    count = NOISE_READOUTS + repetitions * slices * matrix
    heads = _mrd_header.readout_headers(count, MEASUREMENT_UID, oversampling * matrix, coils, 7.8125 / oversampling)
    heads["scan_counter"] = np.arange(1, count + 1)
    heads["acquisition_time_stamp"] = TIME_STAMP_START + TICKS_PER_READOUT * np.arange(count)
    heads["center_sample"] = oversampling * matrix // 2
    bit = _mrd_header.flag_bit
    heads["flags"][:NOISE_READOUTS] = bit(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    rep, slc, line = (a.ravel() for a in np.indices((repetitions, slices, matrix)))
    img = heads[NOISE_READOUTS:]
    img["idx"]["kspace_encode_step_1"] = line
    img["idx"]["slice"] = slc
    img["idx"]["repetition"] = rep
    img["position"][:, 2] = (slc - (slices - 1) / 2.0) * SLICE_THICKNESS_MM
    first, last = line == 0, line == matrix - 1
    flags = np.zeros(len(img), dtype=np.uint64)
    flags[first] |= bit(ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1) | bit(ismrmrd.ACQ_FIRST_IN_SLICE)
    flags[last] |= bit(ismrmrd.ACQ_LAST_IN_ENCODE_STEP1) | bit(ismrmrd.ACQ_LAST_IN_SLICE)
    flags[first & (slc == 0)] |= bit(ismrmrd.ACQ_FIRST_IN_REPETITION)
    flags[last & (slc == slices - 1)] |= bit(ismrmrd.ACQ_LAST_IN_REPETITION)
    flags[-1] |= bit(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    img["flags"] = flags
    return heads


def generate(path: str | Path, matrix: int = 256, coils: int = 8, oversampling: int = 2,
             repetitions: int = 1, noise: float = 0.05, slices: int = 1, group: str = "dataset",
             seed: int = 0) -> int:
    """Write the dataset to ``path`` (overwritten); returns the number of acquisitions written.

    Slice s uses the phantom scaled by ``1 - 0.2 * s / slices``.  Acquisitions are appended in
    batches: the noise readouts, then one batch per repetition (all slices).
    """
    samples = oversampling * matrix
    phantom = np.stack([shepp_logan(matrix, 1.0 - 0.2 * s / slices) for s in range(slices)])
    csm = coil_sensitivities(coils, matrix)
    coil_images = phantom[:, np.newaxis] * csm[np.newaxis]  # [slice, coil, y, x]
    # [slice, line, coil, sample]: one contiguous [coil, sample] block per readout.
    readouts = np.ascontiguousarray(coil_kspace(coil_images, oversampling).transpose(0, 2, 1, 3))
    sigma = noise * np.sqrt(samples * matrix)
    rng = np.random.default_rng(seed)
    heads = acquisition_headers(matrix, coils, oversampling, slices, repetitions)
    empty_traj = np.zeros((samples, 0), dtype=np.float32)

    with h5py.File(path, "w") as f:
        grp = f.create_group(group)
        mrdfile.write_xml(grp, header_xml(matrix, coils, oversampling, slices, repetitions))
        noise_data = complex_noise(rng, (NOISE_READOUTS, coils, samples), sigma)
        mrdfile.append_acquisitions(grp, mrdfile.AcquisitionBlock(
            heads[:NOISE_READOUTS], list(noise_data), [empty_traj] * NOISE_READOUTS))
        per_rep = slices * matrix
        for rep in range(repetitions):
            data = readouts + complex_noise(rng, readouts.shape, sigma) if noise > 0 else readouts
            start = NOISE_READOUTS + rep * per_rep
            mrdfile.append_acquisitions(grp, mrdfile.AcquisitionBlock(
                heads[start:start + per_rep], list(data.reshape(per_rep, coils, samples)),
                [empty_traj] * per_rep))
        grp.create_dataset("coil_images", data=coil_images)
        grp.create_dataset("phantom", data=phantom)
        grp.create_dataset("csm", data=csm)
    return len(heads)


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
    args = parser.parse_args(argv)
    if args.matrix < 2 or args.oversampling < 1 or args.oversampling * args.matrix > 65535:
        parser.error("need matrix >= 2, oversampling >= 1 and oversampling * matrix <= 65535")
    if not 1 <= args.coils <= 1024:
        parser.error("coils must be between 1 and 1024")
    if not (1 <= args.repetitions <= 65535 and 1 <= args.slices <= 65535):
        parser.error("repetitions and slices must be between 1 and 65535")
    if args.noise < 0:
        parser.error("noise must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    started = time.perf_counter()
    count = generate(args.output, args.matrix, args.coils, args.oversampling, args.repetitions,
                     args.noise, args.slices, args.group, args.seed)
    log.info("wrote %d acquisitions (%d coils, matrix %d, oversampling %d, %d slice(s), %d repetition(s), "
             "noise %g) to %s:/%s in %.1f s", count, args.coils, args.matrix, args.oversampling,
             args.slices, args.repetitions, args.noise, args.output, args.group,
             time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
