"""Bootstraps that never answer: every Kafka call is bounded by performance.kafka_timeout.

No broker is needed: the test itself plays a black-holed port (connections are accepted by
the kernel's listen backlog and never read or answered) and a TLS port that a plaintext
client talks to. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from exporter import ExporterProcess, config_toml, free_port

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
