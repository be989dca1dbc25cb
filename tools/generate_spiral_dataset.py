"""Generate a synthetic multi-coil 2-D spiral raw-data file (MRD HDF5) and its trajectory metafile.

Built as docs/spiral.md §11 recommends, so that it does not test the reconstruction with itself:
the k-space comes from an analytic phantom evaluated exactly at the trajectory points (no NUFFT).
The command line describes a :class:`SpiralScan`; :func:`generate` writes it:

* the metafile ``<metafile-dir>/<hash>.mat`` (docs/spiral.md §2.2, ``_spiral.write_metafile``) of
  the Ni unique arms and their DCF, ``<hash>`` the MD5 of the trajectory (``tools/_spiral_trajectory.py``);
* the file, group ``/<group>`` (default ``dataset``): XML header with ``tSequenceVariant = <hash>``,
  5 noise readouts, then ``--arms`` readouts of ``[coils, pre_discard + Ns]`` complex64 per slice
  (``tools/_spiral_mrd.py``), simulated from the object and coil model of ``tools/_spiral_phantom.py``,
  moved by the motion and physiological signals of ``tools/_physiology.py``, plus the ground truth:

  * ``truth_image``        complex64 [m, m]           object (maximum 1)
  * ``truth_coil_images``  complex64 [coils, m, m]    ``coil_maps * truth_image`` (static, noise-free)
  * ``coil_maps``          complex64 [coils, m, m]    sensitivities (largest root-sum-of-squares 1)
  * ``truth_shift_px``     float64   [arms·slices, 2] object displacement of every imaging readout
  * ``truth_coordinates``  float32   [Ni, Ns, 2]      grid coordinates the data were simulated at
    (``_spiral.grid_coordinates`` of the metafile, or GIRF-predicted with ``--girf``)

  and, with ``--resp-hz``, ``--card-hz`` or ``--waveforms`` (off by default):

  * ``truth_resp``, ``truth_card``     float64 [arms·slices]  r and c at every imaging readout
  * ``truth_card_phase``               float64 [arms·slices]  ``frac(f_c·t + φ_c − 0.3)`` ∈ [0, 1):
    the cardiac phase since the last R wave (0 everywhere when f_c = 0)
  * ``truth_trigger_arms``             int64   [beats]        readout nearest to each R wave
  * ``truth_derivative_trigger_arms``  int64   [beats]        readout nearest to each maximum of ċ

  ``--waveforms`` adds ``/<group>/waveforms``: the ECG (ID 0) and the pilot tone (ID 1025).

:func:`truth_frame` (``tools/_spiral_truth.py``) gives the truth of a frame of readouts in module
output orientation.  The output file and metafile are overwritten.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "modules"))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

import _bart  # noqa: E402
import mrdfile  # noqa: E402
from tools import _physiology, _spiral_mrd, _spiral_phantom, _spiral_trajectory  # noqa: E402
from tools._physiology import encode_pilot_tone_rows, physio_signals, pilot_tone_waveforms  # noqa: E402,F401
from tools._spiral_scan import NOISE_READOUTS, PRE_DISCARD, SpiralScan  # noqa: E402
from tools._spiral_trajectory import spiral_arm  # noqa: E402,F401
from tools._spiral_truth import (bandlimit, kspace_window, shift_image, to_module_orientation,  # noqa: E402,F401
                                 truth_frame)

__all__ = ["SpiralScan", "generate", "main", "parse_args", "scan_from_args", "spiral_arm", "physio_signals",
           "encode_pilot_tone_rows", "pilot_tone_waveforms", "truth_frame", "bandlimit", "kspace_window",
           "shift_image", "to_module_orientation"]

log = logging.getLogger("generate_spiral_dataset")


def generate(scan: SpiralScan, *, output: str | Path, metafile_dir: str | Path = "seq_meta",
             group: str = "dataset", workers: int | None = None) -> dict:
    """Write the metafile and the raw-data file of ``scan``; returns a summary (hash, paths, shapes).

    ``workers``: threads simulating the k-space (default: one per CPU).  ValueError for too few
    samples, ``_bart.BartError`` when BART fails.
    """
    designed = _spiral_trajectory.design(scan)
    metafile = _spiral_trajectory.write_metafile(designed, metafile_dir)
    coord = _spiral_trajectory.simulation_coordinates(designed, scan)
    physio = _physiology.scan_physiology(scan)
    shifts = _physiology.object_shifts(scan, physio)
    phantom = _spiral_phantom.make_phantom(scan.coils, scan.matrix, scan.bart)
    heads = _spiral_mrd.acquisition_headers(scan, PRE_DISCARD + designed.samples)
    blocks = _spiral_phantom.simulate_readouts(phantom, _spiral_trajectory.readout_coordinates(coord), shifts,
                                               scan.arms, workers)
    waves = []
    with h5py.File(output, "w") as f:
        grp = f.create_group(group)
        mrdfile.write_xml(grp, _spiral_mrd.header_xml(scan, designed.seq_hash))
        _spiral_mrd.write_readouts(grp, scan, heads, blocks)
        _spiral_mrd.write_truth(grp, scan, _spiral_mrd.Truth(phantom.image, phantom.maps, shifts, coord, physio,
                                                             metafile))
        if scan.waveforms:
            stamps = heads["acquisition_time_stamp"][NOISE_READOUTS:].astype(np.int64)
            waves = _physiology.scan_waveforms(physio, stamps, scan.arms, scan.slices)
            mrdfile.append_waveforms(grp, waves)
    return {"hash": designed.seq_hash, "metafile": metafile, "matrix": scan.matrix, "samples": designed.samples,
            "acquisitions": len(heads), "interleaves": scan.interleaves, "waveforms": len(waves),
            "triggers": 0 if physio is None else len(physio.trigger_arms)}


def scan_from_args(args: argparse.Namespace) -> SpiralScan:
    """The :class:`SpiralScan` of parsed arguments (every field has the flag of its name)."""
    return SpiralScan(**{field.name: getattr(args, field.name) for field in dataclasses.fields(SpiralScan)})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="output MRD HDF5 file (overwritten)")
    parser.add_argument("--metafile-dir", default="seq_meta", help="folder of the <hash>.mat metafile")
    parser.add_argument("--fov-cm", type=float, default=24.0, help="field of view in cm")
    parser.add_argument("--res-mm", type=float, default=2.0, help="resolution in mm (m = 10·fov/res)")
    parser.add_argument("--interleaves", type=int, default=16, help="unique arms Ni (GA_steps)")
    parser.add_argument("--golden-angle", action="store_true", help="golden-angle instead of linear order")
    parser.add_argument("--ga-deg", type=float, default=222.4969, help="golden-angle increment in degrees")
    parser.add_argument("--dt-us", type=float, default=2.0, help="ADC dwell time in µs")
    parser.add_argument("--samples", type=int, help="samples per arm after pre-discard "
                        "(default: the gradient-limited minimum; more makes a slower spiral)")
    parser.add_argument("--coils", type=int, default=8, help="receive coils")
    parser.add_argument("--arms", type=int, default=200, help="arms (readouts) per slice")
    parser.add_argument("--slices", type=int, default=1, help="slices (identical objects)")
    parser.add_argument("--noise", type=float, default=0.0, help="noise, relative to the object maximum")
    parser.add_argument("--motion-px", type=float, default=0.0, help="translation amplitude in pixels")
    parser.add_argument("--motion-hz", type=float, default=0.25, help="translation frequency in Hz")
    parser.add_argument("--tr-ms", type=float, default=5.0, help="repetition time in ms")
    parser.add_argument("--resp-hz", type=float, default=0.0,
                        help="respiration r(t) = sin(2π(f·t + phase)) in Hz (0 = off)")
    parser.add_argument("--card-hz", type=float, default=0.0,
                        help="heart rate of the cardiac pulse train c(t) in Hz (0 = off)")
    parser.add_argument("--resp-px", type=float, default=3.0,
                        help="shift along coordinate 0 in pixels per unit r(t)")
    parser.add_argument("--card-px", type=float, default=1.0,
                        help="shift along coordinate 1 in pixels per unit c(t)")
    parser.add_argument("--resp-phase", type=float, default=0.0, help="respiratory phase at t = 0, cycles")
    parser.add_argument("--card-phase", type=float, default=0.0, help="cardiac phase at t = 0, cycles")
    parser.add_argument("--waveforms", action="store_true",
                        help="write ECG (waveform 0) and pilot-tone (waveform 1025) waveforms")
    parser.add_argument("--girf", help="GIRF .mat file: simulate at the GIRF-predicted trajectory")
    parser.add_argument("--bart", action="store_true", help="BART's Shepp-Logan instead of the own one")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the noise")
    parser.add_argument("-g", "--group", default="dataset", help="HDF5 group name")
    args = parser.parse_args(argv)
    if not (args.fov_cm > 0 and args.res_mm > 0 and args.dt_us > 0 and args.tr_ms > 0):
        parser.error("fov, resolution, dwell time and TR must be positive")
    matrix = 10 * args.fov_cm / args.res_mm
    if abs(matrix - round(matrix)) > 1e-6 or round(matrix) < 4:
        parser.error(f"10·fov/res = {matrix:g} must be an integer matrix size of at least 4")
    if not (1 <= args.interleaves <= 65535 and 1 <= args.arms and 1 <= args.slices <= 65535):
        parser.error("need 1 <= interleaves <= 65535, arms >= 1 and 1 <= slices <= 65535")
    if not 1 <= args.coils <= 1024:
        parser.error("coils must be between 1 and 1024")
    if args.noise < 0:
        parser.error("noise must not be negative")
    nyquist = 0.5 / (args.tr_ms * 1e-3)
    if not (0 <= args.resp_hz < nyquist and 0 <= args.card_hz < nyquist):
        parser.error(f"respiratory and cardiac frequencies must be in [0, {nyquist:g}) Hz (1/(2·TR))")
    if args.girf and not Path(args.girf).is_file():
        parser.error(f"GIRF file {args.girf} not found")
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    scan = scan_from_args(args)
    started = time.perf_counter()
    try:
        info = generate(scan, output=args.output, metafile_dir=args.metafile_dir, group=args.group)
    except (ValueError, _bart.BartError) as exc:
        log.error("%s", exc)
        return 1
    log.info("wrote %d acquisitions (%d coils, %d arms x %d slice(s), %d+%d samples, matrix %d, "
             "%s phantom) to %s:/%s and metafile %s in %.1f s", info["acquisitions"], scan.coils,
             scan.arms, scan.slices, PRE_DISCARD, info["samples"], info["matrix"],
             "BART" if scan.bart else "own", args.output, args.group, info["metafile"],
             time.perf_counter() - started)
    if scan.physiology:
        log.info("physiological signals: respiration %g Hz, heart %g Hz (%d R waves), %d waveforms",
                 scan.resp_hz, scan.card_hz, info["triggers"], info["waveforms"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
