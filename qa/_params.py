"""The parameter model of header QA: :class:`ScanParams`, read from an MRD header.

One frozen dataclass holds what a session's header says about the scan; every field is None when
the header does not say it. :func:`params_from_mrd` reads it from an ``ismrmrd.xsd.ismrmrdHeader``
(or from XML text), :func:`station_of` names the scanner a reference belongs to. Patient data
(``subjectInformation``) is never read. Where each field comes from: ``qa/README.md``.
"""
from __future__ import annotations

import dataclasses
import html
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from connection import parse_header_xml

Triple = tuple[Optional[int], Optional[int], Optional[int]]
FloatTriple = tuple[Optional[float], Optional[float], Optional[float]]

# Fields whose values are tuples (JSON lists).
TUPLE_FIELDS = frozenset({"te_ms", "matrix_encoded", "matrix_recon", "fov_mm", "acceleration"})
# userParameters (Double or Long, names compared case-insensitively) taken as the readout
# bandwidth in Hz per pixel: MRD v1 has no element for it.
BANDWIDTH_USER_PARAMETERS = ("bandwidthperpixel", "pixelbandwidth")


@dataclass(frozen=True)
class ScanParams:
    """The scan as its header describes it; None: not in the header (or a component of it)."""

    protocol: Optional[str] = None
    sequence: Optional[str] = None
    variant: Optional[str] = None
    tr_ms: Optional[float] = None
    te_ms: Optional[tuple[float, ...]] = None
    ti_ms: Optional[float] = None
    flip_deg: Optional[float] = None
    matrix_encoded: Optional[Triple] = None
    matrix_recon: Optional[Triple] = None
    fov_mm: Optional[FloatTriple] = None
    slice_thickness_mm: Optional[float] = None
    slices: Optional[int] = None
    acceleration: Optional[tuple[Optional[int], Optional[int]]] = None
    bandwidth_hz_px: Optional[float] = None
    coils: Optional[int] = None
    trajectory: Optional[str] = None
    station: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """Every field by name, tuples as lists: JSON-able."""
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScanParams:
        """The inverse of :meth:`to_dict`; keys that are no field are ignored (a newer writer)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: (tuple(value) if key in TUPLE_FIELDS and value is not None else value)
                      for key, value in data.items() if key in names})


def params_from_mrd(header: Any) -> ScanParams:
    """The parameters of an ``ismrmrd.xsd.ismrmrdHeader``; XML text is parsed first.

    Text that is not ISMRMRD XML gives only what a plain search for ``protocolName``,
    ``stationName`` and ``systemModel`` finds (all None for anything else); nothing raises.
    The first encoding describes the scan when there are several.
    """
    if isinstance(header, str):
        try:
            header = parse_header_xml(header)
        except Exception:  # xsdata raises several unrelated types
            return _params_from_text(header)
    measurement = getattr(header, "measurementInformation", None)
    system = getattr(header, "acquisitionSystemInformation", None)
    sequence = getattr(header, "sequenceParameters", None)
    encodings = getattr(header, "encoding", None) or []
    encoding = encodings[0] if encodings else None
    recon = getattr(encoding, "reconSpace", None)
    recon_matrix = _triple(getattr(recon, "matrixSize", None), int)
    recon_fov = _triple(getattr(recon, "fieldOfView_mm", None), float)
    slice_limit = getattr(getattr(encoding, "encodingLimits", None), "slice", None)
    factors = getattr(getattr(encoding, "parallelImaging", None), "accelerationFactor", None)
    trajectory = getattr(encoding, "trajectory", None)
    return ScanParams(
        protocol=clean_text(getattr(measurement, "protocolName", None)),
        sequence=clean_text(getattr(measurement, "sequenceName", None)),
        variant=clean_text(getattr(sequence, "sequence_type", None)),
        tr_ms=_first(getattr(sequence, "TR", None)),
        te_ms=tuple(float(t) for t in getattr(sequence, "TE", None) or ()) or None,
        ti_ms=_first(getattr(sequence, "TI", None)),
        flip_deg=_first(getattr(sequence, "flipAngle_deg", None)),
        matrix_encoded=_triple(getattr(getattr(encoding, "encodedSpace", None), "matrixSize", None), int),
        matrix_recon=recon_matrix,
        fov_mm=recon_fov,
        slice_thickness_mm=(recon_fov[2] / recon_matrix[2]
                            if recon_fov and recon_matrix and recon_fov[2] is not None and recon_matrix[2]
                            else None),
        slices=None if slice_limit is None or slice_limit.maximum is None else int(slice_limit.maximum) + 1,
        acceleration=None if factors is None else (_int(factors.kspace_encoding_step_1),
                                                   _int(factors.kspace_encoding_step_2)),
        bandwidth_hz_px=_bandwidth(getattr(header, "userParameters", None)),
        coils=_int(getattr(system, "receiverChannels", None)),
        trajectory=clean_text(getattr(trajectory, "value", trajectory)),
        station=(clean_text(getattr(system, "stationName", None))
                 or clean_text(getattr(system, "systemModel", None))),
    )


def station_of(header_or_params: Any, peer: Optional[str] = None) -> str:
    """The scanner a reference belongs to: the header's ``stationName``, else its ``systemModel``
    (:attr:`ScanParams.station` holds the same), else ``peer`` (the client's address), else
    ``"unknown"``. Takes a :class:`ScanParams`, a parsed header or XML text."""
    params = header_or_params if isinstance(header_or_params, ScanParams) else params_from_mrd(header_or_params)
    return params.station or clean_text(peer) or "unknown"


def _params_from_text(xml: str) -> ScanParams:
    """What a search of text that does not parse finds: protocol and station."""
    def element(name: str) -> Optional[str]:
        match = re.search(rf"<{name}>([^<]*)</{name}>", xml)
        return clean_text(html.unescape(match.group(1))) if match else None

    return ScanParams(protocol=element("protocolName"),
                      station=element("stationName") or element("systemModel"))


def clean_text(value: Any) -> Optional[str]:
    """A string stripped of surrounding white space; None for None or an empty string."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int(value: Any) -> Optional[int]:
    return None if value is None else int(value)


def _first(values: Any) -> Optional[float]:
    """The first value of an MRD list element (TR, TI, flip angle), as a float."""
    return float(values[0]) if values else None


def _triple(element: Any, kind: type) -> Optional[tuple]:
    """(x, y, z) of a ``matrixSize`` or ``fieldOfView_mm`` element, None when it is absent."""
    if element is None:
        return None
    return tuple(None if v is None else kind(v) for v in (element.x, element.y, element.z))


def _bandwidth(user: Any) -> Optional[float]:
    """The readout bandwidth (Hz/pixel) from a user parameter of a known name, if there is one."""
    for kind in ("userParameterDouble", "userParameterLong"):
        for param in getattr(user, kind, None) or ():
            if (param.name or "").strip().casefold() in BANDWIDTH_USER_PARAMETERS and param.value is not None:
                return float(param.value)
    return None
