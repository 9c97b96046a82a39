"""A throwaway single-node Kafka (KRaft) run from Maven Central jars, no Docker needed.

Used by the integration tests and by the demo command. The broker listens on
127.0.0.1 only; its jars are cached per version so that only the first use downloads.

    python -m devtools.localkafka fetch
    python -m devtools.localkafka start --dir D [--port P]   # prints the bootstrap
    python -m devtools.localkafka stop --dir D
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Iterable, Mapping

KAFKA_VERSION = "4.4.0"

_MARKER = ".klag-complete"
# kafka_2.13's pom brings slf4j-api but no binding (the distribution adds one), so
# without slf4j-simple Kafka would log nothing, not even why it died. kafka-streams is for
# the tests' streams application (devtools/java/StreamsDriver.java); its topology keeps no
# state, so RocksDB (60 MB of native code) is left out.
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
  <groupId>klag-collector</groupId><artifactId>localkafka</artifactId><version>0</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-streams</artifactId>
      <version>{version}</version><exclusions><exclusion><groupId>org.rocksdb</groupId>
      <artifactId>rocksdbjni</artifactId></exclusion></exclusions></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId>
      <version>1.7.36</version></dependency>
  </dependencies>
</project>
"""
_LOG_FLAGS = [
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
    "-Dorg.slf4j.simpleLogger.log.kafka.server.KafkaRaftServer=info",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss,SSS",
]


class LocalKafkaError(RuntimeError):
    """The local broker could not be fetched, started or stopped."""


def kafka_version(version: str | None = None) -> str:
    """The version to run: the argument, else $KLAG_TEST_KAFKA_VERSION, else KAFKA_VERSION."""
    return version or os.environ.get("KLAG_TEST_KAFKA_VERSION") or KAFKA_VERSION


def cache_dir(version: str | None = None) -> pathlib.Path:
    """Where the jars of `version` live: $KLAG_KAFKA_CACHE or ~/.cache/klag-collector/kafka-V."""
    env = os.environ.get("KLAG_KAFKA_CACHE")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".cache" / "klag-collector" / f"kafka-{kafka_version(version)}"


def fetch_jars(version: str | None = None) -> pathlib.Path:
    """Download kafka_2.13:<version> and its runtime dependencies once; return the jar dir."""
    version = kafka_version(version)
    dest = cache_dir(version)
    marker = dest / _MARKER
    if _marker_ok(marker, version):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    # Two test sessions may start at once; the second waits and then finds the marker.
    with open(dest / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _marker_ok(marker, version):
            return dest
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LocalKafkaError("mvn not found on PATH: install Maven 3 to fetch the Kafka jars")
        # A half download, or one of another version ($KLAG_KAFKA_CACHE is version-blind),
        # must not leave stray jars on the classpath.
        marker.unlink(missing_ok=True)
        for jar in dest.glob("*.jar"):
            jar.unlink()
        with tempfile.TemporaryDirectory(prefix="klag-pom-") as tmp:
            (pathlib.Path(tmp) / "pom.xml").write_text(_POM.format(version=version))
            cmd = [mvn, "-q", "-B", "-f", str(pathlib.Path(tmp) / "pom.xml"),
                   "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
                   f"-DoutputDirectory={dest}", "-DincludeScope=runtime"]
            try:
                proc = subprocess.run(cmd, cwd=tmp, stdin=subprocess.DEVNULL,
                                      capture_output=True, text=True, timeout=900)
                out, rc = proc.stdout + proc.stderr, proc.returncode
            except subprocess.TimeoutExpired as exc:
                out, rc = f"{exc.stdout or ''}{exc.stderr or ''}\n(killed after 900s)", "timeout"
        if rc != 0 or not any(dest.glob("kafka_2.13-*.jar")):
            raise LocalKafkaError(f"mvn could not fetch org.apache.kafka:kafka_2.13:{version} "
                                  f"(exit {rc}); its last lines:\n{_tail_text(out, 15)}")
        marker.write_text(_marker_text(version))
    return dest


def _marker_text(version: str) -> str:
    # The pom's digest is in the marker so a changed recipe refetches instead of
    # silently running with the old jar set.
    return f"{version} {hashlib.sha256(_POM.format(version=version).encode()).hexdigest()[:16]}\n"


def _marker_ok(marker: pathlib.Path, version: str) -> bool:
    try:
        return marker.read_text() == _marker_text(version)
    except OSError:
        return False


@dataclass
class Listener:
    """An extra broker listener, e.g. Listener("SASL_PLAINTEXT") or Listener("EXT", "SSL").

    `protocol` defaults to `name`; `port` None means a free one, picked once and kept.
    Its JAAS/SSL settings go in extra_properties, e.g.
    `listener.name.sasl_plaintext.plain.sasl.jaas.config`.
    """

    name: str
    protocol: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, spec: "Listener | str") -> "Listener":
        """Accept a Listener, "NAME", or "NAME://127.0.0.1:PORT" (protocol = NAME)."""
        if isinstance(spec, Listener):
            return spec
        name, sep, addr = spec.partition("://")
        port = addr.rpartition(":")[2] if sep else ""
        return cls(name, None, int(port) if port else None)


class LocalBroker:
    """One KRaft broker+controller process with its data, config and log in `workdir`.

    Ports, cluster id and data survive stop/start, and a new LocalBroker on the same
    workdir (e.g. the CLI's `stop`) finds the running process through its PID file.
    """

    def __init__(self, workdir, version: str | None = None, port: int | None = None,
                 extra_properties: Mapping[str, object] | None = None,
                 extra_listeners: Iterable[Listener | str] | None = None):
        self.workdir = pathlib.Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._state_file = self.workdir / "broker.json"
        self.pid_file = self.workdir / "broker.pid"
        self.log_file = self.workdir / "broker.log"
        self._proc: subprocess.Popen | None = None
        state = json.loads(self._state_file.read_text()) if self._state_file.exists() else {}
        self.version = kafka_version(version or state.get("version"))
        self.extra_properties = {k: str(v) for k, v in (extra_properties or {}).items()}
        self.listeners = [Listener.parse(s) for s in (extra_listeners or ())]
        ports = {**state.get("ports", {}), **({"PLAINTEXT": port} if port else {})}
        for lst in self.listeners:
            lst.name, lst.protocol = lst.name.upper(), (lst.protocol or lst.name).upper()
            ports[lst.name] = lst.port or ports.get(lst.name)
        wanted = ["PLAINTEXT", "CONTROLLER"] + [lst.name for lst in self.listeners]
        free = iter(_free_ports(sum(1 for n in wanted if not ports.get(n))))
        self.ports: dict[str, int] = {**ports, **{n: ports.get(n) or next(free) for n in wanted}}
        self.port = self.ports["PLAINTEXT"]
        for lst in self.listeners:
            lst.port = self.ports[lst.name]
        self.cluster_id = state.get("cluster_id") or _cluster_id()
        self._state_file.write_text(json.dumps(
            {"version": self.version, "ports": self.ports, "cluster_id": self.cluster_id}))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def listener_bootstrap(self, name: str) -> str:
        """The host:port of an extra listener, by its name."""
        return f"127.0.0.1:{self.ports[name.upper()]}"

    def start(self, timeout: float = 90, *, detach: bool = False) -> "LocalBroker":
        """Start the broker (formatting its storage the first time) and wait until ready.

        Unless `detach`, the JVM gets SIGTERM when this process dies, so a killed test
        run cannot leave a broker behind.
        """
        if self.running:
            return self
        jars = fetch_jars(self.version)
        deadline = time.monotonic() + timeout  # a first, slow download does not count
        java = _java()
        props = self._write_config()
        classpath = f"{jars}/*"
        if not (self.workdir / "data" / "meta.properties").exists():
            fmt = subprocess.run(
                [java, "-Xmx256m", *_LOG_FLAGS, "-cp", classpath, "kafka.tools.StorageTool",
                 "format", "-t", self.cluster_id, "-c", str(props)],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
            if fmt.returncode != 0:
                raise LocalKafkaError(f"kafka storage format failed (exit {fmt.returncode}):\n"
                                      + _tail_text(fmt.stdout + fmt.stderr, 15))
        # C1-only JIT and SerialGC: a restart to ready takes ~2.7s instead of ~6.5s, and a
        # test broker never runs long enough for C2 to pay off.
        cmd = [java, "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               "-Djava.awt.headless=true", *_LOG_FLAGS,
               "-cp", classpath, "kafka.Kafka", str(props)]
        with open(self.log_file, "ab") as log:
            log.write(f"==== klag localkafka start {time.strftime('%F %T')} ====\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=None if detach else _die_with_parent)
        self.pid_file.write_text(f"{self._proc.pid}\n")
        try:
            self._wait_ready(deadline, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the broker, wait for a clean shutdown, SIGKILL it after `timeout`."""
        pid = self._pid()
        if self._alive(pid):
            os.kill(pid, signal.SIGTERM)
            if not self._wait_gone(pid, timeout):
                os.kill(pid, signal.SIGKILL)
                if not self._wait_gone(pid, 10):
                    raise LocalKafkaError(f"broker pid {pid} survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        self._proc = None

    @property
    def running(self) -> bool:
        return self._alive(self._pid())

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 25) -> str:
        """The log's last lines, without Java stack frames, which would crowd out the cause."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no broker log)"
        keep = [l for l in text.splitlines() if not l.startswith(("\tat ", "\t... "))]
        return _tail_text("\n".join(keep), lines)

    def _write_config(self) -> pathlib.Path:
        listeners = [("PLAINTEXT", "PLAINTEXT")] + [(l.name, l.protocol) for l in self.listeners]
        addr = ",".join(f"{n}://127.0.0.1:{self.ports[n]}" for n, _ in listeners)
        ctl = self.ports["CONTROLLER"]
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{ctl}",
            "listeners": f"{addr},CONTROLLER://127.0.0.1:{ctl}",
            "advertised.listeners": addr,
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": ",".join(
                [f"{n}:{p}" for n, p in listeners] + ["CONTROLLER:PLAINTEXT"]),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            # One partition makes __consumer_offsets (and so the coordinator) come up fast.
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Retention and delete_records tests should see segments go in seconds, not minutes.
            "log.retention.check.interval.ms": "1000",
            "log.initial.task.delay.ms": "0",
            "log.segment.delete.delay.ms": "0",
            "file.delete.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
        }
        props.update(self.extra_properties)
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={_escape(v)}\n" for k, v in props.items()))
        return path

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        last = "port not open yet"
        while True:
            if not self.running:
                raise LocalKafkaError(f"kafka broker exited during startup; {self.log_file} ends:\n"
                                      + self.log_tail())
            if time.monotonic() > deadline:
                raise LocalKafkaError(f"kafka broker not ready after {timeout:.0f}s ({last}); "
                                      f"{self.log_file} ends:\n" + self.log_tail())
            if _port_open(self.port):
                ok, last = probe_coordinator(self.bootstrap)
                if ok:
                    return
            time.sleep(0.2)

    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _alive(self, pid: int | None) -> bool:
        if pid is None:
            return False
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        # Not our child (e.g. the CLI's stop): make sure the PID was not reused by
        # something else before we signal it.
        try:
            cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return False
        return (state != "Z" and b"kafka.Kafka" in cmdline
                and str(self.workdir / "server.properties").encode() in cmdline)

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while self._alive(pid):  # _alive reaps our own child, so no zombie lingers
            if time.monotonic() > end:
                return False
            time.sleep(0.05)
        return True


def probe_coordinator(bootstrap: str, **client_config) -> tuple[bool, str]:
    """(True, "ready") once a group coordinator answers OffsetFetch, else (False, why).

    The port opens seconds before __consumer_offsets exists; until then every group
    call fails with CoordinatorNotAvailable, so this is the real readiness test.
    """
    from kafka import KafkaAdminClient

    admin = None
    try:  # a fresh client each time: a failed bootstrap leaves one in a poor state
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000,
                                 bootstrap_timeout_ms=5000, client_id="klag-localkafka-ready",
                                 **client_config)
        admin.list_group_offsets({"klag-localkafka-ready": None})
        return True, "ready"
    except Exception as exc:  # anything short of an answer just means "not yet"
        return False, f"group coordinator: {type(exc).__name__}: {exc}"[:300]
    finally:
        if admin is not None:
            admin.close()


def _die_with_parent() -> None:
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise LocalKafkaError("java not found (set JAVA_HOME or put java 17+ on PATH)")
    return java


def _cluster_id() -> str:
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # like Kafka's Uuid: a leading '-' reads as a CLI flag
            return cid


def _free_ports(n: int) -> list[int]:
    # Hold every socket until all are bound so the n ports are distinct.
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def _tail_text(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.localkafka",
                                     description="Run a local single-node Kafka for tests/demos.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    start = sub.add_parser("start", help="start a broker in DIR, detached; print its bootstrap")
    stop = sub.add_parser("stop", help="stop the broker running in DIR")
    fetch = sub.add_parser("fetch", help="download the Kafka jars into the cache")
    for p in (start, stop):
        p.add_argument("--dir", required=True)
    for p in (start, fetch):
        p.add_argument("--version", help=f"Kafka version (default {kafka_version()})")
    start.add_argument("--port", type=int)
    start.add_argument("--timeout", type=float, default=90)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            print(fetch_jars(args.version))
        elif args.cmd == "start":
            broker = LocalBroker(args.dir, version=args.version, port=args.port)
            broker.start(args.timeout, detach=True)
            print(broker.bootstrap)
        elif not (pathlib.Path(args.dir) / "broker.pid").exists():
            print(f"no broker running in {args.dir}")
        else:
            LocalBroker(args.dir).stop()
    except LocalKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
