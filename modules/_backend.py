"""CPU/GPU switch of the modules (never dispatched: leading ``_``).

The array module ``xp`` is chosen once per session from a device number:
CuPy on that GPU when CuPy imports and the device exists, otherwise NumPy with
one log line saying why.  ``sparse``/``fft`` give the matching
``scipy.sparse``/``scipy.fft`` namespaces, so reconstruction code has one body
for both devices.
"""
from __future__ import annotations

import dataclasses
import logging
from types import ModuleType
from typing import Any

import numpy as np
import scipy.fft
import scipy.sparse

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Backend:
    """The array, sparse-matrix and FFT modules of one device; ``gpu`` is the CUDA device or -1."""

    xp: ModuleType
    sparse: ModuleType
    fft: ModuleType
    gpu: int

    @property
    def fft_options(self) -> dict:
        """Keyword arguments for ``fft`` calls: all cores on the CPU."""
        return {"workers": -1} if self.gpu < 0 else {}

    @property
    def name(self) -> str:
        return f"GPU {self.gpu} (CuPy)" if self.gpu >= 0 else "CPU (NumPy)"

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
        return array.get() if hasattr(array, "get") else np.asarray(array)

    def synchronize(self) -> None:
        if self.gpu >= 0:
            self.xp.cuda.Stream.null.synchronize()


CPU = Backend(np, scipy.sparse, scipy.fft, -1)


def select(gpu_device: int) -> Backend:
    """CuPy on ``gpu_device`` when possible (``gpu_device >= 0``), else the CPU backend."""
    if gpu_device < 0:
        return CPU
    try:
        import cupy
        import cupyx.scipy.fft
        import cupyx.scipy.sparse
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # ImportError, or CUDA errors when no driver/GPU is present
        log.info("GPU %d requested but CuPy/CUDA is not usable (%s); reconstructing on the CPU", gpu_device, exc)
        return CPU
    if gpu_device >= count:
        log.info("GPU %d requested but %d GPU(s) present; reconstructing on the CPU", gpu_device, count)
        return CPU
    cupy.cuda.Device(gpu_device).use()
    return Backend(cupy, cupyx.scipy.sparse, cupyx.scipy.fft, gpu_device)
