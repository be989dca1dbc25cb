""":class:`ScanParams` from a DICOM dataset: standard tags, Siemens CSA where they say nothing.

Standard tags (classic MR Image; the first item of each functional-group macro of the shared and
then the first per-frame group of enhanced MR): ProtocolName (0018,1030), else SeriesDescription
(0008,103E); SequenceName (0018,0024) or PulseSequenceName (0018,9005); SequenceVariant
(0018,0021); RepetitionTime (0018,0080); EchoTime (0018,0081) or EffectiveEchoTime (0018,9082);
InversionTime (0018,0082); FlipAngle (0018,1314); AcquisitionMatrix (0018,1310) with
InPlanePhaseEncodingDirection (0018,1312) and MRAcquisitionType (0018,0023); Rows, Columns,
PixelSpacing (0028,0010/0011/0030); SliceThickness (0018,0050); NumberOfFrames (0028,0008);
ParallelReductionFactorInPlane/OutOfPlane (0018,9069/9155); PixelBandwidth (0018,0095);
GeometryOfKSpaceTraversal (0018,9032); StationName (0008,1010), else ManufacturerModelName
(0008,1090). From the Siemens CSA series header (0029,xx20, ``MrPhoenixProtocol``'s ASCCONV):
the echo times of a multi-echo scan, the number of slices, partitions and images per slab, the
slab thickness, the acceleration factors, the coil count and the trajectory, where the standard
tags do not give them. Patient name, ID and birth date are never read.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import pydicom
from pydicom.multival import MultiValue

from ._csa import ascconv, read_csa
from ._params import ScanParams, clean_text

log = logging.getLogger(__name__)

CSA_CREATOR = "SIEMENS CSA HEADER"
CSA_SERIES = 0x20  # element offset of the CSA series header in the private block of group 0029
FUNCTIONAL_GROUPS = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
TRAVERSAL = {"RECTILINEAR": "cartesian", "RADIAL": "radial", "SPIRAL": "spiral"}
SIEMENS_TRAJECTORY = {1: "cartesian", 2: "radial", 4: "spiral", 8: "other"}  # sKSpace.ucTrajectory; 8 = BLADE
COIL_COUNT = "sCoilSelectMeas.aRxCoilSelectData[0].asList.__attribute__.size"


def params_from_dicom(ds: pydicom.Dataset) -> ScanParams:
    """The parameters of one DICOM image (any image of the series: they share them)."""
    prot = _protocol(ds)
    three_d = str(_get(ds, "MRAcquisitionType") or "").upper() == "3D"
    phase_in_rows = str(_get(ds, "InPlanePhaseEncodingDirection") or "").upper() == "ROW"
    rows, columns = _int(_get(ds, "Rows")), _int(_get(ds, "Columns"))
    frames = _int(_get(ds, "NumberOfFrames"))
    recon_z = 1
    if three_d:
        recon_z = _int(prot.get("sKSpace.lImagesPerSlab")) or (frames if frames and frames > 1 else None)
    thickness = _float(_get(ds, "SliceThickness"))
    spacing = _get(ds, "PixelSpacing")
    fov_z = _float(prot.get("sSliceArray.asSlice[0].dThickness")) or (
        thickness * recon_z if thickness is not None and recon_z else None)
    in_plane = None
    if spacing is not None and len(spacing) == 2 and rows and columns:
        # x is the readout: across the image (along a row), unless the phase is encoded along the rows
        across, down = columns * float(spacing[1]), rows * float(spacing[0])
        in_plane = (down, across) if phase_in_rows else (across, down)
    recon_plane = None if not rows or not columns else ((rows, columns) if phase_in_rows else (columns, rows))
    return ScanParams(
        protocol=clean_text(_get(ds, "ProtocolName")) or clean_text(prot.get("tProtocolName"))
        or clean_text(_get(ds, "SeriesDescription")),
        sequence=clean_text(_get(ds, "SequenceName")) or clean_text(_get(ds, "PulseSequenceName")),
        variant=_multi(_get(ds, "SequenceVariant")),
        tr_ms=_float(_get(ds, "RepetitionTime")),
        te_ms=_echo_times(ds, prot),
        ti_ms=_float(_get(ds, "InversionTime")),
        flip_deg=_float(_get(ds, "FlipAngle")),
        matrix_encoded=_encoded_matrix(_get(ds, "AcquisitionMatrix"),
                                       _int(prot.get("sKSpace.lPartitions")) if three_d else 1),
        matrix_recon=None if recon_plane is None else (*recon_plane, recon_z),
        fov_mm=None if in_plane is None else (*in_plane, fov_z),
        slice_thickness_mm=thickness,
        slices=_int(prot.get("sSliceArray.lSize")),
        acceleration=_acceleration(ds, prot),
        bandwidth_hz_px=_float(_get(ds, "PixelBandwidth")),
        coils=_int(prot.get(COIL_COUNT)),
        trajectory=(TRAVERSAL.get(str(_get(ds, "GeometryOfKSpaceTraversal") or "").upper())
                    or SIEMENS_TRAJECTORY.get(prot.get("sKSpace.ucTrajectory"))),
        station=clean_text(_get(ds, "StationName")) or clean_text(_get(ds, "ManufacturerModelName")),
    )


def _get(ds: pydicom.Dataset, keyword: str) -> Any:
    """A top-level element's value, else the first found in a functional-group macro (enhanced MR)."""
    value = ds.get(keyword)
    if value is not None and value != "":
        return value
    for groups in FUNCTIONAL_GROUPS:
        sequence = ds.get(groups)
        if not sequence:
            continue
        for macro in sequence[0]:
            if macro.VR == "SQ" and macro.value and keyword in macro.value[0]:
                return macro.value[0].get(keyword)
    return None


def _csa_series_bytes(ds: pydicom.Dataset) -> Optional[bytes]:
    """The raw CSA series header, found through its private creator, else at (0029,1020)."""
    try:
        element = ds.private_block(0x0029, CSA_CREATOR)[CSA_SERIES]
    except KeyError:
        element = ds.get((0x0029, 0x1000 + CSA_SERIES))
    return element.value if element is not None and isinstance(element.value, bytes) else None


def _protocol(ds: pydicom.Dataset) -> dict[str, Any]:
    """The ASCCONV values of the CSA series header's protocol; empty without one."""
    data = _csa_series_bytes(ds)
    if not data:
        return {}
    try:
        tags = read_csa(data)
    except ValueError as exc:
        log.warning("Siemens CSA series header ignored: %s", exc)
        return {}
    text = "".join(tags.get("MrPhoenixProtocol") or tags.get("MrProtocol") or [])
    return ascconv(text)


def _echo_times(ds: pydicom.Dataset, prot: dict[str, Any]) -> Optional[tuple[float, ...]]:
    """All echo times of a multi-echo protocol (``alTE[i]`` in µs, ``lContrasts`` of them), else
    the image's own echo time."""
    contrasts = _int(prot.get("lContrasts")) or 1
    listed = [prot.get(f"alTE[{i}]") for i in range(contrasts)]
    if contrasts > 1 and all(isinstance(t, (int, float)) for t in listed):
        return tuple(t / 1000 for t in listed)
    echo = _float(_get(ds, "EchoTime"))
    if echo is None:
        echo = _float(_get(ds, "EffectiveEchoTime"))
    return None if echo is None else (echo,)


def _encoded_matrix(acquisition: Any, partitions: Optional[int]) -> Optional[tuple]:
    """(readout, phase, partitions) from AcquisitionMatrix (frequency rows\\columns, phase
    rows\\columns: one of each pair is 0). The readout oversampling is not in it."""
    values = [int(v) for v in acquisition] if acquisition is not None and len(acquisition) == 4 else None
    if not values or not any(values):
        return None
    return values[0] or values[1], values[2] or values[3], partitions


def _acceleration(ds: pydicom.Dataset, prot: dict[str, Any]) -> Optional[tuple]:
    """(in-plane, out-of-plane) reduction factors: the enhanced-MR elements, else ``sPat``."""
    ky, kz = _get(ds, "ParallelReductionFactorInPlane"), _get(ds, "ParallelReductionFactorOutOfPlane")
    if ky is None and kz is None:
        ky, kz = prot.get("sPat.lAccelFactPE"), prot.get("sPat.lAccelFact3D")
    if ky is None and kz is None:
        return None
    return _int(ky), _int(kz)


def _multi(value: Any) -> Optional[str]:
    """A multi-valued string element as DICOM writes it, ``SK\\SP\\MP``."""
    if isinstance(value, (list, tuple, MultiValue)):
        return clean_text("\\".join(str(v) for v in value))
    return clean_text(value)


def _float(value: Any) -> Optional[float]:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> Optional[int]:
    number = _float(value)
    return None if number is None else int(round(number))
