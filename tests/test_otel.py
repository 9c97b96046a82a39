"""OTLP push: the exporter process pushes what its /metrics shows, over gRPC and HTTP/protobuf.

The pushes are received here, by a gRPC MetricsService and an HTTP server taking
POST /v1/metrics, both decoding with the OTLP protobuf definitions, on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import http.server
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

import pytest

# The test extra brings the otel extra; only an install without it skips (make test fails then).
WITHOUT_OTEL = "the otel extra is not installed (pip install '.[test]' brings it)"
pb = pytest.importorskip("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2",
                         reason=WITHOUT_OTEL)
pb_grpc = pytest.importorskip("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc",
                              reason=WITHOUT_OTEL)
grpc = pytest.importorskip("grpc", reason=WITHOUT_OTEL)
pytest.importorskip("opentelemetry.sdk.metrics", reason=WITHOUT_OTEL)

from kafka import TopicPartition  # noqa: E402
from opentelemetry.proto.metrics.v1 import metrics_pb2  # noqa: E402
from prometheus_client.metrics_core import Metric  # noqa: E402
from prometheus_client.samples import Sample  # noqa: E402
from twisted.internet import task  # noqa: E402

from exporter import ExporterProcess, Samples, cluster_toml, config_toml, free_port, now_ms  # noqa: E402
from kafkahelp import commit, create_topic, produce, wait_until  # noqa: E402
from klag_collector import metrics, otel  # noqa: E402
from klag_collector.collector import LagCollector  # noqa: E402
from klag_collector.config import OtelConfig  # noqa: E402
from klag_collector.model import ClusterData, GroupInfo  # noqa: E402
from fakes import FakeSource, one_partition_data, pollers_on_clock  # noqa: E402

Key = Tuple[str, FrozenSet[Tuple[str, str]]]

LAG_PREFIXES = ("kafka_consumergroup_", "kafka_partition_")
HEALTH_NAMES = {
    d.name for d in metrics.HEALTH_FAMILIES
}
# Values that move with every cycle (durations, clocks, time lag): compared by presence only.
MOVING = (
    "kafka_consumergroup_group_lag_seconds",
    "kafka_consumergroup_group_max_lag_seconds",
    "kafka_consumergroup_poll_time_ms",
    "kafka_lag_exporter_scrape_duration_seconds",
    "kafka_lag_exporter_last_update_timestamp_seconds",
    "kafka_lag_exporter_skipped_ticks_total",
    "kafka_lag_exporter_cycle_failures_total",
    "kafka_lag_exporter_timestamp_cache_",
)


# -- what a push holds --------------------------------------------------------------


class Push:
    """One ExportMetricsServiceRequest, flattened like exporter.Samples."""

    def __init__(self, request: "pb.ExportMetricsServiceRequest") -> None:
        self.request = request
        self.values: Dict[Key, float] = {}
        self.kinds: Dict[str, Tuple[str, bool, int]] = {}
        self.resource: Dict[str, str] = {}
        for rm in request.resource_metrics:
            self.resource.update({a.key: _any(a.value) for a in rm.resource.attributes})
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    data = getattr(m, kind)
                    monotonic = bool(getattr(data, "is_monotonic", False))
                    temporality = int(getattr(data, "aggregation_temporality", 0))
                    self.kinds[m.name] = (kind, monotonic, temporality)
                    for p in data.data_points:
                        labels = frozenset((a.key, _any(a.value)) for a in p.attributes)
                        value = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
                        key = (m.name, labels)
                        assert key not in self.values, f"series pushed twice: {key}"
                        self.values[key] = value

    def find(self, name: str, **labels: str) -> List[Tuple[Dict[str, str], float]]:
        want = set(labels.items())
        return [(dict(k[1]), v) for k, v in self.values.items() if k[0] == name and want <= k[1]]

    def get(self, name: str, **labels: str) -> Optional[float]:
        found = self.find(name, **labels)
        assert len(found) <= 1, f"{name} {labels} matches {len(found)} points: {found}"
        return found[0][1] if found else None


def _any(value: object) -> str:
    kind = value.WhichOneof("value")  # type: ignore[attr-defined]
    assert kind == "string_value", f"attribute of type {kind}: Prometheus labels are strings"
    return value.string_value  # type: ignore[attr-defined]


class Receiver:
    """The pushes one server received, in order."""

    def __init__(self) -> None:
        self.pushes: List[Push] = []
        self.lock = threading.Lock()

    def add(self, body: bytes) -> None:
        request = pb.ExportMetricsServiceRequest.FromString(body)
        with self.lock:
            self.pushes.append(Push(request))

    def count(self) -> int:
        with self.lock:
            return len(self.pushes)

    def latest(self) -> Optional[Push]:
        with self.lock:
            return self.pushes[-1] if self.pushes else None

    def wait_for(self, predicate, timeout: float = 20, what: str = "a push") -> Push:
        def attempt() -> Optional[Push]:
            push = self.latest()
            return push if push is not None and predicate(push) else None

        return wait_until(attempt, timeout=timeout, interval=0.2, what=what)


class _GrpcService(pb_grpc.MetricsServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request, context):  # noqa: N802 - the gRPC method name
        self.receiver.add(request.SerializeToString())
        return pb.ExportMetricsServiceResponse()


@pytest.fixture
def grpc_receiver():
    """A gRPC OTLP MetricsService on 127.0.0.1; yields (endpoint URL, receiver)."""
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_MetricsServiceServicer_to_server(_GrpcService(receiver), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", receiver
    finally:
        server.stop(grace=None).wait(5)


@pytest.fixture
def http_receiver():
    """An HTTP server taking OTLP/protobuf POSTs on /v1/metrics; yields (endpoint URL, receiver)."""
    receiver = Receiver()
    errors: List[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/metrics" or self.headers.get("Content-Type") != "application/x-protobuf":
                errors.append(f"{self.path} {self.headers.get('Content-Type')}")
                self.send_response(404)
                self.end_headers()
                return
            receiver.add(body)
            answer = pb.ExportMetricsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # The exporter appends /v1/metrics to an endpoint without a path.
        yield f"http://127.0.0.1:{server.server_address[1]}", receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        assert not errors, f"unexpected requests: {errors}"


@pytest.fixture(params=["grpc", "http/protobuf"])
def receiver(request):
    """(protocol, endpoint, receiver) for each protocol."""
    fixture = "grpc_receiver" if request.param == "grpc" else "http_receiver"
    endpoint, received = request.getfixturevalue(fixture)
    return request.param, endpoint, received


@pytest.fixture(autouse=True)
def _local_only(monkeypatch):
    """Exporter processes inherit this: no proxy for 127.0.0.1, no OTLP settings from outside."""
    for name in list(os.environ):
        if name.startswith("OTEL_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def otel_toml(endpoint: str, protocol: str, interval: str = "1s") -> str:
    return f"""
[exporter.otel]
enabled = true
endpoint = "{endpoint}"
protocol = "{protocol}"
export_interval = "{interval}"
"""


def dead_cluster(prefix: str, name: str = "dead") -> str:
    """A cluster whose bootstrap nobody listens on: never fresh."""
    return cluster_toml(name, f"127.0.0.1:{free_port()}", prefix)


def start(workdir: Path, clusters: str, exporter_extra: str) -> ExporterProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    return ExporterProcess(workdir, config_toml(port, clusters, exporter_extra), port)


def mismatch(push: Push, scraped: Samples) -> List[str]:
    """Where a push differs from /metrics: series only in one, or (non-moving) values."""
    problems = []
    pushed, shown = set(push.values), set(scraped.values)
    problems += [f"pushed only: {k}" for k in sorted(pushed - shown, key=str)]
    problems += [f"on /metrics only: {k}" for k in sorted(shown - pushed, key=str)]
    for key in pushed & shown:
        if not key[0].startswith(MOVING) and push.values[key] != scraped.values[key]:
            problems.append(f"{key}: pushed {push.values[key]}, /metrics {scraped.values[key]}")
    return problems


def wait_for_agreement(
    exporter: ExporterProcess, received: Receiver, timeout: float = 20
) -> Tuple[Push, Samples]:
    """A push and a scrape that agree; series may move between cycles, so retry a little."""
    last: List[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        push = received.latest()
        if push is not None:
            scraped = exporter.scrape()
            last = mismatch(push, scraped)
            if not last:
                return push, scraped
        time.sleep(0.3)
    raise AssertionError("no push agreed with /metrics:\n" + "\n".join(last[:40]))


def check_types(push: Push) -> None:
    """Gauges are OTLP Gauges; `*_total` counters are cumulative monotonic Sums."""
    cumulative = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    for name, (kind, monotonic, temporality) in push.kinds.items():
        if name.endswith("_total"):
            assert (kind, monotonic, temporality) == ("sum", True, cumulative), name
        else:
            assert kind == "gauge", name


# -- without a broker ---------------------------------------------------------------


@pytest.mark.subprocess
def test_core_does_not_import_opentelemetry(tmp_path):
    """Even with otel enabled, building the service imports no OpenTelemetry module."""
    config = tmp_path / "k.toml"
    config.write_text(
        config_toml(free_port(), dead_cluster("x"), otel_toml("http://127.0.0.1:1", "grpc"))
    )
    code = (
        "import sys\n"
        "from klag_collector import cli, config, service\n"
        f"svc = service.make_service(config.load_config({str(config)!r}), serve_http=False)\n"
        "assert svc.otel is not None\n"
        "loaded = [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.subprocess
def test_missing_extra_is_one_line_at_start(tmp_path):
    """Without the extra, the program stops at start with one line naming the fix."""
    port = free_port()
    config = tmp_path / "k.toml"
    config.write_text(config_toml(port, dead_cluster("x"), otel_toml("http://127.0.0.1:1", "grpc")))
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if the otel extra were not installed\n"
        "from klag_collector.cli import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "-c", str(config), "--log-format", "text"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if "klag-collector[otel]" in line]
    assert len(lines) == 1, done.stderr
    assert "cannot start" in lines[0] and "exporter.otel.enabled" in lines[0]
    assert "Traceback" not in done.stderr


def test_missing_extra_error_in_process(monkeypatch):
    for name in ("opentelemetry", "opentelemetry.sdk", "opentelemetry.sdk.metrics"):
        monkeypatch.setitem(sys.modules, name, None)
    svc = otel.OtelExporterService(OtelConfig(enabled=True), collector=None, reactor=None)
    with pytest.raises(otel.OtelUnavailable) as e:
        svc.startService()
    assert "pip install 'klag-collector[otel]'" in str(e.value)
    assert "\n" not in str(e.value)
    assert not svc.running


def test_http_metrics_url():
    assert otel.http_metrics_url("http://c:4318") == "http://c:4318/v1/metrics"
    assert otel.http_metrics_url("https://c:4318/") == "https://c:4318/v1/metrics"
    assert otel.http_metrics_url("https://vendor/otlp/v1/metrics") == "https://vendor/otlp/v1/metrics"


def test_families_become_gauges_and_cumulative_sums():
    """The conversion, encoded by the SDK's own OTLP encoder."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    gauge = Metric("kafka_consumergroup_group_lag", "Lag.", "gauge")
    gauge.samples.append(
        Sample("kafka_consumergroup_group_lag", {"cluster_name": "a", "group": "g"}, 7.0, None, None)
    )
    counter = Metric("kafka_lag_exporter_cycle_failures", "Failures.", "counter")
    counter.samples.append(
        Sample("kafka_lag_exporter_cycle_failures_total", {"cluster_name": "a"}, 2.0, None, None)
    )
    counter.samples.append(
        Sample("kafka_lag_exporter_cycle_failures_created", {"cluster_name": "a"}, 1.0, None, None)
    )
    data = otel.build_metrics_data(
        [gauge, counter], Resource.create({}), InstrumentationScope("t"), now_ns=2_000, start_ns=1_000
    )
    push = Push(encode_metrics(data))
    assert push.values == {
        ("kafka_consumergroup_group_lag", frozenset({("cluster_name", "a"), ("group", "g")})): 7.0,
        ("kafka_lag_exporter_cycle_failures_total", frozenset({("cluster_name", "a")})): 2.0,
    }
    check_types(push)
    points = {
        m.name: (m.description, getattr(m, m.WhichOneof("data")).data_points[0])
        for m in push.request.resource_metrics[0].scope_metrics[0].metrics
    }
    assert points["kafka_consumergroup_group_lag"][0] == "Lag."
    assert points["kafka_consumergroup_group_lag"][1].time_unix_nano == 2_000
    assert points["kafka_lag_exporter_cycle_failures_total"][1].start_time_unix_nano == 1_000


class _ThreadClock(task.Clock):
    """A task.Clock whose callFromThread queues calls for the test to run on its thread."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: "queue.Queue[Any]" = queue.Queue()

    def callFromThread(self, f, *args, **kw) -> None:  # noqa: N802 - the reactor API
        self.from_threads.put((f, args, kw))

    def run_one(self, timeout: float = 10) -> None:
        f, args, kw = self.from_threads.get(timeout=timeout)
        f(*args, **kw)


class _RecordingExporter:
    """Stands in for the SDK's OTLP exporter: keeps each export, encoded as OTLP would be."""

    def __init__(self) -> None:
        self.pushes: List[Push] = []
        self.gate = threading.Event()
        self.gate.set()
        self.shut = False

    def export(self, data, **kw):
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
        from opentelemetry.sdk.metrics.export import MetricExportResult

        assert self.gate.wait(10)
        self.pushes.append(Push(encode_metrics(data)))
        return MetricExportResult.SUCCESS

    def shutdown(self, **kw) -> None:
        self.shut = True


STALE_CONFIG = """
[exporter]
poll_interval = "10s"
staleness_threshold = "30s"
granularity = "partition"
[exporter.otel]
enabled = true
export_interval = "15s"
[[clusters]]
name = "a"
bootstrap_servers = "127.0.0.1:1"
[[clusters]]
name = "b"
bootstrap_servers = "127.0.0.1:2"
"""


def _one_group(group: str) -> ClusterData:
    return one_partition_data(GroupInfo(group, "Stable", members=1), committed=4)


def test_a_cluster_turning_stale_leaves_the_push():
    """In process, on a clock: b's lag series are pushed while fresh and left out once stale."""
    clock = _ThreadClock()
    clock.advance(1_700_000_000)
    sources = {"a": FakeSource(_one_group("ga")), "b": FakeSource(_one_group("gb"))}
    cfg, pollers = pollers_on_clock(STALE_CONFIG, sources, clock)
    collector = LagCollector(pollers, cfg.exporter.granularity, clock)
    recorder = _RecordingExporter()
    svc = otel.OtelExporterService(cfg.exporter.otel, collector, clock, lambda c: recorder)
    for p in pollers:
        p.startService()
    svc.startService()

    clock.advance(15)  # the first export
    clock.run_one()
    fresh = recorder.pushes[-1]
    assert [v for _, v in fresh.find("kafka_consumergroup_group_lag", cluster_name="b")] == [6]
    assert fresh.get("kafka_lag_exporter_up", cluster_name="b") == 1
    check_types(fresh)

    sources["b"].error = ConnectionError("down")
    for _ in range(4):  # 60 s: b's last success is older than the 30 s threshold
        clock.advance(15)
        clock.run_one()
    stale = recorder.pushes[-1]
    assert stale.get("kafka_lag_exporter_up", cluster_name="b") == 0
    assert {n for n, labels in stale.values if ("cluster_name", "b") in labels} <= HEALTH_NAMES
    assert stale.find("kafka_consumergroup_group_lag", cluster_name="a")
    assert stale.get("kafka_lag_exporter_up", cluster_name="a") == 1
    # What was pushed is what the collector yields, sample for sample.
    shown = {(s.name, frozenset(s.labels.items())): s.value
             for f in collector.collect() for s in f.samples}
    assert stale.values == shown

    # An export still running makes the next tick skip, not queue.
    recorder.gate.clear()
    clock.advance(15)
    clock.advance(15)
    assert svc.skipped == 1
    recorder.gate.set()
    clock.run_one()
    assert svc.exports == 6

    # Stop: one more export, then the exporter is shut down.
    stopped = svc.stopService()
    clock.run_one()  # the final export
    clock.run_one()  # the shutdown
    assert stopped.called and recorder.shut
    assert len(recorder.pushes) == 7 and svc.failures == 0
    for p in pollers:
        p.stopService()


@pytest.mark.subprocess
def test_push_without_kafka(tmp_path, receiver, monkeypatch):
    """A cluster that never answers: only health series, up 0, the same as /metrics."""
    protocol, endpoint, received = receiver
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    exporter = start(tmp_path, dead_cluster("nobody-"), otel_toml(endpoint, protocol))
    try:
        received.wait_for(lambda p: p.get("kafka_lag_exporter_up", cluster_name="dead") == 0)
        push, _ = wait_for_agreement(exporter, received)
        assert {name for name, _ in push.values} <= HEALTH_NAMES
        assert push.resource["service.name"] == "klag-collector"
        assert push.resource["deployment.environment"] == "test"
        check_types(push)
    finally:
        assert exporter.stop() == 0, exporter.log.read_text()[-3000:]


@pytest.mark.subprocess
def test_stop_pushes_once_more(tmp_path, grpc_receiver):
    """A stop flushes: with a 60 s interval, the only push is the one made at SIGTERM."""
    endpoint, received = grpc_receiver
    exporter = start(tmp_path, dead_cluster("nobody-"), otel_toml(endpoint, "grpc", "60s"))
    try:
        exporter.wait_for(lambda s: s.get("kafka_lag_exporter_up", cluster_name="dead") == 0)
        assert received.count() == 0
    finally:
        assert exporter.stop() == 0, exporter.log.read_text()[-3000:]
    assert received.count() == 1
    assert received.latest().get("kafka_lag_exporter_up", cluster_name="dead") == 0


@pytest.mark.subprocess
def test_unreachable_collector_is_logged_once_and_stop_is_bounded(tmp_path, monkeypatch):
    """Nobody at the endpoint: one warning (not one per export), /metrics unaffected, a quick stop."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    endpoint = f"http://127.0.0.1:{free_port()}"
    exporter = start(tmp_path, dead_cluster("nobody-"), otel_toml(endpoint, "http/protobuf"))
    try:
        wait_until(lambda: "OTLP export to" in exporter.log.read_text(), timeout=20,
                   what="the export failure line")
        time.sleep(3)  # a few more failed exports
        assert exporter.scrape().get("kafka_lag_exporter_up", cluster_name="dead") == 0
    finally:
        started = time.monotonic()
        assert exporter.stop() == 0, exporter.log.read_text()[-3000:]
        assert time.monotonic() - started < 12
    log = exporter.log.read_text()
    assert log.count("OTLP export to") == 1, log[-3000:]


# -- on the broker ------------------------------------------------------------------


@pytest.mark.broker
def test_push_matches_metrics(tmp_path, kafka, admin, unique, receiver):
    """Live and dead clusters: what is pushed equals /metrics; the dead one pushes only health."""
    protocol, endpoint, received = receiver
    topic, group = f"{unique}-t", f"{unique}-g"
    create_topic(admin, topic, 2)
    produce(kafka.bootstrap, topic, 0, [now_ms()] * 5)
    produce(kafka.bootstrap, topic, 1, [now_ms()] * 3)
    commit(admin, group, {TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 3})
    clusters = cluster_toml("live", kafka.bootstrap, unique, '[clusters.labels]\nenvironment = "otel"\n')
    clusters += dead_cluster(unique)
    exporter = start(tmp_path, clusters, otel_toml(endpoint, protocol))
    try:
        p0 = dict(cluster_name="live", environment="otel", group=group, topic=topic, partition="0")
        received.wait_for(
            lambda p: p.get("kafka_consumergroup_group_lag", **p0) is not None,
            timeout=30, what="the group's lag in a push",
        )
        push, scraped = wait_for_agreement(exporter, received)

        lag = push.get("kafka_consumergroup_group_lag", **p0)
        assert lag == scraped.get("kafka_consumergroup_group_lag", **p0) == 3
        p1 = dict(p0, partition="1")
        assert push.get("kafka_consumergroup_group_lag", **p1) == 0
        assert push.get("kafka_consumergroup_group_sum_lag", cluster_name="live", group=group) == 3
        assert push.get("kafka_partition_latest_offset", cluster_name="live", topic=topic, partition="0") == 5
        for name, labels in push.values:
            assert ("cluster_name", "live") in labels or ("cluster_name", "dead") in labels, (name, labels)
        assert push.get("kafka_lag_exporter_up", cluster_name="live") == 1
        assert push.get("kafka_lag_exporter_up", cluster_name="dead") == 0
        dead = {name for name, labels in push.values if ("cluster_name", "dead") in labels}
        assert dead and dead <= HEALTH_NAMES, dead
        assert not [n for n in dead if n.startswith(LAG_PREFIXES)]
        check_types(push)
    finally:
        assert exporter.stop() == 0, exporter.log.read_text()[-3000:]
