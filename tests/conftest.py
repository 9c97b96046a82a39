"""Shared fixtures: one Kafka broker for the whole session, and per-test helpers.

The broker comes from, in order: $KLAG_TEST_BOOTSTRAP (an existing cluster), a
testcontainers KafkaContainer when a Docker engine answers, else a LocalBroker run
from Maven Central jars in a temp dir.

The slow tiers carry marks (setup.cfg lists them): `broker` (a real Kafka; set for every
test using the `kafka` or `admin` fixture), `subprocess` (starts a process: the exporter,
twistd, promtool, mypy; a test without the mark that tries fails) and `packaging` (builds
and installs the package). Every other test is marked `unit`: `-m unit` is the fast tier.

KLAG_TEST_NO_SKIPS=1 (set by `make test`) turns every skip into a failure, so a missing
tool or extra cannot pass unnoticed.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid

import pytest

from devtools import localkafka

from kafkahelp import wait_until


class _External:
    """A cluster someone else runs: it cannot be stopped for outage tests."""

    can_restart = False

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        wait_until(lambda: localkafka.probe_coordinator(bootstrap)[0], timeout=60,
                   what=f"a group coordinator at KLAG_TEST_BOOTSTRAP={bootstrap}")

    def stop(self) -> None:
        raise RuntimeError("cannot stop an external broker (check kafka.can_restart)")

    start = stop

    def close(self) -> None:
        pass


class _Container(_External):
    # A restarted container gets new host ports while Kafka keeps advertising the old
    # ones, so outage tests are not offered here.
    can_restart = False

    def __init__(self) -> None:
        from testcontainers.community.kafka import KafkaContainer

        image = os.environ.get("KLAG_TEST_KAFKA_IMAGE")  # a confluentinc/cp-kafka tag
        self._container = (KafkaContainer(image) if image else KafkaContainer()).with_kraft()
        self._container.start()
        super().__init__(self._container.get_bootstrap_server())

    def close(self) -> None:
        self._container.stop()


class _Local:
    """A LocalBroker of ours, which outage tests may stop and start again."""

    can_restart = True

    def __init__(self, workdir) -> None:
        self.broker = localkafka.LocalBroker(workdir)
        self.broker.start(timeout=120)
        self.bootstrap = self.broker.bootstrap

    def stop(self) -> None:
        self.broker.stop()

    def start(self) -> None:
        self.broker.start(timeout=120)

    def close(self) -> None:
        self.broker.stop()


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


NO_SKIPS = os.environ.get("KLAG_TEST_NO_SKIPS") == "1"


def _fail_if_skipped(report) -> None:
    if NO_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, but KLAG_TEST_NO_SKIPS=1 (make test) allows no skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_if_skipped(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_if_skipped(outcome.get_result())


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    """The session's broker: .bootstrap, .can_restart, and .stop()/.start() when it can."""
    bootstrap = os.environ.get("KLAG_TEST_BOOTSTRAP")
    if bootstrap:
        handle = _External(bootstrap)
    elif _docker_answers():
        handle = _Container()
    else:
        handle = _Local(tmp_path_factory.mktemp("kafka"))
    try:
        yield handle
    finally:
        handle.close()


# Tiers allowed to start processes (a broker test may start the exporter beside Kafka).
SPAWNING_TIERS = ("broker", "subprocess", "packaging")


def pytest_collection_modifyitems(items):
    # A test that uses the broker without the mark would escape `-m "not broker"`.
    for item in items:
        if {"kafka", "admin"} & set(getattr(item, "fixturenames", ())) \
                and item.get_closest_marker("broker") is None:
            item.add_marker(pytest.mark.broker)
        if not any(item.get_closest_marker(tier) for tier in SPAWNING_TIERS):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def _kafka_for_marked_tests(request):
    if request.node.get_closest_marker("broker") is not None:
        request.getfixturevalue("kafka")


@pytest.fixture(autouse=True)
def _no_process_outside_its_tier(request, monkeypatch):
    # Keeps the unit tier fast and honest: starting a process needs a tier's mark.
    if any(request.node.get_closest_marker(tier) for tier in SPAWNING_TIERS):
        return

    def refuse(self, args, *rest, **kwargs):
        raise AssertionError(f"{request.node.nodeid} starts a process ({args!r}) but is not "
                             "marked subprocess (or broker, packaging)")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


@pytest.fixture
def admin(kafka):
    """A KafkaAdminClient on the session broker, closed after the test."""
    from kafka import KafkaAdminClient

    client = KafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=15000,
                              client_id="klag-tests")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def need_kafka_4():
    """Skips where the broker is Kafka 3 (the 3.9 rerun): consumer-protocol (KIP-848) and
    streams (KIP-1071) groups are Kafka 4's."""
    from devtools import localkafka

    if int(localkafka.kafka_version().split(".")[0]) < 4:
        pytest.skip("consumer-protocol and streams groups need Kafka 4")


@pytest.fixture
def unique(request) -> str:
    """A name prefix no other test uses, since all tests share one broker."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")[:60]
    return f"klagt-{name}-{uuid.uuid4().hex[:8]}"
