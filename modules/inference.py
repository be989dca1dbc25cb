"""inference: segment a session's images on an AI inference server and return labels and outlines.

Images (e.g. from DICOM through ``client.py``) and raw data (reconstructed first with simplefft's
steps) are sent back at once, unchanged: they are the primary images and nothing below can cost
them.  At CLOSE each volume of a series (its images of one contrast, phase, repetition, set
and average) becomes one NIfTI volume (``ai.nifti``: pixels and geometry only, no patient data),
goes to the inference server as ``tmp_0000.nii.gz`` with ``tmp_0000.meta.json`` (``ai.client``:
v2 or v1 task API, polled with back-off up to a deadline, one task per volume), and its label map
comes back as

* a label series (a new series index): uint16 labels on the image grid (nearest-neighbour
  resampled when the model answers on another grid), meta ``InferenceModel``, ``InferenceTask``,
  ``InferenceLabels`` (``value=name``);
* copies of the primary images in the next new series, each with the outline of every label of its
  slice as ``ROI_<label name>`` attributes (one colour per label, ``ai.labels``).

Any failure (server unreachable, a failed or vanished task, the deadline, an output that is no
archive, holds no NIfTI, does not fit the image grid or is not integer) is one WARNING text naming
the cause; the session then ends normally.  docs/modules.md §19.

JSON ``parameters``: ``inference_url`` (required), ``inference_model`` (required),
``inference_api`` (``v2`` or ``v1``; default ``v2``), ``inference_timeout_s`` (300),
``inference_poll_s`` (2), ``inference_verify_tls`` (true), ``inference_token`` (sent as
``X-Token``).
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import logging
from typing import Any

import ismrmrd
import numpy as np

import constants
import mrdhelper

import _images
from _errors import ConfigError
from ai import client as ai_client
from ai import labels as ai_labels
from ai import nifti

log = logging.getLogger(__name__)

HISTORY = ["FIRE", "PYTHON"]
INPUT_NAME = "tmp_0000"
GZIP_LEVEL = 1  # the volume crosses a network once; speed over size
# Image counters that tell volumes of one series apart (a series of several echoes or time points).
VOLUME_COUNTERS = ("contrast", "phase", "repetition", "set", "average")


def settings_from(config: Any) -> ai_client.InferenceSettings:
    """The inference server settings from the JSON ``parameters``; ConfigError for a bad or missing one."""
    def get(key: str, default: Any, kind: str) -> Any:
        return mrdhelper.get_json_config_param(config, key, default, kind)

    url, model = get("inference_url", "", "str"), get("inference_model", "", "str")
    missing = [key for key, value in (("inference_url", url), ("inference_model", model)) if not value]
    if missing:
        raise ConfigError(f"parameters.{' and parameters.'.join(missing)} missing: no inference server to ask")
    try:
        return ai_client.InferenceSettings(
            url=url, model=model, api=get("inference_api", "v2", "str"),
            timeout_s=get("inference_timeout_s", 300.0, "float"), poll_s=get("inference_poll_s", 2.0, "float"),
            verify_tls=get("inference_verify_tls", True, "bool"), token=get("inference_token", None, "str") or None)
    except ValueError as exc:
        raise ConfigError(f"inference settings: {exc}") from exc


def process(connection: Any, config: Any, metadata: Any) -> None:
    try:
        try:
            settings = settings_from(config)
        except ConfigError as exc:
            settings = None
            warn(connection, f"AI inference off: {exc}; the images are sent back without labels")
        series: dict[int, list[ismrmrd.Image]] = {}

        def keep(images: list[ismrmrd.Image]) -> list[ismrmrd.Image]:
            for image in images:
                series.setdefault(image.image_series_index, []).append(image)
            return images

        def on_slice(kspace: Any, index: int) -> ismrmrd.Image:
            return keep([_images.slice_image(kspace, metadata, index, HISTORY)])[0]

        _images.serve(connection, metadata, on_slice=on_slice, on_group=keep)
        if settings is not None and series:
            free = max(series) + 1
            for index in sorted(series):
                connection.send_image(segment(connection, settings, series[index], free, free + 1))
                free += 2
    finally:
        connection.send_close()


def warn(connection: Any, text: str) -> None:
    log.warning("%s", text)
    connection.send_logging(constants.MRD_LOGGING_WARNING, text)


def segment(connection: Any, settings: ai_client.InferenceSettings, images: list[ismrmrd.Image],
            label_series: int, outline_series: int) -> list[ismrmrd.Image]:
    """The label series and the outlined copies of one series: one task per volume of the series."""
    groups: dict[tuple[int, ...], list[ismrmrd.Image]] = {}
    for image in images:
        groups.setdefault(tuple(getattr(image, name) for name in VOLUME_COUNTERS), []).append(image)
    out = []
    for key, group in groups.items():
        what = f"series {images[0].image_series_index}" + ("" if len(groups) == 1 else " (" + ", ".join(
            f"{name} {value}" for name, value in zip(VOLUME_COUNTERS, key) if value) + ")")
        out += segment_volume(connection, settings, group, what, label_series, outline_series)
    return out


def segment_volume(connection: Any, settings: ai_client.InferenceSettings, images: list[ismrmrd.Image],
                   what: str, label_series: int, outline_series: int) -> list[ismrmrd.Image]:
    """Labels and outlined copies of one volume, or [] after a WARNING text naming ``what`` failed."""
    try:
        volume = nifti.series_volume(images)
    except ValueError as exc:
        warn(connection, f"AI inference skipped {what}: not one volume: {exc}")
        return []
    inputs = {f"{INPUT_NAME}.nii.gz": gzip.compress(nifti.to_nifti(volume).to_bytes(), GZIP_LEVEL),
              f"{INPUT_NAME}.meta.json": json.dumps(nifti.meta_json(volume)).encode()}
    try:
        result = ai_client.run_task(settings, inputs)
    except ai_client.InferenceError as exc:
        warn(connection, f"AI inference of {what} failed: {exc}")
        return []
    try:
        output = ai_labels.read_output(result.files)
        labels = nifti.resample_labels(output.image, volume)
    except ValueError as exc:
        warn(connection, f"AI inference of {what}: the output of model '{settings.model}' "
                         f"(task {result.uid}) is unusable: {exc}")
        return []
    present = [int(v) for v in np.unique(labels) if v > 0]
    names = {value: ai_labels.label_name(value, output.names) for value in present}
    log.info("AI inference of %s: task %s, labels %s", what, result.uid,
             ", ".join(f"{v}={n}" for v, n in names.items()) or "none")
    meta = {"InferenceModel": settings.model, "InferenceTask": result.uid,
            "InferenceLabels": [f"{v}={n}" for v, n in names.items()] or ["none"]}
    return (label_images(volume, labels, label_series, meta)
            + outlined_copies(volume, images, labels, output.names, outline_series, meta))


def label_images(volume: nifti.Volume, labels: np.ndarray, series_index: int, meta: dict) -> list[ismrmrd.Image]:
    """The uint16 label series, windowed to its label values."""
    out = nifti.volume_images(volume, labels, series_index)
    top = max(int(labels.max()), 1)
    for image in out:
        image.meta = ismrmrd.Meta({**meta, "SequenceDescriptionAdditional": "AI_labels",
                                   "WindowCenter": str(top / 2), "WindowWidth": str(top),
                                   "ImageProcessingHistory": HISTORY + ["INFERENCE"], "Keep_image_geometry": "1"})
    return out


def outlined_copies(volume: nifti.Volume, images: list[ismrmrd.Image], labels: np.ndarray,
                    names: dict[int, str], series_index: int, meta: dict) -> list[ismrmrd.Image]:
    """Copies of the primary images with each label's outline on its slice (``ROI_*``); none for a 3-D
    image (an attribute cannot belong to one of its slices)."""
    if len(volume.order) != labels.shape[2]:
        return []
    out = []
    for k, position in enumerate(volume.order):
        image = images[position]
        head = image.getHead()
        head.image_series_index = series_index
        copy = ismrmrd.Image(head, data=image.data.copy())
        copy.meta = ismrmrd.Meta({**image.meta, **meta, "SequenceDescriptionAdditional": "AI_contours",
                                  "Keep_image_geometry": "1",
                                  **ai_labels.contour_rois(labels[:, :, k].T, names)})
        out.append(copy)
    return out
