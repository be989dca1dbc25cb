"""Header QA: the scan parameters of a session's MRD header checked against a reference, before
any image (``qa/README.md``).

    from qa import ScanParams, QAResult, Deviation, QAChecker, params_from_mrd, params_from_dicom, station_of

:func:`params_from_mrd` / :func:`params_from_dicom` normalise an MRD header or a DICOM dataset into
:class:`ScanParams`; :func:`station_of` names the scanner; :class:`QAChecker` finds the reference
(rules file, accepted set, history in SQLite), compares (:class:`QAResult` with its
:class:`Deviation` list, the TEXT message and the image meta) and records sessions. The package
uses ``mrdhelper`` (its ``ConfigError``), never the server or the web dashboard.
"""
from ._checker import QAChecker, QAResult
from ._compare import Deviation
from ._dicom import params_from_dicom
from ._params import ScanParams, params_from_mrd, station_of

__all__ = ["ScanParams", "QAResult", "Deviation", "QAChecker", "params_from_mrd", "params_from_dicom", "station_of"]
