"""Generate synthetic MR spectroscopy raw data (MRD HDF5): a single-voxel FID or a small CSI grid, with the truth.

Two kinds (``--kind``), both laid out the way Siemens spectroscopy data reach python-ismrmrd-server
(and therefore its ``spectroscopy`` module and ours):

* ``svs``: one voxel holding the peaks of :data:`SVS_PEAKS` (NAA, creatine, choline, myo-inositol and
  residual water, at their ppm shifts, with an amplitude and a T2* each); one readout per average.
* ``csi``: a ``grid x grid`` voxel grid, phase-encoded along ``kspace_encode_step_1`` (line) and
  ``segment``; the voxel at line index p, segment index q holds one peak at
  ``CSI_BASE_HZ + CSI_STEP_HZ * (q * grid + p)`` (a different frequency in every voxel, so a swapped or
  flipped axis is seen), with an amplitude falling from 1 at the grid centre to 0.4 at the corners.

Signal model.  A voxel's FID, sampled 2x oversampled at ``dwell`` = ``DwellTime_0`` µs for
``2 * points`` points, is ``v(t) = sum_k a_k exp(2 pi i f_k t) exp(-t / T2*_k)`` with ``f`` in Hz
relative to the transmitter (``reference_ppm``, water); the raw data are its complex conjugate
(Siemens convention; the modules conjugate it back).  CSI k-space is the conjugate of the centred
2-D FFT ``fftshift(fft2(ifftshift(v)))`` over (line, segment), so the centred inverse FFT gives the
voxels back.  Coil c sees the data times a fixed complex weight (coil ``coils // 2`` the strongest).
Noise: complex Gaussian, standard deviation ``--noise`` per FID point of a voxel (relative to the
amplitude 1 of the strongest peak), independent per coil and average.

Header fields the spectroscopy modules read: ``userParameterLong SpecVectorSize`` (points after
the 2x oversampling is removed), ``userParameterDouble DwellTime_0`` (the oversampled dwell time in
µs), encoding limits ``average``, ``kspace_encoding_step_1`` and ``segment``,
``reconSpace.fieldOfView_mm``; readouts carry ``idx.average``, ``idx.kspace_encode_step_1``,
``idx.segment``, ``FIRST_IN_SLICE`` on the first and ``LAST_IN_SLICE`` on the last, and one noise
readout (``IS_NOISE_MEASUREMENT``) comes first.

The truth, in ``/<group>/truth`` (attributes ``kind``, ``points``, ``dwell_time_us`` and
``spectral_width_hz`` after the oversampling removal, ``larmor_hz``, ``reference_ppm``, ``grid``):

* ``frequency_hz``, ``ppm``, ``amplitude``, ``t2star_ms``, ``spectral_index``: one entry per peak
  (svs: ``[peaks]``, names in ``names``) or per voxel (csi: ``[segment, line]``, the ``[z, y]`` axes
  of the returned image).  ``spectral_index`` is the peak's (fractional) point in
  ``fftshift(fft(fid))`` of a returned FID of ``points`` points: ``points // 2 + f / spectral_width * points``.
* ``fid``: the noise-free voxel FIDs at the output sampling (svs ``[points]``, csi
  ``[segment, line, points]``), to which a module's returned FIDs are proportional.

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

log = logging.getLogger("generate_mrs_dataset")

GYROMAGNETIC_HZ_PER_T = 42.577478e6
REFERENCE_PPM = 4.7  # the transmitter sits on water
SVS_PEAKS = (  # name, ppm, amplitude, T2* (ms)
    ("NAA", 2.01, 1.0, 80.0),
    ("Cr", 3.03, 0.7, 80.0),
    ("Cho", 3.20, 0.5, 80.0),
    ("mI", 3.56, 0.3, 60.0),
    ("water", 4.70, 0.4, 40.0),
)
CSI_BASE_HZ = -400.0
CSI_STEP_HZ = 12.0
CSI_T2STAR_MS = 60.0
CSI_EDGE_AMPLITUDE = 0.4
SVS_FOV_MM = (20.0, 20.0, 20.0)
CSI_FOV_MM = (160.0, 160.0, 15.0)
MEASUREMENT_UID = 2002
TIME_STAMP_START = 14_400_000  # 10:00:00 in 2.5 ms ticks since midnight
TICKS_PER_READOUT = 800  # TR 2 s

def peak_table(kind: str, grid: int, field_t: float) -> dict[str, np.ndarray]:
    """The peaks: ``frequency_hz``, ``ppm``, ``amplitude``, ``t2star_ms``, for svs ``[peaks]`` (and
    ``names``), for csi one per voxel, ``[segment, line]``."""
    larmor_mhz = GYROMAGNETIC_HZ_PER_T * field_t / 1e6
    if kind == "svs":
        names, ppm, amplitude, t2star = (np.array(column) for column in zip(*SVS_PEAKS))
        return {"names": names, "frequency_hz": (ppm - REFERENCE_PPM) * larmor_mhz, "ppm": ppm,
                "amplitude": amplitude, "t2star_ms": t2star}
    q, p = np.indices((grid, grid))  # q: segment index, p: line index
    centre = (grid - 1) / 2
    distance = np.hypot(p - centre, q - centre) / np.hypot(centre, centre)
    frequency = CSI_BASE_HZ + CSI_STEP_HZ * (q * grid + p)
    return {"frequency_hz": frequency, "ppm": REFERENCE_PPM + frequency / larmor_mhz,
            "amplitude": 1.0 - (1.0 - CSI_EDGE_AMPLITUDE) * distance, "t2star_ms": np.full((grid, grid), CSI_T2STAR_MS)}


def voxel_fids(frequency_hz: np.ndarray, amplitude: np.ndarray, t2star_ms: np.ndarray,
               times_s: np.ndarray) -> np.ndarray:
    """``sum_k a_k exp((2 pi i f_k - 1 / T2*_k) t)``: complex128 ``[..., time]`` of peaks ``[..., k]``."""
    rate = 2j * np.pi * frequency_hz - 1e3 / t2star_ms  # [..., k]
    return (np.exp(rate[..., np.newaxis, :] * times_s[:, np.newaxis]) @ amplitude[..., np.newaxis])[..., 0]


def centred_fft2(x: np.ndarray) -> np.ndarray:
    """``fftshift(fft2(ifftshift(x)))`` over the first two axes."""
    axes = (0, 1)
    return scipy.fft.fftshift(scipy.fft.fft2(scipy.fft.ifftshift(x, axes=axes), axes=axes), axes=axes)


def coil_weights(coils: int) -> np.ndarray:
    """Fixed complex coil weights, largest (1) for coil ``coils // 2``."""
    c = np.arange(coils)
    return np.exp(1j * np.pi * c / 4) / (1.0 + 0.5 * np.abs(c - coils // 2))


def complex_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Complex Gaussian noise, complex128 of ``shape``, with ``E|n|^2 = sigma^2``."""
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * (sigma / np.sqrt(2.0))


def header_xml(kind: str, points: int, dwell_us: float, coils: int, averages: int, grid: int,
               field_t: float) -> str:
    """The ISMRMRD XML header text of the dataset."""
    fov = SVS_FOV_MM if kind == "svs" else CSI_FOV_MM
    phase_encoding = (0, grid - 1, grid // 2)
    limits = {"kspace_encoding_step_1": phase_encoding, "kspace_encoding_step_2": (0, 0, 0),
              "average": (0, averages - 1, 0), "slice": (0, 0, 0), "segment": phase_encoding}
    encoded = _mrd_header.encoding(((2 * points, grid, 1), fov), ((points, grid, 1), fov), limits, "cartesian")
    scanner = _mrd_header.Scanner("generate_mrs_dataset", f"{kind.upper()}_synthetic", field_t,
                                  round(GYROMAGNETIC_HZ_PER_T * field_t), coils)
    user = _mrd_header.user_parameters(longs=[("SpecVectorSize", points)], doubles=[("DwellTime_0", dwell_us)])
    return _mrd_header.header_xml(scanner, encoded, (TICKS_PER_READOUT * 2.5, 30.0, 90.0), user)


def acquisition_headers(points: int, dwell_us: float, coils: int, averages: int, grid: int) -> np.ndarray:
    """Headers of all readouts in file order: one noise readout, then average > segment > line."""
    count = 1 + averages * grid * grid
    heads = _mrd_header.readout_headers(count, MEASUREMENT_UID, 2 * points, coils, dwell_us)
    heads["scan_counter"] = np.arange(1, count + 1)
    heads["acquisition_time_stamp"] = TIME_STAMP_START + TICKS_PER_READOUT * np.arange(count)
    bit = _mrd_header.flag_bit
    heads["flags"][0] = bit(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    average, segment, line = (a.ravel() for a in np.indices((averages, grid, grid)))
    spectra = heads[1:]
    spectra["idx"]["average"] = average
    spectra["idx"]["segment"] = segment
    spectra["idx"]["kspace_encode_step_1"] = line
    spectra["flags"][0] |= bit(ismrmrd.ACQ_FIRST_IN_SLICE)
    spectra["flags"][-1] |= bit(ismrmrd.ACQ_LAST_IN_SLICE) | bit(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    return heads


def generate(path: str | Path, kind: str = "svs", points: int = 1024, dwell_us: float = 250.0, coils: int = 4,
             averages: int = 8, grid: int = 8, noise: float = 0.05, field_t: float = 2.89,
             group: str = "dataset", seed: int = 0) -> int:
    """Write the dataset to ``path`` (overwritten); returns the number of acquisitions written."""
    grid = 1 if kind == "svs" else grid
    truth = peak_table(kind, grid, field_t)
    spectral_width = 1e6 / (2 * dwell_us)
    truth["spectral_index"] = points // 2 + truth["frequency_hz"] / spectral_width * points
    peaks = {k: truth[k].reshape(grid, grid, -1) for k in ("frequency_hz", "amplitude", "t2star_ms")}
    oversampled = voxel_fids(peaks["frequency_hz"], peaks["amplitude"], peaks["t2star_ms"],
                             np.arange(2 * points) * dwell_us * 1e-6)  # [segment, line, time]
    # Siemens raw convention: the conjugate of the voxels' (centred) k-space.
    kspace = np.conj(centred_fft2(oversampled))
    readouts = kspace[np.newaxis, :, :, np.newaxis, :] * coil_weights(coils)[:, np.newaxis]
    rng = np.random.default_rng(seed)
    sigma = noise * grid  # the centred inverse FFT over grid x grid divides the noise by grid
    shape = (averages, grid, grid, coils, 2 * points)
    data = readouts + complex_noise(rng, shape, sigma) if noise > 0 else np.broadcast_to(readouts, shape)
    data = np.concatenate([complex_noise(rng, (1, coils, 2 * points), sigma), data.reshape(-1, coils, 2 * points)])
    heads = acquisition_headers(points, dwell_us, coils, averages, grid)
    empty_traj = np.zeros((2 * points, 0), dtype=np.float32)
    with h5py.File(path, "w") as f:
        grp = f.create_group(group)
        mrdfile.write_xml(grp, header_xml(kind, points, dwell_us, coils, averages, grid, field_t))
        mrdfile.append_acquisitions(grp, mrdfile.AcquisitionBlock(
            heads, list(data.astype(np.complex64)), [empty_traj] * len(heads)))
        out = grp.create_group("truth")
        out.attrs.update(kind=kind, points=points, dwell_time_us=2 * dwell_us, spectral_width_hz=spectral_width,
                         larmor_hz=GYROMAGNETIC_HZ_PER_T * field_t, reference_ppm=REFERENCE_PPM, grid=grid)
        for name, values in truth.items():
            out.create_dataset(name, data=values.astype(object) if name == "names" else values,
                               dtype=h5py.string_dtype() if name == "names" else None)
        times = np.arange(points) * 2 * dwell_us * 1e-6
        fid = voxel_fids(peaks["frequency_hz"], peaks["amplitude"], peaks["t2star_ms"], times)
        out.create_dataset("fid", data=(fid[0, 0] if kind == "svs" else fid).astype(np.complex64))
    return len(heads)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="output MRD HDF5 file (overwritten)")
    parser.add_argument("-k", "--kind", choices=("svs", "csi"), default="svs",
                        help="single voxel (svs) or a phase-encoded voxel grid (csi)")
    parser.add_argument("-n", "--points", type=int, default=1024,
                        help="spectral points after the 2x oversampling is removed (SpecVectorSize)")
    parser.add_argument("--dwell-us", type=float, default=250.0,
                        help="oversampled dwell time in µs (DwellTime_0); spectral width 1 / (2 dwell)")
    parser.add_argument("-c", "--coils", type=int, default=4, help="number of receive coils")
    parser.add_argument("-a", "--averages", type=int, default=8, help="number of averages")
    parser.add_argument("--grid", type=int, default=8, help="csi: voxels along line and segment")
    parser.add_argument("--noise", type=float, default=0.05,
                        help="noise standard deviation per FID point of a voxel (strongest peak: 1)")
    parser.add_argument("--field", type=float, default=2.89, help="field strength in T")
    parser.add_argument("-g", "--group", default="dataset", help="HDF5 group name")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the noise")
    args = parser.parse_args(argv)
    if not 8 <= args.points <= 32767 or args.points % 2:
        parser.error("points must be even and between 8 and 32767")
    if args.dwell_us <= 0 or args.field <= 0 or args.noise < 0:
        parser.error("dwell time and field must be positive, noise not negative")
    if not (1 <= args.coils <= 1024 and 1 <= args.averages <= 65535 and 2 <= args.grid <= 64):
        parser.error("need 1-1024 coils, 1-65535 averages and a grid of 2-64")
    spectral_width = 1e6 / (2 * args.dwell_us)
    largest = np.abs(peak_table(args.kind, args.grid, args.field)["frequency_hz"]).max()
    if largest > 0.45 * spectral_width:
        parser.error(f"peaks up to {largest:.0f} Hz off resonance do not fit well inside the spectral width "
                     f"{spectral_width:.0f} Hz: shorten the dwell time (or the grid)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    started = time.perf_counter()
    count = generate(args.output, args.kind, args.points, args.dwell_us, args.coils, args.averages, args.grid,
                     args.noise, args.field, args.group, args.seed)
    shape = "1 voxel" if args.kind == "svs" else f"{args.grid}x{args.grid} voxels"
    log.info("wrote %d acquisitions (%s, %s, %d points, %d coils, %d averages, noise %g) to %s:/%s in %.1f s",
             count, args.kind, shape, args.points, args.coils, args.averages, args.noise, args.output, args.group,
             time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
