"""The MRD file of ``generate_spiral_dataset.py``: header, readouts, truth (helper, never run directly).

Group ``/<group>``: the XML header (``tSequenceVariant = <hash>`` the second
``userParameterString``; encoded = recon space m × m; with waveforms a ``waveformInformation``
entry for IDs 0 and 1025), ``NOISE_READOUTS`` noise readouts (flag IS_NOISE_MEASUREMENT,
``scan_counter`` 0), then for each slice its arms (``scan_counter`` 1, 2, … over all slices, so
that modules that start their clock at 1 work; ``kspace_encode_step_1 = arm mod Ni``,
``repetition = arm // Ni``, FIRST/LAST_IN_SLICE, LAST_IN_MEASUREMENT on the last), each
``[coils, PRE_DISCARD + Ns]`` complex64 with time stamps advancing by TR; then the truth
datasets and attributes (:func:`write_truth`) and the waveforms.

Noise: complex Gaussian with ``E|n|² = (noise·m)²`` per sample (an image noise of about ``noise``
relative to the object maximum for Nyquist-rate sampling), drawn from one generator seeded with
``seed``: first for the noise readouts (zeros with noise 0), then for the imaging readouts in
file order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, NamedTuple

import h5py
import ismrmrd
import numpy as np

import mrdfile
from tools import _mrd_header
from tools._phantom import complex_noise
from tools._physiology import ECG_WAVEFORM_ID, PT_WAVEFORM_ID, Physio
from tools._spiral_scan import (FIELD_STRENGTH_T, MEASUREMENT_UID, NOISE_READOUTS, PRE_DISCARD,
                                SLICE_THICKNESS_MM, TICK_S, TIME_STAMP_START, SpiralScan)
from tools._spiral_trajectory import GAMMA_BAR


def header_xml(scan: SpiralScan, seq_hash: str) -> str:
    """The ISMRMRD XML header text (with ``scan.waveforms``, ``waveformInformation`` for IDs 0 and 1025)."""
    m, fov_mm = scan.matrix, 10.0 * scan.fov_cm
    space = ((m, m, 1), (fov_mm, fov_mm, SLICE_THICKNESS_MM))
    limits = {"kspace_encoding_step_1": (0, scan.interleaves - 1, 0), "kspace_encoding_step_2": (0, 0, 0),
              "slice": (0, scan.slices - 1, 0), "repetition": (0, min(scan.repetitions - 1, 65535), 0)}
    scanner = _mrd_header.Scanner("generate_spiral_dataset", "spiral_phantom", FIELD_STRENGTH_T,
                                  int(round(FIELD_STRENGTH_T * GAMMA_BAR)), scan.coils, f"XXX_{MEASUREMENT_UID}")
    user = _mrd_header.user_parameters(strings=[("SequenceName", "rtspiral_synthetic"), ("tSequenceVariant", seq_hash)])
    waves = [_mrd_header.waveform_information("ECG", "ecg", ECG_WAVEFORM_ID),
             _mrd_header.waveform_information("PilotTone", "other", PT_WAVEFORM_ID)] if scan.waveforms else []
    return _mrd_header.header_xml(scanner, _mrd_header.encoding(space, space, limits, "spiral"),
                                  (scan.tr_ms, 1.0, 15.0), user, waves)


def acquisition_headers(scan: SpiralScan, samples: int) -> np.ndarray:
    """Headers of all readouts of ``samples`` samples in file order (noise, then slice > arm)."""
    arms, slices, interleaves = scan.arms, scan.slices, scan.interleaves
    heads = _mrd_header.readout_headers(NOISE_READOUTS + scan.readouts, MEASUREMENT_UID, samples, scan.coils,
                                        scan.dt_us)
    heads["center_sample"] = PRE_DISCARD
    heads["acquisition_time_stamp"][:NOISE_READOUTS] = TIME_STAMP_START
    bit = _mrd_header.flag_bit
    heads["flags"][:NOISE_READOUTS] = bit(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)

    img = heads[NOISE_READOUTS:]
    index = np.arange(scan.readouts)
    slc, arm = index // arms, index % arms
    img["scan_counter"] = index + 1
    img["acquisition_time_stamp"] = TIME_STAMP_START + 1 + np.round(index * scan.tr_s / TICK_S).astype(np.int64)
    img["idx"]["kspace_encode_step_1"] = arm % interleaves
    img["idx"]["repetition"] = np.minimum(arm // interleaves, 65535)
    img["idx"]["slice"] = slc
    img["position"][:, 2] = (slc - (slices - 1) / 2.0) * SLICE_THICKNESS_MM
    flags = np.zeros(len(img), dtype=np.uint64)
    flags[arm == 0] |= bit(ismrmrd.ACQ_FIRST_IN_SLICE)
    flags[arm == arms - 1] |= bit(ismrmrd.ACQ_LAST_IN_SLICE)
    flags[-1] |= bit(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    img["flags"] = flags
    return heads


def write_readouts(grp: h5py.Group, scan: SpiralScan, heads: np.ndarray,
                   blocks: Iterable[tuple[int, int, np.ndarray]]) -> None:
    """The noise readouts, then the imaging ``blocks`` ``(start, stop, data)`` in order, noise added."""
    samples = int(heads["number_of_samples"][0])
    sigma = scan.noise * scan.matrix
    rng = np.random.default_rng(scan.seed)
    empty_traj = np.zeros((samples, 0), dtype=np.float32)
    noise_data = complex_noise(rng, (NOISE_READOUTS, scan.coils, samples), sigma)
    mrdfile.append_acquisitions(grp, mrdfile.AcquisitionBlock(
        heads[:NOISE_READOUTS], list(noise_data), [empty_traj] * NOISE_READOUTS))
    for start, stop, data in blocks:
        if sigma > 0:
            data += complex_noise(rng, data.shape, sigma)
        rows = heads[NOISE_READOUTS + start:NOISE_READOUTS + stop]
        mrdfile.append_acquisitions(grp, mrdfile.AcquisitionBlock(rows, list(data), [empty_traj] * len(rows)))


class Truth(NamedTuple):
    """What the data were made from: object, coil maps, shifts, coordinates, signals, metafile."""

    image: np.ndarray              # complex64 [m, m], maximum 1
    maps: np.ndarray               # complex64 [coils, m, m]
    shifts: np.ndarray             # float64 [readouts, 2]
    coordinates: np.ndarray        # float32 [Ni, Ns, 2]
    physio: Physio | None
    metafile: Path


def write_truth(grp: h5py.Group, scan: SpiralScan, truth: Truth) -> None:
    """The truth datasets and the group attributes (``truth_resp`` … only with physiology)."""
    grp.create_dataset("truth_image", data=truth.image)
    grp.create_dataset("truth_coil_images", data=truth.maps * truth.image[np.newaxis])
    grp.create_dataset("coil_maps", data=truth.maps)
    grp.create_dataset("truth_shift_px", data=truth.shifts)
    grp.create_dataset("truth_coordinates", data=truth.coordinates)
    grp.attrs.update({"phantom": "bart" if scan.bart else "own", "girf": str(scan.girf or ""),
                      "metafile": str(truth.metafile), "matrix": scan.matrix, "pre_discard": PRE_DISCARD})
    physio = truth.physio
    if physio is None:
        return
    grp.create_dataset("truth_resp", data=physio.resp)
    grp.create_dataset("truth_card", data=physio.card)
    grp.create_dataset("truth_card_phase", data=physio.card_phase)
    grp.create_dataset("truth_trigger_arms", data=physio.trigger_arms)
    grp.create_dataset("truth_derivative_trigger_arms", data=physio.derivative_trigger_arms)
    grp.attrs.update({"resp_hz": scan.resp_hz, "card_hz": scan.card_hz, "resp_px": scan.resp_px,
                      "card_px": scan.card_px, "resp_phase": scan.resp_phase, "card_phase": scan.card_phase})
