"""Write the image series of an MRD HDF5 file as animated GIFs or PNG mosaics.

One output file per series, ``<input stem>_<group>_<series>[_<SequenceDescriptionAdditional>].<ext>``
(docs/modules.md §13.3).  Pixels: complex data as magnitude; ``RescaleSlope``/``RescaleIntercept``
attributes applied first; window from the ``WindowCenter``/``WindowWidth`` attributes of the first
image, else the medians over the images of their 5th and 95th percentiles, mapped to 0-255.  RGB
images (3 channels, image type 6) are shown in colour (0-255 unless window attributes exist).
The slices of a multi-slice image (and the channels of a non-RGB multi-channel one) are placed
side by side.  Visible ``ROI_*``/``GT_ROI_*`` polygons are drawn in their colour and line width
(pixel coordinates, x = column, y = row).  GIF: one frame per image, looping forever; PNG: all images of a series in one
mosaic whose grid is close to square.

Usage: ``python tools/mrd2gif.py in.h5 [-g GROUP] [-s SERIES] [--fps 25] [--filetype gif|png]
[-r RESCALE] [-o OUTDIR] [-q]``; exit status 0, 1 when the group holds no images (e.g. raw data only, to
be reconstructed first), or 2 for a missing file, group or series.
"""
from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402
import ismrmrd  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

import mrdfile  # noqa: E402
import mrdhelper  # noqa: E402
from tools import _cli  # noqa: E402

log = logging.getLogger("mrd2gif")


def parse_meta(text: str) -> dict[str, str]:
    """MetaAttributes XML as a dict of first values (empty for no attributes)."""
    if not text.strip():
        return {}
    return {k: (v[0] if isinstance(v, list) else v) for k, v in ismrmrd.Meta.deserialize(text).items()}


def window(values: np.ndarray, meta: dict[str, str], rgb: bool) -> tuple[float, float]:
    """Lowest and highest value of the display window of a series ``values[N, ...]``."""
    if "WindowCenter" in meta and "WindowWidth" in meta:
        center, width = float(meta["WindowCenter"]), float(meta["WindowWidth"])
        return center - width / 2, center + width / 2
    if rgb:
        return 0.0, 255.0
    flat = values.reshape(len(values), -1)
    return float(np.median(np.percentile(flat, 5, axis=1))), float(np.median(np.percentile(flat, 95, axis=1)))


def to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low`` to 0 and ``high`` to 255, clipping outside."""
    scaled = (values - low) * 255.0 / max(high - low, 1e-12)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def tile(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    """Tiles of equal shape ``[y, x(, 3)]`` in a grid of ``cols`` columns, row by row, zero-padded."""
    rows = math.ceil(len(tiles) / cols)
    blank = np.zeros_like(tiles[0])
    tiles = tiles + [blank] * (rows * cols - len(tiles))
    return np.concatenate([np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1) for r in range(rows)], axis=0)


def series_frames(series: mrdfile.ImageSeries) -> list[np.ndarray]:
    """One uint8 frame ``[y, x]`` (or ``[y, x, 3]`` for RGB) per image of a series."""
    metas = [parse_meta(a) for a in series.attributes]
    values = np.abs(series.data) if np.iscomplexobj(series.data) else series.data.astype(np.float64)
    slopes = np.array([float(m.get("RescaleSlope", 1.0)) for m in metas]).reshape(-1, 1, 1, 1, 1)
    intercepts = np.array([float(m.get("RescaleIntercept", 0.0)) for m in metas]).reshape(-1, 1, 1, 1, 1)
    values = values * slopes + intercepts
    rgb = values.shape[1] == 3 and int(series.heads["image_type"][0]) == ismrmrd.IMTYPE_RGB
    pixels = to_uint8(values, *window(values, metas[0], rgb))
    frames = []
    for image in pixels:  # [cha, z, y, x]
        if rgb:
            tiles = [image[:, z].transpose(1, 2, 0) for z in range(image.shape[1])]
        else:
            tiles = list(image.reshape(-1, *image.shape[2:]))
        frames.append(tile(tiles, cols=len(tiles)))
    return frames


def visible_rois(text: str) -> list[tuple[list[float], list[float], tuple[int, int, int], int]]:
    """Visible ``ROI_*``/``GT_ROI_*`` polygons of one image: (x, y, 0-255 colour, line width)."""
    if not text.strip():
        return []
    rois = []
    for key, value in ismrmrd.Meta.deserialize(text).items():
        if key.startswith(("ROI_", "GT_ROI_")) and isinstance(value, list):
            x, y, rgb, thickness, _style, visibility = mrdhelper.parse_roi(value)
            if visibility:
                rois.append((x, y, tuple(int(round(255 * c)) for c in rgb), max(1, int(round(thickness)))))
    return rois


def draw_rois(frames: list[np.ndarray], attributes: list[str]) -> list[np.ndarray]:
    """Frames with their images' visible ROIs drawn (all frames RGB when any ROI exists)."""
    rois = [visible_rois(a) for a in attributes]
    if not any(rois):
        return frames
    out = []
    for frame, polygons in zip(frames, rois):
        canvas = Image.fromarray(frame).convert("RGB")
        pen = ImageDraw.Draw(canvas)
        for x, y, colour, width in polygons:
            pen.line(list(zip(x, y)), fill=colour, width=width)
        out.append(np.asarray(canvas))
    return out


def output_path(outdir: Path, stem: str, group: str, series: mrdfile.ImageSeries, filetype: str) -> Path:
    """Sanitised output file name of one series."""
    parts = [stem, group, series.name]
    extra = parse_meta(series.attributes[0]).get("SequenceDescriptionAdditional", "") if series.attributes else ""
    if extra:
        parts.append(extra)
    name = re.sub(r"[^A-Za-z0-9 ._-]", "", "_".join(parts)).replace(" ", "_")
    return outdir / f"{name}.{filetype}"


def write_series(frames: list[np.ndarray], path: Path, filetype: str, fps: float, rescale: int) -> None:
    """Save frames as an animated GIF or as one PNG mosaic, up-scaled ``rescale`` times."""
    if filetype == "png":
        frames = [tile(frames, cols=math.ceil(math.sqrt(len(frames))))]
    images = [Image.fromarray(f.repeat(rescale, axis=0).repeat(rescale, axis=1)) for f in frames]
    if filetype == "png":
        images[0].save(path)
    else:
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)


def no_images_reason(group: h5py.Group, filename: Path) -> str:
    """One line saying that a group has no image series, and what it holds instead."""
    where = f"group {group.name.lstrip('/')} of {filename} holds no images (no image_* series)"
    data = group.get("data")
    if isinstance(data, h5py.Dataset):
        return (f"{where}: it holds raw data ({data.size} acquisition(s) in {group.name}/data); "
                "reconstruct it first, e.g. with client.py")
    contents = ", ".join(group.keys())
    return f"{where}, only: {contents}" if contents else f"{where}: it is empty"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("filename", type=Path, help="MRD HDF5 input file")
    parser.add_argument("-g", "--in-group", dest="group", help="group (default: last group of the file)")
    parser.add_argument("-s", "--series", help="only this series, e.g. image_0 (default: all)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate of animations")
    parser.add_argument("--filetype", choices=("gif", "png"), default="gif", help="output file type")
    parser.add_argument("-r", "--rescale", type=int, default=1, help="integer up-scaling of output frames")
    parser.add_argument("-o", "--outdir", type=Path, help="output folder (default: next to the input)")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not log written files")
    args = parser.parse_args(argv)
    if args.rescale < 1 or args.fps <= 0:
        parser.error("--rescale must be >= 1 and --fps > 0")
    return args


def convert(args: argparse.Namespace) -> int:
    """Write the chosen series (default: all) of the chosen group; 0, or ToolError (1: no images)."""
    outdir = args.outdir or args.filename.parent
    with _cli.image_group(args.filename, args.group) as (group, grp, names):
        if not names:
            raise _cli.ToolError(no_images_reason(grp, args.filename), status=1)
        if args.series is not None and args.series not in names:
            raise _cli.ToolError(f"group {group} has no series {args.series} (series: {', '.join(names) or 'none'})")
        outdir.mkdir(parents=True, exist_ok=True)
        for name in [args.series] if args.series is not None else names:
            series = mrdfile.read_image_series(grp, name)
            if not len(series.data):
                continue
            path = output_path(outdir, args.filename.stem, group, series, args.filetype)
            frames = draw_rois(series_frames(series), series.attributes)
            write_series(frames, path, args.filetype, args.fps, args.rescale)
            log.info("wrote %d image(s) of %s/%s to %s", len(series.data), group, name, path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _cli.start(parse_args, argv)
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    return _cli.exit_status(log, convert, args)


if __name__ == "__main__":
    sys.exit(main())
