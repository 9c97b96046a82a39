"""contrib/embed_example.py: a host Twisted daemon that adds the klag-collector service.

The example runs as users would run it, a subprocess of its own, against the session
broker; SIGTERM must stop the host and the embedded exporter together, exit status 0.
"""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import CannotListenError

from exporter import REPO, env_with_repo, free_port, get, refused, terminate, wait_for_up, write_config
from klag_collector.config import parse_config
from klag_collector.service import ListenFailed, listen_failed, make_service, served_at

EXAMPLE = REPO / "contrib" / "embed_example.py"


class Example:
    """The example as a subprocess, its output in a file."""

    def __init__(self, tmp_path: Path, args: List[str]) -> None:
        self.log = tmp_path / "embed.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, str(EXAMPLE)] + args, cwd=tmp_path,
                                         env=env_with_repo(), stdout=out, stderr=subprocess.STDOUT)

    def wait_for_up(self, url: str, cluster: str, timeout: float = 90) -> bytes:
        """Poll `url` until the cluster's up gauge is 1; fail early if the process exits."""
        return wait_for_up(self.proc, url, cluster, self.log, timeout)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM by PID, then the exit status."""
        return terminate(self.proc, timeout)


@pytest.mark.broker
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


@pytest.mark.broker
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


@pytest.mark.subprocess
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


def test_a_taken_port_raises_from_start_service_and_starts_nothing():
    """Embedded, a site that cannot listen raises ListenFailed from startService, as a Twisted
    service does: nothing is started, and the host's process is left to decide."""
    from twisted.internet import endpoints, reactor

    config = parse_config(
        f'[[clusters]]\nname = "c"\nbootstrap_servers = "127.0.0.1:{free_port()}"\n',
        "embedded.toml", "toml")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        endpoint = endpoints.TCP4ServerEndpoint(reactor, port, interface="127.0.0.1")
        klag = make_service(config, reactor, endpoint=endpoint)
        with pytest.raises(ListenFailed) as info:
            klag.startService()
    assert str(info.value) == f"cannot listen on 127.0.0.1:{port}: address already in use"
    assert not klag.running
    # Its children, the cluster's poller and the site, through IServiceCollection.
    assert [child.running for child in klag] == [0, 0]


@pytest.mark.parametrize(
    "error, line",
    [
        (CannotListenError("127.0.0.1", 8000, OSError(errno.EADDRINUSE, "Address already in use")),
         "cannot listen on 127.0.0.1:8000: address already in use"),
        (CannotListenError("", 80, OSError(errno.EACCES, "Permission denied")),
         "cannot listen on 0.0.0.0:80: permission denied"),
        (CannotListenError("::1", 8000,
                           OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")),
         "cannot listen on [::1]:8000: cannot assign requested address"),
        (CannotListenError(None, b"/run/klag.sock", "Cannot acquire lock"),
         "cannot listen: CannotListenError: Couldn't listen on any:b'/run/klag.sock': "
         "Cannot acquire lock."),
        (KeyError("LISTEN_FDS"), "cannot listen: KeyError: 'LISTEN_FDS'"),
    ],
)
def test_listen_failures_are_one_line(error, line):
    """Where the site failed to listen, and why, in one line: host:port on TCP, else the error."""
    assert str(listen_failed(error)) == line


@pytest.mark.parametrize(
    "address, where",
    [
        (IPv4Address("TCP", "127.0.0.1", 8000), "http://127.0.0.1:8000/metrics"),
        (IPv6Address("TCP", "::", 9100), "http://[::]:9100/metrics"),
        (UNIXAddress(b"/run/klag.sock"), "UNIXAddress('/run/klag.sock')"),
    ],
)
def test_the_startup_line_names_where_metrics_are_served(address, where):
    """A TCP port's /metrics URL, brackets around IPv6; another address as Twisted names it."""
    assert served_at(address) == where
