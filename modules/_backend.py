"""CPU/GPU switch of the modules (never dispatched: leading ``_``).

The one place that knows the device, in the manner of sigpy's ``Device``/``get_array_module``:

* :func:`select` turns a configured device number into a :class:`Backend`: CuPy on that GPU when
  CuPy imports and the device exists, otherwise the CPU backend (NumPy/SciPy) with one log line
  saying why;
* a :class:`Backend` gives the array module ``xp``, the matching FFT module ``fft``
  (``scipy.fft`` or ``cupyx.scipy.fft``) with :attr:`Backend.fft_options`, copies to and from the
  device, and :meth:`Backend.pick`, which chooses between a CPU and a GPU implementation of one
  interface (``_gridding.CpuArmTables`` or ``_gridding.GpuTables``), so that code above it
  has no device branches of its own;
* :func:`array_module` is the ``xp`` of an array at hand (NumPy or CuPy), for functions that take
  arrays from either device (``_coils``).
"""
from __future__ import annotations

import dataclasses
import logging
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
import scipy.fft

log = logging.getLogger(__name__)
T = TypeVar("T")


def array_module(array: Any) -> ModuleType:
    """``cupy`` for a CuPy array, else ``numpy`` (sigpy's ``get_array_module``)."""
    if type(array).__module__.startswith("cupy"):
        import cupy
        return cupy
    return np


def to_host(array: Any) -> np.ndarray:
    """``array`` as a NumPy array: a CuPy array is copied from its device, anything else taken as it is."""
    return array.get() if hasattr(array, "get") else np.asarray(array)


@dataclasses.dataclass(frozen=True)
class Backend:
    """The array and FFT modules of one device; ``gpu`` is the CUDA device, -1 for the CPU."""

    xp: ModuleType
    fft: ModuleType
    gpu: int

    @property
    def fft_options(self) -> dict:
        """Keyword arguments for ``fft`` calls: all cores on the CPU."""
        return {"workers": -1} if self.gpu < 0 else {}

    @property
    def name(self) -> str:
        return f"GPU {self.gpu} (CuPy)" if self.gpu >= 0 else "CPU (NumPy)"

    def pick(self, cpu: T, gpu: T) -> T:
        """``cpu`` or ``gpu``, whichever runs on this backend's device."""
        return gpu if self.gpu >= 0 else cpu

    def to_device(self, array: Any, dtype: Any = None) -> Any:
        """``array`` C-contiguous on this device (as ``dtype`` when given); an array that already
        is returns itself, without a CuPy call (a sliding window takes thousands of arms)."""
        xp = self.xp
        if type(array) is xp.ndarray:
            if array.flags.c_contiguous and (dtype is None or array.dtype == dtype):
                return array
            return xp.ascontiguousarray(array, dtype=dtype)
        return xp.asarray(np.ascontiguousarray(array, dtype=dtype))

    def to_host(self, array: Any) -> np.ndarray:
        return to_host(array)

    def synchronize(self) -> None:
        if self.gpu >= 0:
            self.xp.cuda.Stream.null.synchronize()


CPU = Backend(np, scipy.fft, -1)


def select(gpu_device: int) -> Backend:
    """CuPy on ``gpu_device`` when possible (``gpu_device >= 0``), else the CPU backend."""
    if gpu_device < 0:
        return CPU
    try:
        import cupy
        import cupyx.scipy.fft
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # ImportError, or CUDA errors when no driver/GPU is present
        log.info("GPU %d requested but CuPy/CUDA is not usable (%s); reconstructing on the CPU", gpu_device, exc)
        return CPU
    if gpu_device >= count:
        log.info("GPU %d requested but %d GPU(s) present; reconstructing on the CPU", gpu_device, count)
        return CPU
    cupy.cuda.Device(gpu_device).use()
    return Backend(cupy, cupyx.scipy.fft, gpu_device)
