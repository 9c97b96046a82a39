"""`twistd -n klag -c FILE` runs the exporter, and SIGTERM shuts it down cleanly.

The plugin is found the way twistd finds any plugin: twisted/plugins/klag_plugin.py on
sys.path (here the working tree, through PYTHONPATH).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from exporter import env_with_repo, free_port, get, refused, terminate, wait_for_up, write_config

TWISTD_SCRIPT = Path(sys.executable).parent / "twistd"


def twistd_command() -> List[str]:
    """twistd of this interpreter: its console script, or its entry point when there is none."""
    if TWISTD_SCRIPT.is_file():
        return [sys.executable, str(TWISTD_SCRIPT)]
    return [sys.executable, "-c",
            "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"]


@pytest.mark.kafka
def test_twistd_serves_metrics_on_the_listen_port_and_stops_on_sigterm(kafka, unique, tmp_path):
    """twistd -n klag --listen serves up=1 for the cluster there (not on http_port); SIGTERM shuts it down."""
    port, config_port = free_port(), free_port()
    config = write_config(tmp_path / "klag.toml", unique, kafka.bootstrap, config_port,
                          '\n[clusters.labels]\nrunner = "twistd-test"\n')
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
        code = terminate(proc)
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
