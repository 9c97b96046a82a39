"""The exporter as one Twisted service: pollers, renderer and (optionally) the web site.

This is what `klag-collector`, `twistd -n klag` and embedding programs all run; the
embedding API is make_service() and the public attributes of what it returns.
"""

from __future__ import annotations

from typing import Any, Callable, List, NamedTuple, Optional, Tuple, cast

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, endpoints
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorCore, IStreamServerEndpoint
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web import resource
from twisted.web.server import Site
from zope.interface import implementer

from . import __version__
from .collector import ClusterReport, LagCollector, read_clusters
from .config import ClusterConfig, Config, ExporterConfig, Performance
from .errors import describe_error
from .kafka_source import KafkaSource
from .poller import ClusterPoller, Source
from .render import MetricsRenderer, Rendered
from .web import MetricsResource, make_root


# Seconds stopService waits for each thread pool's threads to finish.
STOP_JOIN_TIMEOUT = 10.0

log = Logger(namespace="klag_collector")


def _maybe_global_reactor(reactor: Any) -> Any:
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        return global_reactor
    return reactor


def http_endpoint(reactor: Any, host: str, port: int) -> IStreamServerEndpoint:
    """A TCP endpoint on the configured host; IPv6 literals get a TCP6 endpoint."""
    if ":" in host:
        return endpoints.TCP6ServerEndpoint(reactor, port, interface=host)
    return endpoints.TCP4ServerEndpoint(reactor, port, interface=host)


def host_port(host: str, port: object) -> str:
    """``host:port``, with an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ListenFailed(Exception):
    """The site could not listen; the message is one line: where, and why."""


def listen_failed(error: BaseException) -> ListenFailed:
    """An endpoint's listen error as the line the runners log."""
    # TCP's carries the interface and the OSError; a UNIX socket's has no interface.
    if isinstance(error, CannotListenError) and error.interface is not None:
        where = host_port(error.interface or "0.0.0.0", error.port)  # "": every IPv4 address
        return ListenFailed(f"cannot listen on {where}: {error.socketError.strerror.lower()}")
    return ListenFailed(f"cannot listen: {describe_error(error)}")


def served_at(address: object) -> str:
    """Where /metrics is served: a URL on TCP, else the address as Twisted names it."""
    if isinstance(address, (IPv4Address, IPv6Address)):
        return f"http://{host_port(address.host, address.port)}/metrics"
    return str(address)


@implementer(IStreamServerEndpoint)
class _AnnouncingEndpoint:
    """An endpoint whose listen says where it serves, or fails with a ListenFailed."""

    def __init__(self, endpoint: IStreamServerEndpoint, clusters: int) -> None:
        self._endpoint = endpoint
        self._clusters = clusters

    def listen(self, factory: Any) -> "defer.Deferred[IListeningPort]":
        return self._endpoint.listen(factory).addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        log.info(
            "klag-collector {version} serving {url} for {n} cluster(s)",
            version=__version__,
            url=served_at(port.getHost()),
            n=self._clusters,
        )
        return port

    def _failed(self, failure: Failure) -> Failure:
        # A listen still pending when the service stops is cancelled: that is no failure.
        if failure.check(defer.CancelledError):
            return failure
        raise listen_failed(cast(BaseException, failure.value))


class QuietSite(Site):
    """A Site without per-request access lines: scrapes every few seconds would flood the log."""

    noisy = False

    def log(self, request: object) -> None:
        pass


# Builds a cluster's Kafka edge from its config and the exporter's performance settings.
SourceFactory = Callable[[ClusterConfig, Performance], Source]


class Collected(NamedTuple):
    """What collect_once() gathered: each cluster's report, and the render of that moment."""

    clusters: Tuple[ClusterReport, ...]
    # The same bytes /metrics would serve; None only when rendering failed (and was logged).
    rendered: Optional[Rendered]

    @property
    def ok(self) -> bool:
        """Every cluster was collected, and the result rendered."""
        return self.rendered is not None and all(
            report.snapshot is not None for report in self.clusters
        )


class KlagService(service.MultiService):
    """Holds one poller per cluster, then the HTTP site, so HTTP stops first.

    The site listens first, though, in privilegedStartService (startService calls it when the
    runner did not): a port that cannot be bound raises ListenFailed before any poller starts.

    Public besides the IService methods: `collector`, `root`, `metrics_resource()`, `otel`
    and, for `--once`, `collect_once()`. Build it with make_service().
    """

    def __init__(
        self,
        config: Config,
        reactor: Any = None,
        *,
        endpoint: Optional[IStreamServerEndpoint] = None,
        serve_http: bool = True,
        source_factory: SourceFactory = KafkaSource,
    ) -> None:
        super().__init__()
        self._reactor = reactor = _maybe_global_reactor(reactor)
        exporter = config.exporter
        self._pools: List[ThreadPool] = []
        render_pool = self._pool("klag-render", 1)
        self._pollers = [
            self._poller(cluster, exporter, source_factory(cluster, exporter.performance))
            for cluster in config.clusters
        ]
        self._renderer = MetricsRenderer(
            self._pollers, exporter.granularity, reactor, self._runner(render_pool)
        )
        #: A prometheus_client Collector over the snapshots, for a host's own registry.
        self.collector = LagCollector(self._pollers, exporter.granularity, reactor)
        #: The exporter's HTTP tree: /metrics, /health, /ready and the status page at /.
        self.root = make_root(self._renderer, self._pollers, exporter.ready_requires, reactor)
        self._privileged_started = False
        if serve_http:
            if endpoint is None:
                endpoint = http_endpoint(reactor, exporter.http_host, exporter.http_port)
            self._serve(endpoint, len(config.clusters))
        #: The OTLP push service when [exporter.otel] is enabled, else None.
        self.otel: Any = None
        if exporter.otel.enabled:
            # Imports no OpenTelemetry module until it starts (the `otel` extra is optional).
            from .otel import OtelExporterService

            self.otel = OtelExporterService(exporter.otel, self.collector, reactor)
            self.otel.setServiceParent(self)

    def _poller(self, cluster: ClusterConfig, exporter: ExporterConfig,
                source: Source) -> ClusterPoller:
        # Room for every concurrent timestamp fetch, plus the cycle's own read.
        pool = self._pool(
            f"klag-{cluster.name}", exporter.timestamp_sampling.max_concurrent_fetches + 2
        )
        poller = ClusterPoller(
            cluster, exporter, source, self._reactor, self._runner(pool),
            on_change=self._data_changed,
        )
        poller.setServiceParent(self)
        return poller

    def _data_changed(self) -> None:
        # A method, not the renderer's own: the pollers are made before the renderer reading them.
        self._renderer.invalidate()

    def _serve(self, endpoint: IStreamServerEndpoint, clusters: int) -> None:
        http = StreamServerEndpointService(
            _AnnouncingEndpoint(endpoint, clusters), QuietSite(self.root)
        )
        # As twisted.application.strports.service does: a port that cannot be bound raises
        # from startService, rather than being logged while the process runs without HTTP.
        http._raiseSynchronously = True
        http.setServiceParent(self)

    def metrics_resource(self) -> resource.IResource:
        """A new /metrics resource of this service, for a host to mount at a path of its own.

        It serves the pre-rendered bytes the exporter's own /metrics serves: text or
        OpenMetrics, gzipped when the client accepts it, 503 until the first render.
        """
        return MetricsResource(self._renderer)

    def _pool(self, name: str, size: int) -> ThreadPool:
        pool = ThreadPool(minthreads=0, maxthreads=size, name=name)
        self._pools.append(pool)
        return pool

    def _runner(self, pool: ThreadPool) -> Callable[..., "defer.Deferred[Any]"]:
        def run(work: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
            return deferToThreadPool(self._reactor, pool, work, *args)

        return run

    @defer.inlineCallbacks
    def collect_once(self):  # type: ignore[no-untyped-def]
        """One cycle of every cluster, without starting the loops or the site (`--once`).

        Returns a Deferred that fires with a Collected.
        """
        for pool in self._pools:
            pool.start()
        try:
            yield defer.gatherResults([poller.poll_now() for poller in self._pollers])
            for poller in self._pollers:
                yield self._run_default(poller.source.reset)
            yield self._renderer.when_rendered()
        finally:
            yield self._stop_pools()
        reports = read_clusters(self._pollers, self._reactor.seconds())
        return Collected(reports, self._renderer.current)

    def _run_default(self, work: Callable[..., Any]) -> "defer.Deferred[Any]":
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), work)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._privileged_started = True

    def startService(self) -> None:
        if not self._privileged_started:
            self.privilegedStartService()
        for pool in self._pools:
            pool.start()
        super().startService()
        self._renderer.invalidate()

    @defer.inlineCallbacks
    def stopService(self):  # type: ignore[no-untyped-def]
        yield super().stopService()
        yield self._renderer.when_rendered()
        yield self._stop_pools()

    @defer.inlineCallbacks
    def _stop_pools(self):  # type: ignore[no-untyped-def]
        for pool in self._pools:
            # ThreadPool.stop joins its threads, and a thread stuck in a Kafka call may
            # never return: join off the reactor thread, and only for so long.
            joined = self._run_default(pool.stop)
            try:
                yield joined.addTimeout(STOP_JOIN_TIMEOUT, self._reactor)
            except defer.TimeoutError:
                pass


def make_service(
    config: Config,
    reactor: Optional[IReactorCore] = None,
    *,
    endpoint: Optional[IStreamServerEndpoint] = None,
    serve_http: bool = True,
    source_factory: SourceFactory = KafkaSource,
) -> KlagService:
    """The embedding API: the exporter as an IService (a MultiService) for a Twisted program.

    :param config: the parsed configuration, from klag_collector.config.load_config().
    :param reactor: the reactor to run on (time, thread pools, listening); None is the
        global reactor.
    :param endpoint: where the exporter's own site listens; None is TCP on the config's
        http_host and http_port. Not used when serve_http is False.
    :param serve_http: False leaves the exporter's own site out: the host serves
        `svc.root` or `svc.metrics_resource()` in a site of its own instead.
    :param source_factory: called with each cluster's ClusterConfig and the exporter's
        Performance settings, returns that cluster's Kafka edge (read, fetch_timestamps,
        reset); the default reads Kafka with kafka-python. Tests pass in-memory sources.
    :returns: the service, not started. Besides the IService methods (setServiceParent,
        startService, stopService, ...) it offers `collector`, a prometheus_client
        Collector over the snapshots; `root`, the HTTP tree (/metrics, /health, /ready and
        the status page at /); and `metrics_resource()`, a new /metrics resource to mount
        under a path of the host's choosing. startService() raises ListenFailed, and starts
        nothing, when the site cannot listen.
    """
    return KlagService(
        config, reactor, endpoint=endpoint, serve_http=serve_http, source_factory=source_factory
    )
