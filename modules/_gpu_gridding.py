"""CUDA kernels for sliding-window gridding on the GPU, and the tables they read (never dispatched: leading ``_``).

:class:`GpuArmTables` holds the tables and the kernels; ``_gridding.GpuTables`` derives from it
and is what :class:`_gridding.ArmGridder` uses when its backend is CuPy, with the interface of
``_gridding.CpuArmTables`` (``grid``, ``image``, ``rss``): ``grid`` is the gather kernel below,
``image`` and ``rss`` are built on :meth:`GpuArmTables.ifft2` (cuFFT in place) and
:meth:`GpuArmTables.crop_rss` (one kernel).  The gridding matrix of every trajectory arm is kept
grid-major (one CSR per arm: for each oversampled grid point the samples of that arm that touch
it, and their weights), so that a window of any arms, in any order and with repeats, is gridded
by *one* gather kernel without atomics:

    out[c, g] = sum_k add_k[c, g] + sum_j sum_{e in row g of arm j} w_e * data_j[c, col_e]

The arms' samples are read where they were received (a table of device pointers), and the
stored block grids of the window are added in the same pass.  The CSR is built from the entries
on the device (:func:`grid_major_tables`, which runs with NumPy as well, for the tests), not
sorted on the host and then copied.  ``crop_rss`` takes the unnormalised inverse FFT of a grid
sum to the root-sum-of-squares image: crop, coil sum of ``|x|^2``, square root and apodization
in one kernel.  cuSPARSE and CuPy's element-wise kernels
did the same work in more launches; at these sizes the launches, not the arithmetic, set the
frame time, hence the hand-written kernels.
"""
from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, Sequence

import numpy as np

THREADS = 256
COIL_CHUNK = 4  # coils per thread: more threads in flight than with all coils per thread (H100: 4 < 8 < 20)
DENSE_ROW = 1.0  # a grid row is dense (a warp, not a thread, gathers it) above this many samples per arm

_SOURCE = r"""
// Accumulates CHUNK coils (from c0, nc valid) of the samples of grid row g, entries e0, e0+step, ... of each arm.
__device__ __forceinline__ void gather_row(const int* __restrict__ rowptr, const int* __restrict__ cols,
                                           const float* __restrict__ weights, const long long* __restrict__ table,
                                           const int n_arms, const int g2, const int samples, const int g,
                                           const int c0, const int nc, const int e0, const int step, float2* acc)
{
    for (int j = 0; j < n_arms; ++j) {
        const int* row = rowptr + table[j] * (long long)g2 + g;
        const float2* data = reinterpret_cast<const float2*>(table[n_arms + j]) + (size_t)c0 * samples;
        const int end = row[1];
        for (int e = row[0] + e0; e < end; e += step) {
            const float w = weights[e];
            const float2* d = data + cols[e];
#pragma unroll
            for (int c = 0; c < CHUNK; ++c) {
                if (c < nc) {
                    const float2 v = d[(size_t)c * samples];
                    acc[c].x += w * v.x;
                    acc[c].y += w * v.y;
                }
            }
        }
    }
}

// Rows order[0 .. n_light) get a thread each; the dense rows order[n_light ..) (the k-space centre, where
// every arm has many samples) get a warp each, so that no thread walks a long row alone.
extern "C" __global__ void grid_arms(const int* __restrict__ rowptr, const int* __restrict__ cols,
                                     const float* __restrict__ weights, const long long* __restrict__ table,
                                     const int n_arms, const int n_add, const int g2, const int samples,
                                     const int coils, const int* __restrict__ order, const int n_light,
                                     const int n_heavy, float2* __restrict__ out)
{
    const int light_blocks = (n_light + blockDim.x - 1) / blockDim.x;
    const int c0 = blockIdx.y * CHUNK;
    const int nc = min(CHUNK, coils - c0);
    float2 acc[CHUNK];
#pragma unroll
    for (int c = 0; c < CHUNK; ++c) acc[c] = make_float2(0.f, 0.f);
    int g, lane = 0;
    if (blockIdx.x < light_blocks) {
        const int t = blockIdx.x * blockDim.x + threadIdx.x;
        if (t >= n_light) return;
        g = order[t];
        gather_row(rowptr, cols, weights, table, n_arms, g2, samples, g, c0, nc, 0, 1, acc);
    } else {
        const int warp = ((blockIdx.x - light_blocks) * blockDim.x + threadIdx.x) >> 5;
        if (warp >= n_heavy) return;  // whole warps only
        lane = threadIdx.x & 31;
        g = order[n_light + warp];
        gather_row(rowptr, cols, weights, table, n_arms, g2, samples, g, c0, nc, lane, 32, acc);
#pragma unroll
        for (int c = 0; c < CHUNK; ++c) {
            for (int offset = 16; offset > 0; offset >>= 1) {
                acc[c].x += __shfl_down_sync(0xffffffffu, acc[c].x, offset);
                acc[c].y += __shfl_down_sync(0xffffffffu, acc[c].y, offset);
            }
        }
        if (lane) return;
    }
    for (int k = 0; k < n_add; ++k) {
        const float2* grid = reinterpret_cast<const float2*>(table[2 * n_arms + k]) + (size_t)c0 * g2 + g;
#pragma unroll
        for (int c = 0; c < CHUNK; ++c) {
            if (c < nc) {
                const float2 v = grid[(size_t)c * g2];
                acc[c].x += v.x;
                acc[c].y += v.y;
            }
        }
    }
    float2* o = out + (size_t)c0 * g2 + g;
#pragma unroll
    for (int c = 0; c < CHUNK; ++c) {
        if (c < nc) o[(size_t)c * g2] = acc[c];
    }
}

extern "C" __global__ void crop_rss(const float2* __restrict__ k, const float* __restrict__ apod,
                                    const int coils, const int g1, const int g2, const int m, const int start,
                                    float* __restrict__ out)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= m * m) return;
    const float2* p = k + (size_t)(i / m + start) * g1 + (i % m + start);
    float s = 0.f;
    for (int c = 0; c < coils; ++c) {
        const float2 v = p[(size_t)c * g2];
        s += v.x * v.x + v.y * v.y;
    }
    out[i] = sqrtf(s) * apod[i];
}
"""


@functools.lru_cache(maxsize=None)
def _module(chunk: int) -> Any:
    import cupy
    return cupy.RawModule(code=_SOURCE, options=(f"-DCHUNK={chunk}",))


def frame_coils(samples: Sequence[Any], add: Sequence[Any]) -> int:
    """The coils of a gather's arguments: the rows of its first samples, else of its first grid to add."""
    return (samples[0] if len(samples) else add[0]).shape[0]


def _blocks(n: int) -> int:
    return (n + THREADS - 1) // THREADS


def grid_major_tables(xp: ModuleType, arm: Any, rows: Any, cols: Any, weights: Any, arms: int, grid_points: int,
                      dense_row: float) -> tuple[Any, Any, Any, Any, int]:
    """The per-arm grid-major CSR of the entries ``arm``, ``rows``, ``cols``, ``weights`` (1-D
    ``xp`` arrays of one length), built with the array module ``xp`` (NumPy or CuPy) where the
    entries are: ``(rowptr, cols, weights, order, light)``.

    ``rowptr`` (int32, ``arms * grid_points + 1``): the entries of row ``g`` of arm ``j`` are
    ``rowptr[j * grid_points + g] ... rowptr[j * grid_points + g + 1]`` of ``cols`` (int32) and
    ``weights`` (float32), in the order the entries were given.  ``order`` (int32) lists the
    ``light`` grid rows with at most ``dense_row * arms`` entries over all arms first, then the
    dense ones.  The sort key carries the entry index, so no two keys are equal and NumPy's and
    CuPy's sorts (stable or not) give the same permutation.
    """
    entries, keys = len(weights), arms * grid_points
    if entries >= 2 ** 31 or keys * entries >= 2 ** 63:
        raise ValueError(f"gridding matrix too large for the GPU tables ({entries} entries, {keys} rows)")
    row_key = arm.astype(xp.int64) * grid_points + rows
    unique_key = row_key * entries
    unique_key += xp.arange(entries, dtype=xp.int64)
    permutation = xp.argsort(unique_key)
    rowptr = xp.zeros(keys + 1, dtype=xp.int32)
    rowptr[1:] = xp.cumsum(xp.bincount(row_key, minlength=keys))
    dense = xp.bincount(rows, minlength=grid_points) > dense_row * arms
    light_rows = xp.flatnonzero(~dense)
    order = xp.concatenate([light_rows, xp.flatnonzero(dense)]).astype(xp.int32)
    return (rowptr, cols[permutation].astype(xp.int32, copy=False),
            weights[permutation].astype(xp.float32, copy=False), order, len(light_rows))


class GpuArmTables:
    """Per-arm grid-major CSR tables on the GPU and the two kernels that use them.

    ``rows``, ``cols`` (sample index within the arm as received) and ``weights``
    are the entries of all arms' gridding matrices, ``arm`` the arm of each.  They are copied
    to the device once (32 bits each) and :func:`grid_major_tables` sorts them there.
    """

    def __init__(self, arm: np.ndarray, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray,
                 arms: int, grid_points: int, samples: int) -> None:
        import cupy
        entries = [cupy.asarray(np.asarray(values, dtype=dtype))
                   for values, dtype in ((arm, np.int32), (rows, np.int32), (cols, np.int32), (weights, np.float32))]
        self.rowptr, self.cols, self.weights, self.order, self.light = grid_major_tables(
            cupy, *entries, arms, grid_points, DENSE_ROW)
        self.grid_points = grid_points
        self.samples = samples

    @staticmethod
    def pointer_table(arms: Sequence[int], samples: Sequence[Any], add: Sequence[Any] = ()) -> np.ndarray:
        """The gather kernel's table (int64, host): the arms, the device addresses of their samples,
        then those of the grids to add."""
        return np.array([*arms, *(s.data.ptr for s in samples), *(a.data.ptr for a in add)], dtype=np.int64)

    def launch_grid(self, table: Any, arms: int, add: int, coils: int, out: Any) -> None:
        """Launch the gather kernel on the current stream: ``table`` (:meth:`pointer_table` of
        ``arms`` arms and ``add`` grids, on the device) gridded into ``out`` ``[coils, grid_points]``."""
        chunk = min(COIL_CHUNK, coils)
        heavy = self.grid_points - self.light
        _module(chunk).get_function("grid_arms")(
            (_blocks(self.light) + _blocks(32 * heavy), (coils + chunk - 1) // chunk), (THREADS,),
            (self.rowptr, self.cols, self.weights, table, np.int32(arms), np.int32(add),
             np.int32(self.grid_points), np.int32(self.samples), np.int32(coils), self.order, np.int32(self.light),
             np.int32(heavy), out))

    def grid(self, arms: Sequence[int], samples: Sequence[Any], add: Sequence[Any] = ()) -> Any:
        """``[coils, grid_points]`` complex64: the sum of the grids ``add`` (same shape) and the
        gridded ``samples`` (device arrays ``[coils, samples]``, complex64, C order) of ``arms``."""
        import cupy
        coils = frame_coils(samples, add)
        out = cupy.empty((coils, self.grid_points), dtype=cupy.complex64)
        self.launch_grid(cupy.asarray(self.pointer_table(arms, samples, add)), len(arms), len(add), coils, out)
        return out

    @staticmethod
    def ifft2(images: Any) -> Any:
        """Unnormalised inverse FFT over the last two axes of ``[n, G0, G1]``, in place (:func:`inverse_fft2_inplace`)."""
        return inverse_fft2_inplace(images)

    @staticmethod
    def crop_rss(images: Any, apod: Any, m: int) -> Any:
        """:func:`crop_rss` of ``images`` (made C-contiguous first when they are not)."""
        import cupy
        return crop_rss(cupy.ascontiguousarray(images), apod, m)


def fft_plan(shape: tuple[int, ...]) -> Any:
    """A new cuFFT plan (current device) for the 2-D transforms over the last two axes of C-contiguous
    ``shape`` ``[n, G0, G1]`` complex64; call it with ``plan.fft(x, out, cufft.CUFFT_INVERSE)``."""
    import cupy
    import cupyx.scipy.fft
    return cupyx.scipy.fft.get_fft_plan(cupy.empty(shape, dtype=cupy.complex64), axes=(1, 2), value_type="C2C")


@functools.lru_cache(maxsize=None)
def _fft_plan(device: int, shape: tuple[int, ...]) -> Any:
    return fft_plan(shape)


def inverse_fft2_inplace(images: Any) -> Any:
    """Unnormalised inverse FFT over the last two axes of C-contiguous ``[n, G0, G1]`` complex64, in
    place: the cached cuFFT plan called directly (``cupyx.scipy.fft.ifft2`` looks it up and checks
    its arguments at every call, which costs as much as the transform at this size)."""
    import cupy
    from cupy.cuda import cufft
    _fft_plan(cupy.cuda.Device().id, images.shape).fft(images, images, cufft.CUFFT_INVERSE)
    return images


def crop_rss(images: Any, apod: Any, m: int, out: Any = None) -> Any:
    """``apod * sqrt(sum_c |x_c|^2)`` of the centre ``[m, m]`` of C-contiguous ``[coils, G, G]`` images
    (float32), into ``out`` when given (launched on the current stream)."""
    import cupy
    coils, g0, g1 = images.shape
    if out is None:
        out = cupy.empty((m, m), dtype=cupy.float32)
    _module(COIL_CHUNK).get_function("crop_rss")(
        (_blocks(m * m),), (THREADS,),
        (images, apod, np.int32(coils), np.int32(g1), np.int32(g0 * g1), np.int32(m), np.int32(g0 // 2 - m // 2), out))
    return out


def load_kernels(coils: int = COIL_CHUNK) -> None:
    """Compile (or take from CuPy's on-disk cache) and load the two kernels that frames of ``coils``
    coils use, on the current device."""
    _module(min(COIL_CHUNK, coils)).get_function("grid_arms")
    _module(COIL_CHUNK).get_function("crop_rss")


def warm_up() -> None:
    """What a first frame on the current device would wait for, done now: the two kernels loaded
    (:func:`load_kernels`) and cuFFT started with a tiny plan."""
    import cupy
    load_kernels()
    inverse_fft2_inplace(cupy.zeros((1, 8, 8), dtype=cupy.complex64))
    cupy.cuda.Device().synchronize()
