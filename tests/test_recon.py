"""Tests of modules/_recon.py: slice k-space assembly and RSS reconstruction against numpy references."""
import sys
import threading
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))
import _recon  # noqa: E402

from conftest import nrmse, rss  # noqa: E402


def centred_fft2(image):
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image, axes=axes), axes=axes), axes=axes)


def readouts_of(kspace, last_flag=True):
    """Acquisitions of a [cha, ky, kx] k-space, one per line, in a shuffled order."""
    ncha, ny, nx = kspace.shape
    acqs = []
    for line in np.random.default_rng(0).permutation(ny):
        acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(kspace[:, line, :], dtype=np.complex64))
        acq.idx.kspace_encode_step_1 = int(line)
        acqs.append(acq)
    if last_flag:
        acqs[-1].set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
    return acqs


@pytest.mark.parametrize("shape", [(3, 32, 48), (2, 31, 45), (2, 30, 45)])
def test_slice_kspace_rss_equals_centred_numpy_reference_for_even_and_odd_sizes(shape):
    rng = np.random.default_rng(1)
    coil_images = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    slice_kspace = _recon.SliceKspace("not a parsed header")
    for acq in readouts_of(centred_fft2(coil_images)):
        slice_kspace.add(acq)
    assert nrmse(slice_kspace.rss_image(), rss(coil_images)) < 1e-5


def test_grouper_skips_noise_and_closes_slices_at_last_in_slice():
    rng = np.random.default_rng(2)
    images = rng.standard_normal((2, 16, 16)) + 0j
    noise = ismrmrd.Acquisition.from_array(np.ones((2, 16), np.complex64), flags=1 << (ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1))
    grouper = _recon.SliceGrouper("raw xml")
    assert grouper.add(noise) is None
    finished = [grouper.add(a) for a in readouts_of(centred_fft2(images))]
    assert finished[:-1] == [None] * 15 and len(finished[-1]) == 16
    assert grouper.flush() is None
    assert nrmse(finished[-1].rss_image(), rss(images)) < 1e-5


def test_to_int16_scales_peak_to_bits_stored():
    out = _recon.to_int16(np.array([[0.0, 0.5], [1.0, 0.25]]), 4095)
    assert out.dtype == np.int16 and out.tolist() == [[0, 2048], [4095, 1024]]


def centred_ifft2(kspace):
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=axes), axes=axes), axes=axes)


@pytest.mark.parametrize("shape", [(3, 32, 48), (2, 31, 45)])
def test_ice_flip_is_the_image_of_kspace_flipped_in_phase_and_readout(shape):
    """python-ismrmrd-server's invertcontrast flips k-space with ``np.flip(data, (1, 2))`` before the
    FFT; for even sizes that image is the unflipped one reversed about the centre pixel."""
    rng = np.random.default_rng(3)
    coil_images = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    kspace = centred_fft2(coil_images)
    slice_kspace = _recon.SliceKspace("not a parsed header")
    for acq in readouts_of(kspace):
        slice_kspace.add(acq)
    flipped = slice_kspace.rss_image(ice_flip=True)
    assert nrmse(flipped, rss(centred_ifft2(np.flip(kspace, (1, 2))))) < 1e-5
    if shape[1] % 2 == 0 and shape[2] % 2 == 0:
        ny, nx = shape[1:]
        reversed_ = rss(coil_images)[(ny - np.arange(ny)) % ny][:, (nx - np.arange(nx)) % nx]
        assert nrmse(flipped, reversed_) < 1e-5


def parsed_header(encoded, recon, centre):
    """The parts of an ismrmrdHeader that _recon reads."""
    from types import SimpleNamespace as NS
    size = lambda x, y: NS(x=x, y=y, z=1)  # noqa: E731
    return NS(encoding=[NS(encodedSpace=NS(matrixSize=size(*encoded)), reconSpace=NS(matrixSize=size(*recon)),
                           encodingLimits=NS(kspace_encoding_step_1=NS(center=centre)))])


def test_short_readouts_sit_at_the_end_of_the_encoded_row_and_the_header_comes_from_the_centre_line():
    """An asymmetric echo (fewer samples than the encoded x) keeps its samples at the end of the row,
    the missing first ones zero, as upstream does; ``user[5]`` names the centre line."""
    rng = np.random.default_rng(4)
    kspace = centred_fft2(rng.standard_normal((2, 16, 32)) + 0j)
    kspace[:, :, :6] = 0  # the part an asymmetric echo does not measure
    slice_kspace = _recon.SliceKspace(parsed_header((32, 16), (32, 16), 8))
    readouts = readouts_of(kspace[:, :, 6:])
    for acq in readouts:
        acq.idx.user[5] = 8
        slice_kspace.add(acq)
    assert slice_kspace.kspace.shape == (2, 16, 32)
    assert nrmse(slice_kspace.rss_image(), rss(centred_ifft2(kspace))) < 1e-5
    assert slice_kspace.centre_line_readout().idx.kspace_encode_step_1 == 8
    first = slice_kspace.first_readout()  # header only: the samples live in kspace alone
    assert bytes(first.getHead()) == bytes(readouts[0].getHead()) and not first.data.any()
    assert len(slice_kspace) == 16
    with pytest.raises(ValueError, match="do not fit"):
        slice_kspace.add(ismrmrd.Acquisition.from_array(np.zeros((2, 40), np.complex64)))


def test_the_pool_takes_back_only_arrays_that_nothing_else_holds():
    pool = _recon.KspacePool()

    def one_slice():
        kspace = _recon.SliceKspace(None, pool)
        kspace.kspace = pool.take((2, 4, 8))[0]
        kspace.kspace[:] = 1
        return [kspace]

    def reconstructed(holder):  # the caller's one reference, as _images.serve's worker holds it
        done = holder.pop()
        return pool.recycle(done)

    assert reconstructed(one_slice()) and len(pool._free) == 1
    recycled = pool._free[0]
    assert pool.take((2, 4, 8)) == (recycled, True)  # not cleared: SliceKspace overwrites or zeroes rows
    fresh, reused = pool.take((2, 4, 8))
    assert fresh is not recycled and not reused and not fresh.any()  # taken once; a new one is zeroed
    holder = one_slice()
    kept_slice = holder[0]
    holder_view = one_slice()
    kept_view = holder_view[0].kspace[1]
    holder_array = one_slice()
    kept_array = holder_array[0].kspace
    assert not reconstructed(holder) and not reconstructed(holder_view) and not reconstructed(holder_array)
    assert kept_slice.kspace.all() and kept_view.all() and kept_array.all()  # left as they were
    assert pool._free == []
    assert pool.take((3, 4, 8))[0].shape == (3, 4, 8)  # another shape: a new array


def test_a_recycled_array_holds_nothing_of_the_slice_before():
    """Rows the new slice never gets are zeroed at the end of the slice, and a short readout's
    missing first samples are zeroed in a row it reaches first."""
    header = parsed_header((32, 8), (32, 8), 4)
    pool = _recon.KspacePool()
    grouper = _recon.SliceGrouper(header, pool)
    full = readouts_of(np.ones((2, 8, 32), np.complex64))
    for acq in full:
        done = grouper.add(acq)
    holder = [done]
    del done
    assert pool.recycle(holder.pop())
    second = [acq for acq in readouts_of(np.full((2, 8, 20), 2, np.complex64), last_flag=False)
              if acq.idx.kspace_encode_step_1 != 3]
    second[-1].set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
    for acq in second:  # short readouts (20 of 32 samples), line 3 missing
        done = grouper.add(acq)
    assert done is not None and done.kspace is not None
    rows = np.abs(done.kspace)
    assert not rows[:, 3].any() and not rows[:, :, :12].any() and (rows[:, [0, 1, 2, 4, 5, 6, 7], 12:] == 2).all()


def test_pooled_slices_share_one_work_array_per_thread_and_give_the_same_images():
    """rss_image crops each coil chunk into the pool's work array (reused from slice to slice on one
    thread, its own on another thread); the images equal those of slices without a pool, for coil
    counts that do and do not fill the last chunk."""
    pool = _recon.KspacePool()
    first = pool.scratch((4, 8, 16))
    assert pool.scratch((4, 8, 16)) is first
    assert pool.scratch((2, 8, 16)).shape == (2, 8, 16)  # another shape: a new one
    other = []
    thread = threading.Thread(target=lambda: other.append(pool.scratch((2, 8, 16))))
    thread.start()
    thread.join()
    assert other[0] is not pool.scratch((2, 8, 16))
    rng = np.random.default_rng(4)
    for coils in (6, 8, 3):
        coil_images = rng.standard_normal((coils, 32, 48)) + 1j * rng.standard_normal((coils, 32, 48))
        images = []
        for slice_pool in (None, pool, pool):
            slice_kspace = _recon.SliceKspace("not a parsed header", slice_pool)
            for acq in readouts_of(centred_fft2(coil_images)):
                slice_kspace.add(acq)
            images.append(slice_kspace.rss_image())
        assert np.array_equal(images[0], images[1]) and np.array_equal(images[0], images[2])
        assert nrmse(images[1], rss(coil_images)) < 1e-5
