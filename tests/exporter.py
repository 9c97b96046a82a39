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
from typing import Dict, FrozenSet, List, Optional, Tuple

from prometheus_client.parser import text_string_to_metric_families

from kafkahelp import wait_until

Key = Tuple[str, FrozenSet[Tuple[str, str]]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def config_toml(port: int, clusters: str, exporter_extra: str = "") -> str:
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
kafka_timeout = "5s"
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
    """`python -m klag_collector -c FILE` in a subprocess, stopped by PID."""

    def __init__(self, workdir: Path, config_text: str, port: int) -> None:
        self.port = port
        self.config = workdir / "klag.toml"
        self.config.write_text(config_text)
        self.log = workdir / "exporter.log"
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "klag_collector", "-c", str(self.config), "--log-format", "json"],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
        """(status, headers, body) of a GET; HTTP errors are answers, not exceptions."""
        request = urllib.request.Request(self.url(path), headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

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


def now_ms() -> int:
    """Wall-clock now in ms, as the broker and the exporter see it."""
    return int(time.time() * 1000)
