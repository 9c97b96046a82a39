"""The configuration: klag-exporter's TOML format, or YAML with the same tree, checked up front.

Every problem is a ConfigError naming the file, the key path (``clusters[1].group_whitelist[0]``)
and what is wrong, on one line and without the offending value, so that nothing read from the
file (a password put in the wrong place, say) ends up in a log.

klag-exporter keys that this exporter has no use for are accepted when ignoring them is
harmless (see ``_KLAG_ONLY``), so that its config files load unchanged.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from klag_collector import kafka_properties
from klag_collector.config_reader import FrozenMap, Reader, join, kind
from klag_collector.durations import parse_duration
from klag_collector.envsubst import interpolate
from klag_collector.errors import ConfigError
from klag_collector.metrics import BUILTIN_LABELS, Granularity

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ClusterConfig",
    "Config",
    "ExporterConfig",
    "NameFilter",
    "OtelConfig",
    "Performance",
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
    max_concurrent_groups: int = 10


@dataclass(frozen=True)
class OtelConfig:
    """The optional OTLP push."""

    enabled: bool = False
    endpoint: str = "http://localhost:4317"
    protocol: str = "grpc"
    export_interval: float = 60.0


@dataclass(frozen=True)
class ExporterConfig:
    """The ``[exporter]`` table; durations are in seconds."""

    poll_interval: float = 30.0
    http_host: str = "0.0.0.0"
    http_port: int = 8000
    granularity: Granularity = Granularity.TOPIC
    staleness_threshold: float = 90.0
    ready_requires: str = "any"
    timestamp_sampling: TimestampSampling = TimestampSampling()
    performance: Performance = Performance()
    otel: OtelConfig = OtelConfig()


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
    tree = _parse_toml(text, source) if fmt == "toml" else _parse_yaml(text, source)
    return _build(Reader(source), {} if tree is None else tree)


def _parse_toml(text: str, source: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        line = re.search(r"\(at line (\d+), column \d+\)", message)
        reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
        where = f"line {line.group(1)}" if line else ""
        raise ConfigError(source, where, "invalid TOML: " + " ".join(reason.split())) from None


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate keys, which TOML forbids and PyYAML would overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f'duplicate key "{key}"', key_node.start_mark
                )
            seen.add(key if isinstance(key, str) else id(key_node))
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        # Only problem and context: str(e) quotes the offending line, which may hold a secret.
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        parts = [getattr(e, "problem", None), getattr(e, "context", None)]
        reason = "; ".join(p for p in parts if p) or type(e).__name__
        raise ConfigError(source, where, "invalid YAML: " + " ".join(reason.split())) from None


_TOP_KEYS = ("exporter", "clusters")
_EXPORTER_KEYS = (
    "poll_interval", "http_host", "http_port", "granularity", "staleness_threshold",
    "ready_requires", "timestamp_sampling", "performance", "otel", "leadership",
)
_SAMPLING_KEYS = ("enabled", "cache_ttl", "max_concurrent_fetches")
_PERFORMANCE_KEYS = ("kafka_timeout", "offset_fetch_timeout", "max_concurrent_groups")
_OTEL_KEYS = ("enabled", "endpoint", "protocol", "export_interval")
_CLUSTER_KEYS = (
    "name", "bootstrap_servers", "group_whitelist", "group_blacklist", "topic_whitelist",
    "topic_blacklist", "consumer_properties", "labels", "aws_msk_iam",
)

# klag-exporter keys accepted and then unused. Each is still type-checked, so a typo in its
# value fails; none changes what this exporter reports:
# - timestamp_sampling: klag-exporter's "rate" mode estimates time lag from produce rates to
#   spare a librdkafka consumer pool; this exporter always reads the record (exact), batched per
#   leader, bounded by kafka_timeout, so mode, fetch_timeout and the rate_* knobs have no object.
#   skip_data_loss_partitions made klag-exporter report 0; here such partitions use the earliest
#   retained record, and unknown is never reported as 0.
# - performance: librdkafka / Tokio workarounds (client recycling, blocking threads), a
#   deprecated per-partition watermark limit, retries, and caches that only make data older.
_DURATION = ("duration", 0.0)
_KLAG_ONLY: Dict[str, Dict[str, Tuple[str, Any]]] = {
    "exporter.timestamp_sampling": {
        "mode": ("choice", ("rate", "message")),
        "fetch_timeout": ("duration", None),
        "skip_data_loss_partitions": ("bool", None),
        "rate_history_samples": ("int", 2),
        "rate_history_max_age": ("duration", None),
        "rate_min_msgs_per_sec": ("number", 0.0),
    },
    "exporter.performance": {
        "max_concurrent_watermarks": ("int", 1),
        "client_recycle_interval": ("int", 0),
        "max_blocking_threads": ("int", 1),
        "compacted_topics_cache_ttl": _DURATION,
        "metadata_cache_ttl": _DURATION,
        "consumer_groups_cache_ttl": _DURATION,
        "group_fetch_retries": ("int", 0),
    },
    # Leader election (one active replica) is harmless to ignore only while it is off.
    "exporter.leadership": {
        "enabled": ("bool", None),
        "provider": ("choice", ("kubernetes",)),
        "lease_name": ("str", None),
        "lease_namespace": ("str", None),
        "identity": ("str", None),
        "lease_duration_secs": ("int", 1),
        "grace_period_secs": ("int", 1),
    },
}

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_DEFAULT_WHITELIST = (".*",)
_DEFAULT_TOPIC_BLACKLIST = ("^__.*",)


def _build(r: Reader, tree: Any) -> Config:
    top = r.table(tree, "", _TOP_KEYS)
    exporter = _exporter(r, top.get("exporter", {}))
    clusters_raw = top.get("clusters")
    if clusters_raw is None or clusters_raw == []:
        r.fail("clusters", "at least one cluster is required ([[clusters]] with name and bootstrap_servers)")
    if not isinstance(clusters_raw, list):
        r.fail("clusters", f"must be a list of tables ([[clusters]]), not {kind(clusters_raw)}")
    clusters: List[ClusterConfig] = []
    seen: Dict[str, int] = {}
    for i, raw in enumerate(clusters_raw):
        cluster = _cluster(r, raw, f"clusters[{i}]")
        if cluster.name in seen:
            r.fail(f"clusters[{i}].name", f"duplicate cluster name (also clusters[{seen[cluster.name]}].name)")
        seen[cluster.name] = i
        clusters.append(cluster)
    return Config(r.source, exporter, tuple(clusters))


def _klag_only(r: Reader, section: str, table: Mapping[str, Any]) -> None:
    for key, (type_, arg) in _KLAG_ONLY.get(section, {}).items():
        if key not in table:
            continue
        path, value = join(section, key), table[key]
        if type_ == "duration":
            r.duration(value, path, minimum=arg)
        elif type_ == "int":
            r.integer(value, path, minimum=arg)
        elif type_ == "number":
            r.number(value, path, minimum=arg)
        elif type_ == "bool":
            r.boolean(value, path)
        elif type_ == "choice":
            r.choice(value, path, arg)
        else:
            r.string(value, path)


def _section(r: Reader, raw: Any, path: str, keys: Tuple[str, ...]) -> Mapping[str, Any]:
    table = r.table(raw, path, keys + tuple(_KLAG_ONLY.get(path, ())))
    _klag_only(r, path, table)
    return table


def _exporter(r: Reader, raw: Any) -> ExporterConfig:
    t = _section(r, raw, "exporter", _EXPORTER_KEYS)
    d = ExporterConfig()
    poll = r.duration(t["poll_interval"], "exporter.poll_interval") if "poll_interval" in t else d.poll_interval
    staleness = 3 * poll
    if "staleness_threshold" in t:
        staleness = r.duration(t["staleness_threshold"], "exporter.staleness_threshold")
        if staleness <= poll:
            r.fail("exporter.staleness_threshold",
                   f"must be longer than poll_interval ({poll:g}s), or data would go stale between cycles")
    leadership = _section(r, t.get("leadership", {}), "exporter.leadership", ())
    if leadership.get("enabled") is True:
        r.fail("exporter.leadership.enabled", "leader election is not supported; run a single replica")
    return ExporterConfig(
        poll_interval=poll,
        http_host=r.host(t["http_host"], "exporter.http_host") if "http_host" in t else d.http_host,
        http_port=r.integer(t["http_port"], "exporter.http_port", 1, 65535) if "http_port" in t else d.http_port,
        granularity=Granularity(r.choice(t.get("granularity", "topic"), "exporter.granularity", ("topic", "partition"))),
        staleness_threshold=staleness,
        ready_requires=r.choice(t.get("ready_requires", "any"), "exporter.ready_requires", ("any", "all")),
        timestamp_sampling=_sampling(r, t.get("timestamp_sampling", {})),
        performance=_performance(r, t.get("performance", {})),
        otel=_otel(r, t.get("otel", {})),
    )


def _sampling(r: Reader, raw: Any) -> TimestampSampling:
    p = "exporter.timestamp_sampling"
    t = _section(r, raw, p, _SAMPLING_KEYS)
    d = TimestampSampling()
    return TimestampSampling(
        enabled=r.boolean(t["enabled"], f"{p}.enabled") if "enabled" in t else d.enabled,
        cache_ttl=r.duration(t["cache_ttl"], f"{p}.cache_ttl") if "cache_ttl" in t else d.cache_ttl,
        max_concurrent_fetches=(
            r.integer(t["max_concurrent_fetches"], f"{p}.max_concurrent_fetches", 1)
            if "max_concurrent_fetches" in t else d.max_concurrent_fetches
        ),
    )


def _performance(r: Reader, raw: Any) -> Performance:
    p = "exporter.performance"
    t = _section(r, raw, p, _PERFORMANCE_KEYS)
    d = Performance()
    return Performance(
        kafka_timeout=r.duration(t["kafka_timeout"], f"{p}.kafka_timeout") if "kafka_timeout" in t else d.kafka_timeout,
        offset_fetch_timeout=(
            r.duration(t["offset_fetch_timeout"], f"{p}.offset_fetch_timeout")
            if "offset_fetch_timeout" in t else d.offset_fetch_timeout
        ),
        max_concurrent_groups=(
            r.integer(t["max_concurrent_groups"], f"{p}.max_concurrent_groups", 1)
            if "max_concurrent_groups" in t else d.max_concurrent_groups
        ),
    )


def _otel(r: Reader, raw: Any) -> OtelConfig:
    p = "exporter.otel"
    t = _section(r, raw, p, _OTEL_KEYS)
    d = OtelConfig()
    return OtelConfig(
        enabled=r.boolean(t["enabled"], f"{p}.enabled") if "enabled" in t else d.enabled,
        endpoint=r.url(t["endpoint"], f"{p}.endpoint") if "endpoint" in t else d.endpoint,
        protocol=r.choice(t.get("protocol", d.protocol), f"{p}.protocol", ("grpc", "http/protobuf")),
        export_interval=(
            r.duration(t["export_interval"], f"{p}.export_interval") if "export_interval" in t else d.export_interval
        ),
    )


def _cluster(r: Reader, raw: Any, p: str) -> ClusterConfig:
    t = r.table(raw, p, _CLUSTER_KEYS)
    for required in ("name", "bootstrap_servers"):
        if required not in t:
            r.fail(f"{p}.{required}", "required key is missing")
    name = r.string(t["name"], f"{p}.name")
    properties = r.table(t.get("consumer_properties", {}), f"{p}.consumer_properties", None)
    kafka_args = kafka_properties.translate(properties, r.source, f"{p}.consumer_properties")
    if "aws_msk_iam" in t:
        msk = r.table(t["aws_msk_iam"], f"{p}.aws_msk_iam", None)
        kafka_args = kafka_properties.msk_iam_args(msk, kafka_args, r.source, f"{p}.aws_msk_iam")
    return ClusterConfig(
        name=name,
        bootstrap_servers=_servers(r, t["bootstrap_servers"], f"{p}.bootstrap_servers"),
        groups=NameFilter(
            r.patterns(t.get("group_whitelist", _DEFAULT_WHITELIST), f"{p}.group_whitelist"),
            r.patterns(t.get("group_blacklist", ()), f"{p}.group_blacklist"),
        ),
        topics=NameFilter(
            r.patterns(t.get("topic_whitelist", _DEFAULT_WHITELIST), f"{p}.topic_whitelist"),
            r.patterns(t.get("topic_blacklist", _DEFAULT_TOPIC_BLACKLIST), f"{p}.topic_blacklist"),
        ),
        kafka_args=FrozenMap(kafka_args),
        labels=_labels(r, t.get("labels", {}), f"{p}.labels"),
    )


def _servers(r: Reader, raw: Any, path: str) -> Tuple[str, ...]:
    if isinstance(raw, str):
        items: List[Any] = raw.split(",") if raw.strip() else []
    elif isinstance(raw, list):
        items = raw
    else:
        r.fail(path, f"must be a string (comma-separated host:port) or a list, not {kind(raw)}")
    if not items:
        r.fail(path, "must not be empty")
    return tuple(r.server(item, f"{path}[{i}]") for i, item in enumerate(items))


def _labels(r: Reader, raw: Any, path: str) -> Mapping[str, str]:
    table = r.table(raw, path, None)
    for name, value in table.items():
        key = join(path, name)
        if not _LABEL_NAME.fullmatch(name):
            r.fail(key, "is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)")
        if name.startswith("__"):
            r.fail(key, "label names starting with __ are reserved by Prometheus")
        if name in BUILTIN_LABELS:
            r.fail(key, "clashes with a label the exporter sets itself")
        if not isinstance(value, str):
            r.fail(key, f"label values must be strings, not {kind(value)}")
    return FrozenMap(table)
