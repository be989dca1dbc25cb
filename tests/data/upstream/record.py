#!/usr/bin/env python3
"""Re-make the upstream parity data of tests/test_upstream_parity.py (a maintainer's tool).

Usage (from anywhere; Python: the repository's venv, which has every package upstream needs)::

    .venv/bin/python tests/data/upstream/record.py /path/to/python-ismrmrd-server [--inputs-only]

1. Inputs (``inputs/``, made with this repository's tools, never with upstream's):

   * ``raw.h5``: Debian's C++ phantom, ``ismrmrd_generate_cartesian_shepp_logan -o raw.h5 -m 64 -c 2
     -n 0`` (ismrmrd-tools), reduced to ``xml`` and ``data`` (its ``coil_images``, ``csm`` and
     ``phantom`` truths dropped). The C++ generator writes zero position and direction vectors and
     no scanner fields, so geometry and header fields are added (:func:`add_geometry`): an oblique
     in-plane rotation, a position, a table position, time stamps that grow per readout, the
     Siemens centre-line counter ``idx.user[5] = 32``, and in the XML a protocol name, vendor,
     model and field strength (upstream's ``report`` needs the field strength).
   * ``images.h5``: ``tools/dicom2mrd.py`` of three DICOM files made from pydicom's ``MR_small.dcm``
     (64 x 64 int16, axial): series 0 holds the file itself (InstanceNumber 1) and its pixels halved
     and transposed (2); series 1 the file marked as a phase image (ImageType
     ``ORIGINAL\\PRIMARY\\P``), which the modules pass through. MagneticFieldStrength 1.5,
     Manufacturer and model are set (upstream's report needs a field strength); the DicomJson
     attribute is dropped (15 kB per image, never compared).
   * ``flow.h5``: a synthetic phase-contrast set (:func:`flow_images`): one magnitude image (series 1),
     then int16 phase images of two flow directions (``FLOW_DIR_F_TO_H`` in series 2, then
     ``FLOW_DIR_A_TO_P`` in series 3), 2 slices x 4 cardiac phases of 32 x 32, zero velocity 2048,
     a noise band whose phase jumps between frames, static tissue and a vessel whose velocity
     changes smoothly.

2. Outputs (``outputs.h5``, one group per case of :data:`CASES`): upstream's ``main.py`` is started
   from a temporary copy of the checkout given as the argument, with this Python, on a free port of
   127.0.0.1; each case runs upstream's ``client.py -c <module> -o out.h5 -G out inputs/<input>`` in
   an empty folder that holds ``<module>.json`` when the case has JSON parameters. Every returned
   ``image_*`` series (``data`` gzip-compressed, ``header``, ``attributes``) is copied into the case's
   group, whose attributes name the module, the input, the JSON text and the command; the file's
   attribute ``upstream_commit`` names the commit. Nothing of upstream's code was changed for the
   recording (it runs unchanged on Python 3.11, ismrmrd 1.15, numpy 2.4, matplotlib 3.11); if a later
   upstream needs a fix to run here, make it in the temporary copy (``patch_upstream`` below) and
   write it down in README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))

import mrdfile  # noqa: E402

INPUTS = HERE / "inputs"
OUTPUTS = HERE / "outputs.h5"

# (case, module, input, JSON parameters or None): what the parity tests compare.
CASES = [
    ("simplefft_raw", "simplefft", "raw.h5", None),
    ("invertcontrast_raw", "invertcontrast", "raw.h5", {"options": "", "sendOriginal": "False"}),
    ("invertcontrast_raw_roi", "invertcontrast", "raw.h5", {"options": "roi"}),
    ("invertcontrast_raw_colormap", "invertcontrast", "raw.h5", {"options": "colormap"}),
    ("invertcontrast_raw_rgb", "invertcontrast", "raw.h5", {"options": "rgb"}),
    ("invertcontrast_raw_complex", "invertcontrast", "raw.h5", {"options": "complex"}),
    ("invertcontrast_images", "invertcontrast", "images.h5", {"options": "", "sendOriginal": "False"}),
    ("invertcontrast_images_original", "invertcontrast", "images.h5", {"options": "", "sendOriginal": "True"}),
    ("invertcontrast_images_roi", "invertcontrast", "images.h5", {"options": "roi"}),
    ("invertcontrast_images_rgb", "invertcontrast", "images.h5", {"options": "rgb"}),
    ("invertcontrast_images_complex", "invertcontrast", "images.h5", {"options": "complex"}),
    ("analyzeflow_flow", "analyzeflow", "flow.h5", None),
    ("report_raw", "report", "raw.h5", None),
    ("report_images", "report", "images.h5", None),
]

# --- compact files -----------------------------------------------------------------------------


def compact_copy(src: h5py.Group, dst: h5py.Group, shared_header_type: bool = False) -> None:
    """Copy a group's datasets without the 256-record chunks the MRD writers use (a 64-readout file
    would otherwise take a 96 kB chunk); image pixels gzip-compressed; with ``shared_header_type`` all
    ``header`` datasets use one committed ImageHeader type (``/image_header_type``)."""
    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for name, item in src.items():
        if isinstance(item, h5py.Group):
            compact_copy(item, dst.create_group(name), shared_header_type)
        elif name == "data" and item.dtype.names is None:
            dst.create_dataset(name, data=item[...], compression="gzip", compression_opts=9, shuffle=True,
                               chunks=item.shape)
        elif name == "header" and shared_header_type:  # one committed ImageHeader type per file, not one per series
            if "image_header_type" not in dst.file:
                dst.file["image_header_type"] = item.dtype
            dst.create_dataset(name, data=item[...], dtype=dst.file["image_header_type"])
        else:
            dst.create_dataset(name, data=item[...], dtype=item.dtype)


def rewrite_compact(path: Path) -> None:
    tmp = path.with_suffix(".tmp.h5")
    with h5py.File(path, "r") as src, h5py.File(tmp, "w", libver="latest") as dst:
        compact_copy(src, dst)
    tmp.replace(path)


# --- inputs -----------------------------------------------------------------------------------

ROTATION = 0.3  # rad: read_dir (cos, sin, 0), phase_dir (-sin, cos, 0)
POSITION = (12.5, -7.25, 30.0)
TABLE = (0.0, 0.0, -120.0)
CENTRE_LINE = 32
HEADER_ADDITIONS = {
    "measurementInformation": "<measurementInformation><patientPosition>HFS</patientPosition>"
                              "<protocolName>ParityPhantom</protocolName></measurementInformation>",
    "acquisitionSystemInformation": "<systemVendor>ISMRMRD</systemVendor><systemModel>CppGenerator</systemModel>"
                                    "<systemFieldStrength_T>2.89</systemFieldStrength_T>",
}


def directions(angle: float = ROTATION):
    c, s = np.cos(angle), np.sin(angle)
    return (c, s, 0.0), (-s, c, 0.0), (0.0, 0.0, 1.0)


def add_geometry(path: Path) -> None:
    """Geometry, time stamps, ``user[5]`` and scanner/protocol fields for the C++ phantom; the file
    is rewritten with ``xml`` and ``data`` only."""
    with h5py.File(path, "r") as f:
        xml = mrdfile.read_xml(f["dataset"])
        block = mrdfile.read_acquisitions(f["dataset"])
    xml = xml.replace("<acquisitionSystemInformation>",
                      HEADER_ADDITIONS["measurementInformation"] + "<acquisitionSystemInformation>"
                      + HEADER_ADDITIONS["acquisitionSystemInformation"], 1)
    head = block.heads
    head["read_dir"], head["phase_dir"], head["slice_dir"] = directions()
    head["position"] = POSITION
    head["patient_table_position"] = TABLE
    head["measurement_uid"] = 7
    head["acquisition_time_stamp"] = 400000 + 10 * np.arange(len(head))
    head["physiology_time_stamp"][:, 0] = 3 * np.arange(len(head))
    head["idx"]["user"][:, 5] = CENTRE_LINE
    with h5py.File(path, "w") as f:
        group = f.create_group("dataset")
        mrdfile.write_xml(group, xml)
        mrdfile.append_acquisitions(group, block)
    rewrite_compact(path)


def make_raw(path: Path) -> None:
    tool = shutil.which("ismrmrd_generate_cartesian_shepp_logan")
    if not tool:
        sys.exit("ismrmrd_generate_cartesian_shepp_logan not found (apt-get install ismrmrd-tools)")
    path.unlink(missing_ok=True)  # the C++ generator appends to an existing file
    subprocess.run([tool, "-o", str(path), "-m", "64", "-c", "2", "-n", "0"], check=True, capture_output=True)
    add_geometry(path)


def make_images(path: Path) -> None:
    """dicom2mrd of three files made from MR_small (see the module text); the DicomJson attribute
    (15 kB of base64 per image, never compared) is dropped to keep the data small."""
    import ismrmrd
    import pydicom
    from pydicom.data import get_testdata_file

    source = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))
    source.MagneticFieldStrength = 1.5  # upstream's report needs a field strength
    source.Manufacturer, source.ManufacturerModelName = "pydicom", "MR_small"
    with tempfile.TemporaryDirectory() as folder:
        for number in (1, 2, 3):
            ds = source.copy()
            ds.InstanceNumber = number
            ds.SOPInstanceUID = f"{source.SOPInstanceUID}.{number}"
            if number == 2:
                ds.PixelData = np.ascontiguousarray(source.pixel_array.T // 2).astype(np.int16).tobytes()
            ds.SeriesNumber = 1
            if number == 3:  # its own series: upstream's client cannot store RGB or report images beside it
                ds.ImageType = ["ORIGINAL", "PRIMARY", "P"]
                ds.SeriesNumber = 2
                ds.SeriesInstanceUID = f"{source.SeriesInstanceUID}.2"
            ds.save_as(Path(folder) / f"im{number}.dcm")
        subprocess.run([sys.executable, str(REPO / "tools" / "dicom2mrd.py"), folder, "-o", str(path)],
                       check=True, capture_output=True)
    with h5py.File(path, "r+") as f:
        for name in mrdfile.image_series_names(f["dataset"]):
            attributes = f["dataset"][name]["attributes"]
            for i, text in enumerate(attributes[...]):
                meta = ismrmrd.Meta.deserialize(text)
                del meta["DicomJson"]
                attributes[i] = meta.serialize()
    rewrite_compact(path)


FLOW_DIRECTIONS = ("FLOW_DIR_F_TO_H", "FLOW_DIR_A_TO_P")  # arrival order (not sorted)
FLOW_PHASES, FLOW_SLICES, FLOW_SIZE = 4, 2, 32


def flow_frames(direction: int, slice_: int) -> np.ndarray:
    """``[phase, y, x]`` int16: noise band (rows 0-5, phase jumping by about 3000 between frames),
    static tissue at 2048 + 30 + ..., a vessel (rows 12-21, columns 8-15) whose velocity changes smoothly."""
    rng = np.random.default_rng(100 * direction + slice_)
    frames = np.full((FLOW_PHASES, FLOW_SIZE, FLOW_SIZE), 2048 + 30 + 5 * direction + slice_, dtype=np.int64)
    frames[:, :, 24:] += np.arange(8) * 3  # a gentle spatial gradient, static in time
    jumps = np.array([0, 3000, 0, 3000])[:, None, None]
    frames[:, 0:6, :] = jumps + rng.integers(0, 1000, (FLOW_PHASES, 6, FLOW_SIZE))
    frames[:, 12:22, 8:16] = 2048 + np.array([200, 420, 610, 380])[:, None, None] * (1 - 2 * direction)
    return frames.clip(0, 4095).astype(np.int16)


def flow_images():
    import ismrmrd

    read, phase, slice_dir = directions(-0.2)

    def image(pixels, image_type, series, index, slice_=0, phase_=0, meta=None):
        im = ismrmrd.Image.from_array(pixels, transpose=False)
        head = im.getHead()
        head.image_type, head.image_series_index, head.image_index = image_type, series, index
        head.slice, head.phase = slice_, phase_
        head.read_dir, head.phase_dir, head.slice_dir = read, phase, slice_dir
        head.position = (1.5, -2.0, 10.0 + 8.0 * slice_)
        head.patient_table_position = TABLE
        head.field_of_view = (240.0, 240.0, 6.0)
        head.acquisition_time_stamp = 500000 + 40 * phase_
        head.physiology_time_stamp = (100 * phase_, 0, 0)
        im.setHead(head)
        im.meta = ismrmrd.Meta(meta or {})
        return im

    images = [image(np.full((FLOW_SIZE, FLOW_SIZE), 900, np.int16), ismrmrd.IMTYPE_MAGNITUDE, 1, 1,
                    meta={"SequenceDescription": "magnitude"})]
    for d, direction in enumerate(FLOW_DIRECTIONS):
        for s in range(FLOW_SLICES):
            for p, frame in enumerate(flow_frames(d, s)):
                images.append(image(frame, ismrmrd.IMTYPE_PHASE, 2 + d, 1 + p + s * FLOW_PHASES, s, p,
                                    {"FlowDirDisplay": direction, "FlowVelocity": "150"}))
    return images


def make_flow(path: Path, xml: str) -> None:
    images = flow_images()
    heads = np.frombuffer(b"".join(bytes(im.getHead()) for im in images), dtype=mrdfile.IMAGE_HEADER_DTYPE)
    with h5py.File(path, "w") as f:
        group = f.create_group("dataset")
        mrdfile.write_xml(group, xml)
        mrdfile.append_images(group, heads, [im.attribute_string for im in images], [im.data for im in images])
    rewrite_compact(path)


def make_inputs() -> None:
    INPUTS.mkdir(exist_ok=True)
    make_raw(INPUTS / "raw.h5")
    make_images(INPUTS / "images.h5")
    with h5py.File(INPUTS / "raw.h5", "r") as f:
        xml = mrdfile.read_xml(f["dataset"])
    make_flow(INPUTS / "flow.h5", xml)


# --- upstream's server and client --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def patch_upstream(copy: Path) -> None:
    """Changes needed for upstream to run here: none at the recorded commit."""


def upstream_commit(checkout: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def keep_outputs(result: Path, target: h5py.Group) -> None:
    """The returned ``image_*`` series of ``result`` (group ``out``) into ``target``."""
    with h5py.File(result, "r") as src:
        for name in sorted(k for k in src["out"] if k.startswith("image")):
            compact_copy(src["out"][name], target.create_group(name), shared_header_type=True)


def record(checkout: Path) -> None:
    commit = upstream_commit(checkout)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        copy = tmp / "upstream"
        shutil.copytree(checkout, copy, ignore=shutil.ignore_patterns(".git"))
        patch_upstream(copy)
        port = free_port()
        env = dict(os.environ, MPLBACKEND="Agg")
        log = open(tmp / "server.log", "w")
        server = subprocess.Popen([sys.executable, "main.py", "-H", "127.0.0.1", "-p", str(port), "-v"],
                                  cwd=copy, stdout=log, stderr=subprocess.STDOUT, env=env)
        outputs = h5py.File(OUTPUTS.with_suffix(".tmp.h5"), "w", libver="latest")
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            import matplotlib
            outputs.attrs["upstream_commit"] = commit
            # report's pixels are matplotlib's text rendering: the tests compare them exactly only
            # with the version that made them.
            outputs.attrs["matplotlib"] = matplotlib.__version__
            outputs.attrs["numpy"] = np.__version__
            for case, module, source, parameters in CASES:
                work = tmp / case
                work.mkdir()
                json_text = ""
                if parameters is not None:
                    json_text = json.dumps({"version": "1.1.0", "parameters": parameters})
                    (work / f"{module}.json").write_text(json_text)
                args = ["-c", module, "-o", "out.h5", "-G", "out", f"inputs/{source}"]
                cmd = [sys.executable, str(copy / "client.py"), "-a", "127.0.0.1", "-p", str(port), *args[:-1],
                       str(INPUTS / source)]
                run = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, timeout=300)
                if run.returncode != 0 or not (work / "out.h5").exists():
                    sys.exit(f"{case}: upstream client failed\n{run.stdout}{run.stderr}")
                group = outputs.create_group(case)
                group.attrs.update({"module": module, "input": f"inputs/{source}", "json": json_text,
                                    "command": " ".join(["client.py", *args])})
                keep_outputs(work / "out.h5", group)
                print(f"{case}: {', '.join(group)}")
        finally:
            outputs.close()
            server.terminate()
            server.wait(10)
            log.close()
    OUTPUTS.with_suffix(".tmp.h5").replace(OUTPUTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, nargs="?", help="python-ismrmrd-server work tree")
    parser.add_argument("--inputs-only", action="store_true", help="only re-make inputs/")
    args = parser.parse_args()
    make_inputs()
    if not args.inputs_only:
        if args.checkout is None or not (args.checkout / "invertcontrast.py").exists():
            parser.error("give the path of a python-ismrmrd-server work tree")
        record(args.checkout.resolve())


if __name__ == "__main__":
    main()
