"""The optional OTLP push: the same series as /metrics, sent every ``export_interval``.

Needs the ``otel`` extra (``pip install 'klag-collector[otel]'``); nothing here imports
OpenTelemetry until the service starts, so the core package runs without it.

What is pushed is exactly what ``LagCollector.collect()`` yields at that moment, which is
what /metrics shows: fresh clusters' lag families plus every cluster's health families
(a stale cluster contributes only those, with ``kafka_lag_exporter_up`` 0). Each
Prometheus sample becomes one OTLP data point with the same metric name, the Prometheus
labels as attributes and the same value (a double):

- gauges become OTLP Gauges;
- counters (the ``*_total`` families) become cumulative monotonic Sums named with their
  ``_total`` sample name, their start time the moment this service started.

The data points are built here, from one collect() per export, and handed to the SDK's
OTLP exporter (gRPC or HTTP/protobuf), which brings the transport: TLS, retries,
compression and the ``OTEL_EXPORTER_OTLP_*`` environment variables (headers,
certificates, timeout). No MeterProvider is involved: its asynchronous instruments would
call one callback per family, each reading the snapshots at a different instant, and
the SDK's aggregation state would decide when a vanished series stops being reported.

collect() makes no Kafka call. Building the points and the network call run in a daemon
thread of their own, one export at a time (a tick that finds the last export still
running is skipped), so the reactor thread never waits on the network and a hung OTLP
endpoint cannot keep the process from exiting. A stop pushes once more (unless the last
export failed) and shuts the exporter down, within STOP_FLUSH_TIMEOUT + STOP_SHUTDOWN_TIMEOUT.

The resource is ``service.name=klag-collector`` and ``service.version``, unless
``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` set them; the scope is ``klag_collector``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Generator, Iterable, List
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.metrics_core import Metric
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import __version__
from .config import OtelConfig, OtelProtocol
from .loop import RunEnd, SerialLoop

__all__ = ["OtelExporterService", "OtelUnavailable", "build_metrics_data", "http_metrics_url"]

# How long stopService waits for a running export plus the final flush, and then for
# the exporter's shutdown. The SDK exporters retry transient errors until their own
# timeout, so both are bounded here too.
STOP_FLUSH_TIMEOUT = 5.0
STOP_SHUTDOWN_TIMEOUT = 3.0

SCOPE_NAME = "klag_collector"
SERVICE_NAME = "klag-collector"

MISSING_EXTRA = (
    "exporter.otel.enabled is true but the OpenTelemetry packages are missing "
    "({error}): pip install 'klag-collector[otel]'"
)


class OtelUnavailable(RuntimeError):
    """otel is enabled but the ``otel`` extra is not installed (a one-line message)."""


class ExportFailed(Exception):
    """An export that did not reach the collector; the message says why, in one line."""


def http_metrics_url(endpoint: str) -> str:
    """The URL HTTP/protobuf exports go to: ``/v1/metrics`` unless the endpoint has a path.

    ``http://collector:4318`` becomes ``http://collector:4318/v1/metrics``; an endpoint
    with a path of its own (a proxy, a vendor URL) is used as given.
    """
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return urlunsplit((parts.scheme, parts.netloc, "/v1/metrics", parts.query, ""))
    return endpoint


def _sdk() -> Any:
    """The SDK modules we use, or OtelUnavailable naming what is missing."""
    try:
        from opentelemetry.sdk.metrics import export
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    except ImportError as e:
        raise OtelUnavailable(MISSING_EXTRA.format(error=e)) from None
    return export, Resource, InstrumentationScope


def make_exporter(config: OtelConfig) -> Any:
    """The SDK's OTLP metric exporter for the configured protocol and endpoint."""
    # The SDK bounds each export itself: OTEL_EXPORTER_OTLP_TIMEOUT, 10 s by default.
    try:
        if config.protocol is OtelProtocol.GRPC:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcExporter,
            )

            insecure = urlsplit(config.endpoint).scheme == "http"
            return GrpcExporter(endpoint=config.endpoint, insecure=insecure)
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpExporter,
        )

        return HttpExporter(endpoint=http_metrics_url(config.endpoint))
    except ImportError as e:
        raise OtelUnavailable(MISSING_EXTRA.format(error=e)) from None


def build_metrics_data(
    families: Iterable[Metric],
    resource: Any,
    scope: Any,
    now_ns: int,
    start_ns: int,
) -> Any:
    """One OTLP MetricsData (SDK types) holding every sample of `families`.

    Samples are grouped by sample name, so a counter family ``x`` with its ``x_total``
    samples becomes the metric ``x_total``, exactly as /metrics names it.
    """
    export = _sdk()[0]
    metrics: List[Any] = []
    for family in families:
        by_name: Dict[str, List[Any]] = {}
        for sample in family.samples:
            if family.type == "counter" and not sample.name.endswith("_total"):
                continue  # `_created` samples: the start time carries that
            by_name.setdefault(sample.name, []).append(sample)
        for name, samples in by_name.items():
            counter = family.type == "counter"
            points = [
                export.NumberDataPoint(
                    attributes=dict(s.labels),
                    start_time_unix_nano=start_ns if counter else 0,
                    time_unix_nano=now_ns,
                    value=float(s.value),
                )
                for s in samples
            ]
            if counter:
                data = export.Sum(
                    data_points=points,
                    aggregation_temporality=export.AggregationTemporality.CUMULATIVE,
                    is_monotonic=True,
                )
            else:
                data = export.Gauge(data_points=points)
            metrics.append(
                export.Metric(name=name, description=family.documentation, unit="", data=data)
            )
    return export.MetricsData(
        resource_metrics=[
            export.ResourceMetrics(
                resource=resource,
                scope_metrics=[export.ScopeMetrics(scope=scope, metrics=metrics, schema_url="")],
                schema_url="",
            )
        ]
    )


def resource(Resource: Any) -> Any:  # noqa: N803 - the SDK class
    """service.name klag-collector unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say
    otherwise; those variables' other attributes are added."""
    detected = Resource.create({"service.version": __version__})
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        detected = detected.merge(Resource({"service.name": SERVICE_NAME}))
    return detected


def _in_daemon_thread(reactor: Any, work: Callable[[], Any]) -> "defer.Deferred[Any]":
    """Run *work* in a new daemon thread; its result or failure comes back on the reactor."""
    done: "defer.Deferred[Any]" = defer.Deferred()

    def run() -> None:
        try:
            result = work()
        except BaseException as e:  # noqa: B902 - handed to the Deferred
            reactor.callFromThread(done.errback, e)
        else:
            reactor.callFromThread(done.callback, result)

    threading.Thread(target=run, name="klag-otel", daemon=True).start()
    return done


def _quiet_sdk_logs() -> None:
    """Route the SDK's own log lines into ours, errors only, unless the host set them up."""
    sdk_logger = logging.getLogger("opentelemetry")
    if sdk_logger.handlers or sdk_logger.level != logging.NOTSET:
        return
    from . import logs

    to_twisted = getattr(logs, "_ToTwisted", None)  # kafka-python's lines take this way too
    if to_twisted is not None:
        sdk_logger.addHandler(to_twisted())
    # Retries of a failing export log a warning each; our own line says it once.
    sdk_logger.setLevel(logging.ERROR)
    sdk_logger.propagate = False


class OtelExporterService(service.Service):
    """Pushes `collector.collect()` over OTLP every `config.export_interval` seconds."""

    name = "otel"
    log = Logger(namespace="klag_collector.otel")

    def __init__(
        self,
        config: OtelConfig,
        collector: Any,
        reactor: Any,
        exporter_factory: Callable[[OtelConfig], Any] = make_exporter,
    ) -> None:
        self.config = config
        self.collector = collector
        self.reactor = reactor
        self.exporter_factory = exporter_factory
        self.exporter: Any = None
        self.exports = 0  # successful exports
        self.failures = 0  # failed exports
        self._loop: SerialLoop[None] = SerialLoop(
            reactor,
            config.export_interval,
            self._export_once,
            label="OTLP export",
            on_end=self._export_ended,
        )
        self._failing = False
        self._resource: Any = None
        self._scope: Any = None
        self._start_ns = 0

    @property
    def skipped(self) -> int:
        """Ticks skipped because an export was still running."""
        return self._loop.skipped_ticks

    # -- service ------------------------------------------------------------------

    def startService(self) -> None:
        _, Resource, InstrumentationScope = _sdk()  # fails here, in one line, without the extra
        self.exporter = self.exporter_factory(self.config)
        _quiet_sdk_logs()
        self._resource = resource(Resource)
        self._scope = InstrumentationScope(SCOPE_NAME, __version__)
        self._start_ns = time.time_ns()
        super().startService()
        self._loop.start(now=False)
        self.log.info(
            "pushing metrics over OTLP ({protocol}) to {endpoint} every {interval}s",
            protocol=self.config.protocol.value,
            endpoint=self._target(),
            interval=self.config.export_interval,
        )

    def _target(self) -> str:
        if self.config.protocol is OtelProtocol.GRPC:
            return self.config.endpoint
        return http_metrics_url(self.config.endpoint)

    @defer.inlineCallbacks
    def stopService(self) -> Generator["defer.Deferred[Any]", Any, None]:
        super().stopService()
        self._loop.stop()
        if self.exporter is None:
            return
        # Let a running export end, then push the last values once more (unless the
        # collector was failing: its retries would only delay the stop), all within
        # one deadline.
        deadline = self.reactor.seconds() + STOP_FLUSH_TIMEOUT
        try:
            if self._loop.busy:
                yield self._loop.idle().addTimeout(STOP_FLUSH_TIMEOUT, self.reactor)
            left = deadline - self.reactor.seconds()
            if not self._failing and left > 0:
                yield self.export_now().addTimeout(left, self.reactor)
        except defer.TimeoutError:
            self.log.warn("OTLP export still running at stop; not waiting for it")
        exporter, self.exporter = self.exporter, None
        try:
            shutdown = lambda: exporter.shutdown(  # noqa: E731
                timeout_millis=STOP_SHUTDOWN_TIMEOUT * 1000
            )
            yield _in_daemon_thread(self.reactor, shutdown).addTimeout(
                STOP_SHUTDOWN_TIMEOUT + 1, self.reactor
            )
        except defer.TimeoutError:
            self.log.warn("OTLP exporter shutdown timed out")
        except Exception as e:
            self.log.warn("OTLP exporter shutdown failed: {error}", error=e)

    # -- exports ------------------------------------------------------------------

    def export_now(self) -> "defer.Deferred[bool]":
        """Start an export (unless one runs); fires with True when it reached the collector."""
        if self.exporter is None:
            return defer.succeed(False)
        return self._loop.run_now().addCallback(lambda end: end.ok)

    def _export_once(self) -> "defer.Deferred[None]":
        exporter = self.exporter
        return _in_daemon_thread(self.reactor, lambda: self._export(exporter))

    def _export(self, exporter: Any) -> None:
        """In the export thread: one collect(), converted and sent; ExportFailed if refused."""
        export = _sdk()[0]
        families = list(self.collector.collect())
        data = build_metrics_data(
            families, self._resource, self._scope, time.time_ns(), self._start_ns
        )
        try:
            result = exporter.export(data)
        except Exception as e:  # a transport bug is a failed export, logged in one line
            raise ExportFailed(f"{type(e).__name__}: {e}") from e
        if result is not export.MetricExportResult.SUCCESS:
            raise ExportFailed("the collector did not accept the export (see the exporter's log)")

    def _export_ended(self, end: RunEnd[None]) -> None:
        # Logged once per change: a collector down for hours is one warning, not thousands.
        if isinstance(end.outcome, Failure):
            self.failures += 1
            reason = self._failure_reason(end.outcome)
            if not self._failing:
                self.log.warn(
                    "OTLP export to {endpoint} failed: {reason}",
                    endpoint=self._target(),
                    reason=reason,
                )
            self._failing = True
        else:
            self.exports += 1
            if self._failing:
                self.log.info("OTLP export to {endpoint} works again", endpoint=self._target())
            self._failing = False

    def _failure_reason(self, failure: Failure) -> str:
        if isinstance(failure.value, ExportFailed):
            return str(failure.value)
        # Anything else is a bug in collect() or the conversion: worth its traceback.
        self.log.failure("OTLP export failed", failure)
        return failure.getErrorMessage()
