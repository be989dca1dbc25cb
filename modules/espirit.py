"""espirit: Cartesian parallel imaging by ESPIRiT sensitivities and an l1-wavelet reconstruction (BART).

The session is read to CLOSE and collected as ``grappa`` collects it (``_parallel``: noise readouts to
the covariance or a Noise dependency, pre-whitening on by default (JSON ``prewhiten``), readout
oversampling removed, one k-space ``[coils, kz, ky, kx]`` per (slice, contrast, phase, repetition, set),
embedded or separate ACS lines, acceleration along ky and, for 3-D data, kz).  Then, in one BART
command session (``_bart.BartSession``):

1. ``bart ecalib -m 1 -r <cx>:<cy>:<cz>`` once per calibration (Uecker et al., MRM 71:990, 2014): the
   image's own k-space for embedded ACS lines, the slice's separate calibration k-space otherwise.  The
   calibration region is the largest fully sampled box around the k-space centre (ky, kz; the readout
   takes the ky size), at most ``espirit_calibration`` (default 24) lines: ecalib uses only it.
2. ``bart pics -S -i <espirit_iterations> -R W:<3|7>:0:<espirit_lambda> -L 8192`` once for all images
   of the session, stacked along BART's slice dimension (13) and reconstructed one by one (``-L``, batch
   mode): l1-wavelet regularised SENSE over x, y (and z for 3-D data) with each image's maps, the
   result rescaled to the data (``-S``).  Lines not acquired (undersampling, partial Fourier) are left
   to the reconstruction; measured ones are fitted, not kept.
3. Magnitude, recon-matrix crop along y and z.

Output as ``grappa`` (and ``simplefft``): int16 magnitude scaled to ``BitsStored`` with one peak for the
session, series 0, ``image_index`` 1, 2, … in the order repetition, contrast, phase, set, slice (and
partition), the header of the image's first readout, FOV from the recon space; 3-D partitions as
images moved along ``slice_dir``.  ``docs/modules.md`` §21.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional

import numpy as np

import mrdhelper

import _bart
import _parallel
from _errors import ConfigError

log = logging.getLogger(__name__)

HISTORY = ["FIRE", "PYTHON", "BART", "ESPIRIT"]
DEFAULT_LAMBDA = 0.005
DEFAULT_ITERATIONS = 30
DEFAULT_CALIBRATION = 24
MIN_CALIBRATION = 6   # fewer fully sampled lines along an accelerated axis: no calibration
BATCH_DIM = 13        # BART's SLICE_DIM


@dataclasses.dataclass
class Settings:
    """The JSON parameters (strings on the wire, converted by ``mrdhelper.get_json_config_param``)."""

    lam: float = DEFAULT_LAMBDA
    iterations: int = DEFAULT_ITERATIONS
    calibration: int = DEFAULT_CALIBRATION
    prewhiten: bool = True

    @classmethod
    def from_config(cls, config: Any) -> "Settings":
        lam = mrdhelper.get_json_config_param(config, "espirit_lambda", DEFAULT_LAMBDA, "float")
        if not 0 <= lam < 1e6:
            raise ConfigError(f"JSON configuration: parameters.espirit_lambda must be >= 0, got {lam}")
        iterations = mrdhelper.get_json_config_param(config, "espirit_iterations", DEFAULT_ITERATIONS, "int")
        if not 1 <= iterations <= 10000:
            raise ConfigError(f"JSON configuration: parameters.espirit_iterations must be 1 to 10000, "
                              f"got {iterations}")
        calibration = mrdhelper.get_json_config_param(config, "espirit_calibration", DEFAULT_CALIBRATION, "int")
        if not 4 <= calibration <= 512:
            raise ConfigError(f"JSON configuration: parameters.espirit_calibration must be 4 to 512, "
                              f"got {calibration}")
        return cls(lam, iterations, calibration, mrdhelper.get_json_config_param(config, "prewhiten", True, "bool"))


def centred_run(sampled: np.ndarray, limit: int) -> int:
    """Length of the largest run of sampled lines centred on line ``n // 2`` (even, at most ``limit``)."""
    n, centre = len(sampled), len(sampled) // 2
    size = 0
    for length in range(2, min(n, limit) + 1, 2):
        start = centre - length // 2
        if start < 0 or start + length > n or not sampled[start:start + length].all():
            break
        size = length
    return size if size or n > 1 else 1


def calibration_size(measured: np.ndarray, accel: tuple[int, int], nx: int, limit: int) -> tuple[int, int, int]:
    """``(cx, cy, cz)`` of ecalib's ``-r``: the fully sampled box around the centre of ``measured [nz, ny]``.

    Raises ValueError when an accelerated axis has fewer than ``MIN_CALIBRATION`` such lines."""
    nz, ny = measured.shape
    cy = centred_run(measured[nz // 2], limit)
    cz = centred_run(measured[:, ny // 2], limit) if nz > 1 else 1
    for name, size, r, n in (("ky", cy, accel[1], ny), ("kz", cz, accel[0], nz)):
        if r > 1 and size < min(MIN_CALIBRATION, n):
            raise ValueError(f"no fully sampled calibration region along {name} ({size} centre lines, acceleration "
                             f"{r}): ESPIRiT needs ACS lines")
    return min(nx, max(cy, 2)), cy, cz


def reconstruct(readouts: list, metadata: Any, settings: Settings, whiten: Optional[_parallel.Whiten] = None) -> list:
    """All images of a session's non-noise readouts; ``whiten`` maps readouts ``[n, coils, samples]``."""
    session = _parallel.collect(readouts, metadata, whiten)
    (nx, ny, nz), accel = session.shape, session.accel
    blocks = session.blocks
    ncoil = blocks[0].kspace.shape[0]
    log.info("ESPIRiT: %d image(s), acceleration %d (ky) x %d (kz), calibration %s, k-space %d x %d x %d (x, y, z)",
             len(blocks), accel[1], accel[0], session.mode, nx, ny, nz)
    bart_order = lambda kspace: np.ascontiguousarray(kspace.transpose(3, 2, 1, 0))  # noqa: E731  [x, y, z, coil]
    maps: dict = {}
    with _bart.BartSession() as bart:
        for block in blocks:
            source = session.calibration(block) or block
            if id(source) in maps:
                continue
            cx, cy, cz = calibration_size(source.measured, accel, nx, settings.calibration)
            out = bart.run(["ecalib", "-m", "1", "-r", f"{cx}:{cy}:{cz}", "kspace", "maps"],
                           {"kspace": bart_order(source.kspace)})
            maps[id(source)] = np.asarray(out["maps"]).reshape((nx, ny, nz, ncoil), order="F")
        batch = (1,) * (BATCH_DIM - 4) + (len(blocks),)
        kspace = np.stack([bart_order(b.kspace) for b in blocks], axis=-1).reshape((nx, ny, nz, ncoil) + batch)
        sens = np.stack([maps[id(session.calibration(b) or b)] for b in blocks], axis=-1)
        sens = sens.reshape((nx, ny, nz, ncoil) + batch)
        flags = 7 if nz > 1 else 3
        out = bart.run(["pics", "-S", "-i", str(settings.iterations), "-R", f"W:{flags}:0:{settings.lam}",
                        "-L", str(1 << BATCH_DIM), "kspace", "sens", "image"], {"kspace": kspace, "sens": sens})
        images = np.abs(np.asarray(out["image"])).reshape((nx, ny, nz, len(blocks)), order="F")
    volumes = []
    for i in range(len(blocks)):
        volume = images[..., i].transpose(2, 1, 0)[None]  # [1, nz, ny, nx]
        volumes.append(_parallel.crop_recon(volume, session.encoding)[0].astype(np.float32))
    return _parallel.images_of(blocks, volumes, metadata, HISTORY)


def process(connection, config, metadata):
    _parallel.serve(connection, metadata, lambda: Settings.from_config(config), "espirit",
                    lambda readouts, settings, whiten: reconstruct(readouts, metadata, settings, whiten))
