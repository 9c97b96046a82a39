"""Loading and validating configuration files (README, "Configuration")."""

from __future__ import annotations

import dataclasses
import re

import pytest

from klag_collector.config import (
    ClusterConfig,
    Config,
    ExporterConfig,
    NameFilter,
    OtelConfig,
    Performance,
    TimestampSampling,
    load_config,
    parse_config,
    parse_duration,
)
from klag_collector.errors import ConfigError
from klag_collector.metrics import Granularity

PASSWORD = "pa$$w\"rd\\with'quotes"
ENV = {"KAFKA_USER": "alice", "KAFKA_PASSWORD": PASSWORD}

README_TOML = """\
[exporter]
poll_interval = "30s"          # durations: "500ms", "10s", "1m", "1h 30m"
http_host = "0.0.0.0"          # a host name or an IP literal; "::" for IPv6
http_port = 8000
granularity = "topic"          # "topic" | "partition"
staleness_threshold = "90s"    # default: 3 x poll_interval; older cluster data leaves /metrics

[exporter.timestamp_sampling]
enabled = true
cache_ttl = "60s"              # cached record timestamps; the sweep runs every 2 x cache_ttl
max_concurrent_fetches = 10

[exporter.performance]         # optional; same keys as klag-exporter
kafka_timeout = "30s"
offset_fetch_timeout = "10s"
max_concurrent_groups = 10

[exporter.otel]
enabled = false
endpoint = "http://localhost:4317"
protocol = "grpc"              # "grpc" | "http/protobuf"
export_interval = "60s"

[[clusters]]
name = "test-cluster"
bootstrap_servers = "kafka:29092"
group_whitelist = [".*"]
group_blacklist = []
topic_whitelist = [".*"]
topic_blacklist = ["^__.*"]

[clusters.consumer_properties]   # librdkafka / Java client names, as in klag-exporter
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "${KAFKA_USER}"
"sasl.password" = "${KAFKA_PASSWORD}"
"ssl.ca.location" = "/etc/kafka/ca.pem"

[clusters.labels]
environment = "test"
"""

README_YAML = """\
exporter:
  poll_interval: 30s
  http_host: "0.0.0.0"
  http_port: 8000
  granularity: topic
  staleness_threshold: 90s
  timestamp_sampling:
    enabled: true
    cache_ttl: 60s
    max_concurrent_fetches: 10
  performance:
    kafka_timeout: 30s
    offset_fetch_timeout: 10s
    max_concurrent_groups: 10
  otel:
    enabled: false
    endpoint: "http://localhost:4317"
    protocol: grpc
    export_interval: 60s
clusters:
  - name: test-cluster
    bootstrap_servers: "kafka:29092"
    group_whitelist: [".*"]
    group_blacklist: []
    topic_whitelist: [".*"]
    topic_blacklist: ["^__.*"]
    consumer_properties:
      security.protocol: SASL_SSL
      sasl.mechanism: SCRAM-SHA-512
      sasl.username: "${KAFKA_USER}"
      sasl.password: "${KAFKA_PASSWORD}"
      ssl.ca.location: /etc/kafka/ca.pem
    labels:
      environment: test
"""

MINIMAL = '[[clusters]]\nname = "c"\nbootstrap_servers = "k:9092"\n'
MINIMAL_YAML = "clusters:\n  - name: c\n    bootstrap_servers: k\n"
README_CA = "/etc/kafka/ca.pem"


@pytest.fixture
def ca(tmp_path) -> str:
    """A CA file that exists, to stand for the README example's: the loader opens every named file."""
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(path)


def spec(text: str, ca: str) -> str:
    """A README example with its ssl.ca.location at *ca*."""
    return text.replace(README_CA, ca)


def toml(text: str, environ: dict | None = None) -> Config:
    return parse_config(text, "test.toml", "toml", {} if environ is None else environ)


def error_of(text: str, fmt: str = "toml", environ: dict | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, f"test.{fmt}", fmt, {} if environ is None else environ)
    return info.value


def test_spec_example_parses_to_the_documented_values(ca: str) -> None:
    """The README's configuration example gives exactly the values it documents, with the password translated."""
    config = toml(spec(README_TOML, ca), ENV)
    assert config.exporter == ExporterConfig(
        poll_interval=30.0,
        http_host="0.0.0.0",
        http_port=8000,
        granularity=Granularity.TOPIC,
        staleness_threshold=90.0,
        ready_requires="any",
        timestamp_sampling=TimestampSampling(True, 60.0, 10),
        performance=Performance(30.0, 10.0),
        otel=OtelConfig(False, "http://localhost:4317", "grpc", 60.0),
    )
    (cluster,) = config.clusters
    assert cluster.name == "test-cluster"
    assert cluster.bootstrap_servers == ("kafka:29092",)
    assert dict(cluster.kafka_args) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
        "ssl_cafile": ca,
    }
    assert dict(cluster.labels) == {"environment": "test"}
    assert config.ignored_keys == ("exporter.performance.max_concurrent_groups",)


def test_yaml_with_the_same_tree_gives_an_equal_config(ca: str) -> None:
    """YAML with the TOML file's tree parses to an equal Config, secrets included."""
    from_toml = parse_config(spec(README_TOML, ca), "same", "toml", ENV)
    from_yaml = parse_config(spec(README_YAML, ca), "same", "yaml", ENV)
    assert from_yaml == from_toml
    assert hash(from_yaml) == hash(from_toml)


def test_load_config_picks_the_format_by_extension(tmp_path, ca: str) -> None:
    """load_config reads .toml, .yaml and .yml files and records the path as the source."""
    for name, text in (("c.toml", README_TOML), ("c.yaml", README_YAML), ("c.YML", README_YAML)):
        path = tmp_path / name
        path.write_text(spec(text, ca), encoding="utf-8")
        config = load_config(str(path), ENV)
        assert config.source == str(path)
        assert config.clusters[0].kafka_args["sasl_plain_password"] == PASSWORD


def test_minimal_config_takes_klag_exporter_defaults() -> None:
    """A cluster with only name and servers gets klag-exporter's defaults everywhere else."""
    config = toml(MINIMAL)
    assert config.exporter == ExporterConfig()
    assert config.exporter.staleness_threshold == 3 * config.exporter.poll_interval
    (cluster,) = config.clusters
    assert [p.pattern for p in cluster.groups.whitelist] == [".*"]
    assert cluster.groups.blacklist == ()
    assert [p.pattern for p in cluster.topics.whitelist] == [".*"]
    assert [p.pattern for p in cluster.topics.blacklist] == ["^__.*"]
    assert dict(cluster.kafka_args) == {} and dict(cluster.labels) == {}


def test_staleness_threshold_defaults_to_three_poll_intervals() -> None:
    """Without staleness_threshold, data goes stale after three poll intervals."""
    config = toml('[exporter]\npoll_interval = "1m"\n' + MINIMAL)
    assert config.exporter.staleness_threshold == 180.0


def test_empty_yaml_sections_read_as_defaults() -> None:
    """A bare YAML ``exporter:`` (null) means the defaults, as an empty [exporter] does in TOML."""
    config = parse_config(
        "exporter:\nclusters:\n  - name: c\n    bootstrap_servers: k\n    labels:\n",
        "t",
        "yaml",
        {},
    )
    assert config.exporter == ExporterConfig()


def test_klag_exporter_only_keys_are_accepted() -> None:
    """Keys klag-exporter has and this exporter ignores harmlessly still load."""
    config = toml(
        """
[exporter]
poll_interval = "10s"
[exporter.timestamp_sampling]
mode = "rate"
fetch_timeout = "5s"
skip_data_loss_partitions = true
rate_history_samples = 5
rate_history_max_age = "10m"
rate_min_msgs_per_sec = 0.01
[exporter.performance]
max_concurrent_watermarks = 50
client_recycle_interval = 0
max_blocking_threads = 64
compacted_topics_cache_ttl = "1h"
metadata_cache_ttl = "0s"
consumer_groups_cache_ttl = "60s"
group_fetch_retries = 2
[exporter.leadership]
enabled = false
provider = "kubernetes"
lease_name = "klag-exporter"
lease_namespace = "default"
lease_duration_secs = 15
grace_period_secs = 5
"""
        + MINIMAL
    )
    assert config.exporter.poll_interval == 10.0


def test_msk_iam_table_translates_to_kafka_python_aws_msk_iam() -> None:
    """klag-exporter's [clusters.aws_msk_iam] becomes SASL AWS_MSK_IAM over SASL_SSL."""
    config = toml(MINIMAL + "[clusters.aws_msk_iam]\n")
    assert dict(config.clusters[0].kafka_args) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "AWS_MSK_IAM",
    }


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("1m", 60.0),
        ("1h 30m", 5400.0),
        ("1h30m", 5400.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("90 seconds", 90.0),
        ("2 minutes", 120.0),
        ("1.5s", 1.5),
        ("250us", 0.00025),
        ("0s", 0.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    """Durations in klag-exporter's (humantime) spellings convert to seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("30", "without a unit"),
        ("-5s", "negative"),
        ("10x", "has an unknown unit; use ms, s, m, h or d"),
        ("1M", "has an unknown unit; use ms, s, m, h or d"),
        ("soon", "not a duration"),
        ("10s later", "not a duration"),
        ("9" * 21 + "s", "has a number of more than 20 digits"),
        ("9" * 400 + "s", "has a number of more than 20 digits"),
    ],
)
def test_bad_durations_say_why(text: str, reason: str) -> None:
    """A bare number, an unknown unit (not quoted: it may be a misplaced secret), a number too
    long to sum as a float, or junk is a ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_duration(text)


def test_the_longest_durations_still_read() -> None:
    """Twenty digits of weeks, and a fraction of any length, are still durations."""
    assert parse_duration("9" * 20 + "w") == pytest.approx(6.048e25)
    assert parse_duration("1." + "5" * 5000 + "s") == pytest.approx(1.5555555555555556)


def test_env_variable_is_substituted() -> None:
    """${VAR} takes the variable's value."""
    config = toml(MINIMAL.replace('"c"', '"${NAME}"'), {"NAME": "prod"})
    assert config.clusters[0].name == "prod"


def test_env_default_applies_when_unset_or_empty() -> None:
    """${VAR:-default} falls back to the default when VAR is unset or empty, as in a shell."""
    text = MINIMAL.replace('"k:9092"', '"${BOOT:-kafka:9092}"')
    assert toml(text).clusters[0].bootstrap_servers == ("kafka:9092",)
    assert toml(text, {"BOOT": ""}).clusters[0].bootstrap_servers == ("kafka:9092",)
    assert toml(text, {"BOOT": "b:1"}).clusters[0].bootstrap_servers == ("b:1",)


def test_env_default_works_outside_strings() -> None:
    """A reference may stand for a bare value, e.g. a port number."""
    config = toml("[exporter]\nhttp_port = ${PORT:-9100}\n" + MINIMAL)
    assert config.exporter.http_port == 9100


def test_unset_env_variable_is_an_error_naming_it_and_its_line() -> None:
    """${VAR} with VAR unset and no default fails, naming VAR and the line."""
    error = error_of(README_TOML, environ={"KAFKA_USER": "alice"})
    assert error.key == "line 36"
    assert "KAFKA_PASSWORD is not set" in error.reason


def test_optional_reference_and_escape() -> None:
    """${?VAR} is empty when unset (klag-exporter's behaviour, opted into); $${ is a literal ${."""
    config = toml(MINIMAL + '[clusters.labels]\na = "x${?NOPE}y"\nb = "$${HOME}"\n')
    assert dict(config.clusters[0].labels) == {"a": "xy", "b": "${HOME}"}


def test_references_in_comments_are_left_alone() -> None:
    """A commented-out line does not demand its variables (klag-exporter's example has some)."""
    config = toml('# "sasl.password" = "${UNSET_IN_COMMENT}"\n' + MINIMAL + "# ${ALSO_UNSET}\n")
    assert config.clusters[0].name == "c"
    yaml_text = "# ${UNSET}\nclusters:\n  - name: c  # ${UNSET}\n    bootstrap_servers: k\n"
    assert parse_config(yaml_text, "t", "yaml", {}).clusters[0].name == "c"


@pytest.mark.parametrize(
    "fmt, line", [("toml", '"sasl.password" = \'${P}\''), ("yaml", "sasl.password: '${P}'")]
)
def test_quoted_values_survive_single_quotes_in_yaml_only(fmt: str, line: str) -> None:
    """A value with a quote goes into YAML '...' escaped, but cannot go into a TOML '...'."""
    props = {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u"}
    if fmt == "toml":
        text = MINIMAL + "[clusters.consumer_properties]\n" + "".join(
            f'"{k}" = "{v}"\n' for k, v in props.items()) + line + "\n"
        error = error_of(text, "toml", {"P": PASSWORD})
        assert "use double quotes" in error.reason and PASSWORD not in str(error)
    else:
        head = "clusters:\n  - name: c\n    bootstrap_servers: k\n    consumer_properties:\n"
        body = "".join(f"      {k}: {v}\n" for k, v in props.items())
        text = head + body + "      " + line + "\n"
        config = parse_config(text, "t", "yaml", {"P": PASSWORD})
        assert config.clusters[0].kafka_args["sasl_plain_password"] == PASSWORD


def test_filters_match_unanchored_with_blacklist_winning() -> None:
    """A name passes when any whitelist pattern is found in it and no blacklist pattern is."""
    config = toml(
        '[[clusters]]\nname = "c"\nbootstrap_servers = "k"\n'
        'group_whitelist = ["^prod-", "billing"]\ngroup_blacklist = ["-test$"]\n'
    )
    groups, topics = config.clusters[0].groups, config.clusters[0].topics
    assert groups.allows("prod-orders")
    assert groups.allows("eu-billing-consumer")  # unanchored: found anywhere
    assert not groups.allows("prod-orders-test")
    assert not groups.allows("staging-orders")
    assert topics.allows("orders") and topics.allows("my__topic")
    assert not topics.allows("__consumer_offsets")


def test_an_explicit_empty_whitelist_keeps_nothing() -> None:
    """group_whitelist = [] keeps no group (the cluster then reports only partition offsets)."""
    config = toml(_c("group_whitelist = []\ntopic_blacklist = []\n"))
    assert not config.clusters[0].groups.allows("anything")
    assert config.clusters[0].topics.allows("__consumer_offsets")
    assert not NameFilter((), ()).allows("anything")


def test_labels_keep_file_order() -> None:
    """Custom labels come back in the order the file lists them."""
    config = toml(MINIMAL + '[clusters.labels]\nzone = "a"\nenv = "b"\nteam = "c"\n')
    assert list(config.clusters[0].labels) == ["zone", "env", "team"]


def test_bootstrap_servers_accept_a_string_or_a_list() -> None:
    """Servers come from a comma-separated string (spaces trimmed) or a list, IPv6 in brackets."""
    text = MINIMAL.replace('"k:9092"', '"a:9092, b:9093,[::1]:9094"')
    assert toml(text).clusters[0].bootstrap_servers == ("a:9092", "b:9093", "[::1]:9094")
    text = MINIMAL.replace('"k:9092"', '["a:9092", "b"]')
    assert toml(text).clusters[0].bootstrap_servers == ("a:9092", "b")


def test_config_is_immutable() -> None:
    """Config objects are frozen, so pollers can share them across threads."""
    config = toml(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.exporter.poll_interval = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.clusters[0].labels["x"] = "y"  # type: ignore[index]


def test_secrets_stay_out_of_errors_and_reprs(ca: str) -> None:
    """The SASL password appears in neither a validation error nor repr(config)."""
    config = toml(spec(README_TOML, ca), ENV)
    assert PASSWORD not in repr(config) and PASSWORD not in str(config)
    assert "sasl_plain_password" in repr(config.clusters[0])
    assert PASSWORD not in repr(config.clusters[0].kafka_args)
    assert PASSWORD not in str(config.clusters[0].kafka_args)
    assert dict(config.clusters[0].kafka_args)["sasl_plain_password"] == PASSWORD
    broken = README_TOML.replace('"SCRAM-SHA-512"', '"SCRAM-SHA-1"')
    error = error_of(broken, environ=ENV)
    assert error.key == 'clusters[0].consumer_properties["sasl.mechanism"]'
    assert PASSWORD not in str(error)
    misplaced = README_TOML.replace(
        'name = "test-cluster"', 'name = "test-cluster"\npassword = "${KAFKA_PASSWORD}"'
    )
    error = error_of(misplaced, environ=ENV)
    assert error.key == "clusters[0].password" and PASSWORD not in str(error)


def test_cluster_config_is_constructible_by_other_modules() -> None:
    """Other modules and tests can build a ClusterConfig directly, and its repr hides secrets."""
    cluster = ClusterConfig(
        "c", ("k:9092",), NameFilter((), ()), NameFilter((), ()),
        {"ssl_password": "topsecret"}, {},
    )
    assert "topsecret" not in repr(cluster)


def _c(extra: str = "", name: str = "c", servers: str = '"k:9092"') -> str:
    return f'[[clusters]]\nname = "{name}"\nbootstrap_servers = {servers}\n{extra}'


# Each case: format, text, the key path the error must name, a fragment of its reason.
BAD_CONFIGS = [
    pytest.param(
        "toml", "[exporter\n" + MINIMAL,
        "line 1, column 10", "invalid TOML: Expected ']' at the end of a table declaration",
        id="toml-syntax",
    ),
    pytest.param(
        "yaml", "clusters:\n  - name: [\n",
        "line 3, column 1", "invalid YAML: expected the node content; while parsing a flow node",
        id="yaml-syntax",
    ),
    pytest.param(
        "yaml", "exporter:\n  http_port: 1\n  http_port: 2\n",
        "exporter.http_port", "duplicate key (first on line 2)",
        id="yaml-duplicate-key",
    ),
    pytest.param(
        "toml", "[exporters]\n" + MINIMAL,
        "exporters", 'did you mean "exporter"?',
        id="top-unknown-key",
    ),
    pytest.param(
        "toml", '[exporter]\npol_interval = "1s"\n' + MINIMAL,
        "exporter.pol_interval", 'did you mean "poll_interval"?',
        id="exporter-unknown-key",
    ),
    pytest.param(
        "toml", '[exporter.otel]\nendpiont = "x"\n' + MINIMAL,
        "exporter.otel.endpiont", 'did you mean "endpoint"?',
        id="nested-unknown-key",
    ),
    pytest.param(
        "toml", _c('topic_whitelists = [".*"]\n'),
        "clusters[0].topic_whitelists", 'did you mean "topic_whitelist"?',
        id="cluster-unknown-key",
    ),
    pytest.param(
        "toml", '[exporter]\nhttp_port = "eighty"\n' + MINIMAL,
        "exporter.http_port", "must be an integer, not a string",
        id="port-wrong-type",
    ),
    pytest.param(
        "yaml", "exporter:\n  http_port: yes\n",
        "exporter.http_port", "must be an integer, not a boolean",
        id="port-bool",
    ),
    pytest.param(
        "toml", "[exporter]\nhttp_port = 0\n" + MINIMAL,
        "exporter.http_port", "1..65535",
        id="port-zero",
    ),
    pytest.param(
        "toml", "[exporter]\nhttp_port = 65536\n" + MINIMAL,
        "exporter.http_port", "1..65535",
        id="port-too-big",
    ),
    pytest.param(
        "toml", '[exporter]\nhttp_host = "local host"\n' + MINIMAL,
        "exporter.http_host", "not a host name",
        id="bad-host",
    ),
    pytest.param(
        "toml", '[exporter]\npoll_interval = "30 parsecs"\n' + MINIMAL,
        "exporter.poll_interval", "unknown unit",
        id="bad-duration",
    ),
    pytest.param(
        "toml", "[exporter]\npoll_interval = 30\n" + MINIMAL,
        "exporter.poll_interval", "must be a duration string",
        id="bare-number-duration",
    ),
    pytest.param(
        "toml", '[exporter]\npoll_interval = "0s"\n' + MINIMAL,
        "exporter.poll_interval", "longer than zero",
        id="zero-poll",
    ),
    pytest.param(
        "toml", '[exporter.timestamp_sampling]\ncache_ttl = "0ms"\n' + MINIMAL,
        "exporter.timestamp_sampling.cache_ttl", "longer than zero",
        id="zero-cache-ttl",
    ),
    pytest.param(
        "toml", '[exporter.performance]\nkafka_timeout = "0s"\n' + MINIMAL,
        "exporter.performance.kafka_timeout", "longer than zero",
        id="zero-timeout",
    ),
    pytest.param(
        "toml", '[exporter.performance]\noffset_fetch_timeout = "0s"\n' + MINIMAL,
        "exporter.performance.offset_fetch_timeout", "longer than zero",
        id="zero-offset-timeout",
    ),
    pytest.param(
        "toml", '[exporter.otel]\nexport_interval = "0s"\n' + MINIMAL,
        "exporter.otel.export_interval", "longer than zero",
        id="zero-export-interval",
    ),
    pytest.param(
        "toml", '[exporter]\npoll_interval = "30s"\nstaleness_threshold = "20s"\n' + MINIMAL,
        "exporter.staleness_threshold", "longer than poll_interval",
        id="staleness-below-poll",
    ),
    pytest.param(
        "toml", "[exporter.timestamp_sampling]\nmax_concurrent_fetches = 0\n" + MINIMAL,
        "exporter.timestamp_sampling.max_concurrent_fetches", "at least 1",
        id="zero-fetches",
    ),
    pytest.param(
        "toml", "[exporter.performance]\nmax_concurrent_groups = -3\n" + MINIMAL,
        "exporter.performance.max_concurrent_groups", "at least 1",
        id="negative-groups",
    ),
    pytest.param(
        "toml", '[exporter]\ngranularity = "group"\n' + MINIMAL,
        "exporter.granularity", '"topic" or "partition"',
        id="granularity",
    ),
    pytest.param(
        "toml", '[exporter]\nready_requires = "most"\n' + MINIMAL,
        "exporter.ready_requires", '"any" or "all"',
        id="ready-requires",
    ),
    pytest.param(
        "toml", '[exporter.otel]\nprotocol = "http/json"\n' + MINIMAL,
        "exporter.otel.protocol", '"grpc" or "http/protobuf"',
        id="otel-protocol",
    ),
    pytest.param(
        "toml", '[exporter.otel]\nendpoint = "localhost:4317"\n' + MINIMAL,
        "exporter.otel.endpoint", "http:// or https:// URL",
        id="otel-endpoint",
    ),
    pytest.param(
        "toml", '[exporter.timestamp_sampling]\nenabled = "yes"\n' + MINIMAL,
        "exporter.timestamp_sampling.enabled", "true or false",
        id="enabled-not-bool",
    ),
    pytest.param(
        "toml", "[exporter.leadership]\nenabled = true\n" + MINIMAL,
        "exporter.leadership.enabled", "not supported",
        id="leadership-enabled",
    ),
    pytest.param(
        "toml", '[exporter.timestamp_sampling]\nmode = "guess"\n' + MINIMAL,
        "exporter.timestamp_sampling.mode", '"rate" or "message"',
        id="klag-only-bad-value",
    ),
    pytest.param(
        "toml", '[exporter]\npoll_interval = "10s"\n',
        "clusters", "at least one cluster",
        id="no-clusters",
    ),
    pytest.param(
        "yaml", "clusters: []\n",
        "clusters", "at least one cluster",
        id="empty-cluster-list",
    ),
    pytest.param(
        "toml", 'clusters = "c"\n',
        "clusters", "must be a list of tables",
        id="clusters-not-list",
    ),
    pytest.param(
        "toml", '[[clusters]]\nbootstrap_servers = "k"\n',
        "clusters[0].name", "required key is missing",
        id="missing-name",
    ),
    pytest.param(
        "toml", _c(name=""),
        "clusters[0].name", "must not be empty",
        id="empty-name",
    ),
    pytest.param(
        "yaml", "clusters:\n  - name: 7\n    bootstrap_servers: k\n",
        "clusters[0].name", "must be a string, not an integer",
        id="name-not-string",
    ),
    pytest.param(
        "toml", _c() + _c(),
        "clusters[1].name", "duplicate cluster name (also clusters[0].name)",
        id="duplicate-name",
    ),
    pytest.param(
        "toml", '[[clusters]]\nname = "c"\n',
        "clusters[0].bootstrap_servers", "required key is missing",
        id="missing-servers",
    ),
    pytest.param(
        "toml", _c(servers='""'),
        "clusters[0].bootstrap_servers", "must not be empty",
        id="empty-servers",
    ),
    pytest.param(
        "toml", _c(servers='"a:1,,b:2"'),
        "clusters[0].bootstrap_servers[1]", "is empty",
        id="empty-server-item",
    ),
    pytest.param(
        "toml", _c(servers='"a:1,b:0"'),
        "clusters[0].bootstrap_servers[1]", "port outside 1..65535",
        id="server-bad-port",
    ),
    pytest.param(
        "toml", _c(servers='"::1:9092"'),
        "clusters[0].bootstrap_servers[0]", "needs brackets",
        id="server-bare-ipv6",
    ),
    pytest.param(
        "toml", _c('group_whitelist = ["ok", "(unclosed"]\n'),
        "clusters[0].group_whitelist[1]", "invalid regular expression",
        id="bad-regex",
    ),
    pytest.param(
        "toml", _c() + _c('topic_blacklist = ["[a-"]\n', name="d"),
        "clusters[1].topic_blacklist[0]", "invalid regular expression",
        id="bad-regex-second-cluster",
    ),
    pytest.param(
        "toml", _c("group_blacklist = [1]\n"),
        "clusters[0].group_blacklist[0]", "must be a string, not an integer",
        id="regex-not-string",
    ),
    pytest.param(
        "toml", _c('topic_whitelist = ".*"\n'),
        "clusters[0].topic_whitelist", "must be a list",
        id="filter-not-list",
    ),
    pytest.param(
        "toml", _c('[clusters.labels]\ntopic = "x"\n'),
        "clusters[0].labels.topic", "clashes with a label the exporter sets",
        id="label-builtin",
    ),
    pytest.param(
        "toml", _c('[clusters.labels]\ncluster_name = "x"\n'),
        "clusters[0].labels.cluster_name", "clashes",
        id="label-cluster-name",
    ),
    pytest.param(
        "toml", _c('[clusters.labels]\n"data-center" = "x"\n'),
        'clusters[0].labels["data-center"]', "not a valid Prometheus label name",
        id="label-invalid-name",
    ),
    pytest.param(
        "toml", _c('[clusters.labels]\n__meta = "x"\n'),
        "clusters[0].labels.__meta", "reserved",
        id="label-reserved",
    ),
    pytest.param(
        "toml", _c("[clusters.labels]\ncost_center = 12345\n"),
        "clusters[0].labels.cost_center", "must be strings, not an integer",
        id="label-not-string",
    ),
    pytest.param(
        "toml", _c('[clusters.consumer_properties]\n"sasl.mechansim" = "PLAIN"\n'),
        'clusters[0].consumer_properties["sasl.mechansim"]', 'did you mean "sasl.mechanism"?',
        id="property-unknown",
    ),
    pytest.param(
        "toml",
        _c(
            '[clusters.consumer_properties]\n"security.protocol" = "SSL"\n'
            '"ssl.truststore.location" = "/t.jks"\n'
        ),
        'clusters[0].consumer_properties["ssl.truststore.location"]', "ssl.ca.location",
        id="property-jks",
    ),
    pytest.param(
        "toml", _c('[clusters.aws_msk_iam]\nregion = "eu-west-1"\n'),
        "clusters[0].aws_msk_iam.region", "AWS_DEFAULT_REGION",
        id="msk-iam-region",
    ),
    pytest.param(
        "toml", _c(name="${CLUSTER_NAME}"),
        "line 2", "CLUSTER_NAME is not set",
        id="unset-variable",
    ),
    pytest.param(
        "toml", _c(name="${CLUSTER NAME}"),
        "line 2", "malformed ${...} reference",
        id="malformed-reference",
    ),
    # -- hostile input: bounded before or while parsing, never echoed ----------------------
    pytest.param(
        "toml", "[exporter]\nhttp_port = " + "[" * 64 + "]" * 64 + "\n" + MINIMAL,
        "exporter.http_port", "must be an integer, not a list",
        id="toml-64-deep-is-read",
    ),
    pytest.param(
        "toml", "[exporter]\nhttp_port = " + "[" * 65 + "]" * 65 + "\n" + MINIMAL,
        "line 2, column 77", "nested more than 64 levels deep",
        id="toml-65-deep",
    ),
    pytest.param(
        "toml", "a = " + "[" * 500 + "]" * 500 + "\n" + MINIMAL,
        "line 1, column 69", "nested more than 64 levels deep",
        id="toml-500-deep",
    ),
    pytest.param(
        "toml", "[exporter]\nhttp_port = " + "{a = " * 65 + "}" * 65 + "\n" + MINIMAL,
        "line 2, column 333", "nested more than 64 levels deep",
        id="toml-deep-inline-tables",
    ),
    pytest.param(
        "toml", 'a = ["""[[[""", \'\'\'[[[\'\'\', "[[[", \'[[[\'] # [[[\n' + MINIMAL,
        "a", "unknown key",
        id="toml-brackets-in-strings-do-not-nest",
    ),
    pytest.param(
        "toml", "a" + ".a" * 63 + " = 1\n" + MINIMAL,
        "a", "unknown key",
        id="toml-64-part-key-is-read",
    ),
    pytest.param(
        "toml", "a" + ".a" * 64 + " = 1\n" + MINIMAL,
        "line 1, column 128", "nested more than 64 levels deep",
        id="toml-65-part-key",
    ),
    pytest.param(
        "toml", "[exporter]\nhttp_port = " + "9" * 100 + "\n" + MINIMAL,
        "exporter.http_port", "must be in 1..65535",
        id="toml-100-digits-are-read",
    ),
    pytest.param(
        "toml", "[exporter]\nhttp_port = " + "9" * 5000 + "\n" + MINIMAL,
        "line 2, column 13", "a number of more than 100 digits",
        id="toml-5000-digits",
    ),
    pytest.param(
        "toml", '[exporter]\npoll_interval = "' + "9" * 400 + 's"\n' + MINIMAL,
        "exporter.poll_interval", "bad duration: has a number of more than 20 digits",
        id="toml-400-digit-duration",
    ),
    pytest.param(
        "toml", '[exporter]\npoll_interval = "30hunter2"\n' + MINIMAL,
        "exporter.poll_interval", "bad duration: has an unknown unit; use ms, s, m, h or d",
        id="duration-unit-not-quoted",
    ),
    pytest.param(
        "toml", _c('name2 = "a\x01hunter2"\n'),
        "line 4, column 11", "invalid TOML: Illegal character",
        id="toml-control-character-not-quoted",
    ),
    pytest.param(
        "toml", _c('[clusters.labels]\n"a\\nb" = "x"\n'),
        'clusters[0].labels["a\\nb"]', "not a valid Prometheus label name",
        id="key-with-a-line-break-escaped",
    ),
    pytest.param(
        "toml", _c('group_whitelist = ["(?P<hunter2>x)(?P<hunter2>y)"]\n'),
        "clusters[0].group_whitelist[0]",
        "invalid regular expression: redefinition of group name at position 18",
        id="regex-error-without-the-pattern",
    ),
    pytest.param(
        "toml", _c('group_whitelist = ["\\\\q"]\n'),
        "clusters[0].group_whitelist[0]", "invalid regular expression: bad escape at position 0",
        id="regex-bad-escape-without-it",
    ),
    pytest.param(
        "yaml", "exporter:\n  http_port: " + "[" * 62 + "]" * 62 + "\n" + MINIMAL_YAML,
        "exporter.http_port", "must be an integer, not a list",
        id="yaml-64-levels-are-read",
    ),
    pytest.param(
        "yaml", "exporter:\n  http_port: " + "[" * 63 + "]" * 63 + "\n" + MINIMAL_YAML,
        "line 2, column 76", "nested more than 64 levels deep",
        id="yaml-65-levels",
    ),
    pytest.param(
        "yaml", "a: " + "[" * 10000 + "]" * 10000 + "\n",
        "line 1, column 67", "nested more than 64 levels deep",
        id="yaml-10000-deep",
    ),
    pytest.param(
        "yaml", "- " * 500 + "x\n",
        "line 1, column 129", "nested more than 64 levels deep",
        id="yaml-500-deep-block",
    ),
    pytest.param(
        "yaml", "exporter:\n  http_port: " + "9" * 5000 + "\n" + MINIMAL_YAML,
        "exporter.http_port", "is a number of more than 100 digits",
        id="yaml-5000-digits",
    ),
    pytest.param(
        "yaml", "exporter:\n  http_port: " + "1:" * 100 + "1\n" + MINIMAL_YAML,
        "exporter.http_port", "is a number of more than 100 digits",
        id="yaml-long-base-60",
    ),
    pytest.param(
        "yaml", "exporter:\n  http_port: !!int 8000\n" + MINIMAL_YAML,
        "exporter.http_port",
        "YAML tags (!name, !!int, ...) are not allowed; write the plain value",
        id="yaml-int-tag",
    ),
    pytest.param(
        "yaml", MINIMAL_YAML + "    labels:\n      env: !!binary aHVudGVyMg==\n",
        "clusters[0].labels.env", "YAML tags",
        id="yaml-binary-tag",
    ),
    pytest.param(
        "yaml", "exporter: !!map {}\n" + MINIMAL_YAML,
        "exporter", "YAML tags",
        id="yaml-tag-on-a-table",
    ),
    pytest.param(
        "yaml", "!!map\n" + MINIMAL_YAML,
        "line 1, column 1", "YAML tags",
        id="yaml-tag-on-the-document",
    ),
    pytest.param(
        "yaml", "exporter:\n  http_port: !<tag:yaml.org,2002:int> 1\n" + MINIMAL_YAML,
        "exporter.http_port", "YAML tags",
        id="yaml-verbatim-tag",
    ),
    pytest.param(
        "yaml", "exporter:\n  http_port: &port 8000\n" + MINIMAL_YAML,
        "exporter.http_port", "YAML anchors (&name) are not allowed",
        id="yaml-anchor",
    ),
    pytest.param(
        "yaml", "exporter:\n  &key http_port: 8000\n" + MINIMAL_YAML,
        "exporter", "YAML anchors (&name) are not allowed (in a key)",
        id="yaml-anchor-on-a-key",
    ),
    pytest.param(
        "yaml", "clusters:\n  - name: c\n    bootstrap_servers: *hunter2\n",
        "clusters[0].bootstrap_servers",
        "YAML aliases (*name) are not allowed; write the value out",
        id="yaml-alias",
    ),
    pytest.param(
        "yaml", MINIMAL_YAML + "    labels:\n      env: 2024-13-45\n",
        "clusters[0].labels.env", "is not a valid date/time; quote it if it is text",
        id="yaml-impossible-date",
    ),
    pytest.param(
        "yaml", "exporter:\n  http_host: a\x07b\n" + MINIMAL_YAML,
        "line 2, column 15", "invalid YAML: special characters are not allowed",
        id="yaml-control-character",
    ),
    pytest.param(
        "yaml", 'clusters:\n  - name: "\\U0011ffff"\n',
        "line 2, column 14", "invalid YAML: an escape or number out of range",
        id="yaml-escape-out-of-range",
    ),
    pytest.param(
        "yaml", 'clusters:\n  - name: "\\q"\n',
        "line 2, column 13",
        "invalid YAML: found unknown escape character; while scanning a double-quoted scalar",
        id="yaml-unknown-escape-not-quoted",
    ),
    pytest.param(
        "yaml", "clusters:\n  - name: c\n    bootstrap_servers: k\t\n",
        "line 3, column 25",
        "invalid YAML: found character that cannot start any token; while scanning for the next",
        id="yaml-character-not-quoted",
    ),
    pytest.param(
        "yaml", "clusters:\n  - name: *hunter2$\n",
        "line 2, column 19",
        "invalid YAML: expected alphabetic or numeric character; while scanning an alias",
        id="yaml-found-character-not-quoted",
    ),
    pytest.param(
        "yaml", 'a: "\\xZZhunter2"\n',
        "line 1, column 7",
        "invalid YAML: expected escape sequence of 2 hexadecimal numbers; while scanning a",
        id="yaml-found-escape-not-quoted",
    ),
]


@pytest.mark.parametrize("fmt, text, key, fragment", BAD_CONFIGS)
def test_bad_config_is_one_line_naming_file_key_and_problem(
    fmt: str, text: str, key: str, fragment: str
) -> None:
    """Each bad input fails with one line: the file, the exact key path, and what is wrong."""
    error = error_of(text, fmt)
    assert error.source == f"test.{fmt}"
    assert error.key == key
    assert fragment in error.reason
    message = str(error)
    assert message == f"test.{fmt}: {key}: {error.reason}"
    assert "\n" not in message
    assert "hunter2" not in message and "\x01" not in message and "\x07" not in message


# -- secrets next to syntax; environment values in unquoted text -------------------------

SECRET_SYNTAX = [
    ("yaml", "http_port: *${P}"), ("yaml", "http_port: &${P} 1"), ("yaml", "http_port: !${P} 1"),
    ("yaml", "http_port: !!int ${P}"), ("yaml", "http_port: !!float ${P}"),
    ("yaml", "http_port: !!timestamp ${P}"), ("yaml", "http_port: !!binary ${P}"),
    ("yaml", "http_port: !<${P}> 1"), ("yaml", 'http_port: "${P}'), ("yaml", "${P}: [1, 2"),
    ("yaml", "http_port: [${P}"), ("toml", "http_port = ${P}"), ("toml", 'http_port = "${P}'),
    ("toml", "http_port = [${P}"), ("toml", "http_port = {${P}"), ("toml", "http_port = *${P}"),
]


@pytest.mark.parametrize("fmt, line", SECRET_SYNTAX)
@pytest.mark.parametrize("secret", ["hunter2", PASSWORD])
def test_no_error_shows_a_secret_next_to_syntax(fmt: str, line: str, secret: str) -> None:
    """A secret in a tag, an anchor, an alias, an unclosed quote or bracket, or bare, written
    in the file or from the environment: the error is one line, and does not show it."""
    head = {"toml": "[exporter]\n", "yaml": "exporter:\n  "}[fmt]
    tail = {"toml": "\n" + MINIMAL, "yaml": "\n" + MINIMAL_YAML}[fmt]
    for text, environ in (
        (head + line + tail, {"P": secret}),
        (head + line.replace("${P}", secret) + tail, {}),
    ):
        error = error_of(text, fmt, environ)
        assert "\n" not in str(error)
        assert secret not in str(error) and "hunter" not in str(error), str(error)


BARE = {
    "yaml": "clusters:\n  - name: ${V}\n    bootstrap_servers: k\n",
    "toml": '[exporter]\nhttp_port = ${V}\n' + MINIMAL,
}


@pytest.mark.parametrize("fmt, value", [
    ("yaml", "a: b"), ("yaml", "a:"), ("yaml", "x #y"), ("yaml", "#x"), ("yaml", "*alias"),
    ("yaml", "&a"), ("yaml", "!tag"), ("yaml", "? k"), ("yaml", "- k"), ("yaml", "{a: 1}"),
    ("yaml", "[1]"), ("yaml", "'q"), ("yaml", '"q'), ("yaml", "|"), ("yaml", "---"),
    ("yaml", "two\nlines"), ("yaml", "nul\x00"), ("yaml", "tab\t"), ("yaml", "nel\x85"),
    ("toml", "{a = 1}"), ("toml", "1 # x"), ("toml", "1\n[x]"), ("toml", "1\u2028"),
])
def test_an_environment_value_that_would_add_syntax_is_refused_unquoted(
    fmt: str, value: str
) -> None:
    """Unquoted, a value from the environment must stay one scalar: one that would add a line,
    a comment, a key, a table or YAML syntax is refused, naming the variable and the line."""
    error = error_of(BARE[fmt], fmt, {"V": value})
    assert error.key == "line 2"
    assert error.reason == (
        "the value of V would change the file's structure in unquoted text; "
        "put the reference in double quotes"
    )


def test_environment_values_that_stay_one_scalar_go_in_unquoted() -> None:
    """Unquoted values still work as before: numbers, booleans, and YAML plain text with
    spaces, colons, commas and indicators after its first character."""
    environ = {"N": "my cluster", "B": "k1:9092,k2:9092", "P": 'p@ss!w*rd"x=', "E": "false"}
    text = (
        "exporter:\n  timestamp_sampling:\n    enabled: ${E}\n"
        "clusters:\n  - name: ${N}\n    bootstrap_servers: ${B}\n    consumer_properties:\n"
        "      security.protocol: SASL_PLAINTEXT\n      sasl.mechanism: PLAIN\n"
        "      sasl.username: u\n      sasl.password: ${P}\n"
    )
    config = parse_config(text, "t", "yaml", environ)
    assert config.exporter.timestamp_sampling.enabled is False
    (cluster,) = config.clusters
    assert cluster.name == "my cluster"
    assert cluster.bootstrap_servers == ("k1:9092", "k2:9092")
    assert cluster.kafka_args["sasl_plain_password"] == 'p@ss!w*rd"x='
    assert toml(BARE["toml"], {"V": "9100"}).exporter.http_port == 9100


def test_inside_brackets_a_separator_is_refused_unquoted() -> None:
    """In [...] a comma or bracket from the environment would add items: refused there, and
    taken in a value outside brackets."""
    text = MINIMAL_YAML + "    group_whitelist: [${G}]\n"
    config = parse_config(text, "t", "yaml", {"G": "^a:b"})
    assert [p.pattern for p in config.clusters[0].groups.whitelist] == ["^a:b"]
    error = error_of(text, "yaml", {"G": "a,b"})
    assert (error.key, "would change the file's structure" in error.reason) == ("line 4", True)


def test_the_files_own_defaults_are_its_syntax() -> None:
    """A ${VAR:-default} is the author's text: it may be a list, unquoted."""
    text = MINIMAL_YAML + '    group_whitelist: ${G:-["^a", "^b"]}\n'
    config = parse_config(text, "t", "yaml", {})
    assert [p.pattern for p in config.clusters[0].groups.whitelist] == ["^a", "^b"]


@pytest.mark.parametrize("fmt", ["toml", "yaml"])
def test_control_characters_go_escaped_into_double_quotes(fmt: str) -> None:
    """Inside "..." controls and Unicode line breaks are escaped, and read back exactly."""
    value = "a\x7fb\u2028c\x85d\te\x00f\x1bg"
    line = {"toml": '[clusters.labels]\nenv = "${V}"\n', "yaml": '    labels:\n      env: "${V}"\n'}
    base = {"toml": MINIMAL, "yaml": MINIMAL_YAML}[fmt]
    config = parse_config(base + line[fmt], "t", fmt, {"V": value})
    assert config.clusters[0].labels["env"] == value


@pytest.mark.parametrize("fmt", ["toml", "yaml"])
def test_control_characters_cannot_go_into_single_quotes(fmt: str) -> None:
    """'...' has no escapes: a value with a control character or line break is refused."""
    line = {"toml": "[clusters.labels]\nenv = '${V}'\n", "yaml": "    labels:\n      env: '${V}'\n"}
    text = {"toml": MINIMAL, "yaml": MINIMAL_YAML}[fmt] + line[fmt]
    error = error_of(text, fmt, {"V": "a\u2028b"})
    assert error.reason == "the value of V cannot go inside '...' quotes; use double quotes"


def test_an_undecodable_environment_value_is_refused() -> None:
    """os.environ keeps bytes that are not UTF-8 as lone surrogates; they are no text."""
    error = error_of(_c(name="${V}"), "toml", {"V": "pass\udcffword"})
    assert (error.key, error.reason) == ("line 2", "the value of V is not UTF-8 text")


def test_many_references_on_one_line_take_linear_time() -> None:
    """Each reference's quoting is read on from the previous one, not from the line's start."""
    import time

    text = _c(name="${?E}" * 50000)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="must not be empty"):
        toml(text)
    assert time.monotonic() - start < 5


def test_missing_file_is_an_error(tmp_path) -> None:
    """A path that does not exist is a ConfigError naming it."""
    path = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="file not found") as info:
        load_config(path)
    assert str(info.value).startswith(path + ": ")


def test_unreadable_file_is_an_error(tmp_path) -> None:
    """A directory, or bytes that are not UTF-8, cannot be read as a config file."""
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(str(tmp_path))
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(binary))


def test_unknown_extension_is_an_error(tmp_path) -> None:
    """Only .toml, .yaml and .yml are understood; anything else says so."""
    path = tmp_path / "config.json"
    path.write_text("{}")
    with pytest.raises(ConfigError, match=r"unknown file extension; use \.toml, \.yaml or \.yml"):
        load_config(str(path))


# -- files named by consumer properties -------------------------------------------------

# Every property naming a file the clients read (kafka_properties marks them in TRANSLATED).
FILE_PROPERTIES = (
    "ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.crl.location",
    "https.ca.location",
)


def with_property(tmp_path, name: str, value: str) -> str:
    """A config file whose one cluster sets `name` to `value` (and a SASL password)."""
    path = tmp_path / "klag.toml"
    path.write_text(MINIMAL + "[clusters.consumer_properties]\n"
                    '"security.protocol" = "SASL_SSL"\n"sasl.mechanism" = "PLAIN"\n'
                    '"sasl.username" = "u"\n"sasl.password" = "${KAFKA_PASSWORD}"\n'
                    f"\"{name}\" = '{value}'\n")
    return str(path)


def file_error(tmp_path, name: str, value: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(with_property(tmp_path, name, value), ENV)
    return info.value


@pytest.mark.parametrize("name", FILE_PROPERTIES)
def test_a_missing_named_file_is_one_line_with_key_and_file(tmp_path, name: str) -> None:
    """A property naming a file that does not exist fails loading: the file, the key path, the
    file's path and "no such file", on one line, and no secret."""
    missing = tmp_path / "absent.pem"
    error = file_error(tmp_path, name, str(missing))
    path = str(tmp_path / "klag.toml")
    key = f'clusters[0].consumer_properties["{name}"]'
    assert (error.source, error.key, error.reason) == (path, key, f"{missing}: no such file")
    assert str(error) == f"{path}: {key}: {missing}: no such file"
    assert PASSWORD not in str(error)


@pytest.mark.parametrize("name", FILE_PROPERTIES[:4])
def test_a_directory_is_refused_where_the_client_needs_a_file(tmp_path, name: str) -> None:
    """kafka-python reads each ssl.*.location as one PEM file (librdkafka also takes a CA
    directory): a directory is refused."""
    error = file_error(tmp_path, name, str(tmp_path))
    assert error.reason == f"{tmp_path}: is a directory; kafka-python needs a PEM file"


def test_https_ca_location_may_be_a_directory_of_cas(tmp_path) -> None:
    """The token endpoint's CA may be a directory (OpenSSL's capath), as in librdkafka."""
    cas = tmp_path / "cas"
    cas.mkdir()
    config = toml(MINIMAL + "[clusters.consumer_properties]\n"
                  '"security.protocol" = "SASL_SSL"\n"sasl.mechanism" = "OAUTHBEARER"\n'
                  '"sasl.oauthbearer.token.endpoint.url" = "https://idp.example/token"\n'
                  '"sasl.oauthbearer.client.id" = "klag"\n'
                  '"sasl.oauthbearer.client.secret" = "${KAFKA_PASSWORD}"\n'
                  f"\"https.ca.location\" = '{cas}'\n", ENV)
    assert config.clusters[0].kafka_args["sasl_oauth_token_provider"].ca_location == str(cas)


@pytest.mark.parametrize("name", FILE_PROPERTIES)
def test_a_file_that_cannot_be_opened_is_not_readable(tmp_path, name: str) -> None:
    """A file that cannot be opened is "not readable", with the system's reason. A symbolic
    link loop stands for it: root opens files whatever their mode, and the tests run as root."""
    loop = tmp_path / "loop.pem"
    loop.symlink_to(tmp_path / "loop.pem")
    error = file_error(tmp_path, name, str(loop))
    assert error.reason == f"{loop}: not readable (Too many levels of symbolic links)"


def test_a_readable_named_file_loads(tmp_path) -> None:
    """Files that open load; their contents are the clients' to read at connect time."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = load_config(with_property(tmp_path, "ssl.ca.location", str(ca)), ENV)
    assert config.clusters[0].kafka_args["ssl_cafile"] == str(ca)
