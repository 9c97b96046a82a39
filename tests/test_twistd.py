"""`twistd -n klag -c FILE` runs the exporter, and SIGTERM shuts it down cleanly.

The plugin is found the way twistd finds any plugin: twisted/plugins/klag_plugin.py on
sys.path (here the working tree, through PYTHONPATH).
"""

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
from typing import Dict, List, Optional, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from klag_collector import metrics

REPO = Path(__file__).resolve().parent.parent
TWISTD_SCRIPT = Path(sys.executable).parent / "twistd"


def twistd_command() -> List[str]:
    """twistd of this interpreter: its console script, or its entry point when there is none."""
    if TWISTD_SCRIPT.is_file():
        return [sys.executable, str(TWISTD_SCRIPT)]
    return [sys.executable, "-c",
            "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_with_repo() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


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

[clusters.labels]
runner = "twistd-test"
""")
    return path


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


def stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    """SIGTERM by PID, then wait for the exit status."""
    os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"pid {proc.pid} did not exit within {timeout}s of SIGTERM")


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.kafka
def test_twistd_serves_metrics_on_the_listen_port_and_stops_on_sigterm(kafka, unique, tmp_path):
    """twistd -n klag --listen serves up=1 for the cluster there (not on http_port); SIGTERM shuts it down."""
    port, config_port = free_port(), free_port()
    config = write_config(tmp_path / "klag.toml", unique, kafka.bootstrap, config_port)
    pidfile, logfile = tmp_path / "twistd.pid", tmp_path / "twistd.log"
    out = tmp_path / "twistd.out"
    with out.open("wb") as out_file:
        proc = subprocess.Popen(
            twistd_command() + ["-n", f"--pidfile={pidfile}", f"--logfile={logfile}",
                                "klag", "-c", str(config),
                                "--listen", f"tcp:{port}:interface=127.0.0.1"],
            cwd=tmp_path, env=env_with_repo(), stdout=out_file, stderr=subprocess.STDOUT)
    try:
        logfile.touch()
        body = wait_for_up(proc, f"http://127.0.0.1:{port}/metrics", unique, logfile)
        assert 'runner="twistd-test"' in body.decode()
        assert get(f"http://127.0.0.1:{port}/health") == (200, b"OK\n")
        status, ready = get(f"http://127.0.0.1:{port}/ready")
        assert status == 200 and b'"state": "ok"' in ready
        assert refused(config_port), "--listen should replace http_host:http_port"
        assert int(pidfile.read_text()) == proc.pid
    finally:
        code = stop(proc)
    output = out.read_text()
    log = logfile.read_text()
    # twistd shuts down completely, then re-raises the signal that stopped it (Twisted's
    # app._exitWithSignal), so that a supervisor sees why it exited: -SIGTERM is clean.
    assert code == -signal.SIGTERM, log + output
    assert not pidfile.exists()
    assert "Traceback" not in log, log
    assert "Main loop terminated." in log and "Server Shut Down." in log
    assert refused(port)


def test_twistd_rejects_a_bad_config_with_its_reason(tmp_path):
    """twistd klag with an invalid config exits non-zero and names the bad key, without starting."""
    config = tmp_path / "bad.toml"
    config.write_text('[exporter]\npoll_interval = "soon"\n\n[[clusters]]\nname = "x"\n'
                      'bootstrap_servers = "127.0.0.1:9"\n')
    result = subprocess.run(
        twistd_command() + ["-n", "--pidfile=", "-l", "-", "klag", "-c", str(config)],
        cwd=tmp_path, env=env_with_repo(), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "poll_interval" in result.stdout + result.stderr
    assert "starting up" not in result.stdout + result.stderr
