"""The demo: its traffic generator (against the session broker) and its exporter config."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import time

import pytest
import yaml
from kafka.protocol.consumer import OffsetSpec

from klag_collector.config import parse_config
from devtools.demo import (ALERTS_FILE, banner, config_text, parser,
                                  prometheus_config_text)
from klag_collector.metrics import Granularity
from devtools.traffic import (CONSUMER_PHASES, HIGH_VOLUME_GROUP, HIGH_VOLUME_TOPIC,
                                    JAVA_GROUPS, KIP848_GROUP, PRODUCER_PHASES, SHARE_GROUP,
                                    TEST_GROUP, TEST_TOPIC, JavaGroups, Traffic)

MESSAGE = re.compile(r"message-\d+-\d{19}")


def _sum_lag(admin, group: str) -> int | None:
    """Sum over partitions with a commit of (latest offset - committed), or None before any commit."""
    committed = {tp: oam.offset for tp, oam in admin.list_group_offsets({group: None})[group].items()
                 if oam.offset >= 0}
    if not committed:
        return None
    latest = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in committed})
    return sum(latest[tp].offset - off for tp, off in committed.items())


def _rose_then_fell(samples: list[int]) -> bool:
    peak = 0
    for lag in samples:
        if peak > 0 and lag < peak:
            return True
        peak = max(peak, lag)
    return False


def test_config_text_parses_as_klag_exporter_config():
    """The generated TOML loads with parse_config: cluster local, the port, partition granularity."""
    config = parse_config(config_text("127.0.0.1:19092", 18000), "klag-config.toml", "toml",
                          environ={})
    (cluster,) = config.clusters
    assert cluster.name == "local"
    assert cluster.bootstrap_servers == ("127.0.0.1:19092",)
    assert cluster.groups.allows(TEST_GROUP) and not cluster.topics.allows("__consumer_offsets")
    e = config.exporter
    assert (e.http_host, e.http_port) == ("127.0.0.1", 18000)
    assert e.granularity is Granularity.PARTITION
    assert e.poll_interval == 5.0
    assert e.timestamp_sampling.enabled


def test_demo_command_line_defaults_and_banner(tmp_path):
    """The flags default to port 8000, speed 1, run forever; the banner names the metrics URL."""
    args = parser().parse_args([])
    assert (args.port, args.speed, args.minutes) == (8000, 1.0, 0)
    args = parser().parse_args(["--port", "18000", "--speed", "5", "--minutes", "1",
                                "--dir", str(tmp_path)])
    text = banner("127.0.0.1:9092", args.port, tmp_path, args.speed, args.minutes)
    assert "http://127.0.0.1:18000/metrics" in text and "127.0.0.1:9092" in text
    assert "Ctrl-C" in text and "1 min" in text
    assert "prometheus" not in text


def test_demo_prometheus_flags_and_banner(tmp_path):
    """Prometheus by default (scrape every 10 s, port chosen at start), --no-prometheus skips it."""
    args = parser().parse_args([])
    assert (args.no_prometheus, args.prometheus_port, args.bootstrap) == (False, None, None)
    assert (args.scrape_interval, args.poll_interval) == (10.0, 5.0)
    args = parser().parse_args(["--no-prometheus", "--prometheus-port", "19090",
                                "--scrape-interval", "1500ms", "--poll-interval", "1s",
                                "--bootstrap", "127.0.0.1:19092"])
    assert (args.no_prometheus, args.prometheus_port, args.scrape_interval) == (True, 19090, 1.5)
    assert (args.poll_interval, args.bootstrap) == (1.0, "127.0.0.1:19092")
    for bad in (["--scrape-interval", "10"], ["--scrape-interval", "1ms"],
                ["--prometheus-port", "70000"], ["--port", "0"]):
        with pytest.raises(SystemExit):
            parser().parse_args(bad)
    text = banner("127.0.0.1:19092", 18000, tmp_path, 1, 0, prometheus="http://127.0.0.1:19090",
                  own_broker=False)
    assert "prometheus:      http://127.0.0.1:19090 " in text
    assert "http://127.0.0.1:19090/graph?g0.expr=kafka_consumergroup_group_sum_lag" in text
    assert "not started by the demo" in text and "broker.log" not in text
    text = banner("127.0.0.1:9092", 18000, tmp_path, 1, 0, prometheus="not started (--no-prometheus)")
    assert "prometheus:      not started (--no-prometheus)" in text


def test_prometheus_config_scrapes_the_exporter_and_loads_the_alert_rules(tmp_path):
    """The generated prometheus.yml: job klag-collector (as alerts.yml expects) on 127.0.0.1."""
    config = yaml.safe_load(prometheus_config_text(18000, 1.5, [ALERTS_FILE]))
    assert config["global"] == {"scrape_interval": "1500ms", "evaluation_interval": "1500ms"}
    assert config["rule_files"] == [str(ALERTS_FILE)] and ALERTS_FILE.is_file()
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "klag-collector"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:18000"]}]
    assert (job["scrape_interval"], job["scrape_timeout"]) == ("1500ms", "1500ms")
    config = yaml.safe_load(prometheus_config_text(8000))
    assert config["rule_files"] == [] and config["global"]["scrape_interval"] == "10s"
    assert config["scrape_configs"][0]["scrape_timeout"] == "5s"


@pytest.mark.subprocess
@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (apt install prometheus)")
def test_prometheus_config_passes_promtool(tmp_path):
    """`promtool check config` accepts it, rule file included."""
    path = tmp_path / "prometheus.yml"
    path.write_text(prometheus_config_text(18000, 2, [ALERTS_FILE]))
    check = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout + check.stderr


def test_demo_refuses_a_non_loopback_bootstrap(tmp_path, capsys):
    """--bootstrap elsewhere than 127.0.0.1: a usage error before anything is started."""
    from devtools import demo

    with pytest.raises(SystemExit) as exit_:
        demo.main(["--bootstrap", "127.0.0.1:9092,kafka.example.com:9092", "--port", "18000",
                   "--dir", str(tmp_path), "--no-prometheus"])
    assert exit_.value.code == 2
    assert "not loopback" in capsys.readouterr().err
    assert not (tmp_path / "prometheus.yml").exists() and not (tmp_path / "broker.log").exists()


@pytest.mark.subprocess
def test_demo_prometheus_that_fails_to_start_is_reported_with_its_log(tmp_path):
    """A prometheus that exits at once: DemoError naming the exit code and --no-prometheus."""
    from devtools.demo import DemoError, DemoPrometheus

    prom = DemoPrometheus(shutil.which("false") or "/bin/false", tmp_path, 19999, 18000)
    with pytest.raises(DemoError, match=r"exited with 1 .*--no-prometheus"):
        prom.start(timeout=10)
    prom.stop()
    assert not prom.pid_file.exists() and prom.config_file.exists()


def test_schedules_match_the_seed_stack():
    """Per cycle the producer writes the seed's counts, and the consumer pauses and catches up."""
    sent: dict[str, int] = {}
    for phase in PRODUCER_PHASES:
        for topic, count in phase.sends:
            sent[topic] = sent.get(topic, 0) + count
    assert sent == {TEST_TOPIC: 300 + 100 + 600 + 50, HIGH_VOLUME_TOPIC: 200 + 100}
    assert sum(p.duration for p in PRODUCER_PHASES) == 80
    assert [p.pause for p in CONSUMER_PHASES if not p.reads] == [30]
    caught_up = {r.group for p in CONSUMER_PHASES for r in p.reads if r.catch_up}
    assert caught_up == {TEST_GROUP, HIGH_VOLUME_GROUP}


def test_banner_names_the_java_groups():
    """The banner says which Java groups run, or why not."""
    text = banner("127.0.0.1:9092", 18000, pathlib.Path("/tmp"), 1, 0,
                  java_groups="test-topic -> kip848-consumer-group (consumer protocol, pid 1)")
    assert "java groups:     test-topic -> kip848-consumer-group" in text
    assert "java groups" not in banner("127.0.0.1:9092", 18000, pathlib.Path("/tmp"), 1, 0)


def test_java_groups_are_one_of_each_new_kind_on_the_demo_topics():
    """A consumer-protocol group and a share group, on the demo's topics, and loopback only."""
    assert set(JAVA_GROUPS) == {KIP848_GROUP, SHARE_GROUP}
    assert {topic for topic, _ in JAVA_GROUPS.values()} <= {TEST_TOPIC, HIGH_VOLUME_TOPIC}
    assert all(rate > 0 for _, rate in JAVA_GROUPS.values())
    with pytest.raises(ValueError, match="not loopback"):
        JavaGroups("kafka.example.com:9092")


@pytest.mark.broker
@pytest.mark.skipif(shutil.which("javac") is None, reason="needs a JDK")
def test_java_groups_consume_and_stop_by_pid(kafka, admin):
    """Both drivers join, the consumer-protocol group commits as it reads, stop() ends them."""
    traffic = Traffic(kafka.bootstrap, speed=10).start()
    groups = JavaGroups(kafka.bootstrap, speed=10).start()
    try:
        procs = [d.proc for d in groups.drivers.values()]
        assert len(procs) == 2 and groups.running
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            said = {(g, line.split()[0]) for g, line in list(groups.lines) if line}
            committed = admin.list_group_offsets({KIP848_GROUP: None})[KIP848_GROUP]
            if {(KIP848_GROUP, "ASSIGNED"), (SHARE_GROUP, "READY")} <= said and any(
                    oam.offset > 0 for oam in committed.values()):
                break
            assert all(p.poll() is None for p in procs), groups.lines
            time.sleep(0.5)
        else:
            pytest.fail(f"the Java groups did not get going: {groups.lines}")
    finally:
        groups.stop()
        traffic.stop()
    assert all(p.poll() is not None for p in procs)
    assert not groups.running and groups.drivers == {}


def test_traffic_refuses_non_loopback_bootstrap():
    """Demo traffic goes to a loopback broker only, unless allow_remote says otherwise."""
    with pytest.raises(ValueError, match="not loopback"):
        Traffic("kafka.example.com:9092")
    with pytest.raises(ValueError, match="speed"):
        Traffic("127.0.0.1:9092", speed=0)


@pytest.mark.broker
def test_traffic_creates_topics_groups_and_lag_that_rises_and_falls(kafka, admin):
    """At speed 10 the groups lag during the consumer pause and catch up afterwards."""
    pause = next(p.name for p in CONSUMER_PHASES if not p.reads)
    catch_up = next(p.name for p in CONSUMER_PHASES
                    if any(r.catch_up and r.group == TEST_GROUP for r in p.reads))
    samples: list[int] = []
    traffic = Traffic(kafka.bootstrap, speed=10).start()
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            lag = _sum_lag(admin, TEST_GROUP)
            if lag is not None:
                samples.append(lag)
            done = {name for role, _, name in traffic.stats.phases_done if role == "consumer"}
            if {pause, catch_up} <= done and _rose_then_fell(samples):
                break
            time.sleep(0.25)
        done = {name for role, _, name in traffic.stats.phases_done if role == "consumer"}
    finally:
        traffic.stop()
    assert not traffic.running
    assert traffic.stats.errors == []
    assert {pause, catch_up} <= done, f"consumer phases done: {sorted(done)}"
    assert max(samples, default=0) > 0, f"test-consumer-group never lagged: {samples}"
    assert _rose_then_fell(samples), f"test-consumer-group lag never came down: {samples}"

    groups = {g["group_id"] for g in admin.list_groups()}
    assert {TEST_GROUP, HIGH_VOLUME_GROUP} <= groups
    assert _sum_lag(admin, HIGH_VOLUME_GROUP) is not None
    partitions = {t["name"]: len(t["partitions"])
                  for t in admin.describe_topics([TEST_TOPIC, HIGH_VOLUME_TOPIC])}
    assert partitions == {TEST_TOPIC: 6, HIGH_VOLUME_TOPIC: 3}
    assert traffic.stats.produced[TEST_TOPIC] > 0 and traffic.stats.consumed[TEST_TOPIC] > 0
    _assert_seed_message_format(kafka.bootstrap)


def _assert_seed_message_format(bootstrap: str) -> None:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, consumer_timeout_ms=5000)
    try:
        tps = [TopicPartition(TEST_TOPIC, p) for p in range(6)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        records = [r for batch in consumer.poll(timeout_ms=5000, max_records=20).values()
                   for r in batch]
        assert records, "no record read back from test-topic"
        for r in records:
            assert MESSAGE.fullmatch(r.value.decode()), r.value
    finally:
        consumer.close(autocommit=False)

