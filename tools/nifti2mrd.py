"""Convert NIfTI volumes into an MRD HDF5 file of image series.

Each input file becomes one image series (``image_<N>``, ``image_<N+1>``, ... in input order), one
2-D image per slice k (and per volume t of a 4-D file, as repetition t), built by ``ai.nifti``
(issue 15): pixels ``data[:, :, k].T`` in the NIfTI data type when MRD has it (uint8/int8 widened
to uint16/int16, float16 to float32), geometry from the NIfTI affine (RAS+ to the LPS of MRD,
``position`` the centre of each slice), ``slice = k``, ``image_index = t nz + k + 1``.  The group gets a
minimal ISMRMRD XML header (no patient data: NIfTI has none) describing the first volume as a
2-D multi-slice Cartesian acquisition, with an unknown (0) resonance frequency.

Usage: ``python tools/nifti2mrd.py in.nii[.gz] [in2.nii.gz ...] -o out.h5 [-g GROUP (default
dataset)] [--series N (default 0)]``; the output file is overwritten.  Exit status 0, or 2 for a
missing or unreadable input or one that is not 2-D to 4-D.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402
import ismrmrd  # noqa: E402
import ismrmrd.xsd as xsd  # noqa: E402
import nibabel  # noqa: E402
from nibabel.filebasedimages import ImageFileError  # noqa: E402

import mrdfile  # noqa: E402
from ai import nifti  # noqa: E402
from tools import _cli, _mrd_header  # noqa: E402

log = logging.getLogger("nifti2mrd")


def header_xml(images: list[ismrmrd.Image]) -> str:
    """A minimal valid ISMRMRD XML header for the images of one converted volume."""
    head = images[0].getHead()
    nx, ny, _ = (int(v) for v in head.matrix_size)
    fov = tuple(float(v) for v in head.field_of_view)
    slices = max(int(im.getHead().slice) for im in images) + 1
    repetitions = max(int(im.getHead().repetition) for im in images) + 1
    space = ((nx, ny, 1), fov)
    limits = {"kspace_encoding_step_1": (0, ny - 1, ny // 2), "slice": (0, slices - 1, slices // 2),
              "repetition": (0, repetitions - 1, 0)}
    header = xsd.ismrmrdHeader(
        measurementInformation=xsd.measurementInformationType(patientPosition=xsd.patientPositionType.HFS,
                                                              protocolName="nifti2mrd"),
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=0),
        encoding=[_mrd_header.encoding(space, space, limits, "cartesian")])
    return xsd.ToXML(header, encoding="UTF-8")


def read_volume(path: Path, series: int) -> list[ismrmrd.Image]:
    """The MRD images of one NIfTI file; ToolError when it is missing, unreadable or not 2-D to 4-D."""
    if not path.is_file():
        raise _cli.ToolError(f"no such file: {path}")
    try:
        return nifti.nifti_to_images(nibabel.load(path), series_index=series)
    except (ImageFileError, OSError, EOFError) as exc:
        raise _cli.ToolError(f"{path} is not a readable NIfTI file: {exc}") from None
    except ValueError as exc:
        raise _cli.ToolError(f"{path}: {exc}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", type=Path, nargs="+", help="NIfTI files (.nii or .nii.gz), one series each")
    parser.add_argument("-o", "--outfile", type=Path, required=True, help="output MRD file (overwritten)")
    parser.add_argument("-g", "--out-group", dest="group", default="dataset", help="output group")
    parser.add_argument("--series", type=int, default=0, help="image_series_index of the first input")
    args = parser.parse_args(argv)
    if not 0 <= args.series <= 0xFFFF - len(args.inputs) + 1:
        parser.error("--series must be 0..65535 for every input")
    return args


def convert(args: argparse.Namespace) -> int:
    """Convert every input (all read before the output is written); 0, or ToolError."""
    volumes = [read_volume(path, args.series + i) for i, path in enumerate(args.inputs)]
    with h5py.File(args.outfile, "w") as h5:
        group = h5.create_group(args.group)
        mrdfile.write_xml(group, header_xml(volumes[0]))
        for path, images in zip(args.inputs, volumes):
            batch = mrdfile.ItemBatch()
            for image in images:
                batch.add(image)
            batch.write_to(group)
            head = images[0].getHead()
            log.info("%s: %d image(s) of %dx%d to %s/image_%d", path, len(images), head.matrix_size[0],
                     head.matrix_size[1], args.group, head.image_series_index)
    log.info("wrote %d series to %s/%s", len(volumes), args.outfile, args.group)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    return _cli.exit_status(log, convert, _cli.start(parse_args, argv))


if __name__ == "__main__":
    sys.exit(main())
