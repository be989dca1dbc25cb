"""Load: 8 concurrent clients, each sending its own ~50 MB raw-data file, get the serial result.

One phantom (-m 256 -c 16 -r 3: 800 acquisitions, 52.7 MB of headers + data, 3 images) is
generated once and hard-linked (or copied) to 8 input files. Against a server in threads mode
and in ``-m`` mode, 8 ``client.py -c simplefft`` processes run at once; every one must exit 0
and return pixels equal (``np.array_equal``) to a serial run against the same server.
"""
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, ServerProcess, generate_phantom, images_of, run_client

CLIENTS = 8
PHANTOM_ARGS = ("-m", "256", "-c", "16", "-r", "3")  # 52.7 MB of acquisitions, 3 images
IMAGES = 3
CLIENT_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("load_data")
    source = generate_phantom(folder / "phantom.h5", *PHANTOM_ARGS)
    paths = []
    for i in range(CLIENTS):
        path = folder / f"input{i}.h5"
        try:
            os.link(source, path)
        except OSError:
            shutil.copy(source, path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_eight_concurrent_50mb_clients_match_the_serial_run(inputs, tmp_path, mode):
    srv = ServerProcess(tmp_path, *(["-m"] if mode == "processes" else []))
    procs = []
    try:
        serial = tmp_path / "serial.h5"
        result = run_client(srv.port, "-c", "simplefft", "-o", str(serial), "-G", "g", str(inputs[0]))
        assert result.returncode == 0, result.stdout + result.stderr
        outs = [tmp_path / f"out{i}.h5" for i in range(CLIENTS)]
        for path, out in zip(inputs, outs):
            procs.append(subprocess.Popen(
                [sys.executable, str(REPO / "client.py"), "-a", "127.0.0.1", "-p", str(srv.port), "-c", "simplefft",
                 "-o", str(out), "-G", "g", "-q", str(path)],
                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        outputs = [p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0] for p in procs]
        codes = [p.returncode for p in procs]
        assert codes == [0] * CLIENTS, "\n".join(o[-2000:] for o, c in zip(outputs, codes) if c)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert srv.stop() == 0
    expected = images_of(serial, "g")[0]
    assert expected.shape == (IMAGES, 1, 1, 256, 256)
    for out in outs:
        assert np.array_equal(images_of(out, "g")[0], expected), out
