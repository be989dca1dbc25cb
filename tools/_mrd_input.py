"""Layout checks of an MRD HDF5 group before anything is sent from it (helper, not a tool).

``ismrmrd.Dataset`` stores acquisitions as ``/<group>/data``, a 1-D compound dataset of records
``{head: AcquisitionHeader, traj: vlen float32, data: vlen float32}``, waveforms as
``/<group>/waveforms`` ``{head: WaveformHeader, data: vlen uint32}``, and each image series as
``/<group>/image_<n>/{data (N, channels, z, y, x), header (N,) ImageHeader, attributes (N,) text}``.
The checks look at data types and shapes (and read two fields of the image headers, which are
small), never at the raw data itself, and raise ValueError with a one-line reason naming the
dataset, so that a sender can refuse a file before writing a byte of its stream.  Self-contained:
h5py, numpy and the record types of ``ismrmrd.hdf5`` only.
"""
from __future__ import annotations

import h5py
import ismrmrd.hdf5 as mrdh5
import numpy as np

IMAGE_PARTS = ("data", "header", "attributes")


def _describe(dtype: np.dtype) -> str:
    """A short text for a data type: its field names, or its kind."""
    if dtype.names is not None:
        return f"fields {'/'.join(dtype.names)}"
    base = h5py.check_vlen_dtype(dtype)
    if base is not None:
        return f"variable-length {base}"
    return "text" if h5py.check_string_dtype(dtype) is not None else f"type {dtype}"


def _header_problem(dtype: np.dtype, reference: np.dtype) -> str | None:
    """Why ``dtype`` is not the MRD header type ``reference``, or None.

    The fields must be those of ``reference``, in its order (headers are converted by position),
    each a number of the same shape; nested structures (``idx``) alike.
    """
    if dtype.names is None:
        return f"{_describe(dtype)} instead of the header fields"
    if dtype.names != reference.names:
        missing = [name for name in reference.names if name not in dtype.names]
        extra = [name for name in dtype.names if name not in reference.names]
        if missing:
            return f"no field {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        return f"extra field {', '.join(extra[:5])}" if extra else "the header fields in another order"
    for name in reference.names:
        have, want = dtype.fields[name][0], reference.fields[name][0]
        if want.base.names is not None:
            problem = _header_problem(have.base, want.base)
            if problem:
                return f"{name}: {problem}"
        elif have.shape != want.shape or have.base.kind not in "uif":
            return f"field {name} of {have} instead of {want}"
    return None


def _check_records(dataset: h5py.Dataset | h5py.Group, reference: np.dtype, what: str) -> None:
    """ValueError unless ``dataset`` is a 1-D compound dataset of the record type ``reference``.

    ``head`` must be the MRD header type (see :func:`_header_problem`); the other fields must be
    variable-length arrays of numbers.
    """
    if not isinstance(dataset, h5py.Dataset):
        raise ValueError(f"{dataset.name} is a group, not {what}")
    dtype = dataset.dtype
    fields = list(reference.names)
    if dtype.names is None or any(name not in dtype.names for name in fields):
        raise ValueError(f"{dataset.name} is not {what}: a compound dataset with fields {'/'.join(fields)} "
                         f"expected, found {_describe(dtype)}")
    if dataset.ndim != 1:
        raise ValueError(f"{dataset.name} is not {what}: a 1-D dataset expected, found shape {dataset.shape}")
    problem = _header_problem(dtype["head"], reference["head"])
    if problem:
        raise ValueError(f"{dataset.name} is not {what}: its head has {problem}")
    for name in fields[1:]:
        base = h5py.check_vlen_dtype(dtype[name])
        if base is None or base.kind not in "uif":
            raise ValueError(f"{dataset.name} is not {what}: field {name} is {_describe(dtype[name])}, "
                             "not a variable-length array of numbers")


def check_acquisition_dataset(dataset: h5py.Dataset | h5py.Group) -> None:
    """ValueError (one line, naming the dataset) unless ``dataset`` has the layout of MRD acquisitions.

    That is a 1-D compound dataset with fields ``head`` (the AcquisitionHeader fields, in their
    order), ``traj`` and ``data`` (variable-length arrays of numbers), as ``/<group>/data`` of
    ``ismrmrd.Dataset``.
    """
    _check_records(dataset, mrdh5.acquisition_dtype, "MRD acquisition data")


def check_waveform_dataset(dataset: h5py.Dataset | h5py.Group) -> None:
    """ValueError (one line) unless ``dataset`` has the layout of MRD waveforms (``/<group>/waveforms``)."""
    _check_records(dataset, mrdh5.waveform_dtype, "MRD waveform data")


def check_image_series(group: h5py.Group | h5py.Dataset) -> None:
    """ValueError (one line, naming the group) unless ``group`` is a readable MRD image series.

    It must hold ``data`` (numbers, or real/imag pairs, ``[N, channels, z, y, x]``), ``header`` (1-D,
    the ImageHeader fields in their order) and ``attributes`` (1-D text), all of N items, each
    header's ``channels`` and ``matrix_size`` matching the data shape.
    """
    if not isinstance(group, h5py.Group):
        raise ValueError(f"{group.name} is a dataset, not an MRD image series (a group with "
                         f"{'/'.join(IMAGE_PARTS)})")
    absent = [part for part in IMAGE_PARTS if not isinstance(group.get(part), h5py.Dataset)]
    if absent:
        raise ValueError(f"{group.name} is not an MRD image series: no {'/'.join(absent)} dataset")
    data, header, attributes = (group[part] for part in IMAGE_PARTS)
    pixel = data.dtype
    if not (pixel.kind in "uifc" or pixel.names == ("real", "imag")):
        raise ValueError(f"{data.name} is not MRD image data: {_describe(pixel)}, not numbers")
    if data.ndim != 5:
        raise ValueError(f"{data.name} is not MRD image data: shape [N, channels, z, y, x] expected, "
                         f"found {data.shape}")
    problem = _header_problem(header.dtype, mrdh5.image_header_dtype)
    if problem or header.ndim != 1:
        raise ValueError(f"{header.name} is not MRD image headers: "
                         f"{'it has ' + problem if problem else f'shape {header.shape}, not 1-D'}")
    if h5py.check_string_dtype(attributes.dtype) is None or attributes.ndim != 1:
        raise ValueError(f"{attributes.name} is not 1-D text (MetaAttributes XML): "
                         f"{_describe(attributes.dtype)} of shape {attributes.shape}")
    counts = {part: group[part].shape[0] for part in IMAGE_PARTS}
    if len(set(counts.values())) != 1:
        raise ValueError(f"{group.name}: data, header and attributes differ in length "
                         f"({', '.join(f'{k} {v}' for k, v in counts.items())})")
    heads = header.fields(["channels", "matrix_size"])[...]
    shapes = np.column_stack([heads["channels"], heads["matrix_size"][:, ::-1]])
    wrong = np.flatnonzero((shapes != np.array(data.shape[1:])).any(axis=1))
    if len(wrong):
        k = int(wrong[0])
        raise ValueError(f"{group.name}: header {k} gives channels/z/y/x {tuple(int(v) for v in shapes[k])}, "
                         f"the data {data.shape[1:]}")


def check_input_group(group: h5py.Group, with_waveforms: bool = False) -> None:
    """ValueError (one line) unless what a sender reads from ``group`` has the MRD layout.

    Checks ``data`` when present, ``waveforms`` when present and ``with_waveforms``, and every
    ``image_*``/``images_*`` sub-group (the series that ``mrdfile.image_series_names`` lists).
    """
    if "data" in group:
        check_acquisition_dataset(group["data"])
    if with_waveforms and "waveforms" in group:
        check_waveform_dataset(group["waveforms"])
    for name, item in group.items():
        if name.startswith(("image_", "images_")) and isinstance(item, h5py.Group):
            check_image_series(item)
