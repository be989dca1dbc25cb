"""Write the image series of an MRD HDF5 file as NIfTI volumes.

One ``<group>_<series>.nii.gz`` per image series (e.g. ``dataset_image_0.nii.gz``), built by
``ai.nifti`` (issue 15): the 2-D images of a series stacked along the slice normal in slice order
(or its one 3-D image), NIfTI axes i = column, j = row, k = slice, an RAS+ affine (sform and qform,
code 1) from the MRD geometry, complex pixels as float32 magnitude, real pixel types kept.  Only
pixels and geometry are written: no patient data.  With ``--json`` a ``<name>.json`` side file
(``ai.nifti.meta_json``: scaling_factor, spacing, origin, direction) goes next to each volume.
A series that is not one volume (several channels, different matrix sizes or orientations, two
images at one position, unequal slice gaps) is reported with one error line and skipped.

Usage: ``python tools/mrd2nifti.py in.h5 [-g GROUP (default: last)] [-s SERIES] [-o OUTDIR (default:
next to the input)] [--json]``; existing files are overwritten.  Exit status 0, or 2 for a missing
file, group or series, a group without images, or a series that is not one volume.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ismrmrd  # noqa: E402
import nibabel  # noqa: E402

import mrdfile  # noqa: E402
from ai import nifti  # noqa: E402
from tools import _cli  # noqa: E402

log = logging.getLogger("mrd2nifti")


def series_images(series: mrdfile.ImageSeries) -> list[ismrmrd.Image]:
    """The images of a series read by ``mrdfile.read_image_series`` (headers and pixels, no attributes)."""
    return [ismrmrd.Image(series.heads[i].tobytes(), data=series.data[i]) for i in range(len(series.heads))]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("filename", type=Path, help="MRD HDF5 input file")
    parser.add_argument("-g", "--in-group", dest="group", help="group (default: last group of the file)")
    parser.add_argument("-s", "--series", help="only this series, e.g. image_0 (default: all)")
    parser.add_argument("-o", "--outdir", type=Path, help="output folder (default: next to the input)")
    parser.add_argument("--json", action="store_true", help="also write the meta JSON side file of each volume")
    return parser.parse_args(argv)


def convert(args: argparse.Namespace) -> int:
    """Write one NIfTI file per series of the group; 0, 2 when a series is not one volume, or ToolError."""
    outdir = args.outdir or args.filename.parent
    failed = 0
    with _cli.image_group(args.filename, args.group) as (group, grp, names):
        if not names:
            raise _cli.ToolError(f"group {group} of {args.filename} holds no image series")
        if args.series is not None and args.series not in names:
            raise _cli.ToolError(f"group {group} has no series {args.series} (series: {', '.join(names)})")
        outdir.mkdir(parents=True, exist_ok=True)
        for name in [args.series] if args.series is not None else names:
            series = mrdfile.read_image_series(grp, name)
            if not len(series.heads):
                continue
            try:
                volume = nifti.series_volume(series_images(series))
            except ValueError as exc:
                log.error("%s/%s is not one volume: %s", group, name, exc)
                failed += 1
                continue
            path = outdir / f"{group}_{name}.nii.gz"
            nibabel.save(nifti.to_nifti(volume), path)
            if args.json:
                path.with_name(path.name[:-len(".nii.gz")] + ".json").write_text(
                    json.dumps(nifti.meta_json(volume), indent=2) + "\n")
            log.info("wrote %s/%s (%s voxels of %s mm) to %s", group, name, "x".join(map(str, volume.data.shape)),
                     "x".join(f"{v:.4g}" for v in volume.spacing), path)
    return 2 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    return _cli.exit_status(log, convert, _cli.start(parse_args, argv))


if __name__ == "__main__":
    sys.exit(main())
