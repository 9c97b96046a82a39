"""The local Kafka used by the integration tests and the demo: jar cache and broker."""

from __future__ import annotations

import subprocess

import pytest
from kafka.protocol.consumer import OffsetSpec
from kafka.structs import TopicPartition

from devtools import localkafka

from exporter import now_ms
from kafkahelp import commit, create_topic, produce


def recent_ms() -> int:
    """A record time a minute ago: well inside the broker's retention, whatever today's date."""
    return now_ms() - 60_000


def _forbid_subprocess(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected subprocess: {args!r}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


def test_fetch_jars_with_complete_cache_runs_no_mvn(tmp_path, monkeypatch):
    """A cache dir whose marker matches the version and recipe is used without running mvn."""
    monkeypatch.setenv("KLAG_KAFKA_CACHE", str(tmp_path))
    (tmp_path / "kafka_2.13-9.9.9.jar").write_bytes(b"")
    (tmp_path / ".klag-complete").write_text(localkafka._marker_text("9.9.9"))
    _forbid_subprocess(monkeypatch)
    assert localkafka.fetch_jars("9.9.9") == tmp_path
    assert localkafka.fetch_jars("9.9.9") == tmp_path


def test_fetch_jars_redoes_download_without_marker(tmp_path, monkeypatch):
    """Jars without the marker (a half download) are cleared and mvn is run again."""
    monkeypatch.setenv("KLAG_KAFKA_CACHE", str(tmp_path))
    (tmp_path / "stale-1.0.jar").write_bytes(b"")
    calls = []

    def fake_mvn(cmd, **kwargs):
        calls.append(cmd)
        assert not (tmp_path / "stale-1.0.jar").exists()
        (tmp_path / "kafka_2.13-9.9.9.jar").write_bytes(b"")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(localkafka.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(subprocess, "run", fake_mvn)
    localkafka.fetch_jars("9.9.9")
    localkafka.fetch_jars("9.9.9")
    assert len(calls) == 1
    assert (tmp_path / ".klag-complete").read_text() == localkafka._marker_text("9.9.9")


def test_fetch_jars_failure_is_one_clear_error(tmp_path, monkeypatch):
    """A failed mvn run raises LocalKafkaError quoting mvn's last lines and leaves no marker."""
    monkeypatch.setenv("KLAG_KAFKA_CACHE", str(tmp_path))
    monkeypatch.setattr(localkafka.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 1, "", "[ERROR] Could not resolve dependencies\n"))
    with pytest.raises(localkafka.LocalKafkaError, match="Could not resolve dependencies"):
        localkafka.fetch_jars("9.9.9")
    assert not (tmp_path / ".klag-complete").exists()


def test_fetch_jars_without_mvn_says_so(tmp_path, monkeypatch):
    """With no mvn on PATH the error names mvn instead of failing obscurely."""
    monkeypatch.setenv("KLAG_KAFKA_CACHE", str(tmp_path))
    monkeypatch.setattr(localkafka.shutil, "which", lambda name: None)
    with pytest.raises(localkafka.LocalKafkaError, match="mvn not found"):
        localkafka.fetch_jars("9.9.9")


def test_version_env_overrides_pin(monkeypatch):
    """KLAG_TEST_KAFKA_VERSION overrides the pinned version; an explicit argument beats both."""
    monkeypatch.delenv("KLAG_TEST_KAFKA_VERSION", raising=False)
    assert localkafka.kafka_version() == localkafka.KAFKA_VERSION
    monkeypatch.setenv("KLAG_TEST_KAFKA_VERSION", "3.9.1")
    assert localkafka.kafka_version() == "3.9.1"
    assert localkafka.kafka_version("4.0.0") == "4.0.0"


def test_extra_listener_is_configured(tmp_path):
    """An extra SASL listener gets its own kept port, a protocol-map entry and its properties."""
    broker = localkafka.LocalBroker(
        tmp_path, extra_listeners=["SASL_PLAINTEXT"],
        extra_properties={"sasl.enabled.mechanisms": "PLAIN"})
    props = broker._write_config().read_text()
    port = broker.ports["SASL_PLAINTEXT"]
    assert f"SASL_PLAINTEXT://127.0.0.1:{port}" in props
    assert "SASL_PLAINTEXT:SASL_PLAINTEXT" in props
    assert "sasl.enabled.mechanisms=PLAIN" in props
    again = localkafka.LocalBroker(tmp_path, extra_listeners=["SASL_PLAINTEXT"])
    assert again.ports == broker.ports
    assert again.listener_bootstrap("sasl_plaintext") == f"127.0.0.1:{port}"


@pytest.mark.broker
def test_broker_stores_records_and_group_offsets(kafka, admin, unique):
    """The broker accepts a topic, timestamped records and a group commit, and reports them back."""
    topic, group = f"{unique}-t", f"{unique}-g"
    create_topic(admin, topic, 2)
    tp = TopicPartition(topic, 1)
    t0 = recent_ms()
    assert produce(kafka.bootstrap, topic, 1, [t0, t0 + 1000, t0 + 2000]) == [0, 1, 2]
    commit(admin, group, {tp: 1})
    committed = admin.list_group_offsets({group: [tp]})[group]
    assert committed[tp].offset == 1
    latest = admin.list_partition_offsets({tp: OffsetSpec.LATEST})
    assert latest[tp].offset == 3
    by_time = admin.list_partition_offsets({tp: t0 + 1000})
    assert by_time[tp].offset == 1


@pytest.mark.broker
def test_broker_data_survives_restart(kafka, unique):
    """Records and committed offsets are still there after the broker is stopped and started."""
    if not kafka.can_restart:
        pytest.skip("this broker cannot be restarted by the tests")
    from kafka import KafkaAdminClient

    topic, group = f"{unique}-t", f"{unique}-g"
    tp = TopicPartition(topic, 0)
    before = KafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=15000)
    try:
        create_topic(before, topic, 1)
        produce(kafka.bootstrap, topic, 0, [recent_ms(), recent_ms() + 1])
        commit(before, group, {tp: 2})
    finally:
        before.close()
    kafka.stop()
    kafka.start()
    after = KafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=15000)
    try:
        assert after.list_partition_offsets({tp: OffsetSpec.LATEST})[tp].offset == 2
        assert after.list_group_offsets({group: [tp]})[group][tp].offset == 2
    finally:
        after.close()
