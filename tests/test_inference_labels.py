"""ai/labels.py: reading a model's output members and tracing label outlines as MRD ROIs."""
import gzip
import json

import nibabel as nib
import numpy as np
import pytest

import mrdhelper
from ai import labels


def nifti_bytes(data, gz=True):
    raw = nib.Nifti1Image(data, np.eye(4)).to_bytes()
    return gzip.compress(raw) if gz else raw


@pytest.mark.parametrize("gz", [True, False])
def test_output_with_names(gz):
    data = np.zeros((4, 5, 2), np.uint16)
    data[1, 1, 0] = 2
    member = "seg.nii.gz" if gz else "seg.nii"
    out = labels.read_output({member: nifti_bytes(data, gz), "seg.json": b'{"2": "GTVt"}', "log.txt": b"x"})
    assert out.member == member and out.names == {2: "GTVt"}
    assert np.array_equal(np.asanyarray(out.image.dataobj), data)
    assert labels.label_name(2, out.names) == "GTVt" and labels.label_name(3, out.names) == "label_3"


@pytest.mark.parametrize("files, message", [
    ({"a.json": b"{}"}, "no NIfTI label map"),
    ({"a.nii.gz": gzip.compress(b"not a nifti at all" * 30)}, "not a readable NIfTI"),
    ({"a.nii.gz": nifti_bytes(np.zeros((2, 2, 2), np.uint8)), "a.json": b"[1, 2]"}, "not a mapping"),
    ({"a.nii.gz": nifti_bytes(np.zeros((2, 2, 2), np.uint8)), "a.json": b"{oops"}, "not JSON"),
    ({"a.nii.gz": nifti_bytes(np.zeros((2, 2, 2), np.uint8)), "a.json": b'{"one": "x"}'}, "no label value"),
])
def test_bad_outputs_name_the_problem(files, message):
    with pytest.raises(ValueError, match=message):
        labels.read_output(files)


def test_outlines_are_closed_per_region_and_coloured_per_label():
    mask = np.zeros((12, 16), np.uint16)  # [y, x]
    mask[2:5, 3:7] = 1
    mask[8:12, 0:4] = 1  # a second region of label 1, at the image border
    mask[6, 10] = 3  # one pixel
    rois = labels.contour_rois(mask, {1: "GTV t", 3: "node"})
    assert sorted(rois) == ["ROI_GTV_t", "ROI_GTV_t_1", "ROI_node"]
    outlines = {key: mrdhelper.parse_roi(value) for key, value in rois.items()}
    for x, y, rgb, thickness, _, visibility in outlines.values():
        assert (x[0], y[0]) == (x[-1], y[-1]) and thickness == 1 and visibility == 1
    assert outlines["ROI_GTV_t"][2] == labels.colour_of(1) != outlines["ROI_node"][2] == labels.colour_of(3)
    boxes = sorted((min(x), max(x), min(y), max(y)) for x, y, *_ in (outlines["ROI_GTV_t"], outlines["ROI_GTV_t_1"]))
    assert boxes == [(-0.5, 3.5, 7.5, 11.5), (2.5, 6.5, 1.5, 4.5)]  # half a pixel outside each region
    x, y, *_ = outlines["ROI_node"]
    assert (min(x), max(x), min(y), max(y)) == (9.5, 10.5, 5.5, 6.5)
    assert labels.contour_rois(np.zeros((4, 4), np.uint16), {}) == {}
