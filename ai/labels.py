"""What an inference server returns, made fit for the scanner: the label map and its outlines.

:func:`read_output` finds the label map (``<name>.nii.gz`` or ``.nii``) and its names
(``<name>.json``, ``{"1": "GTVt", ...}``) among the members of the output archive and raises
``ValueError`` naming what is wrong (no NIfTI, a file nibabel cannot read, names that are no
mapping of label values).  :func:`contour_rois` traces the outline of every label of one slice with
contourpy (matplotlib's contouring library, already a dependency) and gives ``ROI_*`` attributes in
the format of ``mrdhelper.create_roi``, one colour per label, so that the scanner draws them.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import re
from typing import Mapping

import contourpy
import nibabel
import numpy as np

import mrdhelper

# Distinct, saturated colours (r, g, b in 0..1) for labels 1, 2, ...; label n takes entry (n-1) mod len.
PALETTE = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.5, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 1.0),
           (0.0, 1.0, 1.0), (1.0, 0.5, 0.0), (0.6, 0.3, 1.0), (1.0, 1.0, 1.0), (0.5, 1.0, 0.5))
NIFTI_SUFFIXES = (".nii.gz", ".nii")
ROI_NAME_TEXT = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_NAME_CHARS = 64


@dataclasses.dataclass(frozen=True)
class ModelOutput:
    """A label map as the server sent it (any grid), its label names, and the member it came from."""

    image: nibabel.Nifti1Image
    names: dict[int, str]
    member: str


def colour_of(label: int) -> tuple[float, float, float]:
    """The outline colour of a label value (1, 2, ...)."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def read_output(files: Mapping[str, bytes]) -> ModelOutput:
    """The first NIfTI member (by name) and the label names of its ``.json`` (else ``label_<n>``)."""
    niftis = sorted(name for name in files if name.lower().endswith(NIFTI_SUFFIXES))
    if not niftis:
        listed = ", ".join(sorted(files)) or "nothing"
        raise ValueError(f"the output has no NIfTI label map (.nii.gz or .nii); it holds {listed}")
    member = niftis[0]
    raw = files[member]
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        image = nibabel.Nifti1Image.from_bytes(raw)
    except Exception as exc:  # nibabel raises several types for a damaged file
        raise ValueError(f"the label map {member} is not a readable NIfTI file: {exc}") from exc
    stem = member[: -len(next(s for s in NIFTI_SUFFIXES if member.lower().endswith(s)))]
    return ModelOutput(image=image, names=_names(files, stem + ".json"), member=member)


def _names(files: Mapping[str, bytes], member: str) -> dict[int, str]:
    if member not in files:
        return {}
    try:
        data = json.loads(files[member])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the label names {member} are not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"the label names {member} are not a mapping of label values to names")
    names = {}
    for key, value in data.items():
        try:
            names[int(key)] = str(value)
        except ValueError:
            raise ValueError(f"the label names {member} have the key {key!r}, which is no label value") from None
    return names


def label_name(label: int, names: Mapping[int, str]) -> str:
    """The label's name from the model, else ``label_<n>``."""
    return names.get(int(label)) or f"label_{int(label)}"


def roi_key(name: str, part: int) -> str:
    """``ROI_<name>`` for a label's first outline, ``ROI_<name>_<part>`` for further ones."""
    safe = ROI_NAME_TEXT.sub("_", name).strip("_")[:MAX_NAME_CHARS] or "label"
    return f"ROI_{safe}" if part == 0 else f"ROI_{safe}_{part}"


def contour_rois(labels: np.ndarray, names: Mapping[int, str], thickness: float = 1.0) -> dict[str, list[str]]:
    """``ROI_*`` attributes of the outlines of every label of one slice ``labels[y, x]``.

    Each label's mask is traced at level 0.5 (between inside and outside pixel centres, so a
    one-pixel label has a small diamond around its centre); x = column, y = row, pixel units as in
    ``mrdhelper.create_roi``. Outlines are closed (the first point repeated at the end); outlines
    of fewer than 3 points are left out. A padding of one pixel closes outlines at the image border.
    """
    rois: dict[str, list[str]] = {}
    values = np.unique(labels)
    for label in values[values > 0]:
        mask = np.pad((labels == label).astype(np.float64), 1)
        lines = contourpy.contour_generator(z=mask, line_type=contourpy.LineType.Separate).lines(0.5)
        name = label_name(int(label), names)
        part = 0
        for line in lines:
            if len(line) < 3:
                continue
            closed = line if np.array_equal(line[0], line[-1]) else np.vstack([line, line[:1]])
            xy = closed - 1.0  # undo the padding
            rois[roi_key(name, part)] = mrdhelper.create_roi(xy[:, 0].tolist(), xy[:, 1].tolist(),
                                                            rgb=colour_of(int(label)), thickness=thickness)
            part += 1
    return rois
