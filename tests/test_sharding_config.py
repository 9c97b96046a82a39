"""[exporter.sharding]: its keys, their defaults, one line per mistake, and --check's line."""

from __future__ import annotations

from pathlib import Path

import pytest

from klag_collector import cli
from klag_collector.config import ShardingConfig, ShardMode, parse_config
from klag_collector.errors import ConfigError
from klag_collector.reload import plan_reload

CLUSTERS = """
[[clusters]]
name = "a"
bootstrap_servers = "k1:9092"
[[clusters]]
name = "b"
bootstrap_servers = "k2:9092"
"""


def sharded(table: str) -> str:
    return "[exporter.sharding]\n" + table + "\n" + CLUSTERS


def sharding_of(table: str) -> ShardingConfig:
    found = parse_config(sharded(table), "s.toml", "toml", {}).exporter.sharding
    assert found is not None
    return found


def error_of(table: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(sharded(table), "s.toml", "toml", {})
    return str(info.value)


def test_no_table_means_one_replica_reports_everything() -> None:
    assert parse_config(CLUSTERS, "s.toml", "toml", {}).exporter.sharding is None


def test_kafka_mode_defaults() -> None:
    assert sharding_of('mode = "kafka"') == ShardingConfig(
        mode=ShardMode.KAFKA, shards=64, shard=None, coordination_group="klag-collector",
        coordination_topic="__klag_collector_shards", coordination_cluster=None,
        session_timeout=10.0)


def test_kafka_mode_every_key() -> None:
    got = sharding_of('mode = "kafka"\nshards = 12\ncoordination_group = "lag-replicas"\n'
                      'coordination_topic = "ops.lag-shards"\ncoordination_cluster = "b"\n'
                      'session_timeout = "30s"')
    assert got == ShardingConfig(ShardMode.KAFKA, 12, None, "lag-replicas", "ops.lag-shards", "b",
                                 30.0)


def test_static_mode_is_one_shard_of_n() -> None:
    got = sharding_of('mode = "static"\nshard = "2/3"')
    assert (got.mode, got.shard, got.shards) == (ShardMode.STATIC, 2, 3)


def test_yaml_reads_the_same() -> None:
    text = ("exporter:\n  sharding:\n    mode: kafka\n    shards: 8\n"
            "clusters:\n  - name: a\n    bootstrap_servers: k:9092\n")
    found = parse_config(text, "s.yaml", "yaml", {}).exporter.sharding
    assert found == ShardingConfig(ShardMode.KAFKA, shards=8)


@pytest.mark.parametrize("table, line", [
    ("shards = 4", 's.toml: exporter.sharding.mode: required key is missing ("kafka" or "static")'),
    ('mode = "raft"', 's.toml: exporter.sharding.mode: must be "kafka" or "static"'),
    ('mode = "kafka"\nshards = 0', "s.toml: exporter.sharding.shards: must be in 1..1024"),
    ('mode = "kafka"\nshards = 1025', "s.toml: exporter.sharding.shards: must be in 1..1024"),
    ('mode = "kafka"\nshard = "0/2"',
     's.toml: exporter.sharding.shard: is not a key of mode = "kafka"'),
    ('mode = "static"\nshards = 2',
     's.toml: exporter.sharding.shards: is not a key of mode = "static"'),
    ('mode = "static"', 's.toml: exporter.sharding.shard: required with mode = "static" ("i/n")'),
    ('mode = "static"\nshard = "2/2"',
     's.toml: exporter.sharding.shard: must be "i/n": this replica\'s shard i of n shards, '
     '0 <= i < n'),
    ('mode = "static"\nshard = 1', "s.toml: exporter.sharding.shard: must be a string, not an integer"),
    ('mode = "kafka"\ncoordination_cluster = "c"',
     "s.toml: exporter.sharding.coordination_cluster: names no [[clusters]] entry"),
    ('mode = "kafka"\ncoordination_topic = "lag shards"',
     "s.toml: exporter.sharding.coordination_topic: is not a Kafka topic name "
     "(up to 249 of a-z A-Z 0-9 . _ -)"),
    ('mode = "kafka"\ncoordination_group = ""',
     "s.toml: exporter.sharding.coordination_group: must not be empty"),
    ('mode = "kafka"\nsession_timeout = "500ms"',
     "s.toml: exporter.sharding.session_timeout: must be at least 1s"),
    ('mode = "kafka"\nsesion_timeout = "6s"',
     's.toml: exporter.sharding.sesion_timeout: unknown key; did you mean "session_timeout"?'),
])
def test_each_mistake_is_one_line_naming_the_key(table: str, line: str) -> None:
    assert error_of(table) == line


def test_a_bad_table_exits_2_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.toml"
    path.write_text(sharded('mode = "static"\nshard = "5/2"'))
    with pytest.raises(SystemExit) as info:
        cli.main(["-c", str(path), "--check"])
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"klag-collector: {path}: exporter.sharding.shard: must be \"i/n\": this "
                   "replica's shard i of n shards, 0 <= i < n"]


def test_check_says_how_the_replicas_share_the_groups() -> None:
    kafka = parse_config(sharded('mode = "kafka"\ncoordination_cluster = "a"'), "s.toml", "toml",
                         {})
    assert ("sharding: kafka, 64 shards, group klag-collector and topic __klag_collector_shards "
            "on cluster a, session 10s") in cli.summary(kafka).splitlines()
    own = parse_config(sharded('mode = "kafka"\nshards = 8'), "s.toml", "toml", {})
    assert ("sharding: kafka, 8 shards, group klag-collector and topic __klag_collector_shards "
            "on each cluster, session 10s") in cli.summary(own).splitlines()
    static = parse_config(sharded('mode = "static"\nshard = "1/4"'), "s.toml", "toml", {})
    assert "sharding: static, shard 1 of 4" in cli.summary(static).splitlines()
    assert not [line for line in cli.summary(parse_config(CLUSTERS, "s.toml", "toml", {}))
                .splitlines() if line.startswith("sharding")]


def test_a_reload_leaves_the_sharding_as_it_runs() -> None:
    """How replicas share the groups changes only with a restart, like the port."""
    old = parse_config(sharded('mode = "static"\nshard = "0/2"'), "s.toml", "toml", {})
    new = parse_config(sharded('mode = "static"\nshard = "1/2"'), "s.toml", "toml", {})
    plan = plan_reload(old, new)
    assert plan.needs_restart == ("exporter.sharding.shard",)
    assert plan.config.exporter.sharding == old.exporter.sharding
    assert plan.keep == ("a", "b")
