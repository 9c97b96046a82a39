"""Bootstraps that never answer: every Kafka call is bounded by performance.kafka_timeout.

No broker is needed: the test itself plays a black-holed port (connections are accepted by
the kernel's listen backlog and never read or answered) and a TLS port that a plaintext
client talks to. Everything listens on 127.0.0.1 only.

A call that timed out leaves no thread behind: closing the clients (reset) fails the wait
of a thread still blocked in kafka-python, which the unit tests here show with real threads
under a clock-driven poller, and with a real kafka-python bootstrap on the black hole.
"""

from __future__ import annotations

import json
import queue
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import pytest
from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from exporter import ExporterProcess, config_toml, free_port
from fakes import FakeSource, one_partition_data, pollers_on_clock
from klag_collector.config import Performance
from klag_collector.kafka_io import KafkaIO
from klag_collector.model import GroupInfo

KAFKA_TIMEOUT = 2.0


def _config(port: int, bootstrap: str) -> str:
    silent = f'[[clusters]]\nname = "silent"\nbootstrap_servers = "{bootstrap}"\n'
    return config_toml(port, silent, kafka_timeout=f"{KAFKA_TIMEOUT:g}s")


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A port whose connections complete (listen backlog) but are never accepted, read or answered."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1: (cert, key) PEM files."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("neither the cryptography package nor the openssl CLI is available")
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=60)
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(private.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    key.chmod(0o600)
    return cert, key


class _TlsServer:
    """Accepts connections and insists on a TLS handshake, as a broker's SSL listener does.

    A plaintext Kafka request fails the handshake; the server answers with the TLS alert
    and then holds the connection open, as a plaintext client sees a hung TLS listener.
    """

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.failed_handshakes = 0
        self._held: List[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tls-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            conn.settimeout(5)
            try:
                tls = self.context.wrap_socket(conn, server_side=True)
                self._held.append(tls)
            except (ssl.SSLError, OSError):
                self.failed_handshakes += 1
                self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        for conn in self._held:
            try:
                conn.close()
            except OSError:
                pass


@pytest.fixture
def tls_port(tmp_path) -> Iterator[_TlsServer]:
    """A TLS-only listener with a self-signed certificate generated for this test."""
    server = _TlsServer(*_self_signed(tmp_path))
    try:
        yield server
    finally:
        server.close()


def _is_timeout(error: str, bootstrap: str) -> bool:
    """Our own kafka_timeout guard ("timed out") or kafka-python's bootstrap timeout, whichever
    fires first, or a connection error that names the bootstrap and says why."""
    return (error in ("timed out", f"KafkaTimeoutError: Unable to bootstrap from ['{bootstrap}']")
            or error.startswith(f"ConnectError: cannot connect to {bootstrap}: "))


def _failures(s) -> float:
    return s.get("kafka_lag_exporter_cycle_failures_total", cluster_name="silent") or 0


def _check_silent_cluster(tmp_path: Path, bootstrap: str) -> None:
    """The expectations shared by every never-answering bootstrap."""
    port = free_port()
    exporter = ExporterProcess(tmp_path, _config(port, bootstrap), port)
    try:
        started = time.monotonic()
        s = exporter.wait_for(lambda s: _failures(s) >= 1, timeout=KAFKA_TIMEOUT + 20,
                              what="the first cycle to time out")
        # The first attempt starts at once and must give up after kafka_timeout, not hang.
        assert time.monotonic() - started < KAFKA_TIMEOUT + 15
        assert s.get("kafka_lag_exporter_up", cluster_name="silent") == 0
        assert s.get("kafka_lag_exporter_last_update_timestamp_seconds", cluster_name="silent") is None
        assert not s.find("kafka_partition_latest_offset")
        assert s.get("kafka_lag_exporter_scrape_duration_seconds", cluster_name="silent") == \
            pytest.approx(KAFKA_TIMEOUT, abs=1.5)

        status, _, body = exporter.get("/ready")
        assert status == 503, body
        cluster = json.loads(body)["clusters"]["silent"]
        assert cluster["state"] == "failing"
        assert cluster["last_success"] is None
        assert cluster["consecutive_failures"] >= 1
        assert _is_timeout(cluster["last_error"], bootstrap), cluster["last_error"]
        assert cluster["next_attempt_in"] is not None

        # Attempts go on with backoff (1 s, 2 s, ...), each bounded: the count keeps growing.
        s = exporter.wait_for(lambda s: _failures(s) >= 3, timeout=40,
                              what="further cycles to be attempted and time out")
        assert s.get("kafka_lag_exporter_up", cluster_name="silent") == 0
        status, _, body = exporter.get("/ready")
        assert json.loads(body)["clusters"]["silent"]["consecutive_failures"] >= 3

        # The HTTP side never waits for the stuck Kafka calls.
        for path, expected in (("/metrics", 200), ("/health", 200), ("/ready", 503)):
            t0 = time.monotonic()
            for _ in range(10):
                status, _, _ = exporter.get(path)
                assert status == expected
            per_request = (time.monotonic() - t0) / 10
            assert per_request < 0.3, f"{path} took {per_request:.3f}s per request"
        assert exporter.proc.poll() is None
    finally:
        status = exporter.stop()
    assert status == 0, exporter.log.read_text()[-3000:]
    log = exporter.log.read_text()
    assert f"collection failed ({cluster['last_error']})" in log


@pytest.mark.subprocess
def test_black_holed_bootstrap_times_out(tmp_path, black_hole):
    """A bootstrap that accepts connections and never answers: up 0, /ready "timed out", retries go on."""
    _check_silent_cluster(tmp_path, black_hole)


@pytest.mark.subprocess
def test_plaintext_client_on_tls_port_times_out(tmp_path, tls_port):
    """A TLS listener spoken to in plaintext: cycles time out per kafka_timeout instead of hanging."""
    _check_silent_cluster(tmp_path, f"127.0.0.1:{tls_port.port}")
    # The exporter did reach the listener: its plaintext bytes failed the TLS handshake.
    assert tls_port.failed_handshakes >= 1


@pytest.mark.subprocess
def test_once_against_black_hole_exits_1(tmp_path, black_hole):
    """--once against a black-holed bootstrap exits 1 within kafka_timeout plus a few seconds."""
    config = tmp_path / "klag.toml"
    config.write_text(_config(free_port(), black_hole))
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "klag_collector", "-c", str(config), "--once", "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=KAFKA_TIMEOUT + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, err[-2000:]
    # Interpreter start-up and imports take ~1-2 s on a busy machine; the rest is the timeout.
    assert elapsed < KAFKA_TIMEOUT + 8, f"--once took {elapsed:.1f}s"
    result = json.loads(out)["clusters"]["silent"]
    assert result["ok"] is False
    assert _is_timeout(result["error"], black_hole), result["error"]
    assert f"collection failed ({result['error']})" in err


@pytest.mark.subprocess
def test_sigterm_during_a_bootstrap_that_never_answers_exits_0_within_5s(tmp_path, black_hole):
    """kafka_timeout 30 s, so the first cycle's client waits up to 24 s for the black hole to
    answer its bootstrap: SIGTERM meanwhile still ends the process with 0 within 5 s."""
    port = free_port()
    config = config_toml(port, f'[[clusters]]\nname = "silent"\nbootstrap_servers = '
                               f'"{black_hole}"\n', kafka_timeout="30s")
    exporter = ExporterProcess(tmp_path, config, port)
    try:
        exporter.wait_for(
            lambda s: (s.get("kafka_lag_exporter_skipped_ticks_total", cluster_name="silent")
                       or 0) >= 2,
            timeout=20, what="ticks skipped behind the first cycle, still connecting")
    finally:
        started = time.monotonic()
        status = exporter.stop()
        took = time.monotonic() - started
    log = exporter.log.read_text()
    assert status == 0, log[-3000:]
    assert took < 5, f"took {took:.1f}s to exit:\n{log[-3000:]}"
    assert "collection failed" not in log, "a cycle the stop cut short is no failure"


# -- no thread outlives its deadline (unit tier: real threads, a task.Clock) ------------------

# What a thread may take, after its deadline, to be back in its pool.
MARGIN = 1.0

POLLER_CONFIG = """
[exporter]
poll_interval = "10s"
[exporter.performance]
kafka_timeout = "5s"
[[clusters]]
name = "c1"
bootstrap_servers = "127.0.0.1:1"
"""


class PoolRunner:
    """A run_in_thread on a real ThreadPool; outcomes come back to the test's thread (the
    reactor thread here) as it calls settle()."""

    def __init__(self, threads: int) -> None:
        self.pool = ThreadPool(0, threads, "klag-test")
        self.pool.start()
        self._ended: "queue.Queue[Tuple[defer.Deferred[Any], Any]]" = queue.Queue()

    def __call__(self, f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
        d: "defer.Deferred[Any]" = defer.Deferred()

        def work() -> None:
            try:
                outcome = f(*args)
            except BaseException:  # noqa: B902 - handed to the Deferred
                outcome = Failure()
            self._ended.put((d, outcome))

        self.pool.callInThread(work)
        return d

    def until(self, done: Callable[[], bool], within: float) -> float:
        """Fire the Deferreds of the calls that ended until `done()`; the seconds it took. A
        call ending after its Deferred timed out fires nothing (it was cancelled)."""
        started = time.monotonic()
        while not done():
            assert time.monotonic() - started < within, f"{len(self.pool.working)} still busy"
            try:
                d, outcome = self._ended.get(timeout=0.01)
            except queue.Empty:
                continue
            if isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)
        return time.monotonic() - started

    def settle(self, within: float) -> float:
        """until() no thread is busy and every outcome is delivered."""
        return self.until(lambda: not self.pool.working and self._ended.empty(), within)


class BlockedSource(FakeSource):
    """A FakeSource whose `blocked` call ("read" or "fetch") waits as kafka-python waits on
    a broker that does not answer: until reset() closes the clients, then it fails."""

    def __init__(self, blocked: str) -> None:
        super().__init__(one_partition_data(GroupInfo("g1", "Empty"), committed=5))
        self.blocked = blocked
        self.waiting = threading.Event()
        self.closed = threading.Event()

    def _wait(self) -> None:
        self.waiting.set()
        assert self.closed.wait(timeout=30), "never reset"
        raise ConnectionError("client closed")

    def read(self, now: float) -> Any:
        if self.blocked == "read":
            self._wait()
        return super().read(now)

    def fetch_timestamps(self, items: List[Any]) -> Any:
        if self.blocked == "fetch":
            self._wait()
        return super().fetch_timestamps(items)

    def reset(self) -> None:
        super().reset()
        self.closed.set()


def _blocked_poller(blocked: str) -> Tuple[task.Clock, PoolRunner, BlockedSource, Any]:
    clock, runner, source = task.Clock(), PoolRunner(threads=4), BlockedSource(blocked)
    _, (poller,) = pollers_on_clock(POLLER_CONFIG, {"c1": source}, clock, runner)
    poller.startService()
    runner.until(source.waiting.is_set, within=5)
    return clock, runner, source, poller


def test_a_timed_out_read_leaves_no_thread_in_kafka_python() -> None:
    """The read hangs: at kafka_timeout (5 s on the clock) the cycle fails and the clients are
    closed, so the read's thread is back within MARGIN, not after the broker answers."""
    clock, runner, source, poller = _blocked_poller("read")
    try:
        clock.advance(4.99)
        assert (poller.health.failures_total, source.resets) == (0, 0)
        clock.advance(0.01)
        assert poller.health.last_error == "timed out"
        assert runner.settle(within=MARGIN) < MARGIN
        assert (source.resets, runner.pool.working) == (1, [])
    finally:
        source.closed.set()
        runner.pool.stop()


def test_a_timed_out_fetch_leaves_no_thread_and_the_cycle_its_snapshot() -> None:
    """The timestamp fetch hangs: at its deadline the clients are closed, the fetch thread is
    back within MARGIN, and the snapshot reports the offset lag with the time lag unknown."""
    clock, runner, source, poller = _blocked_poller("fetch")
    try:
        clock.advance(5)
        assert runner.settle(within=MARGIN) < MARGIN
        assert (source.resets, runner.pool.working) == (1, [])
        assert poller.health.consecutive_failures == 0
        assert [(r.lag, r.lag_seconds) for r in poller.snapshot.view.partitions] == [(5, None)]
        assert poller.snapshot.view.skipped == {"timestamp_unavailable": 1}
    finally:
        source.closed.set()
        runner.pool.stop()


def _kafka_io_threads() -> List[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("kafka-io-"))


def test_reset_ends_a_bootstrap_waiting_for_a_silent_broker(black_hole) -> None:
    """A client being created waits for a broker that never answers (its bootstrap would take
    0.8 x kafka_timeout = 24 s): reset() closes it, and the constructor fails within MARGIN,
    leaving no kafka-python IO thread behind."""
    before = _kafka_io_threads()
    kafka = KafkaIO([black_hole], {}, Performance(kafka_timeout=30.0))
    outcome: List[BaseException] = []

    def connect() -> None:
        try:
            kafka.admin()
        except BaseException as e:  # noqa: B902 - what the test looks at
            outcome.append(e)

    connecting = threading.Thread(target=connect, name="connect")
    connecting.start()
    deadline = time.monotonic() + 10
    while len(_kafka_io_threads()) == len(before):  # its IO thread runs the bootstrap
        assert time.monotonic() < deadline, "the client never started connecting"
        time.sleep(0.01)
    time.sleep(0.2)
    started = time.monotonic()
    kafka.reset()
    connecting.join(timeout=MARGIN)
    assert not connecting.is_alive(), "the bootstrap outlived reset()"
    assert time.monotonic() - started < MARGIN
    assert len(outcome) == 1, outcome
    assert _kafka_io_threads() == before
