"""Bulk reading and writing of MRD HDF5 files (the layout of ``ismrmrd.Dataset``).

Layout of one group (docs/modules.md §9.3)::

    /<group>/xml                        (1,) vlen bytes, the XML header
    /<group>/data                       (M,) {head, traj vlen f4, data vlen f4}, acquisitions
    /<group>/waveforms                  (K,) {head, data vlen u4}
    /<group>/image_<series>/data        (N, channels, z, y, x)
    /<group>/image_<series>/header      (N,) packed ImageHeader
    /<group>/image_<series>/attributes  (N,) vlen str, MetaAttributes XML

``ismrmrd.Dataset`` reads and appends one item per call (one HDF5 resize per
item), which is far too slow for a few hundred MB of raw data; these helpers
read whole datasets and append whole batches, with the record types of
``ismrmrd.hdf5`` so that files stay readable by ``ismrmrd.Dataset``.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import resource
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import h5py
import ismrmrd
import ismrmrd.hdf5 as mrdh5
import numpy as np

from constants import IMAGE_DTYPES, MessageID

ACQ_HEADER_DTYPE = mrdh5.acquisition_header_dtype
IMAGE_HEADER_DTYPE = mrdh5.image_header_dtype
WAVEFORM_HEADER_DTYPE = mrdh5.waveform_header_dtype
CHUNK_ITEMS = 256
IMAGE_PARTS = ("data", "header", "attributes")

log = logging.getLogger(__name__)


@dataclasses.dataclass
class AcquisitionBlock:
    """Acquisitions of one file as arrays.

    ``heads`` is a packed structured array (``ACQ_HEADER_DTYPE``, 340 bytes per
    record, the wire layout); ``data[i]`` is complex64 ``[cha, samples]`` and
    ``traj[i]`` float32 ``[samples, dims]``.
    """

    heads: np.ndarray
    data: list
    traj: list

    def __len__(self) -> int:
        return len(self.heads)

    @property
    def nbytes(self) -> int:
        return int(self.heads.nbytes + sum(d.nbytes for d in self.data) + sum(t.nbytes for t in self.traj))


@dataclasses.dataclass
class ImageSeries:
    """Images of one ``image_<series>`` group: ``data`` is ``[N, cha, z, y, x]``."""

    name: str
    heads: np.ndarray
    attributes: list
    data: np.ndarray


def read_xml(group: h5py.Group) -> str | None:
    """The XML header text of a group, or None when it has none."""
    if "xml" not in group:
        return None
    value = group["xml"][0]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def write_xml(group: h5py.Group, text: str) -> None:
    """Write (or replace) the XML header of a group."""
    if "xml" in group:
        del group["xml"]
    write_text(group, "xml", text)


def _acquisition_block(records: np.ndarray) -> AcquisitionBlock:
    heads = np.empty(len(records), dtype=ACQ_HEADER_DTYPE)
    for name in ACQ_HEADER_DTYPE.names:
        heads[name] = records["head"][name]
    nsamp = heads["number_of_samples"].astype(np.int64)
    ncha = heads["active_channels"].astype(np.int64)
    ndim = heads["trajectory_dimensions"].astype(np.int64)
    data = [np.asarray(d, dtype=np.float32).view(np.complex64).reshape(c, s)
            for d, c, s in zip(records["data"], ncha, nsamp)]
    traj = [np.asarray(t, dtype=np.float32).reshape(s, k)
            for t, s, k in zip(records["traj"], nsamp, ndim)]
    return AcquisitionBlock(heads, data, traj)


def read_acquisitions(group: h5py.Group) -> AcquisitionBlock:
    """Read every acquisition of ``group/data`` with one HDF5 read."""
    return _acquisition_block(group["data"][...])


def iter_acquisition_blocks(dataset: h5py.Dataset, rows: int = 128) -> Iterator[AcquisitionBlock]:
    """Acquisitions of an ``/<group>/data`` dataset in blocks of ``rows`` records.

    Streaming in blocks keeps memory small and lets a sender start at once;
    each block is still one HDF5 read.
    """
    for start in range(0, dataset.shape[0], rows):
        yield _acquisition_block(dataset[start:start + rows])


def _append(dset_parent: h5py.Group, name: str, values: np.ndarray) -> None:
    """Append records along axis 0, creating a chunked extendable dataset."""
    if name in dset_parent:
        dset = dset_parent[name]
        start = dset.shape[0]
        dset.resize(start + len(values), axis=0)
        dset[start:] = values
    else:
        chunks = (max(1, min(CHUNK_ITEMS, len(values))),) + values.shape[1:]
        dset_parent.create_dataset(name, data=values, maxshape=(None,) + values.shape[1:], chunks=chunks)


def append_acquisitions(group: h5py.Group, block: AcquisitionBlock) -> None:
    """Append acquisitions to ``group/data`` in one write."""
    if not len(block):
        return
    records = np.empty(len(block), dtype=mrdh5.acquisition_dtype)
    records["head"] = block.heads
    for i, (d, t) in enumerate(zip(block.data, block.traj)):
        records[i]["data"] = np.ascontiguousarray(d, dtype=np.complex64).view(np.float32).ravel()
        records[i]["traj"] = np.ascontiguousarray(t, dtype=np.float32).ravel()
    _append(group, "data", records)


def acquisitions_to_block(acqs: Sequence[ismrmrd.Acquisition]) -> AcquisitionBlock:
    """Pack ``ismrmrd.Acquisition`` objects into an :class:`AcquisitionBlock`."""
    heads = np.frombuffer(b"".join(bytes(a._head) for a in acqs), dtype=ACQ_HEADER_DTYPE)
    return AcquisitionBlock(heads.copy(), [a.data for a in acqs], [a.traj for a in acqs])


def read_waveforms(group: h5py.Group) -> list[ismrmrd.Waveform]:
    """Read every waveform of ``group/waveforms`` with one HDF5 read."""
    records = group["waveforms"][...]
    waves = []
    for rec in records:
        head = np.zeros(1, dtype=WAVEFORM_HEADER_DTYPE)
        head[0] = rec["head"]
        wav = ismrmrd.Waveform(head.tobytes())
        wav.data[:] = np.asarray(rec["data"], dtype=np.uint32).reshape(wav.channels, wav.number_of_samples)
        waves.append(wav)
    return waves


def append_waveforms(group: h5py.Group, waves: Sequence[ismrmrd.Waveform]) -> None:
    """Append waveforms to ``group/waveforms`` in one write."""
    if not waves:
        return
    records = np.zeros(len(waves), dtype=mrdh5.waveform_dtype)
    for i, wav in enumerate(waves):
        records[i]["head"] = np.frombuffer(bytes(wav._head), dtype=WAVEFORM_HEADER_DTYPE)[0]
        records[i]["data"] = np.ascontiguousarray(wav.data, dtype=np.uint32).ravel()
    _append(group, "waveforms", records)


def image_series_names(group: h5py.Group) -> list[str]:
    """Names of the image sub-groups (``image_*`` or ``images_*``), in file order."""
    return [k for k in group.keys()
            if (k.startswith("image_") or k.startswith("images_")) and isinstance(group[k], h5py.Group)]


def read_image_series(group: h5py.Group, name: str) -> ImageSeries:
    """Read one image series with one read per dataset."""
    sub = group[name]
    heads = np.asarray(sub["header"][...], dtype=IMAGE_HEADER_DTYPE)
    attrs = [a.decode("utf-8") if isinstance(a, bytes) else str(a) for a in sub["attributes"][...]]
    data = sub["data"][...]
    if data.dtype.names == ("real", "imag"):
        data = data.view(np.complex64 if data.dtype["real"] == np.float32 else np.complex128)
    return ImageSeries(name, heads, attrs, data)


def _hdf5_pixel_dtype(data_type: int) -> np.dtype:
    return mrdh5.get_hdf5type(data_type)


def _type_name(hdf5_type: np.dtype) -> str:
    """A pixel type as a user knows it (complex types are stored as {real, imag} pairs)."""
    if hdf5_type.names == ("real", "imag"):
        return f"complex{8 * hdf5_type.itemsize}"
    return np.dtype(hdf5_type).name


def _transposed(head: np.ndarray, attributes: str, pixels: np.ndarray) -> tuple[np.ndarray, str, np.ndarray]:
    """An image with rows and columns swapped: pixels, matrix size and FOV x/y, read/phase directions
    and the ``ImageRowDir``/``ImageColumnDir`` attributes (``--fix-transposed`` of upstream's client)."""
    head = head.copy()
    for field in ("matrix_size", "field_of_view"):
        head[field][[0, 1]] = head[field][[1, 0]]
    head["read_dir"], head["phase_dir"] = head["phase_dir"].copy(), head["read_dir"].copy()
    if attributes:
        meta = ismrmrd.Meta.deserialize(attributes)
        row, column = meta.get("ImageRowDir"), meta.get("ImageColumnDir")
        for key, value in (("ImageRowDir", column), ("ImageColumnDir", row)):
            if value is None:
                meta.pop(key, None)
            else:
                meta[key] = value
        attributes = meta.serialize()
    return head, attributes, np.swapaxes(pixels, -1, -2)


def append_images(group: h5py.Group, heads: np.ndarray, attributes: Sequence[str],
                  pixels: Sequence[np.ndarray], fix_transposed: bool = False) -> list[str]:
    """Append images to ``image_<image_series_index>`` sub-groups; returns a note per change of place.

    ``heads`` is an ``IMAGE_HEADER_DTYPE`` array, ``pixels[i]`` the ``[cha, z, y, x]`` array of
    image i.  An MRD HDF5 series is one array, so an image whose shape or data type differs from
    the series' stored (or first) image goes to the next ``image_<series>_<k>`` (k = 2, 3, ...)
    that holds its kind, a new one if none does: no image is ever dropped.  With
    ``fix_transposed`` an image that is the transpose of its series' images is transposed back
    (:func:`_transposed`) instead.
    """
    kinds: dict[str, tuple | None] = {}  # sub-group -> (pixel shape, HDF5 type) it holds, None: new

    def kind_of(name: str) -> tuple | None:
        if name not in kinds:
            stored = group[name]["data"] if name in group and "data" in group[name] else None
            kinds[name] = (stored.shape[1:], stored.dtype) if stored is not None else None
        return kinds[name]

    notes: list[str] = []
    placed: dict[str, list[tuple[np.ndarray, str, np.ndarray]]] = {}
    for head, attrs, pix in zip(heads, attributes, pixels):
        base = f"image_{int(head['image_series_index'])}"
        data_type = int(head["data_type"])
        kind = (tuple(pix.shape), _hdf5_pixel_dtype(data_type))
        first = kind_of(base)
        if (fix_transposed and first is not None and first[1] == kind[1] and len(kind[0]) >= 2
                and kind[0] != first[0] and kind[0][:-2] + kind[0][:-3:-1] == first[0]):
            head, attrs, pix = _transposed(head, attrs, pix)
            kind = first
            notes.append(f"{base}: image {int(head['image_index'])} transposed to {first[0]} (--fix-transposed)")
        name, k = base, 1
        while kind_of(name) not in (None, kind):
            k += 1
            name = f"{base}_{k}"
        if kind_of(name) is None:
            kinds[name] = kind
            if k > 1:
                notes.append(f"{base}: images of shape {kind[0]} and type {np.dtype(IMAGE_DTYPES[data_type]).name} "
                             f"do not fit the series' {first[0]} images of type {_type_name(first[1])}; "
                             f"stored in {name}")
        placed.setdefault(name, []).append((head, attrs, pix))
    for name, items in placed.items():
        sub = group.require_group(name)
        data_type = int(items[0][0]["data_type"])
        stack = np.stack([np.ascontiguousarray(pix, dtype=IMAGE_DTYPES[data_type]) for _, _, pix in items])
        _append(sub, "data", stack.view(_hdf5_pixel_dtype(data_type)))
        _append(sub, "header", np.array([head for head, _, _ in items], dtype=IMAGE_HEADER_DTYPE))
        _append(sub, "attributes", np.array([a for _, a, _ in items], dtype=h5py.special_dtype(vlen=str)))
    return notes


def iter_groups(h5: h5py.File) -> Iterable[str]:
    """Top-level group names of a file."""
    return [k for k in h5.keys() if isinstance(h5[k], h5py.Group)]


def named_or_last_group(h5: h5py.File, requested: str | None) -> str:
    """``requested`` when the file has it, else (when None) the file's last group; LookupError otherwise."""
    groups = list(iter_groups(h5))
    group = requested or (groups[-1] if groups else None)
    if group not in groups:
        raise LookupError(f"{h5.filename} has no group {group} (groups: {', '.join(groups) or 'none'})")
    return group


def send_messages(writer: Any, acquisitions: h5py.Dataset | None = None,
                  waveforms: Sequence[ismrmrd.Waveform] = (), images: Sequence[ImageSeries] = (),
                  merge_waveforms: bool = False) -> Iterator[int]:
    """Send the data of one group through a ``connection.MessageWriter``, one message per step.

    A generator: each step sends one message and yields its ID, so the caller
    can count, show progress or stop (``break``) between messages.  The order is
    waveforms, acquisitions (read in blocks), then images; with
    ``merge_waveforms`` the waveforms are instead interleaved with the
    acquisitions by time stamp, a waveform before an acquisition with the same
    stamp (the order of ``ismrmrd_hdf5_to_stream``).  Used by ``client.py`` and
    ``tools/mrdhdf5_to_stream.py``.
    """
    waves = list(waveforms)
    w = 0
    if not merge_waveforms:
        for wav in waves:
            writer.send_waveform(wav)
            yield MessageID.WAVEFORM
        w = len(waves)
    size = ACQ_HEADER_DTYPE.itemsize
    for block in iter_acquisition_blocks(acquisitions) if acquisitions is not None else ():
        heads = memoryview(block.heads.tobytes())
        stamps = block.heads["acquisition_time_stamp"]
        for i in range(len(block)):
            while w < len(waves) and waves[w].time_stamp <= stamps[i]:
                writer.send_waveform(waves[w])
                w += 1
                yield MessageID.WAVEFORM
            writer.send_acquisition_parts(heads[i * size:(i + 1) * size], block.traj[i], block.data[i])
            yield MessageID.ACQUISITION
    for wav in waves[w:]:
        writer.send_waveform(wav)
        yield MessageID.WAVEFORM
    for series in images:
        for i in range(len(series.heads)):
            image = ismrmrd.Image(series.heads[i].tobytes(), attribute_string=series.attributes[i])
            image.data[...] = series.data[i]
            writer.send_image(image)
            yield MessageID.IMAGE


class ItemBatch:
    """Acquisitions, waveforms and images collected one by one, appended to a group together.

    Shared by the client's receiver and ``tools/stream_to_mrdhdf5.py``; ``nbytes``
    tells when to write.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.acquisitions: list[ismrmrd.Acquisition] = []
        self.waveforms: list[ismrmrd.Waveform] = []
        self.images: list[ismrmrd.Image] = []
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.acquisitions) + len(self.waveforms) + len(self.images)

    def add(self, item: object) -> bool:
        """Keep an acquisition, waveform or image; False (and nothing kept) for anything else."""
        if isinstance(item, ismrmrd.Acquisition):
            self.acquisitions.append(item)
            self.nbytes += item.data.nbytes + item.traj.nbytes
        elif isinstance(item, ismrmrd.Image):
            self.images.append(item)
            self.nbytes += item.data.nbytes
        elif isinstance(item, ismrmrd.Waveform):
            self.waveforms.append(item)
            self.nbytes += item.data.nbytes
        else:
            return False
        return True

    def write_to(self, group: h5py.Group, fix_transposed: bool = False) -> list[str]:
        """Append everything kept to ``group`` (raw data first, then images) and start a new batch;
        returns :func:`append_images`' notes.  The batch is emptied even when a write fails, so a
        failed write is not repeated."""
        acqs, waves, images = self.acquisitions, self.waveforms, self.images
        self.clear()
        if acqs:
            append_acquisitions(group, acquisitions_to_block(acqs))
        append_waveforms(group, waves)
        if not images:
            return []
        heads = np.frombuffer(b"".join(bytes(im.getHead()) for im in images), dtype=IMAGE_HEADER_DTYPE)
        return append_images(group, heads, [im.attribute_string for im in images], [im.data for im in images],
                             fix_transposed)


def check_room(path: str | Path, nbytes: int) -> None:
    """OSError (ENOSPC) when writing ``nbytes`` more to the HDF5 file ``path`` would not fit on its disk
    or under the file-size limit (``ulimit -f``).

    Call it before every write: HDF5 does not survive a failed write (the process can crash in
    the library, or when it later closes the file), so a write is better refused than tried.
    """
    path = Path(path)
    needed = int(nbytes * 1.1) + (1 << 20)
    room = shutil.disk_usage(path.parent).free
    soft_limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if soft_limit != resource.RLIM_INFINITY:
        room = min(room, soft_limit - path.stat().st_size)
    if needed > room:
        raise OSError(errno.ENOSPC, f"no room for {needed} more bytes ({max(room, 0)} left)", str(path))


def write_text(group: h5py.Group, name: str, text: str) -> None:
    """Store ``text`` as a (1,) vlen-bytes dataset ``name`` (the layout of ``xml`` and ``config``)."""
    dset = group.create_dataset(name, (1,), dtype=h5py.special_dtype(vlen=bytes))
    dset[0] = text.encode("utf-8")


# --- Layout checks: refuse a file that is not MRD data before a byte of it is sent -----------------
#
# The checks look at data types and shapes (and two small fields of the image headers), never at the
# raw data, and raise ValueError with a one-line reason naming the dataset.


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
    for name in image_series_names(group):
        check_image_series(group[name])
