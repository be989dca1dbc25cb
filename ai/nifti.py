"""NIfTI volumes from MRD image series and MRD images from NIfTI: the one geometry code of issue 15.

Used by ``modules/inference.py``, ``tools/mrd2nifti.py`` and ``tools/nifti2mrd.py``.

Coordinates.  MRD headers are in patient coordinates LPS (mm); ``position`` is the centre of the
image, ``read_dir`` the direction of increasing column index x, ``phase_dir`` of increasing row
index y (docs/protocol.md §5.2).  The centre of pixel (column i, row j) is
``position + (i - (nx-1)/2) dx read_dir + (j - (ny-1)/2) dy phase_dir`` with ``dx = fov_x / nx``,
``dy = fov_y / ny`` (and likewise k along the slice normal for a 3-D image, ``dz = fov_z / nz``).
NIfTI world coordinates are RAS+, so an affine here is ``diag(-1, -1, 1, 1) @ LPS affine``.

Volumes.  A :class:`Volume` holds ``data[i, j, k]`` with i = column (read), j = row (phase), k =
slice, the NIfTI axis order.  Its affine has the columns ``read_dir dx``, ``phase_dir dy``,
``normal dz`` (converted to RAS) and maps voxel centres to mm.  2-D images are sorted by their
position along the slice normal (``slice_dir``, or ``read_dir x phase_dir`` when ``slice_dir`` is
zero), so k increases along +normal and dz > 0; dz is the mean gap between consecutive slices
(``fov_z`` for a single slice, 1 mm when that is 0 too).

Pixels.  Complex images become the float32 magnitude; real pixel types are kept (uint16, int16,
uint32, int32, float32, float64), so that integer pixels round-trip exactly.  Only one-channel
images make a volume.

Privacy.  :func:`to_nifti` writes pixels and geometry only: ``descrip``, ``aux_file``,
``intent_name`` and ``db_name`` stay empty, and nothing of the MRD XML header or attributes is used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import ismrmrd
import nibabel
import nibabel.spatialimages
import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
DIRECTION_TOLERANCE = 1e-4  # largest difference of unit direction vectors still "parallel"
GAP_TOLERANCE = 1e-3  # largest relative difference of a slice gap from the mean gap
GAP_FLOOR_MM = 1e-4  # float32 positions of ~100 mm are exact to ~1e-5 mm
DUPLICATE_FRACTION = 1e-3  # slices closer than this fraction of a pixel are at the same position
SHEAR_FRACTION = 0.05  # largest in-plane offset between slices, as a fraction of a pixel
AFFINE_TOLERANCE_MM = 1e-3  # affines whose entries differ by no more are the same grid
LABEL_MAX = 0xFFFF

# numpy pixel type -> MRD data type (constants.IMAGE_DTYPES inverted)
MRD_DATA_TYPES = {
    np.dtype(np.uint16): ismrmrd.DATATYPE_USHORT, np.dtype(np.int16): ismrmrd.DATATYPE_SHORT,
    np.dtype(np.uint32): ismrmrd.DATATYPE_UINT, np.dtype(np.int32): ismrmrd.DATATYPE_INT,
    np.dtype(np.float32): ismrmrd.DATATYPE_FLOAT, np.dtype(np.float64): ismrmrd.DATATYPE_DOUBLE,
    np.dtype(np.complex64): ismrmrd.DATATYPE_CXFLOAT, np.dtype(np.complex128): ismrmrd.DATATYPE_CXDOUBLE,
}
# NIfTI pixel types without an MRD type of their own -> the MRD type that holds them
WIDER_TYPES = {
    np.dtype(np.bool_): np.dtype(np.uint16), np.dtype(np.uint8): np.dtype(np.uint16),
    np.dtype(np.int8): np.dtype(np.int16), np.dtype(np.float16): np.dtype(np.float32),
}


@dataclass
class Volume:
    """One image series as a NIfTI-ordered volume.

    ``data`` is ``(nx, ny, nz)``: i = column (read), j = row (phase), k = slice.  ``affine`` (4x4,
    RAS+, mm) maps voxel centres (i, j, k, 1) to world coordinates.  ``heads`` are copies of the
    image headers in slice order (one per k for 2-D images, one for a 3-D image); ``order[k]`` is
    the index in the input list of the image of slice k; ``series`` is the ``image_series_index``.
    """

    data: np.ndarray
    affine: np.ndarray
    heads: list[ismrmrd.ImageHeader] = field(default_factory=list)
    order: list[int] = field(default_factory=list)
    series: int = 0

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size (dx, dy, dz) in mm: the lengths of the affine's first three columns."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def _unit(vectors: np.ndarray, what: str) -> np.ndarray:
    """Rows of ``vectors`` scaled to unit length; ValueError for a zero vector."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if np.any(norms < 1e-6):
        raise ValueError(f"{what} is a zero vector")
    return vectors / norms


def _pixels(image: ismrmrd.Image) -> np.ndarray:
    """``[z, y, x]`` pixels of channel 0: float32 magnitude for complex data, else as stored."""
    data = np.asarray(image.data)[0]
    return np.abs(data).astype(np.float32) if np.iscomplexobj(data) else data


def series_volume(images: Sequence[ismrmrd.Image]) -> Volume:
    """One :class:`Volume` from the images of one series: 2-D images stacked along the slice normal
    (sorted, whatever their order in ``images``), or a single 3-D image as it is.

    ValueError (one line) for what is not one volume: no images, several series, more than one
    channel, different matrix sizes, read or phase directions that are not parallel, two images at
    the same slice position (e.g. repetitions or echoes not split), unequal slice gaps, slices
    shifted within their plane, more than one 3-D image, or a zero field of view.
    """
    if not images:
        raise ValueError("no images: a volume needs at least one")
    heads = [image.getHead() for image in images]
    series = {int(h.image_series_index) for h in heads}
    if len(series) > 1:
        raise ValueError(f"images of several series ({', '.join(map(str, sorted(series)))}): one volume is one series")
    channels = np.array([int(h.channels) for h in heads])
    if np.any(channels != 1):
        raise ValueError(f"image {int(np.argmax(channels != 1))} has {int(channels[channels != 1][0])} channels; "
                         "a volume needs one-channel images (combine or split the channels first)")
    matrix = np.array([tuple(h.matrix_size) for h in heads], dtype=np.int64)
    if np.any(matrix != matrix[0]):
        other = int(np.argmax(np.any(matrix != matrix[0], axis=1)))
        raise ValueError(f"different matrix sizes: image 0 is {'x'.join(map(str, matrix[0]))}, "
                         f"image {other} is {'x'.join(map(str, matrix[other]))}")
    nx, ny, nz = (int(v) for v in matrix[0])
    if nz > 1 and len(images) > 1:
        raise ValueError(f"{len(images)} 3-D images: a volume is one 3-D image or a stack of 2-D images")
    fov = np.array([tuple(h.field_of_view) for h in heads], dtype=np.float64)
    if fov[0, 0] <= 0 or fov[0, 1] <= 0:
        raise ValueError(f"field of view {tuple(float(v) for v in fov[0])} has no extent in x or y")
    dx, dy = fov[0, 0] / nx, fov[0, 1] / ny
    read = _unit(np.array([tuple(h.read_dir) for h in heads], dtype=np.float64), "read_dir")
    phase = _unit(np.array([tuple(h.phase_dir) for h in heads], dtype=np.float64), "phase_dir")
    for name, dirs in (("read", read), ("phase", phase)):
        off = np.abs(dirs - dirs[0]).max(axis=1)
        if np.any(off > DIRECTION_TOLERANCE):
            other = int(np.argmax(off))
            raise ValueError(f"{name} directions are not parallel: image 0 {np.round(dirs[0], 5).tolist()}, "
                             f"image {other} {np.round(dirs[other], 5).tolist()}")
    slice_dir = np.array(tuple(heads[0].slice_dir), dtype=np.float64)
    normal = _unit(slice_dir if np.linalg.norm(slice_dir) > 1e-6 else np.cross(read[0], phase[0]), "slice normal")
    positions = np.array([tuple(h.position) for h in heads], dtype=np.float64)
    if nz > 1:
        order = np.array([0])
        dz = fov[0, 2] / nz if fov[0, 2] > 0 else 1.0
        data = _pixels(images[0]).transpose(2, 1, 0).copy()
    else:
        along = positions @ normal
        order = np.argsort(along, kind="stable")
        if len(images) == 1:
            dz = fov[0, 2] if fov[0, 2] > 0 else 1.0
        else:
            dz = _slice_spacing(along[order], positions[order], normal, order, min(dx, dy))
        data = np.stack([_pixels(images[i])[0].T for i in order], axis=-1)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = read[0] * dx, phase[0] * dy, normal * dz
    centre = positions[order[0]]
    lps[:3, 3] = centre - lps[:3, :3] @ ((np.array([nx, ny, nz]) - 1) / 2)
    return Volume(data=data, affine=LPS_TO_RAS @ lps, heads=[heads[i] for i in order],
                  order=[int(i) for i in order], series=series.pop())


def _slice_spacing(along: np.ndarray, positions: np.ndarray, normal: np.ndarray, order: np.ndarray,
                   pixel: float) -> float:
    """Mean gap of two or more sorted slice positions ``along`` the normal; ValueError for
    duplicates, unequal gaps or slices shifted within their plane."""
    gaps = np.diff(along)
    same = np.flatnonzero(gaps < DUPLICATE_FRACTION * pixel)
    if len(same):
        a, b = int(order[same[0]]), int(order[same[0] + 1])
        raise ValueError(f"images {a} and {b} are at the same slice position ({along[same[0]]:.3f} mm along the "
                         "normal): split repetitions, echoes or phases into volumes of their own first")
    dz = float((along[-1] - along[0]) / (len(along) - 1))
    if np.abs(gaps - dz).max() > GAP_TOLERANCE * dz + GAP_FLOOR_MM:
        raise ValueError(f"unequal slice gaps: {np.round(gaps.min(), 4)} to {np.round(gaps.max(), 4)} mm "
                         f"(mean {dz:.4f} mm); a volume needs evenly spaced slices")
    offsets = positions - positions[0]
    shear = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
    if shear.max() > SHEAR_FRACTION * pixel:
        raise ValueError(f"slices are shifted within their plane by up to {shear.max():.3f} mm: "
                         "they are not one stack along the slice normal")
    return dz


def to_nifti(volume: Volume) -> nibabel.Nifti1Image:
    """A NIfTI-1 image of a volume: its data type (bool as uint8), sform and qform from its affine
    with code 1 (scanner), units mm, and no text fields (no patient data)."""
    data = volume.data.astype(np.uint8) if volume.data.dtype == np.bool_ else volume.data
    img = nibabel.Nifti1Image(np.asarray(data), None)
    header = img.header
    header.set_data_dtype(data.dtype)
    img.set_sform(volume.affine, code=1)
    img.set_qform(volume.affine, code=1)
    header.set_xyzt_units(xyz="mm")
    for name in ("descrip", "aux_file", "intent_name", "db_name"):
        header[name] = b""
    return img


def meta_json(volume: Volume) -> dict:
    """The side file of a volume for nnU-Net-style clients (mathiser/inference_server):
    ``{"scaling_factor": 1.0, "spacing": [dx, dy, dz], "origin": [x, y, z], "direction": [9]}``.

    ``origin`` is the centre of voxel (0, 0, 0) and ``direction`` the 3x3 matrix whose columns are
    the unit i, j, k axes, flattened row-major (the layout of SimpleITK's ``GetDirection``), both
    in the NIfTI world, RAS+ (SimpleITK itself reports LPS: negate the first two rows there).
    """
    spacing = volume.spacing
    direction = volume.affine[:3, :3] / spacing
    return {"scaling_factor": 1.0, "spacing": [float(v) for v in spacing],
            "origin": [float(v) for v in volume.affine[:3, 3]],
            "direction": [float(v) for v in direction.ravel()]}


def _mrd_pixels(data: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    """``data`` in a pixel type that MRD has: ``dtype`` when given (floats rounded and clipped into
    an integer type), else the NIfTI type or the next wider one."""
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    if dtype is not None:
        target = np.dtype(dtype)
        if target not in MRD_DATA_TYPES:
            raise ValueError(f"{target} is not an MRD pixel type ({', '.join(t.name for t in MRD_DATA_TYPES)})")
        if target.kind in "iu" and data.dtype.kind in "fc":
            limits = np.iinfo(target)
            data = np.clip(np.rint(np.real(data)), limits.min, limits.max)
        return data.astype(target)
    if data.dtype in MRD_DATA_TYPES:
        return data
    if data.dtype in WIDER_TYPES:
        return data.astype(WIDER_TYPES[data.dtype])
    if data.dtype.kind in "iu":
        for candidate in (np.int32, np.uint32):
            limits = np.iinfo(candidate)
            if data.size == 0 or (data.min() >= limits.min and data.max() <= limits.max):
                return data.astype(candidate)
        return data.astype(np.float64)
    if data.dtype.kind == "c":
        return data.astype(np.complex128)
    return data.astype(np.float64)


def nifti_to_images(img: nibabel.spatialimages.SpatialImage, series_index: int = 0,
                    dtype: np.dtype | None = None) -> list[ismrmrd.Image]:
    """One 2-D MRD image per slice k (and per volume t of a 4-D image) of a NIfTI image.

    Pixels ``[1, 1, ny, nx]`` are ``data[:, :, k(, t)].T`` (scaling applied when the file has a
    slope); their type is ``dtype``, or the NIfTI type when MRD has it (uint8/int8/bool widened
    to uint16/int16, float16 to float32, other 64-bit integers to int32/uint32 when they fit,
    else float64).  Geometry from the affine (RAS to LPS): unit read/phase/slice directions and
    dx, dy, dz from its columns, ``position`` the centre of each slice, ``field_of_view`` (dx nx,
    dy ny, dz), ``slice = k``, ``repetition = t``, ``image_index = t nz + k + 1``, image type
    magnitude (complex for complex data).  ValueError for more than 4 dimensions (trailing axes of
    length 1 are dropped first) or an affine with a zero column.
    """
    data = np.asanyarray(img.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim < 2 or data.ndim > 4:
        raise ValueError(f"a {data.ndim}-D NIfTI image ({'x'.join(map(str, data.shape))}): 2-D to 4-D expected")
    data = data.reshape(data.shape + (1,) * (4 - data.ndim))
    data = _mrd_pixels(data, dtype)
    nx, ny, nz, nt = data.shape
    lps = LPS_TO_RAS @ np.asarray(img.affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    if np.any(spacing < 1e-9):
        raise ValueError(f"the affine has a zero column (voxel size {spacing.tolist()})")
    dirs = lps[:3, :3] / spacing
    slices = np.arange(nz)
    centres = (lps[:3, :3] @ np.stack([np.full(nz, (nx - 1) / 2), np.full(nz, (ny - 1) / 2), slices])
               + lps[:3, 3:4]).T
    complex_data = np.iscomplexobj(data)
    images = []
    for t in range(nt):
        for k in slices:
            pixels = np.ascontiguousarray(data[:, :, k, t].T)[None, None]
            head = ismrmrd.ImageHeader()
            head.version = 1
            head.data_type = MRD_DATA_TYPES[pixels.dtype]
            head.channels = 1
            head.matrix_size[:] = (nx, ny, 1)
            head.field_of_view[:] = (spacing[0] * nx, spacing[1] * ny, spacing[2])
            head.position[:] = centres[k]
            head.read_dir[:], head.phase_dir[:], head.slice_dir[:] = dirs[:, 0], dirs[:, 1], dirs[:, 2]
            head.slice = int(k)
            head.repetition = t
            head.image_index = min(t * nz + int(k) + 1, 0xFFFF)
            head.image_series_index = series_index
            head.image_type = ismrmrd.IMTYPE_COMPLEX if complex_data else ismrmrd.IMTYPE_MAGNITUDE
            images.append(ismrmrd.Image(head, data=pixels))
    return images


def _label_values(data: np.ndarray) -> np.ndarray:
    """A label array as uint16; ValueError unless its values are integers in 0..65535."""
    if data.dtype.kind == "b":
        return data.astype(np.uint16)
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not np.all(finite) or not np.array_equal(data, np.round(data)):
            bad = data[~finite] if not np.all(finite) else data[data != np.round(data)]
            raise ValueError(f"labels are not integer: {data.dtype} values such as {float(bad.flat[0])}")
    elif data.dtype.kind not in "iu":
        raise ValueError(f"labels are not integer: {data.dtype} values")
    if data.size and (data.min() < 0 or data.max() > LABEL_MAX):
        raise ValueError(f"labels outside 0..{LABEL_MAX}: {data.min()} to {data.max()}")
    return data.astype(np.uint16)


def resample_labels(labels: nibabel.spatialimages.SpatialImage, volume: Volume) -> np.ndarray:
    """A label map on the grid of ``volume``: uint16, shaped like ``volume.data``.

    When the two affines agree (entries within 1e-3 mm) the labels are taken as they are and their
    shape must be the volume's; otherwise each voxel centre of the volume takes the label of the
    nearest label voxel (through the two affines), 0 outside the label map.  A 2-D label array is
    accepted for a one-slice volume, as are trailing axes of length 1.  ValueError for a shape
    mismatch, other dimensionalities, non-integer, negative or over-65535 labels.
    """
    data = np.asanyarray(labels.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2 and volume.data.shape[2] == 1:
        data = data[..., None]
    if data.ndim != 3:
        raise ValueError(f"labels are {data.ndim}-D ({'x'.join(map(str, data.shape))}): 3-D expected"
                         + (" (2-D only for a one-slice image)" if data.ndim == 2 else ""))
    values = _label_values(data)
    shape = volume.data.shape
    label_affine = np.asarray(labels.affine, dtype=np.float64)
    if np.abs(label_affine - volume.affine).max() <= AFFINE_TOLERANCE_MM:
        if values.shape != shape:
            raise ValueError(f"shape mismatch: labels {'x'.join(map(str, values.shape))}, "
                             f"image {'x'.join(map(str, shape))}")
        return values
    to_labels = np.linalg.solve(label_affine, volume.affine)
    i = np.arange(shape[0], dtype=np.float64)[:, None]
    j = np.arange(shape[1], dtype=np.float64)[None, :]
    limits = np.array(values.shape).reshape(3, 1, 1)
    out = np.zeros(shape, dtype=np.uint16)
    for k in range(shape[2]):
        coords = (to_labels[:3, 0, None, None] * i + to_labels[:3, 1, None, None] * j
                  + (to_labels[:3, 2] * k + to_labels[:3, 3])[:, None, None])
        index = np.floor(coords + 0.5).astype(np.int64)
        inside = np.all((index >= 0) & (index < limits), axis=0)
        out[:, :, k][inside] = values[index[0][inside], index[1][inside], index[2][inside]]
    return out


def volume_images(volume: Volume, labels: np.ndarray, series_index: int) -> list[ismrmrd.Image]:
    """uint16 MRD images of a label array on the volume's grid, one per slice (one 3-D image for a
    3-D volume), each with a copy of the header of its slice (``volume.heads[k]``: geometry,
    counters, time stamps) and ``image_series_index = series_index``, data type USHORT, image type
    magnitude, one channel.  ValueError when ``labels`` is not shaped like ``volume.data`` or not
    integers in 0..65535."""
    labels = np.asarray(labels)
    if labels.shape != volume.data.shape:
        raise ValueError(f"shape mismatch: labels {'x'.join(map(str, labels.shape))}, "
                         f"image {'x'.join(map(str, volume.data.shape))}")
    values = _label_values(labels)
    if len(volume.heads) == 1 and values.shape[2] > 1:
        blocks = [values.transpose(2, 1, 0)[None]]
    else:
        blocks = [values[:, :, k].T[None, None] for k in range(values.shape[2])]
    images = []
    for head, block in zip(volume.heads, blocks):
        head = ismrmrd.ImageHeader.from_buffer_copy(bytes(head))
        head.image_series_index = series_index
        head.image_type = ismrmrd.IMTYPE_MAGNITUDE
        head.data_type = ismrmrd.DATATYPE_USHORT
        head.channels = 1
        images.append(ismrmrd.Image(head, data=np.ascontiguousarray(block)))
    return images
