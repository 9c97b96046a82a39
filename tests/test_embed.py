"""contrib/embed_example.py: a host Twisted daemon that adds the klag-collector service.

The example runs as users would run it, a subprocess of its own, against the session
broker; SIGTERM must stop the host and the embedded exporter together, exit status 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from klag_collector import metrics

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "contrib" / "embed_example.py"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def get(url: str) -> Tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def up_value(body: bytes, cluster: str) -> Optional[float]:
    """kafka_lag_exporter_up of `cluster` in an exposition, or None when absent."""
    for family in text_string_to_metric_families(body.decode()):
        if family.name == metrics.UP.name:
            for sample in family.samples:
                if sample.labels.get(metrics.CLUSTER) == cluster:
                    return sample.value
    return None


def write_config(path: Path, cluster: str, bootstrap: str, http_port: int) -> Path:
    path.write_text(f"""
[exporter]
poll_interval = "1s"
http_host = "127.0.0.1"
http_port = {http_port}

[[clusters]]
name = "{cluster}"
bootstrap_servers = "{bootstrap}"
topic_blacklist = ["^__.*"]
""")
    return path


class Example:
    """The example as a subprocess, its output in a file."""

    def __init__(self, tmp_path: Path, args: List[str]) -> None:
        self.log = tmp_path / "embed.log"
        env: Dict[str, str] = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, str(EXAMPLE)] + args, cwd=tmp_path,
                                         env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_for_up(self, url: str, cluster: str, timeout: float = 90) -> bytes:
        """Poll `url` until the cluster's up gauge is 1; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                status, body = get(url)
                if status == 200 and up_value(body, cluster) == 1.0:
                    return body
                last = f"HTTP {status}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.3)
        pytest.fail(f"{url} never reported {metrics.UP.name} 1 for {cluster} ({last}):\n"
                    f"{self.log.read_text()}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM by PID, then the exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"pid {self.proc.pid} did not exit within {timeout}s of SIGTERM")


@pytest.mark.kafka
def test_host_site_serves_the_exporter_metrics_and_stops_on_sigterm(kafka, unique, tmp_path):
    """The host's own port serves its page, the exporter's /metrics (up=1) and /klag/ready; SIGTERM exits 0."""
    port, config_port = free_port(), free_port()
    config = write_config(tmp_path / "klag.toml", unique, kafka.bootstrap, config_port)
    example = Example(tmp_path, ["-c", str(config), "--port", str(port)])
    try:
        example.wait_for_up(f"http://127.0.0.1:{port}/metrics", unique)
        status, page = get(f"http://127.0.0.1:{port}/")
        assert status == 200 and page.startswith(b"host daemon:")
        assert get(f"http://127.0.0.1:{port}/health") == (200, b"host OK\n")
        for path in ("/ready", "/klag/ready"):
            status, ready = get(f"http://127.0.0.1:{port}{path}")
            assert status == 200, path
            assert json.loads(ready)["clusters"][unique]["state"] == "ok"
        status, exporter_page = get(f"http://127.0.0.1:{port}/klag/")
        assert status == 200 and unique.encode() in exporter_page
        # serve_http=False: the exporter opened no port of its own.
        assert refused(config_port)
    finally:
        code = example.stop()
    log = example.log.read_text()
    assert code == 0, log
    assert "Traceback" not in log, log
    assert "Main loop terminated." in log
    assert refused(port)


@pytest.mark.kafka
def test_exporter_can_keep_its_own_port_inside_the_host(kafka, unique, tmp_path):
    """With --exporter-port the embedded service also serves its own Site there; SIGTERM closes both."""
    port, exporter_port = free_port(), free_port()
    config = write_config(tmp_path / "klag.toml", unique, kafka.bootstrap, free_port())
    example = Example(tmp_path, ["-c", str(config), "--port", str(port),
                                 "--exporter-port", str(exporter_port)])
    try:
        example.wait_for_up(f"http://127.0.0.1:{exporter_port}/metrics", unique)
        example.wait_for_up(f"http://127.0.0.1:{port}/metrics", unique)
        assert get(f"http://127.0.0.1:{exporter_port}/health") == (200, b"OK\n")
        assert get(f"http://127.0.0.1:{port}/health") == (200, b"host OK\n")
    finally:
        code = example.stop()
    assert code == 0, example.log.read_text()
    assert refused(port) and refused(exporter_port)


def test_example_refuses_a_bad_config_with_status_2(tmp_path):
    """A config error is one line naming the problem, exit status 2, no port opened."""
    config = tmp_path / "bad.toml"
    config.write_text("[[clusters]]\nname = \"\"\nbootstrap_servers = \"127.0.0.1:9\"\n")
    port = free_port()
    example = Example(tmp_path, ["-c", str(config), "--port", str(port)])
    code = example.proc.wait(60)
    log = example.log.read_text()
    assert code == 2, log
    assert log.startswith("embed_example: ") and "clusters[0].name" in log
    assert len(log.strip().splitlines()) == 1
    assert refused(port)
