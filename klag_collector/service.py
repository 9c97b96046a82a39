"""The exporter as one Twisted service: pollers, renderer and (optionally) the web site.

This is what `klag-collector`, `twistd -n klag` and embedding programs all run.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from prometheus_client.registry import CollectorRegistry
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
from twisted.web.server import Site
from zope.interface import implementer

from . import __version__
from .collector import LagCollector
from .config import Config
from .errors import describe_error
from .kafka_source import KafkaSource
from .poller import ClusterPoller
from .render import MetricsRenderer
from .web import make_root


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
        raise listen_failed(failure.value)


class QuietSite(Site):
    """A Site without per-request access lines: scrapes every few seconds would flood the log."""

    noisy = False

    def log(self, request: object) -> None:
        pass


class KlagService(service.MultiService):
    """Holds one poller per cluster, then the HTTP site, so HTTP stops first.

    The site listens first, though, in privilegedStartService (startService calls it when the
    runner did not): a port that cannot be bound raises ListenFailed before any poller starts.
    """

    def __init__(
        self,
        config: Config,
        reactor: Any = None,
        endpoint: Optional[IStreamServerEndpoint] = None,
        serve_http: bool = True,
        source_factory: Callable[..., Any] = KafkaSource,
    ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor = _maybe_global_reactor(reactor)
        exporter = config.exporter
        self._pools: List[ThreadPool] = []
        self.render_pool = self._pool("klag-render", 1)
        self.registry = CollectorRegistry(auto_describe=False)
        self.renderer = MetricsRenderer(self.registry, self._runner(self.render_pool))
        self.pollers: List[ClusterPoller] = []
        for cluster in config.clusters:
            # Room for every concurrent timestamp fetch, plus the cycle's own read.
            pool = self._pool(
                f"klag-{cluster.name}", exporter.timestamp_sampling.max_concurrent_fetches + 2
            )
            poller = ClusterPoller(
                cluster,
                exporter,
                source_factory(cluster, exporter.performance),
                reactor,
                self._runner(pool),
                on_change=self.renderer.invalidate,
            )
            poller.setServiceParent(self)
            self.pollers.append(poller)
        self.collector = LagCollector(self.pollers, exporter.granularity, reactor)
        self.registry.register(self.collector)
        self.root = make_root(self.renderer, self.pollers, exporter.ready_requires, reactor)
        self._privileged_started = False
        if serve_http:
            if endpoint is None:
                endpoint = http_endpoint(reactor, exporter.http_host, exporter.http_port)
            self.http = StreamServerEndpointService(
                _AnnouncingEndpoint(endpoint, len(config.clusters)), QuietSite(self.root)
            )
            # As twisted.application.strports.service does: a port that cannot be bound raises
            # from startService, rather than being logged while the process runs without HTTP.
            self.http._raiseSynchronously = True
            self.http.setServiceParent(self)
        self.otel: Any = None
        if exporter.otel.enabled:
            # Imports no OpenTelemetry module until it starts (the `otel` extra is optional).
            from .otel import OtelExporterService

            self.otel = OtelExporterService(exporter.otel, self.collector, reactor)
            self.otel.setServiceParent(self)

    def _pool(self, name: str, size: int) -> ThreadPool:
        pool = ThreadPool(minthreads=0, maxthreads=size, name=name)
        self._pools.append(pool)
        return pool

    def _runner(self, pool: ThreadPool) -> Callable[..., "defer.Deferred[Any]"]:
        def run(f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
            return deferToThreadPool(self.reactor, pool, f, *args)

        return run

    @defer.inlineCallbacks
    def collect_once(self):  # type: ignore[no-untyped-def]
        """One cycle of every cluster, without starting the loops or the site."""
        for pool in self._pools:
            pool.start()
        try:
            yield defer.gatherResults([p.poll_now() for p in self.pollers])
            for poller in self.pollers:
                poller.cancel_retry()
                yield self._run_default(poller.source.reset)
            yield self.renderer.when_rendered()
        finally:
            yield self._stop_pools()

    def _run_default(self, f: Callable[..., Any]) -> "defer.Deferred[Any]":
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._privileged_started = True

    def startService(self) -> None:
        if not self._privileged_started:
            self.privilegedStartService()
        for pool in self._pools:
            pool.start()
        super().startService()
        self.renderer.invalidate()

    @defer.inlineCallbacks
    def stopService(self):  # type: ignore[no-untyped-def]
        yield super().stopService()
        yield self.renderer.when_rendered()
        yield self._stop_pools()

    @defer.inlineCallbacks
    def _stop_pools(self):  # type: ignore[no-untyped-def]
        for pool in self._pools:
            # ThreadPool.stop joins its threads, and a thread stuck in a Kafka call may
            # never return: join off the reactor thread, and only for so long.
            joined = self._run_default(pool.stop)
            try:
                yield joined.addTimeout(STOP_JOIN_TIMEOUT, self.reactor)
            except defer.TimeoutError:
                pass


def make_service(config: Config, reactor: Optional[IReactorCore] = None, **kw: Any) -> KlagService:
    """The embedding API: a ready-to-start IService for a host Twisted application."""
    return KlagService(config, reactor, **kw)
