"""The GPU gridding tables' construction (``_gpu_gridding.grid_major_tables``), run with NumPy here
and with CuPy where a GPU is found: per-arm grid-major CSR against scipy.sparse, and the split of
the grid rows into light and dense ones."""
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from conftest import compute_devices

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))
import _gpu_gridding  # noqa: E402
import _gridding  # noqa: E402
from _gpu_gridding import DENSE_ROW, grid_major_tables  # noqa: E402

ARMS, NS, PRE, M = 6, 80, 3, 16
GRID = int(np.ceil(_gridding.OVERSAMPLING * M))
GRID_POINTS = GRID * GRID
SAMPLES = PRE + NS


def entries():
    """``arm, rows, cols, weights`` of a random trajectory that crowds the k-space centre (so that
    some grid rows are dense), with the dtypes ``GpuArmTables`` copies to the device."""
    rng = np.random.default_rng(3)
    coord = np.clip(rng.normal(scale=M / 10, size=(ARMS, NS, 2)), -M / 2, M / 2)
    scaled = coord * (GRID / M) + GRID // 2
    rows, cols, weights = _gridding._sparse_weights(scaled.reshape(-1, 2), (GRID, GRID))
    arm, sample = np.divmod(cols, NS)
    return arm.astype(np.int32), rows.astype(np.int32), (PRE + sample).astype(np.int32), weights.astype(np.float32)


def test_grid_major_tables_hold_each_arms_matrix_and_split_dense_rows():
    arm, rows, cols, weights = entries()
    rowptr, got_cols, got_weights, order, light = grid_major_tables(
        np, arm, rows, cols, weights, ARMS, GRID_POINTS, DENSE_ROW)
    assert rowptr.dtype == got_cols.dtype == order.dtype == np.int32 and got_weights.dtype == np.float32
    assert rowptr.shape == (ARMS * GRID_POINTS + 1,) and rowptr[0] == 0 and rowptr[-1] == len(weights)
    assert (np.diff(rowptr) >= 0).all()
    for j in range(ARMS):
        mine = arm == j
        reference = scipy.sparse.csr_matrix((weights[mine], (rows[mine], cols[mine])), shape=(GRID_POINTS, SAMPLES))
        assert reference.nnz == mine.sum()  # no (row, col) twice, so the entries compare as sets per row
        ptr = rowptr[j * GRID_POINTS:(j + 1) * GRID_POINTS + 1]
        ours = scipy.sparse.csr_matrix((got_weights[ptr[0]:ptr[-1]], got_cols[ptr[0]:ptr[-1]], ptr - ptr[0]),
                                       shape=(GRID_POINTS, SAMPLES))
        ours.sort_indices()
        reference.sort_indices()
        np.testing.assert_array_equal(ours.indptr, reference.indptr)
        np.testing.assert_array_equal(ours.indices, reference.indices)
        np.testing.assert_array_equal(ours.data, reference.data)
        np.testing.assert_allclose(ours.sum(axis=1), reference.sum(axis=1), rtol=1e-6)
    # within a row, the entries keep the order they were given in (a stable sort of arm and row)
    stable = np.argsort(arm.astype(np.int64) * GRID_POINTS + rows, kind="stable")
    np.testing.assert_array_equal(got_cols, cols[stable])
    np.testing.assert_array_equal(got_weights, weights[stable])

    dense = np.bincount(rows, minlength=GRID_POINTS) > DENSE_ROW * ARMS
    assert 0 < light < GRID_POINTS and light == (~dense).sum()
    np.testing.assert_array_equal(order[:light], np.flatnonzero(~dense))
    np.testing.assert_array_equal(order[light:], np.flatnonzero(dense))


def test_grid_major_tables_refuse_keys_that_do_not_fit_64_bits():
    small = np.zeros(4, dtype=np.int32)
    with pytest.raises(ValueError, match="too large for the GPU tables"):
        grid_major_tables(np, small, small, small, small.astype(np.float32), 2, 2 ** 61, DENSE_ROW)


@pytest.mark.skipif(len(compute_devices()) < 2, reason="needs a CUDA GPU with CuPy (runs on the device machine)")
def test_gpu_arm_tables_equal_the_numpy_construction():
    arm, rows, cols, weights = entries()
    expected = grid_major_tables(np, arm, rows, cols, weights, ARMS, GRID_POINTS, DENSE_ROW)
    tables = _gpu_gridding.GpuArmTables(arm, rows, cols, weights, ARMS, GRID_POINTS, SAMPLES)
    got = (tables.rowptr, tables.cols, tables.weights, tables.order)
    for ours, theirs in zip(got, expected[:4]):
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours.get(), theirs)
    assert tables.light == expected[4]


@pytest.mark.skipif(len(compute_devices()) < 2, reason="needs a CUDA GPU with CuPy (runs on the device machine)")
def test_gpu_warm_up_compiles_the_kernels_and_starts_cufft():
    _gpu_gridding.warm_up()
    assert _gpu_gridding._module.cache_info().currsize >= 1
