"""SIGTERM and SIGINT end the exporter within 5 s whatever its broker does: even frozen.

A broker of this module's own (the session's must keep answering) is frozen with SIGSTOP
while a cycle waits on it: in its admin requests, or in a timestamp fetch. The signal must
still end `klag-collector -c FILE` with status 0, and `twistd -n klag` cleanly, within
SHUTDOWN_LIMIT: the stop closes the clients, which fails what kafka-python waits for, so no
worker thread is left to wait out kafka_timeout (30 s here). The broker is thawed (SIGCONT)
after each test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, Optional, Set, Tuple

import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition

from devtools.localkafka import LocalBroker
from exporter import Samples, env_with_repo, fetch, free_port, now_ms, wait_for_up
from kafkahelp import commit, create_topic, wait_until
from test_twistd import twistd_command

pytestmark = [pytest.mark.broker, pytest.mark.subprocess]

SHUTDOWN_LIMIT = 5.0
SKIPPED_TICKS = "kafka_lag_exporter_skipped_ticks_total"
# A stop that cut a cycle short says so at debug.
CUT_SHORT = "cycle ended by the stop ("


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterator[LocalBroker]:
    """A broker of this module's own, since it gets frozen."""
    own = LocalBroker(tmp_path_factory.mktemp("frozen-broker"))
    own.start(timeout=120)
    try:
        yield own
    finally:
        thaw(own)
        own.stop()


def _broker_pid(broker: LocalBroker) -> int:
    return int(broker.pid_file.read_text())


def freeze(broker: LocalBroker) -> None:
    os.kill(_broker_pid(broker), signal.SIGSTOP)


def thaw(broker: LocalBroker) -> None:
    if broker.pid_file.exists():
        os.kill(_broker_pid(broker), signal.SIGCONT)


def seed(bootstrap: str, prefix: str, partitions: int, compacted: bool = False) -> None:
    """A topic of `partitions`, one (keyed) record in each, and a group at offset 0 of all:
    every partition lags by one, so every cycle wants a record timestamp of each."""
    topic = f"{prefix}-t"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=60000)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        create_topic(admin, topic, partitions,
                     {"cleanup.policy": "compact"} if compacted else None, timeout=60)
        at = now_ms() - 60_000
        for p in range(partitions):
            producer.send(topic, key=b"k", value=b"x", partition=p, timestamp_ms=at)
        producer.flush(timeout=60)
        commit(admin, f"{prefix}-g", {TopicPartition(topic, p): 0 for p in range(partitions)})
    finally:
        producer.close(timeout=10)
        admin.close()


def config_text(port: int, bootstrap: str, prefix: str, poll: str, cache_ttl: str) -> str:
    return f"""
[exporter]
poll_interval = "{poll}"
http_host = "127.0.0.1"
http_port = {port}
[exporter.timestamp_sampling]
cache_ttl = "{cache_ttl}"
[exporter.performance]
kafka_timeout = "30s"
[[clusters]]
name = "frozen"
bootstrap_servers = "{bootstrap}"
group_whitelist = ["^{prefix}"]
topic_whitelist = ["^{prefix}"]
"""


class Running:
    """The exporter under test, as `klag-collector` or `twistd -n klag`, logging at debug."""

    def __init__(self, runner: str, workdir: Path, config: str, port: int) -> None:
        self.runner, self.port = runner, port
        path = workdir / "klag.toml"
        path.write_text(config)
        self.log = workdir / "exporter.log"
        if runner == "klag-collector":
            command = [sys.executable, "-m", "klag_collector", "-c", str(path), "-l", "debug",
                       "--log-format", "json"]
        else:
            command = twistd_command() + ["-n", "--pidfile=", f"--logfile={self.log}", "klag",
                                          "-c", str(path)]
        self._out = open(workdir / "exporter.out" if runner == "twistd" else self.log, "wb")
        self.proc = subprocess.Popen(command, cwd=workdir, env=env_with_repo(),
                                     stdout=self._out, stderr=subprocess.STDOUT)
        self.log.touch()

    def samples(self) -> Optional[Samples]:
        try:
            status, _, body = fetch(f"http://127.0.0.1:{self.port}/metrics")
        except OSError:
            return None
        return Samples(body.decode()) if status == 200 else None

    def skipped_ticks(self) -> float:
        samples = self.samples()
        value = samples.get(SKIPPED_TICKS, cluster_name="frozen") if samples else None
        return value or 0.0

    def signal_and_wait(self, signum: int) -> Tuple[int, float]:
        """Send `signum` by PID; (exit status, seconds until the exit)."""
        started = time.monotonic()
        os.kill(self.proc.pid, signum)
        try:
            code = self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._out.close()
        return code, time.monotonic() - started

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


def stop_seconds(log: str) -> float:
    """From klag-collector's "stopping" to the end of its main loop, by its JSON log lines."""
    at = {}
    for line in log.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry["message"] in ("stopping", "Main loop terminated."):
                at[entry["message"]] = entry["time"]
    return float(at["Main loop terminated."] - at["stopping"])


def clean_exit(runner: str, signum: int) -> int:
    """klag-collector exits 0; twistd, once shut down, re-raises the signal that stopped it
    (Twisted's app._exitWithSignal), so that a supervisor sees why: that is its clean exit."""
    return 0 if runner == "klag-collector" else -signum


@pytest.mark.parametrize("runner, signum", [
    pytest.param("klag-collector", signal.SIGTERM, id="klag-collector-SIGTERM"),
    pytest.param("klag-collector", signal.SIGINT, id="klag-collector-SIGINT"),
    pytest.param("twistd", signal.SIGTERM, id="twistd-SIGTERM"),
])
def test_a_signal_ends_the_exporter_within_5s_while_a_cycle_waits_on_a_frozen_broker(
        broker, tmp_path, runner, signum) -> None:
    """Serving, then the broker frozen: the next cycle blocks in its admin requests (ticks
    are skipped); the signal still ends the process cleanly within 5 s."""
    prefix = f"klagt-frozen-{uuid.uuid4().hex[:8]}"
    seed(broker.bootstrap, prefix, partitions=3)
    port = free_port()
    running = Running(runner, tmp_path, config_text(port, broker.bootstrap, prefix, "1s", "60s"),
                      port)
    try:
        wait_for_up(running.proc, f"http://127.0.0.1:{port}/metrics", "frozen", running.log)
        skipped = running.skipped_ticks()
        freeze(broker)
        wait_until(lambda: running.skipped_ticks() > skipped, timeout=10,
                   what="a tick skipped behind the cycle waiting on the frozen broker")
        code, took = running.signal_and_wait(signum)
    finally:
        thaw(broker)
        running.close()
    log = running.log.read_text()
    assert code == clean_exit(runner, signum), log[-3000:]
    assert took < SHUTDOWN_LIMIT, f"{runner} took {took:.1f}s to exit:\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]
    assert "still running at stop" not in log, log[-3000:]
    if runner == "klag-collector":
        assert CUT_SHORT in log, log[-3000:]
        # The clients closed, nothing had to wait out a grace period (STOP_GRACE is 1 s).
        assert stop_seconds(log) < 1.0, log[-3000:]


# kafka-python's debug lines for each request sent and each response read, per connection.
_SENT = re.compile(r"node_id=(\S+) .*? Request (\d+): (\w+)")
_ANSWERED = re.compile(r"node_id=(\S+) .*?: Response (\d+) \(")


def in_flight(log: str) -> Set[str]:
    """The names of the requests sent and not answered, by kafka-python's debug lines."""
    sent: Dict[Tuple[str, str], str] = {}
    for line in log.splitlines():
        if (answered := _ANSWERED.search(line)) is not None:
            sent.pop((answered[1], answered[2]), None)
        elif (request := _SENT.search(line)) is not None:
            sent[(request[1], request[2])] = request[3]
    return set(sent.values())


def freeze_during_a_fetch(broker: LocalBroker, running: Running, attempts: int = 10) -> None:
    """Freeze the broker as soon as a cycle sends a Fetch; again until one is left in flight."""
    offset = running.log.stat().st_size
    for _ in range(attempts):
        deadline = time.monotonic() + 20
        while True:
            assert running.proc.poll() is None, running.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no Fetch request was sent"
            with running.log.open("rb") as log:
                log.seek(offset)
                new = log.read()
            lines = new[:new.rfind(b"\n") + 1]  # whole lines only: the rest is read again
            if re.search(rb"Request \d+: Fetch", lines):
                freeze(broker)
                break
            offset += len(lines)
            time.sleep(0.002)
        time.sleep(1)  # what was sent before the freeze is logged by now
        if any(name.startswith("Fetch") for name in in_flight(running.log.read_text())):
            return
        thaw(broker)
        offset = running.log.stat().st_size
    pytest.fail(f"no freeze in {attempts} attempts caught a Fetch in flight")


def test_sigterm_ends_the_exporter_within_5s_while_a_timestamp_fetch_waits(broker, tmp_path):
    """2,000 lagging partitions of a compacted topic, re-dated every cycle (cache_ttl 100 ms)
    and a 500 ms poll, so a fetch is often under way: frozen during one, SIGTERM still ends
    the process with status 0 within 5 s, the cycle cut short."""
    prefix = f"klagt-fetching-{uuid.uuid4().hex[:8]}"
    seed(broker.bootstrap, prefix, partitions=2000, compacted=True)
    port = free_port()
    running = Running("klag-collector", tmp_path,
                      config_text(port, broker.bootstrap, prefix, "500ms", "100ms"), port)
    try:
        wait_for_up(running.proc, f"http://127.0.0.1:{port}/metrics", "frozen", running.log)
        freeze_during_a_fetch(broker, running)
        code, took = running.signal_and_wait(signal.SIGTERM)
    finally:
        thaw(broker)
        running.close()
    log = running.log.read_text()
    assert code == 0, log[-3000:]
    assert took < SHUTDOWN_LIMIT, f"took {took:.1f}s to exit:\n{log[-3000:]}"
    assert CUT_SHORT in log, log[-3000:]
    assert stop_seconds(log) < 1.0, log[-3000:]
