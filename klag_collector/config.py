"""The configuration: klag-exporter's TOML format, or YAML with the same tree, checked up front.

Every problem is a ConfigError naming the file, the key path (``clusters[1].group_whitelist[0]``)
and what is wrong, on one line and without the offending value, so that nothing read from the
file (a password put in the wrong place, say) ends up in a log.

klag-exporter keys that this exporter has no use for are accepted when ignoring them is
harmless (see ``_KLAG_ONLY``), so that its config files load unchanged.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

from klag_collector import kafka_properties
from klag_collector.config_reader import (
    FrozenMap,
    Reader,
    Section,
    join,
    kind,
    parse_toml,
    parse_yaml,
)
from klag_collector.durations import parse_duration
from klag_collector.envsubst import interpolate
from klag_collector.errors import ConfigError
from klag_collector.metrics import BUILTIN_LABELS, Granularity
from klag_collector.sharding import Shards, parse_static_shard

__all__ = [
    "ClusterConfig",
    "Config",
    "ExporterConfig",
    "NameFilter",
    "OtelConfig",
    "Performance",
    "ShardMode",
    "ShardingConfig",
    "TimestampSampling",
    "load_config",
    "parse_config",
    "parse_duration",
]


@dataclass(frozen=True)
class NameFilter:
    """Which group or topic names to keep: any whitelist match and no blacklist match."""

    whitelist: Tuple[re.Pattern[str], ...]
    blacklist: Tuple[re.Pattern[str], ...]

    def allows(self, name: str) -> bool:
        """Whether *name* passes; patterns are unanchored (``re.search``), as in klag-exporter."""
        return any(p.search(name) for p in self.whitelist) and not any(
            p.search(name) for p in self.blacklist
        )

    def __repr__(self) -> str:
        white = [p.pattern for p in self.whitelist]
        black = [p.pattern for p in self.blacklist]
        return f"NameFilter(whitelist={white!r}, blacklist={black!r})"


@dataclass(frozen=True)
class TimestampSampling:
    """Reading record timestamps for time lag."""

    enabled: bool = True
    cache_ttl: float = 60.0
    max_concurrent_fetches: int = 10


@dataclass(frozen=True)
class Performance:
    """Time limits and parallelism of the Kafka calls."""

    kafka_timeout: float = 30.0
    offset_fetch_timeout: float = 10.0
    compacted_topics_cache_ttl: float = 300.0


class OtelProtocol(str, enum.Enum):
    """``exporter.otel.protocol``: how OTLP is pushed."""

    GRPC = "grpc"
    HTTP_PROTOBUF = "http/protobuf"


@dataclass(frozen=True)
class OtelConfig:
    """The optional OTLP push."""

    enabled: bool = False
    endpoint: str = "http://localhost:4317"
    protocol: OtelProtocol = OtelProtocol.GRPC
    export_interval: float = 60.0


class ShardMode(str, enum.Enum):
    """``exporter.sharding.mode``: how replicas share a cluster's groups."""

    # through a Kafka consumer group of the replicas (the coordination group)
    KAFKA = "kafka"
    # a fixed shard "i/n" per replica, no coordination
    STATIC = "static"


@dataclass(frozen=True)
class ShardingConfig:
    """``[exporter.sharding]``: several replicas share each cluster's groups (see sharding)."""

    mode: ShardMode
    # shards in all: the coordination topic's partitions, or the n of a static "i/n"
    shards: int = 64
    # static: the one shard this replica reports (the i of "i/n")
    shard: Optional[int] = None
    coordination_group: str = "klag-collector"
    coordination_topic: str = "__klag_collector_shards"
    # the [[clusters]] entry hosting every cluster's coordination; None: each its own
    coordination_cluster: Optional[str] = None
    session_timeout: float = 10.0


class ReadyRequires(str, enum.Enum):
    """``ready_requires``: which clusters /ready needs fresh (a str: it equals its value)."""

    ANY = "any"
    ALL = "all"


@dataclass(frozen=True)
class ExporterConfig:
    """The ``[exporter]`` table; durations are in seconds."""

    poll_interval: float = 30.0
    http_host: str = "0.0.0.0"
    http_port: int = 8000
    granularity: Granularity = Granularity.TOPIC
    staleness_threshold: float = 90.0
    ready_requires: ReadyRequires = ReadyRequires.ANY
    # Sized for a handful of Prometheus servers: what strangers' connections cannot exceed.
    http_max_connections: int = 64
    http_header_timeout: float = 5.0
    timestamp_sampling: TimestampSampling = TimestampSampling()
    performance: Performance = Performance()
    otel: OtelConfig = OtelConfig()
    # POST /-/reload re-reads the config file; off, the path is unknown (404).
    enable_reload_endpoint: bool = False
    # None: one replica reports everything
    sharding: Optional[ShardingConfig] = None


class _KafkaArgs(FrozenMap[Any]):
    """Client arguments whose repr hides secret values, should they be logged on their own."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(dict(kafka_properties.hide_secrets(self)))


@dataclass(frozen=True, repr=False)
class ClusterConfig:
    """One ``[[clusters]]`` entry, with its client properties already translated."""

    name: str
    bootstrap_servers: Tuple[str, ...]
    groups: NameFilter
    topics: NameFilter
    kafka_args: Mapping[str, Any]
    labels: Mapping[str, str]

    def __repr__(self) -> str:
        args = dict(kafka_properties.hide_secrets(self.kafka_args))
        return (
            f"ClusterConfig(name={self.name!r}, bootstrap_servers={self.bootstrap_servers!r}, "
            f"groups={self.groups!r}, topics={self.topics!r}, kafka_args={args!r}, "
            f"labels={dict(self.labels)!r})"
        )


@dataclass(frozen=True)
class Config:
    """A whole, validated configuration file."""

    source: str
    exporter: ExporterConfig
    clusters: Tuple[ClusterConfig, ...]
    # Key paths of klag-exporter keys the file sets that have no effect here (--check lists them).
    ignored_keys: Tuple[str, ...] = ()


_FORMATS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}


def load_config(path: str, environ: Optional[Mapping[str, str]] = None) -> Config:
    """Read, interpolate, parse and validate the file at *path*; the extension picks the format."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, "", "is a directory, not a file") from None
    except OSError as e:
        raise ConfigError(path, "", f"cannot read file: {e.strerror or type(e).__name__}") from None
    fmt = _FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise ConfigError(path, "", "unknown file extension; use .toml, .yaml or .yml")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(path, "", f"is not UTF-8 text (bad byte at offset {e.start})") from None
    return parse_config(text, path, fmt, environ)


def parse_config(
    text: str, source: str, fmt: str, environ: Optional[Mapping[str, str]] = None
) -> Config:
    """Parse and validate config *text* in *fmt* ("toml" or "yaml"); *source* names it in errors."""
    if fmt not in ("toml", "yaml"):
        raise ConfigError(source, "", 'unknown format; use "toml" or "yaml"')
    text = interpolate(text, os.environ if environ is None else environ, fmt, source)
    tree = parse_toml(text, source) if fmt == "toml" else parse_yaml(text, source)
    return _build(Reader(source), {} if tree is None else tree)


_TOP_KEYS = ("exporter", "clusters")
_EXPORTER_KEYS = (
    "poll_interval", "http_host", "http_port", "granularity", "staleness_threshold",
    "ready_requires", "http_max_connections", "http_header_timeout",
    "timestamp_sampling", "performance", "otel", "leadership",
    "enable_reload_endpoint", "sharding",
)
# How a table's keys are read: key -> (Reader method, its extra arguments), in reading order.
_Readers = Dict[str, Tuple[str, Tuple[Any, ...]]]
# The tables under [exporter] whose keys are the fields of a dataclass, defaults and all.
_SAMPLING: _Readers = {
    "enabled": ("boolean", ()),
    "cache_ttl": ("duration", ()),
    "max_concurrent_fetches": ("integer", (1,)),
}
_PERFORMANCE: _Readers = {
    "kafka_timeout": ("duration", ()),
    "offset_fetch_timeout": ("duration", ()),
    "compacted_topics_cache_ttl": ("duration", ()),
}
_OTEL: _Readers = {
    "enabled": ("boolean", ()),
    "endpoint": ("url", ()),
    "protocol": ("member", (OtelProtocol,)),
    "export_interval": ("duration", ()),
}
# The keys of [exporter.sharding] besides `mode`, by the mode they belong to.
_SHARDING_KEYS: Dict[ShardMode, Tuple[str, ...]] = {
    ShardMode.KAFKA: ("shards", "coordination_group", "coordination_topic",
                      "coordination_cluster", "session_timeout"),
    ShardMode.STATIC: ("shard",),
}
# The coordination topic has a partition per shard; more would only slow its rebalances.
MAX_SHARDS = 1024
# What Kafka allows in a topic name (kafka.common.internals.Topic).
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_CLUSTER_KEYS = (
    "name", "bootstrap_servers", "group_whitelist", "group_blacklist", "topic_whitelist",
    "topic_blacklist", "consumer_properties", "labels", "aws_msk_iam",
)

# klag-exporter keys accepted and then unused, read as _Readers say.
# Each is still type-checked, so a typo in its value fails; none changes what is reported:
# - timestamp_sampling: klag-exporter's "rate" mode estimates time lag from produce rates to
#   spare a librdkafka consumer pool; this exporter always reads the record (exact), batched per
#   leader, bounded by kafka_timeout, so mode, fetch_timeout and the rate_* knobs have no object.
#   skip_data_loss_partitions made klag-exporter report 0; here such partitions use the earliest
#   retained record, and unknown is never reported as 0.
# - performance: librdkafka / Tokio workarounds (client recycling, blocking threads), a
#   deprecated per-partition watermark limit, retries, and caches that only make data older.
# - leadership: leader election among replicas; harmless to ignore only while it is off.
_KLAG_ONLY: Dict[str, _Readers] = {
    "exporter.timestamp_sampling": {
        "mode": ("choice", (("rate", "message"),)),
        "fetch_timeout": ("duration", ()),
        "skip_data_loss_partitions": ("boolean", ()),
        "rate_history_samples": ("integer", (2,)),
        "rate_history_max_age": ("duration", ()),
        "rate_min_msgs_per_sec": ("number", (0.0,)),
    },
    "exporter.performance": {
        # Committed offsets of all groups come in one request per coordinator: nothing to bound.
        "max_concurrent_groups": ("integer", (1,)),
        "max_concurrent_watermarks": ("integer", (1,)),
        "client_recycle_interval": ("integer", (0,)),
        "max_blocking_threads": ("integer", (1,)),
        "metadata_cache_ttl": ("duration", (0.0,)),
        "consumer_groups_cache_ttl": ("duration", (0.0,)),
        "group_fetch_retries": ("integer", (0,)),
    },
    "exporter.leadership": {
        "enabled": ("boolean", ()),
        "provider": ("choice", (("kubernetes",),)),
        "lease_name": ("string", ()),
        "lease_namespace": ("string", ()),
        "identity": ("string", ()),
        "lease_duration_secs": ("integer", (1,)),
        "grace_period_secs": ("integer", (1,)),
    },
}

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_MATCH_ALL = (re.compile(".*"),)
# klag-exporter's code default is "__.*", which re.search also finds inside "my__topic"; its
# README and example use "^__.*", which only hides internal topics. The anchored one is kept.
_INTERNAL_TOPICS = (re.compile("^__.*"),)


def _build(reader: Reader, tree: Any) -> Config:
    top = reader.table(tree, "", _TOP_KEYS)
    exporter = _exporter(reader, top.get("exporter"))
    raw_clusters = top.get("clusters")
    if raw_clusters is None or raw_clusters == []:
        reader.fail(
            "clusters", "at least one cluster is required ([[clusters]] with name and servers)"
        )
    if not isinstance(raw_clusters, list):
        reader.fail(
            "clusters", f"must be a list of tables ([[clusters]]), not {kind(raw_clusters)}"
        )
    clusters: List[ClusterConfig] = []
    seen: Dict[str, int] = {}
    for i, raw in enumerate(raw_clusters):
        cluster = _cluster(reader, raw, f"clusters[{i}]")
        if cluster.name in seen:
            first = f"clusters[{seen[cluster.name]}].name"
            reader.fail(f"clusters[{i}].name", f"duplicate cluster name (also {first})")
        seen[cluster.name] = i
        clusters.append(cluster)
    coordination = exporter.sharding and exporter.sharding.coordination_cluster
    if coordination and coordination not in seen:
        reader.fail("exporter.sharding.coordination_cluster", "names no [[clusters]] entry")
    return Config(reader.source, exporter, tuple(clusters), tuple(reader.ignored))


def _section(reader: Reader, raw: Any, path: str, keys: Tuple[str, ...]) -> Section:
    """The table at *path*, its unknown keys refused and its klag-exporter-only keys checked."""
    klag_only = _KLAG_ONLY.get(path, {})
    section = Section(reader, reader.table(raw, path, keys + tuple(klag_only)), path)
    for key, (method, args) in klag_only.items():
        if section.get(key, None, getattr(reader, method), *args) is not None:
            reader.ignored.append(join(path, key))
    return section


def _exporter(reader: Reader, raw: Any) -> ExporterConfig:
    section = _section(reader, raw, "exporter", _EXPORTER_KEYS)
    defaults = ExporterConfig()
    poll = section.get("poll_interval", defaults.poll_interval, reader.duration)
    staleness = section.get("staleness_threshold", 3 * poll, reader.duration)
    if staleness <= poll:
        reader.fail(
            "exporter.staleness_threshold",
            f"must be longer than poll_interval ({poll:g}s), or data would go stale between cycles",
        )
    leadership = _section(reader, section.table.get("leadership"), "exporter.leadership", ())
    if leadership.table.get("enabled"):
        reader.fail(
            "exporter.leadership.enabled",
            "leader election is not supported; several replicas share the work with "
            "[exporter.sharding] instead"
        )
    return ExporterConfig(
        poll_interval=poll,
        http_host=section.get("http_host", defaults.http_host, reader.host),
        http_port=section.get("http_port", defaults.http_port, reader.integer, 1, 65535),
        granularity=section.get("granularity", defaults.granularity, reader.member, Granularity),
        staleness_threshold=staleness,
        ready_requires=section.get(
            "ready_requires", defaults.ready_requires, reader.member, ReadyRequires
        ),
        http_max_connections=section.get(
            "http_max_connections", defaults.http_max_connections, reader.integer, 1
        ),
        http_header_timeout=section.get(
            "http_header_timeout", defaults.http_header_timeout, reader.duration
        ),
        timestamp_sampling=_fields(
            reader, section.table.get("timestamp_sampling"), "exporter.timestamp_sampling",
            TimestampSampling, _SAMPLING,
        ),
        performance=_fields(
            reader, section.table.get("performance"), "exporter.performance",
            Performance, _PERFORMANCE,
        ),
        otel=_fields(reader, section.table.get("otel"), "exporter.otel", OtelConfig, _OTEL),
        enable_reload_endpoint=section.get(
            "enable_reload_endpoint", defaults.enable_reload_endpoint, reader.boolean
        ),
        sharding=_sharding(reader, section.table.get("sharding")),
    )


def _sharding(reader: Reader, raw: Any) -> Optional[ShardingConfig]:
    """``[exporter.sharding]``, each key allowed only in the mode it belongs to."""
    if raw is None:
        return None
    path = "exporter.sharding"
    keys = ("mode",) + tuple(key for mode_keys in _SHARDING_KEYS.values() for key in mode_keys)
    section = Section(reader, reader.table(raw, path, keys), path)
    if "mode" not in section.table:
        reader.fail(f"{path}.mode", 'required key is missing ("kafka" or "static")')
    mode: ShardMode = section.get("mode", None, reader.member, ShardMode)
    for key in section.table:
        if key != "mode" and key not in _SHARDING_KEYS[mode]:
            reader.fail(join(path, key), f'is not a key of mode = "{mode.value}"')
    if mode is ShardMode.STATIC:
        if "shard" not in section.table:
            reader.fail(f"{path}.shard", 'required with mode = "static" ("i/n")')
        static: Shards = section.get("shard", None, _static_shard, reader)
        return ShardingConfig(mode, shards=static.count, shard=min(static.owned))
    defaults = ShardingConfig(mode)
    return ShardingConfig(
        mode,
        shards=section.get("shards", defaults.shards, reader.integer, 1, MAX_SHARDS),
        coordination_group=section.get(
            "coordination_group", defaults.coordination_group, reader.string),
        coordination_topic=section.get(
            "coordination_topic", defaults.coordination_topic, _topic_name, reader),
        coordination_cluster=section.get("coordination_cluster", None, reader.string),
        session_timeout=section.get(
            "session_timeout", defaults.session_timeout, reader.duration, 1.0),
    )


def _static_shard(value: Any, path: str, reader: Reader) -> Shards:
    shards = parse_static_shard(reader.string(value, path))
    if shards is None:
        reader.fail(path, 'must be "i/n": this replica\'s shard i of n shards, 0 <= i < n')
    return shards


def _topic_name(value: Any, path: str, reader: Reader) -> str:
    name = reader.string(value, path)
    if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        reader.fail(path, "is not a Kafka topic name (up to 249 of a-z A-Z 0-9 . _ -)")
    return name


_T = TypeVar("_T")


def _fields(reader: Reader, raw: Any, path: str, cls: Type[_T], readers: _Readers) -> _T:
    """A *cls* from the table at *path*: each key read as *readers* say, else *cls*'s default."""
    section = _section(reader, raw, path, tuple(readers))
    default = cls()
    return cls(**{
        key: section.get(key, getattr(default, key), getattr(reader, method), *args)
        for key, (method, args) in readers.items()
    })


def _cluster(reader: Reader, raw: Any, path: str) -> ClusterConfig:
    section = Section(reader, reader.table(raw, path, _CLUSTER_KEYS), path)
    for required in ("name", "bootstrap_servers"):
        if required not in section.table:
            reader.fail(f"{path}.{required}", "required key is missing")
    name = section.get("name", None, reader.string)
    properties_path = f"{path}.consumer_properties"
    properties = reader.table(section.table.get("consumer_properties"), properties_path, None)
    kafka_args = kafka_properties.translate(properties, reader.source, properties_path)
    if "aws_msk_iam" in section.table:
        msk = reader.table(section.table["aws_msk_iam"], f"{path}.aws_msk_iam", None)
        kafka_args = kafka_properties.msk_iam_args(
            msk, kafka_args, reader.source, f"{path}.aws_msk_iam"
        )
    return ClusterConfig(
        name=name,
        bootstrap_servers=_servers(
            reader, section.table["bootstrap_servers"], f"{path}.bootstrap_servers"
        ),
        groups=NameFilter(
            section.get("group_whitelist", _MATCH_ALL, reader.patterns),
            section.get("group_blacklist", (), reader.patterns),
        ),
        topics=NameFilter(
            section.get("topic_whitelist", _MATCH_ALL, reader.patterns),
            section.get("topic_blacklist", _INTERNAL_TOPICS, reader.patterns),
        ),
        kafka_args=_KafkaArgs(kafka_args),
        labels=_labels(reader, section.table.get("labels"), f"{path}.labels"),
    )


def _servers(reader: Reader, raw: Any, path: str) -> Tuple[str, ...]:
    if isinstance(raw, str):
        items: List[Any] = raw.split(",") if raw.strip() else []
    elif isinstance(raw, list):
        items = raw
    else:
        reader.fail(
            path, f"must be a string (comma-separated host:port) or a list, not {kind(raw)}"
        )
    if not items:
        reader.fail(path, "must not be empty")
    return tuple(reader.server(item, f"{path}[{i}]") for i, item in enumerate(items))


def _labels(reader: Reader, raw: Any, path: str) -> Mapping[str, str]:
    table = reader.table(raw, path, None)
    for name, value in table.items():
        key = join(path, name)
        if not _LABEL_NAME.fullmatch(name):
            reader.fail(key, "is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)")
        if name.startswith("__"):
            reader.fail(key, "label names starting with __ are reserved by Prometheus")
        if name in BUILTIN_LABELS:
            reader.fail(key, "clashes with a label the exporter sets itself")
        if not isinstance(value, str):
            reader.fail(key, f"label values must be strings, not {kind(value)}")
    return FrozenMap(table)
