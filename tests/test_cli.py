"""The command line as a user runs it (`python -m klag_collector`), and the --once output.

No broker is needed: --once runs against a port nobody listens on, and the output
functions are fed pollers built on a task.Clock with fake Kafka edges.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, NamedTuple

import pytest
from twisted.internet import task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from klag_collector import __version__
from klag_collector import kafka_clients
from klag_collector.logs import TEXT, LineObserver, route_kafka_logs
from klag_collector.model import (
    ClusterData, GroupInfo, GroupType, Member, ShareGroupInfo, ShareOffset,
)
from klag_collector.output import TABLE_COLUMNS, as_dict, as_json, as_table
from exporter import ExporterProcess
from fakes import FakeSource, pollers_on_clock
from kafkahelp import wait_until

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-Pa55w0rd"

VALID = f"""
[exporter]
poll_interval = "15s"
http_port = 9100
granularity = "partition"

[[clusters]]
name = "prod-eu"
bootstrap_servers = "kafka-1:9092,kafka-2:9092"
[clusters.consumer_properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "klag"
"sasl.password" = "{SECRET}"
[clusters.labels]
environment = "prod"
region = "eu"

[[clusters]]
name = "dev"
bootstrap_servers = "localhost:9092"
"""


class Run(NamedTuple):
    code: int
    out: str
    err: str
    seconds: float


def env() -> Dict[str, str]:
    e = dict(os.environ)
    e.pop("KLAG_TEST_UNSET_VAR", None)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), e.get("PYTHONPATH")]))
    return e


def klag(*args: str, timeout: float = 60) -> Run:
    """Run `python -m klag_collector ARGS` to completion."""
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "klag_collector", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env(),
    )
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - start)


def write(tmp_path: Path, text: str, name: str = "klag.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the command line ---------------------------------------------------------------


@pytest.mark.subprocess
def test_version() -> None:
    """--version prints the program name and version and exits 0."""
    run = klag("--version")
    assert (run.code, run.out, run.err) == (0, f"klag-collector {__version__}\n", "")


@pytest.mark.subprocess
def test_check_prints_the_summary(tmp_path: Path) -> None:
    """--check on a valid config prints what would be monitored and exits 0."""
    path = write(tmp_path, VALID)
    run = klag("-c", path, "--check")
    assert run.code == 0, run.err
    assert run.out.splitlines() == [
        f"config {path} is valid",
        "listen on 0.0.0.0:9100, poll every 15s, granularity partition, stale after 45s",
        "timestamp sampling: on (cache 60s, 10 concurrent fetches)",
        "cluster prod-eu: kafka-1:9092,kafka-2:9092 (SASL_SSL), labels: environment=prod, region=eu",
        "cluster dev: localhost:9092 (PLAINTEXT), labels: none",
    ]


@pytest.mark.subprocess
def test_check_never_prints_the_password(tmp_path: Path) -> None:
    """The sasl.password value appears nowhere in --check's output."""
    run = klag("-c", write(tmp_path, VALID), "--check")
    assert run.code == 0
    assert SECRET not in run.out + run.err


@pytest.mark.subprocess
def test_check_lists_the_klag_exporter_keys_it_ignores(tmp_path: Path) -> None:
    """klag-exporter keys of no use here load, and --check says, in one line, that they do nothing."""
    text = ('[exporter.performance]\nmax_concurrent_groups = 20\n'
            '[exporter.timestamp_sampling]\nmode = "rate"\n'
            '[[clusters]]\nname = "c"\nbootstrap_servers = "h:9092"\n')
    run = klag("-c", write(tmp_path, text), "--check")
    assert run.code == 0, run.err
    assert run.out.splitlines()[-1] == (
        "ignored (klag-exporter keys with no effect here): "
        "exporter.timestamp_sampling.mode, exporter.performance.max_concurrent_groups")


@pytest.mark.subprocess
def test_check_works_on_yaml_too(tmp_path: Path) -> None:
    """A YAML file with the same tree is checked the same way."""
    yaml = "clusters:\n  - name: y1\n    bootstrap_servers: 'h:9092'\n"
    run = klag("-c", write(tmp_path, yaml, "klag.yaml"), "--check")
    assert run.code == 0, run.err
    assert "cluster y1: h:9092 (PLAINTEXT), labels: none" in run.out.splitlines()


CLUSTER = '[[clusters]]\nname = "a"\nbootstrap_servers = "h:9092"\n'

BAD_CONFIGS = {
    "unknown key": (
        '[exporter]\npoll_intervl = "10s"\n' + CLUSTER,
        'exporter.poll_intervl: unknown key; did you mean "poll_interval"?',
    ),
    "bad duration": (
        '[exporter]\npoll_interval = "10 parsecs"\n' + CLUSTER,
        "exporter.poll_interval: bad duration",
    ),
    "port out of range": (
        "[exporter]\nhttp_port = 70000\n" + CLUSTER,
        "exporter.http_port: must be in 1..65535",
    ),
    "bad regex": (
        CLUSTER + 'group_whitelist = ["(unclosed"]\n',
        "clusters[0].group_whitelist[0]: invalid regular expression",
    ),
    "duplicate cluster": (
        CLUSTER + CLUSTER,
        "clusters[1].name: duplicate cluster name (also clusters[0].name)",
    ),
    "misspelt secret property": (
        CLUSTER + f'[clusters.consumer_properties]\n"sasl.passwrd" = "{SECRET}"\n',
        'clusters[0].consumer_properties["sasl.passwrd"]: unknown Kafka client property',
    ),
    "unset variable": (
        CLUSTER + '[clusters.consumer_properties]\n"sasl.password" = "${KLAG_TEST_UNSET_VAR}"\n',
        "line 5: environment variable KLAG_TEST_UNSET_VAR is not set",
    ),
    "no clusters": ('[exporter]\npoll_interval = "10s"\n', "clusters: at least one cluster is required"),
}


@pytest.mark.subprocess
@pytest.mark.parametrize("kind", sorted(BAD_CONFIGS))
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, kind: str) -> None:
    """A bad config exits 2 with one stderr line naming the file and the key, and no value."""
    text, where = BAD_CONFIGS[kind]
    path = write(tmp_path, text)
    for mode in ("--check", "--once"):
        run = klag("-c", path, mode)
        assert run.code == 2, (mode, run)
        assert run.out == ""
        lines = run.err.splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"klag-collector: {path}: {where}"), lines[0]
        assert SECRET not in run.err


@pytest.mark.subprocess
def test_missing_file_is_exit_2(tmp_path: Path) -> None:
    """A config path that does not exist is one line and exit 2."""
    path = str(tmp_path / "absent.toml")
    run = klag("-c", path, "--check")
    assert (run.code, run.err) == (2, f"klag-collector: {path}: file not found\n")


@pytest.mark.subprocess
def test_missing_config_option_is_exit_2() -> None:
    """Without -c the command refuses to run, with usage and exit 2."""
    run = klag("--check")
    assert run.code == 2
    assert run.out == ""
    assert run.err.splitlines()[-1] == "klag-collector: error: -c/--config FILE is required"


@pytest.mark.subprocess
def test_check_and_once_exclude_each_other(tmp_path: Path) -> None:
    """--check with --once is a usage error (exit 2)."""
    run = klag("-c", write(tmp_path, VALID), "--check", "--once")
    assert run.code == 2
    assert "not allowed with argument" in run.err


# -- --once against a bootstrap address nobody answers ---------------------------------

# kafka_timeout bounds each Kafka call; the whole run, threads included, should end soon after.
ONCE_BOUND = 20.0


@pytest.fixture(scope="module")
def dead_port() -> int:
    """The port the --once runs' cluster is at, where nobody listens."""
    return free_port()


@pytest.fixture(scope="module")
def once_runs(tmp_path_factory: pytest.TempPathFactory, dead_port: int) -> Dict[str, Run]:
    """--once in each format against a dead port, run side by side to save time."""
    config = f"""
[exporter]
[exporter.performance]
kafka_timeout = "2s"
[[clusters]]
name = "dead"
bootstrap_servers = "127.0.0.1:{dead_port}"
"""
    path = write(tmp_path_factory.mktemp("once"), config)
    start = time.monotonic()
    procs = {
        fmt: subprocess.Popen(
            [sys.executable, "-m", "klag_collector", "-c", path, "--once", "--format", fmt],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env(),
        )
        for fmt in ("table", "json", "prometheus")
    }
    runs = {}
    for fmt, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        runs[fmt] = Run(proc.returncode, out, err, time.monotonic() - start)
    return runs


def test_once_table_says_the_cluster_was_not_collected(once_runs: Dict[str, Run]) -> None:
    """--once exits 1 and the table ends with the cluster's failure, no data rows."""
    run = once_runs["table"]
    assert run.code == 1, run.err
    header, *rest = run.out.splitlines()
    assert header == "  ".join(TABLE_COLUMNS)
    # "timed out" from our own kafka_timeout, or the client's own bootstrap error if it ends first.
    assert len(rest) == 1 and re.fullmatch(r"cluster dead: not collected: \S.*", rest[0]), rest


def test_once_json_says_ok_false(once_runs: Dict[str, Run]) -> None:
    """--once --format json exits 1 with "ok": false and the error, on stdout only."""
    run = once_runs["json"]
    assert run.code == 1, run.err
    doc = json.loads(run.out)
    assert list(doc["clusters"]) == ["dead"]
    dead = doc["clusters"]["dead"]
    assert dead["ok"] is False
    assert set(dead) == {"ok", "error"}
    assert dead["error"], "the reason is given"


def test_once_prometheus_reports_up_0(once_runs: Dict[str, Run]) -> None:
    """--once --format prometheus exits 1 and prints up 0 for the cluster."""
    run = once_runs["prometheus"]
    assert run.code == 1, run.err
    assert 'kafka_lag_exporter_up{cluster_name="dead"} 0.0\n' in run.out
    assert "kafka_consumergroup_group_lag" not in run.out


def test_once_ends_soon_after_kafka_timeout(once_runs: Dict[str, Run]) -> None:
    """With kafka_timeout 2s, --once against a dead address ends within ~20 s."""
    assert max(run.seconds for run in once_runs.values()) < ONCE_BOUND


# -- output.as_table / as_json -----------------------------------------------------------

T0 = 1_700_000_000.0

OUTPUT_CONFIG = """
[exporter]
poll_interval = "10s"
granularity = "partition"
[[clusters]]
name = "c1"
bootstrap_servers = "127.0.0.1:1"
[[clusters]]
name = "c2"
bootstrap_servers = "127.0.0.1:2"
"""

WORKER = Member(consumer_id="consumer-1-abc", client_id="billing", host="10.0.0.7")


def output_data() -> ClusterData:
    """billing: t/0 5 behind (age known), t/1 3 behind (age unknown); idle (a consumer-protocol
    group): caught up; one group whose offsets could not be read; sharers, a share group at
    start offset 16 of t/1, its lag as the broker reports it (2)."""
    return ClusterData(
        groups={
            "billing": GroupInfo("billing", "Stable", members=1, assignments={("t", 0): WORKER}),
            "idle": GroupInfo("idle", "Empty", group_type=GroupType.CONSUMER),
        },
        committed={"billing": {("t", 0): 5, ("t", 1): 17}, "idle": {("t", 0): 10}},
        earliest={("t", 0): 0, ("t", 1): 0},
        latest={("t", 0): 10, ("t", 1): 20},
        leaders={("t", 0): 1, ("t", 1): 1},
        skipped_groups={"offsets_unavailable": 1},
        share_groups={"sharers": ShareGroupInfo("sharers", "Stable", members=2)},
        share_offsets={"sharers": {("t", 1): ShareOffset(16, lag=2)}},
    )


@pytest.fixture
def pollers():
    """c1 collected from the fake data on a Clock; c2's source raises."""
    clock = task.Clock()
    clock.advance(T0)
    good = FakeSource(output_data(), {("t", 0, 5): int(T0 * 1000) - 12_500})
    bad = FakeSource()
    bad.error = ConnectionError("broker down")
    _, built = pollers_on_clock(OUTPUT_CONFIG, {"c1": good, "c2": bad}, clock)
    for p in built:
        p.poll_now()
    # A one-shot poll schedules no retry and no stale re-render.
    assert clock.getDelayedCalls() == []
    return built


def cells(line: str) -> List[str]:
    return line.split()


def starts(line: str) -> List[int]:
    return [m.start() for m in re.finditer(r"\S+", line)]


def test_table_columns_and_values(pollers) -> None:
    """The table has kafka-consumer-groups' columns plus time lag, one row per partition."""
    lines = as_table(pollers).splitlines()
    assert cells(lines[0]) == list(TABLE_COLUMNS)
    assert [cells(line) for line in lines[1:5]] == [
        ["c1", "billing", "classic", "Stable", "t", "0", "5", "10", "5", "12.5",
         "consumer-1-abc", "10.0.0.7", "billing"],
        ["c1", "billing", "classic", "Stable", "t", "1", "17", "20", "3", "-", "-", "-", "-"],
        ["c1", "idle", "consumer", "Empty", "t", "0", "10", "10", "0", "0.0", "-", "-", "-"],
        ["c1", "sharers", "share", "Stable", "t", "1", "16", "20", "2", "-", "-", "-", "-"],
    ]
    assert lines[5:] == ["cluster c1: groups skipped: 1 offsets_unavailable",
                         "cluster c2: not collected: ConnectionError: broker down"]


def test_table_columns_are_aligned(pollers) -> None:
    """Every cell starts where its header does."""
    lines = as_table(pollers).splitlines()
    header = starts(lines[0])
    for line in lines[1:5]:
        assert starts(line) == header, line


def test_unknown_lag_seconds_is_a_dash_never_zero(pollers) -> None:
    """A lagging partition with unknown record age shows "-", a caught-up one 0.0."""
    rows = {(c[1], c[5]): c[9] for c in map(cells, as_table(pollers).splitlines()[1:4])}
    assert rows[("billing", "1")] == "-"
    assert rows[("idle", "0")] == "0.0"


def test_json_has_groups_partitions_and_failures(pollers) -> None:
    """as_json gives each cluster's groups and partitions, null for unknown, ok false on failure."""
    doc = json.loads(as_json(pollers))
    assert doc == as_dict(pollers)
    c1 = doc["clusters"]["c1"]
    # billing t/1 and the share group's t/1: lagging, their record ages unknown
    assert (c1["ok"], c1["error"], c1["skipped"]) == (True, "", {"timestamp_unavailable": 2})
    assert c1["skipped_groups"] == {"offsets_unavailable": 1}
    assert c1["groups"]["idle"]["type"] == "consumer"
    assert c1["groups"]["sharers"] == {
        "type": "share", "state": "Stable", "members": 2, "sum_lag": 2, "max_lag_seconds": None,
        "partitions": [{"topic": "t", "partition": 1, "start_offset": 16, "latest": 20,
                        "lag": 2, "lag_seconds": None}],
    }
    billing = c1["groups"]["billing"]
    assert {k: v for k, v in billing.items() if k != "partitions"} == {
        "type": "classic", "state": "Stable", "members": 1, "sum_lag": 8, "max_lag": 5, "max_lag_seconds": 12.5,
    }
    assert billing["partitions"][0] == {
        "topic": "t", "partition": 0, "committed": 5, "earliest": 0, "latest": 10, "lag": 5,
        "lag_seconds": 12.5, "messages_lost": 0, "data_loss": False, "compacted": False,
        "consumer_id": "consumer-1-abc", "host": "10.0.0.7", "client_id": "billing",
    }
    assert billing["partitions"][1]["lag_seconds"] is None
    assert c1["groups"]["idle"]["partitions"][0]["lag_seconds"] == 0.0
    assert doc["clusters"]["c2"] == {"ok": False, "error": "ConnectionError: broker down"}


# -- one-line failures and the startup line of a long-running process ------------------


def once_log_lines(run: Run) -> List[dict]:
    """stderr of a --once run, one JSON log record per line."""
    return [json.loads(line) for line in run.err.splitlines()]


@pytest.mark.parametrize("fmt", ["table", "json", "prometheus"])
def test_once_stderr_is_our_one_line_per_failing_cluster(
    once_runs: Dict[str, Run], dead_port: int, fmt: str
) -> None:
    """At the default level --once writes one error line for the dead cluster: no kafka-python
    line, and no retry wording, since a one-shot run has no next attempt."""
    run = once_runs[fmt]
    # The reason is the client's own bootstrap error, which ends at 0.8 x kafka_timeout, or
    # our kafka_timeout itself on a machine too busy for the client to end first.
    reasons = (f"KafkaTimeoutError: Unable to bootstrap from ['127.0.0.1:{dead_port}']",
               "timed out")
    (record,) = once_log_lines(run)
    assert (record["level"], record["logger"]) == ("error", "klag_collector.poller.ClusterPoller")
    assert record["message"] in [f"cluster dead: collection failed ({r})" for r in reasons]
    assert "retry" not in run.err
    assert "kafka." not in run.err


@pytest.fixture
def kafka_logger():
    """The `kafka` stdlib logger, its handlers, level and propagation restored afterwards."""
    logger = logging.getLogger("kafka")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.mark.parametrize("level, shown", [
    ("debug", True), ("info", False), ("warn", False), ("error", False), ("critical", False),
])
def test_kafka_python_logs_only_at_debug(kafka_logger: logging.Logger, level: str,
                                         shown: bool) -> None:
    """kafka-python's connection errors (two a second through an outage) reach our log only at
    -l debug, in every mode; the records are still made, for kafka_clients to explain failures."""
    events: List[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        route_kafka_logs(level)
        since = time.time()
        logging.getLogger("kafka.net.connection").error(
            "%s: connect attempt failed: %s", "broker:9092", ConnectionRefusedError("refused"))
        logging.getLogger("kafka.client").warning("bootstrap failed")
    finally:
        globalLogPublisher.removeObserver(events.append)
    kafka_lines = [(e["log_level"].name, formatEvent(e)) for e in events
                   if e.get("log_namespace", "").startswith("kafka")]
    expected = [("error", "broker:9092: connect attempt failed: refused"),
                ("warn", "bootstrap failed")]
    assert kafka_lines == (expected if shown else [])
    recorded = kafka_clients._recorder.take(threading.get_ident(), since)
    assert [str(e) for e in recorded] == ["refused"]


def test_text_log_lines_escape_control_characters() -> None:
    """A name from Kafka with ESC or a newline in a text log line prints as its escape, so it
    can neither drive the terminal nor forge a line."""
    out = io.StringIO()
    LineObserver(out, TEXT)({"log_format": "group {g} failed", "g": "evil\x1b[2J\nERROR forged",
                             "log_level": LogLevel.warn, "log_namespace": "klag_collector"})
    assert out.getvalue() == "WARN  klag_collector: group evil\\x1b[2J\\nERROR forged failed\n"


def occupied_port() -> socket.socket:
    """A socket listening on 127.0.0.1, on a port of its own; close it when done."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def serving_config(tmp_path: Path, http_port: int) -> str:
    """A config serving on 127.0.0.1:`http_port`, polling a cluster nobody answers for."""
    return write(tmp_path, f"""
[exporter]
http_host = "127.0.0.1"
http_port = {http_port}
[exporter.performance]
kafka_timeout = "2s"
[[clusters]]
name = "dead"
bootstrap_servers = "127.0.0.1:{free_port()}"
""")


# Interpreter start-up and imports take a second or two on a busy machine; nothing else should.
PROMPT_EXIT = 10.0


@pytest.mark.subprocess
def test_a_taken_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """With its port taken, klag-collector exits 1 at once with one line naming host, port and
    reason, in either log format, before any poller has contacted Kafka."""
    taken = occupied_port()
    try:
        port = taken.getsockname()[1]
        path = serving_config(tmp_path, port)
        line = f"cannot listen on 127.0.0.1:{port}: address already in use"
        as_json = klag("-c", path, "--log-format", "json")
        as_text = klag("-c", path, "--log-format", "text")
    finally:
        taken.close()
    assert (as_json.code, as_json.out) == (1, ""), as_json.err
    (record,) = once_log_lines(as_json)
    assert (record["level"], record["logger"], record["message"]) == (
        "critical", "klag_collector", line)
    assert (as_text.code, as_text.out, as_text.err) == (1, "", f"CRITICAL klag_collector: {line}\n")
    assert max(as_json.seconds, as_text.seconds) < PROMPT_EXIT


@pytest.mark.subprocess
def test_the_startup_line_names_the_url_served(tmp_path: Path) -> None:
    """A long-running klag-collector logs one line with its version and the /metrics URL, and
    serves there."""
    port = free_port()
    exporter = ExporterProcess(tmp_path, Path(serving_config(tmp_path, port)).read_text(), port)
    expected = (f"klag-collector {__version__} serving http://127.0.0.1:{port}/metrics "
                "for 1 cluster(s)")

    def startup_lines() -> List[str]:
        records = [json.loads(line) for line in exporter.log.read_text().splitlines()]
        return [r["message"] for r in records
                if r["logger"] == "klag_collector" and r["message"].startswith("klag-collector ")]

    try:
        wait_until(lambda: startup_lines() or None, timeout=30, what="the startup line")
        assert startup_lines() == [expected]
        assert exporter.get("/health")[::2] == (200, b"OK\n")
    finally:
        code = exporter.stop()
    assert code == 0, exporter.log.read_text()[-2000:]


# -- files named by the config ---------------------------------------------------------


@pytest.mark.subprocess
def test_a_missing_ca_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """--check, --once and a normal start refuse a config whose ssl.ca.location names no file."""
    missing = tmp_path / "absent-ca.pem"
    path = write(tmp_path, CLUSTER + '[clusters.consumer_properties]\n"security.protocol" = "SSL"\n'
                           f'"ssl.ca.location" = "{missing}"\n')
    line = (f'klag-collector: {path}: clusters[0].consumer_properties["ssl.ca.location"]: '
            f"{missing}: no such file\n")
    for mode in (["--check"], ["--once"], []):
        run = klag("-c", path, *mode)
        assert (run.code, run.out, run.err) == (2, "", line), mode
