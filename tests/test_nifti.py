"""Tests of ai/nifti.py, tools/mrd2nifti.py and tools/nifti2mrd.py (issue 15).

Geometry references come from pydicom reading DICOM files (ImagePositionPatient plus column and
row offsets from ImageOrientationPatient and PixelSpacing, LPS negated in x and y for RAS) or from
the numbers a synthetic series was built from, never from ai.nifti itself.

pydicom's MR700 series (dicomdirtests/98892003/MR700) is seven 16 x 16 slices of a radial set:
each has its own in-plane orientation (read directions from (1, 0, 0) to (-0.14, 0.99, 0)), so
they are not one stack; they are checked one slice at a time, and the stack test uses copies of
its most oblique file (4467) moved along their normal by 1.5 mm steps.
"""
import gzip
import json
import logging
import subprocess
import sys
from pathlib import Path

import h5py
import ismrmrd
import nibabel
import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.uid import generate_uid
from pydicom.valuerep import DSfloat
from scipy.spatial.transform import Rotation

import mrdfile
from ai import nifti
from conftest import REPO
from tools import dicom2mrd, mrd2nifti, nifti2mrd

MR700 = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892003" / "MR700"
OBLIQUE_FILE = "4467"  # read direction (0.654, 0.7565, 0.0038): the most oblique of the seven
RAS = np.array([-1.0, -1.0, 1.0])
MM = 0.01  # geometry tolerance against DICOM, mm


# --- helpers ------------------------------------------------------------------------------------

def dicom_ras(ds: pydicom.Dataset, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """RAS centres (…, 3) of columns i and rows j of a DICOM image, from its own header."""
    ipp = np.array(ds.ImagePositionPatient, dtype=float)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    lps = (ipp + np.multiply.outer(i * col_spacing, iop[:3]) + np.multiply.outer(j * row_spacing, iop[3:]))
    return lps * RAS


def voxel_world(affine: np.ndarray, i: np.ndarray, j: np.ndarray, k: np.ndarray | int) -> np.ndarray:
    """World coordinates (…, 3) of voxel centres through a 4x4 affine."""
    ijk = np.stack(np.broadcast_arrays(i, j, k), axis=-1).astype(float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def grid(nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (column, row) index of an nx x ny image, as two (nx, ny) arrays."""
    return np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")


def corners_and_centre(nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    return np.array([0, nx - 1, 0, nx - 1, (nx - 1) / 2]), np.array([0, 0, ny - 1, ny - 1, (ny - 1) / 2])


def to_mrd(folder: Path, h5: Path) -> Path:
    assert dicom2mrd.main([str(folder), "-o", str(h5)]) == 0
    return h5


def read_all(h5: Path, group: str = "dataset") -> list[mrdfile.ImageSeries]:
    with h5py.File(h5, "r") as f:
        return [mrdfile.read_image_series(f[group], n) for n in mrdfile.image_series_names(f[group])]


def mrd_images(series: mrdfile.ImageSeries) -> list[ismrmrd.Image]:
    return [ismrmrd.Image(series.heads[i].tobytes(), data=series.data[i]) for i in range(len(series.heads))]


def make_image(pixels: np.ndarray, position, read, phase, slice_dir, fov, index: int = 1,
               series: int = 0) -> ismrmrd.Image:
    """An MRD image of ``pixels`` [y, x] (or [cha, z, y, x]) with the given geometry."""
    data = pixels if pixels.ndim == 4 else pixels[None, None]
    head = ismrmrd.ImageHeader()
    head.version = 1
    head.image_type = ismrmrd.IMTYPE_MAGNITUDE
    head.position[:], head.read_dir[:], head.phase_dir[:] = position, read, phase
    head.slice_dir[:], head.field_of_view[:] = slice_dir, fov
    head.image_index, head.image_series_index = index, series
    return ismrmrd.Image(head, data=np.ascontiguousarray(data))


ROTATION = Rotation.from_euler("zyx", [25, -35, 50], degrees=True).as_matrix()
NX, NY, NZ, DX, DY, GAP, THICK = 24, 20, 5, 0.8, 1.3, 2.5, 2.0
CENTRE0 = np.array([12.5, -40.25, 71.0])


def oblique_series(shuffle=(3, 0, 4, 1, 2), seed: int = 7, series: int = 0, slice_sign: float = 1.0
                   ) -> tuple[list[ismrmrd.Image], np.ndarray]:
    """Five 24 x 20 int16 slices, rotated, 0.8 x 1.3 mm pixels, 2.5 mm apart along slice_dir, given in
    the order ``shuffle`` (the slice number of each image); returns the images and the pixels [k, y, x]."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(-2000, 3000, size=(NZ, NY, NX), dtype=np.int16)
    read, phase = ROTATION[:, 0], ROTATION[:, 1]
    normal = slice_sign * ROTATION[:, 2]
    images = [make_image(pixels[k], CENTRE0 + k * GAP * normal, read, phase, normal, (NX * DX, NY * DY, THICK),
                         index=k + 1, series=series) for k in shuffle]
    return images, pixels


def expected_affine(slice_sign: float = 1.0) -> np.ndarray:
    """RAS affine of :func:`oblique_series`, from its construction."""
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = ROTATION[:, 0] * DX, ROTATION[:, 1] * DY, slice_sign * ROTATION[:, 2] * GAP
    lps[:3, 3] = CENTRE0 - ROTATION[:, 0] * DX * (NX - 1) / 2 - ROTATION[:, 1] * DY * (NY - 1) / 2
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def write_images(h5: Path, images: list[ismrmrd.Image]) -> Path:
    with h5py.File(h5, "w") as f:
        group = f.create_group("dataset")
        batch = mrdfile.ItemBatch()
        for image in images:
            batch.add(image)
        batch.write_to(group)
    return h5


# --- 1. geometry against DICOM --------------------------------------------------------------------

def test_mr700_is_not_one_stack_and_each_slice_maps_every_voxel_to_its_dicom_position(tmp_path):
    refs = {int(ds.InstanceNumber): ds for ds in (pydicom.dcmread(p) for p in MR700.iterdir())}
    (series,) = read_all(to_mrd(MR700, tmp_path / "mr700.h5"))
    images = mrd_images(series)
    with pytest.raises(ValueError, match="read directions are not parallel"):
        nifti.series_volume(images)
    i, j = grid(16, 16)
    for image in images:
        ds = refs[image.getHead().image_index]
        volume = nifti.series_volume([image])
        assert volume.data.shape == (16, 16, 1) and volume.order == [0]
        np.testing.assert_array_equal(volume.data[:, :, 0], ds.pixel_array.T)
        np.testing.assert_allclose(voxel_world(volume.affine, i, j, 0), dicom_ras(ds, i, j), atol=MM, rtol=0)
        np.testing.assert_allclose(volume.spacing, [0.390625, 0.390625, 1.2], rtol=1e-6)


def test_mr700_single_oblique_file_through_mrd2nifti(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    ds = pydicom.dcmread(MR700 / OBLIQUE_FILE)
    ds.save_as(folder / "slice.dcm")
    h5 = to_mrd(folder, tmp_path / "one.h5")
    assert mrd2nifti.main([str(h5), "-o", str(tmp_path / "nii")]) == 0
    img = nibabel.load(tmp_path / "nii" / "dataset_image_0.nii.gz")
    assert img.shape == (16, 16, 1) and img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(img.dataobj)[:, :, 0], ds.pixel_array.T)
    i, j = grid(16, 16)
    np.testing.assert_allclose(voxel_world(img.affine, i, j, 0), dicom_ras(ds, i, j), atol=MM, rtol=0)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.header.get_qform(), img.affine, atol=1e-4)


def oblique_dicom_stack(folder: Path, offsets_mm: list[float], numbers: list[int]) -> list[pydicom.Dataset]:
    """Copies of MR700/4467 moved ``offsets_mm`` along their normal, with InstanceNumbers ``numbers``
    and pixels + 100 * copy number, written to ``folder`` and read back."""
    folder.mkdir()
    for n, (offset, number) in enumerate(zip(offsets_mm, numbers)):
        ds = pydicom.dcmread(MR700 / OBLIQUE_FILE)
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        normal /= np.linalg.norm(normal)
        ipp = np.array(ds.ImagePositionPatient, dtype=float) + offset * normal
        ds.ImagePositionPatient = [DSfloat(v, auto_format=True) for v in ipp]
        ds.InstanceNumber = number
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PixelData = (ds.pixel_array + 100 * n).astype(np.int16).tobytes()
        ds.save_as(folder / f"copy{n}.dcm")
    return [pydicom.dcmread(folder / f"copy{n}.dcm") for n in range(len(offsets_mm))]


def test_oblique_dicom_stack_lands_in_normal_order_and_maps_every_voxel(tmp_path):
    offsets = [3.0, -1.5, 4.5, 0.0, 1.5]  # slice k of each file: 3, 0, 4, 1, 2
    refs = oblique_dicom_stack(tmp_path / "stack", offsets, numbers=[1, 2, 3, 4, 5])
    expected_k = [3, 0, 4, 1, 2]
    h5 = to_mrd(tmp_path / "stack", tmp_path / "stack.h5")
    (series,) = read_all(h5)
    volume = nifti.series_volume(mrd_images(series))
    assert volume.data.shape == (16, 16, 5) and volume.data.dtype == np.int16
    assert [int(h.image_index) for h in volume.heads] == [2, 4, 5, 1, 3]  # InstanceNumber of slice k
    np.testing.assert_allclose(volume.spacing, [0.390625, 0.390625, 1.5], rtol=1e-5)
    assert assert_stack_matches(volume.affine, volume.data, refs, expected_k)
    assert mrd2nifti.main([str(h5), "-o", str(tmp_path / "nii"), "--json"]) == 0
    img = nibabel.load(tmp_path / "nii" / "dataset_image_0.nii.gz")
    assert assert_stack_matches(img.affine, np.asanyarray(img.dataobj), refs, expected_k)
    meta = json.loads((tmp_path / "nii" / "dataset_image_0.json").read_text())
    np.testing.assert_allclose(meta["spacing"], [0.390625, 0.390625, 1.5], rtol=1e-5)
    np.testing.assert_allclose(meta["origin"], dicom_ras(refs[1], 0, 0), atol=MM)  # file of slice 0
    direction = np.array(meta["direction"]).reshape(3, 3)
    iop = np.array(refs[0].ImageOrientationPatient, dtype=float)
    np.testing.assert_allclose(direction[:, 0], iop[:3] * RAS, atol=1e-4)
    np.testing.assert_allclose(direction[:, 1], iop[3:] * RAS, atol=1e-4)
    assert meta["scaling_factor"] == 1.0


def assert_stack_matches(affine: np.ndarray, data: np.ndarray, refs: list[pydicom.Dataset],
                         expected_k: list[int]) -> bool:
    """Every voxel centre (and explicitly the corners and centre) of each slice k at its DICOM position,
    and the file's pixels in slice k."""
    i, j = grid(16, 16)
    ci, cj = corners_and_centre(16, 16)
    for ds, k in zip(refs, expected_k):
        np.testing.assert_array_equal(data[:, :, k], ds.pixel_array.T)
        np.testing.assert_allclose(voxel_world(affine, ci, cj, k), dicom_ras(ds, ci, cj), atol=MM, rtol=0)
        np.testing.assert_allclose(voxel_world(affine, i, j, k), dicom_ras(ds, i, j), atol=MM, rtol=0)
    return True


# --- 2. round trips -------------------------------------------------------------------------------

def test_synthetic_oblique_series_round_trips_through_a_nifti_file(tmp_path):
    images, pixels = oblique_series(series=2)
    volume = nifti.series_volume(images)
    assert volume.order == [1, 3, 4, 0, 2] and volume.series == 2
    np.testing.assert_allclose(volume.affine, expected_affine(), atol=1e-5)
    img = nifti.to_nifti(volume)
    nibabel.save(img, tmp_path / "vol.nii.gz")
    loaded = nibabel.load(tmp_path / "vol.nii.gz")
    assert loaded.get_data_dtype() == np.int16
    back = nifti.nifti_to_images(loaded, series_index=3)
    assert len(back) == NZ
    for k, image in enumerate(back):
        head = image.getHead()
        assert image.data.shape == (1, 1, NY, NX) and image.data.dtype == np.int16
        np.testing.assert_array_equal(image.data[0, 0], pixels[k])
        assert (head.data_type, head.image_type, head.slice, head.image_index, head.image_series_index) == (
            ismrmrd.DATATYPE_SHORT, ismrmrd.IMTYPE_MAGNITUDE, k, k + 1, 3)
        assert tuple(head.matrix_size) == (NX, NY, 1)
        np.testing.assert_allclose(head.position, CENTRE0 + k * GAP * ROTATION[:, 2], atol=1e-4)
        np.testing.assert_allclose(head.read_dir, ROTATION[:, 0], atol=1e-4)
        np.testing.assert_allclose(head.phase_dir, ROTATION[:, 1], atol=1e-4)
        np.testing.assert_allclose(head.slice_dir, ROTATION[:, 2], atol=1e-4)
        np.testing.assert_allclose(head.field_of_view, (NX * DX, NY * DY, GAP), atol=1e-4)


def test_round_trip_through_mrd2nifti_and_nifti2mrd(tmp_path):
    images, pixels = oblique_series()
    h5 = write_images(tmp_path / "in.h5", images)
    assert mrd2nifti.main([str(h5), "-o", str(tmp_path / "nii")]) == 0
    nii = tmp_path / "nii" / "dataset_image_0.nii.gz"
    out = tmp_path / "out.h5"
    assert nifti2mrd.main([str(nii), str(nii), "-o", str(out), "--series", "4"]) == 0
    with h5py.File(out, "r") as f:
        mrdfile.check_input_group(f["dataset"])
        header = ismrmrd.xsd.CreateFromDocument(mrdfile.read_xml(f["dataset"]))
        assert mrdfile.image_series_names(f["dataset"]) == ["image_4", "image_5"]
    assert header.encoding[0].encodedSpace.matrixSize.x == NX and header.encoding[0].encodingLimits.slice.maximum == 4
    for series in read_all(out):
        np.testing.assert_array_equal(series.data[:, 0, 0], pixels)
        assert series.data.dtype == np.int16
        heads = series.heads
        k = np.arange(NZ)
        np.testing.assert_allclose(heads["position"], CENTRE0 + np.outer(k * GAP, ROTATION[:, 2]), atol=1e-4)
        np.testing.assert_allclose(heads["read_dir"], np.tile(ROTATION[:, 0], (NZ, 1)), atol=1e-4)
        np.testing.assert_allclose(heads["phase_dir"], np.tile(ROTATION[:, 1], (NZ, 1)), atol=1e-4)
        np.testing.assert_allclose(heads["slice_dir"], np.tile(ROTATION[:, 2], (NZ, 1)), atol=1e-4)
        np.testing.assert_allclose(heads["field_of_view"], np.tile((NX * DX, NY * DY, GAP), (NZ, 1)), atol=1e-4)
        assert list(heads["slice"]) == list(k) and list(heads["image_index"]) == list(k + 1)


def test_left_handed_slice_dir_and_zero_slice_dir():
    images, pixels = oblique_series(slice_sign=-1.0)
    volume = nifti.series_volume(images)
    np.testing.assert_allclose(volume.affine, expected_affine(-1.0), atol=1e-5)
    assert np.linalg.det(volume.affine) < 0
    np.testing.assert_array_equal(volume.data, pixels.transpose(2, 1, 0))
    back = nifti.nifti_to_images(nifti.to_nifti(volume))
    np.testing.assert_allclose(back[0].getHead().slice_dir, -ROTATION[:, 2], atol=1e-5)
    images, _ = oblique_series()
    for image in images:
        head = image.getHead()
        head.slice_dir[:] = (0, 0, 0)
        image.setHead(head)
    np.testing.assert_allclose(nifti.series_volume(images).affine, expected_affine(), atol=1e-5)


def test_single_3d_image_and_its_label_image():
    rng = np.random.default_rng(3)
    nz, dz = 6, 1.75
    data = rng.random((1, nz, NY, NX)).astype(np.float32) + 1j
    image = make_image(data.astype(np.complex64), CENTRE0, ROTATION[:, 0], ROTATION[:, 1], ROTATION[:, 2],
                       (NX * DX, NY * DY, nz * dz))
    volume = nifti.series_volume([image])
    assert volume.data.dtype == np.float32 and volume.data.shape == (NX, NY, nz)
    np.testing.assert_allclose(volume.data, np.abs(data[0]).transpose(2, 1, 0), rtol=1e-6)
    ci, cj = corners_and_centre(NX, NY)
    for k in (0, nz - 1):
        lps = (CENTRE0 + np.multiply.outer((ci - (NX - 1) / 2) * DX, ROTATION[:, 0])
               + np.multiply.outer((cj - (NY - 1) / 2) * DY, ROTATION[:, 1]) + (k - (nz - 1) / 2) * dz * ROTATION[:, 2])
        np.testing.assert_allclose(voxel_world(volume.affine, ci, cj, k), lps * RAS, atol=1e-4)
    labels = rng.integers(0, 4, size=volume.data.shape)
    (out,) = nifti.volume_images(volume, labels, series_index=9)
    assert out.data.shape == (1, nz, NY, NX) and out.data.dtype == np.uint16
    np.testing.assert_array_equal(out.data[0], labels.transpose(2, 1, 0))
    assert tuple(out.getHead().matrix_size) == (NX, NY, nz) and out.getHead().image_series_index == 9


def test_nifti_to_images_4d_types_and_dimensions():
    affine = np.diag([-0.5, -0.5, 2.0, 1.0])
    data = np.arange(4 * 3 * 2 * 2, dtype=np.uint8).reshape(4, 3, 2, 2)
    images = nifti.nifti_to_images(nibabel.Nifti1Image(data, affine))
    assert [(im.getHead().slice, im.getHead().repetition, im.getHead().image_index) for im in images] == [
        (0, 0, 1), (1, 0, 2), (0, 1, 3), (1, 1, 4)]
    assert images[3].data.dtype == np.uint16 and images[3].getHead().data_type == ismrmrd.DATATYPE_USHORT
    np.testing.assert_array_equal(images[3].data[0, 0], data[:, :, 1, 1].T)
    np.testing.assert_allclose(images[0].getHead().read_dir, (1, 0, 0))  # RAS -x is LPS +x
    np.testing.assert_allclose(images[0].getHead().position, (0.75, 0.5, 0.0))
    floats = nifti.nifti_to_images(nibabel.Nifti1Image(np.full((2, 2, 1), 2.6, np.float32), affine), dtype=np.int16)
    assert floats[0].data.dtype == np.int16 and np.all(floats[0].data == 3)
    with pytest.raises(ValueError, match="5-D"):
        nifti.nifti_to_images(nibabel.Nifti1Image(np.zeros((2, 2, 2, 2, 2), np.int16), affine))


# --- 3. labels ------------------------------------------------------------------------------------

def test_resample_labels_identity_half_resolution_and_reoriented():
    images, _ = oblique_series()
    volume = nifti.series_volume(images)
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 5, size=(NX, NY, NZ)).astype(np.uint8)
    same = nifti.resample_labels(nibabel.Nifti1Image(labels, volume.affine), volume)
    assert same.dtype == np.uint16 and same.shape == (NX, NY, NZ)
    np.testing.assert_array_equal(same, labels)
    # the same labels with axes flipped and permuted to the closest RAS orientation: a new affine
    canonical = nibabel.as_closest_canonical(nibabel.Nifti1Image(labels, volume.affine))
    assert not np.allclose(canonical.affine, volume.affine)
    np.testing.assert_array_equal(nifti.resample_labels(canonical, volume), labels)
    # half resolution in i and j: label voxel (a, b, c) covers image voxels 2a, 2a+1 / 2b, 2b+1 / c;
    # only 6 label columns, so image columns 12..23 lie outside the label map
    coarse = rng.integers(1, 9, size=(6, NY // 2, NZ)).astype(np.int16)
    scale = np.array([[2, 0, 0, 0.5], [0, 2, 0, 0.5], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    out = nifti.resample_labels(nibabel.Nifti1Image(coarse, volume.affine @ scale), volume)
    expected = np.zeros((NX, NY, NZ), dtype=np.uint16)
    expected[:12] = coarse.repeat(2, axis=0).repeat(2, axis=1)
    np.testing.assert_array_equal(out, expected)


def test_resample_labels_errors_and_accepted_types():
    images, _ = oblique_series()
    volume = nifti.series_volume(images)
    affine = volume.affine
    with pytest.raises(ValueError, match=r"^shape mismatch: labels 24x20x4, image 24x20x5$"):
        nifti.resample_labels(nibabel.Nifti1Image(np.zeros((NX, NY, 4), np.uint8), affine), volume)
    fractional = np.zeros((NX, NY, NZ), np.float32)
    fractional[3, 4, 2] = 1.5
    with pytest.raises(ValueError, match="labels are not integer"):
        nifti.resample_labels(nibabel.Nifti1Image(fractional, affine), volume)
    integral = np.zeros((NX, NY, NZ), np.float32)
    integral[3, 4, 2], integral[0, 0, 0] = 7.0, 65535.0
    out = nifti.resample_labels(nibabel.Nifti1Image(integral, affine), volume)
    assert out.dtype == np.uint16 and out[3, 4, 2] == 7 and out[0, 0, 0] == 65535 and out.sum() == 65542
    for bad in (-1, 70000):
        values = np.zeros((NX, NY, NZ), np.int32)
        values[1, 1, 1] = bad
        with pytest.raises(ValueError, match="outside 0..65535"):
            nifti.resample_labels(nibabel.Nifti1Image(values, affine), volume)
    with pytest.raises(ValueError, match="3-D expected"):
        nifti.resample_labels(nibabel.Nifti1Image(np.zeros((NX, NY, NZ, 2), np.uint8), affine), volume)
    with pytest.raises(ValueError, match="one-slice"):
        nifti.resample_labels(nibabel.Nifti1Image(np.zeros((NX, NY), np.uint8), affine), volume)
    one = nifti.series_volume(images[:1])
    flat = np.arange(NX * NY, dtype=np.uint16).reshape(NX, NY)
    np.testing.assert_array_equal(nifti.resample_labels(nibabel.Nifti1Image(flat, one.affine), one)[:, :, 0], flat)


def test_volume_images_carry_the_slice_headers():
    images, _ = oblique_series(series=1)
    volume = nifti.series_volume(images)
    labels = np.random.default_rng(5).integers(0, 3, size=volume.data.shape)
    out = nifti.volume_images(volume, labels, series_index=7)
    assert len(out) == NZ
    for k, image in enumerate(out):
        head, source = image.getHead(), images[volume.order[k]].getHead()
        assert (head.data_type, head.image_type, head.image_series_index) == (
            ismrmrd.DATATYPE_USHORT, ismrmrd.IMTYPE_MAGNITUDE, 7)
        assert head.image_index == source.image_index == k + 1
        for name in ("position", "read_dir", "phase_dir", "slice_dir", "field_of_view", "matrix_size"):
            assert tuple(getattr(head, name)) == tuple(getattr(source, name)), name
        np.testing.assert_array_equal(image.data[0, 0], labels[:, :, k].T)
    with pytest.raises(ValueError, match="shape mismatch"):
        nifti.volume_images(volume, labels[:, :, :2], 7)


# --- 4. what is not one volume ------------------------------------------------------------------

def test_series_volume_errors():
    images, _ = oblique_series()
    small = make_image(np.zeros((NY, NX - 1), np.int16), CENTRE0, ROTATION[:, 0], ROTATION[:, 1], ROTATION[:, 2],
                       ((NX - 1) * DX, NY * DY, THICK))
    with pytest.raises(ValueError, match="different matrix sizes: image 0 is 24x20x1, image 5 is 23x20x1"):
        nifti.series_volume(images + [small])
    with pytest.raises(ValueError, match="same slice position"):
        nifti.series_volume(images + [images[2]])
    uneven = oblique_series(shuffle=(0, 1, 2, 4))[0]  # gaps 2.5, 2.5, 5.0
    with pytest.raises(ValueError, match="unequal slice gaps"):
        nifti.series_volume(uneven)
    slightly = oblique_series()[0]
    head = slightly[4].getHead()  # slice 2
    head.position[:] = np.array(head.position) + 0.03 * ROTATION[:, 2]  # gaps 2.53 and 2.47: 1.2 %
    slightly[4].setHead(head)
    with pytest.raises(ValueError, match="unequal slice gaps"):
        nifti.series_volume(slightly)
    head.position[:] = np.array(head.position) - 0.0298 * ROTATION[:, 2]  # 0.2 um off: float32 noise, accepted
    slightly[4].setHead(head)
    np.testing.assert_allclose(nifti.series_volume(slightly).spacing, [DX, DY, GAP], rtol=1e-5)
    tilted = oblique_series()[0]
    head = tilted[0].getHead()
    head.read_dir[:] = Rotation.from_rotvec(0.01 * ROTATION[:, 2]).apply(ROTATION[:, 0])
    tilted[0].setHead(head)
    with pytest.raises(ValueError, match="read directions are not parallel"):
        nifti.series_volume(tilted)
    shifted = oblique_series()[0]
    head = shifted[0].getHead()
    head.position[:] = np.array(head.position) + 0.5 * ROTATION[:, 0]
    shifted[0].setHead(head)
    with pytest.raises(ValueError, match="shifted within their plane"):
        nifti.series_volume(shifted)
    two = make_image(np.zeros((2, 1, NY, NX), np.float32), CENTRE0, ROTATION[:, 0], ROTATION[:, 1],
                     ROTATION[:, 2], (NX * DX, NY * DY, THICK))
    with pytest.raises(ValueError, match="2 channels"):
        nifti.series_volume([two])
    with pytest.raises(ValueError, match="no images"):
        nifti.series_volume([])
    with pytest.raises(ValueError, match="several series"):
        nifti.series_volume(oblique_series(series=0)[0][:2] + oblique_series(shuffle=(2, 3), series=1)[0])


def test_shuffled_images_come_out_sorted():
    images, pixels = oblique_series(shuffle=(4, 2, 0, 3, 1))
    volume = nifti.series_volume(images)
    assert volume.order == [2, 4, 1, 3, 0]
    assert [int(h.image_index) for h in volume.heads] == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(volume.data, pixels.transpose(2, 1, 0))
    ordered = nifti.series_volume(oblique_series(shuffle=(0, 1, 2, 3, 4))[0])
    np.testing.assert_array_equal(ordered.affine, volume.affine)


# --- 5. no patient data ---------------------------------------------------------------------------

def test_nifti_header_has_no_patient_data(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    ds = pydicom.dcmread(MR700 / OBLIQUE_FILE)
    assert str(ds.PatientName) == "Doe^Peter" and ds.PatientID == "98890234"
    ds.save_as(folder / "slice.dcm")
    h5 = to_mrd(folder, tmp_path / "one.h5")
    with h5py.File(h5, "r") as f:  # the MRD file does carry the patient (XML header, DicomJson)
        assert b"Doe^Peter" in f["dataset"]["xml"][0]
    assert mrd2nifti.main([str(h5), "-o", str(tmp_path / "nii"), "--json"]) == 0
    path = tmp_path / "nii" / "dataset_image_0.nii.gz"
    header = nibabel.load(path).header
    for name in ("descrip", "aux_file", "intent_name", "db_name"):
        assert header[name].item() == b"", name
    raw = gzip.decompress(path.read_bytes()) + (tmp_path / "nii" / "dataset_image_0.json").read_bytes()
    for text in (b"Doe", b"Peter", b"98890234", b"ANGIO"):
        assert text not in raw
    header = nifti.to_nifti(nifti.series_volume(oblique_series()[0])).header
    assert all(header[name].item() == b"" for name in ("descrip", "aux_file", "intent_name", "db_name"))
    assert header.get_xyzt_units()[0] == "mm"


# --- tools: errors ----------------------------------------------------------------------------------

def test_tools_exit_2_with_one_error_line(tmp_path, caplog):
    h5 = to_mrd(MR700, tmp_path / "mr700.h5")
    command = [sys.executable, str(REPO / "tools" / "mrd2nifti.py"), str(h5), "-o", str(tmp_path / "nii")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert errors == [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "dataset/image_0 is not one volume: read directions are not parallel" in errors[0]
    assert not list((tmp_path / "nii").glob("*.nii.gz"))
    (tmp_path / "junk.nii").write_bytes(b"not a nifti file")
    with caplog.at_level(logging.ERROR):
        assert mrd2nifti.main([str(tmp_path / "missing.h5")]) == 2
        assert nifti2mrd.main([str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "o.h5")]) == 2
        assert nifti2mrd.main([str(tmp_path / "junk.nii"), "-o", str(tmp_path / "o.h5")]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3 and all("no such file" in e for e in errors[:2]) and "junk.nii" in errors[2], errors
    assert not (tmp_path / "o.h5").exists()
