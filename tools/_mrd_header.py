"""The MRD headers of the synthetic data generators (helper, never run directly).

XML: every generator's ISMRMRD header is built here from ``ismrmrd.xsd`` types and written with
``ismrmrd.xsd.ToXML``: ``measurementInformation`` (patient position HFS, the protocol name, an
optional measurement ID), ``acquisitionSystemInformation`` (vendor ``Synthetic``, the generator's
name as model, field strength, receiver channels), the H1 resonance frequency, one ``encoding``
(encoded and recon space, encoding limits, trajectory, optional ``parallelImaging``), TR/TE (one or
several echo times)/flip angle, the user parameters and optional ``waveformInformation`` entries; a
``Scanner`` may add ``measurementDependency`` entries (type, measurement ID) and the relative receiver
noise bandwidth.

Acquisitions: :func:`readout_headers` fills the fields every generator's readouts share
(``mrdfile.ACQ_HEADER_DTYPE``); :func:`flag_bit` is the bit of an ``ismrmrd.ACQ_*`` flag.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import ismrmrd.xsd as xsd
import numpy as np

import mrdfile

Space = tuple[tuple[int, int, int], tuple[float, float, float]]  # matrix (x, y, z), FOV in mm (x, y, z)
Limit = tuple[int, int, int]  # minimum, maximum, centre


@dataclass(frozen=True)
class Scanner:
    """Who made the data: ``model`` (the generator's name), ``protocol``, field, Larmor frequency, coils."""

    model: str
    protocol: str
    field_t: float
    larmor_hz: int
    coils: int
    measurement_id: str | None = None
    dependencies: tuple[tuple[str, str], ...] = ()  # (dependencyType, measurementID), e.g. ("Noise", "N1")
    receiver_noise_bandwidth: float | None = None  # acquisitionSystemInformation/relativeReceiverNoiseBandwidth


def parallel_imaging(accel_y: int, accel_z: int, calibration: str | None) -> xsd.parallelImagingType:
    """``parallelImaging``: acceleration along kspace_encoding_step_1 and _2, and the calibration mode
    (``embedded``, ``separate``, …; None leaves it out)."""
    mode = xsd.calibrationModeType(calibration) if calibration else None
    return xsd.parallelImagingType(
        accelerationFactor=xsd.accelerationFactorType(kspace_encoding_step_1=accel_y, kspace_encoding_step_2=accel_z),
        calibrationMode=mode)


def encoding(encoded: Space, recon: Space, limits: dict[str, Limit], trajectory: str,
             parallel: xsd.parallelImagingType | None = None) -> xsd.encodingType:
    """One encoding; ``limits`` maps ``encodingLimitsType`` field names to (minimum, maximum, centre)."""
    def space(value: Space) -> xsd.encodingSpaceType:
        (mx, my, mz), (fx, fy, fz) = value
        return xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=mx, y=my, z=mz),
                                     fieldOfView_mm=xsd.fieldOfViewMm(x=fx, y=fy, z=fz))

    bounds = {name: xsd.limitType(minimum=low, maximum=high, center=centre)
              for name, (low, high, centre) in limits.items()}
    return xsd.encodingType(encodedSpace=space(encoded), reconSpace=space(recon),
                            encodingLimits=xsd.encodingLimitsType(**bounds),
                            trajectory=xsd.trajectoryType(trajectory), parallelImaging=parallel)


def user_parameters(longs: Sequence[tuple[str, int]] = (), doubles: Sequence[tuple[str, float]] = (),
                    strings: Sequence[tuple[str, str]] = (),
                    base64: Sequence[tuple[str, bytes]] = ()) -> xsd.userParametersType:
    """``userParameters`` from (name, value) pairs of each kind, in the given order."""
    return xsd.userParametersType(
        userParameterLong=[xsd.userParameterLongType(name=n, value=v) for n, v in longs],
        userParameterDouble=[xsd.userParameterDoubleType(name=n, value=v) for n, v in doubles],
        userParameterString=[xsd.userParameterStringType(name=n, value=v) for n, v in strings],
        userParameterBase64=[xsd.userParameterBase64Type(name=n, value=v) for n, v in base64])


def waveform_information(name: str, kind: str, waveform_id: int) -> xsd.waveformInformationType:
    """A ``waveformInformation`` entry: ``kind`` is the ``waveformType`` (ecg, pulse, …, other)."""
    return xsd.waveformInformationType(
        waveformName=name, waveformType=xsd.waveformInformationTypeWaveformType(kind),
        userParameters=user_parameters(longs=[("waveform_id", waveform_id)]))


def header_xml(scanner: Scanner, encoded: xsd.encodingType, sequence: tuple[float, float | Sequence[float], float],
               user: xsd.userParametersType, waveforms: Sequence[xsd.waveformInformationType] = ()) -> str:
    """The XML header text; ``sequence`` is (TR ms, TE ms or a sequence of echo times, flip angle in degrees)."""
    tr_ms, te_ms, flip_deg = sequence
    echo_times = [te_ms] if isinstance(te_ms, (int, float)) else list(te_ms)
    header = xsd.ismrmrdHeader(
        measurementInformation=xsd.measurementInformationType(
            measurementID=scanner.measurement_id, patientPosition=xsd.patientPositionType.HFS,
            protocolName=scanner.protocol,
            measurementDependency=[xsd.measurementDependencyType(dependencyType=kind, measurementID=ident)
                                   for kind, ident in scanner.dependencies]),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemVendor="Synthetic", systemModel=scanner.model, systemFieldStrength_T=scanner.field_t,
            relativeReceiverNoiseBandwidth=scanner.receiver_noise_bandwidth, receiverChannels=scanner.coils),
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=scanner.larmor_hz),
        encoding=[encoded],
        sequenceParameters=xsd.sequenceParametersType(TR=[tr_ms], TE=echo_times, flipAngle_deg=[flip_deg]),
        userParameters=user, waveformInformation=list(waveforms))
    return xsd.ToXML(header, encoding="UTF-8")


def flag_bit(flag: int) -> np.uint64:
    """The bit of an ``ismrmrd.ACQ_*`` flag number (1-based) in ``flags``."""
    return np.uint64(1 << (flag - 1))


def readout_headers(count: int, measurement_uid: int, samples: int, coils: int, dwell_us: float) -> np.ndarray:
    """``count`` acquisition headers with version 1, the measurement UID, ``samples``, all ``coils``
    active (channel mask), the dwell time and identity read/phase/slice directions; the rest 0."""
    heads = np.zeros(count, dtype=mrdfile.ACQ_HEADER_DTYPE)
    heads["version"] = 1
    heads["measurement_uid"] = measurement_uid
    heads["number_of_samples"] = samples
    heads["available_channels"] = coils
    heads["active_channels"] = coils
    heads["channel_mask"] = np.array([(1 << min(max(coils - 64 * w, 0), 64)) - 1 for w in range(16)],
                                    dtype=np.uint64)
    heads["sample_time_us"] = dwell_us
    heads["read_dir"] = (1.0, 0.0, 0.0)
    heads["phase_dir"] = (0.0, 1.0, 0.0)
    heads["slice_dir"] = (0.0, 0.0, 1.0)
    return heads
