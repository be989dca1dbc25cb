"""Bulk reading and writing of MRD HDF5 files (the layout of ``ismrmrd.Dataset``).

Layout of one group (docs/module-api.md §9.3)::

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
import logging
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


def append_images(group: h5py.Group, heads: np.ndarray, attributes: Sequence[str],
                  pixels: Sequence[np.ndarray]) -> None:
    """Append images, grouped into ``image_<image_series_index>`` sub-groups.

    ``heads`` is an ``IMAGE_HEADER_DTYPE`` array, ``pixels[i]`` the
    ``[cha, z, y, x]`` array of image i.  All images of one series must share
    shape and data type (an MRD HDF5 series is one array); a mismatch raises
    ValueError naming the series.
    """
    series = heads["image_series_index"]
    for index in np.unique(series):
        sel = np.flatnonzero(series == index)
        sub = group.require_group(f"image_{int(index)}")
        first = pixels[sel[0]]
        data_type = int(heads["data_type"][sel[0]])
        if any(pixels[i].shape != first.shape or int(heads["data_type"][i]) != data_type for i in sel):
            raise ValueError(f"image_{int(index)}: images of one series differ in shape or data type")
        if "data" in sub and (sub["data"].shape[1:] != first.shape
                              or sub["data"].dtype != _hdf5_pixel_dtype(data_type)):
            raise ValueError(f"image_{int(index)}: shape {first.shape} or data type {data_type} "
                             f"differs from the stored {sub['data'].shape[1:]} {sub['data'].dtype}")
        stack = np.stack([np.ascontiguousarray(pixels[i], dtype=IMAGE_DTYPES[data_type]) for i in sel])
        _append(sub, "data", stack.view(_hdf5_pixel_dtype(data_type)))
        _append(sub, "header", heads[sel])
        attrs = np.array([attributes[i] for i in sel], dtype=h5py.special_dtype(vlen=str))
        _append(sub, "attributes", attrs)


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

    def write_to(self, group: h5py.Group) -> None:
        """Append everything kept to ``group`` (raw data first, then images) and start a new batch.

        The batch is emptied even when an image series does not fit the stored
        one (ValueError from :func:`append_images`), so a failed write is not repeated.
        """
        acqs, waves, images = self.acquisitions, self.waveforms, self.images
        self.clear()
        if acqs:
            append_acquisitions(group, acquisitions_to_block(acqs))
        append_waveforms(group, waves)
        if images:
            heads = np.frombuffer(b"".join(bytes(im.getHead()) for im in images), dtype=IMAGE_HEADER_DTYPE)
            append_images(group, heads, [im.attribute_string for im in images], [im.data for im in images])


def write_text(group: h5py.Group, name: str, text: str) -> None:
    """Store ``text`` as a (1,) vlen-bytes dataset ``name`` (the layout of ``xml`` and ``config``)."""
    dset = group.create_dataset(name, (1,), dtype=h5py.special_dtype(vlen=bytes))
    dset[0] = text.encode("utf-8")
