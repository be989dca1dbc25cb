"""Scale-out (issue 17): tools/cluster.py runs three main.py instances behind the real HAProxy
(deploy/haproxy.cfg), and nothing is lost when one of them dies or drains.

One cluster serves the whole module (``tools/cluster.py --instances 3 --port 0``, instances with the
test module ``tests/cluster_modules/slowfft.py``: simplefft with a pause per acquisition, so that a
session lasts about 3 s and can be cut).  Every client is ``client.py`` over real sockets through
HAProxy's port; its images are compared by value with the output of one plain server for the same
64x64, 4-coil phantom.  HAProxy's view (UP, DOWN, running and total sessions per server) is read
from its admin socket.  The tests run in file order; the last one stops the cluster.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, ServerProcess, generate_phantom, images_of, pid_alive, run_client

from tools import cluster as cluster_tool

HAPROXY = shutil.which("haproxy")
CLUSTER = REPO / "tools" / "cluster.py"
CLIENT = REPO / "client.py"
MODULES = Path(__file__).resolve().parent / "cluster_modules"
SLOW_DELAY_S = 0.03  # per acquisition: 96 acquisitions, a session of about 2.9 s
INSTANCES = 3
# deploy/haproxy.cfg checks every 1 s, every 0.5 s while a state changes, down after 2 failures.
DOWN_WITHIN_S = 1.0 + 0.5 + 1.5  # the checks' schedule plus a margin for a loaded 2-core machine
READY_RE = re.compile(r"cluster: MRD on ([\d.]+):(\d+) -> (.*); HAProxy pid (\d+), stats socket (\S+), "
                      r"workdir (.*)$", re.M)
INSTANCE_RE = re.compile(r"(s\d+) [\d.]+:(\d+) \(http (\d+), pid (\d+)\)")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something true; that value, or an AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Cluster:
    """A running ``tools/cluster.py``: its ports, instances and pids, HAProxy's stats."""

    def __init__(self, workdir: Path) -> None:
        if HAPROXY is None:
            pytest.fail("haproxy is not installed (make test installs Debian's haproxy)")
        self.workdir = workdir
        self.out = workdir / "cluster.out"
        env = {**os.environ, "SLOWFFT_DELAY_S": str(SLOW_DELAY_S)}
        cmd = [sys.executable, str(CLUSTER), "--instances", str(INSTANCES), "--port", "0", "--host", "127.0.0.1",
               "--workdir", str(workdir), "--shutdown-grace", "20", "--restart-delay", "2",
               "--", "-v", "-S", str(workdir / "saved"), "--modules", str(MODULES)]
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        match = wait_for(lambda: self.proc.poll() is None and READY_RE.search(self.text()) or self._exited(),
                         60, "the cluster's ready line")
        self.port = int(match.group(2))
        self.http = {name: int(http) for name, _, http, _ in INSTANCE_RE.findall(match.group(3))}
        self.mrd = {name: int(mrd) for name, mrd, _, _ in INSTANCE_RE.findall(match.group(3))}
        self.first_pids = {name: int(pid) for name, _, _, pid in INSTANCE_RE.findall(match.group(3))}
        self.haproxy_pid = int(match.group(4))
        self.socket = Path(match.group(5))
        assert sorted(self.http) == [f"s{k}" for k in range(1, INSTANCES + 1)], match.group(0)

    def _exited(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"cluster.py exited with {self.proc.returncode}:\n{self.text()[-4000:]}")
        return None

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def pid(self, name: str) -> int:
        """The pid of the instance's current run (cluster.py logs each restart)."""
        restarts = re.findall(rf"instance {name} restarted: pid (\d+)", self.text())
        return int(restarts[-1]) if restarts else self.first_pids[name]

    def stats(self) -> dict[str, dict[str, str]]:
        return cluster_tool.server_stats(self.socket)

    def all_up(self) -> bool:
        stats = self.stats()
        return len(stats) == INSTANCES and all(row["status"] == "UP" for row in stats.values())

    def wait_all_up(self, timeout: float = 20.0) -> None:
        wait_for(self.all_up, timeout, f"all instances UP: {self.stats()}", interval=0.1)

    def accepted(self, name: str) -> int:
        """Sessions an instance has accepted so far (its log, all its runs)."""
        return (self.workdir / f"{name}.log").read_text(errors="replace").count("Accepted connection")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return generate_phantom(tmp_path_factory.mktemp("cluster_data") / "phantom.h5", "-m", "64", "-c", "4")


@pytest.fixture(scope="module")
def reference(phantom, tmp_path_factory):
    """The images of one plain server (no HAProxy) for the phantom, with simplefft and with slowfft."""
    tmp = tmp_path_factory.mktemp("cluster_reference")
    srv = ServerProcess(tmp, "--modules", str(MODULES))
    try:
        images = {}
        for module in ("simplefft", "slowfft"):
            out = tmp / f"{module}.h5"
            result = run_client(srv.port, "-c", module, "-o", str(out), "-G", "g", "-q", str(phantom), cwd=tmp)
            assert result.returncode == 0, result.stdout + result.stderr
            images[module] = images_of(out, "g")[0]
    finally:
        assert srv.stop() == 0
    assert images["simplefft"].shape == (1, 1, 1, 64, 64)
    assert np.array_equal(images["slowfft"], images["simplefft"])  # slowfft only waits
    return images["simplefft"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    running = Cluster(tmp_path_factory.mktemp("cluster"))
    yield running
    running.stop()


class Client:
    """One ``client.py`` through HAProxy, running in the background."""

    def __init__(self, port: int, phantom: Path, out: Path, module: str, *extra: str) -> None:
        self.out = out
        self.log = out.with_suffix(".out")
        cmd = [sys.executable, str(CLIENT), "-a", "127.0.0.1", "-p", str(port), "-c", module, "-o", str(out),
               "-G", "g", *extra, str(phantom)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=out.parent, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"client timed out: {self.text()[-2000:]}") from None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def images(self) -> np.ndarray:
        return images_of(self.out, "g")[0]


def running_sessions(cluster: Cluster) -> dict[str, int]:
    return {name: int(row["scur"]) for name, row in cluster.stats().items()}


def start_slow_sessions(cluster: Cluster, phantom: Path, folder: Path, count: int, *extra: str) -> list[Client]:
    """``count`` slowfft sessions, returned once HAProxy forwards all of them (client logs kept with
    ``--retries``, whose retry lines the test counts; else ``-q``)."""
    folder.mkdir(exist_ok=True)
    quiet = () if "--retries" in extra else ("-q",)
    clients = [Client(cluster.port, phantom, folder / f"slow{i}.h5", "slowfft", *quiet, *extra) for i in range(count)]
    wait_for(lambda: sum(running_sessions(cluster).values()) == count, 15, f"{count} running sessions")
    return clients


def check_images(clients: list[Client], reference: np.ndarray) -> None:
    for client in clients:
        assert np.array_equal(client.images(), reference), client.out


def test_rendered_config_passes_haproxy_check(tmp_path, cluster):
    """The template as shipped (the docker-compose services), a rendering for three hosts and the file
    cluster.py rendered all pass ``haproxy -c``."""
    template = cluster_tool.TEMPLATE.read_text()
    for needle in ("mode tcp", "balance leastconn", "http-check send meth GET uri /healthz",
                   "http-check expect status 200", "option redispatch", "timeout client 1h",
                   "#    bind :9443 ssl crt /etc/haproxy/mrd.pem"):
        assert needle in template, needle
    rendered = cluster_tool.render(template, [f"    server r{k} 10.0.0.{k}:9002 port 9080" for k in (1, 2, 3)])
    assert rendered.count("\n    server ") == 3 and "10.0.0.3:9002 port 9080" in rendered
    shipped = [line for line in template.splitlines() if line.startswith("    server ")]
    assert len(shipped) == INSTANCES and cluster_tool.render(template, shipped) == template  # only the block changes
    (tmp_path / "hosts.cfg").write_text(rendered)
    env = {**os.environ, "MRD_BIND": "127.0.0.1:1", "HAPROXY_STATS_SOCKET": str(tmp_path / "s.sock")}
    for path in (cluster_tool.TEMPLATE, tmp_path / "hosts.cfg", cluster.workdir / "haproxy.cfg"):
        check = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, env=env)
        assert check.returncode == 0 and "Configuration file is valid" in check.stdout + check.stderr, \
            f"{path}: {check.stdout}{check.stderr}"
    own = (cluster.workdir / "haproxy.cfg").read_text()
    for name, port in cluster.mrd.items():
        assert f"server {name} 127.0.0.1:{port} port {cluster.http[name]}\n" in own
    with pytest.raises(ValueError):
        cluster_tool.render("global\n", [])
    compose = (REPO / "deploy" / "docker-compose.yml").read_text()
    assert all(f"\n  s{k}: *recon\n" in compose for k in range(1, INSTANCES + 1))
    assert '"--http-port", "9080"' in compose and '"--allow", "172.28.0.2"' in compose
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg" in compose


def test_thirty_sessions_from_ten_clients_all_served(cluster, phantom, reference, tmp_path):
    """30 sessions, 10 at a time: every one exits 0 with the single server's image, and every instance
    served some of them."""
    cluster.wait_all_up()
    before = {name: cluster.accepted(name) for name in cluster.http}

    def one(i: int) -> tuple[subprocess.CompletedProcess, Path]:
        out = tmp_path / f"out{i}.h5"
        return run_client(cluster.port, "-c", "simplefft", "-o", str(out), "-G", "g", "-q", str(phantom),
                          cwd=tmp_path, timeout=60), out

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(one, range(30)))
    failed = [r.stdout[-1000:] + r.stderr[-1000:] for r, _ in results if r.returncode != 0]
    assert not failed, failed
    for _, out in results:
        assert np.array_equal(images_of(out, "g")[0], reference), out
    served = {name: cluster.accepted(name) - before[name] for name in cluster.http}
    assert sum(served.values()) == 30, served
    assert all(n > 0 for n in served.values()), served


def _kill_one_while_sessions_run(cluster: Cluster, phantom: Path, reference: np.ndarray, tmp_path: Path,
                                 *client_flags: str) -> tuple[list[Client], int, str]:
    """Six slow sessions, SIGKILL to the instance with most of them, four new sessions at once: those
    must all succeed (HAProxy retries them elsewhere), the instance is marked down within the check
    interval and restarted.  Returns the slow clients, how many ran on the victim, the victim."""
    cluster.wait_all_up()
    slow = start_slow_sessions(cluster, phantom, tmp_path / "slow", 6, *client_flags)
    running = running_sessions(cluster)
    victim = max(running, key=running.get)
    pid = cluster.pid(victim)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    later = [Client(cluster.port, phantom, tmp_path / f"later{i}.h5", "simplefft", "-q") for i in range(4)]
    wait_for(lambda: cluster.stats()[victim]["status"].startswith("DOWN"), DOWN_WITHIN_S,
             f"HAProxy to mark {victim} down")
    down_after = time.monotonic() - killed_at
    assert down_after <= DOWN_WITHIN_S
    assert [c.wait() for c in later] == [0] * 4, [c.text()[-1500:] for c in later]
    check_images(later, reference)
    wait_for(lambda: f"instance {victim} exited with -9; restarting" in cluster.text(), 5, "the restart log line")
    wait_for(lambda: cluster.pid(victim) != pid, 10, f"{victim} restarted")
    wait_for(lambda: cluster.stats()[victim]["status"] == "UP", 15, f"{victim} UP again")
    assert not pid_alive(pid)
    # Back in the pool: further sessions succeed (and may land on it again).
    again = [Client(cluster.port, phantom, tmp_path / f"again{i}.h5", "simplefft", "-q") for i in range(3)]
    assert [c.wait() for c in again] == [0] * 3, [c.text()[-1500:] for c in again]
    check_images(again, reference)
    return slow, running[victim], victim


def test_killed_instance_fails_only_its_sessions_and_comes_back(cluster, phantom, reference, tmp_path):
    slow, on_victim, victim = _kill_one_while_sessions_run(cluster, phantom, reference, tmp_path)
    codes = [c.wait() for c in slow]
    assert on_victim >= 1
    failed = [c for c, code in zip(slow, codes) if code != 0]
    assert len(failed) == on_victim, (victim, codes)  # exactly the sessions that ran on the killed instance
    check_images([c for c, code in zip(slow, codes) if code == 0], reference)


def test_killed_instance_sessions_succeed_with_client_retries(cluster, phantom, reference, tmp_path):
    """The same with ``client.py --retries 2``: the cut sessions are sent again (one retry line each)
    and every client gets its image."""
    help_text = subprocess.run([sys.executable, str(CLIENT), "--help"], capture_output=True, text=True).stdout
    assert "--retries" in help_text
    slow, on_victim, victim = _kill_one_while_sessions_run(cluster, phantom, reference, tmp_path, "--retries", "2")
    codes = [c.wait() for c in slow]
    assert on_victim >= 1
    assert codes == [0] * len(slow), (victim, [c.text()[-1500:] for c in slow])
    check_images(slow, reference)
    retried = [c for c in slow if "Attempt 2 of 3" in c.text()]
    assert len(retried) == on_victim, (victim, on_victim, [c.text()[-800:] for c in slow])


def _health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_sigterm_to_one_instance_drains_it(cluster, phantom, reference, tmp_path):
    """SIGTERM to an instance with a running session: its /healthz answers 503, HAProxy marks it down
    and sends new sessions elsewhere, its running session completes with the right image, it exits 0
    and cluster.py starts it again."""
    cluster.wait_all_up()
    slow = start_slow_sessions(cluster, phantom, tmp_path / "slow", 3)
    running = running_sessions(cluster)
    victim = max(running, key=running.get)
    pid = cluster.pid(victim)
    os.kill(pid, signal.SIGTERM)
    signalled_at = time.monotonic()
    wait_for(lambda: _health(cluster.http[victim]) == 503, 5, f"{victim}'s /healthz to answer 503")
    wait_for(lambda: cluster.stats()[victim]["status"].startswith("DOWN"), DOWN_WITHIN_S,
             f"HAProxy to mark {victim} down")
    assert cluster.stats()[victim]["check_status"] == "L7STS"  # the 503, not a refused connection
    assert pid_alive(pid), "the instance must still be serving its running session"
    total = {name: int(row["stot"]) for name, row in cluster.stats().items()}
    new = [Client(cluster.port, phantom, tmp_path / f"new{i}.h5", "simplefft", "-q") for i in range(4)]
    assert [c.wait() for c in new] == [0] * 4, [c.text()[-1500:] for c in new]
    check_images(new, reference)
    after = {name: int(row["stot"]) for name, row in cluster.stats().items()}
    assert after[victim] == total[victim], (victim, total, after)
    assert sum(after.values()) - sum(total.values()) == 4
    assert [c.wait() for c in slow] == [0] * 3, [c.text()[-1500:] for c in slow]
    check_images(slow, reference)
    wait_for(lambda: f"instance {victim} exited with 0; restarting" in cluster.text(), 10,
             f"{victim} to exit 0 after its session")
    assert time.monotonic() - signalled_at < 20
    wait_for(lambda: cluster.pid(victim) != pid, 10, f"{victim} restarted")
    cluster.wait_all_up()


def test_sigterm_to_cluster_drains_and_exits_0(cluster, phantom, reference, tmp_path):
    """SIGTERM to cluster.py while sessions run: they finish with their images, every instance and
    HAProxy end, and cluster.py exits 0."""
    cluster.wait_all_up()
    slow = start_slow_sessions(cluster, phantom, tmp_path / "slow", 3)
    pids = [cluster.pid(name) for name in cluster.http] + [cluster.haproxy_pid]
    cluster.proc.send_signal(signal.SIGTERM)
    assert [c.wait() for c in slow] == [0] * 3, [c.text()[-1500:] for c in slow]
    check_images(slow, reference)
    assert cluster.proc.wait(30) == 0, cluster.text()[-3000:]
    assert "stopped: 3 instance(s) drained" in cluster.text()
    assert not [pid for pid in pids if pid_alive(pid)]
