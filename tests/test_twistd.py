"""`twistd -n klag -c FILE` runs the exporter, and SIGTERM shuts it down cleanly.

The plugin is found the way twistd finds any plugin: twisted/plugins/klag_plugin.py on
sys.path (here the working tree, through PYTHONPATH).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

import pytest

from exporter import env_with_repo, free_port, get, refused, terminate, wait_for_up, write_config
from kafkahelp import wait_until
from klag_collector import __version__

TWISTD_SCRIPT = Path(sys.executable).parent / "twistd"


def twistd_command() -> List[str]:
    """twistd of this interpreter: its console script, or its entry point when there is none."""
    if TWISTD_SCRIPT.is_file():
        return [sys.executable, str(TWISTD_SCRIPT)]
    return [sys.executable, "-c",
            "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"]


@pytest.mark.broker
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


@pytest.mark.subprocess
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


# twistd's own lines, before and after the plugin's: "twistd 26.10.0 (...) starting up." etc.
TWISTD_LOGGER = "twisted.scripts._twistd_unix.UnixAppLogger#info"
LOG_LINE = re.compile(r"\S+ \[(?P<system>[^\]]+)\] (?P<message>.*)")
# Interpreter start-up and imports take a second or two on a busy machine; nothing else should.
PROMPT_EXIT = 10.0


def log_records(log: str) -> List[Tuple[str, str]]:
    """(system, message) of each line of a twistd log file, twistd's own lines and debug
    lines left out."""
    records = [LOG_LINE.fullmatch(line) for line in log.splitlines()]
    assert all(records), log
    return [(m["system"], m["message"]) for m in records
            if m and m["system"] != TWISTD_LOGGER and not m["system"].endswith("#debug")]


def serving_config(tmp_path: Path, http_port: int) -> Path:
    """A config serving on 127.0.0.1:`http_port`, polling a cluster nobody answers for."""
    return write_config(tmp_path / "klag.toml", "dead", f"127.0.0.1:{free_port()}", http_port,
                        '\n[exporter.performance]\nkafka_timeout = "2s"\n')


def occupied_port() -> socket.socket:
    """A socket listening on 127.0.0.1, on a port of its own; close it when done."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.subprocess
def test_twistd_exits_1_with_one_line_when_its_port_is_taken(tmp_path):
    """twistd -n klag with its port taken exits 1 at once: one line naming host, port and reason
    in its log, no traceback, its pidfile removed, and no poller started."""
    taken = occupied_port()
    port = taken.getsockname()[1]
    pidfile, logfile = tmp_path / "twistd.pid", tmp_path / "twistd.log"
    started = time.monotonic()
    try:
        result = subprocess.run(
            twistd_command() + ["-n", f"--pidfile={pidfile}", f"--logfile={logfile}",
                                "klag", "-c", str(serving_config(tmp_path, port))],
            cwd=tmp_path, env=env_with_repo(), capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    elapsed = time.monotonic() - started
    log = logfile.read_text()
    assert (result.returncode, result.stdout, result.stderr) == (1, "", ""), log
    assert log_records(log) == [
        ("klag_collector#critical", f"cannot listen on 127.0.0.1:{port}: address already in use")]
    assert not pidfile.exists()
    assert elapsed < PROMPT_EXIT


@pytest.mark.subprocess
def test_twistd_daemon_parent_exits_1_naming_the_taken_port(tmp_path):
    """Daemonizing twistd (no -n): the parent waits for the start, exits 1 and says why."""
    taken = occupied_port()
    port = taken.getsockname()[1]
    pidfile, logfile = tmp_path / "twistd.pid", tmp_path / "twistd.log"
    try:
        result = subprocess.run(
            twistd_command() + [f"--pidfile={pidfile}", f"--logfile={logfile}",
                                "klag", "-c", str(serving_config(tmp_path, port))],
            cwd=tmp_path, env=env_with_repo(), capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
        if pidfile.exists():  # a daemon that started after all: stop it by its PID
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
    line = f"cannot listen on 127.0.0.1:{port}: address already in use"
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"An error has occurred: b'klag_collector.tap.StartFailed: {line}'\n"
                             "Please look at log file for more information.\n")
    assert log_records(logfile.read_text()) == [("klag_collector#critical", line)]
    assert not pidfile.exists()


@pytest.mark.subprocess
def test_twistd_logs_the_url_it_serves(tmp_path):
    """twistd -n klag --listen tcp:0 logs one line with the version and the URL of the port it
    bound, and serves there."""
    logfile = tmp_path / "twistd.log"
    logfile.touch()
    proc = subprocess.Popen(
        twistd_command() + ["-n", f"--pidfile={tmp_path / 'twistd.pid'}", f"--logfile={logfile}",
                            "klag", "-c", str(serving_config(tmp_path, free_port())),
                            "--listen", "tcp:0:interface=127.0.0.1"],
        cwd=tmp_path, env=env_with_repo(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    startup = re.compile(re.escape(f"klag-collector {__version__} serving http://127.0.0.1:")
                         + r"(\d+)" + re.escape("/metrics for 1 cluster(s)"))

    def startup_ports() -> List[int]:
        return [int(m[1]) for system, message in log_records(logfile.read_text())
                if system == "klag_collector#info" and (m := startup.fullmatch(message))]

    try:
        (port,) = wait_until(lambda: startup_ports() or None, timeout=30, what="the startup line")
        assert get(f"http://127.0.0.1:{port}/health") == (200, b"OK\n")
        assert startup_ports() == [port]
    finally:
        code = terminate(proc)
    assert code == -signal.SIGTERM, logfile.read_text()
