"""The exporter as one Twisted service: pollers, renderer and (optionally) the web site.

This is what `klag-collector`, `twistd -n klag` and embedding programs all run; the
embedding API is make_service() and the public attributes of what it returns.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple, cast

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
from zope.interface import implementer

from . import __version__
from .collector import ClusterReport, LagCollector, read_clusters
from .config import (
    ClusterConfig, Config, ExporterConfig, OtelConfig, Performance, ShardingConfig, ShardMode,
    load_config,
)
from .coordination import ShardMember, first_membership
from .errors import ConfigError, describe_error
from .http_channel import GuardedSite, HttpLimits, raise_open_file_limit
from .kafka_source import KafkaSource
from .poller import ClusterPoller, Source
from .reload import ReloadPlan, ReloadResult, describe_plan, plan_reload
from .reload_triggers import RELOAD_PARENT, ReloadResource
from .render import MetricsRenderer, Rendered
from .scrape_gate import ScrapeGate
from .shard_poller import ShardedPoller
from .sharding import ShardScope
from .web import MetricsResource, make_root


# Seconds stopService waits for the thread pools' threads to finish, every pool at once. A
# stopped poller has closed its clients, so its threads are back from kafka-python by then.
STOP_JOIN_TIMEOUT = 2.0

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
    """An endpoint whose listen says where it serves, or fails with a ListenFailed; it raises
    the open-file limit first."""

    def __init__(self, endpoint: IStreamServerEndpoint, clusters: int) -> None:
        self._endpoint = endpoint
        self._clusters = clusters

    def listen(self, factory: Any) -> "defer.Deferred[IListeningPort]":
        # Each connection is a file: the soft limit (often 1024) should not be what binds.
        limit = raise_open_file_limit()
        if limit.after != limit.before:
            log.debug("open files: soft limit {after} (was {before})",
                      after=limit.after, before=limit.before)
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


class QuietSite(GuardedSite):
    """The exporter's site (see http_channel), without per-request access lines: scrapes every
    few seconds would flood the log."""

    noisy = False

    def log(self, request: object) -> None:
        pass


# Builds a cluster's Kafka edge from its config and the exporter's performance settings;
# with [exporter.sharding] also given `scope=`, the ShardScope its reads are for.
SourceFactory = Callable[..., Source]


class _DaemonThread(threading.Thread):
    """A pool thread that does not keep the interpreter alive on its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.daemon = True


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

    Public besides the IService methods: `config`, `collector`, `root`, `metrics_resource()`,
    `otel`, `reload()`, `reload_config_file()` and, for `--once`, `collect_once()`. Build it
    with make_service().
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
        #: The configuration running now; reload() replaces it.
        self.config = config
        exporter = config.exporter
        self._source_factory = source_factory
        render_pool = ThreadPool(minthreads=0, maxthreads=1, name="klag-render")
        self._pools: List[ThreadPool] = [render_pool]
        # A child service of its own, so that pollers a reload adds still stop after the site.
        # The coordination members (mode = "kafka") stop after the pollers, which stop after
        # the site.
        self._coordination = service.MultiService()
        if exporter.sharding is not None and exporter.sharding.mode is ShardMode.KAFKA:
            self._coordination.setServiceParent(self)
        self._members: Dict[str, ShardMember] = {}
        self._clusters = service.MultiService()
        self._clusters.setServiceParent(self)
        self._pool_of: Dict[service.IService, ThreadPool] = {}
        # Pollers a reload took out, until they and their threads have stopped.
        self._retiring: Set["defer.Deferred[None]"] = set()
        self._reload_lock = defer.DeferredLock()
        # Changed in place by reload(), on the reactor thread: the renderer and /ready hold it.
        made = [self._new_poller(cluster, exporter) for cluster in config.clusters]
        self._pollers: List[ClusterPoller] = [poller for poller, _ in made]
        for poller, pool in made:
            self._attach(poller, pool, self._clusters)
        # The site tells it when a scrape is being answered; the renderer steps aside then.
        self._gate = ScrapeGate()
        self._renderer = MetricsRenderer(
            self._pollers, exporter.granularity, reactor, self._runner(render_pool),
            self._gate.pause,
        )
        self._sync_members()
        #: A prometheus_client Collector over the snapshots, for a host's own registry.
        self.collector = LagCollector(self._pollers, exporter.granularity, reactor)
        #: The exporter's HTTP tree: /metrics, /health, /ready and the status page at /.
        self.root = make_root(self._renderer, self._pollers, exporter.ready_requires, reactor)
        if exporter.enable_reload_endpoint:
            self.root.putChild(RELOAD_PARENT, ReloadResource(self.reload_config_file))
        self._privileged_started = False
        if serve_http:
            if endpoint is None:
                endpoint = http_endpoint(reactor, exporter.http_host, exporter.http_port)
            self._serve(endpoint, len(config.clusters))
        #: The OTLP push service when [exporter.otel] is enabled, else None.
        self.otel: Any = self._otel_push(exporter.otel)

    def _otel_push(self, otel: OtelConfig) -> Any:
        if not otel.enabled:
            return None
        # Imports no OpenTelemetry module until it starts (the `otel` extra is optional).
        from .otel import OtelExporterService

        push = OtelExporterService(otel, self.collector, self._reactor)
        push.setServiceParent(self)
        return push

    def _new_poller(
        self, cluster: ClusterConfig, exporter: ExporterConfig
    ) -> Tuple[ClusterPoller, ThreadPool]:
        """A poller and its own thread pool, neither started nor attached yet."""
        # Room for every concurrent timestamp fetch, plus the cycle's own read.
        pool = _pool(exporter.timestamp_sampling.max_concurrent_fetches + 2, cluster.name)
        run = self._runner(pool)
        sharding = exporter.sharding
        if sharding is None:
            source = self._source_factory(cluster, exporter.performance)
            return ClusterPoller(cluster, exporter, source, self._reactor, run,
                                 on_change=self._data_changed), pool
        membership = first_membership(sharding)
        scope = ShardScope(membership.shards)
        source = self._source_factory(cluster, exporter.performance, scope=scope)
        return ShardedPoller(cluster, exporter, source, self._reactor, run, scope, membership,
                             on_change=self._data_changed), pool

    def _attach(
        self, child: service.IService, pool: ThreadPool, parent: service.MultiService
    ) -> None:
        """Run a poller (or member) with the service: now, if the service is running."""
        self._pool_of[child] = pool
        self._pools.append(pool)
        if self.running:
            pool.start()
        child.setServiceParent(parent)

    def _sync_members(self) -> None:
        """One coordination member per cluster hosting a coordination, each poller following
        its own (mode = "kafka"); after a reload, members whose host changed are replaced."""
        sharding = self.config.exporter.sharding
        if sharding is None or sharding.mode is not ShardMode.KAFKA:
            return
        entries = {cluster.name: cluster for cluster in self.config.clusters}
        pollers = [p for p in self._pollers if isinstance(p, ShardedPoller)]
        host_of = {p.name: entries[sharding.coordination_cluster or p.name] for p in pollers}
        hosts = {host.name: host for host in host_of.values()}
        for name, member in list(self._members.items()):
            if hosts.get(name) != member.cluster:
                self._retire(self._members.pop(name))
        for name, host in hosts.items():
            if name not in self._members:
                self._members[name] = self._new_member(host, sharding)
        for member in self._members.values():
            member.followers = []
        for poller in pollers:
            member = self._members[host_of[poller.name].name]
            member.followers.append(poller.follow)
            poller.follow(member.membership)

    def _new_member(self, host: ClusterConfig, sharding: ShardingConfig) -> ShardMember:
        """A coordination member on *host*, with a thread of its own, attached."""
        pool = _pool(1, f"shards-{host.name}")
        member = ShardMember(host, sharding, self._reactor, self._runner(pool),
                             self._reactor.callFromThread)
        self._attach(member, pool, self._coordination)
        return member

    def _data_changed(self) -> None:
        # A method, not the renderer's own: the pollers are made before the renderer reading them.
        self._renderer.invalidate()

    def _serve(self, endpoint: IStreamServerEndpoint, clusters: int) -> None:
        exporter = self.config.exporter
        limits = HttpLimits(exporter.http_max_connections, exporter.http_header_timeout)
        http = StreamServerEndpointService(
            _AnnouncingEndpoint(endpoint, clusters), QuietSite(self.root, limits, self._gate)
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
        for poller in self._pollers:
            poller.keep_rows = True  # the printout lists every partition row
        try:
            yield defer.gatherResults([poller.poll_now() for poller in self._pollers])
            for poller in self._pollers:
                yield self._run_default(poller.source.reset)
            yield self._renderer.when_rendered()
        finally:
            yield self._stop_pools(self._pools)
        reports = read_clusters(self._pollers, self._reactor.seconds())
        return Collected(reports, self._renderer.current)

    def _run_default(self, work: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), work, *args)

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
        yield defer.DeferredList(list(self._retiring))
        yield self._renderer.when_rendered()
        yield self._stop_pools(self._pools)

    @defer.inlineCallbacks
    def _stop_pools(self, pools):  # type: ignore[no-untyped-def]
        pools = list(pools)
        stops = [self._stopped(pool).addTimeout(STOP_JOIN_TIMEOUT, self._reactor)
                 for pool in pools]
        results = yield defer.DeferredList(stops, consumeErrors=True)
        for pool, (joined, _) in zip(pools, results):
            if not joined:
                log.warn("{pool}: {threads} worker thread(s) still running at stop",
                         pool=pool.name, threads=len(pool.working))

    def _stopped(self, pool: ThreadPool) -> "defer.Deferred[None]":
        """Fires once `pool` is stopped and its threads joined.

        ThreadPool.stop joins its threads, and a thread stuck in a Kafka call returns only
        when its call does: the join runs in a daemon thread of its own, so that it holds up
        neither the other pools nor the reactor's pool, which the reactor joins at shutdown.
        """
        stopped: "defer.Deferred[None]" = defer.Deferred()

        def stop() -> None:
            pool.stop()
            self._reactor.callFromThread(stopped.callback, None)

        threading.Thread(target=stop, name=f"{pool.name}-stop", daemon=True).start()
        return stopped

    # -- reloading ----------------------------------------------------------------------

    def reload_config_file(self) -> "defer.Deferred[ReloadResult]":
        """Read the running config's file (`config.source`) again and run it; never fails.

        SIGHUP and POST /-/reload call this. The file is read in a worker thread, and
        reloads run one after another. An invalid file is refused: logged, in one line, and
        the running config stays.
        """
        return self._reload_lock.run(self._reload_file)

    @defer.inlineCallbacks
    def _reload_file(self):  # type: ignore[no-untyped-def]
        try:
            config = yield self._run_default(load_config, self.config.source)
        except Exception as e:
            return self._refused(str(e) if isinstance(e, ConfigError) else describe_error(e))
        return self.reload(config)

    def reload(self, config: Config) -> ReloadResult:
        """Run `config` from now on; call it on the reactor thread.

        A cluster whose entry and poller settings are unchanged keeps its poller, and so its
        snapshot and timestamp cache; the others' pollers are stopped, started or replaced.
        Changed settings that need a restart are logged and left as they run.
        """
        plan = plan_reload(self.config, config)
        exporter = plan.config.exporter
        entries = {cluster.name: cluster for cluster in plan.config.clusters}
        try:
            made = {name: self._new_poller(entries[name], exporter)
                    for name in plan.add + plan.replace}
        except Exception as e:
            # Nothing is attached yet: the running config stays whole.
            return self._refused(f"cannot set up the new clusters: {describe_error(e)}")
        self._apply(plan, made)
        for key in plan.needs_restart:
            log.warn("config reload: {key} changed and needs a restart; ignored until then",
                     key=key)
        log.info("config reloaded from {source}: {changes}", source=plan.config.source,
                 changes=describe_plan(plan))
        return ReloadResult(plan)

    def _refused(self, reason: str) -> ReloadResult:
        log.error("config reload refused, the running config stays: {reason}", reason=reason)
        return ReloadResult(None, reason)

    def _apply(self, plan: ReloadPlan, made: Dict[str, Tuple[ClusterPoller, ThreadPool]]) -> None:
        running = {poller.name: poller for poller in self._pollers}
        for name in plan.remove + plan.replace:
            self._retire(running[name])
        self._pollers[:] = [
            made[c.name][0] if c.name in made else running[c.name] for c in plan.config.clusters
        ]
        # A new list, not this one changed: a host's registry may collect in another thread.
        self.collector.pollers = list(self._pollers)
        self.config = plan.config
        for poller, pool in made.values():
            self._attach(poller, pool, self._clusters)
        self._sync_members()
        self._renderer.invalidate()

    def _retire(self, child: service.IService) -> None:
        """Stop a poller (or member) a reload took out, then its threads; stopService waits
        for both."""
        pool = self._pool_of.pop(child)
        self._pools.remove(pool)
        running = self.running
        # Its name is free at once, for a replacing poller; the stop may take a cycle's end.
        stopping = defer.maybeDeferred(child.disownServiceParent)

        def stop_threads(outcome: Any) -> Any:
            if isinstance(outcome, Failure):
                log.failure("cluster {cluster}: stopping its {what} failed", outcome,
                            cluster=child.name, what=type(child).__name__)
            return self._stop_pools([pool]) if running else None

        stopping.addBoth(stop_threads)
        self._retiring.add(stopping)
        stopping.addBoth(lambda _: self._retiring.discard(stopping))


def _pool(threads: int, name: str) -> ThreadPool:
    """A thread pool of daemon threads for one poller or member, not started."""
    pool = ThreadPool(minthreads=0, maxthreads=threads, name=f"klag-{name}")
    # A worker still blocked after its clients were closed must not hold the process
    # past its stop: every kafka-python wait fails on close, this is the safety net.
    pool.threadFactory = _DaemonThread
    return pool


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
        With [exporter.sharding] it is also given `scope=`, a sharding.ShardScope whose
        `for_read()` says, at each read, which shards the read is for.
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
