"""What the three spiral modules share (never dispatched: leading ``_``; docs/spiral.md §3, §6-§8).

``simplenufft1arm``, ``rtspiral_bart_tvrecon`` and ``spiral_xdgrasp_recon`` read the same kind of
settings, find the same trajectory metafile, grid at the same coordinates and send the same kind of
image; each keeps only its own reconstruction:

* :class:`SpiralSettings`: the base of their TOML settings (``metafile_paths``, ``girf_file``,
  ``apply_girf``, ``fov_oversampling``, ``gpu_device``), read with ``_toml``;
* :func:`trajectory_meta`: the metafile named by the header's sequence hash;
* :func:`arm_count`, :func:`arm_of`: which trajectory column a readout is (one rule for all three);
* :func:`trajectory`: the :class:`Trajectory` of a session (nominal or GIRF-predicted coordinates,
  the matrix, the images' field of view);
* :func:`collect`: a whole scan's imaging arms and waveforms;
* :func:`frame_image`: the MRD image of one reconstructed frame (orientation, int16 scaling
  through ``_recon``, header with the scaled field of view, direction vectors, window, meta).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional, Sequence

import ismrmrd
import numpy as np

import _recon
import _spiral
import _toml
from _errors import ConfigError

METAFILE_PATHS = ("seq_meta", "/tmp/share/seq_meta")
GIRF_FILE = "GIRF/GIRF_20200221_Duyn_method_coil2.mat"
WINDOWS = ("full", "percentile")


@dataclasses.dataclass
class SpiralSettings:
    """The TOML keys of every spiral module, with their defaults (docs/spiral.md §6.1).

    A module's settings derive from this class, add their own keys (top level, ``[reconstruction]``
    or ``[binning]``: the tables are merged) and name their file in ``CONFIG_NAME``; a subclass's
    ``__post_init__`` calls this one's.
    """

    CONFIG_NAME: ClassVar[str] = ""

    metafile_paths: list[str] = dataclasses.field(default_factory=lambda: list(METAFILE_PATHS))
    girf_file: str = GIRF_FILE
    apply_girf: bool = False
    fov_oversampling: float = 1.0
    gpu_device: int = -1

    def __post_init__(self) -> None:
        if self.fov_oversampling < 1:
            raise ConfigError(f"fov_oversampling = {self.fov_oversampling} must be >= 1")

    @classmethod
    def load(cls, config: Any, connection: Any) -> "SpiralSettings":
        """The session's settings from ``CONFIG_NAME`` (``_toml.load``: search order, checks, warnings)."""
        return _toml.load(cls, config, cls.CONFIG_NAME, connection)


def trajectory_meta(metadata: Any, metafile_paths: Sequence[str]) -> _spiral.SpiralMeta:
    """The metafile ``<tSequenceVariant>.mat`` from the configured folders; ConfigError without a hash."""
    seq_hash = _spiral.sequence_hash(metadata)
    if seq_hash is None:
        raise ConfigError("the header has no tSequenceVariant user parameter (sequence hash)")
    return _spiral.load_metafile(_spiral.find_metafile(seq_hash, [_toml.resolve(p) for p in metafile_paths]))


def arm_count(meta: _spiral.SpiralMeta) -> int:
    """The distinct arms of the trajectory, ``param.interleaves``: the first that many metafile
    columns are the arms, and a readout's arm is ``kspace_encode_step_1 mod interleaves``
    (:func:`arm_of`).

    Why interleaves and not ``param.repetitions`` (nTR, one column per TR): the sequence labels TR i
    with ``kspace_encode_step_1 = i mod interleaves`` and repeats its arms with that period, so the
    columns after the first ``interleaves`` repeat them and no label points past them (a label taken
    modulo nTR names the same column).  All three spiral modules use this rule.  ValueError when the
    metafile holds fewer columns than ``interleaves``.
    """
    columns = meta.kx.shape[1]
    if meta.interleaves > columns:
        raise ValueError(f"the metafile holds {columns} trajectory columns for {meta.interleaves} interleaves")
    return meta.interleaves


def arm_of(acq: ismrmrd.Acquisition, arms: int) -> int:
    """The trajectory column of a readout: ``kspace_encode_step_1 mod arms`` (see :func:`arm_count`; the
    modulo keeps a label that counts on past the interleaves on its arm)."""
    return acq.idx.kspace_encode_step_1 % arms


def image_fov(metadata: Any, meta: _spiral.SpiralMeta, m: int) -> tuple[float, float, float]:
    """Field of view (mm) of an ``m x m`` image: the header's recon FOV, x and y scaled by
    ``m / matrix_size(meta)`` (= ``fov_oversampling`` when that gives a whole matrix), so that
    FOV / matrix stays the prescribed resolution; z as given (zeros without a parsed header)."""
    fov = _recon.recon_fov(metadata)
    scale = m / _spiral.matrix_size(meta)
    return (fov[0] * scale, fov[1] * scale, fov[2])


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """A session's gridding geometry: ``coord`` ``(arms, Ns, 2)`` float32 in grid units (outermost
    sample at ``m/2``, docs/spiral.md §3) of the ``arms`` distinct arms, the matrix ``m`` and the
    ``fov`` (mm) of the ``m x m`` images."""

    coord: np.ndarray
    m: int
    fov: tuple[float, float, float]

    @property
    def arms(self) -> int:
        return self.coord.shape[0]

    def columns(self, readouts: Sequence[ismrmrd.Acquisition]) -> list[int]:
        """The trajectory column of each readout (:func:`arm_of`)."""
        return [arm_of(acq, self.arms) for acq in readouts]


def trajectory(meta: _spiral.SpiralMeta, settings: SpiralSettings, metadata: Any,
               first: ismrmrd.Acquisition) -> Trajectory:
    """Coordinates of the first :func:`arm_count` columns on the ``fov_oversampling`` matrix: nominal
    (``_spiral.grid_coordinates``) or, with ``apply_girf``, GIRF-predicted (``_spiral.girf_coordinates``,
    rotation from the first imaging readout ``first``, dwell time from the metafile, else from ``first``)."""
    m = _spiral.matrix_size(meta, settings.fov_oversampling)
    arms = arm_count(meta)
    kx, ky = meta.kx[:, :arms], meta.ky[:, :arms]
    if settings.apply_girf:
        girf = _spiral.load_girf(_toml.resolve(settings.girf_file))
        position = getattr(getattr(metadata, "measurementInformation", None), "patientPosition", None)
        rotation = _spiral.rotation_matrix(first.read_dir, first.phase_dir, first.slice_dir, position)
        coord = _spiral.girf_coordinates(kx, ky, girf, rotation, meta.dt_s or first.sample_time_us * 1e-6, m)
    else:
        coord = _spiral.grid_coordinates(kx, ky, m)
    return Trajectory(coord, m, image_fov(metadata, meta, m))


def collect(connection: Any) -> tuple[list[ismrmrd.Acquisition], list[ismrmrd.Waveform]]:
    """Every imaging arm and every waveform until CLOSE (noise, calibration, navigator readouts left out)."""
    arms, waves = [], []
    for item in connection:
        if item is None:
            break
        if isinstance(item, ismrmrd.Acquisition) and _recon.is_imaging_readout(item):
            arms.append(item)
        elif isinstance(item, ismrmrd.Waveform):
            waves.append(item)
    return arms, waves


def frame_image(pixels: np.ndarray, arm: ismrmrd.Acquisition, metadata: Any, fov: tuple[float, float, float],
                index: int, history: list[str], *, peak: Optional[float] = None, window: str = "full",
                keep_geometry: bool = True, meta: Optional[dict] = None, **counters: int) -> ismrmrd.Image:
    """The MRD image of one reconstructed frame ``pixels`` ``[m, m]`` (docs/spiral.md §6.3).

    * Orientation ``flip_x(pixels)ᵀ`` (``pixels[::-1].T``: rows follow the second NUFFT coordinate,
      columns the first one reversed).
    * Complex pixels: complex64, ``image_type`` 5, no window.  Magnitude: int16 scaled by
      ``_recon.to_int16`` so that ``peak`` (default: the frame's maximum; a shared peak scales
      several frames alike) becomes ``2**BitsStored - 1``, ``image_type`` 1, ``ImageScaleFactor``.
    * Header: geometry, counters, time stamps and user fields of ``arm`` (``_recon.image_from_readout``),
      ``image_index = index``, ``field_of_view = fov`` (:func:`image_fov`), and any ``counters``
      (``repetition=``, ``phase=``, ``set=``).
    * Meta: ``_recon.display_meta`` (``DataRole``, ``ImageProcessingHistory = history``,
      ``ImageRowDir``/``ImageColumnDir``, ``Keep_image_geometry`` unless ``keep_geometry`` is false)
      with the ``window`` ``"full"`` (``(max+1)/2``, ``max+1``) or ``"percentile"`` (centre and width
      of the 1st to 99th percentile of the int16 frame), then ``meta``.
    """
    if window not in WINDOWS:
        raise ValueError(f"window {window!r} is not one of {WINDOWS}")
    oriented = np.ascontiguousarray(pixels[::-1].T)
    max_value = _recon.max_value_of(metadata)
    extra: dict[str, Any] = {}
    if np.iscomplexobj(oriented):
        data, image_type = oriented.astype(np.complex64), ismrmrd.IMTYPE_COMPLEX
    else:
        if peak is None:
            peak = float(oriented.max()) if oriented.size else 0.0
        data, image_type = _recon.to_int16(oriented, max_value, peak), ismrmrd.IMTYPE_MAGNITUDE
        extra["ImageScaleFactor"] = str(_recon.int16_scale(peak, max_value))
        if window == "percentile":
            p1, p99 = np.percentile(data, (1, 99))
            extra.update({"WindowCenter": str(float((p99 + p1) // 2)), "WindowWidth": str(float(p99 - p1))})
    image = _recon.image_from_readout(data, arm, metadata, index)
    head = image.getHead()
    head.image_type = image_type
    head.field_of_view = fov
    for name, value in counters.items():
        setattr(head, name, value)
    image.setHead(head)
    attributes = _recon.display_meta(image, max_value, history, keep_geometry=keep_geometry)
    if image_type == ismrmrd.IMTYPE_COMPLEX:
        for key in ("WindowCenter", "WindowWidth"):
            del attributes[key]
    attributes.update(extra)
    attributes.update(meta or {})
    image.meta = attributes
    return image
