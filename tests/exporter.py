"""Run klag-collector as a real process and read what it serves, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kafkahelp import wait_until
from klag_collector import metrics

Key = Tuple[str, FrozenSet[Tuple[str, str]]]
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(port: int) -> bool:
    """Whether a connection to `port` on 127.0.0.1 is refused (nobody listens there)."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def env_with_repo() -> Dict[str, str]:
    """This process's environment with the working tree first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def fetch(url: str, headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
    """(status, headers, body) of a GET; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get(url: str) -> Tuple[int, bytes]:
    """(status, body) of a GET; HTTP errors are answers, not exceptions."""
    status, _, body = fetch(url)
    return status, body


def write_config(path: Path, cluster: str, bootstrap: str, http_port: int, extra: str = "") -> Path:
    """Write a config polling every second one cluster, all its topics but internal ones."""
    path.write_text(f"""
[exporter]
poll_interval = "1s"
http_host = "127.0.0.1"
http_port = {http_port}

[[clusters]]
name = "{cluster}"
bootstrap_servers = "{bootstrap}"
topic_blacklist = ["^__.*"]
{extra}""")
    return path


def cluster_toml(name: str, bootstrap: str, prefix: str, extra: str = "") -> str:
    """A [[clusters]] entry that only sees the groups and topics named with `prefix`."""
    return f"""
[[clusters]]
name = "{name}"
bootstrap_servers = "{bootstrap}"
group_whitelist = ["^{prefix}"]
topic_whitelist = ["^{prefix}"]
{extra}
"""


def config_toml(port: int, clusters: str, exporter_extra: str = "", kafka_timeout: str = "5s") -> str:
    """An exporter config polling every second at partition granularity."""
    return f"""
[exporter]
poll_interval = "1s"
http_host = "127.0.0.1"
http_port = {port}
granularity = "partition"
{exporter_extra}
[exporter.timestamp_sampling]
cache_ttl = "30s"
[exporter.performance]
kafka_timeout = "{kafka_timeout}"
{clusters}
"""


class Samples:
    """Parsed /metrics: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.values: Dict[Key, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.values[(s.name, frozenset(s.labels.items()))] = s.value

    def find(self, name: str, **labels: str) -> List[Tuple[Dict[str, str], float]]:
        """Every sample of `name` whose labels include `labels`."""
        want = set(labels.items())
        return [
            (dict(lbls), v)
            for (n, lbls), v in self.values.items()
            if n == name and want <= lbls
        ]

    def get(self, name: str, **labels: str) -> Optional[float]:
        """The one sample of `name` matching `labels`, or None when there is none."""
        found = self.find(name, **labels)
        assert len(found) <= 1, f"{name} {labels} matches {len(found)} samples: {found}"
        return found[0][1] if found else None


class ExporterProcess:
    """`python -m klag_collector -c FILE --log-format json [ARGS]` in a subprocess, stopped by PID."""

    def __init__(self, workdir: Path, config_text: str, port: int, args: Sequence[str] = ()) -> None:
        self.port = port
        self.config = workdir / "klag.toml"
        self.config.write_text(config_text)
        self.log = workdir / "exporter.log"
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "klag_collector", "-c", str(self.config), "--log-format", "json",
             *args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
        """(status, headers, body) of a GET; HTTP errors are answers, not exceptions."""
        return fetch(self.url(path), headers)

    def scrape(self) -> Samples:
        status, _, body = self.get("/metrics")
        assert status == 200, body
        return Samples(body.decode())

    def wait_for(self, predicate, timeout: float = 30, what: str = "metrics") -> Samples:
        """Scrape until predicate(samples) is true; return those samples."""
        def attempt() -> Optional[Samples]:
            assert self.proc.poll() is None, f"exporter exited: {self.log.read_text()[-2000:]}"
            try:
                samples = self.scrape()
            except (OSError, AssertionError):
                return None
            return samples if predicate(samples) else None

        return wait_until(attempt, timeout=timeout, interval=0.3, what=what)

    def stop(self) -> int:
        """SIGTERM, then wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


def up_value(body: bytes, cluster: str) -> Optional[float]:
    """kafka_lag_exporter_up of `cluster` in an exposition, or None when absent."""
    for family in text_string_to_metric_families(body.decode()):
        if family.name == metrics.UP.name:
            for sample in family.samples:
                if sample.labels.get(metrics.CLUSTER) == cluster:
                    return sample.value
    return None


def wait_for_up(proc: subprocess.Popen, url: str, cluster: str, log: Path,
                timeout: float = 90) -> bytes:
    """Poll `url` until the cluster's up gauge is 1; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} before serving metrics:\n{log.read_text()}")
        try:
            status, body = get(url)
            if status == 200 and up_value(body, cluster) == 1.0:
                return body
            last = f"HTTP {status}, up={up_value(body, cluster) if status == 200 else None}"
        except OSError as e:
            last = repr(e)
        time.sleep(0.3)
    pytest.fail(f"{url} never reported {metrics.UP.name} 1 for {cluster} ({last}):\n"
                f"{log.read_text()}")


def terminate(proc: subprocess.Popen, timeout: float = 30) -> int:
    """SIGTERM by PID unless it already exited, then its exit status; fail if it outlives `timeout`."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"pid {proc.pid} did not exit within {timeout}s of SIGTERM")


def now_ms() -> int:
    """Wall-clock now in ms, as the broker and the exporter see it."""
    return int(time.time() * 1000)
