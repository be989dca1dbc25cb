"""A sliding window's frame image on the GPU as one CUDA graph (never dispatched: leading ``_``).

A frame's root-sum-of-squares image is four steps on the device: the gather kernel (the frame's
extra arms plus the stored block sum, ``_gpu_gridding.GpuArmTables.launch_grid``), the in-place
inverse FFT (cuFFT), the crop + RSS kernel and the copy of the image to the host.  Launched one by
one from Python, with the upload of the gather's pointer table and four allocations, they cost more
host time than the GPU needs for them (about 0.1 ms on an H100, bench/RESULTS.md).  A
:class:`FrameGraphs` captures the four steps once per frame shape (number of arms, of grids added,
of coils) into a CUDA graph over buffers it owns: the pointer table in page-locked host memory
(copied to the device by the graph's first node), the frame's grid, its cuFFT plan and the image on
the device and in page-locked host memory.  A frame is then: write the table, launch the graph on
the current stream (after the arms' copies and the block sums made there), wait, copy the image out.

Safety nets: the first launch of every graph is compared with the step-by-step path
(:meth:`FrameGraphs.step_by_step`); if a capture fails or the two images differ, the window logs one
warning and makes its frames step by step from then on.  Odd oversampled grids (shifted FFTs: CuPy
element-wise kernels that allocate) always go step by step, and so do the shapes beyond the first
:data:`MAX_GRAPHS` of a window.  One object per window: its buffers are that window's, so sessions
sharing a gridder never share them.
"""
from __future__ import annotations

import ctypes
import dataclasses
import logging
from typing import Any, Sequence

import numpy as np

import _backend
import _gpu_gridding

log = logging.getLogger(__name__)

MAX_GRAPHS = 32  # frame shapes with a graph per window (steady state has one; a window filling up a few)


@dataclasses.dataclass
class _Graph:
    """One captured frame shape: the graph, its pointer table on the host (page-locked) and on the
    device, and the coils (whose buffers the graph writes)."""

    graph: Any
    host_table: np.ndarray
    table: Any
    coils: int


class FrameGraphs:
    """Frame images ``[m, m]`` float32 on the host, for one window: ``frames(arms, samples, add)``.

    ``tables`` is the gridder's ``_gridding.GpuTables`` and ``plan`` its ``_gridding.ImagePlan``;
    the arguments of a call are those of ``tables.grid``.  ``launches`` counts the frames a graph
    made, ``enabled`` is False once the window went back to step-by-step frames.
    """

    def __init__(self, tables: Any, plan: Any) -> None:
        self.tables = tables
        self.plan = plan
        self.enabled = bool(plan.signed)
        self.launches = 0
        self._graphs: dict[tuple[int, int, int], _Graph] = {}
        self._buffers: dict[int, tuple[Any, Any, Any, np.ndarray]] = {}

    def step_by_step(self, arms: Sequence[int], samples: Sequence[Any], add: Sequence[Any] = ()) -> np.ndarray:
        """The same image made by one call per step (new memory for each)."""
        return _backend.to_host(self.tables.rss(self.tables.grid(arms, samples, add), self.plan))

    def __call__(self, arms: Sequence[int], samples: Sequence[Any], add: Sequence[Any] = ()) -> np.ndarray:
        coils = _gpu_gridding.frame_coils(samples, add)
        key = (len(arms), len(add), coils)
        entry = self._graphs.get(key)
        first = entry is None
        if first:
            if not self.enabled or len(self._graphs) >= MAX_GRAPHS:
                return self.step_by_step(arms, samples, add)
            try:
                entry = self._capture(*key)
            except Exception as exc:  # a CUDA or cuFFT error: this window keeps to the step-by-step path
                self._give_up(f"capturing a frame of {key[0]} arms, {key[1]} grids and {key[2]} coils failed ({exc})")
                return self.step_by_step(arms, samples, add)
            self._graphs[key] = entry
        try:
            image = self._launch(entry, arms, samples, add)
        except Exception as exc:
            if not first:
                raise
            self._give_up(f"the first launch of a frame of {key[0]} arms, {key[1]} grids and {key[2]} coils "
                          f"failed ({exc})")
            return self.step_by_step(arms, samples, add)
        if first:
            expected = self.step_by_step(arms, samples, add)
            scale = float(np.abs(expected).max(initial=0.0))
            if not np.allclose(image, expected, rtol=1e-4, atol=1e-6 * scale):
                self._give_up("the graph's first frame differs from the step-by-step one")
                return expected
        self.launches += 1
        return image

    def _give_up(self, why: str) -> None:
        log.warning("CUDA graph frames off for this window: %s; frames are made step by step", why)
        self.enabled = False
        self._graphs.clear()
        self._buffers.clear()

    def _launch(self, entry: _Graph, arms: Sequence[int], samples: Sequence[Any], add: Sequence[Any]) -> np.ndarray:
        import cupy
        entry.host_table[:] = self.tables.pointer_table(arms, samples, add)
        stream = cupy.cuda.get_current_stream()
        entry.graph.launch(stream)
        stream.synchronize()  # the graph's last node has copied the image to the page-locked buffer
        return self._buffers[entry.coils][3].copy()

    def _buffers_for(self, coils: int) -> tuple[Any, Any, Any, np.ndarray]:
        """``(grid [coils, G0, G1], its cuFFT plan, image, page-locked host image)``, made once per coil count."""
        if coils not in self._buffers:
            import cupy
            import cupyx
            shape = (coils, *self.plan.grid)
            m = self.plan.m
            self._buffers[coils] = (cupy.empty(shape, dtype=cupy.complex64), _gpu_gridding.fft_plan(shape),
                                    cupy.empty((m, m), dtype=cupy.float32), cupyx.empty_pinned((m, m), np.float32))
        return self._buffers[coils]

    def _capture(self, arms: int, add: int, coils: int) -> _Graph:
        """The graph of frames of ``arms`` arms, ``add`` grids added and ``coils`` coils."""
        import cupy
        import cupyx
        from cupy.cuda import cufft
        grid, fft_plan, image, host_image = self._buffers_for(coils)
        host_table = cupyx.empty_pinned((2 * arms + add,), np.int64)
        table = cupy.empty(host_table.shape, dtype=cupy.int64)
        _gpu_gridding.load_kernels(coils)  # nothing but stream work inside the capture
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            stream.begin_capture()
            try:
                table.data.copy_from_host_async(ctypes.c_void_p(host_table.ctypes.data), host_table.nbytes, stream)
                self.tables.launch_grid(table, arms, add, coils, grid)
                fft_plan.fft(grid, grid, cufft.CUFFT_INVERSE)
                _gpu_gridding.crop_rss(grid, self.plan.abs_apod, self.plan.m, image)
                image.data.copy_to_host_async(ctypes.c_void_p(host_image.ctypes.data), host_image.nbytes, stream)
            except BaseException:
                try:
                    stream.end_capture()  # ends the (now invalid) capture, so the stream can go
                except Exception:
                    pass
                raise
            graph = stream.end_capture()
        return _Graph(graph, host_table, table, coils)
