"""Coil noise: covariance, pre-whitening and noise dependencies (never dispatched: leading ``_``).

Conventions (after Gadgetron's NoiseAdjustGadget), with a readout's data ``[channels, samples]``:

* **Covariance** ``C = sum_s n_s n_s^H / (N - 1)`` over the ``N`` samples ``n_s`` (channel vectors) of
  every noise readout (``ACQ_IS_NOISE_MEASUREMENT``): ``C[i, j] = E[n_i conj(n_j)]``.
* **Pre-whitener** ``W = L^-1`` with ``C = L L^H`` (``L`` the lower Cholesky factor; ``L^H = U`` is the
  upper one, ``C = U^H U``, so ``W = (U^-1)^H``), applied as ``whitened = W @ data``; the noise of the
  noise scans then has covariance ``W C W^H = I``.  Gadgetron stores data as ``[samples, channels]``
  and multiplies by the inverse of the upper Cholesky factor of ``D^H D`` from the right, which is the
  same matrix transposed.
* **Bandwidth scale** ``sqrt(2 * acquisition_dwell / noise_dwell * receiver_noise_bandwidth)``, the
  dwell times (``sample_time_us``) of the first imaging readout and of the noise readouts, the relative
  receiver noise bandwidth from ``acquisitionSystemInformation/relativeReceiverNoiseBandwidth``
  (0.793 when absent); 1 when either dwell time is 0.  ``W`` is multiplied by it, so the whitened noise of
  the noise scans has covariance ``scale^2 I``.
* **Dependencies.** A session whose header has a ``measurementInformation/measurementDependency`` of
  ``dependencyType`` "Noise" (any case) and no noise readouts of its own takes the covariance stored
  under that ``measurementID``; a session that holds noise readouts and nothing else stores its
  covariance under its own ``measurementID``.  The store is a folder (the server's
  ``--dependency-folder``, ``connection.dependencyFolder``; default ``/tmp/share/dependencies``) of
  ``NoiseCovariance_<measurementID>.npz`` files (characters other than letters, digits, ``.``, ``-``, ``_``
  replaced by ``_``; the exact ID is stored inside and checked).  A dependency that is missing or
  unusable is one WARNING text, and the session goes on without pre-whitening.

Not done: Gadgetron's "scale-only" channels (by coil name) and its storage server.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import ismrmrd
import numpy as np

import constants

log = logging.getLogger(__name__)

DEFAULT_RECEIVER_NOISE_BANDWIDTH = 0.793
DEFAULT_DEPENDENCY_FOLDER = "/tmp/share/dependencies"
FILE_PREFIX = "NoiseCovariance_"
_NOISE_BIT = 1 << (ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1)


def is_noise(acq: ismrmrd.Acquisition) -> bool:
    """Whether a readout is a noise measurement."""
    return bool(acq.flags & _NOISE_BIT)


@dataclasses.dataclass
class NoiseCovariance:
    """A coil noise covariance ``[channels, channels]`` (complex128), with what it was computed from."""

    matrix: np.ndarray
    samples: int
    dwell_time_us: float
    measurement_id: Optional[str] = None

    @property
    def channels(self) -> int:
        return self.matrix.shape[0]


class NoiseAccumulator:
    """Sums ``n n^H`` over the samples of noise readouts; :meth:`covariance` divides by ``N - 1``."""

    def __init__(self) -> None:
        self._sum: Optional[np.ndarray] = None
        self.samples = 0
        self.readouts = 0
        self.dwell_time_us = 0.0

    def add(self, data: np.ndarray, dwell_time_us: float = 0.0) -> None:
        """Add one noise readout ``[channels, samples]``; a readout with another channel count raises ValueError."""
        data = np.asarray(data, dtype=np.complex128)
        if self._sum is None:
            self._sum = np.zeros((data.shape[0], data.shape[0]), dtype=np.complex128)
            self.dwell_time_us = float(dwell_time_us)
        elif data.shape[0] != self._sum.shape[0]:
            raise ValueError(f"noise readout with {data.shape[0]} channels after {self._sum.shape[0]}")
        self._sum += data @ data.conj().T
        self.samples += data.shape[1]
        self.readouts += 1

    def covariance(self, measurement_id: Optional[str] = None) -> Optional[NoiseCovariance]:
        """The covariance, or None before two samples."""
        if self._sum is None or self.samples < 2:
            return None
        return NoiseCovariance(self._sum / (self.samples - 1), self.samples, self.dwell_time_us, measurement_id)


def covariance_of(noise: np.ndarray) -> np.ndarray:
    """``C`` of noise ``[channels, samples]`` (or ``[readouts, channels, samples]``), as the accumulator has it."""
    noise = np.asarray(noise)
    flat = np.moveaxis(noise, -2, 0).reshape(noise.shape[-2], -1).astype(np.complex128)
    return flat @ flat.conj().T / (flat.shape[1] - 1)


def prewhitener(covariance: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``scale * L^-1`` with ``covariance = L L^H``: ``W @ data`` has noise covariance ``scale^2 I``.

    A covariance that is not Hermitian positive definite raises ``numpy.linalg.LinAlgError``."""
    import scipy.linalg  # here, not at the top: 6 MB of the server's memory that only pre-whitening needs
    lower = np.linalg.cholesky(np.asarray(covariance, dtype=np.complex128))
    inverse = scipy.linalg.solve_triangular(lower, np.eye(lower.shape[0], dtype=np.complex128), lower=True)
    return inverse * scale


def bandwidth_scale(acquisition_dwell_us: float, noise_dwell_us: float, receiver_noise_bandwidth: float) -> float:
    """``sqrt(2 * acquisition_dwell / noise_dwell * receiver_noise_bandwidth)``, 1 when a dwell time is 0."""
    if not acquisition_dwell_us or not noise_dwell_us:
        return 1.0
    return float(np.sqrt(2.0 * acquisition_dwell_us / noise_dwell_us * receiver_noise_bandwidth))


def receiver_noise_bandwidth(metadata: Any) -> float:
    """``acquisitionSystemInformation/relativeReceiverNoiseBandwidth``, 0.793 when absent."""
    value = getattr(getattr(metadata, "acquisitionSystemInformation", None), "relativeReceiverNoiseBandwidth", None)
    return float(value) if value else DEFAULT_RECEIVER_NOISE_BANDWIDTH


def measurement_id(metadata: Any) -> Optional[str]:
    """The header's ``measurementInformation/measurementID`` (None when absent or unparsed)."""
    value = getattr(getattr(metadata, "measurementInformation", None), "measurementID", None)
    return str(value) if value else None


def noise_dependency(metadata: Any) -> Optional[str]:
    """The ``measurementID`` of the first ``measurementDependency`` of type Noise (any case), else None."""
    info = getattr(metadata, "measurementInformation", None)
    for dependency in getattr(info, "measurementDependency", None) or ():
        if str(getattr(dependency, "dependencyType", "")).strip().lower() == "noise" and dependency.measurementID:
            return str(dependency.measurementID)
    return None


def dependency_folder(connection: Any) -> str:
    """The connection's ``dependencyFolder`` (the server's ``--dependency-folder``), else the default."""
    return getattr(connection, "dependencyFolder", None) or DEFAULT_DEPENDENCY_FOLDER


class DependencyStore:
    """Noise covariances by measurement ID in a folder (``NoiseCovariance_<id>.npz``)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def path(self, ident: str) -> Path:
        return self.folder / f"{FILE_PREFIX}{re.sub(r'[^A-Za-z0-9._-]', '_', ident)[:200]}.npz"

    def save(self, cov: NoiseCovariance) -> Path:
        """Write atomically (a temporary file renamed); OSError when the folder cannot be written."""
        if not cov.measurement_id:
            raise ValueError("a stored noise covariance needs a measurement ID")
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(cov.measurement_id)
        handle, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".npz", dir=self.folder)
        try:
            with os.fdopen(handle, "wb") as f:
                np.savez(f, covariance=cov.matrix.astype(np.complex128), samples=np.int64(cov.samples),
                         dwell_time_us=np.float64(cov.dwell_time_us), measurement_id=np.str_(cov.measurement_id))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def load(self, ident: str) -> Optional[NoiseCovariance]:
        """The stored covariance of ``ident``; None when there is none. An unreadable or inconsistent file
        raises ValueError."""
        path = self.path(ident)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                matrix = np.asarray(f["covariance"], dtype=np.complex128)
                stored_id = str(f["measurement_id"])
                samples, dwell = int(f["samples"]), float(f["dwell_time_us"])
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: not a noise covariance file ({exc})") from exc
        if stored_id != ident:
            return None  # another ID that maps to the same file name
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or not np.all(np.isfinite(matrix)):
            raise ValueError(f"{path}: covariance of shape {matrix.shape} is not a square finite matrix")
        return NoiseCovariance(matrix, samples, dwell, stored_id)


class NoiseAdjust:
    """One session's noise handling: noise readouts accumulated, the pre-whitener built once at the
    first readout to whiten (from the session's own noise, else from its Noise dependency), the
    covariance stored when the session had noise readouts only.

    ``notify(level, text)`` sends a text to the client (``connection.send_logging``).
    """

    def __init__(self, metadata: Any, folder: str | os.PathLike = DEFAULT_DEPENDENCY_FOLDER,
                 notify: Optional[Callable[[str, str], None]] = None) -> None:
        self.metadata = metadata
        self.store = DependencyStore(folder)
        self.notify = notify or (lambda level, text: None)
        self.noise = NoiseAccumulator()
        self.other_readouts = 0
        self.source = ""          # where the whitener came from: "session", "dependency <id>" or ""
        self.scale = 1.0
        self._whitener: Optional[np.ndarray] = None
        self._decided = False
        self._warned_channels = False

    def add_noise(self, acq: ismrmrd.Acquisition) -> None:
        """Accumulate one noise readout (after the whitener was built: ignored)."""
        if self._decided:
            log.debug("noise readout %d after the first imaging readout ignored", acq.scan_counter)
            return
        self.noise.add(acq.data, acq.sample_time_us)

    def covariance(self) -> Optional[NoiseCovariance]:
        """The session's own covariance, else the dependency's (None, with a WARNING text, when named but
        missing or unusable); None when there is neither."""
        own = self.noise.covariance(measurement_id(self.metadata))
        if own is not None:
            self.source = "session"
            return own
        ident = noise_dependency(self.metadata)
        if ident is None:
            return None
        try:
            stored = self.store.load(ident)
        except ValueError as exc:
            self._warn(f"Noise dependency '{ident}' is unusable ({exc}): no pre-whitening")
            return None
        if stored is None:
            self._warn(f"Noise dependency '{ident}' not found in {self.store.folder}: no pre-whitening")
            return None
        self.source = f"dependency {ident}"
        return stored

    def whitener(self, acquisition_dwell_us: float) -> Optional[np.ndarray]:
        """The pre-whitener (complex64 ``[channels, channels]``), built at the first call; None without noise."""
        if self._decided:
            return self._whitener
        self._decided = True
        cov = self.covariance()
        if cov is None:
            log.info("no noise covariance (no noise readouts, no Noise dependency): data not pre-whitened")
            return None
        self.scale = bandwidth_scale(acquisition_dwell_us, cov.dwell_time_us, receiver_noise_bandwidth(self.metadata))
        try:
            self._whitener = prewhitener(cov.matrix, self.scale).astype(np.complex64)
        except np.linalg.LinAlgError:
            self._warn(f"noise covariance ({self.source}) is not positive definite: no pre-whitening")
            return None
        log.info("pre-whitening %d channels (noise from %s, %d samples, bandwidth scale %.4f)",
                 cov.channels, self.source, cov.samples, self.scale)
        return self._whitener

    def whiten(self, data: np.ndarray, acquisition_dwell_us: float) -> np.ndarray:
        """``W @ data`` for ``data [..., channels, samples]``; the data unchanged without a whitener or
        when the channel count differs (one WARNING text)."""
        self.other_readouts += 1
        w = self.whitener(acquisition_dwell_us)
        if w is None:
            return data
        if data.shape[-2] != w.shape[0]:
            if not self._warned_channels:
                self._warned_channels = True
                self._warn(f"noise covariance has {w.shape[0]} channels, the data {data.shape[-2]}: "
                           "readouts not pre-whitened")
            return data
        return np.matmul(w, data)

    def finish(self) -> Optional[Path]:
        """At the end of the session: store the covariance of a session that had noise readouts only
        (an INFO text says where; a WARNING when it has no measurement ID or cannot be written)."""
        if self.other_readouts or not self.noise.readouts:
            return None
        cov = self.noise.covariance(measurement_id(self.metadata))
        if cov is None:
            return None
        if not cov.measurement_id:
            self._warn("noise-only session without measurementID: its noise covariance is not stored")
            return None
        try:
            path = self.store.save(cov)
        except OSError as exc:
            self._warn(f"noise covariance of measurement '{cov.measurement_id}' could not be stored: {exc}")
            return None
        text = (f"Noise covariance of measurement '{cov.measurement_id}' stored ({cov.channels} channels, "
                f"{cov.samples} samples) in {path}")
        log.info(text)
        self.notify(constants.MRD_LOGGING_INFO, text)
        return path

    def _warn(self, text: str) -> None:
        log.warning(text)
        self.notify(constants.MRD_LOGGING_WARNING, text)


class PrewhitenedConnection:
    """A session's connection whose readouts come pre-whitened: noise readouts are accumulated (and passed
    on: the Cartesian helpers leave them out), every other readout's data is replaced by ``W @ data``, and
    at CLOSE a noise-only session's covariance is stored.  Everything else (``send_image``, texts,
    attributes) is the wrapped connection's, so ``_images.serve`` takes it as it is."""

    def __init__(self, connection: Any, metadata: Any) -> None:
        self.connection = connection
        self.noise = NoiseAdjust(metadata, dependency_folder(connection), connection.send_logging)

    def __iter__(self) -> Iterator[Any]:
        for item in self.connection:
            if isinstance(item, ismrmrd.Acquisition):
                if is_noise(item):
                    self.noise.add_noise(item)
                else:
                    item.data[...] = self.noise.whiten(item.data, item.sample_time_us)
            elif item is None:
                self.noise.finish()
            yield item
            if item is None:
                return
        self.noise.finish()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connection, name)
